//! The simulator's agent features: function declarations, calling modes, deterministic
//! `functionCall` answers, `functionResponse` turns, thought signatures and the turn-order 400s.
//!
//! Rules (reference: `shared/reference/gemini-openai-wire.md` §1.2, §1.4, §1.5, §3; Google's
//! thought-signature page, ai.google.dev/gemini-api/docs/thought-signatures; messages as
//! reported in public issue threads):
//! - Declarations come from `tools[].functionDeclarations` (or `function_declarations`), each with
//!   `parameters` (OpenAPI subset) or `parametersJsonSchema`. A name that is empty, does not start
//!   with a letter or `_`, has a character outside `a-z A-Z 0-9 _ . : -`, or is longer than 64 is
//!   refused with Gemini's `Invalid function name` 400, one `*` line per bad declaration.
//! - `parameters` is the protobuf `Schema` message (OpenAPI subset), which has no `$schema`
//!   field: a root `$schema` there is Gemini's payload 400 `Invalid JSON payload received. Unknown
//!   name "$schema" at 'tools[0].function_declarations[0].parameters': Cannot find field.`, one
//!   line per declaration, before anything else is checked (as reported from Gemini in public
//!   issue threads). `parametersJsonSchema` takes JSON Schema and is not refused for it (no report
//!   of Gemini refusing it there; the gateway strips it anyway).
//! - `toolConfig.functionCallingConfig.mode`: `NONE` never calls; `ANY` always calls (Google:
//!   "the model is constrained to always predicting a function call"), even right after a
//!   `functionResponse`; `AUTO`, `VALIDATED` or absent call only what the user asked for (below).
//!   `allowedFunctionNames` restricts the candidates in every mode.
//! - What is called: every allowed declaration whose name the last user turn with text mentions
//!   (case-insensitive substring), in declaration order, one `functionCall` part each (parallel
//!   calls); under `ANY` with no mention, the first allowed declaration. `args` satisfy the
//!   declaration's schema (`schema.rs`). The finish reason stays `STOP`: Gemini has no tool-call
//!   finish reason (§1.5).
//! - A request whose last content is a `user` turn of `functionResponse` parts is answered (unless
//!   the mode is `ANY`) with text quoting each result: `The tool NAME returned {compact JSON}.`, so
//!   agent loops end.
//! - Turn order, as Gemini enforces it: a `functionResponse` turn must follow a `model` turn with
//!   `functionCall` parts ("Please ensure that function response turn comes immediately after a
//!   function call turn."), with as many response parts as call parts ("Please ensure that the
//!   number of function response parts is equal to the number of function call parts of the
//!   function call turn."); a `functionCall` turn must follow a `user` turn ("Please ensure that
//!   function call turn comes immediately after a user turn or after a function response turn.").
//!   A response naming no call of that turn is also a 400 (the simulator's own, stricter rule:
//!   the message is not one seen from Google).
//! - Thought signatures, models whose id starts `gemini-3`: the first `functionCall` part of an
//!   answer carries `thoughtSignature` (parallel calls: only the first, as Google documents), an
//!   opaque base64 string derived from that call's name and args. On a later request the *current
//!   turn* is validated, as Google describes it: from the last `user` content with standard
//!   content (text or media, not `functionResponse`) onwards, the first `functionCall` part of
//!   every `model` content must carry its signature, else 400 INVALID_ARGUMENT "Function call is
//!   missing a thought_signature in functionCall parts. … function call `default_api:NAME` ,
//!   position N. …" (N = the content's 1-based position in `contents`, which is what the reported
//!   "position 2" of a user/model/user history gives). A signature that is neither the one the
//!   simulator issued for that call nor one of Google's documented dummy values
//!   (`skip_thought_signature_validator`, `context_engineering_is_the_way_to_go`) is a 400
//!   "Corrupted thought signature." Earlier turns are not validated. 2.x models neither issue nor
//!   check signatures.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::schema::{self, canonical, fnv};
use super::{field, parts};

/// Signatures Google documents as accepted in place of a lost one.
pub(super) const DUMMY_SIGNATURES: &[&str] = &[
    "skip_thought_signature_validator",
    "context_engineering_is_the_way_to_go",
];

pub(super) struct Decl<'a> {
    pub name: &'a str,
    schema: Option<&'a Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    Any,
    None,
}

