//! Content digests (blake3, 32 bytes) and an unambiguous key builder.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Buffers at least this large are hashed with blake3's rayon path.
const PAR_HASH_THRESHOLD: usize = 1 << 20;

/// A 32-byte blake3 digest. Displays and parses as 64 lowercase hex digits and
/// serializes (serde) as that hex string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDigestError {
    /// Not 64 characters long.
    #[error("a digest has 64 hex digits, got {0} characters")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("invalid hex character {ch:?} at position {pos}")]
    Char {
        /// The character.
        ch: char,
        /// Its byte position.
        pos: usize,
    },
}

impl Digest {
    /// blake3 of `bytes` (multi-threaded for large buffers).
    pub fn of(bytes: &[u8]) -> Digest {
        if bytes.len() >= PAR_HASH_THRESHOLD {
            let mut h = blake3::Hasher::new();
            h.update_rayon(bytes);
            Digest(*h.finalize().as_bytes())
        } else {
            Digest(*blake3::hash(bytes).as_bytes())
        }
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }

    /// The first 12 hex digits, for logs and listings.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }
}

impl From<blake3::Hash> for Digest {
    fn from(h: blake3::Hash) -> Self {
        Digest(*h.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Accepts 64 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(ParseDigestError::Length(s.chars().count()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let digit = |k: usize| {
                hex_val(pair[k]).ok_or_else(|| ParseDigestError::Char {
                    ch: s[2 * i + k..].chars().next().unwrap_or('?'),
                    pos: 2 * i + k,
                })
            };
            out[i] = (digit(0)? << 4) | digit(1)?;
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Builds a digest from typed fields without ambiguity: every field is written
/// as a type tag, a u64 length and its bytes, after a domain string. So
/// `.str("ab").str("c")` and `.str("a").str("bc")` differ, and a `u64` never
/// collides with 8 bytes. For a variable-length list, write its length first.
///
/// ```
/// use mpfnet_cache::KeyHasher;
/// let k = KeyHasher::new("resize").str("img-001.png").u64(128).digest();
/// assert_ne!(k, KeyHasher::new("resize").str("img-001.png").u64(64).digest());
/// ```
#[derive(Clone)]
pub struct KeyHasher {
    h: blake3::Hasher,
}

impl KeyHasher {
    /// Starts a key in `domain` (keys of different domains never collide).
    pub fn new(domain: &str) -> Self {
        let mut k = KeyHasher {
            h: blake3::Hasher::new(),
        };
        k.h.update(b"mpfnet-cache/key/v1\0");
        k.field(b'D', domain.as_bytes());
        k
    }

    fn field(&mut self, tag: u8, data: &[u8]) -> &mut Self {
        self.h.update(&[tag]);
        self.h.update(&(data.len() as u64).to_le_bytes());
        self.h.update(data);
        self
    }

    /// A UTF-8 string field.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.field(b'S', s.as_bytes())
    }

    /// A byte-string field.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.field(b'B', b)
    }

    /// An unsigned integer field.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.field(b'U', &v.to_le_bytes())
    }

    /// A signed integer field.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.field(b'I', &v.to_le_bytes())
    }

    /// A float field, by bit pattern (so `0.0` and `-0.0` differ; NaNs are
    /// normalised to one pattern).
    pub fn f64(&mut self, v: f64) -> &mut Self {
        let bits = if v.is_nan() {
            f64::NAN.to_bits()
        } else {
            v.to_bits()
        };
        self.field(b'F', &bits.to_le_bytes())
    }

    /// A boolean field.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.field(b'T', &[v as u8])
    }

    /// Another digest as a field (e.g. an input's content digest).
    pub fn with_digest(&mut self, d: &Digest) -> &mut Self {
        self.field(b'H', &d.0)
    }

