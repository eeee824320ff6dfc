//! Store tests: durable writes, the ledger fold, reopen, and the move of old history out of sled.
use super::*;

const W: Wallet = Wallet([0x11; 20]);

#[test]
fn many_concurrent_durable_writes_finish() {
    // sled runs each flush on its small I/O pool and blocks that thread until log buffers are
    // written by jobs queued on the same pool: eight flushes at once used to wait forever,
    // and the runtime's workers then blocked in inserts. A watchdog thread turns a deadlock
    // into a failure.
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let w = W;
    let (tx, rx) = std::sync::mpsc::channel();
    let store = s.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let writes = (0..64).map(|_| {
            let s = store.clone();
            async move {
                let e = LedgerEntry {
                    seq: s.next_seq()?,
                    ts_ms: 1,
                    wallet: w,
                    kind: LedgerKind::Grant,
                    credits: 1,
                    reference: None,
                    note: None,
                };
                s.append_durable(&e).await
            }
        });
        let done = rt.block_on(futures_util::future::join_all(writes));
        let _ = tx.send(done.iter().all(Result::is_ok));
    });
    let ok = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("concurrent fsyncs deadlocked");
    assert!(ok);
    assert_eq!(s.balances().unwrap()[&w], 64);
}

#[tokio::test]
async fn ledger_folds_into_balances_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let w = W;
    {
        let s = Store::open(dir.path()).unwrap();
        for (kind, credits) in [
            (LedgerKind::Grant, 1000),
            (LedgerKind::Debit, -300),
            (LedgerKind::Topup, 50),
        ] {
            let e = LedgerEntry {
                seq: s.next_seq().unwrap(),
                ts_ms: 1,
                wallet: w,
                kind,
                credits,
                reference: None,
                note: None,
            };
            s.append_durable(&e).await.unwrap();
        }
        let second = Store::open(dir.path());
        assert!(
            matches!(second, Err(StorageError::Locked(_))),
            "{:?}",
            second.err()
        );
    }
    let s = Store::open_when_free(dir.path()).unwrap();
    assert_eq!(s.balances().unwrap()[&w], 750);
    let kinds: Vec<_> = s.ledger_of(&w).map(|e| e.unwrap().kind).collect();
    assert_eq!(
        kinds,
        [LedgerKind::Topup, LedgerKind::Debit, LedgerKind::Grant],
        "newest first"
    );
}

