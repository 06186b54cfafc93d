-- SQLite migration 10, the same in PostgreSQL: attempts at each claimed source file, counted
-- before the work starts, so a file that crashes the import is set aside after a few tries
-- instead of being taken again at every start.
CREATE TABLE file_attempts (
    pipeline TEXT NOT NULL,
    name TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (pipeline, name)
);
