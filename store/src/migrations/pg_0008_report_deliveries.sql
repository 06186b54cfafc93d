-- The outbox also carries settlement flows (reports pipelines): a delivery is of a receipt or of
-- a report flow, one per pipeline each.
ALTER TABLE deliveries ALTER COLUMN receipt DROP NOT NULL;
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS report BIGINT;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_subject CHECK ((receipt IS NULL) <> (report IS NULL));
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_report ON deliveries (pipeline, report)
    WHERE report IS NOT NULL;
