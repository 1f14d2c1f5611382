-- Durable waits (erpoz.engine: ctx.sleep, ctx.recv, ctx.get_event): a waiting run's row says when
-- it is due (`wake_at`) and what else wakes it sooner (`wake_on`: "msg:TOPIC" or
-- "event:RUN:KEY"); both are projections of its last run_waiting event, like `waiting_step`.
-- Workers claim due runs of their queues; nothing holds a sleeping run in memory.
ALTER TABLE runs ADD COLUMN wake_at DOUBLE PRECISION;
ALTER TABLE runs ADD COLUMN wake_on TEXT;
CREATE INDEX runs_due ON runs (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX runs_wake_on ON runs (wake_on) WHERE wake_on IS NOT NULL;

-- Messages sent to runs (`erpoz runs send`): a run takes them in order of `id`, per topic; which
-- it took is in its log (message_received), so this table is only ever appended to.
CREATE TABLE messages (
    id      BIGSERIAL PRIMARY KEY,
    run_id  TEXT NOT NULL,
    topic   TEXT NOT NULL,
    payload TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
CREATE INDEX messages_by_run ON messages (run_id, topic, id);

-- Events a run publishes (ctx.set_event): the latest value per key, read by other runs and
-- callers (get_event); each setting is also in the run's log (event_set).
CREATE TABLE run_events (
    run_id  TEXT NOT NULL,
    key     TEXT NOT NULL,
    payload TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, key)
);
