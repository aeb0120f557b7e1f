//! Key material in ready-to-use form: generation, import, export and the stored encoding.
//!
//! Keys are parsed once (at generation, import or load) into aws-lc-rs objects; an operation
//! never re-parses a private key. AES keys build their cipher states (GCM context, ECB/CBC key
//! schedules, CMAC context) on first use and keep them. Serialized material exists only
//! transiently, in `Zeroizing` buffers, on its way to being wrapped under the cluster domain
//! key or to a caller allowed to see it.
//!
//! Zeroization: raw bytes sit in `Zeroizing`; aws-lc frees `EVP_PKEY`s and key schedules with
//! `OPENSSL_free`/explicit cleansing, which clears the memory. Nothing here implements `Clone`
//! or prints key bytes in `Debug`.
//!
//! The stored encoding (`material`) is one tag byte and a body:
//! `1` P-256 PKCS#8 and `2` RSA PKCS#8 (written by earlier builds, still read), `3` AES raw key,
//! `4` PKCS#8 of any private key (EC of any supported curve, Ed25519, RSA), `5` generic secret.

use crate::der::{self, KeyAlgorithm};
use crate::error::Error;
use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPrivateKeyBin, Pkcs8V1Der};
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _};
use aws_lc_rs::{aead, agreement, cipher, cmac, digest, rsa as lc_rsa};
use cryptoki_sys as ck;
use hsm_proto::ErrorCode;
use std::fmt;
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// Uncompressed P-256 point length.
pub const P256_POINT_LEN: usize = 65;

/// Generic secret keys are 1 to this many bytes (4096 bits).
pub const GENERIC_SECRET_MAX_LEN: usize = 512;

const TAG_EC_P256_LEGACY: u8 = 1;
const TAG_RSA_LEGACY: u8 = 2;
const TAG_AES: u8 = 3;
const TAG_PKCS8: u8 = 4;
const TAG_GENERIC: u8 = 5;

/// RSA modulus sizes we hold private keys for.
const RSA_MIN_BITS: u64 = 2048;
const RSA_MAX_BITS: u64 = 4096;

fn failed(what: &str) -> Error {
    Error::new(ErrorCode::FunctionFailed, format!("{what} failed"))
}

/// A named elliptic curve for ECDSA and ECDH.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1, prime256v1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
    /// secp256k1 (ECDSA only: aws-lc-rs has no ECDH for it).
    Secp256k1,
}

impl Curve {
    /// Every curve we serve.
    pub const ALL: [Curve; 4] = [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1];

    /// The curve named by `CKA_EC_PARAMS`: the DER named-curve OID, or a DER `PrintableString`
    /// with the curve's name (some tools send `prime256v1`, `secp384r1`, …).
    pub fn from_ec_params(params: &[u8]) -> Option<Curve> {
        if let Some(curve) = Curve::ALL.into_iter().find(|c| c.oid_der() == params) {
            return Some(curve);
        }
        match der::printable_string(params)? {
            b"prime256v1" | b"secp256r1" | b"P-256" => Some(Curve::P256),
            b"secp384r1" | b"P-384" => Some(Curve::P384),
            b"secp521r1" | b"P-521" => Some(Curve::P521),
            b"secp256k1" => Some(Curve::Secp256k1),
            _ => None,
        }
    }

    /// What `CKA_EC_PARAMS` holds: the DER named-curve OID.
    pub fn oid_der(self) -> &'static [u8] {
        match self {
            Curve::P256 => der::P256_OID,
            Curve::P384 => der::P384_OID,
            Curve::P521 => der::P521_OID,
            Curve::Secp256k1 => der::SECP256K1_OID,
        }
    }

    /// Size of the curve (and of its order) in bits.
    pub fn bits(self) -> u64 {
        match self {
            Curve::P256 | Curve::Secp256k1 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    /// Length of a scalar (private value, and each of r and s) in bytes.
    pub fn scalar_len(self) -> usize {
        (self.bits() as usize).div_ceil(8)
    }

    /// Length of an uncompressed point (`04 || X || Y`).
    pub fn point_len(self) -> usize {
        1 + 2 * self.scalar_len()
    }

    /// The curve's usual name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
            Curve::Secp256k1 => "secp256k1",
        }
    }

    pub(crate) fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
            Curve::Secp256k1 => &signature::ECDSA_P256K1_SHA256_FIXED_SIGNING,
        }
    }

    pub(crate) fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
            Curve::Secp256k1 => &signature::ECDSA_P256K1_SHA256_FIXED,
        }
    }

    /// The digest type aws-lc-rs pairs with this curve's algorithms: its length is what
    /// `sign_digest`/`verify_digest` take, whatever hash the caller actually used.
    pub(crate) fn digest_carrier(self) -> &'static digest::Algorithm {
        match self {
            Curve::P256 | Curve::Secp256k1 => &digest::SHA256,
            Curve::P384 => &digest::SHA384,
            Curve::P521 => &digest::SHA512,
        }
    }

    pub(crate) fn agreement(self) -> Option<&'static agreement::Algorithm> {
        match self {
            Curve::P256 => Some(&agreement::ECDH_P256),
            Curve::P384 => Some(&agreement::ECDH_P384),
            Curve::P521 => Some(&agreement::ECDH_P521),
            Curve::Secp256k1 => None,
        }
    }
}

