-- PostgreSQL migration 7 (SQLite 11): pagoPA's settlement flows (FdR) as pulled, their payment
-- rows linked to receipts, their anomalies, and each entity's pull cursor.
CREATE TABLE IF NOT EXISTS report_flows (
    id              BIGSERIAL PRIMARY KEY,
    entity          TEXT    NOT NULL,
    psp_id          TEXT    NOT NULL,
    iuf             TEXT    NOT NULL,
    revision        BIGINT  NOT NULL,
    source          TEXT    NOT NULL,
    -- loading (rows arriving, rows_done committed), ok, or failed (reason says why)
    status          TEXT    NOT NULL,
    reason          TEXT,
    flow_time       TEXT,
    flow_date       TEXT,
    regulation_id   TEXT,
    regulation_date TEXT,
    header          TEXT,
    declared_count  BIGINT,
    declared_cents  BIGINT,
    computed_count  BIGINT  NOT NULL DEFAULT 0,
    computed_cents  BIGINT  NOT NULL DEFAULT 0,
    linked          BIGINT  NOT NULL DEFAULT 0,
    anomalies       BIGINT  NOT NULL DEFAULT 0,
    rows_done       BIGINT  NOT NULL DEFAULT 0,
    published       TEXT,
    superseded_by   BIGINT,
    received_at     TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS report_flows_key ON report_flows (entity, psp_id, iuf, revision);
CREATE INDEX IF NOT EXISTS report_flows_iuf ON report_flows (entity, iuf);
CREATE INDEX IF NOT EXISTS report_flows_entity_id ON report_flows (entity, id);

CREATE TABLE IF NOT EXISTS report_payments (
    flow            BIGINT  NOT NULL,
    row_no          BIGINT  NOT NULL,
    entity          TEXT    NOT NULL,
    iuv             TEXT    NOT NULL,
    iur             TEXT    NOT NULL,
    -- as sent (NULL when the XML leaves it out); link_index is what linking uses (1 then)
    transfer_index  BIGINT,
    link_index      BIGINT  NOT NULL,
    amount_cents    BIGINT  NOT NULL,
    esito           BIGINT  NOT NULL,
    pay_date        TEXT    NOT NULL,
    receipt         BIGINT,
    receipt_transfer BIGINT,
    PRIMARY KEY (flow, row_no)
);
-- "the same payment in another flow" and "which flow settles this receipt" stay index lookups.
CREATE INDEX IF NOT EXISTS report_payments_key ON report_payments (entity, iuv, iur, link_index) WHERE receipt IS NOT NULL;
CREATE INDEX IF NOT EXISTS report_payments_receipt ON report_payments (receipt) WHERE receipt IS NOT NULL;

CREATE TABLE IF NOT EXISTS report_anomalies (
    id        BIGSERIAL PRIMARY KEY,
    flow      BIGINT  NOT NULL,
    row_no    BIGINT,
    code      TEXT    NOT NULL,
    severity  TEXT    NOT NULL,
    message   TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS report_anomalies_flow ON report_anomalies (flow, id);

CREATE TABLE IF NOT EXISTS report_cursors (
    entity        TEXT PRIMARY KEY,
    published_gt  TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
