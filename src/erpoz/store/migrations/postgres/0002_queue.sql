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
-- (A loop of indexed lookups: about 20 µs a call, where one set-based query cost 100.)
CREATE FUNCTION erpoz_fence(ids TEXT[], owners TEXT[]) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    lost TEXT[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(array_length(ids, 1), 0) LOOP
        PERFORM 1 FROM runs WHERE run_id = ids[i] AND owner = owners[i] FOR SHARE;
        IF NOT FOUND THEN
            lost := lost || ids[i];
        END IF;
    END LOOP;
    IF cardinality(lost) > 0 THEN
        RAISE EXCEPTION 'erpoz: run(s) % held by another owner', array_to_string(lost, ', ')
            USING ERRCODE = 'EZ001', DETAIL = array_to_string(lost, ',');
    END IF;
    RETURN true;
END;
$$;
