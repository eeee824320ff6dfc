//! A Responses request → a Chat Completions request body (pure, fuzzable).
//!
//! `instructions` becomes the first system message; `input` (a string, or items) becomes the
//! messages: `message` items keep their role (`developer` and `system` alike), their content
//! parts map 1:1 (`input_text`/`output_text`/`refusal` → `text`, `input_image` → `image_url`,
//! `input_file` with `file_data` → `file`, `input_audio` → `input_audio`); `function_call` items
//! join the assistant message before them (or start one) as `tool_calls`, with their
//! `extra_content` (the thought signature); `function_call_output` items become `tool` messages;
//! `reasoning` items are accepted and dropped (Gemini's reasoning state is the signature).
//! Flat function tools get chat's nesting, `text.format` becomes `response_format`,
//! `reasoning.effort` `reasoning_effort`, `max_output_tokens` `max_completion_tokens`; a stream
//! asks for the usage chunk. The Vectorway fields (`models`, memory) pass through, and the chat
//! parser validates all of it: its errors are renamed to Responses paths by `Translated::remap`.
//!
//! Refused here, with a 400 naming the path: tool types other than `function` (`invalid_tool`:
//! no hosted tools), and what a stateless gateway cannot honour (`unsupported_parameter`):
//! `previous_response_id`, `conversation`, `prompt`, `background`, `item_reference` items, file
//! ids and URLs, `top_logprobs`. Unknown fields are ignored, as on chat. `store` and `include`
//! are accepted; nothing is stored and nothing extra is included.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Echo;
use crate::error::RequestError;

#[derive(Debug, Deserialize)]
struct RawRequest {
    model: Option<Value>,
    models: Option<Value>,
    input: Option<RawInput>,
    instructions: Option<String>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<Value>,
    // Maps, not structs: serde would read a struct from an array too.
    text: Option<Map<String, Value>>,
    reasoning: Option<Map<String, Value>>,
    max_output_tokens: Option<Value>,
    temperature: Option<Value>,
    top_p: Option<Value>,
    stream: Option<bool>,
    // Accepted; a Response always says `store: false` (nothing is stored).
    #[expect(
        dead_code,
        reason = "read for its type only: a non-boolean store is a 422"
    )]
    store: Option<bool>,
    previous_response_id: Option<Value>,
    conversation: Option<Value>,
    prompt: Option<Value>,
    background: Option<bool>,
    #[expect(
        dead_code,
        reason = "read for its type only: include adds nothing here"
    )]
    include: Option<Vec<String>>,
    metadata: Option<Map<String, Value>>,
    user: Option<String>,
    service_tier: Option<Value>,
    truncation: Option<String>,
    top_logprobs: Option<Value>,
    memory_read: Option<Value>,
    memory_write: Option<Value>,
    memory_write_mode: Option<Value>,
    memory_max_chars: Option<Value>,
    k: Option<Value>,
    memory_namespace: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawInput {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Debug, Deserialize)]
struct MessageItem {
    role: String,
    content: Option<RawContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawContent {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Debug, Deserialize)]
struct CallItem {
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
    extra_content: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OutputItem {
    call_id: Option<String>,
    output: Option<RawContent>,
}

/// Where a chat message came from: its Responses path, and for an assistant message the input
/// index of each of its tool calls.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    path: String,
    calls: Vec<usize>,
}

/// A translated request: the chat body, what the Response repeats, and the path map.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The Chat Completions request body.
    pub chat: Vec<u8>,
    pub echo: Echo,
    origins: Vec<Origin>,
}

fn invalid(param: &'static str, msg: impl Into<String>) -> RequestError {
    RequestError::validation(param, msg)
}

fn unsupported(param: impl Into<String>, msg: impl Into<String>) -> RequestError {
    RequestError::Unsupported {
        param: param.into(),
        message: msg.into(),
    }
}

/// Parses a Responses request and translates it; syntax errors are 400 `invalid_json`, shape
/// errors 422 naming the field, what cannot be carried 400.
pub fn translate(body: &[u8]) -> Result<Translated, RequestError> {
    let mut buf = body.to_vec();
    let raw: RawRequest = simd_json::serde::from_slice(&mut buf).map_err(|e| {
        // As `parse_chat`: nesting past the depth limit is a property of the JSON text.
        if e.is_data() && *e.error() != simd_json::ErrorType::DepthLimitExceeded {
            invalid(
                "body",
                format!("request body does not match the Responses schema: {e}"),
            )
        } else {
            RequestError::InvalidJson(e.to_string())
        }
    })?;
    build(raw)
}