/// The declared functions, or the 400 message for bad names.
pub(super) fn declarations(body: &Value) -> Result<Vec<Decl<'_>>, String> {
    let mut out = Vec::new();
    let mut bad = String::new();
    let mut payload = Vec::new();
    let tools = body.get("tools").and_then(Value::as_array);
    for (i, tool) in tools.into_iter().flatten().enumerate() {
        let decls =
            field(tool, "functionDeclarations", "function_declarations").and_then(Value::as_array);
        for (j, d) in decls.into_iter().flatten().enumerate() {
            if d.get("parameters")
                .is_some_and(|p| p.get("$schema").is_some())
            {
                payload.push(format!(
                    "Invalid JSON payload received. Unknown name \"$schema\" at 'tools[{i}].function_declarations[{j}].parameters': Cannot find field."
                ));
            }
            let name = d.get("name").and_then(Value::as_str).unwrap_or("");
            if !valid_name(name) {
                bad.push_str(&format!(
                    "* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n"
                ));
                continue;
            }
            let schema = field(d, "parametersJsonSchema", "parameters_json_schema")
                .or_else(|| d.get("parameters"));
            out.push(Decl { name, schema });
        }
    }
    if !payload.is_empty() {
        return Err(payload.join("\n"));
    }
    if bad.is_empty() { Ok(out) } else { Err(bad) }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 64
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

fn mode(body: &Value) -> (Mode, Option<Vec<&str>>) {
    let cfg = field(body, "toolConfig", "tool_config")
        .and_then(|t| field(t, "functionCallingConfig", "function_calling_config"));
    let mode = match cfg.and_then(|c| c.get("mode")).and_then(Value::as_str) {
        Some(m) if m.eq_ignore_ascii_case("NONE") => Mode::None,
        Some(m) if m.eq_ignore_ascii_case("ANY") => Mode::Any,
        _ => Mode::Auto,
    };
    let allowed = cfg
        .and_then(|c| field(c, "allowedFunctionNames", "allowed_function_names"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    (mode, allowed)
}

fn has_function_call(c: &Value) -> bool {
    parts(c).any(|p| function_call(p).is_some())
}

fn function_call(p: &Value) -> Option<&Value> {
    field(p, "functionCall", "function_call")
}

fn function_response(p: &Value) -> Option<&Value> {
    field(p, "functionResponse", "function_response")
}

fn role(c: &Value) -> &str {
    c.get("role").and_then(Value::as_str).unwrap_or("user")
}

/// A user content with standard content (anything but `functionResponse` parts).
fn is_standard_user(c: &Value) -> bool {
    role(c) != "model" && parts(c).any(|p| function_response(p).is_none())
}

fn is_response_turn(c: &Value) -> bool {
    role(c) != "model" && parts(c).any(|p| function_response(p).is_some())
}

/// Checks the order of call and response turns; the error is a Gemini 400 message.
pub(super) fn check_turns(contents: &[Value]) -> Result<(), String> {
    for (i, c) in contents.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &contents[p]);
        if role(c) == "model" && has_function_call(c) && prev.is_none_or(|p| role(p) == "model") {
            return Err("Please ensure that function call turn comes immediately after a user turn or after a function response turn.".into());
        }
        if !is_response_turn(c) {
            continue;
        }
        let Some(call_turn) = prev.filter(|p| role(p) == "model" && has_function_call(p)) else {
            return Err("Please ensure that function response turn comes immediately after a function call turn.".into());
        };
        let calls: Vec<&str> = parts(call_turn)
            .filter_map(function_call)
            .map(|f| f.get("name").and_then(Value::as_str).unwrap_or(""))
            .collect();
        let responses: Vec<&Value> = parts(c).filter_map(function_response).collect();
        if calls.len() != responses.len() {
            return Err("Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.".into());
        }
        for (j, r) in responses.iter().enumerate() {
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            if !calls.contains(&name) {
                return Err(format!(
                    "* GenerateContentRequest.contents[{i}].parts[{j}].function_response.name: `{name}` names no function call of the function call turn."
                ));
            }
        }
    }
    Ok(())
}

/// Whether this model issues and checks thought signatures.
pub(super) fn signs(model: &str) -> bool {
    model.starts_with("gemini-3")
}