/// Whether `CKA_EC_PARAMS` names Ed25519: the OID 1.3.101.112 (what we emit, see
/// [`der::ED25519_OID`]) or the `PrintableString` "edwards25519" of PKCS#11 3.0, which
/// pkcs11-tool sends for `EC:edwards25519`.
pub fn is_ed25519_params(params: &[u8]) -> bool {
    params == der::ED25519_OID || der::printable_string(params) == Some(b"edwards25519")
}

/// An EC private key: the ECDSA key pair and, for curves aws-lc-rs agrees on, the ECDH key
/// (the same scalar, parsed once more at load so derivation needs no parsing).
pub struct EcKeyPair {
    pub(crate) ecdsa: signature::EcdsaKeyPair,
    pub(crate) ecdh: Option<agreement::PrivateKey>,
}

/// An RSA private key: one parsed form for signing, one for decryption (aws-lc-rs keeps them
/// apart), and the public half.
pub struct RsaKeyPair {
    pub(crate) signing: signature::RsaKeyPair,
    pub(crate) oaep: lc_rsa::OaepPrivateDecryptingKey,
    pub(crate) pkcs1: lc_rsa::Pkcs1PrivateDecryptingKey,
    pub(crate) public: PublicKey,
    pub(crate) bits: u64,
}

impl fmt::Debug for EcKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EcKeyPair([REDACTED])")
    }
}

impl fmt::Debug for RsaKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaKeyPair({} bits, [REDACTED])", self.bits)
    }
}

impl fmt::Debug for AesCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesCipher([REDACTED])")
    }
}

impl RsaKeyPair {
    /// Modulus length in bytes (the signature and ciphertext length).
    pub fn modulus_len(&self) -> usize {
        self.signing.public_modulus_len()
    }
}

/// The cipher states of an AES key, each built on first use and kept for the key's life
/// (boxed, so an idle key costs a few words, not the kilobytes of unused key schedules).
#[derive(Default)]
pub struct AesCipher {
    gcm: OnceLock<Box<aead::LessSafeKey>>,
    ecb_enc: OnceLock<Box<cipher::EncryptingKey>>,
    ecb_dec: OnceLock<Box<cipher::DecryptingKey>>,
    cbc_enc: OnceLock<Box<cipher::EncryptingKey>>,
    cbc_dec: OnceLock<Box<cipher::DecryptingKey>>,
    cmac: OnceLock<Box<cmac::Key>>,
}

/// Returns the cell's value, building it first if needed (a racing second build is dropped).
fn cached<T>(
    cell: &OnceLock<Box<T>>,
    build: impl FnOnce() -> Result<T, aws_lc_rs::error::Unspecified>,
) -> Result<&T, Error> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = build().map_err(|_| failed("AES key setup"))?;
    let _ = cell.set(Box::new(v));
    cell.get()
        .map(|b| &**b)
        .ok_or_else(|| failed("AES key setup"))
}

impl AesCipher {
    fn alg(key: &[u8]) -> &'static cipher::Algorithm {
        match key.len() {
            16 => &cipher::AES_128,
            24 => &cipher::AES_192,
            _ => &cipher::AES_256,
        }
    }

    fn unbound(key: &[u8]) -> Result<cipher::UnboundCipherKey, aws_lc_rs::error::Unspecified> {
        cipher::UnboundCipherKey::new(Self::alg(key), key)
    }

    pub(crate) fn gcm(&self, key: &[u8]) -> Result<&aead::LessSafeKey, Error> {
        cached(&self.gcm, || {
            let alg = match key.len() {
                16 => &aead::AES_128_GCM,
                24 => &aead::AES_192_GCM,
                _ => &aead::AES_256_GCM,
            };
            Ok(aead::LessSafeKey::new(aead::UnboundKey::new(alg, key)?))
        })
    }

    pub(crate) fn ecb_enc(&self, key: &[u8]) -> Result<&cipher::EncryptingKey, Error> {
        cached(&self.ecb_enc, || {
            cipher::EncryptingKey::ecb(Self::unbound(key)?)
        })
    }

    pub(crate) fn ecb_dec(&self, key: &[u8]) -> Result<&cipher::DecryptingKey, Error> {
        cached(&self.ecb_dec, || {
            cipher::DecryptingKey::ecb(Self::unbound(key)?)
        })
    }

    pub(crate) fn cbc_enc(&self, key: &[u8]) -> Result<&cipher::EncryptingKey, Error> {
        cached(&self.cbc_enc, || {
            cipher::EncryptingKey::cbc(Self::unbound(key)?)
        })
    }

    pub(crate) fn cbc_dec(&self, key: &[u8]) -> Result<&cipher::DecryptingKey, Error> {
        cached(&self.cbc_dec, || {
            cipher::DecryptingKey::cbc(Self::unbound(key)?)
        })
    }

    pub(crate) fn cmac(&self, key: &[u8]) -> Result<&cmac::Key, Error> {
        cached(&self.cmac, || {
            let alg = match key.len() {
                16 => cmac::AES_128,
                24 => cmac::AES_192,
                _ => cmac::AES_256,
            };
            cmac::Key::new(alg, key)
        })
    }
}

