//! Pure translation between the neutral call types and Gemini's JSON: no IO, fuzzable.

use std::time::Duration;

use super::candidates;
pub use super::tools::SKIP_SIGNATURE;
use super::tools::{parts_out, tools_out};
use super::types::{
    BatchEmbedRequest, BatchEmbedResponse, Content, EmbedRequest, ErrorEnvelope, ErrorObject,
    GenerateRequest, GenerateResponse, GenerationConfig, JsonSchemaOut, PartOut, ThinkingConfig,
    UsageMetadata,
};
use crate::upstream::{
    ChatCall, Completion, Finish, Role, StreamEvent, Thinking, TokenUsage, ToolFailure,
    UpstreamError,
};

/// Serializes a call as a `generateContent` / `streamGenerateContent` body.
pub fn encode_request(call: &ChatCall) -> Vec<u8> {
    let p = &call.params;
    let (tools, tool_config) = tools_out(&call.tools);
    let req = GenerateRequest {
        system_instruction: call.system.as_deref().map(|s| Content {
            role: None,
            parts: vec![PartOut::text(s)],
        }),
        contents: call
            .turns
            .iter()
            .map(|t| Content {
                role: Some(match t.role {
                    Role::User => "user",
                    Role::Model => "model",
                }),
                parts: parts_out(t, &call.model),
            })
            .collect(),
        tools,
        tool_config,
        generation_config: GenerationConfig {
            temperature: p.temperature,
            top_p: p.top_p,
            max_output_tokens: p.max_output_tokens,
            stop_sequences: &p.stop,
            seed: p.seed,
            presence_penalty: p.presence_penalty,
            frequency_penalty: p.frequency_penalty,
            response_mime_type: (p.json_mode || p.response_schema.is_some())
                .then_some("application/json"),
            response_json_schema: p.response_schema.as_ref().map(JsonSchemaOut),
            candidate_count: (p.candidates > 1).then_some(p.candidates),
            response_logprobs: p.logprobs.map(|_| true),
            logprobs: p.logprobs.filter(|k| *k > 0),
            thinking_config: p.thinking.map(|t| match t {
                Thinking::Budget(b) => ThinkingConfig {
                    thinking_budget: Some(b),
                    thinking_level: None,
                },
                Thinking::Level(l) => ThinkingConfig {
                    thinking_budget: None,
                    thinking_level: Some(l),
                },
            }),
        },
    };
    // Serializing plain structs of strings and numbers cannot fail; NaN is excluded by validation.
    serde_json::to_vec(&req).unwrap_or_default()
}

/// Most requests Gemini accepts in one `batchEmbedContents` call (reference §2.2).
pub const EMBED_BATCH: usize = 100;

/// Serializes up to `EMBED_BATCH` texts as a `batchEmbedContents` body asking for `dims` values each.
pub fn encode_embed_request(model: &str, texts: &[String], dims: usize) -> Vec<u8> {
    let name = format!("models/{model}");
    let req = BatchEmbedRequest {
        requests: texts
            .iter()
            .map(|t| EmbedRequest {
                model: &name,
                content: Content {
                    role: None,
                    parts: vec![PartOut::text(t)],
                },
                output_dimensionality: dims,
            })
            .collect(),
    };
    // Serializing plain structs of strings and integers cannot fail.
    serde_json::to_vec(&req).unwrap_or_default()
}

/// Decodes a `batchEmbedContents` answer: exactly `expected` vectors of `dims` values, each
/// re-normalized to unit length (Gemini's vectors are unit-norm only at full size, reference §2.3).
/// A longer vector is truncated first, as Matryoshka embeddings allow; a shorter one, a count
/// mismatch or a non-finite value is a protocol error.
pub fn decode_embed_response(
    body: &[u8],
    expected: usize,
    dims: usize,
) -> Result<Vec<Vec<f32>>, UpstreamError> {
    let resp: BatchEmbedResponse = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::Protocol(format!("embedding JSON: {e}")))?;
    if resp.embeddings.len() != expected {
        return Err(UpstreamError::Protocol(format!(
            "asked for {expected} embeddings, got {}",
            resp.embeddings.len()
        )));
    }
    resp.embeddings
        .into_iter()
        .map(|e| {
            let mut v = e.values;
            if v.len() < dims {
                return Err(UpstreamError::Protocol(format!(
                    "asked for {dims} dimensions, got {}",
                    v.len()
                )));
            }
            v.truncate(dims);
            if v.iter().any(|x| !x.is_finite()) {
                return Err(UpstreamError::Protocol(
                    "an embedding value is not finite".into(),
                ));
            }
            normalize(&mut v);
            Ok(v)
        })
        .collect()
}