/// The signature the simulator issues for a call: base64 of a tag and a hash of name and args.
pub(super) fn signature(call: &Value) -> String {
    let name = call.get("name").and_then(Value::as_str).unwrap_or("");
    let args = call.get("args").map(canonical).unwrap_or_default();
    let h = fnv(format!("{name}\u{0}{args}").as_bytes());
    STANDARD.encode(format!("vwsim-sig:{h:016x}"))
}

/// Validates the current turn's signatures (3.x models); the error is a Gemini 400 message.
pub(super) fn check_signatures(contents: &[Value]) -> Result<(), String> {
    let start = contents
        .iter()
        .rposition(is_standard_user)
        .map_or(0, |i| i + 1);
    for (i, c) in contents.iter().enumerate().skip(start) {
        if role(c) != "model" {
            continue;
        }
        let Some(part) = parts(c).find(|p| function_call(p).is_some()) else {
            continue;
        };
        let call = function_call(part).unwrap_or(&Value::Null);
        let name = call.get("name").and_then(Value::as_str).unwrap_or("");
        match field(part, "thoughtSignature", "thought_signature").and_then(Value::as_str) {
            None | Some("") => {
                return Err(format!(
                    "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position {}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                    i + 1
                ));
            }
            Some(s) if DUMMY_SIGNATURES.contains(&s) || s == signature(call) => {}
            Some(_) => return Err("Corrupted thought signature.".into()),
        }
    }
    Ok(())
}

/// The text of the last user content that has text (the prompt the rules read).
pub(super) fn last_user_text(contents: &[Value]) -> String {
    contents
        .iter()
        .rev()
        .filter(|c| role(c) != "model")
        .find_map(|c| {
            let t: Vec<&str> = parts(c)
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!t.is_empty()).then(|| t.join(" "))
        })
        .unwrap_or_default()
}

/// The words of a prompt that can fill a string (function names left out).
pub(super) fn prompt_words(text: &str, decls: &[Decl<'_>]) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.len() >= 2)
        .filter(|w| !decls.iter().any(|d| d.name.eq_ignore_ascii_case(w)))
        .map(str::to_string)
        .collect()
}

/// What the candidate answers when tools are in play.
pub(super) enum ToolAnswer {
    /// `functionCall` parts (the first signed when the model signs).
    Calls(Vec<Value>),
    /// Text derived from the tool results of the last turn.
    FromResults(String),
}

/// Decides the tool answer for candidate `index`, if any.
pub(super) fn answer(
    body: &Value,
    contents: &[Value],
    decls: &[Decl<'_>],
    sign: bool,
    index: u64,
) -> Option<ToolAnswer> {
    let (mode, allowed) = mode(body);
    let last = contents.last()?;
    if is_response_turn(last) && mode != Mode::Any {
        let text: Vec<String> = parts(last)
            .filter_map(function_response)
            .map(|r| {
                let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                let result = r.get("response").map(canonical).unwrap_or_default();
                format!("The tool {name} returned {result}.")
            })
            .collect();
        return Some(ToolAnswer::FromResults(text.join(" ")));
    }
    if mode == Mode::None {
        return None;
    }
    let usable: Vec<&Decl<'_>> = decls
        .iter()
        .filter(|d| allowed.as_ref().is_none_or(|a| a.contains(&d.name)))
        .collect();
    let prompt = last_user_text(contents);
    let lower = prompt.to_lowercase();
    let mut chosen: Vec<&Decl<'_>> = usable
        .iter()
        .copied()
        .filter(|d| lower.contains(&d.name.to_lowercase()))
        .collect();
    if chosen.is_empty() && mode == Mode::Any {
        chosen.extend(usable.first().copied());
    }
    if chosen.is_empty() {
        return None;
    }
    let words = prompt_words(&prompt, decls);
    let calls = chosen
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let args = match d.schema {
                Some(s) => schema::generate(s, s, &words, index),
                None => json!({}),
            };
            let call = json!({"name": d.name, "args": args});
            let sig = (sign && k == 0).then(|| signature(&call));
            let mut part = json!({ "functionCall": call });
            if let Some(sig) = sig {
                part["thoughtSignature"] = json!(sig);
            }
            part
        })
        .collect();
    Some(ToolAnswer::Calls(calls))
}
