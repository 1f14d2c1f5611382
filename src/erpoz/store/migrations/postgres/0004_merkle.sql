-- The Merkle tree over the log (RFC 9162 hashing; see erpoz/store/_merkle.py): one leaf per
-- event in the order events were committed, the tree's size and compact range (its frontier:
-- the roots of its perfect subtrees, largest first, 32 bytes each), and the roots of complete
-- subtrees at every 4th level for proofs. `origin` names this log; `erpoz migrate` carries it.
CREATE TABLE merkle_state (
    id       BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    origin   TEXT NOT NULL,
    size     BIGINT NOT NULL,
    frontier BYTEA NOT NULL
);
INSERT INTO merkle_state (id, origin, size, frontier)
    VALUES (true, replace(gen_random_uuid()::text, '-', ''), 0, '\x'::bytea);

CREATE TABLE merkle_leaves (
    run_id TEXT NOT NULL,
    seq    BIGINT NOT NULL,
    pos    BIGINT NOT NULL,
    leaf   BYTEA NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE UNIQUE INDEX merkle_leaves_by_pos ON merkle_leaves (pos);

CREATE TABLE merkle_nodes (
    level SMALLINT NOT NULL,
    idx   BIGINT NOT NULL,
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Append leaves in the order given. The state row is locked until the transaction ends: the
-- commits of every process enter the tree one after another, in the order they commit.
-- The same arithmetic as erpoz.store._merkle.CompactRange (a test holds them to each other).
CREATE FUNCTION erpoz_merkle_append(run_ids TEXT[], seqs BIGINT[], leaves BYTEA[])
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    n       BIGINT;
    first   BIGINT;
    f       BYTEA;
    carry   BYTEA;
    k       BIGINT;
    lvl     INTEGER;
    total   INTEGER := coalesce(cardinality(leaves), 0);
    levels  SMALLINT[] := '{}';
    indexes BIGINT[] := '{}';
    hashes  BYTEA[] := '{}';
BEGIN
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    SELECT size, frontier INTO n, f FROM merkle_state FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the erpoz Merkle tree''s state row (merkle_state) is missing';
    END IF;
    first := n;
    FOR i IN 1 .. total LOOP
        carry := leaves[i];
        k := n;
        lvl := 0;
        WHILE k & 1 = 1 LOOP
            carry := sha256('\x01'::bytea || substring(f FROM length(f) - 31) || carry);
            f := substring(f FROM 1 FOR length(f) - 32);
            k := k >> 1;
            lvl := lvl + 1;
            IF lvl % 4 = 0 THEN
                levels := levels || lvl::smallint;
                indexes := indexes || (n >> lvl);
                hashes := hashes || carry;
            END IF;
        END LOOP;
        f := f || carry;
        n := n + 1;
    END LOOP;
    INSERT INTO merkle_leaves (run_id, seq, pos, leaf)
        SELECT u.r, u.s, first + u.o - 1, u.l
        FROM unnest(run_ids, seqs, leaves) WITH ORDINALITY AS u(r, s, l, o);
    IF cardinality(levels) > 0 THEN
        INSERT INTO merkle_nodes (level, idx, hash) SELECT * FROM unnest(levels, indexes, hashes);
    END IF;
    UPDATE merkle_state SET size = n, frontier = f;
    RETURN first;
END;
$$;

-- Append-only, like the events: leaves and nodes never change; the tree never shrinks.
CREATE FUNCTION erpoz_merkle_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the erpoz Merkle tree is append-only';
END;
$$;
CREATE TRIGGER merkle_leaves_no_change BEFORE UPDATE OR DELETE ON merkle_leaves
    FOR EACH ROW EXECUTE FUNCTION erpoz_merkle_append_only();
CREATE TRIGGER merkle_leaves_no_truncate BEFORE TRUNCATE ON merkle_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION erpoz_merkle_append_only();
CREATE TRIGGER merkle_nodes_no_change BEFORE UPDATE OR DELETE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION erpoz_merkle_append_only();
CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION erpoz_merkle_append_only();
CREATE TRIGGER merkle_state_no_delete BEFORE DELETE ON merkle_state
    FOR EACH ROW EXECUTE FUNCTION erpoz_merkle_append_only();
CREATE TRIGGER merkle_state_no_truncate BEFORE TRUNCATE ON merkle_state
    FOR EACH STATEMENT EXECUTE FUNCTION erpoz_merkle_append_only();
CREATE FUNCTION erpoz_merkle_grows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- an empty tree may take another origin: `erpoz migrate` gives a new store its source's
    IF NEW.size < OLD.size OR (NEW.origin IS DISTINCT FROM OLD.origin AND OLD.size > 0) THEN
        RAISE EXCEPTION 'the erpoz Merkle tree only grows';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER merkle_state_grows BEFORE UPDATE ON merkle_state
    FOR EACH ROW EXECUTE FUNCTION erpoz_merkle_grows();

-- Events recorded before this migration: run by run, in the order the runs were created.
SELECT erpoz_merkle_append(
    array_agg(e.run_id ORDER BY r.created NULLS LAST, e.run_id COLLATE "C", e.seq),
    array_agg(e.seq ORDER BY r.created NULLS LAST, e.run_id COLLATE "C", e.seq),
    array_agg(
        sha256('\x00'::bytea || convert_to(e.run_id || chr(31) || e.seq::text || chr(31) || e.hash, 'UTF8'))
        ORDER BY r.created NULLS LAST, e.run_id COLLATE "C", e.seq
    )
) FROM events e LEFT JOIN runs r ON r.run_id = e.run_id;
