-- Version 6: settlement intents (`storage/intents.rs`) live in the shared database, each owned
-- by one replica under a lease its heartbeat renews, so a replica that dies with a payment in
-- flight leaves an intent another replica claims and resolves (`pg/intents.rs`). Version 1's
-- `payment_intents` (never used) gives way to this table, which has an owner and a lease.
DROP TABLE payment_intents;
CREATE TABLE intents (
    id           text PRIMARY KEY,
    -- The replica resolving it (`replicas.id`); only the owner may change or remove the row.
    owner        text NOT NULL,
    -- Until when the owner holds it without beating again; past it any replica may claim it.
    lease_until  bigint NOT NULL,
    -- 'pending' | 'settled' | 'unresolved' (the record's state; unresolved ones wait for the
    -- operator and are never claimed).
    state        text NOT NULL CHECK (state IN ('pending', 'settled', 'unresolved')),
    record       jsonb NOT NULL,
    created_ms   bigint NOT NULL
);
CREATE INDEX intents_owner ON intents (owner);
CREATE INDEX intents_claimable ON intents (lease_until) WHERE state <> 'unresolved';