/// Scales `v` to unit length; the zero vector stays zero.
fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Gemini finish reasons → OpenAI's (reference §6.1). Unknown values are `stop`.
pub fn map_finish(reason: &str) -> Finish {
    match reason {
        "MAX_TOKENS" => Finish::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "LANGUAGE" => Finish::ContentFilter,
        "MALFORMED_FUNCTION_CALL" => Finish::ToolFailure(ToolFailure::Malformed),
        "UNEXPECTED_TOOL_CALL" => Finish::ToolFailure(ToolFailure::Unexpected),
        "TOO_MANY_TOOL_CALLS" => Finish::ToolFailure(ToolFailure::TooMany),
        "MISSING_THOUGHT_SIGNATURE" => Finish::ToolFailure(ToolFailure::MissingSignature),
        _ => Finish::Stop,
    }
}

/// `usageMetadata` → OpenAI usage (reference §6.2): completion = candidates + thoughts.
fn map_usage(u: &UsageMetadata) -> TokenUsage {
    TokenUsage {
        prompt: u.prompt_token_count + u.tool_use_prompt_token_count,
        completion: u.candidates_token_count + u.thoughts_token_count,
        reasoning: u.thoughts_token_count,
        cached: u.cached_content_token_count,
    }
}

/// Decodes a unary `generateContent` answer (every candidate, `candidates`).
pub fn decode_response(body: &[u8]) -> Result<Completion, UpstreamError> {
    let resp: GenerateResponse<'_> = serde_json::from_slice(body)
        .map_err(|e| UpstreamError::Protocol(format!("response JSON: {e}")))?;
    if let Some(err) = resp.error {
        return Err(error_from_object(err.code, err, ""));
    }
    let (first, more) = candidates::choices(&resp);
    Ok(Completion {
        text: first.text,
        tool_calls: first.tool_calls,
        finish: first.finish,
        logprobs: first.logprobs,
        more,
        usage: resp
            .usage_metadata
            .as_ref()
            .map(map_usage)
            .unwrap_or_default(),
        response_id: resp.response_id.map(|c| c.into_owned()),
    })
}

/// Decodes one SSE `data:` payload into events, appended to `out`: thoughts, then each
/// candidate's log probabilities, text and calls, then the usage, then the finishes.
pub fn decode_chunk(data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), UpstreamError> {
    let resp: GenerateResponse<'_> = serde_json::from_slice(data)
        .map_err(|e| UpstreamError::Protocol(format!("stream chunk JSON: {e}")))?;
    if let Some(err) = resp.error {
        return Err(mid_stream_error(err));
    }
    let thought = candidates::thought_bytes(&resp);
    if thought > 0 {
        out.push(StreamEvent::Thought(thought));
    }
    let finishes = candidates::chunk_events(&resp, out);
    if let Some(u) = &resp.usage_metadata {
        out.push(StreamEvent::Usage(map_usage(u)));
    }
    out.extend(finishes);
    Ok(())
}

/// A raw `{"error":...}` block after the SSE framing (reference §1.7) or a `data:` error event.
pub fn decode_stream_tail(tail: &[u8]) -> UpstreamError {
    match serde_json::from_slice::<ErrorEnvelope>(tail) {
        Ok(env) => mid_stream_error(env.error),
        Err(_) => UpstreamError::Protocol(format!(
            "unexpected bytes after the stream: {}",
            String::from_utf8_lossy(&tail[..tail.len().min(200)])
        )),
    }
}

