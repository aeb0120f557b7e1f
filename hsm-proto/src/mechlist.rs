//! The mechanisms this build serves, with their `CK_MECHANISM_INFO`: one table that the module
//! advertises (`C_GetMechanismList`) and the node enforces, so the two cannot disagree.
//! List only what works: `pkcs11-tool --test` exercises everything advertised, and the
//! daemon's tests hold every row to an implementation.
//!
//! Key-size units follow the spec: bits for RSA (modulus), EC and Edwards (curve size; Ed25519
//! is 255), generic secrets and HMAC (`CKM_GENERIC_SECRET_KEY_GEN` says bits; the HMAC
//! mechanisms use the same keys), bytes for AES. [`key_size_supported`] converts.
//!
//! Flags say exactly what each mechanism does here; `CKF_HW` is not claimed.

use cryptoki_sys as ck;

/// One row of `C_GetMechanismInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MechanismInfo {
    /// `CKM_*`.
    pub kind: u64,
    /// Minimum key size (bits for RSA, EC and generic secrets, bytes for AES, as the spec says).
    pub min_key_size: u64,
    /// Maximum key size.
    pub max_key_size: u64,
    /// `CKF_*` flags.
    pub flags: u64,
}

const SV: u64 = (ck::CKF_SIGN | ck::CKF_VERIFY) as u64;
const ED: u64 = (ck::CKF_ENCRYPT | ck::CKF_DECRYPT) as u64;
const WU: u64 = (ck::CKF_WRAP | ck::CKF_UNWRAP) as u64;
const DIGEST: u64 = ck::CKF_DIGEST as u64;
const GEN: u64 = ck::CKF_GENERATE as u64;
const GEN_PAIR: u64 = ck::CKF_GENERATE_KEY_PAIR as u64;
const DERIVE: u64 = ck::CKF_DERIVE as u64;
const EC_FLAGS: u64 = (ck::CKF_EC_F_P | ck::CKF_EC_NAMEDCURVE | ck::CKF_EC_UNCOMPRESS) as u64;

/// RSA modulus bits.
const RSA: (u64, u64) = (2048, 4096);
/// EC curve bits (P-256/secp256k1 to P-521).
const EC: (u64, u64) = (256, 521);
/// Ed25519.
const EDWARDS: (u64, u64) = (255, 255);
/// AES key bytes.
const AES: (u64, u64) = (16, 32);
/// Generic secret bits (1 to 512 bytes).
const GENERIC: (u64, u64) = (8, 4096);
/// No key.
const NONE: (u64, u64) = (0, 0);

const fn row(kind: ck::CK_MECHANISM_TYPE, size: (u64, u64), flags: u64) -> MechanismInfo {
    MechanismInfo {
        kind: kind as u64,
        min_key_size: size.0,
        max_key_size: size.1,
        flags,
    }
}

