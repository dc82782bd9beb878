//! Session and socket identifiers.
//!
//! The reference server uses 20-character URL-safe base64 ids, and Node's Redis
//! adapter relies on that length, so a [`Sid`] is exactly 15 random bytes
//! rendered as 20 URL-safe base64 characters, stored inline (no allocation).

use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Length in characters of every id.
pub const SID_LEN: usize = 20;

/// A 20-character URL-safe id, unguessable (drawn from the OS random source).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sid([u8; SID_LEN]);

impl Hash for Sid {
    /// Ids are random, so their first eight characters (48 random bits)
    /// hash them well; see [`SidHasher`].
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// A hasher for maps keyed by [`Sid`]: ids are random and chosen by the
/// server, so a multiplicative mix is enough and SipHash's protection
/// against chosen keys buys nothing. It is on the broadcast hot path.
#[derive(Debug, Default, Clone, Copy)]
pub struct SidHasher(u64);

impl Hasher for SidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` keyed by [`Sid`] with [`SidHasher`].
pub type SidMap<V> = std::collections::HashMap<Sid, V, BuildHasherDefault<SidHasher>>;

/// A `HashSet` of [`Sid`] with [`SidHasher`].
pub type SidSet = std::collections::HashSet<Sid, BuildHasherDefault<SidHasher>>;

impl Sid {
    /// A new random id.
    pub fn new() -> Self {
        let mut raw = [0u8; 15];
        // The OS random source failing is not recoverable in any useful way.
        getrandom::fill(&mut raw).expect("the OS random source is unavailable");
        let mut out = [0u8; SID_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out)
            .expect("15 bytes encode to 20 characters");
        debug_assert_eq!(written, SID_LEN);
        Sid(out)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ever built from the base64 alphabet or validated ASCII.
        std::str::from_utf8(&self.0).expect("ids are ASCII")
    }
}

impl Default for Sid {
    fn default() -> Self {
        Self::new()
    }
}

/// The text given was not a 20-character URL-safe id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id: expected 20 URL-safe base64 characters")]
pub struct InvalidSid;

impl FromStr for Sid {
    type Err = InvalidSid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != SID_LEN
            || !bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(InvalidSid);
        }
        let mut out = [0u8; SID_LEN];
        out.copy_from_slice(bytes);
        Ok(Sid(out))
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

impl serde::Serialize for Sid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Sid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_twenty_url_safe_characters_and_distinct() {
        let a = Sid::new();
        let b = Sid::new();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), SID_LEN);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(a.as_str().parse::<Sid>().unwrap(), a);
    }

    #[test]
    fn parsing_rejects_wrong_length_and_alphabet() {
        assert!("short".parse::<Sid>().is_err());
        assert!("aaaaaaaaaaaaaaaaaaa+".parse::<Sid>().is_err());
        assert!("aaaaaaaaaaaaaaaaaaaaa".parse::<Sid>().is_err());
    }
}
