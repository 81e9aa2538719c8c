-- Indexes whose plans hold at a million accounts without statistics (no
-- ANALYZE ever runs): the queries name them with INDEXED BY.

-- The sweeper's claim walks expiring tokens in (expires_at, id) order and
-- stops at its limit; with id in the index no sort is needed.
DROP INDEX accounts_expiring;
CREATE INDEX accounts_expiring ON accounts (expires_at, id)
	WHERE status = 'active' AND method = 'oauth2' AND has_refresh = 1 AND expires_at > 0;

-- Listing filtered by status and integration together seeks on both.
CREATE INDEX accounts_status_integration_newest ON accounts (status, integration, created_at DESC, id DESC);

-- The dispatcher claims each endpoint's due deliveries on their own, so a
-- slow endpoint's backlog is never read while a healthy one's is claimed.
CREATE INDEX deliveries_endpoint_due ON deliveries (endpoint, next_attempt_at, id) WHERE status = 'pending';
