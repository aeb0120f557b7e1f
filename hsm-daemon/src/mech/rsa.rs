//! RSA with aws-lc: PKCS#1 v1.5 and PSS signatures, OAEP and PKCS#1 v1.5 encryption, OAEP key
//! wrapping. `CKM_RSA_X_509` (raw RSA) is not offered: it hands out a decryption and
//! signing oracle with no padding at all.
//!
//! Signatures run on aws-lc-rs's parsed keys for SHA-256/384/512, the hot path. Its safe API
//! has no RSA signing with SHA-1 or SHA-224 and no raw PKCS#1 v1.5 operation, which
//! `CKM_RSA_PKCS` needs for an arbitrary `DigestInfo` (`pkcs11-tool --test` signs a SHA-1 one):
//! those go through `hsm_awslc`, a small FFI shim over the same aws-lc (blinded,
//! constant-time), with the key's PKCS#8 encoding. So:
//! - `CKM_RSA_PKCS` signs any input up to the modulus length less 11 bytes, and verifies by
//!   comparing what the signature opens to with the caller's input;
//! - `CKM_SHA{1,224,256,384,512}_RSA_PKCS` and `..._PSS` sign and verify; PSS takes any salt
//!   length that fits the modulus, MGF1 of the same hash (mixed hash/MGF is
//!   `MechanismParamInvalid`).
//! - OAEP exists for SHA-1/256/384/512 with MGF1 of the same hash, and any label. (Java's
//!   default "OAEPWithSHA-256AndMGF1Padding" pairs SHA-256 with MGF1-SHA-1: refused as
//!   `MechanismParamInvalid`; ask for MGF1-SHA-256.)
//!
//! PKCS#1 v1.5 decryption and the Bleichenbacher/Marvin attacks: the private-key operation and
//! the padding check run in aws-lc, in constant time (blinded modular exponentiation, a
//! branch-free padding check). What PKCS#11 itself requires cannot be hidden: `C_Decrypt`
//! answers `CKR_ENCRYPTED_DATA_INVALID` for a bad padding and the plaintext for a good one, so
//! whoever may call `C_Decrypt` with a key can use it as a padding oracle (the original
//! Bleichenbacher attack needs only that), and the response time of a whole request is not
//! constant either. The node does not add to it (the error says only "decryption failed");
//! deployments should give `CKM_RSA_PKCS` decryption only to applications that never decrypt
//! attacker-chosen ciphertexts, and prefer `CKM_RSA_PKCS_OAEP` (`CKA_ALLOWED_MECHANISMS`).

use super::{
    Collected, KeyRef, Mech, Operation, Registry, SignInput, Started, decrypt_failed,
    expect_no_signature, expect_signature, failed, hash_of_ckm, key_type_inconsistent, no_params,
    param_invalid, signature_invalid, unwrap_failed,
};
use crate::error::Error;
use crate::keys::{PublicKey, SecretKey};
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
    OaepAlgorithm, OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{self, RsaParameters, RsaPssSaltLength, RsaSignatureEncoding};
use cryptoki_sys as ck;
use hsm_proto::{ErrorCode, Mechanism, MechanismParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use zeroize::Zeroizing;

/// The DER `DigestInfo` prefixes (with NULL parameters, the form PKCS#1 prescribes).
const DIGEST_INFO: [(&[u8], &digest::Algorithm); 5] = [
    (
        &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
    ),
    (
        &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x04, 0x05, 0x00, 0x04, 0x1c,
        ],
        &digest::SHA224,
    ),
    (
        &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
        &digest::SHA256,
    ),
    (
        &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
        &digest::SHA384,
    ),
    (
        &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
        &digest::SHA512,
    ),
];

/// The hash inside a standard `DigestInfo`.
fn split_digest_info(data: &[u8]) -> Option<(&'static digest::Algorithm, &[u8])> {
    DIGEST_INFO.iter().find_map(|(prefix, alg)| {
        let rest = data.strip_prefix(*prefix)?;
        (rest.len() == alg.output_len).then_some((*alg, rest))
    })
}

