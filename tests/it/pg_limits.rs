//! Per-wallet rate limits across gateways on one PostgreSQL: every gateway borrows from the
//! wallet's shared bucket (`ratelimit::shared`), so three gateways allow one wallet's limit,
//! not three times it.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use vectorway::config::{Config, StoreBackend};
use vectorway::wallet::Wallet;

use crate::harness::{Env, W1, fast_knobs};
use crate::pg::{Postgres, pg_config};

/// Three gateways on one fresh database, sharing the session secret and public name, with
/// `control_per_min` for the account routes, and a session of `W1` that each accepts.
async fn three_gateways(control_per_min: u32) -> ([Env; 3], String) {
    let url = Postgres::shared().fresh_db().await;
    let tweak = |c: &mut Config| {
        c.backend = StoreBackend::Postgres(pg_config(&url));
        c.auth.jwt_secret = Some("a-secret-all-replicas-share-0123456789".into());
        c.auth.siwe_domain = "api.example.com".into();
        c.public_base_url = Some("https://api.example.com".into());
        c.limits.control_per_min = control_per_min;
    };
    let gws = [
        Env::with_knobs(fast_knobs(), tweak).await,
        Env::with_knobs(fast_knobs(), tweak).await,
        Env::with_knobs(fast_knobs(), tweak).await,
    ];
    let w: Wallet = W1.parse().unwrap();
    let token = gws[0].gw().state.sessions.issue(&w).await.unwrap();
    (gws, token.access_token)
}

/// Sends `n` balance reads for the session `token`, spread over the gateways, `at_once` at a
/// time; returns (served, limited, seconds taken).
async fn burst(gws: &[Env; 3], token: &str, n: usize, at_once: usize) -> (usize, usize, f64) {
    let bearer = format!("Bearer {token}");
    let headers = [("authorization", bearer.as_str())];
    let started = Instant::now();
    let (mut served, mut limited) = (0, 0);
    let mut sent = 0;
    while sent < n {
        let wave = (sent..n.min(sent + at_once))
            .map(|i| gws[i % 3].send(Method::GET, "/v1/credits/me", &headers, ""));
        for res in futures_util::future::join_all(wave).await {
            match res.status {
                StatusCode::OK => served += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    assert_eq!(res.code(), "rate_limited");
                    let wait: u64 = res.headers["retry-after"]
                        .to_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert!(wait >= 1, "Retry-After is a whole number of seconds");
                    limited += 1;
                }
                other => panic!("unexpected {other}: {:?}", res.body),
            }
        }
        sent += at_once;
    }
    (served, limited, started.elapsed().as_secs_f64())
}

#[tokio::test]
async fn one_wallets_limit_holds_across_three_gateways() {
    let (gws, token) = three_gateways(12).await;
    let (served, limited, took) = burst(&gws, &token, 36, 36).await;
    assert_eq!(served + limited, 36);
    // 12 a minute is one more every 5 s; each gateway alone would allow 12 (36 in all).
    let refill = (took / 5.0).ceil() as usize;
    assert!(
        (12..=12 + refill).contains(&served),
        "served {served} of 36 in {took:.1} s"
    );
    for g in gws {
        g.stop().await;
    }
}

/// A higher limit is borrowed in batches (up to a tenth of it): the gateways still never admit
/// more than the shared bucket gives, and at most one batch per gateway lapses unspent.
#[tokio::test]
async fn borrowed_batches_never_overshoot_the_shared_bucket() {
    let (gws, token) = three_gateways(100).await;
    let (served, limited, took) = burst(&gws, &token, 300, 12).await;
    assert_eq!(served + limited, 300);
    let refill = (took * 100.0 / 60.0).ceil() as usize;
    assert!(
        served <= 100 + refill,
        "served {served} in {took:.1} s: more than the bucket gave"
    );
    assert!(
        served >= 100 - 3 * 10,
        "served {served}: more lapsed than one batch per gateway"
    );
    // Once the burst is over the bucket refills for every gateway alike.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let (served, _, _) = burst(&gws, &token, 3, 3).await;
    assert!(served >= 1, "the refill reaches the gateways");
    for g in gws {
        g.stop().await;
    }
}
