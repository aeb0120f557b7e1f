//! rustls configurations for every party: TLS 1.3 only, aws-lc-rs chosen explicitly, the
//! hybrid X25519MLKEM768 key exchange preferred, both sides authenticated against the cluster
//! CA; and the identity ([`CertRole`], node id) the cluster CA binds into each certificate.

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

#[cfg(test)]
mod tests;

/// ALPN protocol name of the client protocol (module and hsmctl to a node's client port).
pub const ALPN_CLIENT: &[u8] = b"hsm-client/1";
/// ALPN protocol name of the node-to-node protocol (the cluster port).
pub const ALPN_CLUSTER: &[u8] = b"hsm-cluster/1";

/// The prefix of the SAN URI that names a certificate's role: `urn:hsm:role:node` etc.
pub const ROLE_URI_PREFIX: &str = "urn:hsm:role:";
/// The prefix of the SAN URI that names a node certificate's node id: `urn:hsm:node:<u64>`.
pub const NODE_ID_URI_PREFIX: &str = "urn:hsm:node:";

/// Why a TLS configuration could not be built.
#[derive(Debug)]
pub struct TlsSetupError {
    /// The file involved, if any.
    pub path: Option<PathBuf>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}", p.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TlsSetupError {}

fn err(path: Option<&Path>, message: impl Into<String>) -> TlsSetupError {
    TlsSetupError {
        path: path.map(Path::to_path_buf),
        message: message.into(),
    }
}

/// The one crypto provider every configuration uses: aws-lc-rs, with the hybrid
/// post-quantum key exchange X25519MLKEM768 first, so two of our parties always agree on it
/// (the classical groups stay for a peer that does not offer it).
///
/// The order is set here rather than through rustls' `prefer-post-quantum` feature, so that no
/// feature unification elsewhere in the dependency tree can change what we negotiate.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::kx_group;
    Arc::new(CryptoProvider {
        kx_groups: vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
        ],
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}

/// Reads every certificate in a PEM file.
///
/// # Errors
/// If the file cannot be read or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(Some(path), format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(Some(path), format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(Some(path), "no certificate in file"));
    }
    Ok(certs)
}