fn mid_stream_error(err: ErrorObject) -> UpstreamError {
    let status = if err.code == 0 { 500 } else { err.code };
    match error_from_object(status, err, "") {
        e @ UpstreamError::RateLimited { .. } => e,
        other => UpstreamError::Interrupted(other.to_string()),
    }
}

/// Maps a non-2xx answer (status + Gemini error body) to an upstream error (reference §6.4).
pub fn decode_error(status: u16, body: &[u8], model: &str) -> UpstreamError {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => error_from_object(status, env.error, model),
        Err(_) => {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            error_from_object(
                status,
                ErrorObject {
                    code: status,
                    message: snippet,
                    ..Default::default()
                },
                model,
            )
        }
    }
}

fn error_from_object(status: u16, err: ErrorObject, model: &str) -> UpstreamError {
    let reason = err
        .details
        .iter()
        .find_map(|d| d.reason.as_deref())
        .unwrap_or("");
    match status {
        429 => UpstreamError::RateLimited {
            retry_after: err.details.iter().find_map(|d| {
                (d.kind.ends_with("RetryInfo"))
                    .then(|| d.retry_delay.as_deref().and_then(parse_delay))
                    .flatten()
            }),
            message: err.message,
        },
        404 => UpstreamError::ModelNotFound(model.to_string()),
        401 | 403 => UpstreamError::Credentials(err.message),
        400 if reason == "API_KEY_INVALID" || err.message.contains("API key not valid") => {
            UpstreamError::Credentials(err.message)
        }
        400 => UpstreamError::Rejected {
            message: err.message,
        },
        s => UpstreamError::Unavailable {
            status: s,
            message: err.message,
        },
    }
}

