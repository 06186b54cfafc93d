-- SQLite migration 19 (PostgreSQL 15): a receipt the node sends an entity as a secondary
-- beneficiary of another entity's notice keeps the issuer's fiscal code; NULL is the entity's
-- own receipt. Such a receipt pays nothing and is no payment of the entity's positions.
ALTER TABLE receipts ADD COLUMN issuer TEXT;
