//! What travels between nodes, and who may speak on the cluster port, on one three-node
//! cluster of real daemons:
//!
//! 1. the cluster port refuses client certificates: with `D/clients/app.*` or `admin.*` (of
//!    the cluster CA, but not node certificates) the connection is closed without an answer
//!    and the node logs "cluster port: refused"; with a certificate of another CA the TLS
//!    handshake is refused; a node certificate is kept connected (the control);
//! 2. invariants 1 and 2 across replication: with `HSM_CLUSTER_RPC_DUMP` set for every
//!    daemon (each appends every node-to-node frame it sends, below TLS), extractable AES and
//!    EC keys of known values are imported (`C_CreateObject`) and others generated (their
//!    values read back through `C_GetAttributeValue`); with `snapshot_every = 20,
//!    keep_logs = 5`, a follower that was down catches up through a snapshot and a wiped node
//!    re-joins. The keys work on the follower (AES-GCM checked against the `aes-gcm` crate).
//!    Then no 8-byte window of any key value, nor of its hex, is in the dump, in any file of
//!    any node's data directory (store, snapshots), or anywhere else in the test directory.

mod cluster_util;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use cluster_util::{
    Module, SETTLE, files_under, log_has, log_tail, own_process, raft, set_raft, settle, step,
    wait_applied, wait_for,
};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use hsm_tests::MultiCluster;
use hsm_tests::keys::{P256_PARAMS, attr_bytes, by_label, find, sha256};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::ServerName;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const DUMP_ENV: &str = "HSM_CLUSTER_RPC_DUMP";

/// What one connection attempt to a cluster port came to.
#[derive(Debug)]
enum Outcome {
    /// The TLS handshake failed on our side.
    HandshakeFailed(String),
    /// Connected; the node closed the connection (or failed it) after `bytes` bytes.
    Closed { bytes: usize, how: String },
    /// Connected, and the node kept the connection open for the whole wait.
    KeptOpen,
}

/// Connects to `addr` (a cluster port, `server` its node name) with a client certificate,
/// sends one frame, and reads until the node closes or `wait` passes. Returns our local
/// address (the node logs it) and the outcome.
fn try_cluster_port(
    addr: &str,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    wait: Duration,
) -> (String, Outcome) {
    let config = hsm_proto::tls::cluster_client_config(ca, cert, key).expect("client config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let local = tcp.local_addr().expect("local addr").to_string();
        let name = ServerName::try_from(server.to_owned()).expect("server name");
        let mut tls = match TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
        {
            Ok(tls) => tls,
            Err(e) => return (local, Outcome::HandshakeFailed(e.to_string())),
        };
        // A well-formed frame (its content does not matter: a refused peer is not read).
        let mut frame = 8u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        if let Err(e) = async {
            tls.write_all(&frame).await?;
            tls.flush().await
        }
        .await
        {
            return (
                local,
                Outcome::Closed {
                    bytes: 0,
                    how: format!("write: {e}"),
                },
            );
        }
        let mut got = Vec::new();
        match tokio::time::timeout(wait, tls.read_to_end(&mut got)).await {
            Err(_) => (local, Outcome::KeptOpen),
            Ok(Ok(_)) => (
                local,
                Outcome::Closed {
                    bytes: got.len(),
                    how: "EOF".into(),
                },
            ),
            Ok(Err(e)) => (
                local,
                Outcome::Closed {
                    bytes: got.len(),
                    how: e.to_string(),
                },
            ),
        }
    })
}

/// Asserts the node answered nothing: the handshake failed, or the connection was closed
/// before any byte came back.
fn refused(outcome: &Outcome, what: &str) {
    match outcome {
        Outcome::HandshakeFailed(why) => eprintln!("{what}: handshake failed: {why}"),
        Outcome::Closed { bytes: 0, how } => eprintln!("{what}: closed unanswered ({how})"),
        other => panic!("{what}: not refused: {other:?}"),
    }
}

