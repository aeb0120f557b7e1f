//! The cluster's certificates: one CA (ECDSA P-256) that issues node certificates
//! (serverAuth + clientAuth) and client certificates (clientAuth), each with its role bound
//! into it as a SAN URI (`urn:hsm:role:node|admin|app`, see [`hsm_proto::tls::CertRole`]); a
//! node certificate also names its node id (`urn:hsm:node:<id>`).

use crate::error::{CtlError, Result};
use hsm_proto::tls::{CertRole, node_id_uri};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::net::{IpAddr, Ipv4Addr};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// How long the certificates `init` makes stay valid. Rotation is an operator task we do not
/// automate yet, so the lifetime is long; the CA key never leaves the cluster directory.
const VALIDITY_DAYS: i64 = 10 * 365;

/// A certificate and its private key, both PEM.
#[derive(Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8), zeroized on drop.
    pub key_pem: Zeroizing<String>,
}

/// The cluster CA, able to issue certificates.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate and key.
    pub issued: Issued,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCa { .. }")
    }
}

fn new_key() -> Result<KeyPair> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

fn params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    // Back-dated a little so a node whose clock is slightly behind accepts the certificate.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(VALIDITY_DAYS);
    params
}

impl ClusterCa {
    /// Makes a new CA for a cluster.
    ///
    /// # Errors
    /// If key generation or signing fails.
    pub fn generate(cluster_name: &str) -> Result<ClusterCa> {
        let key = new_key()?;
        let mut params = params(&format!("{cluster_name} cluster CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        };
        Ok(ClusterCa {
            issuer: Issuer::new(params, key),
            issued,
        })
    }

    fn issue(
        &self,
        common_name: &str,
        role: CertRole,
        mut sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<Issued> {
        let key = new_key()?;
        let mut params = params(common_name);
        sans.push(SanType::URI(role.uri().try_into()?));
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// A node certificate: SANs `localhost`, `127.0.0.1` and the node name, the role URI
    /// `urn:hsm:role:node` and the node id URI `urn:hsm:node:<node_id>`; usable as TLS server
    /// (clients, other nodes) and TLS client (other nodes).
    ///
    /// # Errors
    /// If the node id is 0 (no valid node id), the node name is not a valid DNS name, or
    /// generation fails.
    pub fn issue_node(&self, node_name: &str, node_id: u64) -> Result<Issued> {
        if node_id == 0 {
            return Err(CtlError::Usage(
                "node id 0 is not a valid node id; node ids are nonzero".into(),
            ));
        }
        let mut sans = vec![
            SanType::URI(node_id_uri(node_id).try_into()?),
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        match node_name.parse::<IpAddr>() {
            Ok(ip) if ip != IpAddr::V4(Ipv4Addr::LOCALHOST) => sans.push(SanType::IpAddress(ip)),
            Ok(_) => {}
            Err(_) if node_name != "localhost" => {
                sans.push(SanType::DnsName(node_name.try_into()?));
            }
            Err(_) => {}
        }
        self.issue(
            node_name,
            CertRole::Node,
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate (TLS client only) with its role: [`CertRole::Admin`] for hsmctl,
    /// [`CertRole::App`] for the PKCS#11 module.
    ///
    /// # Errors
    /// If `role` is [`CertRole::Node`] (use [`ClusterCa::issue_node`]), or generation fails.
    pub fn issue_client(&self, name: &str, role: CertRole) -> Result<Issued> {
        if role == CertRole::Node {
            return Err(CtlError::Usage(format!(
                "{name}: a node certificate is issued with its node id, not as a client"
            )));
        }
        self.issue(
            name,
            role,
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )
    }
}

impl ClusterCa {
    /// The CA of an existing cluster directory, from its certificate and key (PEM), to issue
    /// more certificates (`hsmctl node add`). The issuer's name and key identifier are read
    /// from the certificate, so new certificates chain to it exactly.
    ///
    /// # Errors
    /// If either PEM does not parse or the key is not the certificate's.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<ClusterCa> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| CtlError::Pki(rcgen::Error::CouldNotParseCertificate))?;
        // A key that is not the certificate's would issue certificates nobody accepts.
        if !cert_matches_key(&cert, &key) {
            return Err(CtlError::Usage(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(ClusterCa {
            issuer,
            issued: Issued {
                cert_pem: cert_pem.to_owned(),
                key_pem: Zeroizing::new(key_pem.to_owned()),
            },
        })
    }
}

/// Whether the certificate's subject public key is the key pair's.
fn cert_matches_key(cert: &CertificateDer<'_>, key: &KeyPair) -> bool {
    // The DER of the key's SubjectPublicKeyInfo appears verbatim inside the certificate.
    let spki = rcgen::PublicKeyData::subject_public_key_info(key);
    cert.as_ref()
        .windows(spki.len())
        .any(|w| w == spki.as_slice())
}

/// A fresh random node id: nonzero (0 is never a valid id), from the system's CSPRNG.
///
/// # Errors
/// If the random generator fails.
pub fn new_node_id() -> Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| CtlError::Pki(rcgen::Error::RingUnspecified))?;
        let id = u64::from_be_bytes(bytes);
        if id != 0 {
            return Ok(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_proto::tls::peer_identity;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    fn identity(issued: &Issued) -> hsm_proto::tls::PeerIdentity {
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("PEM");
        peer_identity(&der).expect("identity")
    }

    #[test]
    fn every_certificate_carries_its_role() {
        let ca = ClusterCa::generate("test").unwrap();
        let id = new_node_id().unwrap();
        assert_ne!(id, 0);
        let node = identity(&ca.issue_node("node1", id).unwrap());
        assert_eq!(
            (node.role, node.common_name.as_str(), node.node_id),
            (CertRole::Node, "node1", Some(id))
        );
        for role in [CertRole::Admin, CertRole::App] {
            let client = identity(&ca.issue_client("someone", role).unwrap());
            assert_eq!((client.role, client.node_id), (role, None));
            assert_eq!(client.common_name, "someone");
        }
        assert!(ca.issue_node("node1", 0).is_err());
        assert!(ca.issue_client("node1", CertRole::Node).is_err());
    }

    #[test]
    fn a_loaded_ca_issues_certificates_that_chain_to_it() {
        let ca = ClusterCa::generate("test").unwrap();
        let again = ClusterCa::load(&ca.issued.cert_pem, &ca.issued.key_pem).unwrap();
        let issued = again.issue_node("node2", 7).unwrap();
        // Issued by the original CA: the roots of a node config accept it.
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.issued.cert_pem.as_bytes()).unwrap())
            .unwrap();
        let leaf = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let verifier = tokio_rustls::rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        use tokio_rustls::rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &rustls_pki_types::ServerName::try_from("node2").unwrap(),
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .expect("a certificate from the loaded CA verifies against the CA");
        assert_eq!(identity(&issued).node_id, Some(7));
        // Another CA's key does not load with this certificate.
        let other = ClusterCa::generate("other").unwrap();
        assert!(ClusterCa::load(&ca.issued.cert_pem, &other.issued.key_pem).is_err());
    }
}
