//! rustls configurations for every party: TLS 1.3 only, aws-lc-rs chosen explicitly, both
//! sides authenticated against the cluster CA.

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// ALPN protocol name of the client protocol.
pub const ALPN_CLIENT: &[u8] = b"hsm-client/1";

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

/// The one crypto provider every configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
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

/// A node's server configuration: TLS 1.3, client certificate required and verified against
/// the cluster CA.
///
/// # Errors
/// If a file is missing or invalid.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> Result<ServerConfig, TlsSetupError> {
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
    config.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
    Ok(config)
}

/// A client configuration (module or hsmctl): TLS 1.3, the node verified against the cluster
/// CA, our client certificate presented.
///
/// # Errors
/// If a file is missing or invalid.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientConfig, TlsSetupError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(None, e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| err(Some(cert), format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
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