fn is(alg: &'static digest::Algorithm, other: &'static digest::Algorithm) -> bool {
    alg == other
}

fn pkcs1_signing(alg: &'static digest::Algorithm) -> Option<&'static RsaSignatureEncoding> {
    if is(alg, &digest::SHA256) {
        Some(&signature::RSA_PKCS1_SHA256)
    } else if is(alg, &digest::SHA384) {
        Some(&signature::RSA_PKCS1_SHA384)
    } else if is(alg, &digest::SHA512) {
        Some(&signature::RSA_PKCS1_SHA512)
    } else {
        None
    }
}

fn pkcs1_verification(alg: &'static digest::Algorithm) -> Option<&'static RsaParameters> {
    if is(alg, &digest::SHA1_FOR_LEGACY_USE_ONLY) {
        Some(&signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY)
    } else if is(alg, &digest::SHA256) {
        Some(&signature::RSA_PKCS1_2048_8192_SHA256)
    } else if is(alg, &digest::SHA384) {
        Some(&signature::RSA_PKCS1_2048_8192_SHA384)
    } else if is(alg, &digest::SHA512) {
        Some(&signature::RSA_PKCS1_2048_8192_SHA512)
    } else {
        None
    }
}

/// aws-lc-rs takes PSS settings as `&'static`; a salt length other than the hash length gets
/// one leaked, cached value per (hash, salt) pair. Bounded: three hashes times the salt lengths
/// an 8192-bit modulus allows, a few hundred kilobytes at worst.
fn leaked<T: 'static + Sync + Send>(
    cache: &'static OnceLock<Mutex<HashMap<(usize, u16), &'static T>>>,
    key: (usize, u16),
    make: impl FnOnce() -> T,
) -> &'static T {
    let map = cache.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another thread panicked while inserting: the map is intact.
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(key)
        .or_insert_with(|| Box::leak(Box::new(make())))
}

fn pss_signing(
    alg: &'static digest::Algorithm,
    salt: u16,
) -> Option<&'static RsaSignatureEncoding> {
    let base: &'static RsaSignatureEncoding = if is(alg, &digest::SHA256) {
        &signature::RSA_PSS_SHA256
    } else if is(alg, &digest::SHA384) {
        &signature::RSA_PSS_SHA384
    } else if is(alg, &digest::SHA512) {
        &signature::RSA_PSS_SHA512
    } else {
        return None;
    };
    if usize::from(salt) == alg.output_len {
        return Some(base);
    }
    static CACHE: OnceLock<Mutex<HashMap<(usize, u16), &'static RsaSignatureEncoding>>> =
        OnceLock::new();
    Some(leaked(&CACHE, (alg.output_len, salt), || {
        let base = match alg.output_len {
            32 => signature::RSA_PSS_SHA256,
            48 => signature::RSA_PSS_SHA384,
            _ => signature::RSA_PSS_SHA512,
        };
        base.with_pss_salt_length(RsaPssSaltLength::Custom(salt))
    }))
}

fn pss_verification(alg: &'static digest::Algorithm, salt: u16) -> Option<&'static RsaParameters> {
    let base: &'static RsaParameters = if is(alg, &digest::SHA256) {
        &signature::RSA_PSS_2048_8192_SHA256
    } else if is(alg, &digest::SHA384) {
        &signature::RSA_PSS_2048_8192_SHA384
    } else if is(alg, &digest::SHA512) {
        &signature::RSA_PSS_2048_8192_SHA512
    } else {
        return None;
    };
    if usize::from(salt) == alg.output_len {
        return Some(base);
    }
    static CACHE: OnceLock<Mutex<HashMap<(usize, u16), &'static RsaParameters>>> = OnceLock::new();
    Some(leaked(&CACHE, (alg.output_len, salt), || {
        let base = match alg.output_len {
            32 => signature::RSA_PSS_2048_8192_SHA256,
            48 => signature::RSA_PSS_2048_8192_SHA384,
            _ => signature::RSA_PSS_2048_8192_SHA512,
        };
        base.with_pss_salt_length(RsaPssSaltLength::Custom(salt))
    }))
}