/// A private or secret key, ready to use. Zeroized on drop; `Debug` shows the kind only.
pub enum SecretKey {
    /// EC private key (ECDSA, and ECDH where the curve allows).
    Ec {
        /// Its curve.
        curve: Curve,
        /// The parsed key.
        pair: EcKeyPair,
    },
    /// Ed25519 private key.
    Ed25519(Ed25519KeyPair),
    /// RSA private key.
    Rsa(RsaKeyPair),
    /// AES key: cipher states plus the raw bytes (for `CKA_VALUE` of extractable keys, and to
    /// wrap).
    Aes {
        /// Ready cipher states.
        cipher: AesCipher,
        /// Raw key, 16, 24 or 32 bytes.
        bytes: Zeroizing<Vec<u8>>,
    },
    /// `CKK_GENERIC_SECRET`: HMAC keys, ECDH output.
    Generic {
        /// Raw key.
        bytes: Zeroizing<Vec<u8>>,
    },
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretKey::Ec { curve, .. } => write!(f, "SecretKey::Ec({}, [REDACTED])", curve.name()),
            SecretKey::Ed25519(_) => f.write_str("SecretKey::Ed25519([REDACTED])"),
            SecretKey::Rsa(p) => write!(f, "SecretKey::Rsa({} bits, [REDACTED])", p.bits),
            SecretKey::Aes { bytes, .. } => {
                write!(f, "SecretKey::Aes({} bits, [REDACTED])", bytes.len() * 8)
            }
            SecretKey::Generic { bytes } => {
                write!(f, "SecretKey::Generic({} bytes, [REDACTED])", bytes.len())
            }
        }
    }
}

/// A public key, ready to verify or encrypt with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// EC public key.
    Ec {
        /// Its curve.
        curve: Curve,
        /// Uncompressed point `04 || X || Y`, checked to be on the curve.
        point: Vec<u8>,
    },
    /// Ed25519 public key.
    Ed25519 {
        /// The 32-byte encoding of RFC 8032.
        key: Vec<u8>,
    },
    /// RSA public key.
    Rsa {
        /// `RSAPublicKey` DER, what aws-lc-rs verifies and encrypts with.
        der: Vec<u8>,
        /// Modulus, big-endian, no leading zeros.
        modulus: Vec<u8>,
        /// Public exponent, big-endian, no leading zeros.
        exponent: Vec<u8>,
    },
}

/// A generated or imported private key with its public half.
#[derive(Debug)]
pub struct GeneratedPair {
    /// The private half, ready to use.
    pub private: SecretKey,
    /// The public half.
    pub public: PublicKey,
    /// The private half serialized for wrapping under the cluster domain key.
    pub material: Zeroizing<Vec<u8>>,
}

/// The components of an RSA private key (`CKA_MODULUS` … `CKA_COEFFICIENT`), big-endian.
/// The private ones are zeroized on drop; `Debug` shows only the modulus size.
pub struct RsaComponents {
    /// n.
    pub modulus: Vec<u8>,
    /// e.
    pub public_exponent: Vec<u8>,
    /// d.
    pub private_exponent: Zeroizing<Vec<u8>>,
    /// p.
    pub prime1: Zeroizing<Vec<u8>>,
    /// q.
    pub prime2: Zeroizing<Vec<u8>>,
    /// d mod (p-1).
    pub exponent1: Zeroizing<Vec<u8>>,
    /// d mod (q-1).
    pub exponent2: Zeroizing<Vec<u8>>,
    /// q^-1 mod p.
    pub coefficient: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for RsaComponents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RsaComponents({} bit modulus, [REDACTED])",
            bit_len(&self.modulus)
        )
    }
}

/// Bit length of a big-endian unsigned integer.
fn bit_len(be: &[u8]) -> u64 {
    let skip = be.iter().take_while(|b| **b == 0).count();
    match be.get(skip) {
        None => 0,
        Some(first) => (be.len() - skip) as u64 * 8 - u64::from(first.leading_zeros()),
    }
}

fn tagged(tag: u8, body: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 1));
    out.push(tag);
    out.extend_from_slice(body);
    out
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

/// Why a PKCS#8 document could not become a key; callers pick the code that fits their call.
#[derive(Debug)]
enum LoadError {
    Malformed,
    Curve,
    Size(u64),
}

