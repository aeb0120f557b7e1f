//! The node's TLS front door, spoken to directly with `hsm_proto::tls` and `tokio-rustls`:
//! only clients with an admin or application certificate from the cluster CA get answers,
//! admin requests need the admin certificate, and a peer that sends garbage loses its
//! connection without hurting anyone else's.

use hsm_proto::frame;
use hsm_proto::msg::{NodeStatus, Role, SealState, UserType};
use hsm_proto::{Envelope, ErrorCode, Password, Request, RequestId, Response};
use hsm_tests::cluster::{assert_success, tail};
use hsm_tests::{Cluster, TestDir};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long we wait for a node that should answer, or that should hang up.
const WAIT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn app_config(cluster: &Cluster) -> ClientConfig {
    let (cert, key) = cluster.client_cert("app");
    hsm_proto::tls::client_config(&cluster.ca_cert(), &cert, &key).expect("client config")
}

async fn open(addr: &str, config: ClientConfig) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tcp: {e}"))?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    frame::client_handshake(&mut tls, "hsm-tests")
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(tls)
}

async fn status_on(tls: &mut TlsStream<TcpStream>, id: u64) -> Result<NodeStatus, String> {
    frame::write_message(tls, &Envelope::new(RequestId(id), Request::Status))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let reply: Envelope<Response> = frame::read_message(tls)
        .await
        .map_err(|e| format!("read: {e}"))?;
    assert_eq!(reply.id, RequestId(id));
    match reply.body {
        Response::Status(s) => Ok(s),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Connects, handshakes and asks for the status; any failure, or silence, is an `Err`.
async fn try_status(addr: &str, config: ClientConfig) -> Result<NodeStatus, String> {
    let attempt = async {
        let mut tls = open(addr, config).await?;
        status_on(&mut tls, 1).await
    };
    tokio::time::timeout(WAIT, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer".into()))
}

/// A CA of our own and a client certificate it issued, as PEM files.
fn foreign_client(dir: &Path) -> (PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = Issuer::new(ca_params, ca_key);
    let params = CertificateParams::new(Vec::<String>::new()).expect("params");
    issue_client(params, &issuer, dir, "foreign")
}

/// A TLS client certificate (no role) made from `params` by `issuer`, written as
/// `dir/name.pem` and `dir/name.key`.
fn issue_client(
    mut params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, issuer).expect("sign");
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (cert_path, key_path)
}

#[test]
fn only_clients_of_the_cluster_ca_are_served() {
    let cluster = Cluster::start();
    let scratch = TestDir::new("foreign-ca");
    let addr = cluster.addr();
    runtime().block_on(async {
        let status = try_status(&addr, app_config(&cluster))
            .await
            .expect("a client with the cluster's app certificate gets the status");
        assert_eq!(status.node, "node1");
        assert_eq!(status.cluster, "hsm-cluster");

        let anonymous =
            hsm_proto::tls::anonymous_client_config(&cluster.ca_cert()).expect("config");
        let refused = try_status(&addr, anonymous).await;
        assert!(
            refused.is_err(),
            "a client without a certificate was served: {refused:?}"
        );

        let (cert, key) = foreign_client(scratch.path());
        let foreign =
            hsm_proto::tls::client_config(&cluster.ca_cert(), &cert, &key).expect("config");
        let refused = try_status(&addr, foreign).await;
        assert!(
            refused.is_err(),
            "a client with a certificate from another CA was served: {refused:?}"
        );

        // The refusals did not hurt the node.
        try_status(&addr, app_config(&cluster))
            .await
            .expect("still serving");
    });
}

/// Reads until the peer hangs up; `Err` if it keeps the connection open.
async fn hung_up(tls: &mut TlsStream<TcpStream>) -> Result<(), String> {
    let mut sink = Vec::new();
    match tokio::time::timeout(WAIT, tls.read_to_end(&mut sink)).await {
        Ok(_) => Ok(()),
        Err(_) => Err("the node kept the connection open".into()),
    }
}

#[test]
fn garbage_frames_drop_only_that_connection() {
    let cluster = Cluster::start();
    let addr = cluster.addr();
    runtime().block_on(async {
        let mut good = open(&addr, app_config(&cluster)).await.expect("connect");
        status_on(&mut good, 1).await.expect("status");

        // A frame announcing more than the limit.
        let mut oversized = open(&addr, app_config(&cluster)).await.expect("connect");
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 64]);
        oversized.write_all(&bytes).await.expect("write");
        oversized.flush().await.expect("flush");
        hung_up(&mut oversized).await.expect("oversized frame");

        // A well-sized frame that is not a message.
        let mut garbage = open(&addr, app_config(&cluster)).await.expect("connect");
        let mut bytes = 16u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff; 16]);
        garbage.write_all(&bytes).await.expect("write");
        garbage.flush().await.expect("flush");
        hung_up(&mut garbage).await.expect("garbage frame");

        // Garbage instead of the protocol handshake.
        let tcp = TcpStream::connect(&addr).await.expect("tcp");
        let mut early = TlsConnector::from(Arc::new(app_config(&cluster)))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .expect("tls");
        early
            .write_all(&[0, 0, 0, 3, 1, 2, 3])
            .await
            .expect("write");
        early.flush().await.expect("flush");
        hung_up(&mut early).await.expect("garbage hello");

        // The well-behaved connection, and new ones, are still served.
        let status = status_on(&mut good, 2).await.expect("status after garbage");
        assert_eq!(status.node, "node1");
        try_status(&addr, app_config(&cluster))
            .await
            .expect("new connection");
    });
}

