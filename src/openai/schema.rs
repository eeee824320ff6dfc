//! JSON Schema for Gemini, pure and fuzzable: the structural check shared by tool parameters and
//! structured outputs, and the conversion of a `response_format` schema to `responseJsonSchema`.
//!
//! `check` (tools and response formats): every subschema is an object or a boolean, `type` is a
//! JSON Schema type (or a list of them), `$ref` is local (`#…`: Gemini fetches nothing),
//! `required` lists names, `enum` is a list, and subschemas nest at most `MAX_DEPTH` (64) levels.
//! Anything else is a 400 `invalid_schema` whose `param` is the JSON path of the offending value.
//!
//! `response_schema` (structured outputs) then fits the schema to what Gemini's
//! `responseJsonSchema` enforces, which is a subset of JSON Schema (Google's field documentation:
//! `$id`, `$defs`, `$ref`, `$anchor`, `type`, `format`, `title`, `description`, `enum` of
//! strings and numbers, `items`, `prefixItems`, `minItems`, `maxItems`, `minimum`, `maximum`,
//! `anyOf`, `oneOf` read as `anyOf`, `properties`, `additionalProperties`, `required`, and
//! `propertyOrdering`; "if `$ref` is set on a sub-schema, no other properties, except for those
//! starting as a `$`, may be set"). The rules:
//! - the root is a schema object (not `true`/`false`);
//! - `$ref` keeps its `$…` siblings; annotation siblings (`description`, `title`, `default`,
//!   `examples`, `deprecated`, `readOnly`, `writeOnly`) are dropped; any other sibling is refused;
//! - `const` of a string or a number becomes `enum: [it]` (or is dropped beside an `enum` that
//!   holds it); draft-04 tuple `items: [..]` becomes `prefixItems`; `allOf` of one subschema
//!   next to annotations only is replaced by that subschema;
//! - with `strict: true` the caller asks for an answer that satisfies the schema, so keywords
//!   Gemini would ignore (`pattern`, `minLength`, `not`, `if`, a larger `allOf`, an `enum` or
//!   `const` of other values, … see `UNENFORCED`) are refused with their path; without `strict`
//!   they are sent as they are (Gemini accepts and ignores them: best effort, as OpenAI's
//!   non-strict mode is). Unknown keywords are annotations and pass either way.

use serde_json::{Map, Value};

use crate::error::RequestError;

/// A 400 `invalid_schema` at `param`.
pub fn schema_err(param: &str, message: impl Into<String>) -> RequestError {
    RequestError::Schema {
        param: param.to_string(),
        message: format!("{param}: {}", message.into()),
    }
}

const TYPES: [&str; 7] = [
    "string", "number", "integer", "boolean", "array", "object", "null",
];
/// Keywords whose value is one subschema.
const ONE: [&str; 9] = [
    "items",
    "additionalProperties",
    "not",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "unevaluatedProperties",
];
/// Keywords whose value is a list of subschemas.
const LIST: [&str; 4] = ["anyOf", "oneOf", "allOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const MAP: [&str; 4] = ["properties", "$defs", "definitions", "patternProperties"];

/// Subschemas nest at most this deep (each level is a stack frame of the checker; a request
/// may nest JSON 1024 deep, which would overflow a worker's stack).
pub const MAX_DEPTH: usize = 64;

/// Checks a schema at `path`.
pub fn check(v: &Value, path: &str) -> Result<(), RequestError> {
    check_at(v, path, 0)
}

fn too_deep(path: &str) -> RequestError {
    schema_err(
        path,
        format!("subschemas nest more than {MAX_DEPTH} levels deep"),
    )
}

/// Checks one subschema at `path`, nested `depth` levels deep.
fn check_at(v: &Value, path: &str, depth: usize) -> Result<(), RequestError> {
    let map = match v {
        Value::Bool(_) => return Ok(()),
        Value::Object(_) if depth >= MAX_DEPTH => return Err(too_deep(path)),
        Value::Object(m) => m,
        _ => return Err(schema_err(path, "a schema must be an object or a boolean")),
    };
    for (key, val) in map {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "type" => {
                let ok = match val {
                    Value::String(t) => TYPES.contains(&t.as_str()),
                    Value::Array(ts) => ts
                        .iter()
                        .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))),
                    _ => false,
                };
                if !ok {
                    return Err(schema_err(
                        &at,
                        format!(
                            "type must be one of {} (or a list of them)",
                            TYPES.join("|")
                        ),
                    ));
                }
            }
            "$ref" if !val.as_str().is_some_and(|r| r.starts_with('#')) => {
                return Err(schema_err(
                    &at,
                    "only local references ('#/$defs/…') can be resolved",
                ));
            }
            "required"
                if !val
                    .as_array()
                    .is_some_and(|r| r.iter().all(Value::is_string)) =>
            {
                return Err(schema_err(&at, "required must be a list of property names"));
            }
            "enum" if !val.is_array() => {
                return Err(schema_err(&at, "enum must be a list"));
            }
            k if ONE.contains(&k) => {
                // Draft-04 tuples: `items` as a list of schemas.
                if let (Value::Array(list), "items") = (val, k) {
                    for (j, s) in list.iter().enumerate() {
                        check_at(s, &format!("{at}[{j}]"), depth + 1)?;
                    }
                } else {
                    check_at(val, &at, depth + 1)?;
                }
            }
            k if LIST.contains(&k) => {
                let Value::Array(list) = val else {
                    return Err(schema_err(&at, format!("{k} must be a list of schemas")));
                };
                for (j, s) in list.iter().enumerate() {
                    check_at(s, &format!("{at}[{j}]"), depth + 1)?;
                }
            }
            k if MAP.contains(&k) => {
                let Value::Object(props) = val else {
                    return Err(schema_err(&at, format!("{k} must map names to schemas")));
                };
                for (name, s) in props {
                    check_at(s, &format!("{at}.{name}"), depth + 1)?;
                }
            }
            // Annotations and constraints (description, format, minimum, …) pass through.
            _ => {}
        }
    }
    Ok(())
}

