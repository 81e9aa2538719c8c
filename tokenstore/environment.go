package tokenstore

import (
	"context"
	"time"
)

// Environments keeps the gateway's environment: its id and creation time,
// chosen once by the first instance to ask and the same ever after for every
// instance sharing the store.
type Environments interface {
	// Environment returns the stored environment; when there is none yet it
	// stores id and createdAt and returns them. Of two instances asking at
	// once with different proposals, both get the one that was stored.
	Environment(ctx context.Context, id string, createdAt time.Time) (string, time.Time, error)
}

// Environment implements Environments.
func (c *Cached) Environment(ctx context.Context, id string, createdAt time.Time) (string, time.Time, error) {
	return c.inner.Environment(ctx, id, createdAt)
}
