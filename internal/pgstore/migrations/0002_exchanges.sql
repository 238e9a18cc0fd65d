-- CoAP exchanges of CON uplinks (device, peer address, Message ID), kept
-- for EXCHANGE_LIFETIME so that a retransmission reaching another node is
-- stored once and answered with the first entry's log id.
CREATE TABLE exchanges (
	key        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
	log_id     BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);

CREATE INDEX exchanges_expires_at ON exchanges (expires_at);
