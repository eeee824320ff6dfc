//! The simulator's own schema-satisfying value generator (function-call `args`, structured output).
//!
//! It reads both dialects Gemini accepts: the OpenAPI subset of `parameters` / `responseSchema`
//! (upper- or lower-case `type`, `enum`, `nullable`, `propertyOrdering`) and the JSON Schema of
//! `parametersJsonSchema` / `responseJsonSchema` (`type` as a string or a list, `const`, `enum`,
//! `anyOf` / `oneOf` / `allOf`, local `$ref` into `$defs` / `definitions`). The value it makes:
//! - objects carry every listed property (so every `required` one), values generated in turn;
//! - arrays carry `minItems` items (at least one, at most `maxItems`);
//! - integers are 1 and numbers 1.5, moved into `minimum` / `maximum` when those exclude them;
//! - booleans are `true`; `null` is `null` (a nullable type is generated as its non-null type);
//! - strings are `date` / `date-time` shaped when `format` says so, otherwise a word of the
//!   prompt picked by a hash of the property path and the candidate (a fixed word when the prompt
//!   has none), padded to `minLength` and cut to `maxLength`; `pattern` is not honoured;
//! - `enum` gives its first value, `const` its value, `anyOf` / `oneOf` their first non-null
//!   branch, `allOf` the merge of its branches' objects;
//! - past 8 levels of nesting (a recursive `$ref`) an object is `{}` and an array `[]`.
//!
//! Everything is deterministic: the same schema, prompt words and candidate give the same value.

use serde_json::{Map, Value, json};

/// The word used when the prompt offers none.
pub(super) const FIXED_WORD: &str = "simulated";

const MAX_DEPTH: usize = 8;

/// Generates a value that satisfies `schema` (resolving `$ref` against `root`).
pub(super) fn generate(schema: &Value, root: &Value, words: &[String], salt: u64) -> Value {
    Gen { root, words, salt }.value(schema, "$", 0)
}

struct Gen<'a> {
    root: &'a Value,
    words: &'a [String],
    salt: u64,
}

impl Gen<'_> {
    fn value(&self, schema: &Value, path: &str, depth: usize) -> Value {
        let Some(obj) = schema.as_object() else {
            // `true` / `{}`-like schemas accept anything.
            return Value::String(self.word(path));
        };
        if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
            return match (depth < MAX_DEPTH).then(|| self.resolve(target)).flatten() {
                Some(s) => self.value(s, path, depth + 1),
                None => json!({}),
            };
        }
        if let Some(c) = obj.get("const") {
            return c.clone();
        }
        if let Some(first) = obj
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return first.clone();
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = obj.get(key).and_then(Value::as_array) {
                let pick = branches
                    .iter()
                    .find(|b| type_of(b).as_deref() != Some("null"))
                    .or(branches.first());
                if let Some(b) = pick {
                    return self.value(b, path, depth + 1);
                }
            }
        }
        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            let mut merged = Map::new();
            for b in all {
                match self.value(b, path, depth + 1) {
                    Value::Object(o) => merged.extend(o),
                    other => return other,
                }
            }
            return Value::Object(merged);
        }
        let ty = type_of(schema).unwrap_or_else(|| {
            if obj.contains_key("properties") {
                "object".into()
            } else if obj.contains_key("items") {
                "array".into()
            } else {
                "string".into()
            }
        });
        match ty.as_str() {
            "object" => self.object(obj, path, depth),
            "array" => self.array(obj, path, depth),
            "integer" => json!(integer(obj)),
            "number" => json!(number(obj)),
            "boolean" => Value::Bool(true),
            "null" => Value::Null,
            _ => Value::String(self.string(obj, path)),
        }
    }

    fn object(&self, obj: &Map<String, Value>, path: &str, depth: usize) -> Value {
        let mut out = Map::new();
        if depth >= MAX_DEPTH {
            return Value::Object(out);
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                let v = self.value(sub, &format!("{path}.{name}"), depth + 1);
                out.insert(name.clone(), v);
            }
        }
        // A `required` name without a property schema still has to be present.
        for name in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !out.contains_key(name) {
                out.insert(name.to_string(), Value::String(self.word(path)));
            }
        }
        Value::Object(out)
    }

    fn array(&self, obj: &Map<String, Value>, path: &str, depth: usize) -> Value {
        if depth >= MAX_DEPTH {
            return json!([]);
        }
        let min = obj.get("minItems").and_then(as_count).unwrap_or(1).max(1);
        let n = obj
            .get("maxItems")
            .and_then(as_count)
            .map_or(min, |max| min.min(max));
        let items = obj.get("items").cloned().unwrap_or(Value::Bool(true));
        Value::Array(
            (0..n)
                .map(|i| self.value(&items, &format!("{path}[{i}]"), depth + 1))
                .collect(),
        )
    }

    fn string(&self, obj: &Map<String, Value>, path: &str) -> String {
        let mut s = match obj.get("format").and_then(Value::as_str) {
            Some("date-time") => "2026-01-01T00:00:00Z".to_string(),
            Some("date") => "2026-01-01".to_string(),
            _ => self.word(path),
        };
        if let Some(min) = obj.get("minLength").and_then(as_count) {
            while s.chars().count() < min as usize {
                s.push('x');
            }
        }
        if let Some(max) = obj.get("maxLength").and_then(as_count) {
            s = s.chars().take(max as usize).collect();
        }
        s
    }

    fn word(&self, path: &str) -> String {
        if self.words.is_empty() {
            return FIXED_WORD.to_string();
        }
        let h = fnv(path.as_bytes()) ^ self.salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.words[(h % self.words.len() as u64) as usize].clone()
    }

    fn resolve(&self, target: &str) -> Option<&Value> {
        let rest = target.strip_prefix("#/")?;
        let mut at = self.root;
        for seg in rest.split('/') {
            at = at.get(seg.replace("~1", "/").replace("~0", "~"))?;
        }
        Some(at)
    }
}

