-- Version 4: a paid x402 call's usage event names its settlement's transaction (the console's
-- usage table shows it; a call that keeps its whole payment has no ledger row to carry it).
ALTER TABLE usage_events ADD COLUMN transaction text;
