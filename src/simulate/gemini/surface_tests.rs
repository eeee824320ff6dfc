//! The simulator's answers to the chat surface: Gemini 3's one-candidate rule, `logprobsResult`
//! (unary and streamed, deterministic), and the `cached_tokens` fault's usage.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::config::SimulatorKnobs;
use crate::simulate::{FaultPlan, Simulator};
use crate::upstream::client::{HttpClient, build};

async fn sim() -> (Simulator, HttpClient) {
    let knobs = SimulatorKnobs {
        ttft: Duration::ZERO,
        tokens_per_sec: 1_000_000,
        chunk_tokens: 3,
        reply_tokens: 8,
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = Simulator::start(addr, knobs, None).await.unwrap();
    (sim, build(Duration::from_secs(5), 4))
}

async fn call(
    s: &(Simulator, HttpClient),
    model: &str,
    stream: bool,
    body: &Value,
) -> (u16, String) {
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/v1beta/models/{model}:{method}", s.0.base_url()))
        .header("x-goog-api-key", "k")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let res = s.1.request(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn events(sse: &str) -> Vec<Value> {
    sse.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

fn ask(config: Value) -> Value {
    json!({"contents":[{"role":"user","parts":[{"text":"tell me about vectors"}]}],"generationConfig":config})
}

fn tokens(result: &Value) -> Vec<String> {
    result["chosenCandidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["token"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn gemini_3_gives_one_candidate() {
    let s = sim().await;
    for model in ["gemini-3.5-flash", "gemini-3.1-flash-lite"] {
        let (status, body) = call(&s, model, false, &ask(json!({"candidateCount": 2}))).await;
        assert_eq!(status, 400, "{model}");
        assert!(
            body.contains("Multiple candidates is not enabled for this model"),
            "{body}"
        );
        let (status, _) = call(&s, model, false, &ask(json!({"candidateCount": 1}))).await;
        assert_eq!(status, 200);
    }
    let (status, _) = call(
        &s,
        "gemini-2.5-flash",
        false,
        &ask(json!({"candidateCount": 2})),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn logprobs_describe_each_candidates_text_unary_and_streamed() {
    let s = sim().await;
    let cfg = json!({"candidateCount": 2, "responseLogprobs": true, "logprobs": 3});
    let (status, body) = call(&s, "gemini-2.5-flash", false, &ask(cfg.clone())).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut unary = Vec::new();
    for c in v["candidates"].as_array().unwrap() {
        let r = &c["logprobsResult"];
        let text = c["content"]["parts"][0]["text"].as_str().unwrap();
        // One step per token: the chosen tokens spell the text, 8 one-token words.
        assert_eq!(tokens(r).concat(), text);
        assert_eq!(tokens(r).len(), 8);
        let top = r["topCandidates"].as_array().unwrap();
        assert_eq!(top.len(), 8);
        for (step, t) in top.iter().enumerate() {
            let alts = t["candidates"].as_array().unwrap();
            assert_eq!(alts.len(), 3, "logprobs = 3 alternatives");
            assert_eq!(
                alts[0], r["chosenCandidates"][step],
                "the chosen token leads"
            );
            let lps: Vec<f64> = alts
                .iter()
                .map(|a| a["logProbability"].as_f64().unwrap())
                .collect();
            assert!(
                lps.windows(2).all(|w| w[0] > w[1]),
                "sorted, descending: {lps:?}"
            );
            assert!(lps[0] <= 0.0 && lps[0] > -1.0);
        }
        let sum: f64 = r["chosenCandidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["logProbability"].as_f64().unwrap())
            .sum();
        assert!((sum - r["logProbabilitySum"].as_f64().unwrap()).abs() < 1e-9);
        unary.push(r["chosenCandidates"].clone());
    }
    assert_ne!(unary[0], unary[1], "the candidates differ");
    // The same call again gives the same numbers; streamed, the events' steps add up to them.
    let (_, again) = call(&s, "gemini-2.5-flash", false, &ask(cfg.clone())).await;
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap()["candidates"],
        v["candidates"]
    );
    let (_, sse) = call(&s, "gemini-2.5-flash", true, &ask(cfg)).await;
    let mut streamed = [Vec::new(), Vec::new()];
    for e in events(&sse) {
        for c in e["candidates"].as_array().unwrap() {
            let i = c["index"].as_u64().unwrap() as usize;
            streamed[i].extend(
                c["logprobsResult"]["chosenCandidates"]
                    .as_array()
                    .unwrap()
                    .clone(),
            );
        }
    }
    assert_eq!(Value::from(streamed[0].clone()), unary[0]);
    assert_eq!(Value::from(streamed[1].clone()), unary[1]);
}

#[tokio::test]
async fn logprobs_only_when_asked_and_in_range() {
    let s = sim().await;
    let (_, body) = call(&s, "gemini-2.5-flash", false, &ask(json!({}))).await;
    assert!(!body.contains("logprobsResult"), "not asked, not sent");
    let (_, body) = call(
        &s,
        "gemini-2.5-flash",
        false,
        &ask(json!({"responseLogprobs": true})),
    )
    .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    let r = &v["candidates"][0]["logprobsResult"];
    assert_eq!(tokens(r).len(), 8);
    assert!(r.get("topCandidates").is_none(), "no alternatives asked");
    for cfg in [
        json!({"logprobs": 2}),
        json!({"responseLogprobs": true, "logprobs": 21}),
    ] {
        let (status, _) = call(&s, "gemini-2.5-flash", false, &ask(cfg.clone())).await;
        assert_eq!(status, 400, "{cfg}");
    }
}

#[tokio::test]
async fn the_cached_tokens_fault_reports_a_cache_hit() {
    let s = sim().await;
    s.0.set_faults(FaultPlan {
        cached_tokens: Some(5),
        ..FaultPlan::default()
    });
    let (_, body) = call(&s, "gemini-2.5-flash", false, &ask(json!({}))).await;
    let u = &serde_json::from_str::<Value>(&body).unwrap()["usageMetadata"];
    assert_eq!(u["cachedContentTokenCount"], 5);
    assert_eq!(u["cacheTokensDetails"][0]["tokenCount"], 5);
    assert_eq!(
        u["totalTokenCount"].as_u64().unwrap(),
        u["promptTokenCount"].as_u64().unwrap() + u["candidatesTokenCount"].as_u64().unwrap(),
        "cached tokens are inside the prompt count"
    );
    let (_, sse) = call(&s, "gemini-2.5-flash", true, &ask(json!({}))).await;
    for e in events(&sse) {
        assert_eq!(e["usageMetadata"]["cachedContentTokenCount"], 5);
    }
    // At most the prompt.
    s.0.set_faults(FaultPlan {
        cached_tokens: Some(1_000_000),
        ..FaultPlan::default()
    });
    let (_, body) = call(&s, "gemini-2.5-flash", false, &ask(json!({}))).await;
    let u = &serde_json::from_str::<Value>(&body).unwrap()["usageMetadata"];
    assert_eq!(u["cachedContentTokenCount"], u["promptTokenCount"]);
}
