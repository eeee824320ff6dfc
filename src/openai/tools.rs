//! OpenAI `tools`, `tool_choice` and `parallel_tool_calls` → the neutral `Tools`: pure, fuzzable.
//!
//! Parameters go to Gemini as JSON Schema (`parametersJsonSchema`, reference §1.2), unchanged.
//! What Gemini cannot take is refused with a 400 naming the path: a root that is not an object
//! schema, and what `schema::check` refuses (a subschema that is neither an object nor a boolean,
//! an unknown `type`, a `$ref` that is not local: Gemini fetches nothing). `strict` is accepted and not enforced (Gemini has
//! no such switch).

use serde::Deserialize;
use serde_json::Value;

use super::object;
use super::schema::{self, schema_err};
use crate::error::RequestError;
use crate::upstream::{FunctionDecl, ToolMode, Tools};

#[derive(Debug, Deserialize)]
pub struct RawTool {
    r#type: Option<String>,
    #[serde(default, deserialize_with = "object::opt")]
    function: Option<RawFunction>,
}

object::named!(RawTool => "tools[]", RawFunction => "tools[].function",
               RawNamedChoice => "tool_choice", RawChoiceFunction => "tool_choice.function");

#[derive(Debug, Deserialize)]
struct RawFunction {
    name: Option<String>,
    description: Option<String>,
    parameters: Option<Value>,
    // `strict` is accepted (ignored like any unknown field): Gemini has no such switch.
}

/// `"auto" | "none" | "required" | {"type":"function","function":{"name":…}}`
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawToolChoice {
    Word(String),
    Named(#[serde(deserialize_with = "object::one")] RawNamedChoice),
}

#[derive(Debug, Deserialize)]
pub struct RawNamedChoice {
    r#type: Option<String>,
    #[serde(default, deserialize_with = "object::opt")]
    function: Option<RawChoiceFunction>,
}

#[derive(Debug, Deserialize)]
pub struct RawChoiceFunction {
    name: Option<String>,
}

/// The tool part of a validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    pub tools: Tools,
    /// `parallel_tool_calls` (default true). Gemini has no switch: when false, the gateway keeps
    /// the first call of an answer and drops the rest.
    pub parallel: bool,
    /// Bytes of the declarations + 16 per function: their share of the prompt bound.
    pub bound_bytes: u64,
}

impl Default for ToolSpec {
    fn default() -> Self {
        Self {
            tools: Tools::default(),
            parallel: true,
            bound_bytes: 0,
        }
    }
}

fn tool_err(param: impl Into<String>, message: impl Into<String>) -> RequestError {
    RequestError::Tool {
        param: param.into(),
        message: message.into(),
    }
}

/// Gemini's rule for function names: a letter or `_` first, then letters, digits, `_ . : -`,
/// at most 64 in all.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

