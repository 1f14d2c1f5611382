-- erpoz memory on PostgreSQL, schema 2: a turn written from a step carries the step's
-- idempotency key for that write, at most once per session, so that a step that runs again
-- (resumed after a crash, retried) does not write the turn twice.
ALTER TABLE memory_turns ADD COLUMN key TEXT;
CREATE UNIQUE INDEX memory_turns_key ON memory_turns (session, key) WHERE key IS NOT NULL;
