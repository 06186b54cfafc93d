-- PostgreSQL migration 12 (SQLite 16): a payer's positions found without walking the entity's
-- (MyPay's `paaSILChiediPosizioniAperte` / `paaSILChiediStoricoPagamenti` ask by fiscal code).
CREATE INDEX IF NOT EXISTS positions_payer ON positions (entity, payer_id, id);
