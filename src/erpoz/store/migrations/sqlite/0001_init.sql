-- erpoz run store, schema 1: runs (a projection), events (the log), blobs, cache.
CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    flow             TEXT NOT NULL,
    source           TEXT,
    fingerprint      TEXT NOT NULL,
    status           TEXT NOT NULL,
    created          REAL NOT NULL,
    updated          REAL NOT NULL,
    parent_run_id    TEXT,
    replay_from      TEXT,
    inputs           TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    waiting_step     TEXT,
    head_seq         INTEGER NOT NULL DEFAULT 0,
    head_hash        TEXT NOT NULL,
    owner            TEXT,
    lease_until      REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_created ON runs (created);
CREATE INDEX runs_by_status ON runs (status, created);

CREATE TABLE events (
    run_id    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    ts        REAL NOT NULL,
    kind      TEXT NOT NULL,
    step      TEXT,
    attempt   INTEGER NOT NULL,
    data      TEXT NOT NULL,
    payload   TEXT,
    blob      TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- Exactly-once recording of a step's success is a constraint, not a convention.
CREATE UNIQUE INDEX events_one_success ON events (run_id, step) WHERE kind = 'step_succeeded';

-- The log is append-only.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'erpoz events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'erpoz events are append-only'); END;

CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    data   TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE cache (
    key     TEXT PRIMARY KEY,
    step    TEXT NOT NULL,
    output  TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
