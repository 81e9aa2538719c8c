-- Times are Unix nanoseconds in UTC, as in the SQLite schema, so that
-- cursors and leases mean the same on both stores; 0 means "not set".
-- Ids sort bytewise (COLLATE "C") like SQLite's, whatever the database's
-- default collation.

CREATE TABLE accounts (
	id                TEXT COLLATE "C" PRIMARY KEY,
	tenant_id         TEXT COLLATE "C" NOT NULL,
	integration       TEXT NOT NULL,
	method            TEXT NOT NULL,
	status            TEXT NOT NULL,
	context           TEXT NOT NULL DEFAULT '{}',
	credentials       BYTEA NOT NULL,           -- sealed JSON, associated data = id
	last_error        TEXT,                     -- JSON or NULL
	version           BIGINT NOT NULL,
	created_at        BIGINT NOT NULL,
	updated_at        BIGINT NOT NULL,
	next_probe_at     BIGINT NOT NULL DEFAULT 0,
	expires_at        BIGINT NOT NULL DEFAULT 0, -- access token expiry, unsealed for the sweeper
	has_refresh       BOOLEAN NOT NULL DEFAULT false,
	sweep_lease_until BIGINT NOT NULL DEFAULT 0,
	-- changed_at is the database's own clock at the last write: a cache
	-- listener that lost its connection asks which accounts changed since.
	changed_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX accounts_newest ON accounts (created_at DESC, id DESC);
CREATE INDEX accounts_status_newest ON accounts (status, created_at DESC, id DESC);
CREATE INDEX accounts_tenant_newest ON accounts (tenant_id, created_at DESC, id DESC);
CREATE INDEX accounts_integration_newest ON accounts (integration, created_at DESC, id DESC);
CREATE INDEX accounts_expiring ON accounts (expires_at)
	WHERE status = 'active' AND method = 'oauth2' AND has_refresh AND expires_at > 0;
CREATE INDEX accounts_changed ON accounts (changed_at);

-- Deleted account ids, kept a while for cache listeners catching up.
CREATE TABLE account_tombstones (
	id         TEXT COLLATE "C" NOT NULL,
	deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX account_tombstones_deleted ON account_tombstones (deleted_at);

CREATE TABLE link_tokens (
	hash                     BYTEA PRIMARY KEY,
	account_id               TEXT NOT NULL DEFAULT '',
	tenant_id                TEXT NOT NULL DEFAULT '',
	integration              TEXT NOT NULL DEFAULT '',
	redirect_uri             TEXT NOT NULL DEFAULT '',
	scopes                   TEXT NOT NULL DEFAULT '[]',
	context                  TEXT NOT NULL DEFAULT '{}',
	persist_previous_context BOOLEAN NOT NULL DEFAULT false,
	created_at               BIGINT NOT NULL,
	expires_at               BIGINT NOT NULL,
	used_at                  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX link_tokens_expires ON link_tokens (expires_at);

CREATE TABLE connect_states (
	hash            BYTEA PRIMARY KEY,
	link_token_hash BYTEA NOT NULL REFERENCES link_tokens (hash) ON DELETE CASCADE,
	verifier        BYTEA NOT NULL,             -- sealed, associated data = hash
	redirect_uri    TEXT NOT NULL DEFAULT '',
	expires_at      BIGINT NOT NULL
);
CREATE INDEX connect_states_link ON connect_states (link_token_hash);

CREATE TABLE events (
	seq        BIGSERIAL PRIMARY KEY,
	id         TEXT COLLATE "C" NOT NULL UNIQUE,
	name       TEXT NOT NULL,
	account_id TEXT COLLATE "C" NOT NULL DEFAULT '',
	payload    BYTEA NOT NULL,
	created_at BIGINT NOT NULL,
	fanned_out BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX events_unfanned ON events (seq) WHERE NOT fanned_out;

CREATE TABLE deliveries (
	id              TEXT COLLATE "C" PRIMARY KEY,
	event_id        TEXT COLLATE "C" NOT NULL REFERENCES events (id),
	endpoint        TEXT NOT NULL,
	status          TEXT NOT NULL,
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at BIGINT NOT NULL,
	lease_until     BIGINT NOT NULL DEFAULT 0,
	last_status     INTEGER NOT NULL DEFAULT 0,
	last_error      TEXT NOT NULL DEFAULT '',
	created_at      BIGINT NOT NULL,
	updated_at      BIGINT NOT NULL,
	failed          INTEGER GENERATED ALWAYS AS (CASE WHEN status = 'failed' THEN 1 ELSE 0 END) STORED
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_listing ON deliveries (failed DESC, created_at DESC, id DESC);
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE disabled_endpoints (
	endpoint    TEXT PRIMARY KEY,
	reason      TEXT NOT NULL,
	disabled_at BIGINT NOT NULL
);
