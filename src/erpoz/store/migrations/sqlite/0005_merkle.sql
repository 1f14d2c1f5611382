-- The Merkle tree over the log (RFC 9162 hashing; see erpoz/store/_merkle.py): one leaf per
-- event in the order events were committed, the tree's size and compact range (its frontier:
-- the roots of its perfect subtrees, largest first, 32 bytes each), and the roots of complete
-- subtrees at every 4th level for proofs. `origin` names this log; `erpoz migrate` carries it.
-- Events recorded before this migration are put into the tree by erpoz right after it, run by
-- run in the order the runs were created.
CREATE TABLE merkle_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    origin   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    frontier BLOB NOT NULL
);
INSERT INTO merkle_state (id, origin, size, frontier) VALUES (1, lower(hex(randomblob(16))), 0, x'');

CREATE TABLE merkle_leaves (
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    pos    INTEGER NOT NULL,
    leaf   BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX merkle_leaves_by_pos ON merkle_leaves (pos);

CREATE TABLE merkle_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Append-only, like the events: leaves and nodes never change; the tree never shrinks.
CREATE TRIGGER merkle_leaves_no_update BEFORE UPDATE ON merkle_leaves
BEGIN SELECT RAISE(ABORT, 'erpoz Merkle leaves are append-only'); END;
CREATE TRIGGER merkle_leaves_no_delete BEFORE DELETE ON merkle_leaves
BEGIN SELECT RAISE(ABORT, 'erpoz Merkle leaves are append-only'); END;
CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'erpoz Merkle nodes are append-only'); END;
CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'erpoz Merkle nodes are append-only'); END;
-- (An empty tree may take another origin: `erpoz migrate` gives a new store its source's.)
CREATE TRIGGER merkle_state_grows BEFORE UPDATE ON merkle_state
WHEN NEW.size < OLD.size OR (NEW.origin IS NOT OLD.origin AND OLD.size > 0)
BEGIN SELECT RAISE(ABORT, 'the erpoz Merkle tree only grows'); END;
CREATE TRIGGER merkle_state_no_delete BEFORE DELETE ON merkle_state
BEGIN SELECT RAISE(ABORT, 'the erpoz Merkle tree only grows'); END;
