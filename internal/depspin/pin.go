// Package depspin keeps the modules linkgate is being built on in go.mod
// while the packages that use them are written. It is removed once they are.
package depspin

import (
	_ "github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/chromedp/chromedp"
	_ "github.com/dgraph-io/ristretto/v2"
	_ "github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/ory/fosite/compose"
	_ "github.com/ory/fosite/storage"
	_ "github.com/standard-webhooks/standard-webhooks/libraries/go"
	_ "go.uber.org/goleak"
	_ "go.uber.org/zap"
	_ "golang.org/x/oauth2"
	_ "golang.org/x/oauth2/clientcredentials"
	_ "golang.org/x/sync/singleflight"
	_ "modernc.org/sqlite"
)