/// Sends one request and reads its answer.
async fn request_on(
    tls: &mut TlsStream<TcpStream>,
    id: u64,
    request: Request,
) -> Result<Response, String> {
    frame::write_message(tls, &Envelope::new(RequestId(id), request))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let reply: Envelope<Response> = frame::read_message(tls)
        .await
        .map_err(|e| format!("read: {e}"))?;
    assert_eq!(reply.id, RequestId(id));
    Ok(reply.body)
}

/// Waits until the daemon's log has a line with `needle`.
fn wait_for_daemon_log(cluster: &Cluster, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(cluster.daemon_log_path())
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(needle))
    {
        assert!(
            Instant::now() < deadline,
            "the daemon log has no line with {needle:?}:\n{}",
            tail(&cluster.daemon_log_path(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client certificate the cluster CA signed without any role, as an older hsmctl made them.
fn roleless_client(cluster: &Cluster, dir: &Path) -> (PathBuf, PathBuf) {
    let ca_pem = std::fs::read_to_string(cluster.dir.join("ca.key")).expect("read ca.key");
    let ca_key = KeyPair::from_pem(&ca_pem).expect("CA key");
    let mut ca_params = CertificateParams::default();
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(DnType::CommonName, "hsm-cluster cluster CA");
    ca_params.distinguished_name = ca_dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "old-client");
    params.distinguished_name = dn;
    issue_client(params, &issuer, dir, "roleless")
}

#[test]
fn the_client_port_serves_only_admin_and_application_certificates() {
    let cluster = Cluster::start();
    let scratch = TestDir::new("client-port-roles");
    let addr = cluster.addr();
    runtime().block_on(async {
        // The node's own certificate is from the cluster CA, but it is a node's.
        let (cert, key) = cluster.node_cert();
        let node = hsm_proto::tls::client_config(&cluster.ca_cert(), &cert, &key).expect("config");
        let refused = try_status(&addr, node).await;
        assert!(
            refused.is_err(),
            "a node certificate was served on the client port: {refused:?}"
        );
        wait_for_daemon_log(&cluster, "refused CN=node1 with role node");

        // A certificate of the cluster CA that carries no role.
        let (cert, key) = roleless_client(&cluster, scratch.path());
        let roleless =
            hsm_proto::tls::client_config(&cluster.ca_cert(), &cert, &key).expect("config");
        let refused = try_status(&addr, roleless).await;
        assert!(
            refused.is_err(),
            "a certificate without a role was served: {refused:?}"
        );
        wait_for_daemon_log(
            &cluster,
            "certificate of CN=old-client carries no hsm role; reissue it with this version of \
             hsmctl",
        );

        // Admin and application certificates are served; the refusals hurt nobody.
        let (cert, key) = cluster.client_cert("admin");
        let admin = hsm_proto::tls::client_config(&cluster.ca_cert(), &cert, &key).expect("config");
        try_status(&addr, admin).await.expect("admin certificate");
        try_status(&addr, app_config(&cluster))
            .await
            .expect("application certificate");
    });
}

#[test]
fn admin_requests_need_the_admin_certificate() {
    let mut cluster = Cluster::start();
    let addr = cluster.addr();
    let (admin, admin_password) = cluster.so_pin.split_once(':').expect("name:password");
    let (admin, admin_password) = (admin.to_owned(), admin_password.to_owned());
    let refused_for_the_certificate = |r: Response| match r {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::UserNotLoggedIn, "{e}");
            assert!(
                e.message.contains(
                    "admin requests need an admin certificate (admin.toml), not an application \
                     certificate"
                ),
                "{e}"
            );
        }
        other => panic!("an admin request through an application certificate: {other:?}"),
    };
    runtime().block_on(async {
        // With the application certificate, the admin's login succeeds but admin requests fail.
        let mut tls = open(&addr, app_config(&cluster)).await.expect("connect");
        let login = Request::Login {
            user_type: UserType::SecurityOfficer,
            username: admin.clone(),
            password: Password::new(admin_password.clone()),
        };
        match request_on(&mut tls, 1, login).await.expect("login") {
            Response::LoggedIn { role, .. } => assert_eq!(role, Role::Admin),
            other => panic!("admin login: {other:?}"),
        }
        let create = Request::CreateUser {
            username: "mallory".into(),
            password: Password::new("mallory-password-1".into()),
            role: Role::CryptoUser,
        };
        refused_for_the_certificate(request_on(&mut tls, 2, create).await.expect("create"));
        let init_pin = Request::InitPin {
            username: "mallory".into(),
            password: Password::new("mallory-password-1".into()),
        };
        refused_for_the_certificate(request_on(&mut tls, 3, init_pin).await.expect("init pin"));
        // Status stays allowed for every role.
        status_on(&mut tls, 4).await.expect("status");
    });

    // hsmctl with the application configuration: refused even with the admin password.
    let app_toml = cluster.module_config().to_string_lossy().into_owned();
    let out = cluster.hsmctl(
        &["user", "create", "mallory", "--config", &app_toml],
        &[
            ("HSM_SO_PIN", cluster.so_pin.as_str()),
            ("HSM_NEW_USER_PASSWORD", "mallory-password-2"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "hsmctl created a user through the application certificate"
    );
    assert!(
        stderr.contains("admin certificate (admin.toml)"),
        "{stderr}"
    );
    // Nothing was created: the admin configuration creates mallory now.
    cluster.create_user("mallory", "mallory-password-3");

    // Unseal, too, needs the admin certificate.
    cluster.restart_sealed();
    let key = cluster.dir.join("dev.key").to_string_lossy().into_owned();
    let out = cluster.hsmctl(
        &["unseal", "--config", &app_toml, "--dev-key-file", &key],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "hsmctl unsealed through the application certificate"
    );
    assert!(
        stderr.contains("admin certificate (admin.toml)"),
        "{stderr}"
    );
    let out = cluster.hsmctl(&["status", "--config", &app_toml], &[]);
    assert_success("hsmctl status with the application certificate", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SEALED"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    cluster.unseal();
    let status = runtime()
        .block_on(try_status(&addr, app_config(&cluster)))
        .expect("status");
    assert_eq!(status.seal, SealState::Unsealed);
}
