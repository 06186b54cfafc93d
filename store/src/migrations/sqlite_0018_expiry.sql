-- SQLite migration 18 (PostgreSQL 14): the expiry sweep finds the open positions of a debt
-- type due before a day without walking the entity's positions, and the expired exports read
-- the expiries (history action `E`) in order.
CREATE INDEX IF NOT EXISTS positions_open_due ON positions (entity, debt_type, due_date) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS position_history_expired ON position_history (id) WHERE action = 'E';