fn load_rsa(pkcs8: &[u8]) -> Result<RsaKeyPair, LoadError> {
    // Sizes first, so that a well-formed key of a size we do not hold is told apart from a
    // malformed one (aws-lc refuses both alike).
    let parts = der::rsa_private_parts(pkcs8).ok_or(LoadError::Malformed)?;
    let bits = bit_len(parts.modulus);
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(LoadError::Size(bits));
    }
    let signing = signature::RsaKeyPair::from_pkcs8(pkcs8).map_err(|_| LoadError::Malformed)?;
    let public = rsa_public(signing.public_key().as_ref()).map_err(|_| LoadError::Malformed)?;
    let decrypting =
        lc_rsa::PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|_| LoadError::Malformed)?;
    // `clone` takes a reference on the same parsed key: nothing is parsed twice here.
    let oaep = lc_rsa::OaepPrivateDecryptingKey::new(decrypting.clone())
        .map_err(|_| LoadError::Malformed)?;
    let pkcs1 =
        lc_rsa::Pkcs1PrivateDecryptingKey::new(decrypting).map_err(|_| LoadError::Malformed)?;
    Ok(RsaKeyPair {
        signing,
        oaep,
        pkcs1,
        public,
        bits,
    })
}

fn load_ec(curve: Curve, pkcs8: &[u8]) -> Result<EcKeyPair, LoadError> {
    let ecdsa = signature::EcdsaKeyPair::from_pkcs8(curve.signing(), pkcs8)
        .map_err(|_| LoadError::Malformed)?;
    let ecdh = match curve.agreement() {
        Some(alg) => Some(
            agreement::PrivateKey::from_private_key_der(alg, pkcs8)
                .map_err(|_| LoadError::Malformed)?,
        ),
        None => None,
    };
    Ok(EcKeyPair { ecdsa, ecdh })
}

/// Parses any supported private key from PKCS#8 into its ready form.
fn load_pkcs8(pkcs8: &[u8]) -> Result<(u64, SecretKey), LoadError> {
    match der::pkcs8_algorithm(pkcs8).ok_or(LoadError::Malformed)? {
        KeyAlgorithm::Rsa => Ok((ck::CKK_RSA as u64, SecretKey::Rsa(load_rsa(pkcs8)?))),
        KeyAlgorithm::Ec(params) => {
            let curve = Curve::from_ec_params(params).ok_or(LoadError::Curve)?;
            let pair = load_ec(curve, pkcs8)?;
            Ok((ck::CKK_EC as u64, SecretKey::Ec { curve, pair }))
        }
        KeyAlgorithm::Ed25519 => {
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| LoadError::Malformed)?;
            Ok((ck::CKK_EC_EDWARDS as u64, SecretKey::Ed25519(pair)))
        }
    }
}

/// Builds the ready key, its public half and its stored material from PKCS#8.
fn pair_from_pkcs8(
    pkcs8: &[u8],
    invalid: ErrorCode,
    what: &str,
) -> Result<(u64, GeneratedPair), Error> {
    let (key_type, private) = load_pkcs8(pkcs8).map_err(|e| match e {
        LoadError::Malformed => Error::new(invalid, format!("{what} is not a valid private key")),
        LoadError::Curve => Error::new(
            ErrorCode::CurveNotSupported,
            format!("{what}: the curve is not one of P-256, P-384, P-521, secp256k1"),
        ),
        LoadError::Size(bits) => Error::new(
            ErrorCode::KeySizeRange,
            format!("{what}: a {bits}-bit RSA key; RSA keys are 2048 to 4096 bits"),
        ),
    })?;
    let public = private
        .public()
        .ok_or_else(|| failed("public key derivation"))?;
    Ok((
        key_type,
        GeneratedPair {
            private,
            public,
            material: tagged(TAG_PKCS8, pkcs8),
        },
    ))
}

fn generated(pkcs8: &[u8]) -> Result<GeneratedPair, Error> {
    pair_from_pkcs8(pkcs8, ErrorCode::FunctionFailed, "the generated key").map(|(_, p)| p)
}

/// Generates an EC key pair on `curve`.
///
/// # Errors
/// `FunctionFailed` if aws-lc fails.
pub fn generate_ec(curve: Curve) -> Result<GeneratedPair, Error> {
    let pair = signature::EcdsaKeyPair::generate(curve.signing())
        .map_err(|_| failed("EC key generation"))?;
    let doc = pair.to_pkcs8v1().map_err(|_| failed("EC key encoding"))?;
    generated(doc.as_ref())
}

/// Generates an Ed25519 key pair.
///
/// # Errors
/// `FunctionFailed` if aws-lc fails.
pub fn generate_ed25519() -> Result<GeneratedPair, Error> {
    let pair = Ed25519KeyPair::generate().map_err(|_| failed("Ed25519 key generation"))?;
    let doc: Pkcs8V1Der<'_> = pair.as_der().map_err(|_| failed("Ed25519 key encoding"))?;
    generated(doc.as_ref())
}

