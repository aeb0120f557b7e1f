//! Key material in ready-to-use form, and the mechanisms that use it.
//!
//! Keys are parsed once (at generation, import or load) into aws-lc-rs objects; an operation
//! never re-parses. Serialized material exists only transiently, in `Zeroizing` buffers, on
//! its way to being wrapped under the cluster domain key.

use crate::der;
use crate::error::Error;
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey};
use cryptoki_sys as ck;
use hsm_proto::{ErrorCode, Mechanism, MechanismParams};
use std::fmt;
use zeroize::Zeroizing;

/// Uncompressed P-256 point length.
pub const P256_POINT_LEN: usize = 65;

const TAG_EC_P256: u8 = 1;
const TAG_RSA: u8 = 2;
const TAG_AES: u8 = 3;

/// A private or secret key, ready to use. Zeroized on drop by aws-lc (EVP_PKEY_free and the
/// AES key schedule's cleanse) and by `Zeroizing` for raw bytes.
pub enum SecretKey {
    /// P-256 ECDSA private key.
    EcP256(EcdsaKeyPair),
    /// RSA private key.
    Rsa(RsaKeyPair),
    /// AES key: GCM context plus the raw bytes (for CKA_VALUE of extractable keys).
    Aes {
        /// GCM key.
        gcm: LessSafeKey,
        /// Raw key.
        bytes: Zeroizing<Vec<u8>>,
    },
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretKey::EcP256(_) => "SecretKey::EcP256([REDACTED])",
            SecretKey::Rsa(_) => "SecretKey::Rsa([REDACTED])",
            SecretKey::Aes { .. } => "SecretKey::Aes([REDACTED])",
        })
    }
}

/// A public key, ready to verify with.
#[derive(Clone, Debug)]
pub enum PublicKey {
    /// P-256 uncompressed point.
    EcP256 {
        /// `04 || X || Y`.
        point: Vec<u8>,
    },
    /// RSA.
    Rsa {
        /// `RSAPublicKey` DER, what aws-lc-rs verifies with.
        der: Vec<u8>,
        /// Modulus, big-endian.
        modulus: Vec<u8>,
        /// Public exponent, big-endian.
        exponent: Vec<u8>,
    },
}

fn failed(what: &str) -> Error {
    Error::new(ErrorCode::FunctionFailed, format!("{what} failed"))
}

/// A freshly generated key pair.
#[derive(Debug)]
pub struct GeneratedPair {
    /// The private half, ready to use.
    pub private: SecretKey,
    /// The public half.
    pub public: PublicKey,
    /// The private half serialized for wrapping.
    pub material: Zeroizing<Vec<u8>>,
}

/// Generates a P-256 key pair.
///
/// # Errors
/// `FunctionFailed` if aws-lc fails.
pub fn generate_ec_p256() -> Result<GeneratedPair, Error> {
    let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| failed("EC key generation"))?;
    let pkcs8 = pair.to_pkcs8v1().map_err(|_| failed("EC key encoding"))?;
    let mut material = Zeroizing::new(vec![TAG_EC_P256]);
    material.extend_from_slice(pkcs8.as_ref());
    let public = PublicKey::EcP256 {
        point: pair.public_key().as_ref().to_vec(),
    };
    Ok(GeneratedPair {
        private: SecretKey::EcP256(pair),
        public,
        material,
    })
}

/// Generates an RSA key pair of 2048, 3072 or 4096 bits with exponent 65537.
///
/// # Errors
/// `KeySizeRange` for other sizes; `FunctionFailed` if aws-lc fails.
pub fn generate_rsa(bits: u64) -> Result<GeneratedPair, Error> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => {
            return Err(Error::new(
                ErrorCode::KeySizeRange,
                format!("CKA_MODULUS_BITS {other}: RSA keys are 2048, 3072 or 4096 bits"),
            ));
        }
    };
    let pair = RsaKeyPair::generate(size).map_err(|_| failed("RSA key generation"))?;
    let pkcs8 = pair.as_der().map_err(|_| failed("RSA key encoding"))?;
    let mut material = Zeroizing::new(vec![TAG_RSA]);
    material.extend_from_slice(pkcs8.as_ref());
    let public = rsa_public(pair.public_key().as_ref())?;
    Ok(GeneratedPair {
        private: SecretKey::Rsa(pair),
        public,
        material,
    })
}

