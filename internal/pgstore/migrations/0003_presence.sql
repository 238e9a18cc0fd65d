-- Presence shared by the nodes of a cluster: each device's newest contact
-- on any node and whether its online transition is recorded (no offline
-- one after it). Nodes merge their contacts under a row lock; offline
-- transitions are found by the node holding the "presence" lease.
CREATE TABLE device_presence (
	product_key TEXT COLLATE "C" NOT NULL,
	device_key  TEXT COLLATE "C" NOT NULL,
	last_seen   BIGINT  NOT NULL,
	lifetime    BIGINT  NOT NULL,
	address     TEXT    NOT NULL,
	transport   TEXT    NOT NULL,
	online      BOOLEAN NOT NULL,
	PRIMARY KEY (product_key, device_key)
);

CREATE INDEX device_presence_online_until ON device_presence ((last_seen + lifetime)) WHERE online;
