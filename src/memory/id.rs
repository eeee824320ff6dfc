//! `MemoryId`: a memory's id, a version-7 UUID.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::MemoryError;

/// A memory's id: a version-7 UUID (48 bits of Unix milliseconds, then a counter and random
/// bits), shown as the hyphenated lower-case UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryId(pub(super) [u8; 16]);

impl MemoryId {
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        Self(b)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A fresh, time-ordered id (`uuid`'s `now_v7`: ids made in one process sort in the order
    /// they were made, within a millisecond too), so a wallet's records sort oldest first.
    pub fn now_v7() -> Self {
        Self(uuid::Uuid::now_v7().into_bytes())
    }
}

impl fmt::Display for MemoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.0).hyphenated(), f)
    }
}

impl fmt::Debug for MemoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses the hyphenated UUID form (any case) or the same 32 hex digits without hyphens.
impl FromStr for MemoryId {
    type Err = MemoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MemoryError::validation("memory_id", "a memory id is a UUID");
        // `uuid` also reads the braced and `urn:uuid:` forms; an id here is one of these two.
        if !matches!(s.len(), 32 | 36) {
            return Err(bad());
        }
        uuid::Uuid::try_parse(s)
            .map(|u| Self(u.into_bytes()))
            .map_err(|_| bad())
    }
}

impl Serialize for MemoryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
