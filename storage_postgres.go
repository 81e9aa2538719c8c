package linkgate

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/linkgate/linkgate/tokenstore"
)

// openPostgres opens the PostgreSQL store.
func openPostgres(ctx context.Context, dsn string, s *tokenstore.Sealer, logger *zap.Logger) (tokenstore.Store, error) {
	return nil, errors.New("the postgres driver is not available in this build")
}
