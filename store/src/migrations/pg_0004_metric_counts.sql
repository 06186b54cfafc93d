-- SQLite migration 8, in PostgreSQL: running totals for /metrics, added to in the transaction that
-- writes what they count. Each total is split over a few shards (the connection's, see
-- `events.rs`), so concurrent transactions of several hubs do not queue on one row; a scrape sums
-- them. The backfill reads every row once: no statement limit, and writers wait for it.
SET LOCAL statement_timeout = 0;
LOCK TABLE receipts, deliveries, flows IN SHARE MODE;
CREATE TABLE IF NOT EXISTS metric_counts (
    kind   TEXT    NOT NULL,
    label  TEXT    NOT NULL,
    shard  INTEGER NOT NULL,
    n      BIGINT  NOT NULL,
    PRIMARY KEY (kind, label, shard)
);
INSERT INTO metric_counts (kind, label, shard, n)
    SELECT 'receipts', entity, 0, COUNT(*) FROM receipts GROUP BY entity;
INSERT INTO metric_counts (kind, label, shard, n)
    SELECT 'receipts_flagged', entity, 0, COUNT(issue) FROM receipts GROUP BY entity HAVING COUNT(issue) > 0;
INSERT INTO metric_counts (kind, label, shard, n)
    SELECT 'deliveries', pipeline, 0, COUNT(*) FROM deliveries GROUP BY pipeline;
INSERT INTO metric_counts (kind, label, shard, n)
    SELECT 'import_accepted', entity, 0, SUM(accepted) FROM flows GROUP BY entity;
INSERT INTO metric_counts (kind, label, shard, n)
    SELECT 'import_rejected', entity, 0, SUM(rejected) FROM flows GROUP BY entity;
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (pipeline, lease_until)
    WHERE status = 'pending' AND lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_retried ON deliveries (pipeline, status, attempts)
    WHERE attempts > 1 OR (status = 'pending' AND attempts > 0);
