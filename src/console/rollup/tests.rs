//! The rollup equals a brute-force fold of the same events, for any events and any range.

use proptest::prelude::*;

use super::*;

fn wallet(i: u8) -> Wallet {
    format!("0x{}", hex::encode([i + 1; 20])).parse().unwrap()
}

fn event(ts_ms: u64, model: u8, key: u8, credits: u64, status: u16) -> UsageEvent {
    UsageEvent {
        ts_ms,
        model: (model > 0).then(|| format!("m{model}")),
        key_id: (key > 0).then(|| format!("k{key}")),
        credits,
        status,
        prompt_tokens: credits / 2,
        completion_tokens: credits / 3,
        path: "/v1/chat/completions".into(),
        ..UsageEvent::default()
    }
}

/// The same summary, computed by walking every event.
fn brute(events: &[(u8, UsageEvent)], w: u8, bucket: Bucket, from: u64, to: u64) -> Summary {
    let width = bucket.ms();
    let (first, last) = (from / width, to.saturating_sub(1).max(from) / width);
    let n = (last - first + 1) as usize;
    let mut s = Summary {
        starts: (first..=last).map(|b| b * width).collect(),
        buckets: vec![Totals::default(); n],
        total: Totals::default(),
        by_model: vec![],
        by_key: vec![],
    };
    for (ew, ev) in events {
        let b = ev.ts_ms / width;
        if *ew != w || !is_metered(ev) || b < first || b > last {
            continue;
        }
        let i = (b - first) as usize;
        let t = Totals::of(ev);
        s.buckets[i].add(&t);
        s.total.add(&t);
        add_series(&mut s.by_model, ev.model.as_deref(), i, n, &t);
        add_series(&mut s.by_key, ev.key_id.as_deref(), i, n, &t);
    }
    for v in [&mut s.by_model, &mut s.by_key] {
        v.sort_by(|a, b| {
            b.total
                .credits
                .cmp(&a.total.credits)
                .then(a.name.cmp(&b.name))
        });
    }
    s
}

proptest! {
    #[test]
    fn summaries_match_a_walk_of_every_event(
        raw in proptest::collection::vec((0u8..3, 0u64..(10 * DAY_MS), 0u8..3, 0u8..3, 0u64..1000, prop_oneof![Just(200u16), Just(429u16), Just(502u16)]), 0..60),
        from in 0u64..(10 * DAY_MS),
        span in 1u64..(10 * DAY_MS),
        day in any::<bool>(),
    ) {
        let mut events: Vec<(u8, UsageEvent)> = raw
            .into_iter()
            .map(|(w, ts, m, k, c, s)| (w, event(ts, m, k, c, s)))
            .collect();
        events.sort_by_key(|(_, e)| e.ts_ms);
        let r = Rollup::default();
        for (w, e) in &events {
            r.add_usage(wallet(*w), e);
        }
        let bucket = if day { Bucket::Day } else { Bucket::Hour };
        for w in 0..3 {
            prop_assert_eq!(
                r.summary(&wallet(w), bucket, from, from + span),
                brute(&events, w, bucket, from, from + span)
            );
        }
    }
}

#[test]
fn old_hours_are_dropped_but_their_days_stay() {
    let r = Rollup::default();
    let w = wallet(0);
    r.add_usage(w, &event(0, 1, 1, 10, 200));
    let later = (HOUR_RETENTION + 2) * HOUR_MS;
    r.add_usage(w, &event(later, 1, 1, 5, 200));
    assert_eq!(r.summary(&w, Bucket::Hour, 0, HOUR_MS).total.credits, 0);
    assert_eq!(r.summary(&w, Bucket::Day, 0, DAY_MS).total.credits, 10);
    assert_eq!(r.totals(&w).spend.credits, 15);
}

#[test]
fn unmetered_calls_are_not_spend_and_top_wallets_rank_by_credits() {
    let r = Rollup::default();
    let mut page_view = event(5, 0, 1, 0, 200);
    page_view.path = "/v1/me".into();
    r.add_usage(wallet(0), &page_view);
    assert_eq!(r.totals(&wallet(0)).spend.calls, 0);
    r.add_usage(wallet(1), &event(5, 1, 0, 7, 200));
    r.add_usage(wallet(2), &event(5, 1, 0, 9, 200));
    r.add_ledger(&LedgerEntry {
        seq: 1,
        ts_ms: 6,
        wallet: wallet(2),
        kind: LedgerKind::Grant,
        credits: 100,
        reference: None,
        note: None,
    });
    let top = r.top_wallets(2);
    assert_eq!(
        top.iter()
            .map(|(w, t)| (*w, t.spend.credits))
            .collect::<Vec<_>>(),
        [(wallet(2), 9), (wallet(1), 7)]
    );
    assert_eq!(top[0].1.granted, 100);
    r.forget(&wallet(2));
    assert_eq!(r.top_wallets(1)[0].0, wallet(1));
}

#[tokio::test]
async fn the_store_feeds_the_rollup_and_rebuilds_it_at_open() {
    use crate::storage::Store;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (wallet(0), wallet(1));
    let now = crate::storage::now_ms();
    let grant = LedgerEntry {
        seq: 1,
        ts_ms: now,
        wallet: a,
        kind: LedgerKind::Grant,
        credits: 500,
        reference: None,
        note: None,
    };
    let want = {
        let s = Store::open_when_free(dir.path()).unwrap();
        let end = s
            .append(
                &[grant],
                &[
                    (a, event(now, 1, 1, 40, 200)),
                    (b, event(now, 2, 0, 9, 502)),
                ],
            )
            .unwrap();
        s.sync_history(end).await.unwrap();
        let got = s.rollup.summary(&a, Bucket::Hour, now - HOUR_MS, now + 1);
        assert_eq!(got.total.credits, 40);
        assert_eq!(s.rollup.totals(&a).granted, 500);
        assert_eq!(s.rollup.totals(&b).spend.errors, 1);
        (got, s.rollup.top_wallets(5))
    };
    let s = Store::open_when_free(dir.path()).unwrap();
    assert_eq!(
        (
            s.rollup.summary(&a, Bucket::Hour, now - HOUR_MS, now + 1),
            s.rollup.top_wallets(5)
        ),
        want,
        "rebuilt from the history log"
    );
    s.forget_history(&a).await.unwrap();
    assert_eq!(s.rollup.totals(&a), WalletTotals::default());
}