/// Validates and translates the tool fields of a chat request.
pub fn parse_tools(
    tools: Option<Vec<RawTool>>,
    choice: Option<RawToolChoice>,
    parallel: Option<bool>,
) -> Result<ToolSpec, RequestError> {
    let mut spec = ToolSpec {
        parallel: parallel.unwrap_or(true),
        ..ToolSpec::default()
    };
    for (i, t) in tools.unwrap_or_default().into_iter().enumerate() {
        let at = format!("tools[{i}]");
        match t.r#type.as_deref() {
            Some("function") => {}
            Some(other) => {
                return Err(tool_err(
                    format!("{at}.type"),
                    format!("tool type '{other}' is not supported; only 'function' tools are"),
                ));
            }
            None => {
                return Err(tool_err(
                    format!("{at}.type"),
                    "a tool needs type 'function'",
                ));
            }
        }
        let f = t
            .function
            .ok_or_else(|| tool_err(format!("{at}.function"), "a function tool needs function"))?;
        let name = f.name.unwrap_or_default();
        if !valid_name(&name) {
            return Err(tool_err(
                format!("{at}.function.name"),
                format!(
                    "function name '{name}' is not valid: 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or '_'"
                ),
            ));
        }
        if spec.tools.functions.iter().any(|d| d.name == name) {
            return Err(tool_err(
                format!("{at}.function.name"),
                format!("function '{name}' is declared twice"),
            ));
        }
        if let Some(p) = &f.parameters {
            check_parameters(p, &format!("{at}.function.parameters"))?;
        }
        spec.bound_bytes += name.len() as u64
            + f.description.as_ref().map_or(0, |d| d.len() as u64)
            + f.parameters
                .as_ref()
                .map_or(0, |p| p.to_string().len() as u64)
            + 16;
        spec.tools.functions.push(FunctionDecl {
            name,
            description: f.description,
            parameters: f.parameters,
        });
    }
    let declared = !spec.tools.functions.is_empty();
    match choice {
        None => {}
        Some(RawToolChoice::Word(w)) => {
            let mode = match w.as_str() {
                "auto" => ToolMode::Auto,
                "none" => ToolMode::None,
                "required" => ToolMode::Any,
                other => {
                    return Err(tool_err(
                        "tool_choice",
                        format!("tool_choice '{other}': want auto|none|required or a function"),
                    ));
                }
            };
            if mode == ToolMode::Any && !declared {
                return Err(tool_err(
                    "tool_choice",
                    "tool_choice 'required' needs tools",
                ));
            }
            // Without tools, `auto` and `none` say nothing Gemini needs to hear.
            spec.tools.mode = declared.then_some(mode);
        }
        Some(RawToolChoice::Named(RawNamedChoice { r#type, function })) => {
            if r#type.as_deref() != Some("function") {
                return Err(tool_err(
                    "tool_choice.type",
                    "tool_choice type must be 'function'",
                ));
            }
            let name = function.and_then(|f| f.name).unwrap_or_default();
            if !spec.tools.functions.iter().any(|d| d.name == name) {
                return Err(tool_err(
                    "tool_choice.function.name",
                    format!("tool_choice names '{name}', which tools does not declare"),
                ));
            }
            spec.tools.mode = Some(ToolMode::Any);
            spec.tools.allowed = vec![name];
        }
    }
    Ok(spec)
}

