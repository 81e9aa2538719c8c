package wire

import (
	"time"

	"github.com/google/uuid"
)

// Environment is what Truto's shapes say about the gateway itself: its
// environment id and the integrations installed in it. Truto has many
// environments per team; a linkgate gateway (or a cluster of instances on
// one database) is one environment.
type Environment struct {
	// ID is the environment id, stable for the life of the store.
	ID string
	// CreatedAt is when the environment was first started.
	CreatedAt time.Time
	// Integrations are the configured integrations, by name.
	Integrations map[string]IntegrationInfo
}

// IntegrationInfo is what the environment knows of one integration beyond
// its name.
type IntegrationInfo struct {
	// Category is Truto's category of the integration ("crm",
	// "helpdesk", …), empty when unknown.
	Category string
}

// namespace is the UUID namespace of the ids derived from the environment
// id: a UUIDv5 of a fixed namespace and the environment id, so any string
// may serve as environment id.
func (e *Environment) namespace() uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:linkgate:environment:"+e.ID))
}

// IntegrationID is the stable id of an integration: a UUIDv5 of the
// environment id and the integration's name.
func (e *Environment) IntegrationID(name string) string {
	return uuid.NewSHA1(e.namespace(), []byte("integration:"+name)).String()
}

// EnvironmentIntegrationID is the stable id of an integration installed in
// this environment (Truto's environment_integration_id): a UUIDv5 of the
// environment id and the integration's name, other than IntegrationID.
func (e *Environment) EnvironmentIntegrationID(name string) string {
	return uuid.NewSHA1(e.namespace(), []byte("environment-integration:"+name)).String()
}

// IntegrationByEnvironmentID returns the name of the integration whose
// environment_integration_id (or integration id) is id.
func (e *Environment) IntegrationByEnvironmentID(id string) (string, bool) {
	for name := range e.Integrations {
		if e.EnvironmentIntegrationID(name) == id || e.IntegrationID(name) == id {
			return name, true
		}
	}
	return "", false
}

// Integration is Truto's integration object, as embedded in an integrated
// account.
func (e *Environment) Integration(name string) Integration {
	info := e.Integrations[name]
	return Integration{
		ID:        e.IntegrationID(name),
		Name:      name,
		Category:  info.Category,
		IsBeta:    false,
		CreatedAt: Time(e.CreatedAt),
		UpdatedAt: Time(e.CreatedAt),
	}
}

// EnvironmentIntegration is the installed form of integration name.
func (e *Environment) EnvironmentIntegration(name string) EnvironmentIntegration {
	return EnvironmentIntegration{
		ID:            e.EnvironmentIntegrationID(name),
		IntegrationID: e.IntegrationID(name),
		EnvironmentID: e.ID,
		ShowInCatalog: true,
		IsEnabled:     true,
		Override:      map[string]any{},
		CreatedAt:     Time(e.CreatedAt),
		UpdatedAt:     Time(e.CreatedAt),
	}
}
