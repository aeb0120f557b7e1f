//! How a joining node receives the cluster domain key: wrapped to a fresh P-256 key of the
//! joining node, never in clear, never through `hsmctl`.
//!
//! The joining node makes a key pair when it is unsealed ([`JoinKey`]) and keeps the private
//! half in memory only. An admin fetches the public half and hands it to a member, which
//! makes an ephemeral P-256 key, derives an AES-256-GCM key with HKDF-SHA-256 from the ECDH
//! secret (salt: the cluster id; info: the node id and both public keys), and seals the CDK
//! with the cluster id and node id as associated data ([`admit`]). The joining node derives
//! the same key and opens it ([`JoinKey::open`]). The package travels over mTLS as well.

use crate::error::Error;
use crate::seal::{ClusterDomainKey, KEY_LEN};
use crate::token::ClusterIdentity;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::hkdf;
use hsm_proto::ErrorCode;
use hsm_proto::msg::JoinPackage;
use zeroize::Zeroizing;

/// A joining node's key pair, alive until it has joined.
pub struct JoinKey {
    private: PrivateKey,
    public: Vec<u8>,
}

impl std::fmt::Debug for JoinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinKey([REDACTED])")
    }
}

fn info(node_id: u64, join_public: &[u8], ephemeral_public: &[u8]) -> Vec<u8> {
    let mut i = b"hsm join v1".to_vec();
    i.extend_from_slice(&node_id.to_be_bytes());
    i.extend_from_slice(join_public);
    i.extend_from_slice(ephemeral_public);
    i
}

fn aad(cluster_id: &str, node_id: u64) -> Vec<u8> {
    let mut a = b"hsm-join-cdk".to_vec();
    a.extend_from_slice(cluster_id.as_bytes());
    a.extend_from_slice(&node_id.to_be_bytes());
    a
}

fn derive(
    private: &PrivateKey,
    peer: &[u8],
    cluster_id: &str,
    info: &[u8],
) -> Result<LessSafeKey, Error> {
    let refused = || Error::new(ErrorCode::ArgumentsBad, "the join key is not a P-256 point");
    agreement::agree(
        private,
        UnparsedPublicKey::new(&ECDH_P256, peer),
        refused(),
        |secret| {
            let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, cluster_id.as_bytes());
            let prk = salt.extract(secret);
            let info = [info];
            let okm = prk
                .expand(&info, &AES_256_GCM)
                .map_err(|_| Error::device("join key derivation failed"))?;
            Ok(LessSafeKey::new(UnboundKey::from(okm)))
        },
    )
}

impl JoinKey {
    /// A fresh key pair.
    ///
    /// # Errors
    /// If key generation fails.
    pub fn generate() -> Result<JoinKey, Error> {
        let private = PrivateKey::generate(&ECDH_P256)
            .map_err(|_| Error::device("cannot generate a join key"))?;
        let public = private
            .compute_public_key()
            .map_err(|_| Error::device("cannot compute the join key"))?
            .as_ref()
            .to_vec();
        Ok(JoinKey { private, public })
    }

    /// The public half (uncompressed SEC 1 point).
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Opens a package made for this key and this node.
    ///
    /// # Errors
    /// `ArgumentsBad` if it was made for another node; `DeviceError` if it does not open
    /// (another key, tampered): deliberately without detail.
    pub fn open(&self, package: &JoinPackage, node_id: u64) -> Result<ClusterDomainKey, Error> {
        if package.node_id != node_id {
            return Err(Error::new(
                ErrorCode::ArgumentsBad,
                format!(
                    "the package is for node {}, this is node {node_id}",
                    package.node_id
                ),
            ));
        }
        let key = derive(
            &self.private,
            &package.ephemeral_public,
            &package.cluster_id,
            &info(node_id, &self.public, &package.ephemeral_public),
        )?;
        let failed = || Error::device("the join package does not open with this node's join key");
        if package.wrapped_cdk.len() < NONCE_LEN + 16 {
            return Err(failed());
        }
        let (nonce, sealed) = package.wrapped_cdk.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| failed())?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = key
            .open_in_place(
                nonce,
                Aad::from(aad(&package.cluster_id, node_id)),
                &mut buf,
            )
            .map_err(|_| failed())?;
        let bytes: [u8; KEY_LEN] = plain.try_into().map_err(|_| failed())?;
        ClusterDomainKey::from_bytes(Zeroizing::new(bytes))
    }
}

/// A member's side: wraps the CDK to a joining node's public key.
///
/// # Errors
/// `ArgumentsBad` if the key is not a P-256 point; `DeviceError` if sealing fails.
pub fn admit(
    cdk: &ClusterDomainKey,
    identity: &ClusterIdentity,
    node_id: u64,
    join_public: &[u8],
) -> Result<JoinPackage, Error> {
    let ephemeral = PrivateKey::generate(&ECDH_P256)
        .map_err(|_| Error::device("cannot generate an ephemeral key"))?;
    let ephemeral_public = ephemeral
        .compute_public_key()
        .map_err(|_| Error::device("cannot compute the ephemeral key"))?
        .as_ref()
        .to_vec();
    let key = derive(
        &ephemeral,
        join_public,
        &identity.cluster_id,
        &info(node_id, join_public, &ephemeral_public),
    )?;
    let mut nonce = [0u8; NONCE_LEN];
    crate::seal::random_bytes(&mut nonce)?;
    let mut body = Zeroizing::new(cdk.expose_secret().to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(&identity.cluster_id, node_id)),
        &mut *body,
    )
    .map_err(|_| Error::device("sealing the cluster domain key failed"))?;
    let mut wrapped = nonce.to_vec();
    wrapped.extend_from_slice(&body);
    Ok(JoinPackage {
        cluster_id: identity.cluster_id.clone(),
        cluster_name: identity.cluster_name.clone(),
        node_id,
        ephemeral_public,
        wrapped_cdk: wrapped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ClusterIdentity {
        ClusterIdentity {
            cluster_id: "00112233445566778899aabbccddeeff".into(),
            cluster_name: "test".into(),
        }
    }

    #[test]
    fn the_joining_node_opens_what_a_member_wrapped_for_it() {
        let cdk = ClusterDomainKey::generate().unwrap();
        let joiner = JoinKey::generate().unwrap();
        let package = admit(&cdk, &identity(), 7, joiner.public()).unwrap();
        assert!(
            !package
                .wrapped_cdk
                .windows(KEY_LEN)
                .any(|w| w == cdk.expose_secret()),
            "the CDK does not travel in clear"
        );
        let opened = joiner.open(&package, 7).unwrap();
        assert_eq!(opened.expose_secret(), cdk.expose_secret());
    }

    #[test]
    fn another_key_another_node_or_a_changed_byte_does_not_open() {
        let cdk = ClusterDomainKey::generate().unwrap();
        let joiner = JoinKey::generate().unwrap();
        let other = JoinKey::generate().unwrap();
        let package = admit(&cdk, &identity(), 7, joiner.public()).unwrap();
        assert!(other.open(&package, 7).is_err());
        assert!(joiner.open(&package, 8).is_err());
        let mut p = package.clone();
        p.cluster_id = "ffeeddccbbaa99887766554433221100".into();
        assert!(joiner.open(&p, 7).is_err());
        let mut p = package.clone();
        let last = p.wrapped_cdk.len() - 1;
        p.wrapped_cdk[last] ^= 1;
        assert!(joiner.open(&p, 7).is_err());
        assert!(admit(&cdk, &identity(), 7, b"not a point").is_err());
    }
}
