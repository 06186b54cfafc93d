-- Payments at the node: activations on the position, receipts, and the domain events others
-- consume (the receipt fan-out reads `events` in order).
ALTER TABLE positions ADD COLUMN activated_at TEXT;
ALTER TABLE positions ADD COLUMN activations BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS receipts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    entity        TEXT    NOT NULL,
    receipt_id    TEXT    NOT NULL,
    notice_number TEXT    NOT NULL,
    iuv           TEXT    NOT NULL,
    position_id   BIGINT,
    amount_cents  BIGINT  NOT NULL,
    psp_id        TEXT    NOT NULL,
    psp_name      TEXT    NOT NULL,
    payment_date  TEXT,
    operation     TEXT    NOT NULL,
    -- Why operators must look at it (unknown notice, amount differs, ...); NULL when it paid a
    -- position normally.
    issue         TEXT,
    xml           TEXT    NOT NULL,
    received_at   TEXT    NOT NULL
);
-- The node repeats a receipt until it gets OK: the same receipt id is stored once.
CREATE UNIQUE INDEX IF NOT EXISTS receipts_receipt_id ON receipts (entity, receipt_id);
CREATE INDEX IF NOT EXISTS receipts_notice ON receipts (entity, notice_number);

CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT    NOT NULL,
    entity   TEXT    NOT NULL,
    subject  TEXT    NOT NULL,
    payload  TEXT    NOT NULL,
    at       TEXT    NOT NULL
);

-- Lookups by IUD or IUV use the live partial unique indexes; these cover the annulled rows
-- (few), so finding "was it annulled?" never scans the table.
CREATE INDEX IF NOT EXISTS positions_annulled_iud ON positions (entity, iud) WHERE status = 'annulled';
CREATE INDEX IF NOT EXISTS positions_annulled_iuv ON positions (entity, iuv) WHERE status = 'annulled';