/// Annotations: no effect on which answers are valid; dropped beside a `$ref`.
const ANNOTATIONS: [&str; 7] = [
    "description",
    "title",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Constraints Gemini's `responseJsonSchema` does not enforce: refused under `strict`.
const UNENFORCED: [&str; 25] = [
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "const",
    "pattern",
    "minLength",
    "maxLength",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "uniqueItems",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "contains",
    "minContains",
    "maxContains",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "unevaluatedProperties",
    "unevaluatedItems",
];

/// A `response_format.json_schema.schema` → the `responseJsonSchema` Gemini gets (see the
/// module doc for the rules). `path` names the schema in errors.
pub fn response_schema(v: &Value, path: &str, strict: bool) -> Result<Value, RequestError> {
    if !v.is_object() {
        return Err(schema_err(path, "the schema must be a JSON Schema object"));
    }
    check(v, path)?;
    convert(v, path, strict, 0)
}

/// Converts one subschema (already checked) at nesting `depth`.
fn convert(v: &Value, path: &str, strict: bool, depth: usize) -> Result<Value, RequestError> {
    let Value::Object(map) = v else {
        return Ok(v.clone());
    };
    if depth >= MAX_DEPTH {
        return Err(too_deep(path));
    }
    let mut map = map.clone();
    // `allOf` of one subschema beside annotations only is that subschema (repeatedly: it may
    // hold another).
    while let Some(Value::Array(all)) = map.get("allOf")
        && all.len() == 1
        && map
            .keys()
            .all(|k| k == "allOf" || ANNOTATIONS.contains(&k.as_str()))
    {
        let inner = all[0].clone();
        map.remove("allOf");
        match inner {
            Value::Object(inner) => {
                for (k, val) in inner {
                    map.insert(k, val);
                }
            }
            other => return convert(&other, &format!("{path}.allOf[0]"), strict, depth + 1),
        }
    }
    if map.contains_key("$ref") {
        map.retain(|k, _| !ANNOTATIONS.contains(&k.as_str()));
        if let Some(other) = map.keys().find(|k| !k.starts_with('$')) {
            return Err(schema_err(
                &format!("{path}.{other}"),
                "Gemini takes no keyword beside $ref other than $-keywords; move it into the referenced schema",
            ));
        }
    }
    if let Some(c) = map.get("const").cloned()
        && (c.is_string() || c.is_number())
    {
        match map.get("enum") {
            None => {
                map.insert("enum".into(), Value::Array(vec![c]));
                map.remove("const");
            }
            Some(Value::Array(e)) if e.contains(&c) => {
                map.remove("const");
            }
            Some(_) => {}
        }
    }
    if let Some(Value::Array(tuple)) = map.get("items").cloned()
        && !map.contains_key("prefixItems")
    {
        map.remove("items");
        map.insert("prefixItems".into(), Value::Array(tuple));
    }
    let mut out = Map::with_capacity(map.len());
    for (key, val) in map {
        let at = format!("{path}.{key}");
        if strict {
            refuse_unenforced(&key, &val, &at)?;
        }
        let val = match key.as_str() {
            k if ONE.contains(&k) => convert(&val, &at, strict, depth + 1)?,
            k if LIST.contains(&k) => match val {
                Value::Array(list) => Value::Array(
                    list.iter()
                        .enumerate()
                        .map(|(j, s)| convert(s, &format!("{at}[{j}]"), strict, depth + 1))
                        .collect::<Result<_, _>>()?,
                ),
                other => other,
            },
            k if MAP.contains(&k) => match val {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, s)| {
                            Ok((
                                name.clone(),
                                convert(s, &format!("{at}.{name}"), strict, depth + 1)?,
                            ))
                        })
                        .collect::<Result<_, RequestError>>()?,
                ),
                other => other,
            },
            _ => val,
        };
        out.insert(key, val);
    }
    Ok(Value::Object(out))
}

