package testenv

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain proves every component stops its goroutines in t.Cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
