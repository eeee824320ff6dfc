-- Version 5: a journal window is one statement (one round trip, no BEGIN/COMMIT around it),
-- and every gateway's console rollup follows the history the others write.
--
-- The history feed: ledger and usage rows record the replica that wrote them (a gateway folds
-- its own appends in at once and reads the others'), and a forgotten wallet leaves a row in
-- `history_forgets`. Every writer of these tables holds the shared advisory lock
-- `HISTORY_LOCK` until it commits; `vw_history_horizon` takes it exclusively for an instant and
-- reads each table's highest id then, so every row at or below the horizon is committed and a
-- reader that walks (cursor, horizon] never skips a row that commits late with a lower id.
ALTER TABLE ledger ADD COLUMN replica text;
ALTER TABLE usage_events ADD COLUMN replica text;
CREATE TABLE history_forgets (
    id      bigserial PRIMARY KEY,
    wallet  bytea NOT NULL CHECK (length(wallet) = 20)
);

-- HISTORY_LOCK is the advisory key 0x76776869 ("vwhi").
CREATE FUNCTION vw_history_horizon(OUT ledger_id bigint, OUT usage_id bigint,
                                   OUT forget_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1987537001);
    SELECT coalesce(max(id), 0) INTO ledger_id FROM ledger;
    SELECT coalesce(max(id), 0) INTO usage_id FROM usage_events;
    SELECT coalesce(max(id), 0) INTO forget_id FROM history_forgets;
END
$$;

-- `vw_append_window` does what `append_history` did in a transaction of 5 + 2 per wallet
-- statements: it skips ledger rows whose commit key is already stored (a window retried after
-- a lost answer), charges each wallet's new debits to the calling replica's lease, else to the
-- free balance, else as much as is free and never more (the cut debits rewritten to what was
-- charged), inserts the ledger rows and adds money in to `granted`, inserts the usage events,
-- and returns every touched wallet's totals. Wallets are locked in wallet order, `balances`
-- before `credit_leases`, as every lease change does, so two replicas' windows cannot deadlock.
CREATE FUNCTION vw_append_window(
    p_replica text,
    l_wallet bytea[], l_seq bigint[], l_ts bigint[], l_kind text[], l_credits bigint[],
    l_ref text[], l_note text[], l_key text[],
    u_wallet bytea[], u_seq bigint[], u_ts bigint[], u_method text[], u_path text[],
    u_status int[], u_latency bigint[], u_credits bigint[], u_usd text[], u_model text[],
    u_prompt bigint[], u_completion bigint[], u_mem_read bool[], u_mem_write bool[],
    u_used int[], u_key_id text[], u_auth text[], u_request text[], u_commit text[],
    u_transaction text[])
RETURNS TABLE (r_wallet bytea, r_granted bigint, r_committed bigint, r_due bigint,
               r_charged bigint)
LANGUAGE plpgsql AS $$
DECLARE
    l_fresh bool[];
    w bytea;
    due bigint;
    free bigint;
    cut_w bytea[] := '{}';
    cut_due bigint[] := '{}';
    cut_free bigint[] := '{}';
    cut_left bigint[] := '{}';
    i int;
    j int;
    take bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1987537001);
    SELECT coalesce(array_agg((t.k IS NULL OR NOT EXISTS (
               SELECT 1 FROM ledger x WHERE x.commit_key = t.k)) ORDER BY t.n), '{}')
      INTO l_fresh
      FROM unnest(l_key) WITH ORDINALITY AS t(k, n);

    FOR w, due IN
        SELECT t.w, sum(-t.c)::bigint
          FROM unnest(l_wallet, l_credits, l_fresh) AS t(w, c, f)
         WHERE t.f AND t.c < 0
         GROUP BY t.w ORDER BY t.w
    LOOP
        PERFORM 1 FROM balances b WHERE b.wallet = w FOR UPDATE;
        UPDATE credit_leases cl SET used = cl.used + due
         WHERE cl.wallet = w AND cl.replica = p_replica AND cl.amount - cl.used >= due;
        IF FOUND THEN
            UPDATE balances b SET leased = b.leased - due, committed = b.committed + due
             WHERE b.wallet = w;
            CONTINUE;
        END IF;
        UPDATE balances b SET committed = b.committed + due
         WHERE b.wallet = w AND b.granted - b.committed - b.leased >= due;
        IF FOUND THEN
            CONTINUE;
        END IF;
        SELECT greatest(b.granted - b.committed - b.leased, 0) INTO free
          FROM balances b WHERE b.wallet = w;
        free := coalesce(free, 0);
        UPDATE balances b SET committed = b.committed + free WHERE b.wallet = w;
        cut_w := cut_w || w;
        cut_due := cut_due || due;
        cut_free := cut_free || free;
        cut_left := cut_left || free;
    END LOOP;

    -- A debit cut short is rewritten to what was charged, in window order.
    IF cardinality(cut_w) > 0 THEN
        FOR i IN 1 .. cardinality(l_wallet) LOOP
            j := array_position(cut_w, l_wallet[i]);
            IF j IS NOT NULL AND l_fresh[i] AND l_credits[i] < 0 THEN
                take := least(-l_credits[i], cut_left[j]);
                cut_left[j] := cut_left[j] - take;
                l_credits[i] := -take;
            END IF;
        END LOOP;
    END IF;

    WITH ins AS (
        INSERT INTO ledger (wallet, seq, ts_ms, kind, credits, reference, note, commit_key,
                            replica)
        SELECT t.w, t.s, t.ts, t.k, t.c, t.r, t.n, t.key, p_replica
          FROM unnest(l_wallet, l_seq, l_ts, l_kind, l_credits, l_ref, l_note, l_key, l_fresh)
               WITH ORDINALITY AS t(w, s, ts, k, c, r, n, key, f, o)
         WHERE t.f AND t.c <> 0
         ORDER BY t.o
        ON CONFLICT (commit_key) DO NOTHING
        RETURNING ledger.wallet, ledger.credits)
    INSERT INTO balances AS b (wallet, granted)
    SELECT ins.wallet, sum(greatest(ins.credits, 0))::bigint FROM ins GROUP BY ins.wallet
    ON CONFLICT (wallet) DO UPDATE SET granted = b.granted + EXCLUDED.granted;

    INSERT INTO usage_events (wallet, seq, ts_ms, method, path, status, latency_ms, credits,
        usd_cost, model, prompt_tokens, completion_tokens, memory_read, memory_write,
        memories_used, key_id, auth_mode, request_id, commit_key, transaction, replica)
    SELECT *, p_replica FROM unnest(u_wallet, u_seq, u_ts, u_method, u_path, u_status,
        u_latency, u_credits, u_usd, u_model, u_prompt, u_completion, u_mem_read, u_mem_write,
        u_used, u_key_id, u_auth, u_request, u_commit, u_transaction)
    ON CONFLICT (commit_key) DO NOTHING;

    RETURN QUERY
    SELECT b.wallet, b.granted, b.committed, cut_due[array_position(cut_w, b.wallet)],
           cut_free[array_position(cut_w, b.wallet)]
      FROM balances b
     WHERE b.wallet = ANY (l_wallet);
END
$$;
