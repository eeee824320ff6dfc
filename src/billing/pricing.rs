//! The price sheet: per-model rates in integer credits per 1M tokens, and the cost and worst-case
//! formulas. 1 credit = 1 atomic USDC = $0.000001; no floating point anywhere in here.

use std::collections::HashMap;
use std::sync::Arc;

/// One model's rates after the markup, in credits per 1M tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    /// Canonical id shown to clients (`gemini-2.5-flash`).
    pub id: String,
    /// Id sent to Gemini.
    pub upstream: String,
    pub aliases: Vec<String>,
    /// List prices before markup, micro-USD per 1M tokens (what `/v1/models` shows).
    pub list_input: u64,
    pub list_output: u64,
    pub input: u64,
    pub output: u64,
    /// `(threshold, input, output)`: rates for prompts longer than `threshold` tokens.
    pub long: Option<(u64, u64, u64)>,
    /// Rate of prompt tokens Gemini served from its cache (`cachedContentTokenCount`), and the
    /// same above the long-context threshold; the input rates unless the config sets them.
    pub cached_input: u64,
    pub long_cached_input: Option<u64>,
    pub context_length: u64,
    pub max_output_tokens: u32,
}

impl ModelPrice {
    /// Builds a price from list prices (micro-USD per 1M) and a markup in parts per million.
    #[expect(
        clippy::too_many_arguments,
        reason = "a flat constructor mirrors the config entry"
    )]
    pub fn new(
        id: String,
        upstream: String,
        aliases: Vec<String>,
        list_input: u64,
        list_output: u64,
        long: Option<(u64, u64, u64)>,
        markup_ppm: u64,
        context_length: u64,
        max_output_tokens: u32,
    ) -> Self {
        let mark = |usd: u64| ceil_div(u128::from(usd) * u128::from(markup_ppm), 1_000_000);
        Self {
            id,
            upstream,
            aliases,
            list_input,
            list_output,
            input: mark(list_input),
            output: mark(list_output),
            long: long.map(|(t, i, o)| (t, mark(i), mark(o))),
            cached_input: mark(list_input),
            long_cached_input: long.map(|(_, i, _)| mark(i)),
            context_length,
            max_output_tokens,
        }
    }

    /// Rates `(input, output)` that apply to a prompt of `prompt_tokens`.
    pub fn rates(&self, prompt_tokens: u64) -> (u64, u64) {
        match self.long {
            Some((threshold, i, o)) if prompt_tokens > threshold => (i, o),
            _ => (self.input, self.output),
        }
    }

    /// Sets the cache-read list prices (micro-USD per 1M; `None` keeps the input price), marked
    /// up like the others. A cached token never costs more than an uncached one: the config
    /// refuses a cache price above its input price, so the worst case (priced without cache)
    /// bounds every charge.
    pub fn with_cache_prices(
        mut self,
        list_cached: Option<u64>,
        list_long_cached: Option<u64>,
        markup_ppm: u64,
    ) -> Self {
        let mark = |usd: u64| ceil_div(u128::from(usd) * u128::from(markup_ppm), 1_000_000);
        if let Some(c) = list_cached {
            self.cached_input = mark(c);
        }
        if let (Some(c), Some(_)) = (list_long_cached, self.long) {
            self.long_cached_input = Some(mark(c));
        }
        self
    }

    /// Credits for a call: ceil((prompt·in + completion·out) / 1e6).
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> u64 {
        self.cost_cached(prompt_tokens, 0, completion_tokens)
    }

    /// Credits for a call of which `cached` prompt tokens came from Gemini's cache (reference
    /// §6.2): ceil(((prompt − cached)·in + cached·cached_in + completion·out) / 1e6), the tier
    /// chosen by the whole prompt. Thinking is part of `completion` (output rate).
    pub fn cost_cached(&self, prompt_tokens: u64, cached: u64, completion_tokens: u64) -> u64 {
        let (i, o) = self.rates(prompt_tokens);
        let c = match self.long {
            Some((threshold, _, _)) if prompt_tokens > threshold => {
                self.long_cached_input.unwrap_or(i)
            }
            _ => self.cached_input,
        };
        let cached = cached.min(prompt_tokens);
        let micro = u128::from(prompt_tokens - cached) * u128::from(i)
            + u128::from(cached) * u128::from(c)
            + u128::from(completion_tokens) * u128::from(o);
        ceil_div(micro, 1_000_000)
    }
}

/// All models, looked up by id or alias.
#[derive(Debug, Clone)]
pub struct PriceTable {
    models: Arc<Vec<ModelPrice>>,
    by_name: Arc<HashMap<String, usize>>,
}

impl PriceTable {
    /// Fails when two models claim the same id or alias.
    pub fn new(models: Vec<ModelPrice>) -> Result<Self, String> {
        let mut by_name = HashMap::new();
        for (i, m) in models.iter().enumerate() {
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                if by_name.insert(name.clone(), i).is_some() {
                    return Err(format!("model name {name} is used twice"));
                }
            }
        }
        Ok(Self {
            models: Arc::new(models),
            by_name: Arc::new(by_name),
        })
    }

    pub fn get(&self, name: &str) -> Option<&ModelPrice> {
        self.by_name.get(name).map(|&i| &self.models[i])
    }

    pub fn all(&self) -> &[ModelPrice] {
        &self.models
    }
}

