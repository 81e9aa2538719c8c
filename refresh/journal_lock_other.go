//go:build !unix

package refresh

import "os"

// lockFile does nothing where advisory locks are not available: processes
// sharing a store on one such machine must use data directories of their
// own.
func lockFile(*os.File) (bool, error) { return false, nil }
