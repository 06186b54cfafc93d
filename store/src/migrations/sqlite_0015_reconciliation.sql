-- SQLite migration 15 (PostgreSQL 11): reconciliation labels kept as things arrive.
-- `recon_dirty`: what a receipt, a settlement flow, a treasury movement or a notification
-- touched, written in the transaction that stored it; the reconciler relabels from it and
-- deletes it in the transaction that writes the labels, so nothing is missed across a crash.
CREATE TABLE IF NOT EXISTS recon_dirty (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    entity    TEXT    NOT NULL,
    iuv       TEXT,
    iuf       TEXT,
    movement  TEXT
);

-- One row per payment (P:<iuv>:<iur>:<index>, or N:<iud> when only notified) or movement
-- (M:<year>-<bill>): its label set (comma-separated) and the item as JSON for listings.
-- `due_at`: when time alone may change its labels (a grace period ends). `seq` grows with
-- each relabelling transaction of the entity (taken under its lock): exports follow it.
CREATE TABLE IF NOT EXISTS recon_items (
    entity      TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    iuv         TEXT,
    classes     TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    due_at      TEXT,
    seq         BIGINT  NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (entity, key)
);
CREATE INDEX IF NOT EXISTS recon_items_seq ON recon_items (entity, seq);
-- Each entity's last `seq`: never goes back, even when the items that had it are removed.
CREATE TABLE IF NOT EXISTS recon_seqs (
    entity  TEXT    PRIMARY KEY,
    seq     BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS recon_items_iuv ON recon_items (entity, iuv) WHERE iuv IS NOT NULL;
CREATE INDEX IF NOT EXISTS recon_items_due ON recon_items (due_at) WHERE due_at IS NOT NULL;

-- The labels again, one row each: a class's items in key order, and counts per class.
CREATE TABLE IF NOT EXISTS recon_labels (
    entity  TEXT NOT NULL,
    class   TEXT NOT NULL,
    key     TEXT NOT NULL,
    PRIMARY KEY (entity, class, key)
);

-- The entity's own notifications of payments (MyPivot's "import pagati"), by IUD.
CREATE TABLE IF NOT EXISTS recon_notifications (
    entity        TEXT    NOT NULL,
    iud           TEXT    NOT NULL,
    iuv           TEXT    NOT NULL,
    amount_cents  BIGINT  NOT NULL,
    body          TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    received_at   TEXT    NOT NULL,
    PRIMARY KEY (entity, iud)
);
CREATE INDEX IF NOT EXISTS recon_notifications_iuv ON recon_notifications (entity, iuv);

-- Payments by IUV: the reconciler reads a receipt's and a settlement row's neighbours.
CREATE INDEX IF NOT EXISTS receipts_iuv ON receipts (entity, iuv);
CREATE INDEX IF NOT EXISTS report_payments_iuv ON report_payments (entity, iuv);

-- What was stored before labels were kept gets labelled by the first reconciler to run.
INSERT INTO recon_dirty (entity, iuv) SELECT DISTINCT entity, iuv FROM receipts;
INSERT INTO recon_dirty (entity, iuf) SELECT DISTINCT entity, iuf FROM report_flows WHERE status = 'ok';
INSERT INTO recon_dirty (entity, movement)
    SELECT entity, CAST(year AS TEXT) || '-' || bill FROM treasury_movements;
