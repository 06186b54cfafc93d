-- The REST API: cursor pages of an entity's positions and receipts walk (entity, id); responses
-- kept for Idempotency-Key replays; Checkout carts opened for an entity.
CREATE INDEX IF NOT EXISTS positions_entity_id ON positions (entity, id);
CREATE INDEX IF NOT EXISTS receipts_entity_id ON receipts (entity, id);

CREATE TABLE IF NOT EXISTS api_responses (
    scope          TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    request_sha256 TEXT    NOT NULL,
    status         INTEGER NOT NULL,
    body           TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS api_responses_created ON api_responses (created_at);

CREATE TABLE IF NOT EXISTS carts (
    entity         TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    -- A JSON array of the cart's notice numbers, in the caller's order.
    notice_numbers TEXT    NOT NULL,
    redirect_url   TEXT    NOT NULL,
    -- The return URLs as the caller gave them (JSON text).
    return_urls    TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    PRIMARY KEY (entity, id)
);