fn mgf1_of(alg: &'static digest::Algorithm) -> u64 {
    (match alg.output_len {
        20 => ck::CKG_MGF1_SHA1,
        28 => ck::CKG_MGF1_SHA224,
        32 => ck::CKG_MGF1_SHA256,
        48 => ck::CKG_MGF1_SHA384,
        _ => ck::CKG_MGF1_SHA512,
    }) as u64
}

/// PSS parameters: the hash and salt length. `required` is the mechanism's own hash for the
/// `CKM_SHA*_RSA_PKCS_PSS` forms.
fn pss_params(
    mech: &Mechanism,
    required: Option<&'static digest::Algorithm>,
) -> Result<(&'static digest::Algorithm, u16), Error> {
    let MechanismParams::Pss {
        hash,
        mgf,
        salt_len,
    } = &mech.params
    else {
        return Err(param_invalid("RSA-PSS needs CK_RSA_PKCS_PSS_PARAMS"));
    };
    let alg = hash_of_ckm(*hash).ok_or_else(|| param_invalid("RSA-PSS: unknown hashAlg"))?;
    if required.is_some_and(|r| !is(r, alg)) {
        return Err(param_invalid(
            "RSA-PSS: hashAlg must be the mechanism's own hash",
        ));
    }
    if pss_signing(alg, 0).is_none() && legacy_hash(alg).is_none() {
        return Err(param_invalid(
            "RSA-PSS: supported hashes are SHA-1, SHA-224, SHA-256, SHA-384 and SHA-512",
        ));
    }
    if *mgf != mgf1_of(alg) {
        return Err(param_invalid("RSA-PSS: mgf must be MGF1 with hashAlg"));
    }
    let salt = u16::try_from(*salt_len).map_err(|_| param_invalid("RSA-PSS: sLen too large"))?;
    Ok((alg, salt))
}

/// The legacy hashes that go through `hsm_awslc`.
fn legacy_hash(alg: &'static digest::Algorithm) -> Option<hsm_awslc::Hash> {
    if is(alg, &digest::SHA1_FOR_LEGACY_USE_ONLY) {
        Some(hsm_awslc::Hash::Sha1)
    } else if is(alg, &digest::SHA224) {
        Some(hsm_awslc::Hash::Sha224)
    } else {
        None
    }
}

/// The DER `DigestInfo` of a digest made with `alg`.
fn digest_info(alg: &'static digest::Algorithm, hash: &[u8]) -> Result<Vec<u8>, Error> {
    let (prefix, _) = DIGEST_INFO
        .iter()
        .find(|(_, a)| is(a, alg))
        .ok_or_else(|| failed("DigestInfo"))?;
    let mut info = prefix.to_vec();
    info.extend_from_slice(hash);
    Ok(info)
}

/// PKCS#1 v1.5 over `input` as given, through aws-lc's C API (see the module docs).
fn sign_pkcs1_raw(key: &SecretKey, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    hsm_awslc::rsa_pkcs1_sign_raw(&key.wrap_payload(), input)
        .map(Zeroizing::new)
        .map_err(|_| failed("RSA signing"))
}

/// Whether a PKCS#1 v1.5 signature opens to exactly `expected` (public data: no secret is
/// compared here).
fn verify_pkcs1_raw(der: &[u8], sig: &[u8], expected: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    match hsm_awslc::rsa_pkcs1_recover(der, sig) {
        Ok(opened) if opened == expected => Ok(Zeroizing::new(Vec::new())),
        _ => Err(signature_invalid()),
    }
}

fn pss_digest_len(alg: &'static digest::Algorithm, data: &[u8]) -> Result<(), Error> {
    if data.len() == alg.output_len {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::DataLenRange,
            format!("CKM_RSA_PKCS_PSS takes a {}-byte hash", alg.output_len),
        ))
    }
}

