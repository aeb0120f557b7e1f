//! Byte strings on the wire as one length and one copy.
//!
//! Derived serde writes a `Vec<u8>` as a sequence: one `serialize_u8` call per byte, and reads
//! it back by pushing byte after byte into a growing vector (which also leaves copies of
//! plaintext behind in the buffers it outgrows). `#[serde(with = "crate::bytes")]` writes the
//! same postcard bytes (a varint length, then the bytes) with one `serialize_bytes` and reads
//! them with one exactly sized copy. The wire format does not change: a test decodes each form
//! with the other.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// The most bytes a sequence-form byte string may announce before we reserve room for it
/// (a peer's claim is not trusted beyond what a frame can hold).
const MAX_RESERVE: usize = crate::frame::MAX_FRAME_LEN;

/// Serializes bytes as one byte string.
///
/// # Errors
/// The serializer's.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Deserializes a byte string into one exactly sized vector.
///
/// # Errors
/// The deserializer's, or a value that is not a byte string.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(ByteVisitor)
}

/// The visitor behind [`deserialize`], also used by the secret types.
#[derive(Debug)]
pub struct ByteVisitor;

impl<'de> Visitor<'de> for ByteVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_RESERVE));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// `Option<Vec<u8>>` as an optional byte string.
pub mod option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(transparent)]
    struct Wrapped(#[serde(with = "crate::bytes")] Vec<u8>);

    /// Serializes an optional byte string.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&Wrapped(bytes.clone())),
            None => s.serialize_none(),
        }
    }

    /// Deserializes an optional byte string.
    ///
    /// # Errors
    /// The deserializer's.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        a: Vec<u8>,
        b: Option<Vec<u8>>,
        n: u32,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Fast {
        #[serde(with = "crate::bytes")]
        a: Vec<u8>,
        #[serde(with = "crate::bytes::option")]
        b: Option<Vec<u8>>,
        n: u32,
    }

    #[test]
    fn the_wire_format_is_the_derived_one() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let a: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for b in [None, Some(vec![]), Some(vec![9u8; 200])] {
                let plain = Plain {
                    a: a.clone(),
                    b: b.clone(),
                    n: 5,
                };
                let fast = Fast {
                    a: a.clone(),
                    b: b.clone(),
                    n: 5,
                };
                let p = postcard::to_stdvec(&plain).unwrap();
                let f = postcard::to_stdvec(&fast).unwrap();
                assert_eq!(p, f, "len {len}");
                let back: Fast = postcard::from_bytes(&p).unwrap();
                assert_eq!(back, fast);
                let back: Plain = postcard::from_bytes(&f).unwrap();
                assert_eq!(back, plain);
            }
        }
    }
}