fn refuse_unenforced(key: &str, val: &Value, at: &str) -> Result<(), RequestError> {
    if UNENFORCED.contains(&key) {
        return Err(schema_err(
            at,
            format!(
                "Gemini does not enforce '{key}'; with strict: true it cannot be promised (send strict: false to have it ignored)"
            ),
        ));
    }
    if key == "enum"
        && let Value::Array(values) = val
        && let Some(j) = values
            .iter()
            .position(|e| !(e.is_string() || e.is_number()))
    {
        return Err(schema_err(
            &format!("{at}[{j}]"),
            "Gemini enforces enum values that are strings or numbers only; with strict: true this one cannot be promised",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param_of(r: Result<Value, RequestError>) -> String {
        match r {
            Err(RequestError::Schema { param, .. }) => param,
            other => panic!("{other:?}"),
        }
    }

    const P: &str = "response_format.json_schema.schema";

    #[test]
    fn supported_schemas_pass_unchanged() {
        let s = json!({"type":"object","title":"Person","properties":{
            "name":{"type":"string","description":"full name"},
            "age":{"anyOf":[{"type":"integer","minimum":0,"maximum":150},{"type":"null"}]},
            "tags":{"type":"array","items":{"$ref":"#/$defs/tag"},"minItems":1,"maxItems":3},
            "kind":{"type":"string","enum":["a","b"]},
            "when":{"type":["string","null"],"format":"date-time"},
            "pair":{"type":"array","prefixItems":[{"type":"number"},{"type":"number"}]}},
            "required":["name","age","tags","kind","when","pair"],"additionalProperties":false,
            "$defs":{"tag":{"type":"string"}},"propertyOrdering":["name","age"]});
        for strict in [false, true] {
            assert_eq!(
                response_schema(&s, P, strict).unwrap(),
                s,
                "strict={strict}"
            );
        }
    }

    #[test]
    fn conversions() {
        // pydantic's Literal and old-style `allOf: [$ref]` with a description, a tuple `items`.
        let s = json!({"type":"object","properties":{
            "mode":{"const":"fast","type":"string"},
            "both":{"const":2,"enum":[1,2]},
            "sub":{"allOf":[{"$ref":"#/$defs/Sub"}],"description":"the sub"},
            "ref":{"$ref":"#/$defs/Sub","title":"x","$comment":"kept"},
            "tuple":{"type":"array","items":[{"type":"string"}]}},
            "$defs":{"Sub":{"type":"object","properties":{"a":{"type":"string"}}}}});
        let out = response_schema(&s, P, true).unwrap();
        let props = &out["properties"];
        assert_eq!(props["mode"], json!({"enum":["fast"],"type":"string"}));
        assert_eq!(props["both"], json!({"enum":[1,2]}));
        assert_eq!(props["sub"], json!({"$ref":"#/$defs/Sub"}));
        assert_eq!(
            props["ref"],
            json!({"$ref":"#/$defs/Sub","$comment":"kept"})
        );
        assert_eq!(
            props["tuple"],
            json!({"type":"array","prefixItems":[{"type":"string"}]})
        );
    }

    #[test]
    fn refusals_name_the_path() {
        for (schema, strict, want) in [
            (json!(true), false, P.to_string()),
            (json!([]), false, P.to_string()),
            (json!({"type":"text"}), false, format!("{P}.type")),
            (
                json!({"properties":{"x":{"type":"string","pattern":"^a"}}}),
                true,
                format!("{P}.properties.x.pattern"),
            ),
            (
                json!({"properties":{"x":{"$ref":"#/$defs/a","minimum":1}}}),
                false,
                format!("{P}.properties.x.minimum"),
            ),
            (
                json!({"properties":{"x":{"$ref":"other.json#/a"}}}),
                false,
                format!("{P}.properties.x.$ref"),
            ),
            (
                json!({"items":{"enum":["a",true]}}),
                true,
                format!("{P}.items.enum[1]"),
            ),
            (
                json!({"allOf":[{"type":"object"},{"required":["a"]}]}),
                true,
                format!("{P}.allOf"),
            ),
            (
                json!({"anyOf":[{"not":{"type":"null"}}]}),
                true,
                format!("{P}.anyOf[0].not"),
            ),
            (
                json!({"properties":{"x":{"const":true}}}),
                true,
                format!("{P}.properties.x.const"),
            ),
        ] {
            assert_eq!(
                param_of(response_schema(&schema, P, strict)),
                want,
                "{schema}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut s = json!({"type":"string"});
        for _ in 0..1000 {
            s = json!({"type":"array","items":s});
        }
        assert!(param_of(response_schema(&s, P, false)).starts_with(&format!("{P}.items.items")));
        // Tool parameters share the check.
        let tool = json!({"type":"object","properties":{"x":s}});
        assert!(matches!(
            check(&tool, "p"),
            Err(RequestError::Schema { .. })
        ));
        let mut ok = json!({"type":"string"});
        for _ in 0..MAX_DEPTH - 1 {
            ok = json!({"type":"array","items":ok});
        }
        assert!(response_schema(&ok, P, true).is_ok());
    }

    #[test]
    fn without_strict_unenforced_keywords_are_sent_as_they_are() {
        let s = json!({"type":"object","properties":{"x":{"type":"string","pattern":"^a","minLength":2}},
            "not":{"required":["y"]}});
        assert_eq!(response_schema(&s, P, false).unwrap(), s);
    }
}
