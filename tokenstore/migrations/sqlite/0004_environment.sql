-- The gateway's environment: one row, written by the first instance that
-- starts, so its id is the same on every instance and across restarts.
CREATE TABLE environment (
	singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
	id         TEXT NOT NULL,
	created_at INTEGER NOT NULL
);

-- The integration an end user picked on the connect page, for a link token
-- that left the choice to them.
ALTER TABLE connect_states ADD COLUMN integration TEXT NOT NULL DEFAULT '';

-- An account's events in commit order, for the claim that keeps a later
-- event of an account from overtaking an earlier one at an endpoint.
CREATE INDEX events_account_seq ON events (account_id, seq);
