//! A streamed chat answer → the Responses API's typed events (a pure state machine).
//!
//! Fed the `data:` payloads of the chat SSE body one by one (`feed`), it writes
//! `event: <type>\ndata: <json>\n\n` frames whose `sequence_number`s count from 0:
//!
//! - `response.created` and `response.in_progress` first (`start`);
//! - text: `response.output_item.added` (a `message`), `response.content_part.added`, one
//!   `response.output_text.delta` per chat delta, and at the end of the text
//!   `response.output_text.done`, `response.content_part.done`, `response.output_item.done`;
//! - each tool call: `response.output_item.added` (a `function_call` with empty `arguments`),
//!   `response.function_call_arguments.delta`, then `response.function_call_arguments.done` and
//!   `response.output_item.done` when the next item starts or the answer ends;
//! - at chat's `[DONE]`: `response.completed`, or `response.incomplete` (`length`,
//!   `content_filter`), with the whole Response (output, `output_text`, usage from the usage
//!   chunk). On x402 `[DONE]` comes after the settlement, so the terminal event does too, and the
//!   receipt that follows becomes `data: [DONE]` (where the OpenAI SDKs stop reading) and
//!   `event: x402-receipt` with `type: "x402.receipt"`;
//! - a chat error payload (`{"error":…}`): an `error` event (`code`, `message`, `param`) and
//!   `response.failed` whose `error` has the same code and message;
//! - a chat stream that ends without either (`finish`): the same, with code `stream_interrupted`.

use serde_json::{Map, Value, json};

use super::output::read_call;
use super::{
    Call, Echo, call_item, call_item_id, message_id, message_item, output_text, response_id,
    terminal, text_part, usage,
};

/// The item being streamed.
#[derive(Debug)]
enum Open {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        /// The chat tool call index.
        index: u64,
        call: Call,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// The terminal event was sent; an x402 receipt may follow.
    Ended,
    /// Nothing more is written.
    Closed,
}

#[derive(Debug)]
pub struct EventStream {
    /// The Response without output, status or usage (`Echo::response`).
    head: Map<String, Value>,
    base: String,
    seq: u64,
    /// Finished items.
    output: Vec<Value>,
    open: Option<Open>,
    /// Message items opened so far.
    messages: usize,
    finish: Option<String>,
    usage: Value,
    phase: Phase,
}

impl EventStream {
    /// The translator of one answer: ids from `base` (`resp_<base>`, `msg_<base>`,
    /// `fc_<base>_<i>`), the model the gateway used, the creation time.
    pub fn new(base: &str, model: &str, created_at: u64, echo: &Echo) -> Self {
        Self {
            head: echo.response(&response_id(base), created_at, model, "in_progress"),
            base: base.to_string(),
            seq: 0,
            output: Vec::new(),
            open: None,
            messages: 0,
            finish: None,
            usage: Value::Null,
            phase: Phase::Streaming,
        }
    }

