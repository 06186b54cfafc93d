-- PostgreSQL migration 10 (SQLite 14): the treasury's incoming movements (the treasurer's
-- giornale di cassa), one per (entity, year, bill): a file read twice changes nothing, a
-- reversal (STORNATO) removes its movement. `iuf`/`iuv` come from the causale, for matching.
CREATE TABLE IF NOT EXISTS treasury_movements (
    id              BIGSERIAL PRIMARY KEY,
    entity          TEXT    NOT NULL,
    year            BIGINT  NOT NULL,
    bill            TEXT    NOT NULL,
    amount_cents    BIGINT  NOT NULL,
    accounting_date TEXT,
    value_date      TEXT,
    causale         TEXT    NOT NULL,
    payer           TEXT,
    end_to_end_id   TEXT,
    iuf             TEXT,
    iuv             TEXT,
    source          TEXT    NOT NULL,
    received_at     TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS treasury_movements_key ON treasury_movements (entity, year, bill);
CREATE INDEX IF NOT EXISTS treasury_movements_iuf ON treasury_movements (entity, iuf) WHERE iuf IS NOT NULL;
CREATE INDEX IF NOT EXISTS treasury_movements_iuv ON treasury_movements (entity, iuv) WHERE iuv IS NOT NULL;
