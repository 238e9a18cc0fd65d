-- 0001: initial schema. Times are unix nanoseconds (UTC).

CREATE TABLE products (
	product_key          TEXT    NOT NULL PRIMARY KEY,
	product_secret       TEXT    NOT NULL,
	name                 TEXT    NOT NULL,
	dynamic_registration INTEGER NOT NULL,
	data_format          TEXT    NOT NULL,
	online_lifetime_ms   INTEGER NOT NULL,
	created_at           INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The primary key's product_key prefix also serves the foreign key check
-- when a product is deleted.
CREATE TABLE devices (
	product_key   TEXT    NOT NULL REFERENCES products (product_key),
	device_key    TEXT    NOT NULL,
	device_secret TEXT    NOT NULL,
	asset_id      TEXT    NOT NULL,
	enabled       INTEGER NOT NULL,
	generation    INTEGER NOT NULL,
	created_at    INTEGER NOT NULL,
	last_seen_at  INTEGER,
	last_address  TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (product_key, device_key)
) STRICT, WITHOUT ROWID;

-- Messages outlive their devices, so no foreign key (and none to check on
-- the hot path). AUTOINCREMENT: IDs are never reused, even after deletes.
CREATE TABLE messages (
	id             INTEGER PRIMARY KEY AUTOINCREMENT,
	product_key    TEXT    NOT NULL,
	device_key     TEXT    NOT NULL,
	topic          TEXT    NOT NULL,
	payload        BLOB    NOT NULL,
	content_format INTEGER NOT NULL,
	received_at    INTEGER NOT NULL,
	peer           TEXT    NOT NULL,
	transport      TEXT    NOT NULL
) STRICT;

CREATE INDEX messages_device_id ON messages (product_key, device_key, id);
CREATE INDEX messages_received_at ON messages (received_at);

CREATE TABLE api_keys (
	id         TEXT    NOT NULL PRIMARY KEY,
	name       TEXT    NOT NULL,
	hash       BLOB    NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
) STRICT;
