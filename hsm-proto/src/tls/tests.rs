//! Certificate identities and handshakes between our own configurations, with certificates
//! made here by rcgen.

use super::*;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConnection, NamedGroup, ServerConnection};
use rustls_pki_types::ServerName;
use std::sync::atomic::{AtomicU32, Ordering};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "test cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).expect("self-sign").pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// A certificate issued by `ca` with a CN (if any), these SAN URIs and `localhost`.
fn leaf(ca: &Ca, cn: Option<&str>, uris: &[&str]) -> (Certificate, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::DnsName("localhost".try_into().expect("dns"))];
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*uri).try_into().expect("uri")));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    (cert, key)
}

fn identity(cn: Option<&str>, uris: &[&str]) -> Result<PeerIdentity, IdentityError> {
    let (cert, _) = leaf(&ca(), cn, uris);
    peer_identity(cert.der())
}

#[test]
fn reads_role_common_name_and_node_id() {
    let node = identity(Some("node1"), &["urn:hsm:role:node", "urn:hsm:node:42"]).unwrap();
    assert_eq!(
        node,
        PeerIdentity {
            role: CertRole::Node,
            common_name: "node1".into(),
            node_id: Some(42),
        }
    );
    let max = node_id_uri(u64::MAX);
    let node = identity(Some("n"), &[&CertRole::Node.uri(), &max]).unwrap();
    assert_eq!(node.node_id, Some(u64::MAX));
    for role in [CertRole::Admin, CertRole::App] {
        // Other URIs are ignored.
        let id = identity(Some("who"), &["https://example.com/x", &role.uri()]).unwrap();
        assert_eq!((id.role, id.node_id), (role, None));
        assert_eq!(id.common_name, "who");
    }
    assert_eq!(CertRole::Admin.uri(), "urn:hsm:role:admin");
    assert_eq!(CertRole::App.to_string(), "app");
    assert_eq!(node_id_uri(7), "urn:hsm:node:7");
}

