-- The receipt outbox: one delivery per receipt and receipt pipeline, created in the receipt's own
-- transaction, claimed by workers with a lease, retried until delivered or dead (a dead letter).
CREATE TABLE IF NOT EXISTS deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline         TEXT    NOT NULL,
    entity           TEXT    NOT NULL,
    receipt          BIGINT  NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    lease_until      TEXT,
    last_error       TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    delivered_at     TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_receipt ON deliveries (pipeline, receipt);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (pipeline, status, next_attempt_at);
