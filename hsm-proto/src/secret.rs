//! Secret values that cross the wire: zeroized on drop, never printed.

use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// Bytes that may be key material or plaintext: zeroized on drop, redacted in `Debug`. On the
/// wire a byte string (see [`crate::bytes`]), read into one exactly sized buffer, so decoding
/// leaves no outgrown copies behind.
#[derive(Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl Serialize for SecretBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(crate::bytes::ByteVisitor)
            .map(|v| SecretBytes(Zeroizing::new(v)))
    }
}

impl SecretBytes {
    /// Wraps bytes; the caller's buffer moves in, no copy is left behind.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// Copies from a slice.
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes(Zeroizing::new(bytes.to_vec()))
    }

    /// The secret bytes. Named so that every use is visible in review.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Moves the bytes out, still zeroized on drop.
    pub fn into_zeroizing(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

// Clone is written out rather than derived so that copies of secrets are a visible choice;
// attribute templates are the one place that needs it.
impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        SecretBytes::from_slice(&self.0)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

/// A password or PIN: zeroized on drop, redacted in `Debug`.
#[derive(Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password.
    pub fn new(password: String) -> Self {
        Password(Zeroizing::new(password))
    }

    /// The password. Named so that every use is visible in review.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Clone for Password {
    fn clone(&self) -> Self {
        Password::new(self.0.to_string())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_keep_the_wire_format_of_a_byte_vector() {
        for len in [0usize, 5, 200, 100_000] {
            let v: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let s = SecretBytes::from_slice(&v);
            let wire = postcard::to_stdvec(&s).unwrap();
            assert_eq!(wire, postcard::to_stdvec(&v).unwrap());
            let back: SecretBytes = postcard::from_bytes(&wire).unwrap();
            assert_eq!(back.expose_secret(), &v[..]);
            assert_eq!(back.0.capacity(), len, "decoded into one exact buffer");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretBytes::from_slice(b"topsecretkey");
        assert!(!format!("{s:?}").contains("topsecret"));
        let p = Password::new("hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