#[test]
fn a_certificate_without_exactly_one_known_role_is_refused() {
    let e = identity(Some("old-app"), &[]).unwrap_err();
    assert_eq!(
        e,
        IdentityError::NoRole {
            common_name: "old-app".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "certificate of CN=old-app carries no hsm role; reissue it with this version of hsmctl"
    );
    // A URI that only looks like one is no role either.
    assert!(matches!(
        identity(Some("x"), &["URN:HSM:ROLE:admin"]),
        Err(IdentityError::NoRole { .. })
    ));
    for uris in [
        ["urn:hsm:role:admin", "urn:hsm:role:app"],
        ["urn:hsm:role:app", "urn:hsm:role:app"],
    ] {
        let e = identity(Some("x"), &uris).unwrap_err();
        assert!(matches!(e, IdentityError::SeveralRoles { .. }), "{e}");
        assert!(e.to_string().contains("CN=x"), "{e}");
    }
    let e = identity(Some("x"), &["urn:hsm:role:root"]).unwrap_err();
    assert!(matches!(e, IdentityError::UnknownRole { .. }), "{e}");
    assert!(e.to_string().contains("urn:hsm:role:root"), "{e}");
}

#[test]
fn node_ids_only_on_node_certificates_and_only_canonical() {
    let e = identity(Some("node1"), &["urn:hsm:role:node"]).unwrap_err();
    assert!(matches!(e, IdentityError::NodeId { .. }), "{e}");
    assert!(e.to_string().contains("urn:hsm:node:<id>"), "{e}");
    for bad in [
        "0",
        "012",
        "+5",
        "-1",
        "",
        "abc",
        "18446744073709551616",
        "1 ",
    ] {
        let uri = format!("urn:hsm:node:{bad}");
        let e = identity(Some("node1"), &["urn:hsm:role:node", &uri]).unwrap_err();
        assert!(matches!(e, IdentityError::NodeId { .. }), "{bad:?}: {e}");
    }
    let e = identity(
        Some("node1"),
        &["urn:hsm:role:node", "urn:hsm:node:1", "urn:hsm:node:2"],
    )
    .unwrap_err();
    assert!(matches!(e, IdentityError::NodeId { .. }), "{e}");
    let e = identity(Some("app"), &["urn:hsm:role:app", "urn:hsm:node:1"]).unwrap_err();
    assert!(e.to_string().contains("an app certificate"), "{e}");
}

#[test]
fn unreadable_certificates_are_refused() {
    let e = identity(None, &["urn:hsm:role:app"]).unwrap_err();
    assert!(matches!(e, IdentityError::Malformed(_)), "{e}");
    assert!(matches!(
        peer_identity(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
        Err(IdentityError::Malformed(_))
    ));
    let (cert, _) = leaf(&ca(), Some("x"), &["urn:hsm:role:app"]);
    let mut longer = cert.der().to_vec();
    longer.push(0);
    assert!(matches!(
        peer_identity(&CertificateDer::from(longer)),
        Err(IdentityError::Malformed(_))
    ));
}

/// PEM files for one CA and two parties, removed on drop.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(ca: &Ca, parties: &[(&str, &Certificate, &KeyPair)]) -> Files {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hsm-proto-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("ca.pem"), &ca.pem).expect("write");
        for (name, cert, key) in parties {
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write");
        }
        Files { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a handshake in memory until both sides are done.
fn handshake(
    client: ClientConfig,
    server: ServerConfig,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let name = ServerName::try_from("localhost").expect("name");
    let mut c = ClientConnection::new(Arc::new(client), name)?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    let mut buf = Vec::new();
    for _ in 0..16 {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client writes");
        }
        let mut input = &buf[..];
        while !input.is_empty() {
            s.read_tls(&mut input).expect("server reads");
        }
        s.process_new_packets()?;
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server writes");
        }
        let mut input = &buf[..];
        while !input.is_empty() {
            c.read_tls(&mut input).expect("client reads");
        }
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    panic!("the handshake did not finish");
}

#[test]
fn the_provider_prefers_the_hybrid_post_quantum_group() {
    let groups: Vec<NamedGroup> = provider().kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(
        groups.first(),
        Some(&NamedGroup::X25519MLKEM768),
        "{groups:?}"
    );
}

#[test]
fn our_client_and_server_negotiate_x25519mlkem768_and_see_each_others_roles() {
    let ca = ca();
    let (node, node_key) = leaf(&ca, Some("node1"), &["urn:hsm:role:node", "urn:hsm:node:9"]);
    let (app, app_key) = leaf(&ca, Some("app"), &["urn:hsm:role:app"]);
    let files = Files::new(&ca, &[("node", &node, &node_key), ("app", &app, &app_key)]);
    let server = server_config(&files.ca(), &files.cert("node"), &files.key("node")).unwrap();
    let client = client_config(&files.ca(), &files.cert("app"), &files.key("app")).unwrap();
    let (c, s) = handshake(client, server).expect("handshake");
    for group in [
        c.negotiated_key_exchange_group(),
        s.negotiated_key_exchange_group(),
    ] {
        assert_eq!(group.map(|g| g.name()), Some(NamedGroup::X25519MLKEM768));
    }
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(s.alpn_protocol(), Some(ALPN_CLIENT));
    // What the daemon does with the client's certificate.
    let peer = s.peer_certificates().and_then(|c| c.first()).expect("cert");
    assert_eq!(peer_identity(peer).unwrap().role, CertRole::App);
    let peer = c.peer_certificates().and_then(|c| c.first()).expect("cert");
    assert_eq!(peer_identity(peer).unwrap().node_id, Some(9));
}

#[test]
fn cluster_configs_speak_only_the_cluster_protocol() {
    let ca = ca();
    let (a, a_key) = leaf(&ca, Some("node1"), &["urn:hsm:role:node", "urn:hsm:node:1"]);
    let (b, b_key) = leaf(&ca, Some("node2"), &["urn:hsm:role:node", "urn:hsm:node:2"]);
    let files = Files::new(&ca, &[("a", &a, &a_key), ("b", &b, &b_key)]);
    let cluster_server =
        || cluster_server_config(&files.ca(), &files.cert("a"), &files.key("a")).unwrap();
    let cluster_client =
        || cluster_client_config(&files.ca(), &files.cert("b"), &files.key("b")).unwrap();
    let (c, s) = handshake(cluster_client(), cluster_server()).expect("handshake");
    assert_eq!(s.alpn_protocol(), Some(ALPN_CLUSTER));
    assert_eq!(
        c.negotiated_key_exchange_group().map(|g| g.name()),
        Some(NamedGroup::X25519MLKEM768)
    );
    let peer = s.peer_certificates().and_then(|c| c.first()).expect("cert");
    assert_eq!(peer_identity(peer).unwrap().node_id, Some(2));

    // A client-port client at the cluster port, and the other way round: no common protocol.
    let client = client_config(&files.ca(), &files.cert("b"), &files.key("b")).unwrap();
    assert!(matches!(
        handshake(client, cluster_server()),
        Err(rustls::Error::NoApplicationProtocol)
    ));
    let server = server_config(&files.ca(), &files.cert("a"), &files.key("a")).unwrap();
    assert!(matches!(
        handshake(cluster_client(), server),
        Err(rustls::Error::NoApplicationProtocol)
    ));
}
