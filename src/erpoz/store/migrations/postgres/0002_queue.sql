-- Runs submitted to a queue are run by workers (`erpoz worker`): `queue` names the queue (NULL
-- for a run a process started for itself, which no worker ever takes), `claims` counts how often
-- a worker took the run (a run that keeps killing its workers is failed after a limit).
-- Workers claim with SELECT … FOR UPDATE SKIP LOCKED over this partial index.
ALTER TABLE runs ADD COLUMN queue TEXT;
ALTER TABLE runs ADD COLUMN claims INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_claimable ON runs (queue, created)
    WHERE queue IS NOT NULL AND status IN ('queued', 'running');

-- Fencing: a writer records events only while it holds the run. Called in the statement (or
-- transaction) that inserts them, it locks the runs rows (FOR SHARE: a claim skips them until
-- the insert commits) and raises EZ001, naming the runs in DETAIL, when another owner holds
-- one: a worker that stalled past its lease cannot write after its successor took over.
CREATE FUNCTION erpoz_fence(ids TEXT[], owners TEXT[]) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    lost TEXT;
BEGIN
    SELECT string_agg(o.run_id, ',') INTO lost
    FROM unnest(ids, owners) AS o(run_id, owner)
    LEFT JOIN (SELECT r.run_id, r.owner FROM runs r WHERE r.run_id = ANY(ids) FOR SHARE) h
        ON h.run_id = o.run_id AND h.owner = o.owner
    WHERE h.run_id IS NULL;
    IF lost IS NOT NULL THEN
        RAISE EXCEPTION 'erpoz: run(s) % held by another owner', lost
            USING ERRCODE = 'EZ001', DETAIL = lost;
    END IF;
    RETURN true;
END;
$$;