/// Every mechanism served, sorted by `CKM_*` value (a test keeps it sorted).
pub const MECHANISMS: &[MechanismInfo] = &[
    row(ck::CKM_RSA_PKCS_KEY_PAIR_GEN, RSA, GEN_PAIR),
    row(ck::CKM_RSA_PKCS, RSA, SV | ED),
    row(ck::CKM_SHA1_RSA_PKCS, RSA, SV),
    row(ck::CKM_RSA_PKCS_OAEP, RSA, ED | WU),
    row(ck::CKM_RSA_PKCS_PSS, RSA, SV),
    row(ck::CKM_SHA1_RSA_PKCS_PSS, RSA, SV),
    row(ck::CKM_SHA256_RSA_PKCS, RSA, SV),
    row(ck::CKM_SHA384_RSA_PKCS, RSA, SV),
    row(ck::CKM_SHA512_RSA_PKCS, RSA, SV),
    row(ck::CKM_SHA256_RSA_PKCS_PSS, RSA, SV),
    row(ck::CKM_SHA384_RSA_PKCS_PSS, RSA, SV),
    row(ck::CKM_SHA512_RSA_PKCS_PSS, RSA, SV),
    row(ck::CKM_SHA224_RSA_PKCS, RSA, SV),
    row(ck::CKM_SHA224_RSA_PKCS_PSS, RSA, SV),
    row(ck::CKM_SHA_1, NONE, DIGEST),
    row(ck::CKM_SHA_1_HMAC, GENERIC, SV),
    row(ck::CKM_SHA256, NONE, DIGEST),
    row(ck::CKM_SHA256_HMAC, GENERIC, SV),
    row(ck::CKM_SHA224, NONE, DIGEST),
    row(ck::CKM_SHA224_HMAC, GENERIC, SV),
    row(ck::CKM_SHA384, NONE, DIGEST),
    row(ck::CKM_SHA384_HMAC, GENERIC, SV),
    row(ck::CKM_SHA512, NONE, DIGEST),
    row(ck::CKM_SHA512_HMAC, GENERIC, SV),
    row(ck::CKM_GENERIC_SECRET_KEY_GEN, GENERIC, GEN),
    row(ck::CKM_EC_KEY_PAIR_GEN, EC, GEN_PAIR | EC_FLAGS),
    row(ck::CKM_ECDSA, EC, SV | EC_FLAGS),
    row(ck::CKM_ECDSA_SHA1, EC, SV | EC_FLAGS),
    row(ck::CKM_ECDSA_SHA224, EC, SV | EC_FLAGS),
    row(ck::CKM_ECDSA_SHA256, EC, SV | EC_FLAGS),
    row(ck::CKM_ECDSA_SHA384, EC, SV | EC_FLAGS),
    row(ck::CKM_ECDSA_SHA512, EC, SV | EC_FLAGS),
    // P-256, P-384, P-521 only (secp256k1 keys cannot derive).
    row(ck::CKM_ECDH1_DERIVE, EC, DERIVE | EC_FLAGS),
    row(ck::CKM_EC_EDWARDS_KEY_PAIR_GEN, EDWARDS, GEN_PAIR),
    row(ck::CKM_EDDSA, EDWARDS, SV),
    row(ck::CKM_AES_KEY_GEN, AES, GEN),
    row(ck::CKM_AES_ECB, AES, ED),
    row(ck::CKM_AES_CBC, AES, ED),
    row(ck::CKM_AES_CBC_PAD, AES, ED),
    row(ck::CKM_AES_CTR, AES, ED),
    row(ck::CKM_AES_GCM, AES, ED | WU),
    row(ck::CKM_AES_CMAC, AES, SV),
    // 16- and 32-byte keys only.
    row(ck::CKM_AES_KEY_WRAP, AES, ED | WU),
    row(ck::CKM_AES_KEY_WRAP_PAD, AES, ED | WU),
    row(ck::CKM_AES_KEY_WRAP_KWP, AES, ED | WU),
];

/// The row of a mechanism, if we serve it.
pub fn info(kind: u64) -> Option<&'static MechanismInfo> {
    MECHANISMS.iter().find(|m| m.kind == kind)
}

/// Whether a mechanism takes an RSA key (its private-key operations cost milliseconds, not
/// microseconds: the node runs them off its I/O threads).
pub fn is_rsa(kind: u64) -> bool {
    info(kind).is_some_and(|i| (i.min_key_size, i.max_key_size) == RSA)
}

/// Whether `kind` is served with all of `flags` (`CKF_SIGN`, …).
pub fn supports(kind: u64, flags: u64) -> bool {
    info(kind).is_some_and(|m| m.flags & flags == flags)
}

/// Whether a key of `key_bits` bits is in the advertised range of `kind` (converting to the
/// row's unit). `false` for mechanisms we do not serve; `true` for digests.
pub fn key_size_supported(kind: u64, key_bits: u64) -> bool {
    let Some(m) = info(kind) else {
        return false;
    };
    if m.max_key_size == 0 {
        return true;
    }
    let aes = matches!(
        kind,
        k if (ck::CKM_AES_KEY_GEN as u64..=ck::CKM_AES_CMAC as u64).contains(&k)
            || (ck::CKM_AES_KEY_WRAP as u64..=ck::CKM_AES_KEY_WRAP_KWP as u64).contains(&k)
    );
    let size = if aes { key_bits / 8 } else { key_bits };
    (m.min_key_size..=m.max_key_size).contains(&size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(MECHANISMS.windows(2).all(|w| w[0].kind < w[1].kind));
    }

    #[test]
    fn sizes_convert_by_unit() {
        assert!(key_size_supported(ck::CKM_AES_GCM as u64, 256));
        assert!(!key_size_supported(ck::CKM_AES_GCM as u64, 512));
        assert!(key_size_supported(ck::CKM_RSA_PKCS as u64, 3072));
        assert!(!key_size_supported(ck::CKM_RSA_PKCS as u64, 1024));
        assert!(key_size_supported(ck::CKM_ECDSA as u64, 521));
        assert!(key_size_supported(ck::CKM_SHA256_HMAC as u64, 32));
        assert!(key_size_supported(ck::CKM_SHA256 as u64, 0));
        assert!(!key_size_supported(0xffff_ffff, 128));
    }
}