/// `emLen - hLen - 2`, the largest PSS salt a modulus of `bits` allows.
fn max_pss_salt(bits: u64, alg: &'static digest::Algorithm) -> usize {
    ((bits as usize).saturating_sub(1).div_ceil(8)).saturating_sub(alg.output_len + 2)
}

#[derive(Clone, Copy)]
enum Scheme {
    /// `CKM_RSA_PKCS`: the input is a `DigestInfo`.
    Pkcs1DigestInfo,
    /// PKCS#1 v1.5 over a digest of this algorithm.
    Pkcs1(&'static digest::Algorithm),
    /// PSS over a digest of this algorithm, with this salt length.
    Pss(&'static digest::Algorithm, u16),
}

struct SignOp {
    key: Arc<SecretKey>,
    input: SignInput,
    scheme: Scheme,
}

fn cannot_sign_digest_info() -> Error {
    Error::new(
        ErrorCode::DataInvalid,
        "CKM_RSA_PKCS signs a DER DigestInfo of SHA-256, SHA-384 or SHA-512 only",
    )
}

impl Operation for SignOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.input.update(data)?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        let this = *self;
        expect_no_signature(signature)?;
        let SecretKey::Rsa(pair) = this.key.as_ref() else {
            return Err(failed("RSA key access"));
        };
        let data = this.input.finish();
        // What aws-lc-rs cannot sign goes through aws-lc's C API (module docs).
        match this.scheme {
            Scheme::Pkcs1DigestInfo
                if split_digest_info(&data)
                    .and_then(|(a, _)| pkcs1_signing(a))
                    .is_none() =>
            {
                return sign_pkcs1_raw(&this.key, &data);
            }
            Scheme::Pkcs1(alg) if pkcs1_signing(alg).is_none() => {
                return sign_pkcs1_raw(&this.key, &digest_info(alg, &data)?);
            }
            Scheme::Pss(alg, salt) if pss_signing(alg, salt).is_none() => {
                pss_digest_len(alg, &data)?;
                let hash = legacy_hash(alg).ok_or_else(|| failed("RSA signing"))?;
                return hsm_awslc::rsa_pss_sign(
                    &this.key.wrap_payload(),
                    hash,
                    &data,
                    usize::from(salt),
                )
                .map(Zeroizing::new)
                .map_err(|_| failed("RSA signing"));
            }
            _ => {}
        }
        let (encoding, alg, hash): (&'static RsaSignatureEncoding, _, &[u8]) = match this.scheme {
            Scheme::Pkcs1DigestInfo => {
                let (alg, hash) = split_digest_info(&data).ok_or_else(cannot_sign_digest_info)?;
                (
                    pkcs1_signing(alg).ok_or_else(cannot_sign_digest_info)?,
                    alg,
                    hash,
                )
            }
            Scheme::Pkcs1(alg) => (
                pkcs1_signing(alg).ok_or_else(|| failed("RSA signing"))?,
                alg,
                &data,
            ),
            Scheme::Pss(alg, salt) => {
                if data.len() != alg.output_len {
                    return Err(Error::new(
                        ErrorCode::DataLenRange,
                        format!("CKM_RSA_PKCS_PSS signs a {}-byte hash", alg.output_len),
                    ));
                }
                (
                    pss_signing(alg, salt).ok_or_else(|| failed("RSA signing"))?,
                    alg,
                    &data,
                )
            }
        };
        let digest = Digest::import_less_safe(hash, alg).map_err(|_| failed("digest import"))?;
        let mut sig = vec![0u8; pair.modulus_len()];
        pair.signing
            .sign_digest(encoding, &digest, &mut sig)
            .map_err(|_| failed("RSA signing"))?;
        Ok(Zeroizing::new(sig))
    }
}

struct VerifyOp {
    der: Vec<u8>,
    modulus_len: usize,
    input: SignInput,
    scheme: Scheme,
}