/// Generates an RSA key pair of 2048, 3072 or 4096 bits with exponent 65537 (the sizes and
/// the exponent aws-lc generates).
///
/// # Errors
/// `KeySizeRange` for other sizes; `FunctionFailed` if aws-lc fails.
pub fn generate_rsa(bits: u64) -> Result<GeneratedPair, Error> {
    let size = match bits {
        2048 => lc_rsa::KeySize::Rsa2048,
        3072 => lc_rsa::KeySize::Rsa3072,
        4096 => lc_rsa::KeySize::Rsa4096,
        other => {
            return Err(Error::new(
                ErrorCode::KeySizeRange,
                format!(
                    "CKA_MODULUS_BITS {other}: RSA keys are generated with 2048, 3072 or 4096 bits"
                ),
            ));
        }
    };
    let pair = signature::RsaKeyPair::generate(size).map_err(|_| failed("RSA key generation"))?;
    let doc = pair.as_der().map_err(|_| failed("RSA key encoding"))?;
    generated(doc.as_ref())
}

fn aes_key(bytes: Zeroizing<Vec<u8>>) -> SecretKey {
    SecretKey::Aes {
        cipher: AesCipher::default(),
        bytes,
    }
}

/// Generates a secret key: `CKK_AES` of 16, 24 or 32 bytes, or `CKK_GENERIC_SECRET` of 1 to
/// 512 bytes. Returns the key and its stored material.
///
/// # Errors
/// `KeySizeRange` for other lengths; `TemplateInconsistent` for other key types.
pub fn generate_secret(key_type: u64, len: u64) -> Result<(SecretKey, Zeroizing<Vec<u8>>), Error> {
    check_secret_len(key_type, len, ErrorCode::KeySizeRange)?;
    let mut bytes = Zeroizing::new(vec![0u8; len as usize]);
    crate::seal::random_bytes(&mut bytes)?;
    import_secret(key_type, &bytes)
}

fn check_secret_len(key_type: u64, len: u64, code: ErrorCode) -> Result<(), Error> {
    if key_type == ck::CKK_AES as u64 {
        if !matches!(len, 16 | 24 | 32) {
            return Err(Error::new(
                code,
                format!("an AES key of {len} bytes: AES keys are 16, 24 or 32 bytes"),
            ));
        }
    } else if key_type == ck::CKK_GENERIC_SECRET as u64 {
        if !(1..=GENERIC_SECRET_MAX_LEN as u64).contains(&len) {
            return Err(Error::new(
                code,
                format!("a generic secret of {len} bytes: generic secrets are 1 to 512 bytes"),
            ));
        }
    } else {
        return Err(Error::new(
            ErrorCode::TemplateInconsistent,
            format!("CKA_KEY_TYPE {key_type:#x}: secret keys are CKK_AES or CKK_GENERIC_SECRET"),
        ));
    }
    Ok(())
}

/// Imports a secret key value (`C_CreateObject`, `C_UnwrapKey`, ECDH output): `CKK_AES` or
/// `CKK_GENERIC_SECRET`. Returns the key and its stored material.
///
/// # Errors
/// `AttributeValueInvalid` for a bad length; `TemplateInconsistent` for other key types.
pub fn import_secret(
    key_type: u64,
    value: &[u8],
) -> Result<(SecretKey, Zeroizing<Vec<u8>>), Error> {
    check_secret_len(
        key_type,
        value.len() as u64,
        ErrorCode::AttributeValueInvalid,
    )?;
    let bytes = Zeroizing::new(value.to_vec());
    if key_type == ck::CKK_AES as u64 {
        Ok((aes_key(bytes), tagged(TAG_AES, value)))
    } else {
        Ok((SecretKey::Generic { bytes }, tagged(TAG_GENERIC, value)))
    }
}

