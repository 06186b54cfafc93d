-- The outbox also carries settlement flows (reports pipelines): a delivery is of a receipt or of
-- a report flow, one per pipeline each. SQLite cannot drop a NOT NULL, so the table is rebuilt.
CREATE TABLE deliveries_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline         TEXT    NOT NULL,
    entity           TEXT    NOT NULL,
    receipt          BIGINT,
    idempotency_key  TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    lease_until      TEXT,
    last_error       TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    delivered_at     TEXT,
    export_id        BIGINT,
    secondary        INTEGER NOT NULL DEFAULT 0,
    report           BIGINT,
    CHECK ((receipt IS NULL) <> (report IS NULL))
);
INSERT INTO deliveries_new (id, pipeline, entity, receipt, idempotency_key, status, attempts,
        next_attempt_at, lease_until, last_error, created_at, updated_at, delivered_at, export_id,
        secondary)
    SELECT id, pipeline, entity, receipt, idempotency_key, status, attempts, next_attempt_at,
        lease_until, last_error, created_at, updated_at, delivered_at, export_id, secondary
    FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_receipt ON deliveries (pipeline, receipt);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_report ON deliveries (pipeline, report)
    WHERE report IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (pipeline, status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_export ON deliveries (export_id);
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (pipeline, lease_until)
    WHERE status = 'pending' AND lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_retried ON deliveries (pipeline, status, attempts)
    WHERE attempts > 1 OR (status = 'pending' AND attempts > 0);
