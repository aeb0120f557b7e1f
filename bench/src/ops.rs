//! The operations the benchmark measures: one table row each (times the session counts).

use std::fmt;

/// One measured operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `CKM_SHA256_RSA_PKCS` sign of 32 bytes with an RSA-2048 token key.
    Rsa2048Sign,
    /// `CKM_SHA256_RSA_PKCS` verify with the RSA-2048 public key.
    Rsa2048Verify,
    /// `CKM_SHA256_RSA_PKCS` sign with RSA-3072.
    Rsa3072Sign,
    /// `CKM_ECDSA` sign of a 32-byte digest with a P-256 token key.
    P256Sign,
    /// `CKM_ECDSA` verify of a 32-byte digest with the P-256 public key.
    P256Verify,
    /// `CKM_ECDSA` sign of a 48-byte digest with a P-384 token key.
    P384Sign,
    /// `CKM_EDDSA` (pure Ed25519) sign of 32 bytes.
    Ed25519Sign,
    /// `CKM_AES_GCM` encrypt of 1 KiB with an AES-256 key (12-byte IV, 128-bit tag).
    AesGcm1K,
    /// `CKM_AES_GCM` encrypt of 1 MiB.
    AesGcm1M,
    /// `CKM_SHA256_HMAC` of 1 KiB with a 32-byte generic secret.
    Hmac1K,
    /// `CKM_RSA_PKCS_KEY_PAIR_GEN`, 2048 bits, token objects.
    Rsa2048Gen,
    /// `CKM_EC_KEY_PAIR_GEN`, P-256, token objects.
    P256Gen,
    /// `CKM_AES_KEY_GEN`, 256 bits, token object (durable when the call returns).
    AesCreate,
    /// `C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal` by `CKA_LABEL`, one match among
    /// this many objects.
    Find(u32),
}

/// The operations before the `C_FindObjects` rows, in table order.
const FIXED: &[Op] = &[
    Op::Rsa2048Sign,
    Op::Rsa2048Verify,
    Op::Rsa3072Sign,
    Op::P256Sign,
    Op::P256Verify,
    Op::P384Sign,
    Op::Ed25519Sign,
    Op::AesGcm1K,
    Op::AesGcm1M,
    Op::Hmac1K,
    Op::Rsa2048Gen,
    Op::P256Gen,
    Op::AesCreate,
];

impl Op {
    /// Every operation, with the `C_FindObjects` rows for the given object counts.
    pub fn all(find_counts: &[u32]) -> Vec<Op> {
        let mut ops = FIXED.to_vec();
        let mut counts = find_counts.to_vec();
        counts.sort_unstable();
        counts.dedup();
        ops.extend(counts.into_iter().map(Op::Find));
        ops
    }

    /// The short id used on the command line and in the results files.
    pub fn id(self) -> String {
        match self {
            Op::Rsa2048Sign => "rsa2048-sign".into(),
            Op::Rsa2048Verify => "rsa2048-verify".into(),
            Op::Rsa3072Sign => "rsa3072-sign".into(),
            Op::P256Sign => "p256-sign".into(),
            Op::P256Verify => "p256-verify".into(),
            Op::P384Sign => "p384-sign".into(),
            Op::Ed25519Sign => "ed25519-sign".into(),
            Op::AesGcm1K => "aes-gcm-1k".into(),
            Op::AesGcm1M => "aes-gcm-1m".into(),
            Op::Hmac1K => "hmac-1k".into(),
            Op::Rsa2048Gen => "rsa2048-gen".into(),
            Op::P256Gen => "p256-gen".into(),
            Op::AesCreate => "aes-create".into(),
            Op::Find(n) => format!("find-{n}"),
        }
    }

    /// Parses [`Op::id`].
    pub fn parse(id: &str) -> Option<Op> {
        if let Some(n) = id.strip_prefix("find-") {
            return n.parse().ok().filter(|n| *n > 0).map(Op::Find);
        }
        FIXED.iter().copied().find(|op| op.id() == id)
    }

    /// The row title in the table.
    pub fn title(self) -> String {
        match self {
            Op::Rsa2048Sign => "RSA-2048 sign (SHA256_RSA_PKCS)".into(),
            Op::Rsa2048Verify => "RSA-2048 verify (SHA256_RSA_PKCS)".into(),
            Op::Rsa3072Sign => "RSA-3072 sign (SHA256_RSA_PKCS)".into(),
            Op::P256Sign => "P-256 sign (ECDSA, 32-byte digest)".into(),
            Op::P256Verify => "P-256 verify (ECDSA, 32-byte digest)".into(),
            Op::P384Sign => "P-384 sign (ECDSA, 48-byte digest)".into(),
            Op::Ed25519Sign => "Ed25519 sign (EDDSA, 32 bytes)".into(),
            Op::AesGcm1K => "AES-256-GCM encrypt 1 KiB".into(),
            Op::AesGcm1M => "AES-256-GCM encrypt 1 MiB".into(),
            Op::Hmac1K => "HMAC-SHA256 1 KiB".into(),
            Op::Rsa2048Gen => "RSA-2048 key pair generation (token)".into(),
            Op::P256Gen => "P-256 key pair generation (token)".into(),
            Op::AesCreate => "AES-256 key creation (token, committed)".into(),
            Op::Find(n) => format!(
                "C_FindObjects by label, {} objects",
                thousands(u64::from(n))
            ),
        }
    }

    /// A short title for the chart's axis.
    pub fn short_title(self) -> String {
        match self {
            Op::Rsa2048Sign => "RSA-2048 sign".into(),
            Op::Rsa2048Verify => "RSA-2048 verify".into(),
            Op::Rsa3072Sign => "RSA-3072 sign".into(),
            Op::P256Sign => "P-256 sign".into(),
            Op::P256Verify => "P-256 verify".into(),
            Op::P384Sign => "P-384 sign".into(),
            Op::Ed25519Sign => "Ed25519 sign".into(),
            Op::AesGcm1K => "AES-GCM 1 KiB".into(),
            Op::AesGcm1M => "AES-GCM 1 MiB".into(),
            Op::Hmac1K => "HMAC 1 KiB".into(),
            Op::Rsa2048Gen => "RSA-2048 keygen".into(),
            Op::P256Gen => "P-256 keygen".into(),
            Op::AesCreate => "AES key create".into(),
            Op::Find(n) => format!("find among {}", thousands(u64::from(n))),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for op in Op::all(&[1000, 100_000]) {
            assert_eq!(Op::parse(&op.id()), Some(op), "{op}");
        }
        assert_eq!(Op::parse("find-0"), None);
        assert_eq!(Op::parse("nope"), None);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
