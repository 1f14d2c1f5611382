-- Schedules (erpoz.engine.schedules): cron-style schedules that start runs of a flow. A tick is
-- claimed by compare-and-swap on `next_tick` in one write transaction together with its
-- `schedule_ticks` row, so exactly one worker fires each tick; the run it starts has an id
-- derived from the schedule and the tick, so a fire retried after a crash (a tick still
-- `claimed` whose owner died or whose lease lapsed) starts that same run or finds it started.
CREATE TABLE schedules (
    name      TEXT PRIMARY KEY,
    flow      TEXT NOT NULL,
    cron      TEXT NOT NULL,
    timezone  TEXT NOT NULL,
    inputs    TEXT NOT NULL,
    queue     TEXT NOT NULL,
    catchup   TEXT NOT NULL,
    paused    INTEGER NOT NULL DEFAULT 0,
    origin    TEXT NOT NULL,
    created   REAL NOT NULL,
    updated   REAL NOT NULL,
    next_tick REAL NOT NULL,
    fired     INTEGER NOT NULL DEFAULT 0,
    skipped   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE schedule_ticks (
    schedule    TEXT NOT NULL,
    tick        REAL NOT NULL,
    run_id      TEXT NOT NULL,
    state       TEXT NOT NULL,
    owner       TEXT,
    lease_until REAL,
    claimed     REAL NOT NULL,
    fired       REAL,
    claims      INTEGER NOT NULL DEFAULT 1,
    error       TEXT,
    PRIMARY KEY (schedule, tick)
) WITHOUT ROWID;
CREATE INDEX schedule_ticks_claimed ON schedule_ticks (state, lease_until);

-- Limits shared by every process of the store (erpoz.store.limits): a rate limit keeps the
-- grants of its window (`limit_grants`, a sliding log: a grant is refused when the window
-- would hold more than the limit), a concurrency limit its slots in use (`limit_slots`, each
-- with a lease so that a dead holder's slot comes free).
CREATE TABLE limit_grants (
    grant_id TEXT PRIMARY KEY,
    key      TEXT NOT NULL,
    at       REAL NOT NULL,
    amount   REAL NOT NULL,
    owner    TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX limit_grants_by_key ON limit_grants (key, at);

CREATE TABLE limit_slots (
    key     TEXT NOT NULL,
    holder  TEXT NOT NULL,
    owner   TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (key, holder)
) WITHOUT ROWID;