/// The schema's type in lower case (the first non-null one of a type list).
pub(super) fn type_of(schema: &Value) -> Option<String> {
    match schema.get("type")? {
        Value::String(s) => Some(s.to_ascii_lowercase()),
        Value::Array(list) => {
            let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            names
                .iter()
                .find(|t| !t.eq_ignore_ascii_case("null"))
                .or(names.first())
                .map(|t| t.to_ascii_lowercase())
        }
        _ => None,
    }
}

fn as_count(v: &Value) -> Option<u64> {
    // OpenAPI-subset schemas send int64 fields as strings ("minItems": "2").
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .map(|n: u64| n.min(64))
}

fn bound(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

fn integer(obj: &Map<String, Value>) -> i64 {
    let mut v: i64 = 1;
    if let Some(min) = bound(obj, "minimum") {
        v = v.max(min.ceil() as i64);
    }
    if let Some(min) = bound(obj, "exclusiveMinimum") {
        v = v.max(min.floor() as i64 + 1);
    }
    if let Some(max) = bound(obj, "maximum") {
        v = v.min(max.floor() as i64);
    }
    if let Some(max) = bound(obj, "exclusiveMaximum") {
        v = v.min(max.ceil() as i64 - 1);
    }
    v
}

fn number(obj: &Map<String, Value>) -> f64 {
    let lo = bound(obj, "minimum").or(bound(obj, "exclusiveMinimum"));
    let hi = bound(obj, "maximum").or(bound(obj, "exclusiveMaximum"));
    match (lo, hi) {
        (Some(l), Some(h)) => (l + h) / 2.0,
        (Some(l), None) if l >= 1.5 => l + 0.5,
        (None, Some(h)) if h <= 1.5 => h - 0.5,
        _ => 1.5,
    }
}

/// FNV-1a over bytes (the simulator's one hash).
pub(super) fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Compact JSON with object keys sorted at every level (a stable form to hash and to quote).
pub(super) fn canonical(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&o[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => {
            let inner: Vec<String> = a.iter().map(canonical).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}
