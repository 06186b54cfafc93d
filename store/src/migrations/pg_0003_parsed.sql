-- SQLite migration 7, the same in PostgreSQL: a receipt keeps the request as the hub decoded it,
-- beside the raw XML, so deliveries and exports do not parse the XML again.
ALTER TABLE receipts ADD COLUMN IF NOT EXISTS parsed TEXT;
