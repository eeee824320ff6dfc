-- vectorway's PostgreSQL schema, version 1: every record kind the gateway keeps.
-- Wallets are 20-byte bytea, times are Unix seconds (`*_at`) or milliseconds (`*_ms`), money
-- is bigint credits (1 credit = 1 atomic USDC). Applied by `storage::pg::migrate` in one
-- transaction under an advisory lock; never edit a released migration, add the next one.

-- Accounts: one per wallet that signed in, paid, or was granted credits.
CREATE TABLE accounts (
    wallet      bytea PRIMARY KEY CHECK (length(wallet) = 20),
    created_at  bigint NOT NULL
);

-- API keys: only the SHA-256 of the secret is kept. `change_seq` (from `auth_change_seq`,
-- bumped by every write of a key or a family revocation) is the change cursor a replica
-- follows to refresh its key cache and revocation set.
CREATE SEQUENCE auth_change_seq;
CREATE TABLE api_keys (
    key_id         text PRIMARY KEY,
    wallet         bytea NOT NULL CHECK (length(wallet) = 20),
    secret_sha256  text NOT NULL,
    key_name       text NOT NULL,
    created_at     bigint NOT NULL,
    last_used_at   bigint,
    revoked_at     bigint,
    change_seq     bigint NOT NULL DEFAULT nextval('auth_change_seq')
);
CREATE INDEX api_keys_wallet ON api_keys (wallet);
CREATE INDEX api_keys_changes ON api_keys (change_seq);

-- The ledger: append-only (an UPDATE is refused by the trigger below). `id` is commit
-- order, which is what pages walk (newest first). A balance is the signed sum of a
-- wallet's entries. `commit_key` makes a replica's batched commits idempotent: a batch
-- retried after a lost answer inserts nothing twice.
CREATE TABLE ledger (
    id          bigserial PRIMARY KEY,
    wallet      bytea NOT NULL CHECK (length(wallet) = 20),
    seq         bigint NOT NULL,
    ts_ms       bigint NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('topup', 'grant', 'refund', 'debit')),
    credits     bigint NOT NULL,
    reference   text,
    note        text,
    commit_key  text UNIQUE
);
CREATE INDEX ledger_wallet_id ON ledger (wallet, id DESC);
CREATE INDEX ledger_wallet_reference ON ledger (wallet, reference) WHERE reference IS NOT NULL;

-- Usage events, one per API call: append-only like the ledger. The page filters are
-- `errors` (status >= 400) and an exact path.
CREATE TABLE usage_events (
    id                 bigserial PRIMARY KEY,
    wallet             bytea NOT NULL CHECK (length(wallet) = 20),
    seq                bigint NOT NULL,
    ts_ms              bigint NOT NULL,
    method             text NOT NULL,
    path               text NOT NULL,
    status             integer NOT NULL,
    latency_ms         bigint NOT NULL,
    credits            bigint NOT NULL CHECK (credits >= 0),
    usd_cost           text,
    model              text,
    prompt_tokens      bigint NOT NULL,
    completion_tokens  bigint NOT NULL,
    memory_read        boolean NOT NULL,
    memory_write       boolean NOT NULL,
    memories_used      integer NOT NULL,
    key_id             text,
    auth_mode          text NOT NULL,
    request_id         text NOT NULL
);
CREATE INDEX usage_wallet_id ON usage_events (wallet, id DESC);
CREATE INDEX usage_wallet_errors ON usage_events (wallet, id DESC) WHERE status >= 400;
CREATE INDEX usage_wallet_path ON usage_events (wallet, path, id DESC);
CREATE INDEX usage_key_chat ON usage_events (wallet, key_id)
    WHERE key_id IS NOT NULL AND path = '/v1/chat/completions';

CREATE FUNCTION vectorway_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE ON ledger
    FOR EACH ROW EXECUTE FUNCTION vectorway_append_only();
CREATE TRIGGER usage_append_only BEFORE UPDATE ON usage_events
    FOR EACH ROW EXECUTE FUNCTION vectorway_append_only();

-- Credits per wallet for the lease protocol (ARCHITECTURE.md, "Credit leases"). `granted`
-- is the sum of money in, `committed` of debits, `leased` of live leases. The CHECK is the
-- no-overdraft invariant, enforced by the database at every instant.
CREATE TABLE balances (
    wallet     bytea PRIMARY KEY CHECK (length(wallet) = 20),
    granted    bigint NOT NULL DEFAULT 0 CHECK (granted >= 0),
    committed  bigint NOT NULL DEFAULT 0 CHECK (committed >= 0),
    leased     bigint NOT NULL DEFAULT 0 CHECK (leased >= 0),
    CHECK (leased + committed <= granted)
);

-- The gateways sharing this database, with a heartbeat: a lease whose replica stopped
-- beating is recovered after `expires_ms`.
CREATE TABLE replicas (
    id            text PRIMARY KEY,
    started_ms    bigint NOT NULL,
    heartbeat_ms  bigint NOT NULL
);

