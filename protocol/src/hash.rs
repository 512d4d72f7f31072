//! BLAKE3 content addresses.
//!
//! A [`Hash`] is the BLAKE3 root of a blob's verified chunk tree, which equals the plain
//! BLAKE3 hash of its bytes (the chunk-group size changes the outboard, never the root). It
//! prints as 64 lowercase hex characters, like `b3sum`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The 32-byte BLAKE3 address of a blob or of a dataset's manifest.
///
/// Serialized as 64 hex characters in human-readable formats (JSON: `--json`, the admin
/// socket), and as its 32 raw bytes in binary ones (postcard: the wire and the store), so
/// stored and wire encodings are those of a plain `[u8; 32]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash([u8; 32]);

/// The binary form: a newtype over the bytes, as `#[derive]` wrote it before.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Hash")]
struct RawHash([u8; 32]);

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            RawHash(self.0).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            RawHash::deserialize(deserializer).map(|raw| Self(raw.0))
        }
    }
}

impl Hash {
    /// Length of the address in bytes.
    pub const LEN: usize = 32;

    /// Wraps raw bytes that are already known to be a BLAKE3 hash.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Hashes a small in-memory buffer (manifests, tests). Large data goes through
    /// [`crate::tree::compute_outboard`] instead, which streams.
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// The raw 32 bytes, e.g. for database keys.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads a hash from a 32-byte slice, e.g. a database key; `None` if the length is wrong.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The first 8 bytes as hex: enough to tell hashes apart in logs and tables.
    pub fn short(&self) -> String {
        self.to_string()[..16].to_string()
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl From<Hash> for blake3::Hash {
    fn from(h: Hash) -> Self {
        blake3::Hash::from_bytes(h.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// Why a string is not a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashParseError {
    /// The string does not have 64 characters.
    #[error("a hash has 64 hex characters, got {0}")]
    WrongLength(usize),
    /// The string has a character outside `0-9a-f`.
    #[error("a hash is written in hex (0-9, a-f)")]
    NotHex,
}

impl FromStr for Hash {
    type Err = HashParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(HashParseError::WrongLength(s.chars().count()));
        }
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .map_err(|_| HashParseError::NotHex)?;
        Self::from_slice(&bytes).ok_or(HashParseError::WrongLength(s.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let h = Hash::of(b"hello");
        assert_eq!(h.to_string(), blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(h.to_string().parse::<Hash>(), Ok(h));
        assert_eq!(h.to_string().to_uppercase().parse::<Hash>(), Ok(h));
    }

    #[test]
    fn json_writes_hex_and_postcard_the_raw_bytes() {
        let h = Hash::of(b"hello");
        let json = serde_json::to_string(&h).expect("json");
        assert_eq!(json, format!("\"{h}\""));
        assert_eq!(serde_json::from_str::<Hash>(&json).expect("parse"), h);
        assert!(serde_json::from_str::<Hash>("\"abc\"").is_err());
        // The binary form is that of the plain bytes, as stored before.
        let bin = postcard::to_stdvec(&h).expect("postcard");
        assert_eq!(bin, postcard::to_stdvec(h.as_bytes()).expect("bytes"));
        assert_eq!(postcard::from_bytes::<Hash>(&bin).expect("parse"), h);
    }

    #[test]
    fn rejects_bad_strings() {
        assert_eq!("abc".parse::<Hash>(), Err(HashParseError::WrongLength(3)));
        let not_hex = "g".repeat(64);
        assert_eq!(not_hex.parse::<Hash>(), Err(HashParseError::NotHex));
        // Multi-byte characters must not panic on slicing.
        let unicode = "é".repeat(32);
        assert!(unicode.parse::<Hash>().is_err());
    }
}
