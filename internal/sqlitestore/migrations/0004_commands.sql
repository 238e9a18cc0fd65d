-- 0004: downlink commands (PROTOCOL.md §2.1). Times are unix nanoseconds
-- (UTC); delivered_at and replied_at are NULL until then. Like messages,
-- commands outlive their devices. Every state change is also appended to
-- the messages log ($events/{pk}/{dk}/command) in the same transaction.
CREATE TABLE commands (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	product_key   TEXT    NOT NULL,
	device_key    TEXT    NOT NULL,
	topic         TEXT    NOT NULL,
	method        TEXT    NOT NULL,
	params        BLOB,
	raw           BLOB,
	state         TEXT    NOT NULL,
	created_at    INTEGER NOT NULL,
	expires_at    INTEGER NOT NULL,
	delivered_at  INTEGER,
	replied_at    INTEGER,
	attempts      INTEGER NOT NULL DEFAULT 0,
	delivered_via TEXT    NOT NULL DEFAULT '',
	reply_code    INTEGER NOT NULL DEFAULT 0,
	reply_data    BLOB,
	reply_message TEXT    NOT NULL DEFAULT ''
) STRICT;

-- Listings and the oldest pending command of a device.
CREATE INDEX commands_device_id ON commands (product_key, device_key, id);
-- Expiry and the pending counts at start: only open commands.
CREATE INDEX commands_open_expiry ON commands (expires_at) WHERE state IN ('pending', 'delivered');
