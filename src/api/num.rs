//! Integers in JSON bodies as JSON Schema reads them: `5`, `5.0` and `5e0` are the same integer.
//!
//! serde refuses a float where it wants an integer, so a client that writes whole numbers as
//! floats (Python's `json.dumps(5.0)`, any client doing arithmetic in doubles) got a 422 for a
//! body `/openapi.json` calls valid. `Int<T>` takes any JSON number with no fractional part that
//! fits `T` (as a float, only below 2^53, where it is exact); anything else is still a
//! validation error naming the field.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, Unexpected, Visitor};

/// A JSON integer (an integral float included) that fits `T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int<T>(pub T);

impl<'de, T: TryFrom<i128>> Deserialize<'de> for Int<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntVisitor(PhantomData))
    }
}

struct IntVisitor<T>(PhantomData<T>);

impl<T: TryFrom<i128>> IntVisitor<T> {
    fn fit<E: Error>(&self, v: i128, shown: Unexpected<'_>) -> Result<Int<T>, E> {
        T::try_from(v)
            .map(Int)
            .map_err(|_| E::invalid_value(shown, &"an integer in range"))
    }
}

impl<'de, T: TryFrom<i128>> Visitor<'de> for IntVisitor<T> {
    type Value = Int<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Int<T>, E> {
        self.fit(i128::from(v), Unexpected::Signed(v))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Int<T>, E> {
        self.fit(i128::from(v), Unexpected::Unsigned(v))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Int<T>, E> {
        // Below 2^53 a whole float is exactly the integer the client wrote. Above it the float
        // may be a rounded literal (an integer too long for 64 bits arrives as a float), so
        // `-9223372036854775809` must not become `i64::MIN`: refused, not rounded.
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
            self.fit(v as i128, Unexpected::Float(v))
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: TryFrom<i128>>(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str::<Int<T>>(s).map(|i| i.0)
    }

    #[test]
    fn whole_floats_are_integers_and_nothing_else_is() {
        assert_eq!(parse::<u64>("6251").ok(), Some(6251));
        assert_eq!(parse::<u64>("6251.0").ok(), Some(6251));
        assert_eq!(parse::<u64>("1e3").ok(), Some(1000));
        assert_eq!(parse::<i64>("-5.0").ok(), Some(-5));
        assert_eq!(parse::<u64>("18446744073709551615").ok(), Some(u64::MAX));
        for bad in [
            "6251.5",
            "-1",
            "-1.0",
            "1e30",
            "9007199254740992.0",
            "\"5\"",
            "true",
            "null",
            "[1]",
        ] {
            assert!(parse::<u64>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse::<u64>("9007199254740993").ok(),
            Some(9_007_199_254_740_993)
        );
        assert!(
            parse::<i64>("-9223372036854775809").is_err(),
            "not rounded into range"
        );
        assert!(parse::<u32>("4294967296").is_err());
        let mut simd = b"{\"k\": 5.0}".to_vec();
        #[derive(serde::Deserialize)]
        struct K {
            k: Option<Int<i64>>,
        }
        let k: Result<K, _> = simd_json::serde::from_slice(&mut simd);
        assert_eq!(k.ok().and_then(|k| k.k), Some(Int(5)));
    }
}