impl Operation for VerifyOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.input.update(data)?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        let this = *self;
        let sig = expect_signature(signature)?;
        if sig.len() != this.modulus_len {
            return Err(Error::new(
                ErrorCode::SignatureLenRange,
                format!("RSA signatures for this key are {} bytes", this.modulus_len),
            ));
        }
        let data = this.input.finish();
        match this.scheme {
            Scheme::Pkcs1DigestInfo
                if split_digest_info(&data)
                    .and_then(|(a, _)| pkcs1_verification(a))
                    .is_none() =>
            {
                return verify_pkcs1_raw(&this.der, sig, &data);
            }
            Scheme::Pkcs1(alg) if pkcs1_verification(alg).is_none() => {
                return verify_pkcs1_raw(&this.der, sig, &digest_info(alg, &data)?);
            }
            Scheme::Pss(alg, salt) if pss_verification(alg, salt).is_none() => {
                pss_digest_len(alg, &data)?;
                let hash = legacy_hash(alg).ok_or_else(|| failed("RSA verification"))?;
                return hsm_awslc::rsa_pss_verify(&this.der, hash, &data, sig, usize::from(salt))
                    .map(|()| Zeroizing::new(Vec::new()))
                    .map_err(|_| signature_invalid());
            }
            _ => {}
        }
        let (params, alg, hash): (&'static RsaParameters, _, &[u8]) = match this.scheme {
            Scheme::Pkcs1DigestInfo => {
                let unsupported = || {
                    Error::new(
                        ErrorCode::DataInvalid,
                        "CKM_RSA_PKCS verifies a DER DigestInfo of SHA-1, SHA-256, SHA-384 or SHA-512",
                    )
                };
                let (alg, hash) = split_digest_info(&data).ok_or_else(unsupported)?;
                (pkcs1_verification(alg).ok_or_else(unsupported)?, alg, hash)
            }
            Scheme::Pkcs1(alg) => (
                pkcs1_verification(alg).ok_or_else(|| failed("RSA verification"))?,
                alg,
                &data,
            ),
            Scheme::Pss(alg, salt) => {
                if data.len() != alg.output_len {
                    return Err(Error::new(
                        ErrorCode::DataLenRange,
                        format!("CKM_RSA_PKCS_PSS verifies a {}-byte hash", alg.output_len),
                    ));
                }
                (
                    pss_verification(alg, salt).ok_or_else(|| failed("RSA verification"))?,
                    alg,
                    &data,
                )
            }
        };
        let digest = Digest::import_less_safe(hash, alg).map_err(|_| failed("digest import"))?;
        signature::UnparsedPublicKey::new(params, &this.der)
            .verify_digest(&digest, sig)
            .map(|()| Zeroizing::new(Vec::new()))
            .map_err(|_| signature_invalid())
    }
}

fn private(mech: &Mechanism, key: &KeyRef) -> Result<Arc<SecretKey>, Error> {
    match key {
        KeyRef::Secret(k) if matches!(k.as_ref(), SecretKey::Rsa(_)) => Ok(k.clone()),
        _ => Err(key_type_inconsistent(mech, "an RSA private key")),
    }
}

/// The public key to verify or encrypt with: a public key object, or a private key's half.
fn public(mech: &Mechanism, key: &KeyRef) -> Result<(Vec<u8>, usize, u64), Error> {
    let public = match key {
        KeyRef::Public(p) => p.as_ref().clone(),
        KeyRef::Secret(k) if matches!(k.as_ref(), SecretKey::Rsa(_)) => k
            .public()
            .ok_or_else(|| key_type_inconsistent(mech, "an RSA key"))?,
        _ => return Err(key_type_inconsistent(mech, "an RSA public key")),
    };
    let bits = public.size_bits();
    match public {
        PublicKey::Rsa { der, modulus, .. } => Ok((der, modulus.len(), bits)),
        _ => Err(key_type_inconsistent(mech, "an RSA public key")),
    }
}

