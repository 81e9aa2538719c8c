-- Indexes for Purge: each batch finds the rows past retention by range
-- rather than by scanning the table. The partial indexes' conditions are
-- written exactly as Purge's queries state them, so that the planner uses them.

CREATE INDEX link_tokens_used ON link_tokens (used_at) WHERE used_at > 0;
CREATE INDEX connect_states_expires ON connect_states (expires_at);
CREATE INDEX deliveries_delivered ON deliveries (updated_at) WHERE status = 'delivered';
CREATE INDEX deliveries_failed ON deliveries (updated_at) WHERE status = 'failed';
CREATE INDEX events_fanned_created ON events (created_at) WHERE fanned_out;
