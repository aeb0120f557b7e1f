//! The mechanisms this build serves, with their `CK_MECHANISM_INFO`: one table that the module
//! advertises (`C_GetMechanismList`) and the node enforces, so the two cannot disagree.
//! List only what works: `pkcs11-tool --test` exercises everything advertised.

use cryptoki_sys as ck;

/// One row of `C_GetMechanismInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MechanismInfo {
    /// `CKM_*`.
    pub kind: u64,
    /// Minimum key size (bits for RSA and EC, bytes for AES, as the spec says).
    pub min_key_size: u64,
    /// Maximum key size.
    pub max_key_size: u64,
    /// `CKF_*` flags.
    pub flags: u64,
}

const SV: u64 = (ck::CKF_SIGN | ck::CKF_VERIFY) as u64;
const EC_FLAGS: u64 = (ck::CKF_EC_F_P | ck::CKF_EC_NAMEDCURVE | ck::CKF_EC_UNCOMPRESS) as u64;

const fn row(kind: ck::CK_MECHANISM_TYPE, min: u64, max: u64, flags: u64) -> MechanismInfo {
    MechanismInfo {
        kind: kind as u64,
        min_key_size: min,
        max_key_size: max,
        flags,
    }
}

/// Every mechanism served, sorted by `CKM_*` value (a test keeps it sorted).
pub const MECHANISMS: &[MechanismInfo] = &[
    row(
        ck::CKM_RSA_PKCS_KEY_PAIR_GEN,
        2048,
        4096,
        ck::CKF_GENERATE_KEY_PAIR as u64,
    ),
    row(ck::CKM_RSA_PKCS, 2048, 4096, SV),
    row(ck::CKM_SHA256_RSA_PKCS, 2048, 4096, SV),
    row(ck::CKM_SHA256_RSA_PKCS_PSS, 2048, 4096, SV),
    row(
        ck::CKM_EC_KEY_PAIR_GEN,
        256,
        256,
        ck::CKF_GENERATE_KEY_PAIR as u64 | EC_FLAGS,
    ),
    row(ck::CKM_ECDSA, 256, 256, SV | EC_FLAGS),
    row(ck::CKM_ECDSA_SHA256, 256, 256, SV | EC_FLAGS),
    row(ck::CKM_AES_KEY_GEN, 16, 32, ck::CKF_GENERATE as u64),
    row(
        ck::CKM_AES_GCM,
        16,
        32,
        (ck::CKF_ENCRYPT | ck::CKF_DECRYPT) as u64,
    ),
];

/// The row of a mechanism, if we serve it.
pub fn info(kind: u64) -> Option<&'static MechanismInfo> {
    MECHANISMS.iter().find(|m| m.kind == kind)
}

/// Whether `kind` is served with all of `flags` (`CKF_SIGN`, …).
pub fn supports(kind: u64, flags: u64) -> bool {
    info(kind).is_some_and(|m| m.flags & flags == flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(MECHANISMS.windows(2).all(|w| w[0].kind < w[1].kind));
    }
}
