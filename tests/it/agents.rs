//! Agent accounts end to end: register, fund by x402 from any wallet, chat with memory, the /api/v1 aliases, the sweep.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use vectorway::config::{Config, known_network};
use vectorway::payments::sign::Signer;
use vectorway::payments::unix_now;
use vectorway::simulate::facilitator::FacilitatorFaults;
use vectorway::storage::now_ms;
use vectorway::wallet::Wallet;

use crate::harness::{Env, Resp, W1, call, eventually, fast_knobs};

const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

async fn env_with(tweak: impl FnOnce(&mut Config)) -> Env {
    Env::with_knobs(fast_knobs(), |c| {
        c.memory.score_floor = 0.1;
        tweak(c);
    })
    .await
}

pub(crate) async fn register(env: &Env, name: &str) -> Value {
    let res = try_register(env, name).await;
    assert_eq!(
        res.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    res.json()
}

async fn try_register(env: &Env, name: &str) -> Resp {
    env.send(
        Method::POST,
        "/api/v1/agents/register",
        &[("content-type", "application/json")],
        json!({ "name": name }).to_string(),
    )
    .await
}

/// An x402 v1 payment of `value` atomic USDC from `s`.
pub(crate) fn payment(s: &Signer, value: u64) -> String {
    let net = known_network("base-sepolia").unwrap();
    let p = s
        .pay(&net, PAY_TO.parse().unwrap(), value, unix_now(), 300)
        .unwrap();
    p.x_payment().unwrap().to_str().unwrap().to_string()
}

/// `POST /v1/topup` of `dollars` naming `agent`, paid with `header`.
pub(crate) async fn topup(env: &Env, agent: &str, dollars: u64, header: &str) -> Resp {
    env.send(
        Method::POST,
        "/v1/topup",
        &[("x-payment", header)],
        json!({"amount": dollars, "agent": agent}).to_string(),
    )
    .await
}

async fn get(env: &Env, path: &str, key: &str) -> Resp {
    let bearer = format!("Bearer {key}");
    env.send(Method::GET, path, &[("authorization", &bearer)], "")
        .await
}

pub(crate) fn account(agent: &Value) -> Wallet {
    agent["account"].as_str().unwrap().parse().unwrap()
}

fn key(agent: &Value) -> String {
    agent["apiKey"].as_str().unwrap().to_string()
}

fn turn(text: &str, extra: Value) -> Value {
    let mut b = json!({"messages": [{"role": "user", "content": text}], "max_tokens": 32});
    b.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    b
}

async fn search(env: &Env, key: &str, q: &str) -> Vec<Value> {
    let res = env
        .send(
            Method::GET,
            &format!("/v1/memory?q={}&k=5", q.replace(' ', "+")),
            &[("x-api-key", key)],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    res.json()["matches"].as_array().unwrap().clone()
}

/// Waits until memory has a record containing `needle` for `key` (writes follow the answer).
async fn remembered(env: &Env, key: &str, q: &str, needle: &str) -> bool {
    for _ in 0..200 {
        if search(env, key, q)
            .await
            .iter()
            .any(|m| m["text"].as_str().unwrap().contains(needle))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_fund_by_x402_chat_with_memory_and_read_the_aliases() {
    let env = env_with(|_| {}).await;
    let before = now_ms();
    let res = try_register(&env, "my-agent").await;
    assert_eq!(res.status, StatusCode::CREATED);
    let a = res.json();
    // The document's shape, then ours.
    assert_eq!(a["name"], "my-agent");
    assert_eq!(a["depositRequiredWithinMinutes"], 15);
    assert_eq!(
        a["requestId"],
        res.headers["x-request-id"].to_str().unwrap()
    );
    assert!(a["notice"].as_str().unwrap().contains("within 15 minutes"));
    let uuid = a["uuid"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&uuid).unwrap().get_version_num(), 4);
    let created = time::OffsetDateTime::parse(
        a["createdAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let deadline = time::OffsetDateTime::parse(
        a["depositDeadline"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(deadline - created, time::Duration::minutes(15));
    assert!(a["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(created.unix_timestamp() as u64 * 1000 + 1000 >= before);
    let key = key(&a);
    let me = account(&a);
    assert!(key.starts_with("vw_"));
    assert_eq!(a["keyId"].as_str().unwrap(), &key[3..15]);
    // Unfunded: chat is 402 before any upstream call.
    let res = env.chat(&key, turn("hello", json!({}))).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    assert_eq!(env.sim.generation_count(), 0);
    let b = get(&env, "/api/v1/balance", &key).await.json();
    assert_eq!(
        (b["credits"].as_u64(), b["agent"]["permanent"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(b["agent"]["uuid"], uuid.as_str());
    // Any x402 payer funds it through the top-up route naming the agent.
    let unpaid = env
        .send(
            Method::POST,
            "/v1/topup",
            &[],
            json!({"amount": 2, "agent": uuid}).to_string(),
        )
        .await;
    assert_eq!(unpaid.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(unpaid.json()["accepts"][0]["maxAmountRequired"], "2000000");
    let payer = Signer::random().unwrap();
    let usdc_before = env.sim.balance(&payer.address());
    let res = topup(&env, &uuid, 2, &payment(&payer, 2_000_000)).await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    let t = res.json();
    assert_eq!(t["wallet"], a["account"]);
    assert_eq!(t["agent"], uuid.as_str());
    assert_eq!(t["credited_usdc"], 2_000_000);
    assert!(res.headers.contains_key("x-payment-response"));
    assert_eq!(
        env.sim.balance(&payer.address()),
        usdc_before - 2_000_000,
        "the payer paid once"
    );
    assert_eq!(env.balance(&me.to_string()).balance, 2_000_000);
    assert_eq!(
        env.balance(&payer.address().to_string()).balance,
        0,
        "the payer's own wallet is not credited"
    );
    let b = get(&env, "/api/v1/balance", &key).await.json();
    assert_eq!(b["balance"], "2.000000");
    assert_eq!(b["agent"]["permanent"], true);
    assert!(b["agent"]["depositDeadline"].is_null());
    // Chat with memory on: written, then read back into the next call.
    let res = env
        .chat(
            &key,
            turn(
                "the orbital simulation run 42 finished with a stable orbit",
                json!({"memory_read": false}),
            ),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(remembered(&env, &key, "orbital simulation run", "run 42").await);
    let res = env
        .chat(
            &key,
            turn(
                "what happened in the orbital simulation run?",
                json!({"memory_write": false}),
            ),
        )
        .await;
    assert!(res.json()["usage"]["memories_used"].as_u64().unwrap() >= 1);
    // And with memory off.
    let res = env
        .chat(
            &key,
            turn(
                "what happened in the orbital simulation run?",
                json!({"memory_read": false, "memory_write": false}),
            ),
        )
        .await;
    let u = &res.json()["usage"];
    assert_eq!(
        (u["memories_used"].as_u64(), u["memory_write"].as_bool()),
        (Some(0), Some(false))
    );
    // Usage and ledger are the agent's, on our routes and the aliases.
    env.gw().state.billing.journal().sync().await;
    let usage = get(&env, "/v1/usage", &key).await.json();
    assert_eq!(usage["wallet_address"], a["account"]);
    assert!(usage["total"].as_u64().unwrap() >= 4);
    let ledger = get(&env, "/v1/credits/ledger", &key).await.json();
    let charges = ledger["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "debit")
        .count();
    assert!(charges >= 3, "{ledger}");
    let all = get(&env, "/api/v1/transactions", &key).await.json();
    assert_eq!(all["total"], ledger["total"]);
    let data = all["data"].as_array().unwrap();
    assert_eq!(data.last().unwrap()["type"], "deposit");
    assert_eq!(data.last().unwrap()["amount"], 2_000_000);
    assert_eq!(data[0]["type"], "charge");
    assert!(data[0]["amountUsd"].as_str().unwrap().starts_with('-'));
    let sum: i64 = data.iter().map(|t| t["amount"].as_i64().unwrap()).sum();
    assert_eq!(sum as u64, env.balance(&me.to_string()).balance);
    let deposits = get(&env, "/api/v1/transactions?type=deposit", &key)
        .await
        .json();
    assert_eq!(deposits["total"], 1);
    let page = get(&env, "/api/v1/transactions?limit=1&offset=1", &key)
        .await
        .json();
    assert_eq!(page["data"][0], data[1]);
    assert_eq!(page["hasMore"], data.len() > 2);
    let bad = get(&env, "/api/v1/transactions?type=gas_sponsored", &key).await;
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_error")
    );
    // Models: the same catalog as /v1/models, with its prices per 1M tokens.
    let models = get(&env, "/api/v1/models", &key).await;
    assert_eq!(models.status, StatusCode::OK);
    let public = env.send(Method::GET, "/v1/models", &[], "").await;
    assert_eq!(models.json(), public.json());
    assert!(models.json()["data"][0]["pricing"]["input_usd_per_1m"].is_string());
    // The document's error codes on its aliases, our envelope.
    let none = env.send(Method::GET, "/api/v1/balance", &[], "").await;
    assert_eq!(
        (none.status, none.code().as_str()),
        (StatusCode::UNAUTHORIZED, "missing_api_key")
    );
    let mut wrong = key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    let wrong = get(&env, "/api/v1/models", &wrong).await;
    assert_eq!(
        (wrong.status, wrong.code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_api_key")
    );
    // A wallet's key reads its own data through the aliases too.
    let wallet_key = env.funded_key(W1, 5).await;
    let b = get(&env, "/api/v1/balance", &wallet_key).await.json();
    assert_eq!(
        (b["credits"].as_u64(), b["agent"].is_null()),
        (Some(5), true)
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_ip_capped_while_unfunded_and_validated() {
    let env = env_with(|c| c.agents.max_unfunded = 7).await;
    for i in 0..5 {
        register(&env, &format!("agent-{i}")).await;
    }
    let res = try_register(&env, "agent-5").await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(
        res.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(
        env.gw().state.agents.unfunded(),
        5,
        "the refused one created nothing"
    );
    env.stop().await;
    // Past the cap of unfunded agents: 503 with a time to retry, nothing stored.
    let env = env_with(|c| {
        c.agents.max_unfunded = 2;
        c.agents.register_per_min = 100;
    })
    .await;
    register(&env, "one").await;
    register(&env, "two").await;
    let res = try_register(&env, "three").await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "agent_capacity_reached")
    );
    assert!(res.headers.contains_key("retry-after"));
    assert_eq!(env.gw().state.store.all_keys().await.unwrap().len(), 2);
    for bad in [
        json!({"name": ""}),
        json!({"name": "x".repeat(101)}),
        json!({}),
    ] {
        let res = env
            .send(
                Method::POST,
                "/api/v1/agents/register",
                &[],
                bad.to_string(),
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(res.code(), "validation_error");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_the_unfunded_and_keeps_the_funded() {
    let env = env_with(|c| {
        c.agents.deposit_deadline = Duration::from_secs(2);
        c.agents.sweep_interval = Duration::from_millis(20);
    })
    .await;
    let state = &env.gw().state;
    let funded = register(&env, "funded").await;
    let res = topup(
        &env,
        funded["uuid"].as_str().unwrap(),
        1,
        &payment(&Signer::random().unwrap(), 1_000_000),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    // Registered after `funded`, so its deadline is the later one.
    let unfunded = register(&env, "unfunded").await;
    let (u, k) = (account(&unfunded), key(&unfunded));
    // It used the API meanwhile: a 402 and a balance read are in its history.
    assert_eq!(
        env.chat(&k, turn("hi", json!({}))).await.status,
        StatusCode::PAYMENT_REQUIRED
    );
    assert_eq!(
        get(&env, "/api/v1/balance", &k).await.status,
        StatusCode::OK
    );
    assert!(!env.usage(&u.to_string()).await.is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while state.agents.get(&u).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "swept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let res = get(&env, "/api/v1/balance", &k).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_api_key")
    );
    assert!(
        env.usage(&u.to_string()).await.is_empty(),
        "its history is gone"
    );
    assert!(state.store.account(&u).await.unwrap().is_none());
    assert!(
        state
            .store
            .all_keys()
            .await
            .unwrap()
            .iter()
            .all(|r| r.wallet != u)
    );
    // A top-up naming it now is refused before any payment is taken.
    let settles = env.sim.facilitator_stats().settle;
    let res = topup(
        &env,
        unfunded["uuid"].as_str().unwrap(),
        1,
        &payment(&Signer::random().unwrap(), 1_000_000),
    )
    .await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::NOT_FOUND, "agent_not_found")
    );
    assert_eq!(env.sim.facilitator_stats().settle, settles);
    // The funded one was past its deadline at that sweep too, and stays.
    let f = account(&funded);
    assert!(
        state
            .agents
            .get(&f)
            .await
            .unwrap()
            .unwrap()
            .funded_ms
            .is_some()
    );
    let b = get(&env, "/api/v1/balance", &key(&funded)).await.json();
    assert_eq!(
        (b["credits"].as_u64(), b["agent"]["permanent"].as_bool()),
        (Some(1_000_000), Some(true))
    );
    assert_eq!(state.agents.unfunded(), 0);
    env.stop().await;
}

/// A top-up whose settlement is still in flight when the deadline passes, while the sweeper runs
/// every 10 ms: the agent survives and is credited exactly once; then, many times over, top-ups
/// landing around the deadline either fund a surviving agent or are refused with nothing taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_racing_the_sweep_is_never_lost() {
    let env = env_with(|c| {
        c.agents.deposit_deadline = Duration::from_secs(1);
        c.agents.sweep_interval = Duration::from_millis(10);
        c.agents.register_per_min = 1000;
    })
    .await;
    let state = env.gw().state.clone();
    let a = register(&env, "late payer").await;
    let me = account(&a);
    let deadline = state.agents.get(&me).await.unwrap().unwrap().deadline_ms;
    // The facilitator moves the money at once but answers 5 s later.
    env.sim.set_facilitator_faults(FacilitatorFaults {
        endpoint: Some("settle".into()),
        after_ms: Some(5000),
        times: Some(1),
        ..FacilitatorFaults::default()
    });
    let payer = Signer::random().unwrap();
    let usdc = env.sim.balance(&payer.address());
    let header = payment(&payer, 3_000_000);
    let (client, url, uuid) = (
        env.client.clone(),
        env.url("/v1/topup"),
        a["uuid"].as_str().unwrap().to_string(),
    );
    let in_flight = tokio::spawn(async move {
        let req = http::Request::post(url)
            .header("x-payment", header)
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json!({"amount": 3, "agent": uuid}).to_string(),
            )))
            .unwrap();
        client.request(req).await.unwrap().status()
    });
    // The sweeper runs past the deadline while the settlement is out.
    assert!(
        eventually(Duration::from_secs(3), || env
            .sim
            .facilitator_stats()
            .settle
            == 1)
        .await
    );
    // Passes that start after the deadline, so each one sees the agent due.
    assert!(eventually(Duration::from_secs(30), || now_ms() > deadline + 1).await);
    let passes = state.agents.passes();
    assert!(
        eventually(Duration::from_secs(30), || state.agents.passes()
            > passes + 3)
        .await
    );
    assert!(
        !in_flight.is_finished(),
        "the settlement was still out during those sweeps"
    );
    assert!(
        state.agents.get(&me).await.unwrap().is_some(),
        "pinned, not swept"
    );
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);
    assert_eq!(env.balance(&me.to_string()).balance, 3_000_000);
    assert_eq!(env.sim.balance(&payer.address()), usdc - 3_000_000);
    let later = state.agents.passes();
    assert!(
        eventually(Duration::from_secs(30), || state.agents.passes()
            > later + 2)
        .await
    );
    assert!(
        state
            .agents
            .get(&me)
            .await
            .unwrap()
            .unwrap()
            .funded_ms
            .is_some(),
        "permanent"
    );
    let deposits = get(&env, "/api/v1/transactions?type=deposit", &key(&a))
        .await
        .json();
    assert_eq!(deposits["total"], 1, "credited once");

    // Around the deadline, many times at once: each outcome is whole.
    let mut racers = Vec::new();
    for i in 0..16u64 {
        let b = register(&env, &format!("racer-{i}")).await;
        let acct = account(&b);
        let payer = Signer::random().unwrap();
        let usdc = env.sim.balance(&payer.address());
        let deadline = state.agents.get(&acct).await.unwrap().unwrap().deadline_ms;
        // Aimed at the deadline, from 80 ms before it to 70 ms after.
        let at = (deadline + i * 10).saturating_sub(80);
        let (url, uuid, header) = (
            env.url("/v1/topup"),
            b["uuid"].as_str().unwrap().to_string(),
            payment(&payer, 1_000_000),
        );
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
            let body = json!({"amount": 1, "agent": uuid}).to_string();
            call(Method::POST, &url, &[("x-payment", &header)], body)
                .await
                .unwrap()
        });
        racers.push((acct, payer, usdc, task));
    }
    let mut outcomes = std::collections::BTreeMap::new();
    for (acct, payer, usdc, task) in racers {
        let res = task.await.unwrap();
        let paid = usdc - env.sim.balance(&payer.address());
        *outcomes.entry(res.status.as_u16()).or_insert(0) += 1;
        match res.status {
            StatusCode::OK => {
                assert_eq!(paid, 1_000_000);
                assert_eq!(env.balance(&acct.to_string()).balance, 1_000_000);
                assert!(
                    state.agents.get(&acct).await.unwrap().is_some(),
                    "funded, then swept"
                );
            }
            StatusCode::NOT_FOUND => {
                assert_eq!(res.code(), "agent_not_found");
                assert_eq!(paid, 0, "refused before settling");
                assert!(state.agents.get(&acct).await.unwrap().is_none());
            }
            other => panic!("{other}: {:?}", res.body),
        }
    }
    // Every funded racer stays through later sweeps.
    let later = state.agents.passes();
    assert!(
        eventually(Duration::from_secs(30), || state.agents.passes()
            > later + 2)
        .await
    );
    let live = state.store.all_keys().await.unwrap().len();
    assert_eq!(
        live,
        1 + outcomes.get(&200).copied().unwrap_or(0),
        "{outcomes:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_top_up_gives_the_payment_back_for_another_agent() {
    let env = env_with(|_| {}).await;
    let payer = Signer::random().unwrap();
    let header = payment(&payer, 1_000_000);
    let gone = uuid::Uuid::from_u128(7).to_string();
    let res = topup(&env, &gone, 1, &header).await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::NOT_FOUND, "agent_not_found")
    );
    // The same signed payment still works: nothing was spent.
    let live = register(&env, "live").await;
    let res = topup(&env, live["uuid"].as_str().unwrap(), 1, &header).await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    assert_eq!(env.balance(&account(&live).to_string()).balance, 1_000_000);
    // A purchase can name the agent too (by its account id), from any payer.
    let res = env
        .send(
            Method::POST,
            "/v1/credits/purchase",
            &[("x-payment", &payment(&Signer::random().unwrap(), 500_000))],
            json!({"agent": live["account"], "credits": 500_000}).to_string(),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    assert_eq!(res.json()["credits"], 1_500_000);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_and_a_wallet_see_only_their_own_data() {
    let env = env_with(|_| {}).await;
    let (a, b) = (register(&env, "alpha").await, register(&env, "beta").await);
    let (ka, kb) = (key(&a), key(&b));
    for agent in [&a, &b] {
        let grant = json!({"wallet": agent["account"], "credits": 5_000_000});
        let res = env
            .send(
                Method::POST,
                "/admin/grant",
                &[("x-admin-secret", "test-admin-secret-0123456789")],
                grant.to_string(),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK);
    }
    let wk = env.funded_key(W1, 5_000_000).await;
    let raw = json!({"memory_read": false, "memory_write_mode": "raw"});
    env.chat(
        &ka,
        turn("alpha keeps the launch code tangerine", raw.clone()),
    )
    .await;
    env.chat(&kb, turn("beta keeps the launch code avocado", raw))
        .await;
    assert!(remembered(&env, &ka, "launch code", "tangerine").await);
    assert!(remembered(&env, &kb, "launch code", "avocado").await);
    for (k, mine, theirs) in [(&ka, "tangerine", "avocado"), (&kb, "avocado", "tangerine")] {
        let found = search(&env, k, "launch code").await;
        let texts: Vec<&str> = found.iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert!(texts.iter().any(|t| t.contains(mine)));
        assert!(texts.iter().all(|t| !t.contains(theirs)), "{texts:?}");
    }
    assert!(
        search(&env, &wk, "launch code").await.is_empty(),
        "the wallet sees neither"
    );
    // Another agent's memory id is not found for this one.
    let b_id = search(&env, &kb, "launch code").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = env
        .send(
            Method::DELETE,
            &format!("/v1/memory/{b_id}"),
            &[("x-api-key", &ka)],
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(search(&env, &kb, "launch code").await.len(), 1);
    // Histories and balances are per account.
    env.gw().state.billing.journal().sync().await;
    for (k, me) in [(&ka, &a), (&kb, &b)] {
        let t = get(&env, "/api/v1/transactions", k).await.json();
        assert_eq!(t["account"], me["account"]);
        let usage = get(&env, "/v1/usage", k).await.json();
        assert_eq!(usage["wallet_address"], me["account"]);
        assert!(
            usage["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["key_id"] == me["keyId"] || e["key_id"].is_null())
        );
    }
    let other = format!("/v1/usage/{}", b["account"].as_str().unwrap());
    let res = env
        .send(Method::GET, &other, &[("x-api-key", &ka)], "")
        .await;
    assert_eq!(
        (res.status, res.code().as_str()),
        (StatusCode::FORBIDDEN, "wallet_mismatch")
    );
    env.stop().await;
}

async fn text(env: &Env, path: &str) -> String {
    String::from_utf8(env.send(Method::GET, path, &[], "").await.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_describe_agent_accounts() {
    let env = env_with(|_| {}).await;
    let full = text(&env, "/llms-full.txt").await;
    for needle in [
        "### `POST /api/v1/agents/register`",
        "### `GET /api/v1/transactions`",
        "Deposit within 15 minutes or the agent is deleted",
        "\"agent\": \"<uuid or account>\"",
        "Agent registrations: 5 per minute per client IP",
    ] {
        assert!(full.contains(needle), "llms-full.txt lacks {needle}");
    }
    assert!(
        text(&env, "/skill.md")
            .await
            .contains("/api/v1/agents/register")
    );
    assert!(
        text(&env, "/llms.txt")
            .await
            .contains("`GET /api/v1/balance`")
    );
    let spec: Value = serde_json::from_str(&text(&env, "/openapi.json").await).unwrap();
    let codes = |path: &str, method: &str, status: &str| {
        spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            ["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
            .clone()
    };
    assert_eq!(
        codes("/api/v1/balance", "get", "401"),
        json!(["invalid_api_key", "missing_api_key", "invalid_token"])
    );
    assert_eq!(
        codes("/v1/credits/me", "get", "401"),
        json!(["invalid_api_key", "missing_credentials", "invalid_token"]),
        "our own routes keep our codes"
    );
    assert_eq!(
        codes("/api/v1/agents/register", "post", "503"),
        json!(["agent_capacity_reached", "store_unavailable"])
    );
    let topup = &spec["paths"]["/v1/topup"]["post"];
    assert!(
        topup["requestBody"]["content"]["application/json"]["schema"]["properties"]["agent"]
            .is_object()
    );
    env.stop().await;
}