fn modulus_bits(key: &SecretKey) -> u64 {
    key.size_bits()
}

/// A signature mechanism: the raw or hashing form of PKCS#1 v1.5 or PSS.
struct RsaSig {
    /// `None` for the raw forms (`CKM_RSA_PKCS`, `CKM_RSA_PKCS_PSS`).
    hash: Option<&'static digest::Algorithm>,
    pss: bool,
    can_sign: bool,
}

impl RsaSig {
    fn scheme(
        &self,
        mech: &Mechanism,
        bits: u64,
        signing: bool,
    ) -> Result<(Scheme, SignInput), Error> {
        if self.pss {
            let (alg, salt) = pss_params(mech, self.hash)?;
            if signing && usize::from(salt) > max_pss_salt(bits, alg) {
                return Err(param_invalid("RSA-PSS: sLen is too large for this key"));
            }
            let input = match self.hash {
                Some(h) => SignInput::hash(h),
                None => SignInput::raw(alg.output_len),
            };
            return Ok((Scheme::Pss(alg, salt), input));
        }
        no_params(mech)?;
        Ok(match self.hash {
            Some(h) => (Scheme::Pkcs1(h), SignInput::hash(h)),
            // A DigestInfo fits in the modulus less 11 bytes of padding.
            None => (
                Scheme::Pkcs1DigestInfo,
                SignInput::raw((bits as usize).div_ceil(8).saturating_sub(11)),
            ),
        })
    }
}

impl Mech for RsaSig {
    fn sign(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        if !self.can_sign {
            return Err(super::not_for(mech, "signing"));
        }
        let key = private(mech, key)?;
        let (scheme, input) = self.scheme(mech, modulus_bits(&key), true)?;
        Started::op(SignOp { key, input, scheme })
    }

    fn verify(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        let (der, modulus_len, bits) = public(mech, key)?;
        let (scheme, input) = self.scheme(mech, bits, false)?;
        Started::op(VerifyOp {
            der,
            modulus_len,
            input,
            scheme,
        })
    }
}

// ----- encryption ---------------------------------------------------------------------------

fn oaep_params(
    mech: &Mechanism,
) -> Result<(&'static OaepAlgorithm, usize, Option<Vec<u8>>), Error> {
    let MechanismParams::Oaep { hash, mgf, label } = &mech.params else {
        return Err(param_invalid("RSA-OAEP needs CK_RSA_PKCS_OAEP_PARAMS"));
    };
    let alg = hash_of_ckm(*hash).ok_or_else(|| param_invalid("RSA-OAEP: unknown hashAlg"))?;
    let oaep: &'static OaepAlgorithm = match alg.output_len {
        20 => &OAEP_SHA1_MGF1SHA1,
        32 => &OAEP_SHA256_MGF1SHA256,
        48 => &OAEP_SHA384_MGF1SHA384,
        64 => &OAEP_SHA512_MGF1SHA512,
        _ => {
            return Err(param_invalid(
                "RSA-OAEP: supported hashes are SHA-1, SHA-256, SHA-384 and SHA-512",
            ));
        }
    };
    if *mgf != mgf1_of(alg) {
        return Err(param_invalid("RSA-OAEP: mgf must be MGF1 with hashAlg"));
    }
    let label = (!label.is_empty()).then(|| label.clone());
    Ok((oaep, alg.output_len, label))
}

enum Padding {
    Oaep(&'static OaepAlgorithm, Option<Vec<u8>>),
    Pkcs1,
}

enum PublicEncrypting {
    Oaep(OaepPublicEncryptingKey),
    Pkcs1(Pkcs1PublicEncryptingKey),
}

fn seal(
    key: &PublicEncrypting,
    padding: &Padding,
    modulus_len: usize,
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; modulus_len];
    let len = match (key, padding) {
        (PublicEncrypting::Oaep(k), Padding::Oaep(alg, label)) => k
            .encrypt(alg, plaintext, &mut out, label.as_deref())
            .map_err(|_| failed("RSA encryption"))?
            .len(),
        (PublicEncrypting::Pkcs1(k), Padding::Pkcs1) => k
            .encrypt(plaintext, &mut out)
            .map_err(|_| failed("RSA encryption"))?
            .len(),
        _ => return Err(failed("RSA encryption")),
    };
    out.truncate(len);
    Ok(out)
}

