-- Structural sharing of stored values (erpoz/store/_pieces.py): a large JSON payload may now be
-- stored as its top fragment with references (U+001F, key, U+001F) to pieces kept in `blobs`;
-- an erpoz older than this schema would read such a payload as it is stored, so the schema
-- version moves. `blobs` becomes a rowid table: pieces are about a kilobyte, and a WITHOUT ROWID
-- table spills every row longer than ~1 KB into an overflow page of its own (4x the space).
-- The blobs recorded before are carried over as they are.
CREATE TABLE blobs_rowid (
    sha256 TEXT PRIMARY KEY,
    data   TEXT NOT NULL
);
INSERT INTO blobs_rowid (sha256, data) SELECT sha256, data FROM blobs;
DROP TABLE blobs;
ALTER TABLE blobs_rowid RENAME TO blobs;
