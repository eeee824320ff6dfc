-- Version 2: usage events carry a commit key too, so a journal window retried after a lost
-- answer (the COMMIT reached the server, its reply did not reach the gateway) inserts nothing
-- twice. The ledger has had its `commit_key` since version 1.
ALTER TABLE usage_events ADD COLUMN commit_key text UNIQUE;
