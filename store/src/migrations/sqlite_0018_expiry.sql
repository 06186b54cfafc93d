-- SQLite migration 18 (PostgreSQL 14): the expired exports read the expiries (history action `E`) in order.
-- The sweep has no index of its own on positions: every import row would pay for it, and the
-- sweep (one debt type at a time, every 10 minutes) reads the entity's positions instead.
CREATE INDEX IF NOT EXISTS position_history_expired ON position_history (id) WHERE action = 'E';