fn rsa_public(der: &[u8]) -> Result<PublicKey, Error> {
    let (modulus, exponent) =
        der::parse_rsa_public_key(der).ok_or_else(|| failed("RSA public key decoding"))?;
    Ok(PublicKey::Rsa {
        der: der.to_vec(),
        modulus,
        exponent,
    })
}

/// Generates an AES key of 16, 24 or 32 bytes; returns the key and its material.
///
/// # Errors
/// `KeySizeRange` for other lengths.
pub fn generate_aes(len: u64) -> Result<(SecretKey, Zeroizing<Vec<u8>>), Error> {
    if !matches!(len, 16 | 24 | 32) {
        return Err(Error::new(
            ErrorCode::KeySizeRange,
            format!("CKA_VALUE_LEN {len}: AES keys are 16, 24 or 32 bytes"),
        ));
    }
    let mut bytes = Zeroizing::new(vec![0u8; len as usize]);
    crate::seal::random_bytes(&mut bytes)?;
    let mut material = Zeroizing::new(vec![TAG_AES]);
    material.extend_from_slice(&bytes);
    Ok((aes_key(bytes)?, material))
}

fn aes_key(bytes: Zeroizing<Vec<u8>>) -> Result<SecretKey, Error> {
    let alg = match bytes.len() {
        16 => &aead::AES_128_GCM,
        24 => &aead::AES_192_GCM,
        32 => &aead::AES_256_GCM,
        _ => return Err(Error::device("stored AES key has a bad length")),
    };
    let unbound = UnboundKey::new(alg, &bytes).map_err(|_| failed("AES key setup"))?;
    Ok(SecretKey::Aes {
        gcm: LessSafeKey::new(unbound),
        bytes,
    })
}

/// Parses serialized material (after unwrapping) into a ready key.
///
/// # Errors
/// `DeviceError` if the material is not a key we wrote.
pub fn parse_material(material: &[u8]) -> Result<SecretKey, Error> {
    let bad = || Error::device("unwrapped key material is not a valid key");
    let (&tag, body) = material.split_first().ok_or_else(bad)?;
    match tag {
        TAG_EC_P256 => EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, body)
            .map(SecretKey::EcP256)
            .map_err(|_| bad()),
        TAG_RSA => RsaKeyPair::from_pkcs8(body)
            .map(SecretKey::Rsa)
            .map_err(|_| bad()),
        TAG_AES => aes_key(Zeroizing::new(body.to_vec())),
        _ => Err(bad()),
    }
}

/// Builds a P-256 public key from `CKA_EC_POINT`, checking the point is on the curve.
///
/// # Errors
/// `AttributeValueInvalid` if it is not a valid P-256 point.
pub fn ec_p256_public_from_attribute(value: &[u8]) -> Result<PublicKey, Error> {
    let invalid = || {
        Error::new(
            ErrorCode::AttributeValueInvalid,
            "CKA_EC_POINT is not a valid P-256 point",
        )
    };
    let point = der::ec_point_from_attribute(value, P256_POINT_LEN).ok_or_else(invalid)?;
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
        .parse()
        .map_err(|_| invalid())?;
    Ok(PublicKey::EcP256 { point })
}

/// Builds an RSA public key from `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`, checking it.
///
/// # Errors
/// `AttributeValueInvalid` if the key is malformed or under 2048 bits.
pub fn rsa_public_from_components(modulus: &[u8], exponent: &[u8]) -> Result<PublicKey, Error> {
    let der = der::rsa_public_key(modulus, exponent);
    UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &der)
        .parse()
        .map_err(|_| {
            Error::new(
                ErrorCode::AttributeValueInvalid,
                "CKA_MODULUS/CKA_PUBLIC_EXPONENT do not form a valid RSA key of 2048 to 8192 bits",
            )
        })?;
    rsa_public(&der)
}