fn build(raw: RawRequest) -> Result<Translated, RequestError> {
    for (param, given) in [
        ("previous_response_id", &raw.previous_response_id),
        ("conversation", &raw.conversation),
        ("prompt", &raw.prompt),
    ] {
        if given.is_some() {
            return Err(unsupported(
                param,
                format!(
                    "{param} needs stored state, and vectorway's Responses API is stateless: send the whole conversation in input"
                ),
            ));
        }
    }
    if raw.background == Some(true) {
        return Err(unsupported(
            "background",
            "background responses need stored state; vectorway's Responses API is stateless",
        ));
    }
    if raw
        .top_logprobs
        .as_ref()
        .is_some_and(|v| v.as_u64() != Some(0))
    {
        return Err(unsupported(
            "top_logprobs",
            "top_logprobs is not supported on /v1/responses",
        ));
    }
    let truncation = match raw.truncation.as_deref() {
        None | Some("disabled") => "disabled",
        Some("auto") => "auto",
        Some(other) => {
            return Err(invalid(
                "truncation",
                format!("truncation '{other}': want auto|disabled"),
            ));
        }
    };
    let mut chat = Map::new();
    let mut echo = Map::new();
    let (messages, origins) = messages(raw.instructions.as_deref(), raw.input)?;
    chat.insert("messages".into(), Value::Array(messages));
    echo.insert("instructions".into(), json!(raw.instructions));
    let (tools, echoed) = tools(raw.tools.unwrap_or_default())?;
    if !tools.is_empty() {
        chat.insert("tools".into(), Value::Array(tools));
    }
    echo.insert("tools".into(), Value::Array(echoed));
    if let Some(choice) = &raw.tool_choice {
        chat.insert("tool_choice".into(), tool_choice(choice)?);
    }
    echo.insert(
        "tool_choice".into(),
        raw.tool_choice.unwrap_or_else(|| json!("auto")),
    );
    let text = raw.text.unwrap_or_default();
    let format = match text.get("format").filter(|f| !f.is_null()) {
        Some(Value::Object(f)) => {
            chat.insert("response_format".into(), response_format(f)?);
            Value::Object(f.clone())
        }
        Some(_) => return Err(invalid("text.format", "text.format must be an object")),
        None => json!({"type": "text"}),
    };
    let mut echoed = json!({ "format": format });
    if let Some(v) = text.get("verbosity").filter(|v| !v.is_null()) {
        echoed["verbosity"] = v.clone();
    }
    echo.insert("text".into(), echoed);
    let effort = match raw.reasoning.as_ref().and_then(|r| r.get("effort")) {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => Some(e.clone()),
        Some(_) => {
            return Err(invalid(
                "reasoning.effort",
                "reasoning.effort must be a string: none|minimal|low|medium|high",
            ));
        }
    };
    if let Some(e) = &effort {
        chat.insert("reasoning_effort".into(), json!(e));
    }
    echo.insert(
        "reasoning".into(),
        json!({"effort": effort, "summary": null}),
    );
    let stream = raw.stream.unwrap_or(false);
    chat.insert("stream".into(), json!(stream));
    if stream {
        // The usage chunk carries what the terminal event reports.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for (chat_name, echo_name, v, default) in [
        (
            "max_completion_tokens",
            "max_output_tokens",
            raw.max_output_tokens,
            Value::Null,
        ),
        ("temperature", "temperature", raw.temperature, Value::Null),
        ("top_p", "top_p", raw.top_p, Value::Null),
        (
            "parallel_tool_calls",
            "parallel_tool_calls",
            raw.parallel_tool_calls,
            json!(true),
        ),
        ("user", "user", raw.user.map(Value::String), Value::Null),
    ] {
        if let Some(v) = &v {
            chat.insert(chat_name.into(), v.clone());
        }
        echo.insert(echo_name.into(), v.unwrap_or(default));
    }
    let metadata = raw.metadata.unwrap_or_default();
    // OpenAI's limits: 16 pairs, keys up to 64 characters, string values up to 512.
    if metadata.len() > 16
        || metadata.iter().any(|(k, v)| {
            k.chars().count() > 64 || v.as_str().is_none_or(|v| v.chars().count() > 512)
        })
    {
        return Err(invalid(
            "metadata",
            "metadata holds at most 16 pairs of keys up to 64 characters and string values up to 512",
        ));
    }
    if !metadata.is_empty() {
        chat.insert("metadata".into(), Value::Object(metadata.clone()));
    }
    echo.insert("metadata".into(), Value::Object(metadata));
    echo.insert("truncation".into(), json!(truncation));
    for (name, v) in [
        ("model", raw.model),
        ("models", raw.models),
        ("service_tier", raw.service_tier),
        ("memory_read", raw.memory_read),
        ("memory_write", raw.memory_write),
        ("memory_write_mode", raw.memory_write_mode),
        ("memory_max_chars", raw.memory_max_chars),
        ("k", raw.k),
        ("memory_namespace", raw.memory_namespace),
    ] {
        if let Some(v) = v {
            chat.insert(name.into(), v);
        }
    }
    Ok(Translated {
        // A map of JSON values: serializing cannot fail.
        chat: serde_json::to_vec(&Value::Object(chat)).unwrap_or_default(),
        echo: Echo {
            stream,
            fields: echo,
        },
        origins,
    })
}