/// Parses serialized material (after unwrapping under the cluster domain key) into a ready
/// key: the inverse of every `material` this module returns, including earlier builds'.
///
/// # Errors
/// `DeviceError` if the material is not a key we wrote.
pub fn parse_material(material: &[u8]) -> Result<SecretKey, Error> {
    let bad = || Error::device("unwrapped key material is not a valid key");
    let (&tag, body) = material.split_first().ok_or_else(bad)?;
    match tag {
        TAG_EC_P256_LEGACY | TAG_RSA_LEGACY | TAG_PKCS8 => {
            load_pkcs8(body).map(|(_, key)| key).map_err(|_| bad())
        }
        TAG_AES => import_secret(ck::CKK_AES as u64, body)
            .map(|(k, _)| k)
            .map_err(|_| bad()),
        TAG_GENERIC => import_secret(ck::CKK_GENERIC_SECRET as u64, body)
            .map(|(k, _)| k)
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Imports an EC private key from `CKA_VALUE` (the scalar, big-endian; shorter values are
/// left-padded). aws-lc computes the public point, which also refuses 0 and values ≥ n.
///
/// # Errors
/// `AttributeValueInvalid` if the scalar is not a valid private key on `curve`.
pub fn import_ec_private(curve: Curve, scalar: &[u8]) -> Result<GeneratedPair, Error> {
    let invalid = || {
        Error::new(
            ErrorCode::AttributeValueInvalid,
            format!("CKA_VALUE is not a valid {} private key", curve.name()),
        )
    };
    let len = curve.scalar_len();
    let skip = scalar.iter().take_while(|b| **b == 0).count();
    let significant = &scalar[skip..];
    if significant.len() > len {
        return Err(invalid());
    }
    let mut fixed = Zeroizing::new(vec![0u8; len]);
    fixed[len - significant.len()..].copy_from_slice(significant);
    let sec1 = der::ec_private_key(&fixed, curve.oid_der());
    let pair = signature::EcdsaKeyPair::from_private_key_der(curve.signing(), &sec1)
        .map_err(|_| invalid())?;
    let doc = pair.to_pkcs8v1().map_err(|_| failed("EC key encoding"))?;
    pair_from_pkcs8(doc.as_ref(), ErrorCode::AttributeValueInvalid, "CKA_VALUE").map(|(_, p)| p)
}

/// Imports an Ed25519 private key from its 32-byte seed (`CKA_VALUE`).
///
/// # Errors
/// `AttributeValueInvalid` if the seed is not 32 bytes.
pub fn import_ed25519_private(seed: &[u8]) -> Result<GeneratedPair, Error> {
    let invalid = || {
        Error::new(
            ErrorCode::AttributeValueInvalid,
            "CKA_VALUE of an Ed25519 key is its 32-byte seed",
        )
    };
    if seed.len() != 32 {
        return Err(invalid());
    }
    let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| invalid())?;
    let doc: Pkcs8V1Der<'_> = pair.as_der().map_err(|_| failed("Ed25519 key encoding"))?;
    generated(doc.as_ref())
}

/// Imports an RSA private key from all its components. aws-lc checks that they are
/// consistent (n = pq, the CRT values match d); a bad key is refused, not stored.
///
/// # Errors
/// `AttributeValueInvalid` if the components do not form a valid key of 2048 to 4096 bits
/// with an odd exponent of at most 33 bits.
pub fn import_rsa_private(c: &RsaComponents) -> Result<GeneratedPair, Error> {
    let invalid = |why: &str| {
        Error::new(
            ErrorCode::AttributeValueInvalid,
            format!("RSA private key: {why}"),
        )
    };
    let bits = bit_len(&c.modulus);
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(invalid(&format!(
            "a {bits}-bit modulus; RSA keys are 2048 to 4096 bits"
        )));
    }
    let strip = |v: &[u8]| -> Vec<u8> { v[v.iter().take_while(|b| **b == 0).count()..].to_vec() };
    let components = lc_rsa::KeyPairComponents {
        public_key: lc_rsa::PublicKeyComponents {
            n: strip(&c.modulus),
            e: strip(&c.public_exponent),
        },
        d: &c.private_exponent[..],
        p: &c.prime1[..],
        q: &c.prime2[..],
        dP: &c.exponent1[..],
        dQ: &c.exponent2[..],
        qInv: &c.coefficient[..],
    };
    let pair = signature::RsaKeyPair::from_components(&components)
        .map_err(|_| invalid("the components are inconsistent or out of range"))?;
    let doc = pair.as_der().map_err(|_| failed("RSA key encoding"))?;
    pair_from_pkcs8(
        doc.as_ref(),
        ErrorCode::AttributeValueInvalid,
        "RSA private key",
    )
    .map(|(_, p)| p)
}

/// Imports a private key from PKCS#8 (`C_UnwrapKey` of a private key): RSA, EC on a supported
/// curve, or Ed25519. Returns the `CKK_*` it turned out to be.
///
/// # Errors
/// `WrappedKeyInvalid` if it is not a valid key; `CurveNotSupported`; `KeySizeRange` for RSA
/// outside 2048 to 4096 bits.
pub fn import_pkcs8(der: &[u8]) -> Result<(u64, GeneratedPair), Error> {
    pair_from_pkcs8(der, ErrorCode::WrappedKeyInvalid, "the unwrapped key")
}

/// Builds a public key from `CKA_EC_PARAMS` and `CKA_EC_POINT` (EC and Ed25519, told apart by
/// the parameters). The point may come DER-wrapped or raw; it is checked to be on the curve.
///
/// # Errors
/// `CurveNotSupported` for other parameters; `AttributeValueInvalid` for a bad point.
pub fn ec_public_from_attributes(ec_params: &[u8], ec_point: &[u8]) -> Result<PublicKey, Error> {
    let invalid = |what: &str| {
        Error::new(
            ErrorCode::AttributeValueInvalid,
            format!("CKA_EC_POINT is not a valid {what} public key"),
        )
    };
    if is_ed25519_params(ec_params) {
        let key = der::ed25519_point_from_attribute(ec_point).ok_or_else(|| invalid("Ed25519"))?;
        signature::UnparsedPublicKey::new(&signature::ED25519, &key)
            .parse()
            .map_err(|_| invalid("Ed25519"))?;
        return Ok(PublicKey::Ed25519 { key });
    }
    let curve = Curve::from_ec_params(ec_params).ok_or_else(|| {
        Error::new(
            ErrorCode::CurveNotSupported,
            "CKA_EC_PARAMS: supported curves are P-256, P-384, P-521, secp256k1 and Ed25519",
        )
    })?;
    let point = der::ec_point_from_attribute(ec_point, curve.point_len())
        .ok_or_else(|| invalid(curve.name()))?;
    signature::UnparsedPublicKey::new(curve.verification(), &point)
        .parse()
        .map_err(|_| invalid(curve.name()))?;
    Ok(PublicKey::Ec { curve, point })
}

/// Builds an RSA public key from `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`, checking it.
///
/// # Errors
/// `AttributeValueInvalid` if the key is malformed or not 2048 to 8192 bits (public keys may
/// be larger than the private keys we hold: verifying with them is still sound).
pub fn rsa_public_from_components(modulus: &[u8], exponent: &[u8]) -> Result<PublicKey, Error> {
    let invalid = || {
        Error::new(
            ErrorCode::AttributeValueInvalid,
            "CKA_MODULUS/CKA_PUBLIC_EXPONENT do not form a valid RSA key of 2048 to 8192 bits",
        )
    };
    // aws-lc checks the size range only when verifying; refuse such keys at the door.
    if !(RSA_MIN_BITS..=8192).contains(&bit_len(modulus)) {
        return Err(invalid());
    }
    let der = der::rsa_public_key(modulus, exponent);
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &der)
        .parse()
        .map_err(|_| invalid())?;
    rsa_public(&der)
}

