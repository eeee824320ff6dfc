-- vectorway's PostgreSQL schema, version 3: memory records and SIWE challenges in use.
-- `deleted_ms` dates a memory tombstone so it can be pruned once every replica's change
-- feed has passed it (`storage::pg::memory`); a SIWE challenge names the wallet it was
-- issued to, which must sign it.

ALTER TABLE memory_records ADD COLUMN deleted_ms bigint;
CREATE INDEX memory_tombstones ON memory_records (deleted_ms) WHERE deleted;

-- No gateway wrote challenges here before this version; none can be lost.
DELETE FROM siwe_nonces;
ALTER TABLE siwe_nonces ADD COLUMN wallet bytea NOT NULL CHECK (length(wallet) = 20);
