package tokenstore

// SetPostgresImportPath chooses how Postgres.ImportSealed writes: directly
// by COPY after probing the ids (direct, the default) or through a
// temporary table and ON CONFLICT; before, when set, runs between the probe
// and the direct COPY. It returns a function restoring the defaults.
func SetPostgresImportPath(direct bool, before func()) (restore func()) {
	pgImportDirect, pgImportBeforeCopy = direct, before
	return func() { pgImportDirect, pgImportBeforeCopy = true, nil }
}

// BenchImports builds n accounts to import in batches, for the benchmarks
// outside the package.
var BenchImports = benchImports
