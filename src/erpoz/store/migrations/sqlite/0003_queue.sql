-- Runs submitted to a queue are run by workers (`erpoz worker`): `queue` names the queue (NULL
-- for a run a process started for itself, which no worker ever takes), `claims` counts how often
-- a worker took the run (a run that keeps killing its workers is failed after a limit).
ALTER TABLE runs ADD COLUMN queue TEXT;
ALTER TABLE runs ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_claimable ON runs (queue, created)
    WHERE queue IS NOT NULL AND status IN ('queued', 'running');
