-- Version 7: agent accounts (`storage/agents.rs`) live in the shared database, in the `agents`
-- table of version 1 (a row is due while `funded_ms` is NULL; `agents_due` is the sweeper's
-- index). `pinned_until` is set by any replica crediting the agent (`Agents::pin`); `doomed` by
-- the sweep that deletes it, only once no pin runs, and a doomed agent can no longer be pinned
-- or funded (`pg/agents.rs`).
ALTER TABLE agents
    ADD COLUMN pinned_until bigint NOT NULL DEFAULT 0,
    ADD COLUMN doomed boolean NOT NULL DEFAULT false;
