-- Running totals for /metrics, so a scrape reads a few small rows instead of counting whole
-- tables. Each is added to in the transaction that writes what it counts: `receipts` and
-- `receipts_flagged` (label: entity) with each receipt stored, `deliveries` (label: pipeline)
-- with each delivery created, `import_accepted` and `import_rejected` (label: entity) with each
-- chunk's checkpoint. Counted once here from the rows already stored.
CREATE TABLE IF NOT EXISTS metric_counts (
    kind   TEXT    NOT NULL,
    label  TEXT    NOT NULL,
    n      BIGINT  NOT NULL,
    PRIMARY KEY (kind, label)
);
INSERT INTO metric_counts (kind, label, n)
    SELECT 'receipts', entity, COUNT(*) FROM receipts GROUP BY entity;
INSERT INTO metric_counts (kind, label, n)
    SELECT 'receipts_flagged', entity, COUNT(issue) FROM receipts GROUP BY entity HAVING COUNT(issue) > 0;
INSERT INTO metric_counts (kind, label, n)
    SELECT 'deliveries', pipeline, COUNT(*) FROM deliveries GROUP BY pipeline;
INSERT INTO metric_counts (kind, label, n)
    SELECT 'import_accepted', entity, SUM(accepted) FROM flows GROUP BY entity;
INSERT INTO metric_counts (kind, label, n)
    SELECT 'import_rejected', entity, SUM(rejected) FROM flows GROUP BY entity;
-- The delivery counts that change are counted on indexes whose predicate the scrape's matches:
-- pending and dead on deliveries_due, leased (in flight) and retried on these two small ones.
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (pipeline, lease_until)
    WHERE status = 'pending' AND lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_retried ON deliveries (pipeline, status, attempts)
    WHERE attempts > 1 OR (status = 'pending' AND attempts > 0);
