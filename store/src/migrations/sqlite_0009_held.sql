-- Receipts that need an operator (issue 15).
-- A receipt id resent with other content is kept as a conflicting copy of the first one
-- (conflict_of: the first's id), so the receipt id is unique among first copies only.
ALTER TABLE receipts ADD COLUMN conflict_of BIGINT;
-- What an operator decided about a flagged receipt: released or dismissed, and when.
ALTER TABLE receipts ADD COLUMN review TEXT;
ALTER TABLE receipts ADD COLUMN reviewed_at TEXT;
DROP INDEX IF EXISTS receipts_receipt_id;
CREATE UNIQUE INDEX IF NOT EXISTS receipts_receipt_id ON receipts (entity, receipt_id) WHERE conflict_of IS NULL;
CREATE INDEX IF NOT EXISTS receipts_conflict_of ON receipts (conflict_of) WHERE conflict_of IS NOT NULL;
-- The deliveries a flagged receipt would get in formats that cannot say what is wrong with it
-- (mypay-push, mypay-export): they become deliveries when an operator releases the receipt and
-- are dropped when it is dismissed. Only held receipts are here, so counting them is cheap.
CREATE TABLE IF NOT EXISTS held_deliveries (
    pipeline        TEXT    NOT NULL,
    receipt         BIGINT  NOT NULL,
    entity          TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    secondary       INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL,
    PRIMARY KEY (pipeline, receipt)
);
CREATE INDEX IF NOT EXISTS held_deliveries_receipt ON held_deliveries (receipt);