impl SecretKey {
    /// The public half of a private key.
    pub fn public(&self) -> Option<PublicKey> {
        match self {
            SecretKey::EcP256(p) => Some(PublicKey::EcP256 {
                point: p.public_key().as_ref().to_vec(),
            }),
            SecretKey::Rsa(p) => rsa_public(p.public_key().as_ref()).ok(),
            SecretKey::Aes { .. } => None,
        }
    }

    /// The `CKA_VALUE` of a key whose attributes allow revealing it (EC private scalar, AES
    /// key). `None` where the value has no single-attribute form (RSA).
    pub fn value(&self) -> Option<Zeroizing<Vec<u8>>> {
        use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
        match self {
            SecretKey::EcP256(p) => {
                let bin: EcPrivateKeyBin<'_> = p.private_key().as_be_bytes().ok()?;
                Some(Zeroizing::new(bin.as_ref().to_vec()))
            }
            SecretKey::Aes { bytes, .. } => Some(Zeroizing::new(bytes.to_vec())),
            SecretKey::Rsa(_) => None,
        }
    }
}

fn mechanism_invalid(mech: &Mechanism, key: &str) -> Error {
    Error::new(
        ErrorCode::KeyTypeInconsistent,
        format!("mechanism {:#x} cannot be used with a {key} key", mech.kind),
    )
}

fn param_invalid(message: &str) -> Error {
    Error::new(ErrorCode::MechanismParamInvalid, message)
}