/// Integer ceiling division, saturating to `u64::MAX`.
pub fn ceil_div(n: u128, d: u128) -> u64 {
    u64::try_from(n.div_ceil(d)).unwrap_or(u64::MAX)
}

/// Parses a non-negative decimal with at most 6 fractional digits into millionths:
/// `"0.30"` → 300_000, `"1.2"` → 1_200_000. Anything else is `None`.
pub fn parse_usd_micros(s: &str) -> Option<u64> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || frac.len() > 6 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut frac_v: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..6 {
        frac_v *= 10;
    }
    whole.checked_mul(1_000_000)?.checked_add(frac_v)
}

/// Formats millionths as a dollar decimal with six places: 712 → "0.000712".
pub fn format_usd_micros(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flash() -> ModelPrice {
        ModelPrice::new(
            "m".into(),
            "m".into(),
            vec![],
            300_000,
            2_500_000,
            None,
            1_200_000,
            1,
            1,
        )
    }

    #[test]
    fn markup_applies_to_list_prices() {
        let m = flash();
        assert_eq!((m.input, m.output), (360_000, 3_000_000));
        // 482 prompt + 196 completion tokens: (482·0.36 + 196·3.0) = 761.52 → 762 credits.
        assert_eq!(m.cost(482, 196), 762);
        assert_eq!(m.cost(0, 0), 0);
        assert_eq!(
            m.cost(1, 0),
            1,
            "any nonzero usage costs at least one credit"
        );
    }

    #[test]
    fn long_context_tier_applies_above_threshold() {
        let m = ModelPrice::new(
            "p".into(),
            "p".into(),
            vec![],
            1_250_000,
            10_000_000,
            Some((200_000, 2_500_000, 15_000_000)),
            1_000_000,
            1,
            1,
        );
        assert_eq!(m.rates(200_000), (1_250_000, 10_000_000));
        assert_eq!(m.rates(200_001), (2_500_000, 15_000_000));
    }

    #[test]
    fn cached_prompt_tokens_are_priced_at_the_cache_rate() {
        // 2.5 Flash: input 0.30, cache read 0.03, output 2.50; markup 1.2.
        let m = flash().with_cache_prices(Some(30_000), None, 1_200_000);
        assert_eq!(m.cached_input, 36_000);
        // 1000 prompt (400 cached) + 100 completion: 600·0.36 + 400·0.036 + 100·3.0 = 530.4 → 531.
        assert_eq!(m.cost_cached(1000, 400, 100), 531);
        assert_eq!(m.cost_cached(1000, 0, 100), m.cost(1000, 100));
        assert_eq!(m.cost(1000, 100), 660);
        // A cached count above the prompt is capped at the prompt.
        assert_eq!(m.cost_cached(10, 50, 0), m.cost_cached(10, 10, 0));
        // Without a cache price, cached tokens cost what input costs.
        assert_eq!(flash().cost_cached(1000, 400, 100), 660);
        // The long tier has its own cache rate, chosen by the whole prompt.
        let pro = ModelPrice::new(
            "p".into(),
            "p".into(),
            vec![],
            1_250_000,
            10_000_000,
            Some((200_000, 2_500_000, 15_000_000)),
            1_000_000,
            1,
            1,
        )
        .with_cache_prices(Some(125_000), Some(250_000), 1_000_000);
        assert_eq!(pro.cost_cached(100_000, 100_000, 0), 12_500);
        assert_eq!(pro.cost_cached(300_000, 100_000, 0), 525_000);
    }

    #[test]
    fn decimal_parsing_is_exact() {
        assert_eq!(parse_usd_micros("0.30"), Some(300_000));
        assert_eq!(parse_usd_micros("1.2"), Some(1_200_000));
        assert_eq!(parse_usd_micros("10"), Some(10_000_000));
        assert_eq!(parse_usd_micros("0.0000001"), None);
        for bad in ["", ".5", "1.", "-1", "1e3", "0x1", "1.2.3", " "] {
            assert_eq!(parse_usd_micros(bad), None, "{bad:?}");
        }
        assert_eq!(format_usd_micros(712), "0.000712");
        assert_eq!(format_usd_micros(1_000_000), "1.000000");
    }

    proptest! {
        #[test]
        fn cost_is_monotonic_and_never_undercharges(p in 0u64..10_000_000, c in 0u64..1_000_000, dp in 0u64..1000, dc in 0u64..1000) {
            let m = flash();
            let base = m.cost(p, c);
            prop_assert!(m.cost(p + dp, c + dc) >= base);
            // Cached tokens never cost more than the bound priced without them.
            let cached = m.clone().with_cache_prices(Some(30_000), None, 1_200_000);
            prop_assert!(cached.cost_cached(p, dp, c) <= base);
            // Exact rational cost never exceeds the integer charge by a credit or more.
            let exact = u128::from(p) * 360_000 + u128::from(c) * 3_000_000;
            prop_assert!(u128::from(base) * 1_000_000 >= exact);
            prop_assert!(u128::from(base) * 1_000_000 < exact + 1_000_000);
        }
    }
}
