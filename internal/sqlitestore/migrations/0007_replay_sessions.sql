-- 0007: durable anti-replay state of the session modes (symmetric option
-- 2089, dialect E option 2101): one row per token session, written in the
-- transaction of the uplink that advanced it. high and version hold uint64
-- bit patterns; seen is the window bitmap (little-endian 64-bit words, bit i
-- = high-i accepted). Times are unix nanoseconds (UTC).
CREATE TABLE replay_sessions (
	product_key TEXT    NOT NULL,
	device_key  TEXT    NOT NULL,
	random      BLOB    NOT NULL,
	floor       INTEGER NOT NULL,
	size        INTEGER NOT NULL,
	high        INTEGER NOT NULL,
	started     INTEGER NOT NULL,
	seen        BLOB    NOT NULL,
	version     INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	PRIMARY KEY (product_key, device_key, random)
) STRICT, WITHOUT ROWID;

CREATE INDEX replay_sessions_expires ON replay_sessions (expires_at);
