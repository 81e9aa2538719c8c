package testenv

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// PostgresEnv names the variable that holds the DSN of the PostgreSQL the
// tests may use, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const PostgresEnv = "LINKGATE_TEST_POSTGRES"

// PostgresSchema creates an empty schema of its own for t in the database
// named by LINKGATE_TEST_POSTGRES, drops it when t ends, and returns a DSN
// whose connections use it (search_path) and carry its name
// (application_name, so a test finds its own connections among those of
// tests running beside it), and the schema's name. Without the variable the
// test is skipped, saying why.
func PostgresSchema(t testing.TB) (dsn, schema string) {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Skipf("%s is not set (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable): no PostgreSQL to test against", PostgresEnv)
	}
	schema = "lg_" + strings.ReplaceAll(uuid.NewString(), "-", "")[:16]
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connecting to %s: %v", PostgresEnv, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The server may be restarting (a test may have restarted it).
		c, err := ConnectPostgres(base, 30*time.Second)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s is not a URL: %v", PostgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("application_name", schema)
	u.RawQuery = q.Encode()
	return u.String(), schema
}

// ConnectPostgres connects to dsn, retrying for up to within while the
// server is down or restarting.
func ConnectPostgres(dsn string, within time.Duration) (*pgx.Conn, error) {
	deadline := time.Now().Add(within)
	for {
		c, err := pgx.Connect(context.Background(), dsn)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