/// The digest inside a PKCS#1 `DigestInfo`, for `CKM_RSA_PKCS` (the caller hashed).
fn split_digest_info(data: &[u8]) -> Option<(&'static digest::Algorithm, &[u8])> {
    const PREFIXES: [(&[u8], &digest::Algorithm); 4] = [
        (
            &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
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
    PREFIXES.iter().find_map(|(prefix, alg)| {
        let rest = data.strip_prefix(*prefix)?;
        (rest.len() == alg.output_len).then_some((*alg, rest))
    })
}

/// `CKM_ECDSA` takes a hash of any length; ECDSA uses its leftmost 256 bits for P-256, and a
/// shorter value is the same integer left-padded with zeros (SEC 1, 4.1.3 step 5).
fn ecdsa_p256_digest(data: &[u8]) -> Result<Digest, Error> {
    if data.is_empty() {
        return Err(Error::new(
            ErrorCode::DataLenRange,
            "CKM_ECDSA needs a non-empty digest",
        ));
    }
    let mut e = [0u8; 32];
    if data.len() >= 32 {
        e.copy_from_slice(&data[..32]);
    } else {
        e[32 - data.len()..].copy_from_slice(data);
    }
    Digest::import_less_safe(&e, &digest::SHA256).map_err(|_| failed("digest import"))
}

fn check_pss_sha256(params: &MechanismParams) -> Result<(), Error> {
    match params {
        MechanismParams::Pss {
            hash,
            mgf,
            salt_len,
        } if *hash == ck::CKM_SHA256 as u64
            && *mgf == ck::CKG_MGF1_SHA256 as u64
            && *salt_len == 32 =>
        {
            Ok(())
        }
        MechanismParams::Pss { .. } => Err(param_invalid(
            "CKM_SHA256_RSA_PKCS_PSS takes hashAlg CKM_SHA256, mgf CKG_MGF1_SHA256, sLen 32",
        )),
        _ => Err(param_invalid(
            "CKM_SHA256_RSA_PKCS_PSS needs CK_RSA_PKCS_PSS_PARAMS",
        )),
    }
}

fn no_params(mech: &Mechanism) -> Result<(), Error> {
    match mech.params {
        MechanismParams::None => Ok(()),
        _ => Err(param_invalid("this mechanism takes no parameter")),
    }
}

/// Signs with a private key.
///
/// # Errors
/// `KeyTypeInconsistent`, `MechanismInvalid`, `MechanismParamInvalid`, `DataInvalid`,
/// `DataLenRange` as the spec assigns them; `FunctionFailed` if the library fails.
pub fn sign(key: &SecretKey, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>, Error> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    match key {
        SecretKey::EcP256(pair) => {
            let sig = match mech.kind {
                k if k == ck::CKM_ECDSA as u64 => {
                    no_params(mech)?;
                    pair.sign_digest(&ecdsa_p256_digest(data)?)
                }
                k if k == ck::CKM_ECDSA_SHA256 as u64 => {
                    no_params(mech)?;
                    pair.sign(&rng, data)
                }
                _ => return Err(mechanism_invalid(mech, "EC")),
            };
            Ok(sig.map_err(|_| failed("ECDSA signing"))?.as_ref().to_vec())
        }
        SecretKey::Rsa(pair) => {
            let mut sig = vec![0u8; pair.public_modulus_len()];
            match mech.kind {
                k if k == ck::CKM_RSA_PKCS as u64 => {
                    no_params(mech)?;
                    let (alg, hash) = split_digest_info(data).ok_or_else(|| {
                        Error::new(
                            ErrorCode::DataInvalid,
                            "CKM_RSA_PKCS signs a DigestInfo of SHA-256, SHA-384 or SHA-512",
                        )
                    })?;
                    let encoding: &'static dyn signature::RsaEncoding = match alg.output_len {
                        32 => &signature::RSA_PKCS1_SHA256,
                        48 => &signature::RSA_PKCS1_SHA384,
                        64 => &signature::RSA_PKCS1_SHA512,
                        _ => {
                            return Err(Error::new(
                                ErrorCode::DataInvalid,
                                "CKM_RSA_PKCS does not sign SHA-1 DigestInfo",
                            ));
                        }
                    };
                    let digest =
                        Digest::import_less_safe(hash, alg).map_err(|_| failed("digest import"))?;
                    pair.sign_digest(encoding, &digest, &mut sig)
                        .map_err(|_| failed("RSA signing"))?;
                }
                k if k == ck::CKM_SHA256_RSA_PKCS as u64 => {
                    no_params(mech)?;
                    pair.sign(&signature::RSA_PKCS1_SHA256, &rng, data, &mut sig)
                        .map_err(|_| failed("RSA signing"))?;
                }
                k if k == ck::CKM_SHA256_RSA_PKCS_PSS as u64 => {
                    check_pss_sha256(&mech.params)?;
                    pair.sign(&signature::RSA_PSS_SHA256, &rng, data, &mut sig)
                        .map_err(|_| failed("RSA signing"))?;
                }
                _ => return Err(mechanism_invalid(mech, "RSA")),
            }
            Ok(sig)
        }
        SecretKey::Aes { .. } => Err(mechanism_invalid(mech, "AES")),
    }
}

fn sig_invalid() -> Error {
    Error::new(ErrorCode::SignatureInvalid, "signature invalid")
}

/// Verifies with a public key.
///
/// # Errors
/// `SignatureInvalid`, `SignatureLenRange`, and the mechanism errors of [`sign`].
pub fn verify(key: &PublicKey, mech: &Mechanism, data: &[u8], sig: &[u8]) -> Result<(), Error> {
    match key {
        PublicKey::EcP256 { point } => {
            if sig.len() != 64 {
                return Err(Error::new(
                    ErrorCode::SignatureLenRange,
                    "P-256 signatures are 64 bytes",
                ));
            }
            let pk = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
            match mech.kind {
                k if k == ck::CKM_ECDSA as u64 => {
                    no_params(mech)?;
                    pk.verify_digest(&ecdsa_p256_digest(data)?, sig)
                        .map_err(|_| sig_invalid())
                }
                k if k == ck::CKM_ECDSA_SHA256 as u64 => {
                    no_params(mech)?;
                    pk.verify(data, sig).map_err(|_| sig_invalid())
                }
                _ => Err(mechanism_invalid(mech, "EC")),
            }
        }
        PublicKey::Rsa { der, modulus, .. } => {
            if sig.len() != modulus.len() {
                return Err(Error::new(
                    ErrorCode::SignatureLenRange,
                    format!("RSA signatures for this key are {} bytes", modulus.len()),
                ));
            }
            match mech.kind {
                k if k == ck::CKM_RSA_PKCS as u64 => {
                    no_params(mech)?;
                    let (alg, hash) = split_digest_info(data).ok_or_else(|| {
                        Error::new(ErrorCode::DataInvalid, "CKM_RSA_PKCS verifies a DigestInfo")
                    })?;
                    let params: &'static signature::RsaParameters = match alg.output_len {
                        20 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                        32 => &signature::RSA_PKCS1_2048_8192_SHA256,
                        48 => &signature::RSA_PKCS1_2048_8192_SHA384,
                        _ => &signature::RSA_PKCS1_2048_8192_SHA512,
                    };
                    let digest =
                        Digest::import_less_safe(hash, alg).map_err(|_| failed("digest import"))?;
                    UnparsedPublicKey::new(params, der)
                        .verify_digest(&digest, sig)
                        .map_err(|_| sig_invalid())
                }
                k if k == ck::CKM_SHA256_RSA_PKCS as u64 => {
                    no_params(mech)?;
                    UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
                        .verify(data, sig)
                        .map_err(|_| sig_invalid())
                }
                k if k == ck::CKM_SHA256_RSA_PKCS_PSS as u64 => {
                    check_pss_sha256(&mech.params)?;
                    UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, der)
                        .verify(data, sig)
                        .map_err(|_| sig_invalid())
                }
                _ => Err(mechanism_invalid(mech, "RSA")),
            }
        }
    }
}

