-- 0006: device incarnation. A random 64-bit number per device record,
-- assigned at creation and never changed; tokens and DTLS sessions are bound
-- to it, so credentials of a deleted device are refused after a re-create
-- with the same keys. Existing devices get a random non-zero one (their
-- tokens, of the previous format, are refused anyway: devices authenticate
-- again).
ALTER TABLE devices ADD COLUMN incarnation INTEGER NOT NULL DEFAULT 0;
UPDATE devices SET incarnation = random() WHERE incarnation = 0;
UPDATE devices SET incarnation = 1 WHERE incarnation = 0;
