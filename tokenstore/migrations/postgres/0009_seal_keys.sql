-- The encryption keys that have sealed secrets in this store, by key id (the
-- four bytes after the version byte of every sealed value), each with a
-- value sealed by it. At start the gateway checks that its keys open what is
-- stored and names the key ids it lacks, instead of failing on every read.
-- Keys seen in data stored before this table existed have no check value.
CREATE TABLE seal_keys (
	key_id      BYTEA PRIMARY KEY,
	check_value BYTEA
);
INSERT INTO seal_keys (key_id)
	SELECT DISTINCT substring(credentials from 2 for 4) FROM accounts WHERE length(credentials) >= 17
	ON CONFLICT DO NOTHING;
INSERT INTO seal_keys (key_id)
	SELECT DISTINCT substring(verifier from 2 for 4) FROM connect_states WHERE length(verifier) >= 17
	ON CONFLICT DO NOTHING;
