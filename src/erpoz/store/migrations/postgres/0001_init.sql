-- erpoz run store on PostgreSQL, schema 1: runs (a projection), events (the log), blobs, cache.
-- The same tables as the SQLite store (its migrations 1 and 2 folded into one). Times are
-- double precision so that an event's ts reads back as exactly the float that was hashed; data
-- and payload are TEXT (not jsonb) so they read back as exactly the text that was hashed.
CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    flow             TEXT NOT NULL,
    source           TEXT,
    fingerprint      TEXT NOT NULL,
    status           TEXT NOT NULL,
    created          DOUBLE PRECISION NOT NULL,
    updated          DOUBLE PRECISION NOT NULL,
    parent_run_id    TEXT,
    replay_from      TEXT,
    inputs           TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    waiting_step     TEXT,
    head_seq         BIGINT NOT NULL DEFAULT 0,
    head_hash        TEXT NOT NULL,
    owner            TEXT,
    lease_until      DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    tenant           TEXT NOT NULL DEFAULT '-'
);
CREATE INDEX runs_by_created ON runs (created);
CREATE INDEX runs_by_status ON runs (status, created);
CREATE INDEX runs_by_tenant ON runs (tenant, created);

CREATE TABLE events (
    run_id    TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    ts        DOUBLE PRECISION NOT NULL,
    kind      TEXT NOT NULL,
    step      TEXT,
    attempt   INTEGER NOT NULL,
    data      TEXT NOT NULL,
    payload   TEXT,
    blob      TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Exactly-once recording of a step's success is a constraint, not a convention.
CREATE UNIQUE INDEX events_one_success ON events (run_id, step) WHERE kind = 'step_succeeded';

-- The log is append-only: no UPDATE, DELETE or TRUNCATE of events.
CREATE FUNCTION erpoz_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'erpoz events are append-only';
END;
$$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION erpoz_events_append_only();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION erpoz_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION erpoz_events_append_only();

CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    data   TEXT NOT NULL
);

CREATE TABLE cache (
    key     TEXT PRIMARY KEY,
    step    TEXT NOT NULL,
    output  TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
