//! Cryptographic operations: one registry entry per `CKM_*`, each a [`Mech`] whose methods
//! default to `CKR_MECHANISM_INVALID`; a family module (`aes`, `rsa`, …) registers what it
//! implements. Nothing here knows about objects, attributes, users or sessions: the caller has
//! already checked login, usage flags, `CKA_ALLOWED_MECHANISMS` and the mechanism table.
//!
//! Single-part `C_Sign`/`C_Encrypt`/… are [`start`] + [`Operation::update`] +
//! [`Operation::finish`]. Hash-then-sign and MACs stream through a digest or MAC context; AES
//! ECB/CBC/CTR stream block-wise; GCM, key wrap, RSA, raw ECDSA and EdDSA buffer (at most
//! [`MAX_BUFFERED`] bytes) because the algorithm needs the whole input.
//!
//! Errors follow the spec: a key of the wrong kind is `KeyTypeInconsistent`, bad parameters
//! `MechanismParamInvalid`, a failed decrypt/unwrap/verify says only that it failed
//! (`EncryptedDataInvalid`, `WrappedKeyInvalid`, `SignatureInvalid`), never why.

mod aes;
mod digest;
mod ec;
mod eddsa;
mod hmac;
mod rsa;

use crate::error::Error;
use crate::keys::{PublicKey, SecretKey};
use hsm_proto::{ErrorCode, Mechanism, MechanismParams, OperationKind};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use zeroize::Zeroizing;

pub use ec::KDF_OUTPUT_LEN;

/// Most bytes an operation that needs its whole input (GCM, RSA, raw ECDSA, EdDSA, key wrap)
/// holds before answering `DataLenRange`.
pub const MAX_BUFFERED: usize = 64 << 20;

/// The key an operation uses.
#[derive(Clone, Debug)]
pub enum KeyRef {
    /// No key (digests).
    None,
    /// A private or secret key.
    Secret(Arc<SecretKey>),
    /// A public key.
    Public(Arc<PublicKey>),
}

/// A running multi-part operation.
pub trait Operation: Send {
    /// Feeds input; encrypt/decrypt return the output produced so far (maybe empty), the
    /// others return empty.
    ///
    /// # Errors
    /// The mechanism's errors (`DataLenRange` past [`MAX_BUFFERED`], …). After an error the
    /// caller ends the operation.
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error>;

    /// Ends: returns the signature, digest, MAC or last cipher output; a verify operation
    /// takes `signature` and returns empty or `SignatureInvalid`.
    ///
    /// # Errors
    /// The mechanism's errors.
    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error>;
}

/// A started operation and, for `GcmGeneratedIv`, the IV the token chose.
pub struct Started {
    /// The operation.
    pub op: Box<dyn Operation>,
    /// The generated IV, to hand back to the caller.
    pub generated_iv: Option<Vec<u8>>,
}

impl fmt::Debug for Started {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Started")
            .field("generated_iv", &self.generated_iv)
            .finish_non_exhaustive()
    }
}

impl Started {
    fn op(op: impl Operation + 'static) -> Result<Started, Error> {
        Ok(Started {
            op: Box::new(op),
            generated_iv: None,
        })
    }
}

/// One mechanism. Every method answers `CKR_MECHANISM_INVALID` unless the mechanism
/// implements that function.
trait Mech: Send + Sync {
    fn sign(&self, mech: &Mechanism, _key: &KeyRef) -> Result<Started, Error> {
        Err(not_for(mech, "signing"))
    }
    fn verify(&self, mech: &Mechanism, _key: &KeyRef) -> Result<Started, Error> {
        Err(not_for(mech, "verification"))
    }
    fn encrypt(&self, mech: &Mechanism, _key: &KeyRef) -> Result<Started, Error> {
        Err(not_for(mech, "encryption"))
    }
    fn decrypt(&self, mech: &Mechanism, _key: &KeyRef) -> Result<Started, Error> {
        Err(not_for(mech, "decryption"))
    }
    fn digest(&self, mech: &Mechanism) -> Result<Started, Error> {
        Err(not_for(mech, "digesting"))
    }
    fn wrap(&self, mech: &Mechanism, _key: &KeyRef, _payload: &[u8]) -> Result<Vec<u8>, Error> {
        Err(not_for(mech, "wrapping"))
    }
    fn unwrap(
        &self,
        mech: &Mechanism,
        _key: &KeyRef,
        _wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        Err(not_for(mech, "unwrapping"))
    }
    fn derive(&self, mech: &Mechanism, _base: &SecretKey) -> Result<Zeroizing<Vec<u8>>, Error> {
        Err(not_for(mech, "derivation"))
    }
}

/// `CKM_*` to implementation.
struct Registry(HashMap<u64, Box<dyn Mech>>);

