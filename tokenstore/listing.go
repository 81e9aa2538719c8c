package tokenstore

// listIndex is the index a listing without search walks: the most
// selective equality first (a tenant has few accounts), then the index that
// matches every filter given. SQLite's listing names it with INDEXED BY;
// PostgreSQL's plan tests expect it.
func listIndex(f Filter) string {
	switch {
	case f.TenantID != "":
		return "accounts_tenant_newest"
	case f.Status != "" && f.Integration != "":
		return "accounts_status_integration_newest"
	case f.Status != "":
		return "accounts_status_newest"
	case f.Integration != "":
		return "accounts_integration_newest"
	}
	return "accounts_newest"
}
