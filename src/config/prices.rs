//! The default price sheet (`[models.<id>]`) and the cache-read prices of a model.

use std::collections::BTreeMap;

use super::{ConfigError, RawModel};
use crate::billing::pricing::parse_usd_micros;

/// A model with a 1M-token context and 64K output tokens (all five defaults).
fn model(input: &str, cached: Option<&str>, output: &str) -> RawModel {
    RawModel {
        input_per_m: input.into(),
        output_per_m: output.into(),
        long_input_per_m: None,
        long_output_per_m: None,
        long_context_tokens: None,
        cached_input_per_m: cached.map(str::to_string),
        long_cached_input_per_m: None,
        context_length: 1_048_576,
        max_output_tokens: 65_536,
        upstream: None,
        aliases: Vec::new(),
    }
}

/// The five models of the Vectorway reference, at Google's list prices
/// (`reference/gemini-openai-wire.md` §4, cache reads where it lists them), each also
/// reachable as `gemini/<id>`.
pub(super) fn default_models() -> BTreeMap<String, RawModel> {
    let mut pro = model("1.25", Some("0.125"), "10.00");
    pro.long_input_per_m = Some("2.50".into());
    pro.long_output_per_m = Some("15.00".into());
    pro.long_cached_input_per_m = Some("0.25".into());
    pro.long_context_tokens = Some(200_000);
    let mut m = BTreeMap::from([
        ("gemini-2.5-pro".to_string(), pro),
        (
            "gemini-2.5-flash".into(),
            model("0.30", Some("0.03"), "2.50"),
        ),
        (
            "gemini-2.5-flash-lite".into(),
            model("0.10", Some("0.01"), "0.40"),
        ),
        ("gemini-3.1-flash-lite".into(), model("0.25", None, "1.50")),
        (
            "gemini-3.5-flash".into(),
            model("1.50", Some("0.15"), "9.00"),
        ),
    ]);
    for (id, raw) in m.iter_mut() {
        raw.aliases.push(format!("gemini/{id}"));
    }
    m
}

/// A model's cache-read prices: each at most the input price of its tier (so a call's worst
/// case, priced without cache, bounds its charge); the long one only beside a long tier.
pub(super) fn cache_prices(
    m: &RawModel,
    long: Option<(u64, u64, u64)>,
    input: u64,
    key: &dyn Fn(&str) -> String,
) -> Result<(Option<u64>, Option<u64>), ConfigError> {
    let invalid = |key: String, message: &str| ConfigError::Invalid {
        key,
        message: message.into(),
    };
    let read = |f: &str, v: &Option<String>, max: u64| match v {
        None => Ok(None),
        Some(v) => match parse_usd_micros(v) {
            Some(p) if p <= max => Ok(Some(p)),
            Some(_) => Err(invalid(key(f), "a cache price is at most the input price")),
            None => Err(invalid(key(f), "a USD decimal like 0.03")),
        },
    };
    let cached = read("cached_input_per_m", &m.cached_input_per_m, input)?;
    let long_cached = match (long, &m.long_cached_input_per_m) {
        (_, None) => None,
        (Some((_, long_input, _)), v) => read("long_cached_input_per_m", v, long_input)?,
        (None, Some(_)) => {
            return Err(invalid(
                key("long_cached_input_per_m"),
                "needs the long_* tier",
            ));
        }
    };
    Ok((cached, long_cached))
}
