-- Portable SQL on purpose: the PostgreSQL store runs the same statements but for the id columns.
CREATE TABLE IF NOT EXISTS iuv_counters (
    entity           TEXT    NOT NULL,
    segregation_code TEXT    NOT NULL,
    next_value       BIGINT  NOT NULL,
    PRIMARY KEY (entity, segregation_code)
);

CREATE TABLE IF NOT EXISTS flows (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    entity         TEXT    NOT NULL,
    iuf            TEXT    NOT NULL,
    file_name      TEXT    NOT NULL,
    version        TEXT    NOT NULL,
    content_sha256 TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    error_code     TEXT,
    error_message  TEXT,
    rows_done      BIGINT  NOT NULL DEFAULT 0,
    accepted       BIGINT  NOT NULL DEFAULT 0,
    rejected       BIGINT  NOT NULL DEFAULT 0,
    scarti_bytes   BIGINT  NOT NULL DEFAULT 0,
    iuv_bytes      BIGINT  NOT NULL DEFAULT 0,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_entity_iuf ON flows (entity, iuf);

CREATE TABLE IF NOT EXISTS positions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    entity         TEXT    NOT NULL,
    iud            TEXT    NOT NULL,
    iuv            TEXT,
    iuv_generated  INTEGER NOT NULL DEFAULT 0,
    status         TEXT    NOT NULL,
    debt_type      TEXT    NOT NULL,
    amount_cents   BIGINT  NOT NULL,
    due_date       TEXT,
    payer_id       TEXT    NOT NULL,
    data           TEXT    NOT NULL,
    version        INTEGER NOT NULL DEFAULT 1,
    flow_id        BIGINT,
    -- Who created it (e.g. `flow:12`): creation is the first history entry, kept here so an
    -- import writes one row per position.
    created_by     TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
);
-- One live position per IUD and per IUV; annulled ones stay as history and free both.
-- The notice number is derived from the IUV (aux digit 3), so it has no column of its own.
CREATE UNIQUE INDEX IF NOT EXISTS positions_live_iud ON positions (entity, iud) WHERE status <> 'annulled';
CREATE UNIQUE INDEX IF NOT EXISTS positions_live_iuv ON positions (entity, iuv) WHERE iuv IS NOT NULL AND status <> 'annulled';

-- Every change after creation, with the data it replaced.
CREATE TABLE IF NOT EXISTS position_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    position_id   BIGINT  NOT NULL,
    action        TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    flow_id       BIGINT,
    at            TEXT    NOT NULL,
    previous_data TEXT
);
CREATE INDEX IF NOT EXISTS position_history_position ON position_history (position_id);
