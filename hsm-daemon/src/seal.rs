//! Sealing: the node sealing key (NSK) derived from the unseal secret, the cluster domain key
//! (CDK) that wraps every key object, and the one AEAD format both use.
//!
//! Format of a sealed blob: `version (1) || nonce (12) || ciphertext || tag (16)`, AES-256-GCM,
//! with associated data that names what the blob is (the record's table and key, or the key
//! object's id), so a blob moved to another place fails to open.

use crate::error::Error;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use hsm_proto::msg::UnsealSecret;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

const FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;

/// Length of every symmetric key here.
pub const KEY_LEN: usize = 32;

/// Fills a buffer from the system CSPRNG.
///
/// # Errors
/// `DeviceError` if the RNG fails (it does not, short of a broken system).
pub fn random_bytes(out: &mut [u8]) -> Result<(), Error> {
    aws_lc_rs::rand::fill(out).map_err(|_| Error::device("the random generator failed"))
}

/// An AES-256-GCM key with a domain label mixed into every associated data.
struct AeadKey {
    key: LessSafeKey,
    domain: &'static [u8],
}

impl AeadKey {
    fn new(bytes: &[u8; KEY_LEN], domain: &'static [u8]) -> Result<AeadKey, Error> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| Error::device("cannot load an AES-256 key"))?;
        Ok(AeadKey {
            key: LessSafeKey::new(unbound),
            domain,
        })
    }

    fn aad(&self, context: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.domain.len() + 1 + context.len());
        aad.extend_from_slice(self.domain);
        aad.push(0);
        aad.extend_from_slice(context);
        aad
    }

    fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(1 + NONCE_LEN);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(context)),
                &mut body,
            )
            .map_err(|_| Error::device("sealing failed"))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a blob. Failure is opaque: wrong key, wrong place and tampering look the same.
    fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != FORMAT_V1 {
            return Err(OpenError);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| OpenError)?;
        let mut buf = Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(self.aad(context)), &mut buf)
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
        self.0.seal(context, plaintext)
    }

    /// Opens a record sealed with the same context.
    ///
    /// # Errors
    /// [`OpenError`] if it does not authenticate.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.0.open(context, sealed)
    }
}

/// The cluster domain key: every key object is stored and replicated wrapped under it.
pub struct ClusterDomainKey {
    aead: AeadKey,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for ClusterDomainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterDomainKey([REDACTED])")
    }
}

impl ClusterDomainKey {
    /// A fresh random CDK (at cluster init).
    ///
    /// # Errors
    /// If the RNG fails.
    pub fn generate() -> Result<ClusterDomainKey, Error> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(&mut bytes[..])?;
        Self::from_bytes(bytes)
    }

    /// Loads a CDK from its bytes.
    ///
    /// # Errors
    /// If the cipher cannot take the key.
    pub fn from_bytes(bytes: Zeroizing<[u8; KEY_LEN]>) -> Result<ClusterDomainKey, Error> {
        Ok(ClusterDomainKey {
            aead: AeadKey::new(&bytes, b"hsm/cdk-wrap/v1")?,
            bytes,
        })
    }

    /// The raw key, for sealing it under the NSK. Named so every use is visible.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Wraps key material for the object `context` (its id).
    ///
    /// # Errors
    /// If the RNG or the cipher fails.
    pub fn wrap(&self, context: &[u8], material: &[u8]) -> Result<Vec<u8>, Error> {
        self.aead.seal(context, material)
    }

    /// Unwraps key material of the object `context`.
    ///
    /// # Errors
    /// [`OpenError`] if the blob does not authenticate for that object.
    pub fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.aead.open(context, wrapped)
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
        Ok(NodeSealingKey(AeadKey::new(&key, b"hsm/record/v1")?))
    }
}

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