/// `"26s"`, `"38.8s"` → a duration.
pub fn parse_delay(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    (0.0..86_400.0)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{GenParams, Tools, Turn};

    #[test]
    fn request_shape() {
        let call = ChatCall {
            model: "gemini-2.5-flash".into(),
            system: Some("be terse".into()),
            turns: vec![
                Turn::text(Role::User, "hi"),
                Turn::text(Role::Model, "hello"),
            ],
            params: GenParams {
                temperature: Some(0.3),
                stop: vec!["\nUser:".into()],
                max_output_tokens: 64,
                thinking: Some(Thinking::Budget(1024)),
                ..Default::default()
            },
            tools: Tools::default(),
        };
        let v: serde_json::Value = serde_json::from_slice(&encode_request(&call)).unwrap();
        assert_eq!(v["systemInstruction"]["parts"][0]["text"], "be terse");
        assert_eq!(v["contents"][1]["role"], "model");
        assert_eq!(v["generationConfig"]["maxOutputTokens"], 64);
        assert_eq!(v["generationConfig"]["stopSequences"][0], "\nUser:");
        assert_eq!(
            v["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            1024
        );
        assert!(v["generationConfig"].get("topP").is_none());
    }

    #[test]
    fn unary_response_with_thoughts() {
        let body = br#"{"candidates":[{"content":{"role":"model","parts":[
            {"text":"thinking...","thought":true},{"text":"15% of 240 is 36."}]},"finishReason":"STOP"}],
            "usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":198,"thoughtsTokenCount":405,"totalTokenCount":623},
            "responseId":"abc"}"#;
        let c = decode_response(body).unwrap();
        assert_eq!(c.text, "15% of 240 is 36.");
        assert_eq!(
            c.usage,
            TokenUsage {
                prompt: 20,
                completion: 603,
                reasoning: 405,
                cached: 0
            }
        );
        assert_eq!(c.usage.total(), 623);
        assert_eq!(c.response_id.as_deref(), Some("abc"));
    }

    #[test]
    fn edge_cases() {
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":5}}"#;
        assert_eq!(
            decode_response(blocked).unwrap().finish,
            Finish::ContentFilter
        );
        let no_parts =
            br#"{"candidates":[{"content":{"role":"model"},"finishReason":"MAX_TOKENS"}],
            "usageMetadata":{"promptTokenCount":21,"thoughtsTokenCount":60,"totalTokenCount":81}}"#;
        let c = decode_response(no_parts).unwrap();
        assert_eq!(
            (c.text.as_str(), c.finish, c.usage.completion),
            ("", Finish::Length, 60)
        );
        assert_eq!(map_finish("SOMETHING_NEW"), Finish::Stop);
    }

    #[test]
    fn errors_map_by_status() {
        let e429 =
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"26.5s"}]}}"#;
        match decode_error(429, e429, "m") {
            UpstreamError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_millis(26_500)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_error(404, b"{}", "m"),
            UpstreamError::ModelNotFound(_)
        ));
        let bad_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#;
        assert!(matches!(
            decode_error(400, bad_key, "m"),
            UpstreamError::Credentials(_)
        ));
        assert!(matches!(
            decode_error(503, b"not json", "m"),
            UpstreamError::Unavailable { status: 503, .. }
        ));
        assert!(matches!(
            decode_stream_tail(br#"{"error":{"code":503,"message":"high demand"}}"#),
            UpstreamError::Interrupted(_)
        ));
    }

    #[test]
    fn embed_request_shape() {
        let texts = vec!["doc one".to_string(), "doc two".to_string()];
        let v: serde_json::Value =
            serde_json::from_slice(&encode_embed_request("gemini-embedding-001", &texts, 768))
                .unwrap();
        let reqs = v["requests"].as_array().unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0]["model"], "models/gemini-embedding-001");
        assert_eq!(reqs[1]["content"]["parts"][0]["text"], "doc two");
        assert_eq!(reqs[0]["outputDimensionality"], 768);
        assert!(reqs[0]["content"].get("role").is_none());
    }

    #[test]
    fn embed_response_is_truncated_and_renormalized() {
        let body = br#"{"embeddings":[{"values":[3.0,4.0,12.0]},{"values":[0.0,0.0]}]}"#;
        let out = decode_embed_response(body, 2, 2).unwrap();
        assert_eq!(out[0], vec![0.6, 0.8]);
        assert_eq!(out[1], vec![0.0, 0.0], "the zero vector stays zero");
        for v in &out[..1] {
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn embed_response_mismatches_are_protocol_errors() {
        let one = br#"{"embeddings":[{"values":[1.0,0.0]}]}"#;
        for (body, expected, dims) in [
            (&one[..], 2, 2),
            (&one[..], 1, 3),
            (&b"{\"embeddings\":[{\"values\":[1e39,0.0]}]}"[..], 1, 2),
            (&b"not json"[..], 1, 2),
        ] {
            assert!(
                matches!(
                    decode_embed_response(body, expected, dims),
                    Err(UpstreamError::Protocol(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(decode_embed_response(br#"{}"#, 0, 8).unwrap().len(), 0);
    }

    #[test]
    fn chunk_events() {
        let mut out = Vec::new();
        decode_chunk(br#"{"candidates":[{"content":{"parts":[{"text":"Par"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":11,"totalTokenCount":11}}"#, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                StreamEvent::Delta("Par".into()),
                StreamEvent::Usage(TokenUsage {
                    prompt: 11,
                    ..Default::default()
                })
            ]
        );
        out.clear();
        // A thought-summary chunk: its bytes are counted, its text is never shown.
        decode_chunk(br#"{"candidates":[{"content":{"parts":[{"text":"hmm, 15% of 240","thought":true},{"text":"36"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":11,"thoughtsTokenCount":40}}"#, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                StreamEvent::Thought(15),
                StreamEvent::Delta("36".into()),
                StreamEvent::Usage(TokenUsage {
                    prompt: 11,
                    completion: 40,
                    reasoning: 40,
                    cached: 0
                })
            ]
        );
        out.clear();
        assert!(matches!(
            decode_chunk(br#"{"error":{"code":429,"message":"x"}}"#, &mut out),
            Err(UpstreamError::RateLimited { .. })
        ));
    }
}
