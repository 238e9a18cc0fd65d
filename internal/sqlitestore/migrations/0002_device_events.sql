-- 0002: device lifecycle events (online/offline). Times are unix
-- nanoseconds (UTC). Like messages, events outlive their devices.
CREATE TABLE device_events (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	product_key TEXT    NOT NULL,
	device_key  TEXT    NOT NULL,
	type        TEXT    NOT NULL,
	at          INTEGER NOT NULL,
	transport   TEXT    NOT NULL,
	peer        TEXT    NOT NULL
) STRICT;

CREATE INDEX device_events_device_id ON device_events (product_key, device_key, id);
