//! Wallet addresses: 20-byte EVM accounts, parsed from `0x` + 40 hex and shown lower-case.

use std::fmt;
use std::str::FromStr;

/// An EVM account address; the key of every account, balance, key and memory record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Wallet(pub [u8; 20]);

impl Wallet {
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 20]>::try_from(b).ok().map(Wallet)
    }
}

impl FromStr for Wallet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .ok_or_else(|| "wallet address must start with 0x".to_string())?;
        if hex.len() != 40 {
            return Err("wallet address must be 0x followed by 40 hex digits".into());
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(hex, &mut out).map_err(|_| "wallet address is not hex".to_string())?;
        Ok(Wallet(out))
    }
}

impl fmt::Display for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Wallet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Wallet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_prints_lower() {
        let w: Wallet = "0xAbCdEf0123456789abcdef0123456789ABCDEF01"
            .parse()
            .unwrap();
        assert_eq!(w.to_string(), "0xabcdef0123456789abcdef0123456789abcdef01");
        for bad in [
            "",
            "0x",
            "abcdef0123456789abcdef0123456789abcdef01",
            "0xzz",
            "0x123",
        ] {
            assert!(bad.parse::<Wallet>().is_err(), "{bad}");
        }
    }
}
