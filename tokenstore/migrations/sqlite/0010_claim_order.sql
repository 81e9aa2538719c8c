-- The dispatcher's claim checks, for each delivery it would take, that no
-- delivery of an earlier event of the same account to the same endpoint is
-- still pending. This index answers that check with one seek on every
-- condition it names. It holds only pending deliveries: small however long
-- the delivery log. Built in the migration's transaction, which holds the
-- write lock while it reads deliveries once.
CREATE INDEX deliveries_event_pending ON deliveries (event_id, endpoint) WHERE status = 'pending';