/// `None` if the ciphertext does not decrypt (bad padding, wrong length, …: not told apart).
fn open(key: &SecretKey, padding: &Padding, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let SecretKey::Rsa(pair) = key else {
        return None;
    };
    if ciphertext.len() != pair.modulus_len() {
        return None;
    }
    let mut out = Zeroizing::new(vec![0u8; pair.modulus_len()]);
    let len = match padding {
        Padding::Oaep(alg, label) => pair
            .oaep
            .decrypt(alg, ciphertext, &mut out, label.as_deref())
            .ok()?
            .len(),
        Padding::Pkcs1 => pair.pkcs1.decrypt(ciphertext, &mut out).ok()?.len(),
    };
    out.truncate(len);
    Some(out)
}

struct EncryptOp {
    key: PublicEncrypting,
    padding: Padding,
    modulus_len: usize,
    input: Collected,
}

impl Operation for EncryptOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.input.push(data)?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        expect_no_signature(signature)?;
        seal(&self.key, &self.padding, self.modulus_len, &self.input.data).map(Zeroizing::new)
    }
}

struct DecryptOp {
    key: Arc<SecretKey>,
    padding: Padding,
    modulus_len: usize,
    input: Collected,
}

impl Operation for DecryptOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.input.push(data)?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        expect_no_signature(signature)?;
        if self.input.data.len() != self.modulus_len {
            return Err(Error::new(
                ErrorCode::EncryptedDataLenRange,
                format!(
                    "RSA ciphertexts for this key are {} bytes",
                    self.modulus_len
                ),
            ));
        }
        open(&self.key, &self.padding, &self.input.data).ok_or_else(decrypt_failed)
    }
}

/// `CKM_RSA_PKCS_OAEP` (`oaep: true`) or `CKM_RSA_PKCS` encryption.
struct RsaEnc {
    oaep: bool,
}

impl RsaEnc {
    /// The padding and its overhead in bytes.
    fn padding(&self, mech: &Mechanism) -> Result<(Padding, usize), Error> {
        if self.oaep {
            let (alg, hash_len, label) = oaep_params(mech)?;
            Ok((Padding::Oaep(alg, label), 2 * hash_len + 2))
        } else {
            no_params(mech)?;
            Ok((Padding::Pkcs1, 11))
        }
    }

    /// `der` is `RSAPublicKey`; aws-lc-rs reads encryption keys as `SubjectPublicKeyInfo`.
    fn encrypting(&self, der: &[u8]) -> Result<PublicEncrypting, Error> {
        let spki = crate::der::subject_public_key_info(crate::der::KeyAlgorithm::Rsa, der);
        let key = PublicEncryptingKey::from_der(&spki).map_err(|_| failed("RSA key setup"))?;
        Ok(if self.oaep {
            PublicEncrypting::Oaep(
                OaepPublicEncryptingKey::new(key).map_err(|_| failed("RSA key setup"))?,
            )
        } else {
            PublicEncrypting::Pkcs1(
                Pkcs1PublicEncryptingKey::new(key).map_err(|_| failed("RSA key setup"))?,
            )
        })
    }
}

