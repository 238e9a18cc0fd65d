-- 0008: secrets at rest. products.product_secret, devices.device_secret and
-- rules.actions hold values sealed by internal/secretbox
-- ("cg1:<key id>:<base64>", AES-256-GCM under a key kept outside the
-- database). The Go part of this step (goSteps in migrate.go) seals the
-- plaintext values written by earlier versions in this transaction.
SELECT 1;
