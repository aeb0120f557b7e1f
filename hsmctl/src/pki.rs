//! The cluster's certificates: one CA (ECDSA P-256) that issues node certificates
//! (serverAuth + clientAuth) and client certificates (clientAuth).

use crate::error::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
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
        sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<Issued> {
        let key = new_key()?;
        let mut params = params(common_name);
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

    /// A node certificate: SANs `localhost`, `127.0.0.1` and the node name; usable as TLS
    /// server (clients) and TLS client (other nodes).
    ///
    /// # Errors
    /// If the node name is not a valid DNS name, or generation fails.
    pub fn issue_node(&self, node_name: &str) -> Result<Issued> {
        let mut sans = vec![
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
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate (TLS client only).
    ///
    /// # Errors
    /// If generation fails.
    pub fn issue_client(&self, name: &str) -> Result<Issued> {
        self.issue(name, Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth])
    }
}
