-- The SQLite schema (migrations 1-5) in PostgreSQL's dialect: same tables, columns and indexes;
-- ids are BIGSERIAL, flags BOOLEAN, counts BIGINT, and timestamps stay TEXT in RFC 3339 UTC so
-- both stores compare and return them alike.
CREATE TABLE IF NOT EXISTS iuv_counters (
    entity           TEXT    NOT NULL,
    segregation_code TEXT    NOT NULL,
    next_value       BIGINT  NOT NULL,
    PRIMARY KEY (entity, segregation_code)
);

CREATE TABLE IF NOT EXISTS flows (
    id             BIGSERIAL PRIMARY KEY,
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
    -- A standing flow of a stream (one per entity and IUF), see flows_stream.
    stream         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_entity_iuf ON flows (entity, iuf);
CREATE UNIQUE INDEX IF NOT EXISTS flows_stream ON flows (entity, iuf) WHERE stream;

CREATE TABLE IF NOT EXISTS positions (
    id             BIGSERIAL PRIMARY KEY,
    entity         TEXT    NOT NULL,
    iud            TEXT    NOT NULL,
    iuv            TEXT,
    iuv_generated  BOOLEAN NOT NULL DEFAULT FALSE,
    status         TEXT    NOT NULL,
    debt_type      TEXT    NOT NULL,
    amount_cents   BIGINT  NOT NULL,
    due_date       TEXT,
    payer_id       TEXT    NOT NULL,
    data           TEXT    NOT NULL,
    version        BIGINT  NOT NULL DEFAULT 1,
    flow_id        BIGINT,
    created_by     TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    activated_at   TEXT,
    activations    BIGINT  NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS positions_live_iud ON positions (entity, iud) WHERE status <> 'annulled';
CREATE UNIQUE INDEX IF NOT EXISTS positions_live_iuv ON positions (entity, iuv) WHERE iuv IS NOT NULL AND status <> 'annulled';
CREATE INDEX IF NOT EXISTS positions_annulled_iud ON positions (entity, iud) WHERE status = 'annulled';
CREATE INDEX IF NOT EXISTS positions_annulled_iuv ON positions (entity, iuv) WHERE status = 'annulled';

CREATE TABLE IF NOT EXISTS position_history (
    id            BIGSERIAL PRIMARY KEY,
    position_id   BIGINT  NOT NULL,
    action        TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    flow_id       BIGINT,
    at            TEXT    NOT NULL,
    previous_data TEXT
);
CREATE INDEX IF NOT EXISTS position_history_position ON position_history (position_id);

CREATE TABLE IF NOT EXISTS receipts (
    id            BIGSERIAL PRIMARY KEY,
    entity        TEXT    NOT NULL,
    receipt_id    TEXT    NOT NULL,
    notice_number TEXT    NOT NULL,
    iuv           TEXT    NOT NULL,
    position_id   BIGINT,
    amount_cents  BIGINT  NOT NULL,
    psp_id        TEXT    NOT NULL,
    psp_name      TEXT    NOT NULL,
    payment_date  TEXT,
    operation     TEXT    NOT NULL,
    issue         TEXT,
    xml           TEXT    NOT NULL,
    received_at   TEXT    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS receipts_receipt_id ON receipts (entity, receipt_id);
CREATE INDEX IF NOT EXISTS receipts_notice ON receipts (entity, notice_number);

CREATE TABLE IF NOT EXISTS events (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT    NOT NULL,
    entity      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    at          TEXT    NOT NULL,
    correlation TEXT
);

CREATE TABLE IF NOT EXISTS deliveries (
    id               BIGSERIAL PRIMARY KEY,
    pipeline         TEXT    NOT NULL,
    entity           TEXT    NOT NULL,
    receipt          BIGINT  NOT NULL,
    idempotency_key  TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    lease_until      TEXT,
    last_error       TEXT,
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    delivered_at     TEXT,
    export_id        BIGINT,
    secondary        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_receipt ON deliveries (pipeline, receipt);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (pipeline, status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_export ON deliveries (export_id);

CREATE TABLE IF NOT EXISTS exports (
    id          BIGSERIAL PRIMARY KEY,
    pipeline    TEXT    NOT NULL,
    entity      TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    receipts    BIGINT  NOT NULL,
    attempts    BIGINT  NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  TEXT    NOT NULL,
    written_at  TEXT
);
CREATE INDEX IF NOT EXISTS exports_open ON exports (pipeline, status);

CREATE TABLE IF NOT EXISTS flow_outbox (
    id       BIGSERIAL PRIMARY KEY,
    flow_id  BIGINT  NOT NULL,
    key      TEXT    NOT NULL,
    payload  TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS flow_outbox_flow ON flow_outbox (flow_id, id);

CREATE TABLE IF NOT EXISTS jobs (
    name         TEXT    PRIMARY KEY,
    holder       TEXT    NOT NULL,
    lease_until  TEXT    NOT NULL,
    last_tick    TEXT,
    cursor       BIGINT  NOT NULL DEFAULT 0
);
