package wire

// Webhook is Truto's webhook object, for a webhook endpoint of the
// configuration. The secret is never shown.
type Webhook struct {
	ID string `json:"id"`
	// TargetURL is the endpoint's URL without user info, and with its
	// query replaced by "redacted" when it has one: a receiver's token may
	// be in it.
	TargetURL string `json:"target_url"`
	// IsActive is false while the endpoint is disabled (it answered 410).
	IsActive      bool   `json:"is_active"`
	EnvironmentID string `json:"environment_id"`
	// EventTypes are the event names the endpoint receives, the
	// configuration's patterns expanded.
	EventTypes []string `json:"event_types"`
	CreatedAt  Time     `json:"created_at"`
	UpdatedAt  Time     `json:"updated_at"`
	// DisabledReason says why an inactive endpoint is disabled.
	DisabledReason string `json:"disabled_reason,omitempty"`
}

// WebhookTestRequest is the body of POST /webhook/test: the id of the
// webhook to send the test event to (Truto's); without it linkgate sends
// it to every endpoint.
type WebhookTestRequest struct {
	ID *string `json:"id"`
}

// WebhookTestResult is the answer to POST /webhook/test: Truto's success,
// true when every target answered 2xx, and each target's actual result.
type WebhookTestResult struct {
	Success bool                `json:"success"`
	EventID string              `json:"event_id"`
	Results []WebhookTestTarget `json:"results"`
}

// WebhookTestTarget is the outcome of the test event at one endpoint.
type WebhookTestTarget struct {
	ID        string `json:"id"`
	TargetURL string `json:"target_url"`
	Success   bool   `json:"success"`
	// Status is the HTTP status the endpoint answered, 0 when it did not.
	Status int    `json:"status"`
	Error  string `json:"error,omitempty"`
}