/// Reads a private key from a PEM file. The error never includes key bytes.
///
/// # Errors
/// If the file cannot be read or holds no key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| err(Some(path), format!("cannot read private key: {e}")))
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsSetupError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(ca)? {
        store
            .add(cert)
            .map_err(|e| err(Some(ca), format!("bad CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// A node's client-port server configuration: TLS 1.3, client certificate required and
/// verified against the cluster CA, ALPN [`ALPN_CLIENT`]. The role in the client's
/// certificate is the daemon's to check ([`peer_identity`]).
///
/// # Errors
/// If a file is missing or invalid.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<ServerConfig, TlsSetupError> {
    server_config_for(ca, cert, key, ALPN_CLIENT)
}

/// A client configuration (module or hsmctl): TLS 1.3, the node verified against the cluster
/// CA, our client certificate presented, ALPN [`ALPN_CLIENT`].
///
/// # Errors
/// If a file is missing or invalid.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientConfig, TlsSetupError> {
    client_config_for(ca, cert, key, ALPN_CLIENT)
}

/// A node's cluster-port server configuration: as [`server_config`], with ALPN
/// [`ALPN_CLUSTER`]. The cluster port accepts node certificates only; checking the role
/// ([`peer_identity`]) is the listener's job.
///
/// # Errors
/// If a file is missing or invalid.
pub fn cluster_server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<ServerConfig, TlsSetupError> {
    server_config_for(ca, cert, key, ALPN_CLUSTER)
}

/// A node's configuration for connecting to another node's cluster port: as
/// [`client_config`], with ALPN [`ALPN_CLUSTER`], presenting the node certificate.
///
/// # Errors
/// If a file is missing or invalid.
pub fn cluster_client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<ClientConfig, TlsSetupError> {
    client_config_for(ca, cert, key, ALPN_CLUSTER)
}

fn server_config_for(
    ca: &Path,
    cert: &Path,
    key: &Path,
    alpn: &[u8],
) -> Result<ServerConfig, TlsSetupError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .build()
        .map_err(|e| err(Some(ca), format!("cannot build client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(None, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| err(Some(cert), format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

fn client_config_for(
    ca: &Path,
    cert: &Path,
    key: &Path,
    alpn: &[u8],
) -> Result<ClientConfig, TlsSetupError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(None, e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| err(Some(cert), format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// A client configuration without a client certificate (for tests that check such a client
/// is refused, and nothing else).
///
/// # Errors
/// If the CA file is missing or invalid.
pub fn anonymous_client_config(ca: &Path) -> Result<ClientConfig, TlsSetupError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(None, e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
    Ok(config)
}

/// What a certificate of the cluster CA is for. Bound into the certificate as the SAN URI
/// `urn:hsm:role:<role>` ([`CertRole::uri`]); the cluster port serves only `node`, the client
/// port only `admin` and `app`, and admin requests need `admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertRole {
    /// A cluster node: TLS server on both ports, TLS client of the other nodes.
    Node,
    /// An operator's client (hsmctl): unseal, users, nodes, backups.
    Admin,
    /// An application's client (the PKCS#11 module): sessions and keys.
    App,
}

impl CertRole {
    /// Every role.
    pub const ALL: [CertRole; 3] = [CertRole::Node, CertRole::Admin, CertRole::App];

    /// The role's name in its URI and in log lines: `node`, `admin`, `app`.
    pub const fn name(self) -> &'static str {
        match self {
            CertRole::Node => "node",
            CertRole::Admin => "admin",
            CertRole::App => "app",
        }
    }

    /// The SAN URI that binds this role into a certificate, e.g. `urn:hsm:role:admin`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.name())
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SAN URI that binds a node id into a node certificate: `urn:hsm:node:<id>`, decimal.
pub fn node_id_uri(node_id: u64) -> String {
    format!("{NODE_ID_URI_PREFIX}{node_id}")
}

/// Who a peer is, as its certificate (already verified against the cluster CA) says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The role bound into the certificate.
    pub role: CertRole,
    /// The subject's common name (a node's name, a client's name), for log lines.
    pub common_name: String,
    /// The node id of a node certificate; `None` for every other role.
    pub node_id: Option<u64>,
}

/// Why the identity in a certificate could not be read. A peer presenting such a
/// certificate is refused; the message names the certificate's CN and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bytes are not one well-formed X.509 certificate, or its subject has no single
    /// readable common name.
    Malformed(String),
    /// No role URI: a certificate issued before roles existed, or by another tool.
    NoRole {
        /// The certificate's CN.
        common_name: String,
    },
    /// More than one role URI (even twice the same one): ambiguous, so refused.
    SeveralRoles {
        /// The certificate's CN.
        common_name: String,
    },
    /// A role URI naming no role we know.
    UnknownRole {
        /// The certificate's CN.
        common_name: String,
        /// The URI.
        uri: String,
    },
    /// A node certificate without exactly one valid node-id URI, or another role's
    /// certificate with one.
    NodeId {
        /// The certificate's CN.
        common_name: String,
        /// What is wrong.
        why: String,
    },
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Malformed(m) => write!(f, "unreadable certificate: {m}"),
            IdentityError::NoRole { common_name } => write!(
                f,
                "certificate of CN={common_name} carries no hsm role; reissue it with this \
                 version of hsmctl"
            ),
            IdentityError::SeveralRoles { common_name } => write!(
                f,
                "certificate of CN={common_name} carries more than one hsm role URI; \
                 a certificate has exactly one role, reissue it with hsmctl"
            ),
            IdentityError::UnknownRole { common_name, uri } => write!(
                f,
                "certificate of CN={common_name} carries the unknown role {uri:?} \
                 (known: node, admin, app)"
            ),
            IdentityError::NodeId { common_name, why } => {
                write!(f, "certificate of CN={common_name}: {why}")
            }
        }
    }
}

impl std::error::Error for IdentityError {}

/// Reads the role, common name and node id the cluster CA bound into a certificate.
///
/// It parses only: call it on a certificate the TLS layer has already verified against the
/// cluster CA (rustls' `peer_certificates()[0]`). Exactly one `urn:hsm:role:` SAN URI is
/// required; a node certificate needs exactly one `urn:hsm:node:<id>` URI with a nonzero
/// decimal id, and any other certificate must carry none.
///
/// # Errors
/// If the DER does not parse, the subject has no single common name, or the role or node id
/// URIs break the rules above.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
    let malformed = |m: String| IdentityError::Malformed(m);
    let (rest, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| malformed(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    let mut names = x509.subject().iter_common_name();
    let common_name = match (names.next(), names.next()) {
        (Some(cn), None) => cn
            .as_str()
            .map_err(|e| malformed(format!("unreadable subject common name: {e}")))?
            .to_owned(),
        (None, _) => return Err(malformed("the subject has no common name".into())),
        (Some(_), Some(_)) => {
            return Err(malformed(
                "the subject has more than one common name".into(),
            ));
        }
    };
    let uris: Vec<&str> = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            return Err(malformed(format!(
                "CN={common_name}: bad subject alternative names: {e}"
            )));
        }
    };

    let mut roles = uris.iter().filter_map(|u| u.strip_prefix(ROLE_URI_PREFIX));
    let role = match (roles.next(), roles.next()) {
        (None, _) => return Err(IdentityError::NoRole { common_name }),
        (Some(_), Some(_)) => return Err(IdentityError::SeveralRoles { common_name }),
        (Some(name), None) => match CertRole::ALL.into_iter().find(|r| r.name() == name) {
            Some(role) => role,
            None => {
                return Err(IdentityError::UnknownRole {
                    common_name,
                    uri: format!("{ROLE_URI_PREFIX}{name}"),
                });
            }
        },
    };

    let ids: Vec<&str> = uris
        .iter()
        .filter_map(|u| u.strip_prefix(NODE_ID_URI_PREFIX))
        .collect();
    let node_error = |why: String| IdentityError::NodeId {
        common_name: common_name.clone(),
        why,
    };
    let node_id = match (role, ids.as_slice()) {
        (CertRole::Node, [id]) => Some(parse_node_id(id).ok_or_else(|| {
            node_error(format!(
                "bad node id URI {NODE_ID_URI_PREFIX}{id:?}: expected a nonzero decimal u64"
            ))
        })?),
        (CertRole::Node, []) => {
            return Err(node_error(format!(
                "a node certificate needs a {NODE_ID_URI_PREFIX}<id> URI; reissue it with \
                 this version of hsmctl"
            )));
        }
        (CertRole::Node, _) => {
            return Err(node_error("more than one node id URI".into()));
        }
        (_, []) => None,
        (role, _) => {
            return Err(node_error(format!(
                "an {role} certificate must not carry a node id URI"
            )));
        }
    };
    Ok(PeerIdentity {
        role,
        common_name,
        node_id,
    })
}

/// A node id in its one canonical form: decimal digits, no sign, no leading zero, nonzero.
fn parse_node_id(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}