/// A CA of our own and a client certificate it issued, as PEM files in `dir`.
fn foreign_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["node9".to_owned()]).expect("params");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let (cert_path, key_path) = (dir.join("foreign.pem"), dir.join("foreign.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (cert_path, key_path)
}

fn cluster_port_refuses_clients(cluster: &MultiCluster, root: &Path) {
    let what = step("the cluster port serves node certificates only");
    let target = 0;
    let node = cluster.node(target);
    let addr = format!("127.0.0.1:{}", node.cluster_port);
    let ca = cluster.dir.join("ca.pem");
    let wait = Duration::from_secs(30);
    for client in ["app", "admin"] {
        let clients = cluster.dir.join("clients");
        let (cert, key) = (
            clients.join(format!("{client}.pem")),
            clients.join(format!("{client}.key")),
        );
        let (local, outcome) = try_cluster_port(&addr, &node.name, &ca, &cert, &key, wait);
        refused(
            &outcome,
            &format!(
                "{what}: the {client} certificate on {}'s cluster port",
                node.name
            ),
        );
        let needle = format!("cluster port: refused {local}");
        wait_for(
            &format!("{what}: {} logs {needle:?}", node.name),
            SETTLE,
            || (log_has(cluster, target, &needle), log_tail(cluster, target)),
        );
    }

    let (cert, key) = foreign_certificate(root);
    let (local, outcome) = try_cluster_port(&addr, &node.name, &ca, &cert, &key, wait);
    refused(
        &outcome,
        &format!("{what}: a certificate of another CA on the cluster port"),
    );
    let needle = format!("cluster port: TLS handshake with {local} refused");
    wait_for(
        &format!("{what}: {} logs {needle:?}", node.name),
        SETTLE,
        || (log_has(cluster, target, &needle), log_tail(cluster, target)),
    );

    // The control: another node's certificate is accepted, and the node waits for its call.
    let peer = cluster.dir.join(&cluster.node(1).name);
    let (local, outcome) = try_cluster_port(
        &addr,
        &node.name,
        &ca,
        &peer.join("node.pem"),
        &peer.join("node.key"),
        Duration::from_secs(1),
    );
    // The frame we sent is not a call: the node may drop the connection for that, but it
    // must not refuse the certificate.
    assert!(
        !matches!(outcome, Outcome::HandshakeFailed(_)),
        "{what}: a node certificate was refused at the handshake: {outcome:?}"
    );
    assert!(
        !log_has(cluster, target, &format!("refused {local}"))
            && !log_has(
                cluster,
                target,
                &format!("TLS handshake with {local} refused")
            ),
        "{what}: a node certificate was refused: {}",
        log_tail(cluster, target)
    );
}

/// A key value we must never find outside the nodes' memory.
struct Known {
    what: String,
    value: Vec<u8>,
}

fn gcm_params(iv: &mut [u8; 12]) -> Mechanism<'_> {
    Mechanism::AesGcm(GcmParams::new(iv, b"secrecy", 128.into()).expect("GCM params"))
}

fn secret_attrs(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Extractable(true),
        Attribute::Sensitive(false),
    ]
}