impl SecretKey {
    /// `CKA_KEY_TYPE`.
    pub fn key_type(&self) -> u64 {
        (match self {
            SecretKey::Ec { .. } => ck::CKK_EC,
            SecretKey::Ed25519(_) => ck::CKK_EC_EDWARDS,
            SecretKey::Rsa(_) => ck::CKK_RSA,
            SecretKey::Aes { .. } => ck::CKK_AES,
            SecretKey::Generic { .. } => ck::CKK_GENERIC_SECRET,
        }) as u64
    }

    /// The public half of a private key; `None` for secret keys.
    pub fn public(&self) -> Option<PublicKey> {
        match self {
            SecretKey::Ec { curve, pair } => Some(PublicKey::Ec {
                curve: *curve,
                point: pair.ecdsa.public_key().as_ref().to_vec(),
            }),
            SecretKey::Ed25519(p) => Some(PublicKey::Ed25519 {
                key: p.public_key().as_ref().to_vec(),
            }),
            SecretKey::Rsa(p) => Some(p.public.clone()),
            SecretKey::Aes { .. } | SecretKey::Generic { .. } => None,
        }
    }

    /// `CKA_VALUE` for a key whose attributes allow revealing it: the EC scalar (fixed
    /// length), the Ed25519 seed, the secret bytes. `None` for RSA (see
    /// [`SecretKey::rsa_components`]).
    pub fn value(&self) -> Option<Zeroizing<Vec<u8>>> {
        match self {
            SecretKey::Ec { pair, .. } => {
                let bin: EcPrivateKeyBin<'_> = pair.ecdsa.private_key().as_be_bytes().ok()?;
                Some(Zeroizing::new(bin.as_ref().to_vec()))
            }
            SecretKey::Ed25519(p) => {
                let doc: Pkcs8V1Der<'_> = p.as_der().ok()?;
                der::ed25519_seed(doc.as_ref()).map(|s| Zeroizing::new(s.to_vec()))
            }
            SecretKey::Aes { bytes, .. } | SecretKey::Generic { bytes } => {
                Some(Zeroizing::new(bytes.to_vec()))
            }
            SecretKey::Rsa(_) => None,
        }
    }

    /// All components of an RSA private key, for an extractable, non-sensitive key.
    pub fn rsa_components(&self) -> Option<RsaComponents> {
        let SecretKey::Rsa(p) = self else {
            return None;
        };
        let doc = p.signing.as_der().ok()?;
        let parts = der::rsa_private_parts(doc.as_ref())?;
        let secret = |v: &[u8]| Zeroizing::new(v.to_vec());
        Some(RsaComponents {
            modulus: parts.modulus.to_vec(),
            public_exponent: parts.public_exponent.to_vec(),
            private_exponent: secret(parts.private_exponent),
            prime1: secret(parts.prime1),
            prime2: secret(parts.prime2),
            exponent1: secret(parts.exponent1),
            exponent2: secret(parts.exponent2),
            coefficient: secret(parts.coefficient),
        })
    }