/// `instructions` and `input` → chat messages, with where each came from.
fn messages(
    instructions: Option<&str>,
    input: Option<RawInput>,
) -> Result<(Vec<Value>, Vec<Origin>), RequestError> {
    let mut out = Vec::new();
    let mut origins = Vec::new();
    let origin = |path: String| Origin {
        path,
        calls: Vec::new(),
    };
    if let Some(text) = instructions {
        out.push(json!({"role": "system", "content": text}));
        origins.push(origin("instructions".into()));
    }
    let items = match input {
        None => return Err(invalid("input", "input is required")),
        Some(RawInput::Text(text)) => {
            out.push(json!({"role": "user", "content": text}));
            origins.push(origin("input".into()));
            return Ok((out, origins));
        }
        Some(RawInput::Items(items)) => items,
    };
    let shape = |i: usize, e: serde_json::Error| invalid("input", format!("input[{i}]: {e}"));
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = match item.get("type") {
            Some(Value::String(t)) => t.clone(),
            None | Some(Value::Null) if item.get("role").is_some() => "message".into(),
            _ => {
                return Err(invalid(
                    "input",
                    format!("{at}: an input item needs a type"),
                ));
            }
        };
        match kind.as_str() {
            "message" => {
                let m: MessageItem = serde_json::from_value(item).map_err(|e| shape(i, e))?;
                if !matches!(
                    m.role.as_str(),
                    "user" | "system" | "developer" | "assistant"
                ) {
                    return Err(invalid(
                        "input",
                        format!(
                            "{at}.role '{}': want user|system|developer|assistant",
                            m.role
                        ),
                    ));
                }
                let content = match m.content {
                    None => Value::String(String::new()),
                    Some(RawContent::Text(t)) => Value::String(t),
                    Some(RawContent::Parts(parts)) => Value::Array(
                        parts
                            .iter()
                            .enumerate()
                            .map(|(j, p)| part(p, &format!("{at}.content[{j}]")))
                            .collect::<Result<_, _>>()?,
                    ),
                };
                out.push(json!({"role": m.role, "content": content}));
                origins.push(origin(at));
            }
            "function_call" => {
                let c: CallItem = serde_json::from_value(item).map_err(|e| shape(i, e))?;
                let mut call = json!({"id": c.call_id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments.unwrap_or_default()}});
                if let Some(extra) = c.extra_content {
                    call["extra_content"] = extra;
                }
                // Calls of one step join the assistant message before them: one model turn.
                let joins = out.last().is_some_and(|m| m["role"] == "assistant");
                match (out.last_mut(), origins.last_mut()) {
                    (Some(m), Some(o)) if joins => {
                        match m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                            Some(calls) => calls.push(call),
                            None => m["tool_calls"] = json!([call]),
                        }
                        o.calls.push(i);
                    }
                    _ => {
                        out.push(
                            json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                        );
                        origins.push(Origin {
                            path: at,
                            calls: vec![i],
                        });
                    }
                }
            }
            "function_call_output" => {
                let o: OutputItem = serde_json::from_value(item).map_err(|e| shape(i, e))?;
                let content = match o.output {
                    None => String::new(),
                    Some(RawContent::Text(t)) => t,
                    Some(RawContent::Parts(parts)) => tool_output_text(&parts, &at)?,
                };
                out.push(json!({"role": "tool", "tool_call_id": o.call_id, "content": content}));
                origins.push(origin(at));
            }
            // Another provider's (or OpenAI's) reasoning: nothing Gemini can read.
            "reasoning" => {}
            "item_reference" => {
                return Err(unsupported(
                    format!("{at}.type"),
                    "item_reference needs stored items, and vectorway's Responses API is stateless: send the item itself",
                ));
            }
            other => {
                return Err(unsupported(
                    format!("{at}.type"),
                    format!(
                        "input item type '{other}' is not supported: send message, function_call, function_call_output or reasoning items"
                    ),
                ));
            }
        }
    }
    Ok((out, origins))
}

