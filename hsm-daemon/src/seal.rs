//! Sealing: the node sealing key (NSK) derived from the unseal secret, the cluster domain key
//! (CDK) that wraps every key object, and the AEAD formats they use (AES-256-GCM throughout).
//!
//! A record sealed under the NSK: `version (1) || nonce (12) || ciphertext || tag (16)`, with
//! associated data that names the record (its table and key), so a record moved to another
//! place fails to open.
//!
//! Key material wrapped under the CDK, format v2:
//! `version (2) || CDK generation (u32 BE) || nonce (12) || ciphertext || tag (16)`, with
//! associated data `"hsm/cdk-wrap/v2" || 0 || generation (u32 BE) || policy`, where `policy`
//! is the canonical encoding of the object's [`KeyPolicy`](crate::object::KeyPolicy): its id,
//! owner and every attribute that restricts its use. A blob moved to another object, or kept
//! while a bound attribute is edited in a log entry, snapshot or backup, fails to open.
//!
//! Format v1 (`version (1) || nonce || ciphertext || tag`, associated data the object id only)
//! bound no attribute. It opens only through [`ClusterDomainKey::open_v1`], for the one-time
//! migration of a store written before v2 ([`crate::object::migrate_stored`]).

use crate::error::Error;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use hsm_proto::msg::UnsealSecret;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

const FORMAT_V1: u8 = 1;
const WRAP_V2: u8 = 2;
const TAG_LEN: usize = 16;
/// `version || generation` of a v2 wrap.
const WRAP_V2_HEADER_LEN: usize = 1 + 4;

const RECORD_DOMAIN: &[u8] = b"hsm/record/v1";
const WRAP_V1_DOMAIN: &[u8] = b"hsm/cdk-wrap/v1";
const WRAP_V2_DOMAIN: &[u8] = b"hsm/cdk-wrap/v2";

/// Length of every symmetric key here.
pub const KEY_LEN: usize = 32;

/// The generation of the cluster's first CDK, the only one until rotation exists.
pub const GENERATION_1: u32 = 1;

/// Fills a buffer from the system CSPRNG.
///
/// # Errors
/// `DeviceError` if the RNG fails (it does not, short of a broken system).
pub fn random_bytes(out: &mut [u8]) -> Result<(), Error> {
    aws_lc_rs::rand::fill(out).map_err(|_| Error::device("the random generator failed"))
}

/// `domain || 0 || parts…`: the domain label keeps each use of a key apart from the others.
fn associated_data(domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    let mut aad = Vec::with_capacity(domain.len() + 1 + len);
    aad.extend_from_slice(domain);
    aad.push(0);
    for p in parts {
        aad.extend_from_slice(p);
    }
    aad
}

/// An AES-256-GCM key and the framing `header || nonce || ciphertext || tag`.
struct AeadKey(LessSafeKey);

impl AeadKey {
    fn new(bytes: &[u8; KEY_LEN]) -> Result<AeadKey, Error> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| Error::device("cannot load an AES-256 key"))?;
        Ok(AeadKey(LessSafeKey::new(unbound)))
    }

    fn seal(&self, header: &[u8], aad: Vec<u8>, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        // Zeroized if sealing fails while it still holds the plaintext; the capacity is
        // reserved so appending the tag does not leave a copy behind in a reallocation.
        let mut body = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        body.extend_from_slice(plaintext);
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *body,
            )
            .map_err(|_| Error::device("sealing failed"))?;
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + body.len());
        out.extend_from_slice(header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a blob that starts with `header`. Failure is opaque: wrong key, wrong place,
    /// wrong format and tampering look the same.
    fn open(
        &self,
        header: &[u8],
        aad: Vec<u8>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let h = header.len();
        if sealed.len() < h + NONCE_LEN + TAG_LEN || &sealed[..h] != header {
            return Err(OpenError);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed[h..h + NONCE_LEN]).map_err(|_| OpenError)?;
        let mut buf = Zeroizing::new(sealed[h + NONCE_LEN..].to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| OpenError)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// A sealed blob did not open: wrong key, tampered, or moved. Deliberately without detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sealed data failed authentication")
    }
}

/// The node sealing key: seals every record the node writes. Never stored; derived at unseal.
pub struct NodeSealingKey(AeadKey);

impl fmt::Debug for NodeSealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSealingKey([REDACTED])")
    }
}

impl NodeSealingKey {
    /// Seals a record; `context` names it (table and key).
    ///
    /// # Errors
    /// If the RNG or the cipher fails.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.seal(
            &[FORMAT_V1],
            associated_data(RECORD_DOMAIN, &[context]),
            plaintext,
        )
    }

    /// Opens a record sealed with the same context.
    ///
    /// # Errors
    /// [`OpenError`] if it does not authenticate.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.0.open(
            &[FORMAT_V1],
            associated_data(RECORD_DOMAIN, &[context]),
            sealed,
        )
    }
}