fn make_keys(module: &Module) -> Vec<Known> {
    let s = module.session();
    let mut known = Vec::new();
    for (label, len) in [("known-aes-256", 32), ("known-aes-128", 16)] {
        let value = sha256(label.as_bytes())[..len].to_vec();
        let mut t = secret_attrs(label);
        t.extend([
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(value.clone()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ]);
        s.create_object(&t)
            .unwrap_or_else(|e| panic!("C_CreateObject({label}): {e}"));
        known.push(Known {
            what: label.into(),
            value,
        });
    }
    let scalar = sha256(b"known-ec-p256");
    let mut t = secret_attrs("known-ec-p256");
    t.extend([
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Value(scalar.clone()),
        Attribute::Sign(true),
    ]);
    s.create_object(&t)
        .unwrap_or_else(|e| panic!("C_CreateObject(known-ec-p256): {e}"));
    known.push(Known {
        what: "known-ec-p256".into(),
        value: scalar,
    });

    for n in 0..3 {
        let label = format!("generated-aes-{n}");
        let mut t = secret_attrs(&label);
        t.extend([Attribute::ValueLen(32.into()), Attribute::Encrypt(true)]);
        let h = s
            .generate_key(&Mechanism::AesKeyGen, &t)
            .expect("C_GenerateKey");
        known.push(Known {
            what: label,
            value: attr_bytes(&s, h, AttributeType::Value),
        });

        let label = format!("generated-ec-{n}");
        let public = [
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Verify(true),
        ];
        let mut private = secret_attrs(&label);
        private.push(Attribute::Sign(true));
        let (_, h) = s
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .expect("C_GenerateKeyPair");
        known.push(Known {
            what: label,
            value: attr_bytes(&s, h, AttributeType::Value),
        });
    }
    for k in &known {
        assert!(
            k.value.len() >= 16 && k.value.iter().any(|b| *b != 0),
            "{}: a real value",
            k.what
        );
    }
    known
}

/// Every file that holds 8 consecutive bytes of a known key, or 8 bytes of one in hex
/// (either case), with the key's name.
fn leaks(files: &[PathBuf], known: &[Known]) -> Vec<String> {
    let mut raw: HashMap<[u8; 8], &str> = HashMap::new();
    let mut hex: HashMap<[u8; 16], &str> = HashMap::new();
    for k in known {
        for w in k.value.windows(8) {
            raw.insert(w.try_into().expect("8 bytes"), &k.what);
        }
        for w in hex::encode(&k.value).as_bytes().windows(16).step_by(2) {
            hex.insert(w.try_into().expect("16 bytes"), &k.what);
        }
    }
    let mut found = BTreeSet::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        for w in bytes.windows(8) {
            if let Some(what) = raw.get(<&[u8; 8]>::try_from(w).expect("8 bytes")) {
                found.insert(format!("{}: 8 bytes of {what}", file.display()));
            }
        }
        let lower = bytes.to_ascii_lowercase();
        for w in lower.windows(16) {
            if let Some(what) = hex.get(<&[u8; 16]>::try_from(w).expect("16 bytes")) {
                found.insert(format!("{}: {what} in hex", file.display()));
            }
        }
    }
    found.into_iter().collect()
}