/// A function's parameters: an object schema Gemini can take.
pub fn check_parameters(p: &Value, path: &str) -> Result<(), RequestError> {
    let Value::Object(map) = p else {
        return Err(schema_err(path, "parameters must be a JSON Schema object"));
    };
    match map.get("type") {
        None => {}
        Some(Value::String(t)) if t == "object" => {}
        Some(_) => {
            return Err(schema_err(
                &format!("{path}.type"),
                "the parameters schema must describe an object (type 'object')",
            ));
        }
    }
    schema::check(p, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(tools: Value, choice: Option<Value>) -> Result<ToolSpec, RequestError> {
        parse_tools(
            serde_json::from_value(tools).unwrap(),
            choice.map(|c| serde_json::from_value(c).unwrap()),
            None,
        )
    }

    fn weather() -> Value {
        json!([{"type":"function","function":{"name":"get_weather","description":"Weather in a city",
            "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}}])
    }

    fn param_of(r: Result<ToolSpec, RequestError>) -> (String, &'static str) {
        match r {
            Err(RequestError::Schema { param, .. }) => (param, "schema"),
            Err(RequestError::Tool { param, .. }) => (param, "tool"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn declarations_translate_and_count() {
        let spec = parse(weather(), None).unwrap();
        let f = &spec.tools.functions[0];
        assert_eq!(f.name, "get_weather");
        assert_eq!(f.description.as_deref(), Some("Weather in a city"));
        assert_eq!(f.parameters.as_ref().unwrap()["required"][0], "city");
        assert_eq!(spec.tools.mode, None, "no tool_choice: Gemini's default");
        assert!(spec.parallel);
        let schema_len = f.parameters.as_ref().unwrap().to_string().len() as u64;
        assert_eq!(
            spec.bound_bytes,
            "get_weather".len() as u64 + "Weather in a city".len() as u64 + schema_len + 16
        );
    }

    #[test]
    fn tool_choice_variants() {
        let mode = |c: Value| parse(weather(), Some(c)).unwrap().tools;
        assert_eq!(mode(json!("auto")).mode, Some(ToolMode::Auto));
        assert_eq!(mode(json!("none")).mode, Some(ToolMode::None));
        assert_eq!(mode(json!("required")).mode, Some(ToolMode::Any));
        let named = mode(json!({"type":"function","function":{"name":"get_weather"}}));
        assert_eq!(
            (named.mode, named.allowed),
            (Some(ToolMode::Any), vec!["get_weather".to_string()])
        );
        // Without tools, auto and none are no-ops; required and a name are refused.
        assert_eq!(
            parse(json!([]), Some(json!("none"))).unwrap().tools.mode,
            None
        );
        assert_eq!(
            param_of(parse(json!([]), Some(json!("required")))),
            ("tool_choice".into(), "tool")
        );
        assert_eq!(
            param_of(parse(
                weather(),
                Some(json!({"type":"function","function":{"name":"nope"}}))
            )),
            ("tool_choice.function.name".into(), "tool")
        );
        assert_eq!(
            param_of(parse(weather(), Some(json!("sometimes")))),
            ("tool_choice".into(), "tool")
        );
    }

    #[test]
    fn parallel_false_is_kept() {
        let spec = parse_tools(
            serde_json::from_value(weather()).unwrap(),
            None,
            Some(false),
        )
        .unwrap();
        assert!(!spec.parallel);
    }

    #[test]
    fn refusals_name_the_path() {
        let f = |params: Value| json!([{"type":"function","function":{"name":"f","parameters":params}}]);
        for (tools, want) in [
            (
                json!([{"type":"custom","custom":{"name":"x"}}]),
                ("tools[0].type", "tool"),
            ),
            (
                json!([{"type":"function","function":{"name":"has space"}}]),
                ("tools[0].function.name", "tool"),
            ),
            (
                json!([{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"a"}}]),
                ("tools[1].function.name", "tool"),
            ),
            (
                f(json!("string")),
                ("tools[0].function.parameters", "schema"),
            ),
            (
                f(json!({"type":"array","items":{"type":"string"}})),
                ("tools[0].function.parameters.type", "schema"),
            ),
            (
                f(json!({"type":"object","properties":{"city":{"type":"text"}}})),
                (
                    "tools[0].function.parameters.properties.city.type",
                    "schema",
                ),
            ),
            (
                f(json!({"type":"object","properties":{"n":5}})),
                ("tools[0].function.parameters.properties.n", "schema"),
            ),
            (
                f(
                    json!({"type":"object","properties":{"a":{"$ref":"https://example.com/s.json"}}}),
                ),
                ("tools[0].function.parameters.properties.a.$ref", "schema"),
            ),
            (
                f(json!({"type":"object","properties":{"a":{"anyOf":[{"type":"string"},3]}}})),
                (
                    "tools[0].function.parameters.properties.a.anyOf[1]",
                    "schema",
                ),
            ),
            (
                f(json!({"type":"object","required":"a"})),
                ("tools[0].function.parameters.required", "schema"),
            ),
        ] {
            let got = param_of(parse(tools.clone(), None));
            assert_eq!((got.0.as_str(), got.1), want, "{tools}");
        }
    }

    #[test]
    fn expressible_schemas_pass_unchanged() {
        let params = json!({"type":"object","properties":{
            "when":{"type":["string","null"],"format":"date-time"},
            "tags":{"type":"array","items":{"$ref":"#/$defs/tag"},"maxItems":3},
            "any":{"anyOf":[{"type":"integer","minimum":0},true]}},
            "$defs":{"tag":{"type":"string","enum":["a","b"]}},"additionalProperties":false});
        let spec = parse(
            json!([{"type":"function","function":{"name":"ns.tool:v1-x","parameters":params.clone()}}]),
            None,
        )
        .unwrap();
        assert_eq!(spec.tools.functions[0].parameters.as_ref(), Some(&params));
        assert!(valid_name("_x") && !valid_name("1x") && !valid_name(&"a".repeat(65)));
    }
}