/// The format of a CDK-wrapped blob, read from its (unauthenticated) header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrapFormat {
    /// Bound to the object id only; opens only for migration.
    V1,
    /// Bound to the object's policy, under the CDK of this generation.
    V2 {
        /// The CDK generation named in the header.
        generation: u32,
    },
}

impl WrapFormat {
    /// The format a blob claims, or `None` for one too short or of an unknown version. Only
    /// a hint for choosing how to open it: the header is authenticated when the blob opens.
    pub fn of(wrapped: &[u8]) -> Option<WrapFormat> {
        match *wrapped.first()? {
            FORMAT_V1 if wrapped.len() >= 1 + NONCE_LEN + TAG_LEN => Some(WrapFormat::V1),
            WRAP_V2 if wrapped.len() >= WRAP_V2_HEADER_LEN + NONCE_LEN + TAG_LEN => {
                let generation = u32::from_be_bytes(wrapped[1..5].try_into().ok()?);
                Some(WrapFormat::V2 { generation })
            }
            _ => None,
        }
    }
}

/// The cluster domain key: every key object is stored and replicated wrapped under it.
pub struct ClusterDomainKey {
    aead: AeadKey,
    generation: u32,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for ClusterDomainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClusterDomainKey(generation {}, [REDACTED])",
            self.generation
        )
    }
}

impl ClusterDomainKey {
    /// A fresh random CDK of [`GENERATION_1`] (at cluster init).
    ///
    /// # Errors
    /// If the RNG fails.
    pub fn generate() -> Result<ClusterDomainKey, Error> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(&mut bytes[..])?;
        Self::from_bytes(bytes)
    }

    /// Loads the CDK of [`GENERATION_1`] from its bytes.
    ///
    /// # Errors
    /// If the cipher cannot take the key.
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Result<ClusterDomainKey, Error> {
        Self::with_generation(bytes, GENERATION_1)
    }

    /// Loads a CDK of a given generation from its bytes.
    ///
    /// # Errors
    /// If the cipher cannot take the key.
    pub fn with_generation(
        bytes: Zeroizing<[u8; KEY_LEN]>,
        generation: u32,
    ) -> Result<ClusterDomainKey, Error> {
        Ok(ClusterDomainKey {
            aead: AeadKey::new(&bytes)?,
            generation,
            bytes,
        })
    }

    /// Which CDK this is: named in, and bound by, every blob it wraps.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The raw key, for sealing it under the NSK. Named so every use is visible.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    fn v2_header(&self) -> [u8; WRAP_V2_HEADER_LEN] {
        let g = self.generation.to_be_bytes();
        [WRAP_V2, g[0], g[1], g[2], g[3]]
    }

    fn v2_aad(&self, policy: &[u8]) -> Vec<u8> {
        associated_data(WRAP_V2_DOMAIN, &[&self.generation.to_be_bytes(), policy])
    }

    /// Wraps key material in format v2, bound to `policy`: the canonical encoding of the
    /// object's [`KeyPolicy`](crate::object::KeyPolicy). Callers go through
    /// [`Object`](crate::object::Object), which computes it.
    ///
    /// # Errors
    /// If the RNG or the cipher fails.
    pub fn wrap(&self, policy: &[u8], material: &[u8]) -> Result<Vec<u8>, Error> {
        self.aead
            .seal(&self.v2_header(), self.v2_aad(policy), material)
    }

    /// Unwraps a v2 blob wrapped by this CDK generation under the same `policy`.
    ///
    /// # Errors
    /// [`OpenError`] if the blob is not v2 of this generation or does not authenticate for
    /// that policy.
    pub fn unwrap(&self, policy: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.aead
            .open(&self.v2_header(), self.v2_aad(policy), wrapped)
    }

    /// Opens a v1 blob (bound to the object id `context` only). For migration to v2 only:
    /// nothing else may accept v1, or a v1 blob could be put back to skip the policy check.
    ///
    /// # Errors
    /// [`OpenError`] if the blob is not v1 or does not authenticate for that object.
    pub fn open_v1(&self, context: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.aead.open(
            &[FORMAT_V1],
            associated_data(WRAP_V1_DOMAIN, &[context]),
            wrapped,
        )
    }

    /// Wraps in format v1, to make the old stores migration starts from.
    #[cfg(test)]
    pub(crate) fn wrap_v1(&self, context: &[u8], material: &[u8]) -> Result<Vec<u8>, Error> {
        self.aead.seal(
            &[FORMAT_V1],
            associated_data(WRAP_V1_DOMAIN, &[context]),
            material,
        )
    }
}

/// How a node's NSK is derived. Stored in clear (it holds no secret) in the metadata table.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum UnsealMethod {
    /// Argon2id over an operator passphrase.
    Passphrase {
        /// Random salt.
        salt: [u8; 16],
        /// Memory cost in KiB.
        m_cost_kib: u32,
        /// Iterations.
        t_cost: u32,
        /// Parallelism.
        p_cost: u32,
    },
    /// HKDF over a 32-byte key file: development only.
    DevKeyFile {
        /// Random salt.
        salt: [u8; 16],
    },
}