/// A message content part → the chat part it stands for.
fn part(p: &Value, at: &str) -> Result<Value, RequestError> {
    let field = |name: &str| p.get(name).filter(|v| !v.is_null());
    match p.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": field("text")}))
        }
        Some("refusal") => Ok(json!({"type": "text", "text": field("refusal")})),
        Some("input_image") => {
            if let Some(url) = field("image_url") {
                let mut image = json!({ "url": url });
                if let Some(d) = field("detail") {
                    image["detail"] = d.clone();
                }
                Ok(json!({"type": "image_url", "image_url": image}))
            } else if field("file_id").is_some() {
                Err(unsupported(
                    format!("{at}.file_id"),
                    "file ids need the Files API, which vectorway does not have: send image_url (a data: or https: URL)",
                ))
            } else {
                Err(invalid(
                    "input",
                    format!("{at}: input_image needs image_url"),
                ))
            }
        }
        Some("input_file") => {
            for name in ["file_id", "file_url"] {
                if field(name).is_some() {
                    return Err(unsupported(
                        format!("{at}.{name}"),
                        format!(
                            "input_file.{name} is not supported: send file_data (a base64 data: URL)"
                        ),
                    ));
                }
            }
            let mut file = json!({ "file_data": field("file_data") });
            if let Some(name) = field("filename") {
                file["filename"] = name.clone();
            }
            Ok(json!({"type": "file", "file": file}))
        }
        Some("input_audio") => {
            Ok(json!({"type": "input_audio", "input_audio": field("input_audio")}))
        }
        Some(other) => Err(invalid(
            "input",
            format!("{at}: content type '{other}' is not supported"),
        )),
        None => Err(invalid(
            "input",
            format!("{at}: a content part needs a type"),
        )),
    }
}

/// A `function_call_output` given as parts: its text parts, joined (a tool result is text).
fn tool_output_text(parts: &[Value], at: &str) -> Result<String, RequestError> {
    let mut text = String::new();
    for (j, p) in parts.iter().enumerate() {
        match (p.get("type").and_then(Value::as_str), p.get("text")) {
            (Some("input_text" | "output_text"), Some(Value::String(t))) => text.push_str(t),
            _ => {
                return Err(unsupported(
                    format!("{at}.output[{j}]"),
                    "a function_call_output takes text (a string or input_text parts)",
                ));
            }
        }
    }
    Ok(text)
}

/// Flat Responses function tools → chat tools; and the tools the Response repeats.
fn tools(tools: Vec<Value>) -> Result<(Vec<Value>, Vec<Value>), RequestError> {
    let mut chat = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(RequestError::Tool {
                    param: format!("tools[{i}].type"),
                    message: format!(
                        "tool type '{other}' is not supported: vectorway runs no hosted tools; declare 'function' tools"
                    ),
                });
            }
            None => {
                return Err(RequestError::Tool {
                    param: format!("tools[{i}].type"),
                    message: "a tool needs type 'function'".into(),
                });
            }
        }
        let mut function = Map::new();
        for key in ["name", "description", "parameters", "strict"] {
            if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                function.insert(key.into(), v.clone());
            }
        }
        chat.push(json!({"type": "function", "function": function}));
    }
    Ok((chat, tools))
}