    /// What `C_WrapKey` wraps: the value of a secret key, or the PKCS#8 `PrivateKeyInfo` (v1)
    /// of a private key — the form [`import_pkcs8`] and other tokens read back. Empty only if
    /// aws-lc fails to serialize, which it does not for a key it parsed.
    pub fn wrap_payload(&self) -> Zeroizing<Vec<u8>> {
        let doc: Option<Zeroizing<Vec<u8>>> = match self {
            SecretKey::Aes { bytes, .. } | SecretKey::Generic { bytes } => {
                Some(Zeroizing::new(bytes.to_vec()))
            }
            SecretKey::Ec { pair, .. } => pair
                .ecdsa
                .to_pkcs8v1()
                .ok()
                .map(|d| Zeroizing::new(d.as_ref().to_vec())),
            SecretKey::Ed25519(p) => {
                let doc: Option<Pkcs8V1Der<'_>> = p.as_der().ok();
                doc.map(|d| Zeroizing::new(d.as_ref().to_vec()))
            }
            SecretKey::Rsa(p) => p
                .signing
                .as_der()
                .ok()
                .map(|d| Zeroizing::new(d.as_ref().to_vec())),
        };
        doc.unwrap_or_default()
    }

    /// `CKA_CHECK_VALUE`: for AES the first 3 bytes of AES-ECB(key, 0^128); for a generic
    /// secret the first 3 bytes of SHA-1(value) (PKCS#11 3.0). `None` for other keys.
    pub fn check_value(&self) -> Option<Vec<u8>> {
        match self {
            SecretKey::Aes { cipher, bytes } => {
                let mut block = [0u8; 16];
                cipher
                    .ecb_enc(bytes)
                    .ok()?
                    .less_safe_encrypt(&mut block, cipher::EncryptionContext::None)
                    .ok()?;
                Some(block[..3].to_vec())
            }
            SecretKey::Generic { bytes } => Some(
                digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref()[..3].to_vec(),
            ),
            _ => None,
        }
    }

    /// Key size in bits (`CK_MECHANISM_INFO` terms: the modulus, the curve, the key length).
    /// Ed25519 counts as 255 bits (its field size), as SoftHSM reports it.
    pub fn size_bits(&self) -> u64 {
        match self {
            SecretKey::Ec { curve, .. } => curve.bits(),
            SecretKey::Ed25519(_) => 255,
            SecretKey::Rsa(p) => p.bits,
            SecretKey::Aes { bytes, .. } | SecretKey::Generic { bytes } => bytes.len() as u64 * 8,
        }
    }
}

impl PublicKey {
    /// `CKA_KEY_TYPE`.
    pub fn key_type(&self) -> u64 {
        (match self {
            PublicKey::Ec { .. } => ck::CKK_EC,
            PublicKey::Ed25519 { .. } => ck::CKK_EC_EDWARDS,
            PublicKey::Rsa { .. } => ck::CKK_RSA,
        }) as u64
    }

    /// `CKA_EC_POINT`: the DER `OCTET STRING` wrapping the uncompressed point (EC) or the
    /// 32-byte key (Ed25519) — the encoding the spec prescribes and OpenSSL's pkcs11-provider
    /// and Java read. Empty for RSA, which has no such attribute.
    pub fn ec_point_attribute(&self) -> Vec<u8> {
        match self {
            PublicKey::Ec { point, .. } => der::octet_string(point),
            PublicKey::Ed25519 { key } => der::octet_string(key),
            PublicKey::Rsa { .. } => Vec::new(),
        }
    }

    /// `CKA_EC_PARAMS` of an EC or Ed25519 key (the named-curve OID); `None` for RSA.
    pub fn ec_params(&self) -> Option<&'static [u8]> {
        match self {
            PublicKey::Ec { curve, .. } => Some(curve.oid_der()),
            PublicKey::Ed25519 { .. } => Some(der::ED25519_OID),
            PublicKey::Rsa { .. } => None,
        }
    }

    /// `CKA_PUBLIC_KEY_INFO`: the DER `SubjectPublicKeyInfo`.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            PublicKey::Ec { curve, point } => {
                der::subject_public_key_info(KeyAlgorithm::Ec(curve.oid_der()), point)
            }
            PublicKey::Ed25519 { key } => der::subject_public_key_info(KeyAlgorithm::Ed25519, key),
            PublicKey::Rsa { der, .. } => der::subject_public_key_info(KeyAlgorithm::Rsa, der),
        }
    }

    /// Key size in bits.
    pub fn size_bits(&self) -> u64 {
        match self {
            PublicKey::Ec { curve, .. } => curve.bits(),
            PublicKey::Ed25519 { .. } => 255,
            PublicKey::Rsa { modulus, .. } => bit_len(modulus),
        }
    }
}

#[cfg(test)]
mod tests;
