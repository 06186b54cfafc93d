-- Batch receipt pipelines (MyPay's export files) and receipt pipelines filtered by debt type or
-- serving a secondary beneficiary. An export fixes its deliveries when it opens, so a crash while
-- its file is written redoes that same file and the next export starts after it.
ALTER TABLE deliveries ADD COLUMN export_id BIGINT;
ALTER TABLE deliveries ADD COLUMN secondary INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS deliveries_export ON deliveries (export_id);
CREATE TABLE IF NOT EXISTS exports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline    TEXT    NOT NULL,
    entity      TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    receipts    INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  TEXT    NOT NULL,
    written_at  TEXT
);
CREATE INDEX IF NOT EXISTS exports_open ON exports (pipeline, status);
