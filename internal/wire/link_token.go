package wire

// LinkTokenRequest is the body of POST /link-token: Truto's documented
// fields, plus linkgate's integration (or Truto's
// environment_integration_id) to name the integration of a new connection.
// Pointers tell an absent field from an empty one.
type LinkTokenRequest struct {
	IntegratedAccountID *string `json:"integrated_account_id"`
	TenantID            *string `json:"tenant_id"`
	// Integration names the integration of a new connection. Without it
	// (and without EnvironmentIntegrationID) the end user picks one on
	// the connect page.
	Integration *string `json:"integration"`
	// EnvironmentIntegrationID names the integration by its
	// environment_integration_id, as Truto's clients do.
	EnvironmentIntegrationID *string        `json:"environment_integration_id"`
	RedirectURI              string         `json:"redirect_uri"`
	Scopes                   []string       `json:"scopes"`
	Context                  map[string]any `json:"context"`
	PersistPreviousContext   bool           `json:"persist_previous_context"`

	// Accepted and ignored: Truto features a self-hosted gateway does not
	// have (unified models, static gates, regions).
	UnifiedModelID    any `json:"unified_model_id"`
	TrutoStaticGateID any `json:"truto_static_gate_id"`
	Region            any `json:"region"`
}

// LinkToken is the answer to POST /link-token: Truto's link_token, and
// linkgate's magic link and expiry.
type LinkToken struct {
	LinkToken string `json:"link_token"`
	URL       string `json:"url"`
	ExpiresAt Time   `json:"expires_at"`
}
