-- 0003: the point store, a projection of the message log (see
-- internal/point). Times are unix nanoseconds (UTC).
--
-- value_type tags the typed value in value (STRICT ANY keeps the stored
-- type exactly): 1 float (REAL), 2 integer (INTEGER), 3 string (TEXT),
-- 4 bool (INTEGER 0/1), 5 JSON object or array (TEXT).
--
-- points is clustered on the primary key, so the samples of one point of
-- one device lie together in time order: a time range is one contiguous
-- B-tree range scan, a page one seek plus LIMIT rows.
CREATE TABLE points (
	product_key TEXT    NOT NULL,
	device_key  TEXT    NOT NULL,
	kind        TEXT    NOT NULL,
	name        TEXT    NOT NULL,
	ts          INTEGER NOT NULL,
	msg_id      INTEGER NOT NULL,
	value_type  INTEGER NOT NULL,
	value       ANY,
	PRIMARY KEY (product_key, device_key, kind, name, ts, msg_id)
) STRICT, WITHOUT ROWID;

-- The newest sample of every point; replaced only by a newer one (ts, then
-- msg_id), so a late-arriving old sample does not overwrite it.
CREATE TABLE latest_points (
	product_key TEXT    NOT NULL,
	device_key  TEXT    NOT NULL,
	kind        TEXT    NOT NULL,
	name        TEXT    NOT NULL,
	ts          INTEGER NOT NULL,
	msg_id      INTEGER NOT NULL,
	value_type  INTEGER NOT NULL,
	value       ANY,
	PRIMARY KEY (product_key, device_key, kind, name)
) STRICT, WITHOUT ROWID;

-- The last message log ID each projection has written (committed in the
-- same transaction as its samples).
CREATE TABLE projector_cursors (
	name    TEXT    NOT NULL PRIMARY KEY,
	last_id INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
