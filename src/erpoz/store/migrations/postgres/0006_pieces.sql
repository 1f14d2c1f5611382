-- Structural sharing of stored values (erpoz/store/_pieces.py): a large JSON payload may now be
-- stored as its top fragment with references (U+001F, key, U+001F) to pieces kept in `blobs`.
-- No table changes (blobs is a heap table already); the schema version moves so that an erpoz
-- older than this one refuses the store instead of reading such a payload as it is stored.
COMMENT ON TABLE blobs IS 'content-addressed payloads and pieces of split payloads (SHA-256 hex)';