impl Registry {
    fn add(&mut self, kind: cryptoki_sys::CK_MECHANISM_TYPE, mech: impl Mech + 'static) {
        let previous = self.0.insert(kind as u64, Box::new(mech));
        debug_assert!(previous.is_none(), "mechanism {kind:#x} registered twice");
    }
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry(HashMap::new());
        digest::register(&mut r);
        hmac::register(&mut r);
        aes::register(&mut r);
        rsa::register(&mut r);
        ec::register(&mut r);
        eddsa::register(&mut r);
        r
    })
}

fn lookup(mech: &Mechanism) -> Result<&'static dyn Mech, Error> {
    registry()
        .0
        .get(&mech.kind)
        .map(|m| m.as_ref())
        .ok_or_else(|| {
            Error::new(
                ErrorCode::MechanismInvalid,
                format!("mechanism {:#x} is not supported", mech.kind),
            )
        })
}

/// The `CKM_*` values this build implements (for tests that hold the mechanism table to it).
pub fn implemented() -> Vec<u64> {
    let mut v: Vec<u64> = registry().0.keys().copied().collect();
    v.sort_unstable();
    v
}

/// Starts an operation.
///
/// # Errors
/// `MechanismInvalid` for a mechanism we do not implement for `kind`; `KeyTypeInconsistent`
/// for a key it cannot use; `MechanismParamInvalid` for bad parameters.
pub fn start(kind: OperationKind, key: KeyRef, mech: &Mechanism) -> Result<Started, Error> {
    let m = lookup(mech)?;
    match kind {
        OperationKind::Sign => m.sign(mech, &key),
        OperationKind::Verify => m.verify(mech, &key),
        OperationKind::Encrypt => m.encrypt(mech, &key),
        OperationKind::Decrypt => m.decrypt(mech, &key),
        OperationKind::Digest => m.digest(mech),
    }
}

/// `C_WrapKey`: encrypts `payload` (a secret key's value, or a private key's PKCS#8, see
/// [`SecretKey::wrap_payload`]) under `wrapping`.
///
/// Formats: `CKM_AES_KEY_WRAP` (RFC 3394), `CKM_AES_KEY_WRAP_PAD`/`_KWP` (RFC 5649),
/// `CKM_RSA_PKCS_OAEP`, and `CKM_AES_GCM`: with a caller IV the output is what `C_Encrypt`
/// gives (`ciphertext || tag`); with [`MechanismParams::GcmGeneratedIv`] it is
/// `IV (12) || ciphertext || tag (16)`, the only way to return the IV the token chose.
///
/// # Errors
/// `KeyNotWrappable` if the mechanism cannot carry this payload (length); the errors of
/// [`start`].
pub fn wrap(mech: &Mechanism, wrapping: &KeyRef, payload: &[u8]) -> Result<Vec<u8>, Error> {
    lookup(mech)?.wrap(mech, wrapping, payload)
}

/// `C_UnwrapKey`: the inverse of [`wrap`]. Returns the payload; the caller builds the key
/// ([`crate::keys::import_secret`] or [`crate::keys::import_pkcs8`]).
///
/// # Errors
/// `WrappedKeyInvalid` when the blob does not open (whatever the reason); the errors of
/// [`start`].
pub fn unwrap(
    mech: &Mechanism,
    unwrapping: &KeyRef,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    lookup(mech)?.unwrap(mech, unwrapping, wrapped)
}

/// `C_DeriveKey`: ECDH (`CKM_ECDH1_DERIVE`). Returns the full output — the shared x
/// coordinate for `CKD_NULL`, [`KDF_OUTPUT_LEN`] bytes of ANSI X9.63 KDF output for
/// `CKD_SHA*_KDF` — and the caller keeps the first `CKA_VALUE_LEN` bytes (a prefix of X9.63
/// output is the X9.63 output of that length).
///
/// # Errors
/// `KeyTypeInconsistent` for a non-EC base key, `CurveNotSupported` for secp256k1 (aws-lc-rs
/// has no ECDH on it), `MechanismParamInvalid` for bad parameters or an invalid peer point.
pub fn derive(mech: &Mechanism, base: &SecretKey) -> Result<Zeroizing<Vec<u8>>, Error> {
    lookup(mech)?.derive(mech, base)
}

// ----- helpers shared by the families -------------------------------------------------------

fn not_for(mech: &Mechanism, what: &str) -> Error {
    Error::new(
        ErrorCode::MechanismInvalid,
        format!("mechanism {:#x} does not do {what}", mech.kind),
    )
}

fn key_type_inconsistent(mech: &Mechanism, needs: &str) -> Error {
    Error::new(
        ErrorCode::KeyTypeInconsistent,
        format!("mechanism {:#x} needs {needs}", mech.kind),
    )
}

fn param_invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::MechanismParamInvalid, message)
}

