package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	caddyOnce sync.Once
	caddyBin  string
	caddyErr  error
)

// CaddyBinary builds ./cmd/caddy (Caddy with linkgate) once per test binary
// and returns its path, for tests that run, kill and restart real Caddy
// processes. The binary lives in a temporary directory that RemoveCaddyBinary
// deletes; call it from TestMain. LINKGATE_CADDY_BINARY names a binary to
// use instead (to measure another build, e.g. an older commit, with the same
// tests).
func CaddyBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("LINKGATE_CADDY_BINARY"); bin != "" {
		return bin
	}
	caddyOnce.Do(func() {
		root, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			caddyErr = err
			return
		}
		dir, err := os.MkdirTemp("", "linkgate-caddy-")
		if err != nil {
			caddyErr = err
			return
		}
		caddyBin = filepath.Join(dir, "caddy")
		cmd := exec.Command("go", "build", "-o", caddyBin, "./cmd/caddy")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
		if out, err := cmd.CombinedOutput(); err != nil {
			caddyErr = &buildError{err: err, out: string(out)}
		}
	})
	if caddyErr != nil {
		t.Fatalf("building ./cmd/caddy: %v", caddyErr)
	}
	return caddyBin
}

// RemoveCaddyBinary deletes the binary CaddyBinary built, if any.
func RemoveCaddyBinary() {
	if caddyBin != "" {
		os.RemoveAll(filepath.Dir(caddyBin))
	}
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }
