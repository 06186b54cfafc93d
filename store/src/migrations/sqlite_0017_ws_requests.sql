-- SQLite migration 17 (PostgreSQL 13): what MyPay's SOAP services booked for an entity, by the
-- request token they answered (an import flow uploaded, an export asked for): its state as
-- MyPay names it (LOAD_IMPORT, IMPORT_ESEGUITO...), so any hub sharing the store can answer
-- paaSILChiediStato*.
CREATE TABLE IF NOT EXISTS ws_requests (
    entity      TEXT NOT NULL,
    token       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL,
    error_code  TEXT,
    params      TEXT NOT NULL,
    outcome     TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (entity, token)
);
CREATE INDEX IF NOT EXISTS ws_requests_state ON ws_requests (state);
