-- 0007: durable anti-replay state of the session modes (symmetric option
-- 2089, dialect E option 2101): one row per token session, written in the
-- transaction of the uplink that advanced it. state is the window in
-- replay.State's binary form (floor, size, highest number, bitmap); version
-- (a uint64 bit pattern) grows with every accepted number. Times are unix
-- nanoseconds (UTC).
CREATE TABLE replay_sessions (
	product_key TEXT    NOT NULL,
	device_key  TEXT    NOT NULL,
	random      BLOB    NOT NULL,
	state       BLOB    NOT NULL,
	version     INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL,
	PRIMARY KEY (product_key, device_key, random)
) STRICT, WITHOUT ROWID;

CREATE INDEX replay_sessions_expires ON replay_sessions (expires_at);