-- One lease per (wallet, replica): `amount` credits moved from the wallet's available
-- balance into the replica's memory, of which `used` are already committed to the ledger.
CREATE TABLE credit_leases (
    wallet      bytea NOT NULL CHECK (length(wallet) = 20),
    replica     text NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    used        bigint NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= amount),
    granted_ms  bigint NOT NULL,
    expires_ms  bigint NOT NULL,
    PRIMARY KEY (wallet, replica)
);
CREATE INDEX credit_leases_expiry ON credit_leases (expires_ms);

-- x402 authorization nonces: chain id (8) ++ asset (20) ++ from (20) ++ nonce (32). The
-- primary key is the single-use rule: a payment sent to every replica at once is claimed
-- once. `state` runs claimed -> settled | failed; a claim left `claimed` past its
-- settlement window is the reconciler's to resolve.
CREATE TABLE x402_nonces (
    nonce_key      bytea PRIMARY KEY CHECK (length(nonce_key) = 80),
    valid_before   bigint NOT NULL,
    state          text NOT NULL DEFAULT 'claimed' CHECK (state IN ('claimed', 'settled', 'failed')),
    claimed_ms     bigint NOT NULL,
    resolved_ms    bigint
);
CREATE INDEX x402_nonces_valid_before ON x402_nonces (valid_before);
CREATE INDEX x402_nonces_unresolved ON x402_nonces (claimed_ms) WHERE state = 'claimed';

-- SIWE sign-in challenges: a nonce is spent once.
CREATE TABLE siwe_nonces (
    nonce       text PRIMARY KEY,
    issued_at   bigint NOT NULL,
    expires_at  bigint NOT NULL
);
CREATE INDEX siwe_nonces_expiry ON siwe_nonces (expires_at);

-- Refresh tokens and their families; a revoked family is refused everywhere.
CREATE TABLE refresh_tokens (
    id          text PRIMARY KEY,
    family      text NOT NULL,
    wallet      bytea NOT NULL CHECK (length(wallet) = 20),
    expires_at  bigint NOT NULL,
    used        boolean NOT NULL DEFAULT false
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE TABLE revoked_families (
    family      text PRIMARY KEY,
    revoked_at  bigint NOT NULL,
    change_seq  bigint NOT NULL DEFAULT nextval('auth_change_seq')
);

-- Idempotency records: scope || key (hashed) -> the stored answer; status 0 is a claim in
-- progress.
CREATE TABLE idempotency (
    slot         bytea PRIMARY KEY,
    body_sha256  text NOT NULL,
    status       integer NOT NULL,
    body         text NOT NULL,
    created_at   bigint NOT NULL
);
CREATE INDEX idempotency_created ON idempotency (created_at);

-- Settlements not yet credited, and the transactions our own facilitator sent. The record
-- is the same JSON the embedded store keeps, so both backends share one codec.
CREATE TABLE payment_intents (
    id          text PRIMARY KEY,
    record      jsonb NOT NULL,
    created_ms  bigint NOT NULL
);
CREATE TABLE sent_txs (
    id             bigserial PRIMARY KEY,
    authorization_id  text NOT NULL,
    record         jsonb NOT NULL
);
CREATE INDEX sent_txs_authorization ON sent_txs (authorization_id);

-- Agent accounts; `deadline_ms` orders the ones not funded yet for the sweeper.
CREATE TABLE agents (
    account      bytea PRIMARY KEY CHECK (length(account) = 20),
    record       jsonb NOT NULL,
    deadline_ms  bigint NOT NULL,
    funded_ms    bigint
);
CREATE INDEX agents_due ON agents (deadline_ms) WHERE funded_ms IS NULL;

-- Wallet memory: the record (text, metadata; `memory::Record`'s encoding) and its vector
-- as little-endian f32 bytes (pgvector, where installed, is an option for a later
-- migration). `change_seq` is the change cursor each replica follows to keep its
-- in-process index fresh; a delete leaves a tombstone (`deleted`) until every replica has
-- passed it.
CREATE SEQUENCE memory_change_seq;
CREATE TABLE memory_records (
    wallet      bytea NOT NULL CHECK (length(wallet) = 20),
    id          bytea NOT NULL CHECK (length(id) = 16),
    namespace   text NOT NULL DEFAULT '',
    value       bytea NOT NULL,
    vector      bytea,
    created_ms  bigint NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    change_seq  bigint NOT NULL DEFAULT nextval('memory_change_seq'),
    PRIMARY KEY (wallet, id)
);
CREATE INDEX memory_wallet_namespace ON memory_records (wallet, namespace) WHERE NOT deleted;
CREATE INDEX memory_changes ON memory_records (change_seq);

-- Shared rate-limit buckets: replicas borrow tokens from here into local buckets.
-- `tokens_milli` is thousandths of a request.
CREATE TABLE rate_buckets (
    scope         text NOT NULL,
    class         text NOT NULL,
    tokens_milli  bigint NOT NULL,
    updated_ms    bigint NOT NULL,
    PRIMARY KEY (scope, class)
);