fn no_params(mech: &Mechanism) -> Result<(), Error> {
    match mech.params {
        MechanismParams::None => Ok(()),
        _ => Err(param_invalid(format!(
            "mechanism {:#x} takes no parameter",
            mech.kind
        ))),
    }
}

fn failed(what: &str) -> Error {
    Error::new(ErrorCode::FunctionFailed, format!("{what} failed"))
}

fn signature_invalid() -> Error {
    Error::new(ErrorCode::SignatureInvalid, "signature invalid")
}

fn decrypt_failed() -> Error {
    Error::new(ErrorCode::EncryptedDataInvalid, "decryption failed")
}

fn unwrap_failed() -> Error {
    Error::new(
        ErrorCode::WrappedKeyInvalid,
        "the wrapped key does not unwrap",
    )
}

/// For sign operations: a signature argument is a caller bug.
fn expect_no_signature(signature: Option<&[u8]>) -> Result<(), Error> {
    match signature {
        None => Ok(()),
        Some(_) => Err(Error::new(
            ErrorCode::ArgumentsBad,
            "a signature was passed to a signing operation",
        )),
    }
}

/// For verify operations: the signature to check.
fn expect_signature(signature: Option<&[u8]>) -> Result<&[u8], Error> {
    signature.ok_or_else(|| {
        Error::new(
            ErrorCode::ArgumentsBad,
            "a verify operation ended without a signature",
        )
    })
}

/// Input collected whole, for algorithms that need all of it (bounded).
struct Collected {
    data: Zeroizing<Vec<u8>>,
    limit: usize,
    code: ErrorCode,
}

impl Collected {
    /// Collects at most `limit` bytes; more is `code` (`DataLenRange` or
    /// `EncryptedDataLenRange`).
    fn new(limit: usize, code: ErrorCode) -> Collected {
        Collected {
            data: Zeroizing::new(Vec::new()),
            limit,
            code,
        }
    }

    fn push(&mut self, more: &[u8]) -> Result<(), Error> {
        if more.len() > self.limit.saturating_sub(self.data.len()) {
            return Err(Error::new(
                self.code,
                format!("the input exceeds {} bytes", self.limit),
            ));
        }
        extend_secret(&mut self.data, more);
        Ok(())
    }
}

/// Appends to a secret buffer without leaving copies in freed memory: when it must grow, the
/// contents move to a new zeroizing allocation and the old one is wiped on drop.
fn extend_secret(buf: &mut Zeroizing<Vec<u8>>, more: &[u8]) {
    let needed = buf.len() + more.len();
    if needed > buf.capacity() {
        let mut grown = Zeroizing::new(Vec::with_capacity(needed.max(2 * buf.capacity())));
        grown.extend_from_slice(buf);
        *buf = grown;
    }
    buf.extend_from_slice(more);
}

/// The input of a signature: either collected whole (raw mechanisms, whose input is already a
/// digest or a message the algorithm reads whole) or hashed as it streams by.
enum SignInput {
    Raw(Collected),
    Hash(aws_lc_rs::digest::Context),
}

impl SignInput {
    fn raw(limit: usize) -> SignInput {
        SignInput::Raw(Collected::new(limit, ErrorCode::DataLenRange))
    }

    fn hash(alg: &'static aws_lc_rs::digest::Algorithm) -> SignInput {
        SignInput::Hash(aws_lc_rs::digest::Context::new(alg))
    }

    fn update(&mut self, data: &[u8]) -> Result<(), Error> {
        match self {
            SignInput::Raw(c) => c.push(data),
            SignInput::Hash(ctx) => {
                ctx.update(data);
                Ok(())
            }
        }
    }

    /// The collected input, or the digest of it.
    fn finish(self) -> Zeroizing<Vec<u8>> {
        match self {
            SignInput::Raw(c) => c.data,
            SignInput::Hash(ctx) => Zeroizing::new(ctx.finish().as_ref().to_vec()),
        }
    }
}

/// The digest algorithm of a `CKM_SHA*` value, for hash parameters (PSS, OAEP, KDF).
fn hash_of_ckm(ckm: u64) -> Option<&'static aws_lc_rs::digest::Algorithm> {
    use aws_lc_rs::digest as d;
    use cryptoki_sys as ck;
    Some(match ckm {
        x if x == ck::CKM_SHA_1 as u64 => &d::SHA1_FOR_LEGACY_USE_ONLY,
        x if x == ck::CKM_SHA224 as u64 => &d::SHA224,
        x if x == ck::CKM_SHA256 as u64 => &d::SHA256,
        x if x == ck::CKM_SHA384 as u64 => &d::SHA384,
        x if x == ck::CKM_SHA512 as u64 => &d::SHA512,
        _ => return None,
    })
}

/// A random byte string from the system generator.
fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    crate::seal::random_bytes(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