fn nothing_in_clear(cluster: &mut MultiCluster, module: &mut Module, root: &Path) {
    let what = step("no key value on the wire between nodes, in stores or in snapshots");
    let dump = PathBuf::from(std::env::var_os(DUMP_ENV).expect("HSM_CLUSTER_RPC_DUMP"));
    for i in 0..cluster.len() {
        set_raft(cluster, i, &[("snapshot_every", 20), ("keep_logs", 5)]);
    }
    for i in 0..cluster.len() {
        cluster.restart(i);
        settle(cluster);
    }
    let (leader, _) = settle(cluster);
    let (f, w) = ((leader + 1) % 3, (leader + 2) % 3);
    let behind = raft(cluster, f)
        .and_then(|r| r.last_log)
        .expect("follower's last log");
    cluster.kill(f);

    module.use_nodes(cluster, &[leader]);
    let known = make_keys(module);
    let s = module.session();
    for n in 0..30 {
        let label = format!("filler-{n:02}");
        let mut t = secret_attrs(&label);
        t.extend([Attribute::ValueLen(32.into()), Attribute::Encrypt(true)]);
        s.generate_key(&Mechanism::AesKeyGen, &t)
            .expect("C_GenerateKey");
    }
    drop(s);
    wait_for(
        &format!("{what}: the leader purges its log past {behind}"),
        SETTLE,
        || {
            let r = raft(cluster, leader);
            (
                r.as_ref()
                    .and_then(|r| r.purged)
                    .is_some_and(|p| p > behind),
                r,
            )
        },
    );
    let last = raft(cluster, leader)
        .and_then(|r| r.last_log)
        .expect("last log");
    cluster.restart(f);
    wait_applied(cluster, f, last);
    cluster.wipe_and_rejoin(w);
    settle(cluster);

    // The keys arrived whole: AES-GCM through the follower matches an independent
    // computation with the known value.
    module.use_nodes(cluster, &[f]);
    let s = module.session();
    let aes = find(
        &s,
        &by_label("known-aes-256", Some(ObjectClass::SECRET_KEY)),
    );
    assert_eq!(
        aes.len(),
        1,
        "{what}: known-aes-256 on {}",
        cluster.node(f).name
    );
    let mut iv = [9u8; 12];
    let ct = s
        .encrypt(&gcm_params(&mut iv), aes[0], b"caught up")
        .expect("C_Encrypt");
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&known[0].value).expect("key");
    let expected = cipher
        .encrypt(
            &[9u8; 12].into(),
            Payload {
                msg: b"caught up",
                aad: b"secrecy",
            },
        )
        .expect("encrypt");
    assert_eq!(
        ct, expected,
        "{what}: the follower's copy of known-aes-256 differs"
    );
    drop(s);
    module.finalize();

    // Stopped, so everything each node would write is on disk.
    for i in 0..cluster.len() {
        cluster.stop(i);
    }
    let dump_bytes = std::fs::read(&dump).unwrap_or_default();
    assert!(
        dump_bytes
            .windows(b"known-aes-256".len())
            .any(|w| w == b"known-aes-256"),
        "{what}: the RPC dump ({} bytes at {}) does not hold the replicated objects: is {DUMP_ENV} \
         honoured?",
        dump_bytes.len(),
        dump.display()
    );
    let data: Vec<PathBuf> = (0..cluster.len())
        .flat_map(|i| files_under(&cluster.data_dir(i)))
        .collect();
    assert!(
        data.iter()
            .any(|p| p.components().any(|c| c.as_os_str() == "snapshots")),
        "{what}: no snapshot file under the nodes' data directories: {data:?}"
    );
    // The search itself finds what it looks for: 8 raw bytes from inside one value, and 8
    // bytes of another in upper-case hex.
    let canaries = [root.join("canary.bin"), root.join("canary.txt")];
    let mut planted = b"junk".to_vec();
    planted.extend_from_slice(&known[1].value[3..11]);
    std::fs::write(&canaries[0], &planted).expect("write canary");
    let hex = hex::encode_upper(&known[4].value[5..13]);
    std::fs::write(&canaries[1], format!("x={hex};")).expect("write canary");
    let caught = leaks(&canaries, &known);
    assert_eq!(
        caught.len(),
        2,
        "{what}: the search misses planted bytes: {caught:?}"
    );
    for c in &canaries {
        std::fs::remove_file(c).expect("remove canary");
    }
    let everything = files_under(root);
    eprintln!(
        "{what}: searching {} files ({} under data directories), dump {} bytes",
        everything.len(),
        data.len(),
        dump_bytes.len()
    );
    let found = leaks(&everything, &known);
    assert!(
        found.is_empty(),
        "{what}: key material in clear: {found:#?}"
    );
}

#[test]
fn nothing_secret_between_nodes() {
    let name = "nothing_secret_between_nodes";
    own_process(
        name,
        |root| vec![(DUMP_ENV, root.join("rpc.dump").into_os_string())],
        |root| {
            let started = Instant::now();
            let mut cluster = MultiCluster::start(3);
            eprintln!("3-node cluster up in {:?}", started.elapsed());
            cluster_port_refuses_clients(&cluster, root);
            let mut module = Module::load(&cluster);
            nothing_in_clear(&mut cluster, &mut module, root);
            eprintln!("{name}: {:?}", started.elapsed());
        },
    );
}
