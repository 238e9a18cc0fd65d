-- 0010: per-point rollups, maintained by Project in the same transaction as
-- the samples. res is the bucket width in nanoseconds (60e9: 1 minute,
-- 3600e9: 1 hour), bucket its epoch-aligned start. count counts every
-- sample, num_count the numeric ones (value_type 1 or 2) that sum, min and
-- max cover (min and max are NULL while there is none; STRICT ANY keeps an
-- integer an integer).
CREATE TABLE point_rollups (
	product_key TEXT    NOT NULL,
	device_key  TEXT    NOT NULL,
	kind        TEXT    NOT NULL,
	name        TEXT    NOT NULL,
	res         INTEGER NOT NULL,
	bucket      INTEGER NOT NULL,
	count       INTEGER NOT NULL,
	num_count   INTEGER NOT NULL,
	sum         REAL    NOT NULL,
	min         ANY,
	max         ANY,
	PRIMARY KEY (product_key, device_key, kind, name, res, bucket)
) STRICT, WITHOUT ROWID;

-- Samples stored before this step: 1-minute rollups from the samples, then
-- 1-hour rollups from those (an hour holds whole minutes).
INSERT INTO point_rollups (product_key, device_key, kind, name, res, bucket, count, num_count, sum, min, max)
SELECT product_key, device_key, kind, name, 60000000000, b, count(*), count(num), total(num), min(num), max(num)
FROM (SELECT product_key, device_key, kind, name, ts - ((ts % 60000000000) + 60000000000) % 60000000000 AS b,
		CASE WHEN value_type IN (1, 2) THEN value END AS num FROM points)
GROUP BY product_key, device_key, kind, name, b;

INSERT INTO point_rollups (product_key, device_key, kind, name, res, bucket, count, num_count, sum, min, max)
SELECT product_key, device_key, kind, name, 3600000000000, b, sum(count), sum(num_count), total(sum), min(min), max(max)
FROM (SELECT product_key, device_key, kind, name, count, num_count, sum, min, max,
		bucket - ((bucket % 3600000000000) + 3600000000000) % 3600000000000 AS b
	FROM point_rollups WHERE res = 60000000000)
GROUP BY product_key, device_key, kind, name, b;