    /// True once nothing more will be written.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        let r = Value::Object(self.head.clone());
        self.emit(out, "response.created", json!({ "response": r }));
        self.emit(out, "response.in_progress", json!({ "response": r }));
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut body: Value) {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // A JSON value: serializing cannot fail.
        out.extend_from_slice(&serde_json::to_vec(&body).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }

    /// One `data:` payload of the chat stream.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        match self.phase {
            Phase::Closed => return,
            Phase::Ended => {
                self.receipt(data, out);
                return;
            }
            Phase::Streaming => {}
        }
        if data == b"[DONE]" {
            return self.complete(out);
        }
        let v: Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(_) => {
                return self.fail(
                    out,
                    "stream_interrupted",
                    "the answer stream carried an unreadable event",
                    Value::Null,
                );
            }
        };
        if let Some(e) = v.get("error").filter(|e| e.is_object()) {
            let code = e["code"].as_str().unwrap_or("server_error").to_string();
            let message = e["message"]
                .as_str()
                .unwrap_or("the answer failed")
                .to_string();
            return self.fail(out, &code, &message, e["param"].clone());
        }
        if let Some(choice) = v["choices"].as_array().and_then(|c| c.first()) {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                self.text(text, out);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                self.call(call, out);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                self.finish = Some(f.to_string());
                self.close(out);
            }
        }
        if v["usage"].is_object() {
            self.usage = usage(&v["usage"]);
        }
    }

    /// The chat stream ended (or broke off): a stream that has not ended is failed.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Streaming {
            self.fail(
                out,
                "stream_interrupted",
                "the answer stream ended before the response completed",
                Value::Null,
            );
        }
        self.phase = Phase::Closed;
    }

    fn output_index(&self) -> usize {
        self.output.len()
    }

    fn text(&mut self, delta: &str, out: &mut Vec<u8>) {
        if matches!(self.open, Some(Open::Call { .. })) {
            self.close(out);
        }
        if self.open.is_none() {
            let id = message_id(&self.base, self.messages);
            self.messages += 1;
            let index = self.output_index();
            let item = json!({"type": "message", "id": id, "status": "in_progress",
                              "role": "assistant", "content": []});
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")}),
            );
            self.open = Some(Open::Text {
                id,
                text: String::new(),
            });
        }
        let index = self.output_index();
        if let Some(Open::Text { id, text }) = &mut self.open {
            text.push_str(delta);
            let body = json!({"item_id": id, "output_index": index, "content_index": 0,
                              "delta": delta, "logprobs": []});
            self.emit(out, "response.output_text.delta", body);
        }
    }

    fn call(&mut self, delta: &Value, out: &mut Vec<u8>) {
        let index = delta["index"].as_u64().unwrap_or(0);
        let args = delta["function"]["arguments"].as_str().unwrap_or("");
        let continues = matches!(&self.open, Some(Open::Call { index: i, .. }) if *i == index)
            && delta["id"].as_str().is_none();
        if !continues {
            self.close(out);
            let mut call = read_call(delta);
            call.arguments = String::new();
            let id = call_item_id(&self.base, index);
            let item = call_item(&id, &call, "in_progress");
            let at = self.output_index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": at, "item": item}),
            );
            self.open = Some(Open::Call { id, index, call });
        }
        let at = self.output_index();
        if let Some(Open::Call { id, call, .. }) = &mut self.open
            && !args.is_empty()
        {
            call.arguments.push_str(args);
            let body = json!({"item_id": id, "output_index": at, "delta": args});
            self.emit(out, "response.function_call_arguments.delta", body);
        }
    }

    /// The status items end with: `incomplete` when the answer was cut.
    fn item_status(&self) -> &'static str {
        match terminal(self.finish.as_deref()).0 {
            "completed" => "completed",
            _ => "incomplete",
        }
    }

    /// Ends the open item: its `done` events, and it joins the output.
    fn close(&mut self, out: &mut Vec<u8>) {
        let at = self.output_index();
        let status = self.item_status();
        match self.open.take() {
            None => {}
            Some(Open::Text { id, text }) => {
                let done = json!({"item_id": id, "output_index": at, "content_index": 0,
                                  "text": text, "logprobs": []});
                self.emit(out, "response.output_text.done", done);
                let part = json!({"item_id": id, "output_index": at, "content_index": 0,
                                  "part": text_part(&text)});
                self.emit(out, "response.content_part.done", part);
                let item = message_item(&id, &text, status);
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": at, "item": item}),
                );
                self.output.push(item);
            }
            Some(Open::Call { id, call, .. }) => {
                let done = json!({"item_id": id, "output_index": at, "name": call.name,
                                  "arguments": call.arguments});
                self.emit(out, "response.function_call_arguments.done", done);
                let item = call_item(&id, &call, "completed");
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": at, "item": item}),
                );
                self.output.push(item);
            }
        }
    }

    /// The clean end: the terminal event with the whole Response.
    fn complete(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        if self.output.is_empty() {
            // An answer with no text and no calls still has its (empty) message, as unary.
            self.text_item_empty(out);
        }
        let (status, incomplete) = terminal(self.finish.as_deref());
        let mut r = self.head.clone();
        r.insert("status".into(), json!(status));
        r.insert("incomplete_details".into(), incomplete);
        if status == "completed"
            && let Some(created) = r.get("created_at").cloned()
        {
            // Streams end within their own lifetime; the creation second is the floor.
            r.insert("completed_at".into(), created);
        }
        r.insert("output_text".into(), json!(output_text(&self.output)));
        r.insert("output".into(), Value::Array(self.output.clone()));
        r.insert("usage".into(), self.usage.clone());
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({ "response": r }));
        self.phase = Phase::Ended;
    }

    fn text_item_empty(&mut self, out: &mut Vec<u8>) {
        let id = message_id(&self.base, self.messages);
        self.messages += 1;
        let item = json!({"type": "message", "id": id, "status": "in_progress",
                          "role": "assistant", "content": []});
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        );
        self.emit(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": 0, "content_index": 0, "part": text_part("")}),
        );
        self.open = Some(Open::Text {
            id,
            text: String::new(),
        });
        self.close(out);
    }

    /// A failure: the `error` event, then `response.failed` with what was finished.
    fn fail(&mut self, out: &mut Vec<u8>, code: &str, message: &str, param: Value) {
        let partial = match self.open.take() {
            Some(Open::Text { id, text }) => Some(message_item(&id, &text, "incomplete")),
            Some(Open::Call { id, call, .. }) => Some(call_item(&id, &call, "incomplete")),
            None => None,
        };
        self.output.extend(partial);
        self.emit(
            out,
            "error",
            json!({"code": code, "message": message, "param": param}),
        );
        let mut r = self.head.clone();
        r.insert("status".into(), json!("failed"));
        r.insert("error".into(), json!({"code": code, "message": message}));
        r.insert("output_text".into(), json!(output_text(&self.output)));
        r.insert("output".into(), Value::Array(self.output.clone()));
        r.insert("usage".into(), self.usage.clone());
        self.emit(out, "response.failed", json!({ "response": r }));
        self.phase = Phase::Closed;
    }

    /// The x402 receipt after chat's `[DONE]`: `data: [DONE]`, then `event: x402-receipt`.
    fn receipt(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Ok(Value::Object(mut receipt)) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        receipt.remove("object");
        receipt.remove("choices");
        receipt.insert("type".into(), json!("x402.receipt"));
        out.extend_from_slice(b"data: [DONE]\n\nevent: x402-receipt\ndata: ");
        out.extend_from_slice(&serde_json::to_vec(&receipt).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
        self.phase = Phase::Closed;
    }
}
