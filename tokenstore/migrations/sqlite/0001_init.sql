-- Times are Unix nanoseconds in UTC; 0 means "not set".

CREATE TABLE accounts (
	id                TEXT PRIMARY KEY,
	tenant_id         TEXT NOT NULL,
	integration       TEXT NOT NULL,
	method            TEXT NOT NULL,
	status            TEXT NOT NULL,
	context           TEXT NOT NULL DEFAULT '{}',
	credentials       BLOB NOT NULL,          -- sealed JSON, associated data = id
	last_error        TEXT,                   -- JSON or NULL
	version           INTEGER NOT NULL,
	created_at        INTEGER NOT NULL,
	updated_at        INTEGER NOT NULL,
	next_probe_at     INTEGER NOT NULL DEFAULT 0,
	expires_at        INTEGER NOT NULL DEFAULT 0, -- access token expiry, unsealed for the sweeper
	has_refresh       INTEGER NOT NULL DEFAULT 0,
	sweep_lease_until INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX accounts_newest ON accounts (created_at DESC, id DESC);
CREATE INDEX accounts_status_newest ON accounts (status, created_at DESC, id DESC);
CREATE INDEX accounts_tenant_newest ON accounts (tenant_id, created_at DESC, id DESC);
CREATE INDEX accounts_integration_newest ON accounts (integration, created_at DESC, id DESC);
CREATE INDEX accounts_expiring ON accounts (expires_at)
	WHERE status = 'active' AND method = 'oauth2' AND has_refresh = 1 AND expires_at > 0;

CREATE TABLE refresh_locks (
	account_id  TEXT PRIMARY KEY,
	owner       TEXT NOT NULL,
	lease_until INTEGER NOT NULL
);

CREATE TABLE link_tokens (
	hash                     BLOB PRIMARY KEY,
	account_id               TEXT NOT NULL DEFAULT '',
	tenant_id                TEXT NOT NULL DEFAULT '',
	integration              TEXT NOT NULL DEFAULT '',
	redirect_uri             TEXT NOT NULL DEFAULT '',
	scopes                   TEXT NOT NULL DEFAULT '[]',
	context                  TEXT NOT NULL DEFAULT '{}',
	persist_previous_context INTEGER NOT NULL DEFAULT 0,
	created_at               INTEGER NOT NULL,
	expires_at               INTEGER NOT NULL,
	used_at                  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX link_tokens_expires ON link_tokens (expires_at);

CREATE TABLE connect_states (
	hash            BLOB PRIMARY KEY,
	link_token_hash BLOB NOT NULL REFERENCES link_tokens (hash) ON DELETE CASCADE,
	verifier        BLOB NOT NULL,            -- sealed, associated data = hash
	redirect_uri    TEXT NOT NULL DEFAULT '',
	expires_at      INTEGER NOT NULL
);
CREATE INDEX connect_states_link ON connect_states (link_token_hash);

CREATE TABLE events (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	id         TEXT NOT NULL UNIQUE,
	name       TEXT NOT NULL,
	account_id TEXT NOT NULL DEFAULT '',
	payload    BLOB NOT NULL,
	created_at INTEGER NOT NULL,
	fanned_out INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_unfanned ON events (seq) WHERE fanned_out = 0;

CREATE TABLE deliveries (
	id              TEXT PRIMARY KEY,
	event_id        TEXT NOT NULL REFERENCES events (id),
	endpoint        TEXT NOT NULL,
	status          TEXT NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at INTEGER NOT NULL,
	lease_until     INTEGER NOT NULL DEFAULT 0,
	last_status     INTEGER NOT NULL DEFAULT 0,
	last_error      TEXT NOT NULL DEFAULT '',
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	failed          INTEGER GENERATED ALWAYS AS (status = 'failed') VIRTUAL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_listing ON deliveries (failed DESC, created_at DESC, id DESC);
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE disabled_endpoints (
	endpoint    TEXT PRIMARY KEY,
	reason      TEXT NOT NULL,
	disabled_at INTEGER NOT NULL
);
