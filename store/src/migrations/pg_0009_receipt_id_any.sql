-- PostgreSQL migration 9 (SQLite 13): a settlement flow's row for another entity's IUV finds the
-- receipt by its id alone (a secondary beneficiary is credited by a transfer of a receipt that
-- belongs to the notice's entity), on an index instead of a scan.
CREATE INDEX IF NOT EXISTS receipts_receipt_id_any ON receipts (receipt_id) WHERE conflict_of IS NULL;