impl UnsealMethod {
    /// A new passphrase method with fresh salt and the default cost (64 MiB, 3 passes).
    ///
    /// # Errors
    /// If the RNG fails.
    pub fn new_passphrase() -> Result<UnsealMethod, Error> {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt)?;
        Ok(UnsealMethod::Passphrase {
            salt,
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        })
    }

    /// A new development key-file method.
    ///
    /// # Errors
    /// If the RNG fails.
    pub fn new_dev_key_file() -> Result<UnsealMethod, Error> {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt)?;
        Ok(UnsealMethod::DevKeyFile { salt })
    }

    /// Whether this is the development unseal.
    pub fn is_dev(&self) -> bool {
        matches!(self, UnsealMethod::DevKeyFile { .. })
    }

    /// Derives the NSK from the operator's secret. CPU-heavy for passphrases (Argon2id): call
    /// it off the I/O threads.
    ///
    /// # Errors
    /// `ArgumentsBad` if the secret is of the other kind; `DeviceError` if derivation fails.
    pub fn derive(&self, secret: &UnsealSecret) -> Result<NodeSealingKey, Error> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        match (self, secret) {
            (
                UnsealMethod::Passphrase {
                    salt,
                    m_cost_kib,
                    t_cost,
                    p_cost,
                },
                UnsealSecret::Passphrase(p),
            ) => {
                let params = argon2::Params::new(*m_cost_kib, *t_cost, *p_cost, Some(KEY_LEN))
                    .map_err(|e| Error::device(format!("bad Argon2 parameters: {e}")))?;
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(p.expose_secret().as_bytes(), salt, &mut key[..])
                    .map_err(|e| Error::device(format!("Argon2id failed: {e}")))?;
            }
            (UnsealMethod::DevKeyFile { salt }, UnsealSecret::DevKey(file)) => {
                if file.len() != KEY_LEN {
                    return Err(Error::new(
                        hsm_proto::ErrorCode::PinIncorrect,
                        format!("the development key file must hold {KEY_LEN} bytes"),
                    ));
                }
                let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(file.expose_secret());
                prk.expand(&[b"hsm/nsk/dev-key-file/v1"], hkdf::HKDF_SHA256)
                    .and_then(|okm| okm.fill(&mut key[..]))
                    .map_err(|_| Error::device("HKDF failed"))?;
            }
            (UnsealMethod::Passphrase { .. }, UnsealSecret::DevKey(_)) => {
                return Err(Error::new(
                    hsm_proto::ErrorCode::ArgumentsBad,
                    "this node is sealed with a passphrase, not a development key file",
                ));
            }
            (UnsealMethod::DevKeyFile { .. }, UnsealSecret::Passphrase(_)) => {
                return Err(Error::new(
                    hsm_proto::ErrorCode::ArgumentsBad,
                    "this node is sealed with a development key file, not a passphrase",
                ));
            }
        }
        Ok(NodeSealingKey(AeadKey::new(&key)?))
    }
}

#[cfg(test)]
mod wrap_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_proto::{Password, SecretBytes};

    fn dev_secret(b: u8) -> UnsealSecret {
        UnsealSecret::DevKey(SecretBytes::new(vec![b; KEY_LEN]))
    }

    #[test]
    fn records_open_only_in_their_place_and_under_their_key() {
        let method = UnsealMethod::new_dev_key_file().unwrap();
        let nsk = method.derive(&dev_secret(7)).unwrap();
        let sealed = nsk.seal(b"objects/1", b"payload").unwrap();
        assert_eq!(&nsk.open(b"objects/1", &sealed).unwrap()[..], b"payload");
        assert_eq!(nsk.open(b"objects/2", &sealed), Err(OpenError));
        let other = method.derive(&dev_secret(8)).unwrap();
        assert_eq!(other.open(b"objects/1", &sealed), Err(OpenError));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(nsk.open(b"objects/1", &tampered), Err(OpenError));
        assert!(!sealed.windows(7).any(|w| w == b"payload"));
    }

    #[test]
    fn passphrase_derivation_is_deterministic_and_secret_dependent() {
        let method = UnsealMethod::Passphrase {
            salt: [1; 16],
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        };
        let a = method
            .derive(&UnsealSecret::Passphrase(Password::new("correct".into())))
            .unwrap();
        let b = method
            .derive(&UnsealSecret::Passphrase(Password::new("correct".into())))
            .unwrap();
        let c = method
            .derive(&UnsealSecret::Passphrase(Password::new("wrong".into())))
            .unwrap();
        let sealed = a.seal(b"x", b"y").unwrap();
        assert!(b.open(b"x", &sealed).is_ok());
        assert!(c.open(b"x", &sealed).is_err());
        assert!(method.derive(&dev_secret(1)).is_err());
    }
}
