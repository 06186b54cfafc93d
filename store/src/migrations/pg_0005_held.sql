-- SQLite migration 9, the same in PostgreSQL: conflicting copies of a receipt id, operators'
-- reviews of flagged receipts, and the deliveries held until a review.
ALTER TABLE receipts ADD COLUMN IF NOT EXISTS conflict_of BIGINT;
ALTER TABLE receipts ADD COLUMN IF NOT EXISTS review TEXT;
ALTER TABLE receipts ADD COLUMN IF NOT EXISTS reviewed_at TEXT;
DROP INDEX IF EXISTS receipts_receipt_id;
CREATE UNIQUE INDEX IF NOT EXISTS receipts_receipt_id ON receipts (entity, receipt_id) WHERE conflict_of IS NULL;
CREATE INDEX IF NOT EXISTS receipts_conflict_of ON receipts (conflict_of) WHERE conflict_of IS NOT NULL;
CREATE TABLE IF NOT EXISTS held_deliveries (
    pipeline        TEXT    NOT NULL,
    receipt         BIGINT  NOT NULL,
    entity          TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    secondary       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TEXT    NOT NULL,
    PRIMARY KEY (pipeline, receipt)
);
CREATE INDEX IF NOT EXISTS held_deliveries_receipt ON held_deliveries (receipt);
