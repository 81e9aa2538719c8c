-- Indexes for seeks that stay flat at a million accounts.

-- The sweeper's claim walks expiring tokens in (expires_at, id) order and
-- stops at its limit; with id in the index no sort is needed.
DROP INDEX accounts_expiring;
CREATE INDEX accounts_expiring ON accounts (expires_at, id)
	WHERE status = 'active' AND method = 'oauth2' AND has_refresh AND expires_at > 0;

-- The unfiltered listing walks an index on an expression of created_at that
-- no filtered listing names: a filtered listing cannot be planned as a walk
-- of the newest-first index that filters out other rows, which reads
-- without bound when the rows matching the filter are old (statistics do
-- not see that). Each filter walks the index that leads with it.
DROP INDEX accounts_newest;
CREATE INDEX accounts_newest ON accounts ((created_at + 0) DESC, id DESC);

-- Listing filtered by status and integration together seeks on both.
CREATE INDEX accounts_status_integration_newest ON accounts (status, integration, created_at DESC, id DESC);

-- The dispatcher claims each endpoint's due deliveries on their own, so a
-- slow endpoint's backlog is never read while a healthy one's is claimed.
CREATE INDEX deliveries_endpoint_due ON deliveries (endpoint, next_attempt_at, id) WHERE status = 'pending';
