//! `parse_chat` with tools: tool-call history into turns, the prompt bound, and the 400s.

use super::*;
use crate::error::RequestError as E;

fn parse(s: &str) -> Result<ChatRequest, RequestError> {
    parse_chat(s.as_bytes())
}

#[test]
fn tool_history_becomes_turns_and_counts_in_the_bound() {
    use crate::upstream::Part;
    let body = r#"{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
        "messages":[{"role":"user","content":"go"},
        {"role":"assistant","content":"ok","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}},
            {"id":"b","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"b","content":"2"},{"role":"tool","tool_call_id":"a","content":"one"},
        {"role":"user","content":"and?"}]}"#;
    let r = parse(body).unwrap();
    assert_eq!(r.messages[3].tool_name.as_deref(), Some("f"));
    let m = ModelPrice::new(
        "m".into(),
        "gemini-2.5-flash".into(),
        vec![],
        300_000,
        2_500_000,
        None,
        1_200_000,
        1,
        65_536,
    );
    let call = r.to_call(&m, 1024);
    assert_eq!(
        call.turns.len(),
        4,
        "the two tool results share one user turn"
    );
    assert_eq!(call.turns[1].role, Role::Model);
    assert!(matches!(
        &call.turns[1].parts[..],
        [Part::Text(_), Part::Call(_), Part::Call(_)]
    ));
    assert_eq!(call.turns[2].role, Role::User);
    assert!(
        matches!(&call.turns[2].parts[..], [Part::Result(a), Part::Result(b)]
        if a.response == serde_json::json!({"result":2}) && b.response == serde_json::json!({"result":"one"}))
    );
    assert_eq!(call.tools.functions[0].name, "f");
    // Bound: text + 16 per message, call name + arguments, tool names, declarations.
    let text = 2 + 2 + 1 + 3 + 4 + 5 * 16;
    let calls = (1 + r#"{"x":1}"#.len()) + (1 + 2) + 1 + 1;
    let decls = 1 + r#"{"type":"object"}"#.len() + 16;
    assert_eq!(r.prompt_token_bound(), (text + calls + decls) as u64);
}

#[test]
fn tool_errors_are_400s_with_paths() {
    for (body, want) in [
        (
            r#"{"messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"zz","content":"r"}]}"#,
            "messages[1].tool_call_id",
        ),
        (
            r#"{"messages":[{"role":"tool","tool_call_id":"a","content":"r"},{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f"}}]},{"role":"user","content":"x"}]}"#,
            "messages[0].tool_call_id",
        ),
    ] {
        match parse(body) {
            Err(E::Tool { param, .. }) => assert_eq!(param, want, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    assert!(matches!(
        parse(
            r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]}"#
        ),
        Err(E::Schema { .. })
    ));
}
