-- 0009: retention (internal/retention). Per-product overrides of the global
-- retention periods, in milliseconds: NULL inherits the global setting, 0
-- keeps forever.
ALTER TABLE products ADD COLUMN retention_messages_ms INTEGER;
ALTER TABLE products ADD COLUMN retention_points_ms   INTEGER;
ALTER TABLE products ADD COLUMN retention_events_ms   INTEGER;
ALTER TABLE products ADD COLUMN retention_commands_ms INTEGER;

-- Deletion walks each product's oldest rows first.
CREATE INDEX messages_product_received ON messages (product_key, received_at);
CREATE INDEX device_events_product_at ON device_events (product_key, at);
CREATE INDEX commands_finished_created ON commands (product_key, created_at)
	WHERE state NOT IN ('pending', 'delivered');
CREATE INDEX dead_letters_created ON dead_letters (created_at);

-- Log entries a forwarding action had not handled yet when retention
-- deleted them (their IDs were above its saved cursor), and the highest
-- such ID: reported in the rule's status, never skipped silently.
ALTER TABLE rule_cursors ADD COLUMN retention_lost    INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rule_cursors ADD COLUMN retention_lost_to INTEGER NOT NULL DEFAULT 0;