    /// Any serializable value as canonical JSON (object keys sorted at every
    /// level, so a `HashMap` hashes the same whatever its iteration order).
    pub fn json<T: Serialize + ?Sized>(&mut self, v: &T) -> anyhow::Result<&mut Self> {
        let v = serde_json::to_value(v)
            .map_err(|e| anyhow::anyhow!("serializing a key field to JSON: {e}"))?;
        let s = canonical_json(&v);
        Ok(self.field(b'J', s.as_bytes()))
    }

    /// The key.
    pub fn digest(&self) -> Digest {
        self.h.finalize().into()
    }
}

/// blake3 over parts, each preceded by its length as a u64 (LE), so `"ab", "c"` and
/// `"a", "bc"` differ. Unlike [`KeyHasher`] it writes no domain or type tags: it is the
/// recipe of digests that already exist (node seeds, bundle checksums) and must not change.
#[derive(Clone, Default)]
pub struct PartsHasher {
    h: blake3::Hasher,
}

impl PartsHasher {
    /// An empty hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// A length-prefixed part.
    pub fn part(&mut self, p: &[u8]) -> &mut Self {
        self.h.update(&(p.len() as u64).to_le_bytes());
        self.h.update(p);
        self
    }

    /// Bytes without a length (fixed-width fields, or the last field).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.h.update(b);
        self
    }

    /// The blake3 hash.
    pub fn finalize(&self) -> blake3::Hash {
        self.h.finalize()
    }

    /// The first 8 bytes of the hash as a u64 (LE): a seed.
    pub fn finalize_u64(&self) -> u64 {
        u64::from_le_bytes(self.finalize().as_bytes()[..8].try_into().unwrap())
    }
}

/// Compact JSON with object keys sorted at every level.
pub(crate) fn canonical_json(v: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("string serializes"));
                    out.push(':');
                    write(&m[k.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    write(v, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let d = Digest::of(b"hello");
        assert_eq!(d.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert_eq!(d.to_hex().to_uppercase().parse::<Digest>().unwrap(), d);
        assert_eq!(d.short(), d.to_hex()[..12]);
        assert_eq!(
            "abc".parse::<Digest>().unwrap_err(),
            ParseDigestError::Length(3)
        );
        let mut bad = d.to_hex();
        bad.replace_range(5..6, "g");
        assert_eq!(
            bad.parse::<Digest>().unwrap_err(),
            ParseDigestError::Char { ch: 'g', pos: 5 }
        );
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", d));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn large_buffers_hash_like_blake3() {
        let buf: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        assert_eq!(Digest::of(&buf).0, *blake3::hash(&buf).as_bytes());
    }

    #[test]
    fn key_fields_are_unambiguous() {
        let a = KeyHasher::new("d").str("ab").str("c").digest();
        let b = KeyHasher::new("d").str("a").str("bc").digest();
        assert_ne!(a, b);
        let c = KeyHasher::new("d").bytes(&7u64.to_le_bytes()).digest();
        let d = KeyHasher::new("d").u64(7).digest();
        assert_ne!(c, d);
        assert_ne!(
            KeyHasher::new("x").str("y").digest(),
            KeyHasher::new("xy").digest()
        );
        assert_eq!(
            KeyHasher::new("d").f64(f64::NAN).digest(),
            KeyHasher::new("d").f64(-f64::NAN).digest()
        );
        assert_ne!(
            KeyHasher::new("d").f64(0.0).digest(),
            KeyHasher::new("d").f64(-0.0).digest()
        );
    }

    #[test]
    fn json_field_is_canonical() {
        let mut m1 = std::collections::HashMap::new();
        let mut m2 = std::collections::HashMap::new();
        for i in 0..50 {
            m1.insert(format!("k{i}"), i);
        }
        for i in (0..50).rev() {
            m2.insert(format!("k{i}"), i);
        }
        let a = KeyHasher::new("p").json(&m1).unwrap().digest();
        let b = KeyHasher::new("p").json(&m2).unwrap().digest();
        assert_eq!(a, b);
        m2.insert("k0".into(), 99);
        assert_ne!(a, KeyHasher::new("p").json(&m2).unwrap().digest());
    }
}
