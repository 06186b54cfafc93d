-- Events carry a correlation (flow-<id>, a request id) so one story can be followed across kinds.
ALTER TABLE events ADD COLUMN correlation TEXT;

-- Stream intake: a Kafka partition is a standing flow, one per (entity, IUF), found again by
-- every process; its replies wait in the outbox, committed with the chunk they answer.
ALTER TABLE flows ADD COLUMN stream INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX IF NOT EXISTS flows_stream ON flows (entity, iuf) WHERE stream = 1;
CREATE TABLE IF NOT EXISTS flow_outbox (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    flow_id  BIGINT  NOT NULL,
    key      TEXT    NOT NULL,
    payload  TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS flow_outbox_flow ON flow_outbox (flow_id, id);

-- Job leases: a cron job or a singleton runs on one hub at a time among those sharing a store;
-- last_tick makes a cron tick run once, cursor is where the job got to.
CREATE TABLE IF NOT EXISTS jobs (
    name         TEXT    PRIMARY KEY,
    holder       TEXT    NOT NULL,
    lease_until  TEXT    NOT NULL,
    last_tick    TEXT,
    cursor       BIGINT  NOT NULL DEFAULT 0
);
