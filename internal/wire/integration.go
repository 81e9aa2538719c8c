package wire

// Integration is Truto's integration object as it appears inside an
// integrated account and in webhook payloads. linkgate fills the fields that
// mean something for a self-hosted gateway; Truto's team, sharing and config
// fields are left out.
type Integration struct {
	// ID is stable: derived from the environment id and the name.
	ID   string `json:"id"`
	Name string `json:"name"`
	// Category is the integration's category ("crm", …), or "" when the
	// configuration says none.
	Category string `json:"category"`
	IsBeta   bool   `json:"is_beta"`
	// CreatedAt and UpdatedAt are the environment's creation time: a
	// configured integration has no history of its own.
	CreatedAt Time `json:"created_at"`
	UpdatedAt Time `json:"updated_at"`
}

// EnvironmentIntegration is Truto's installed integration, without its
// embedded integration object. Every configured integration is installed,
// enabled and shown; linkgate has no overrides.
type EnvironmentIntegration struct {
	ID            string         `json:"id"`
	IntegrationID string         `json:"integration_id"`
	EnvironmentID string         `json:"environment_id"`
	ShowInCatalog bool           `json:"show_in_catalog"`
	IsEnabled     bool           `json:"is_enabled"`
	Override      map[string]any `json:"override"`
	CreatedAt     Time           `json:"created_at"`
	UpdatedAt     Time           `json:"updated_at"`
}
