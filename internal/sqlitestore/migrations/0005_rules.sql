-- 0005: forwarding rules, their per-action cursors and dead letters.
-- Times are unix nanoseconds (UTC). Actions are a JSON array (forward.Action).
CREATE TABLE rules (
	id           TEXT    NOT NULL PRIMARY KEY,
	name         TEXT    NOT NULL,
	enabled      INTEGER NOT NULL,
	topic_filter TEXT    NOT NULL,
	product_key  TEXT    NOT NULL,
	device_key   TEXT    NOT NULL,
	condition    TEXT    NOT NULL,
	actions      TEXT    NOT NULL,
	max_attempts INTEGER NOT NULL,
	created_at   INTEGER NOT NULL,
	updated_at   INTEGER NOT NULL
) STRICT;

-- One row per (rule, action position): the last log ID fully handled and
-- counters of what happened since the rule was created.
CREATE TABLE rule_cursors (
	rule_id       TEXT    NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
	action        INTEGER NOT NULL,
	cursor        INTEGER NOT NULL,
	delivered     INTEGER NOT NULL DEFAULT 0,
	failures      INTEGER NOT NULL DEFAULT 0,
	dead_letters  INTEGER NOT NULL DEFAULT 0,
	last_error    TEXT    NOT NULL DEFAULT '',
	last_error_at INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (rule_id, action)
) STRICT, WITHOUT ROWID;

CREATE TABLE dead_letters (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	rule_id    TEXT    NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
	action     INTEGER NOT NULL,
	log_id     INTEGER NOT NULL,
	topic      TEXT    NOT NULL,
	envelope   BLOB    NOT NULL,
	last_error TEXT    NOT NULL,
	attempts   INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;

CREATE INDEX dead_letters_rule_id ON dead_letters (rule_id, id);
