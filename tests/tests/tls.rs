//! The node's TLS front door, spoken to directly with `hsm_proto::tls` and `tokio-rustls`:
//! only clients with a certificate from the cluster CA get answers, and a peer that sends
//! garbage loses its connection without hurting anyone else's.

use hsm_proto::frame;
use hsm_proto::msg::NodeStatus;
use hsm_proto::{Envelope, Request, RequestId, Response};
use hsm_tests::{Cluster, TestDir};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
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
    frame::write_message(
        tls,
        &Envelope {
            id: RequestId(id),
            body: Request::Status,
        },
    )
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
fn foreign_client(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let cert_path = dir.join("foreign.pem");
    let key_path = dir.join("foreign.key");
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
        assert_eq!(status.cluster, "test-cluster");

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
