package wire

import (
	"encoding/json"

	"github.com/linkgate/linkgate/account"
)

// IntegratedAccount is Truto's integrated account object: the shape of every
// account the API answers with and of every account webhook payload.
type IntegratedAccount struct {
	ID                       string `json:"id"`
	TenantID                 string `json:"tenant_id"`
	EnvironmentIntegrationID string `json:"environment_integration_id"`
	EnvironmentID            string `json:"environment_id"`
	// Integration is the integration object (id, name, category, …).
	Integration Integration `json:"integration"`
	// EnvironmentIntegration is the integration as installed in the
	// environment (the TypeScript SDK's environment_integration).
	EnvironmentIntegration EnvironmentIntegration `json:"environment_integration"`
	AuthenticationMethod   account.Method         `json:"authentication_method"`
	// Status is one of Truto's five: active, connecting,
	// post_install_error, validation_error, needs_reauth.
	Status account.Status `json:"status"`
	// Context is the account's non-secret metadata, secrets redacted.
	Context map[string]any `json:"context"`
	// IsSandbox is always false: linkgate has no sandbox accounts.
	IsSandbox bool `json:"is_sandbox"`
	// Region is always null: a self-hosted gateway places accounts where
	// its store is.
	Region *string `json:"region"`
	// LastError is the last problem, as a sentence for people (Truto's
	// string), or null.
	LastError *string `json:"last_error"`
	// LastErrorDetail is linkgate's structured form of the same problem:
	// a code a program can branch on, the message, and when it happened.
	LastErrorDetail *ErrorDetail `json:"last_error_detail"`
	// LastActionResult is always null: linkgate runs no post-install or
	// validation actions whose results it would keep.
	LastActionResult map[string]any `json:"last_action_result"`
	CreatedAt        Time           `json:"created_at"`
	UpdatedAt        Time           `json:"updated_at"`
}

// ErrorDetail is the structured last error of an account.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	At      Time   `json:"at"`
}

// Account returns the Truto form of an account's redacted view.
func (e *Environment) Account(v account.View) IntegratedAccount {
	out := IntegratedAccount{
		ID:                       v.ID,
		TenantID:                 v.TenantID,
		EnvironmentIntegrationID: e.EnvironmentIntegrationID(v.Integration.Name),
		EnvironmentID:            e.ID,
		Integration:              e.Integration(v.Integration.Name),
		EnvironmentIntegration:   e.EnvironmentIntegration(v.Integration.Name),
		AuthenticationMethod:     v.AuthenticationMethod,
		Status:                   v.Status,
		Context:                  v.Context,
		CreatedAt:                Time(v.CreatedAt),
		UpdatedAt:                Time(v.UpdatedAt),
	}
	if out.Context == nil {
		out.Context = map[string]any{}
	}
	if le := v.LastError; le != nil {
		msg := le.Message
		if msg == "" {
			msg = le.Code
		}
		out.LastError = &msg
		out.LastErrorDetail = &ErrorDetail{Code: le.Code, Message: le.Message, At: Time(le.At)}
	}
	return out
}

// AccountPayload turns the stored payload of an account event (the JSON of
// an account.View, written when the event committed) into the Truto form.
// A payload that is not a view — a deletion's {"id"}, a test event — is
// returned as it is.
func (e *Environment) AccountPayload(stored []byte) []byte {
	var v account.View
	if err := json.Unmarshal(stored, &v); err != nil || v.ID == "" || v.Integration.Name == "" {
		return stored
	}
	b, err := json.Marshal(e.Account(v))
	if err != nil {
		return stored
	}
	return b
}
