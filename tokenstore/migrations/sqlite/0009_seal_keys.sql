-- The encryption keys that have sealed secrets in this store, by key id (the
-- four bytes after the version byte of every sealed value), each with a
-- value sealed by it. At start the gateway checks that its keys open what is
-- stored and names the key ids it lacks, instead of failing on every read.
-- Keys seen in data stored before this table existed have no check value.
CREATE TABLE seal_keys (
	key_id      BLOB PRIMARY KEY,
	check_value BLOB
);
INSERT OR IGNORE INTO seal_keys (key_id)
	SELECT DISTINCT substr(credentials, 2, 4) FROM accounts WHERE length(credentials) >= 17;
INSERT OR IGNORE INTO seal_keys (key_id)
	SELECT DISTINCT substr(verifier, 2, 4) FROM connect_states WHERE length(verifier) >= 17;