fn gcm_params(mech: &Mechanism) -> Result<(Nonce, &[u8]), Error> {
    match &mech.params {
        MechanismParams::Gcm { iv, aad, tag_bits } => {
            if *tag_bits != 128 {
                return Err(param_invalid(
                    "CKM_AES_GCM: only 128-bit tags are supported",
                ));
            }
            let nonce = Nonce::try_assume_unique_for_key(iv)
                .map_err(|_| param_invalid("CKM_AES_GCM: the IV must be 12 bytes"))?;
            Ok((nonce, aad))
        }
        _ => Err(param_invalid("CKM_AES_GCM needs CK_GCM_PARAMS")),
    }
}

/// Encrypts with a secret key.
///
/// # Errors
/// Mechanism errors as the spec assigns them.
pub fn encrypt(key: &SecretKey, mech: &Mechanism, data: &[u8]) -> Result<Vec<u8>, Error> {
    match key {
        SecretKey::Aes { gcm, .. } if mech.kind == ck::CKM_AES_GCM as u64 => {
            let (nonce, aad) = gcm_params(mech)?;
            let mut out = data.to_vec();
            gcm.seal_in_place_append_tag(nonce, Aad::from(aad), &mut out)
                .map_err(|_| failed("AES-GCM encryption"))?;
            Ok(out)
        }
        SecretKey::Aes { .. } => Err(mechanism_invalid(mech, "AES")),
        SecretKey::EcP256(_) => Err(mechanism_invalid(mech, "EC")),
        SecretKey::Rsa(_) => Err(mechanism_invalid(mech, "RSA private")),
    }
}

/// Decrypts with a secret key. A failed authentication says only that.
///
/// # Errors
/// `EncryptedDataInvalid` if the tag does not verify; `EncryptedDataLenRange` if the input is
/// shorter than a tag; mechanism errors as the spec assigns them.
pub fn decrypt(
    key: &SecretKey,
    mech: &Mechanism,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    match key {
        SecretKey::Aes { gcm, .. } if mech.kind == ck::CKM_AES_GCM as u64 => {
            let (nonce, aad) = gcm_params(mech)?;
            if data.len() < 16 {
                return Err(Error::new(
                    ErrorCode::EncryptedDataLenRange,
                    "AES-GCM ciphertext is shorter than its tag",
                ));
            }
            let mut buf = Zeroizing::new(data.to_vec());
            let len = gcm
                .open_in_place(nonce, Aad::from(aad), &mut buf)
                .map_err(|_| Error::new(ErrorCode::EncryptedDataInvalid, "decryption failed"))?
                .len();
            buf.truncate(len);
            Ok(buf)
        }
        SecretKey::Aes { .. } => Err(mechanism_invalid(mech, "AES")),
        SecretKey::EcP256(_) => Err(mechanism_invalid(mech, "EC")),
        SecretKey::Rsa(_) => Err(mechanism_invalid(mech, "RSA")),
    }
}