#[tokio::test]
async fn a_store_with_history_in_sled_moves_it_to_the_log_once() {
    let dir = tempfile::tempdir().unwrap();
    let w = W;
    {
        // The layout before the history log: wallet ‖ seq (big-endian) → JSON.
        let db = sled::open(dir.path().join("db")).unwrap();
        let (ledger, usage) = (
            db.open_tree("ledger").unwrap(),
            db.open_tree("usage").unwrap(),
        );
        for (seq, kind, credits) in [(1u64, LedgerKind::Grant, 500), (2, LedgerKind::Debit, -20)] {
            let e = LedgerEntry {
                seq,
                ts_ms: 1,
                wallet: w,
                kind,
                credits,
                reference: None,
                note: None,
            };
            let key = [&w.as_bytes()[..], &seq.to_be_bytes()].concat();
            ledger.insert(key, serde_json::to_vec(&e).unwrap()).unwrap();
        }
        let ev = UsageEvent {
            seq: 3,
            path: "/v1/chat/completions".into(),
            ..UsageEvent::default()
        };
        let key = [&w.as_bytes()[..], &3u64.to_be_bytes()].concat();
        usage.insert(key, serde_json::to_vec(&ev).unwrap()).unwrap();
        db.flush().unwrap();
    }
    for _ in 0..2 {
        // Opening twice must not copy twice.
        let s = Store::open_when_free(dir.path()).unwrap();
        assert_eq!(s.balances().unwrap()[&w], 480);
        let kinds: Vec<_> = s.ledger_of(&w).map(|e| e.unwrap().kind).collect();
        assert_eq!(kinds, [LedgerKind::Debit, LedgerKind::Grant]);
        assert_eq!((s.ledger_counted(&w).1, s.usage_raw_counted(&w).1), (2, 1));
        assert_eq!(s.usage_of(&w).next().unwrap().unwrap().seq, 3);
    }
    assert!(!dir.path().join("history.log.tmp").exists());
    // A downgraded binary writing history into sled again is refused, not cleared away.
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        let key = [&w.as_bytes()[..], &9u64.to_be_bytes()].concat();
        db.open_tree("ledger")
            .unwrap()
            .insert(key, b"{}".to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let refused = Store::open_when_free(dir.path())
        .err()
        .map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("refusing to start")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn key_totals_follow_appends_and_are_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let w = W;
    let event = |key: Option<&str>, path: &str, credits| UsageEvent {
        path: path.into(),
        key_id: key.map(str::to_string),
        prompt_tokens: 10,
        completion_tokens: 5,
        credits,
        ..UsageEvent::default()
    };
    let want = KeyTotals {
        requests: 2,
        prompt_tokens: 20,
        completion_tokens: 10,
        credits: 7,
    };
    {
        let s = Store::open(dir.path()).unwrap();
        let usage = [
            (w, event(Some("k1"), "/v1/chat/completions", 3)),
            (w, event(Some("k1"), "/v1/chat/completions", 4)),
            (w, event(Some("k1"), "/v1/memory", 9)), // not a chat call
            (w, event(None, "/v1/chat/completions", 9)), // not a key
        ];
        let end = s.append(&[], &usage).unwrap();
        s.sync_history(end).await.unwrap();
        assert_eq!(s.key_totals(&w, "k1"), want);
        assert_eq!(s.key_totals(&w, "k2"), KeyTotals::default());
    }
    let s = Store::open_when_free(dir.path()).unwrap();
    assert_eq!(s.key_totals(&w, "k1"), want, "rebuilt from the log");
}

#[test]
fn memory_records_in_sled_move_to_the_memory_log_and_sled_keeps_none() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Wallet([0xA1; 20]), Wallet([0xB2; 20]));
    let put_in_sled = |records: &[(Wallet, u8, &[u8])]| {
        let db = sled::open(dir.path().join("db")).unwrap();
        let tree = db.open_tree("memory").unwrap();
        for (wallet, n, value) in records {
            let key = [&wallet.as_bytes()[..], &[*n; 16][..]].concat();
            tree.insert(key, *value).unwrap();
        }
        db.flush().unwrap();
    };
    // A store from before the memory log.
    put_in_sled(&[(a, 1, b"a one"), (a, 2, b"a two"), (b, 1, b"b one")]);
    let mine = |s: &Store, w: &Wallet| -> Vec<([u8; 16], Vec<u8>)> {
        s.memories_of(w).map(Result::unwrap).collect()
    };
    {
        let s = Store::open_when_free(dir.path()).unwrap();
        assert_eq!(
            mine(&s, &a),
            [([1; 16], b"a one".to_vec()), ([2; 16], b"a two".to_vec())]
        );
        assert_eq!(mine(&s, &b), [([1; 16], b"b one".to_vec())]);
        assert!(s.delete_memory(&a, &[1; 16]).unwrap());
        s.sync_memories_blocking().unwrap();
    }
    // A downgraded binary wrote one more record into sled: it is moved too, and the
    // delete made in the log stays made.
    put_in_sled(&[(b, 3, b"b three")]);
    let s = Store::open_when_free(dir.path()).unwrap();
    assert_eq!(mine(&s, &a), [([2; 16], b"a two".to_vec())]);
    assert_eq!(
        mine(&s, &b),
        [([1; 16], b"b one".to_vec()), ([3; 16], b"b three".to_vec())]
    );
    assert!(s.db.open_tree("memory").unwrap().is_empty());
}