/// Responses `tool_choice` → chat's.
fn tool_choice(choice: &Value) -> Result<Value, RequestError> {
    let Some(obj) = choice.as_object() else {
        // `auto`, `none`, `required` (chat checks the word and its type).
        return Ok(choice.clone());
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("function") => Ok(json!({"type": "function", "function": {"name": obj.get("name")}})),
        Some("allowed_tools") => Err(unsupported(
            "tool_choice.type",
            "tool_choice 'allowed_tools' is not supported: name one function, or use auto|none|required",
        )),
        other => Err(RequestError::Tool {
            param: "tool_choice.type".into(),
            message: format!(
                "tool_choice type '{}' is not supported: only function tools are",
                other.unwrap_or("")
            ),
        }),
    }
}

/// `text.format` → chat `response_format`.
fn response_format(f: &Map<String, Value>) -> Result<Value, RequestError> {
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({"type": "text"})),
        Some("json_object") => Ok(json!({"type": "json_object"})),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "description", "strict"] {
                if let Some(v) = f.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Ok(json!({"type": "json_schema", "json_schema": schema}))
        }
        Some(other) => Err(invalid(
            "text.format",
            format!("text.format type '{other}': want text|json_object|json_schema"),
        )),
        None => Err(invalid("text.format", "text.format needs a type")),
    }
}

impl Translated {
    /// Renames an error of the chat parser or pipeline to the Responses request's paths and
    /// fields (`messages[3].tool_calls[0].function.arguments` → `input[4].arguments`,
    /// `max_completion_tokens` → `max_output_tokens`).
    pub fn remap(&self, e: RequestError) -> RequestError {
        match e {
            RequestError::Validation {
                param: Some(p),
                message,
            } => {
                let to = match p {
                    "messages" => "input",
                    "max_completion_tokens" | "max_tokens" => "max_output_tokens",
                    "reasoning_effort" => "reasoning.effort",
                    "response_format" => "text.format",
                    other => other,
                };
                RequestError::Validation {
                    param: Some(to),
                    message: message.replace(p, to),
                }
            }
            RequestError::Tool { param, message } => RequestError::Tool {
                param: self.path(&param),
                message,
            },
            RequestError::Schema { param, message } => {
                let to = self.path(&param);
                RequestError::Schema {
                    message: message.replace(&param, &to),
                    param: to,
                }
            }
            RequestError::Media {
                fault,
                param,
                message,
            } => RequestError::Media {
                fault,
                param: self.path(&param).replace(".image_url.url", ".image_url"),
                message,
            },
            other => other,
        }
    }

    /// A chat request path → the Responses request path it came from.
    fn path(&self, chat: &str) -> String {
        if let Some(rest) = chat.strip_prefix("tools[") {
            // `tools[i].function.x` → `tools[i].x` (Responses tools are flat).
            return format!("tools[{}", rest.replacen(".function.", ".", 1));
        }
        if chat == "tool_choice.function.name" {
            return "tool_choice.name".into();
        }
        let Some((index, rest)) = chat
            .strip_prefix("messages[")
            .and_then(|r| r.split_once(']'))
        else {
            return chat.to_string();
        };
        let Some(origin) = index
            .parse::<usize>()
            .ok()
            .and_then(|i| self.origins.get(i))
        else {
            return chat.to_string();
        };
        if let Some((call, tail)) = rest
            .strip_prefix(".tool_calls[")
            .and_then(|r| r.split_once(']'))
            && let Some(item) = call.parse::<usize>().ok().and_then(|c| origin.calls.get(c))
        {
            let field = match tail {
                ".id" => ".call_id",
                ".function.name" => ".name",
                ".function.arguments" => ".arguments",
                ".function" => "",
                other => other,
            };
            return format!("input[{item}]{field}");
        }
        let tail = if rest == ".tool_call_id" {
            ".call_id"
        } else {
            rest
        };
        format!("{}{tail}", origin.path)
    }
}