impl Mech for RsaEnc {
    fn encrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        let (padding, overhead) = self.padding(mech)?;
        let (der, modulus_len, _) = public(mech, key)?;
        Started::op(EncryptOp {
            key: self.encrypting(&der)?,
            padding,
            modulus_len,
            input: Collected::new(
                modulus_len.saturating_sub(overhead),
                ErrorCode::DataLenRange,
            ),
        })
    }

    fn decrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        let (padding, _) = self.padding(mech)?;
        let key = private(mech, key)?;
        let modulus_len = match key.as_ref() {
            SecretKey::Rsa(pair) => pair.modulus_len(),
            _ => return Err(key_type_inconsistent(mech, "an RSA private key")),
        };
        Started::op(DecryptOp {
            key,
            padding,
            modulus_len,
            input: Collected::new(modulus_len, ErrorCode::EncryptedDataLenRange),
        })
    }

    fn wrap(&self, mech: &Mechanism, key: &KeyRef, payload: &[u8]) -> Result<Vec<u8>, Error> {
        if !self.oaep {
            return Err(super::not_for(mech, "wrapping"));
        }
        let (padding, overhead) = self.padding(mech)?;
        let (der, modulus_len, _) = public(mech, key)?;
        if payload.len() > modulus_len.saturating_sub(overhead) {
            return Err(Error::new(
                ErrorCode::KeyNotWrappable,
                format!(
                    "RSA-OAEP with this key and hash wraps at most {} bytes",
                    modulus_len.saturating_sub(overhead)
                ),
            ));
        }
        seal(&self.encrypting(&der)?, &padding, modulus_len, payload)
    }

    fn unwrap(
        &self,
        mech: &Mechanism,
        key: &KeyRef,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        if !self.oaep {
            return Err(super::not_for(mech, "unwrapping"));
        }
        let (padding, _) = self.padding(mech)?;
        let key = private(mech, key)?;
        open(&key, &padding, wrapped).ok_or_else(unwrap_failed)
    }
}

/// `CKM_RSA_PKCS` signs and encrypts: one registry entry dispatching to both.
struct RsaPkcs {
    sig: RsaSig,
    enc: RsaEnc,
}

impl Mech for RsaPkcs {
    fn sign(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        self.sig.sign(mech, key)
    }
    fn verify(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        self.sig.verify(mech, key)
    }
    fn encrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        self.enc.encrypt(mech, key)
    }
    fn decrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        self.enc.decrypt(mech, key)
    }
}

pub(super) fn register(r: &mut Registry) {
    let sig = |hash, pss, can_sign| RsaSig {
        hash,
        pss,
        can_sign,
    };
    r.add(
        ck::CKM_RSA_PKCS,
        RsaPkcs {
            sig: sig(None, false, true),
            enc: RsaEnc { oaep: false },
        },
    );
    r.add(ck::CKM_RSA_PKCS_OAEP, RsaEnc { oaep: true });
    r.add(ck::CKM_RSA_PKCS_PSS, sig(None, true, true));
    r.add(
        ck::CKM_SHA1_RSA_PKCS,
        sig(Some(&digest::SHA1_FOR_LEGACY_USE_ONLY), false, true),
    );
    r.add(
        ck::CKM_SHA224_RSA_PKCS,
        sig(Some(&digest::SHA224), false, true),
    );
    r.add(
        ck::CKM_SHA1_RSA_PKCS_PSS,
        sig(Some(&digest::SHA1_FOR_LEGACY_USE_ONLY), true, true),
    );
    r.add(
        ck::CKM_SHA224_RSA_PKCS_PSS,
        sig(Some(&digest::SHA224), true, true),
    );
    r.add(
        ck::CKM_SHA256_RSA_PKCS,
        sig(Some(&digest::SHA256), false, true),
    );
    r.add(
        ck::CKM_SHA384_RSA_PKCS,
        sig(Some(&digest::SHA384), false, true),
    );
    r.add(
        ck::CKM_SHA512_RSA_PKCS,
        sig(Some(&digest::SHA512), false, true),
    );
    r.add(
        ck::CKM_SHA256_RSA_PKCS_PSS,
        sig(Some(&digest::SHA256), true, true),
    );
    r.add(
        ck::CKM_SHA384_RSA_PKCS_PSS,
        sig(Some(&digest::SHA384), true, true),
    );
    r.add(
        ck::CKM_SHA512_RSA_PKCS_PSS,
        sig(Some(&digest::SHA512), true, true),
    );
}
