//! Audio and PDFs are counted by the simulator as Gemini counts them (32 tokens a second, 258
//! per page), and the hold and the x402 quote the gateway sizes on them are never below that.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Env, Resp, W1, sse_data};

/// A mono 16-bit WAV of `secs` seconds at 8 kHz.
fn wav(secs: u32) -> Vec<u8> {
    let data = secs * 16_000;
    let mut b = b"RIFF".to_vec();
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&[1, 0, 1, 0]);
    b.extend_from_slice(&8_000u32.to_le_bytes());
    b.extend_from_slice(&16_000u32.to_le_bytes());
    b.extend_from_slice(&[2, 0, 16, 0]);
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    b.resize(b.len() + data as usize, 0);
    b
}

/// A PDF with `pages` page objects under one page tree.
fn pdf(pages: usize) -> Vec<u8> {
    let mut b = format!("%PDF-1.4\n1 0 obj <</Type /Pages /Count {pages}>> endobj\n").into_bytes();
    for i in 0..pages {
        b.extend_from_slice(
            format!("{} 0 obj <</Type /Page /Parent 1 0 R>> endobj\n", i + 2).as_bytes(),
        );
    }
    b.extend_from_slice(b"%%EOF\n");
    b
}

fn ask(model: &str, part: Option<Value>, stream: bool) -> Value {
    let mut content = vec![json!({"type": "text", "text": "Summarize this."})];
    content.extend(part);
    json!({"model": model, "stream": stream, "max_tokens": 32, "memory_read": false,
           "memory_write": false, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": content}]})
}

fn audio(b: &[u8]) -> Value {
    json!({"type": "input_audio", "input_audio": {"data": STANDARD.encode(b), "format": "wav"}})
}

fn file(b: &[u8]) -> Value {
    json!({"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{}", STANDARD.encode(b)),
                                    "filename": "doc.pdf"}})
}

fn usage(res: &Resp, stream: bool) -> Value {
    if stream {
        let events = sse_data(&res.body);
        let chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        chunk["usage"].clone()
    } else {
        res.json()["usage"].clone()
    }
}

async fn quote(env: &Env, body: &Value) -> u64 {
    let res = env
        .send(Method::POST, "/v1/chat/completions", &[], body.to_string())
        .await;
    assert_eq!(res.status, StatusCode::PAYMENT_REQUIRED);
    res.json()["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_pdf_are_counted_like_gemini_and_held_at_least_that() {
    let env = Env::start().await;
    let key = env.funded_key(W1, 200_000_000).await;
    let cases = [
        ("5 s of audio", audio(&wav(5)), 5 * 32),
        ("90 s of audio", audio(&wav(90)), 90 * 32),
        ("a 3-page PDF", file(&pdf(3)), 3 * 258),
        ("a 40-page PDF", file(&pdf(40)), 40 * 258),
    ];
    let mut debits = 0;
    for model in ["gemini-2.5-flash", "gemini-3.5-flash"] {
        let price = env.gw().state.config.prices.get(model).unwrap().clone();
        for stream in [false, true] {
            let base = env.chat(&key, ask(model, None, stream)).await;
            assert_eq!(base.status, StatusCode::OK);
            let text = usage(&base, stream)["prompt_tokens"].as_u64().unwrap();
            debits += 1;
            for (what, part, tokens) in &cases {
                let body = ask(model, Some(part.clone()), stream);
                let res = env.chat(&key, body.clone()).await;
                assert_eq!(
                    res.status,
                    StatusCode::OK,
                    "{what}: {}",
                    String::from_utf8_lossy(&res.body)
                );
                let u = usage(&res, stream);
                let (p, c) = (
                    u["prompt_tokens"].as_u64().unwrap(),
                    u["completion_tokens"].as_u64().unwrap(),
                );
                assert_eq!(p - text, *tokens, "{model} {what} stream={stream}");
                // The hold covered it: the full price was charged, not a capped one.
                assert_eq!(
                    u["credit_cost"].as_u64(),
                    Some(price.cost(p, c)),
                    "{model} {what}"
                );
                assert!(
                    quote(&env, &body).await >= price.cost(p, c),
                    "{model} {what}: quote"
                );
                debits += 1;
            }
        }
    }
    assert!(crate::harness::eventually(Duration::from_secs(5), || env.balance(W1).held == 0).await);
    assert_eq!(env.gw().state.billing.open_holds(), 0);
    let ledger = env.ledger(W1).await;
    let charged = ledger
        .iter()
        .filter(|e| e.kind == vectorway::storage::LedgerKind::Debit)
        .count();
    assert_eq!(charged, debits);
    env.stop().await;
}
