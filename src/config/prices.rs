//! The cache-read prices of a model of the price sheet (`[models.<id>]`).

use super::{ConfigError, RawModel};
use crate::billing::pricing::parse_usd_micros;

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
