-- PostgreSQL migration 6, the same as SQLite's 10: attempts at each claimed source file, counted
-- before the work starts, so a file that crashes the import is set aside after a few tries
-- instead of being taken again at every start.
CREATE TABLE IF NOT EXISTS file_attempts (
    pipeline TEXT NOT NULL,
    name TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, name)
);
