//! OpenSSL 3 with pkcs11-provider (and, for applications still on engines, the libp11 engine)
//! using keys held by a live cluster through `pkcs11:` URIs: public-key export, sign/verify,
//! decrypt, derive, a self-signed certificate, and TLS servers whose private key never leaves
//! the HSM. What the HSM produces is checked by plain software OpenSSL (no provider loaded).
//!
//! One cluster for the file; keys are made once with `pkcs11-tool` and shared. A flow that
//! needs a mechanism the module does not advertise yet (issue 3) skips loudly and runs by
//! itself once `C_GetMechanismList` lists it.

use hsm_tests::build::workspace_root;
use hsm_tests::cluster::free_port;
use hsm_tests::interop::{
    Client, Fixture, Mech, PairNeeds, PairSpec, Run, TestGuard, loud, read_output,
};
use hsm_tests::keys::sha256;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The token label in `pkcs11:` URIs.
const TOKEN_LABEL: &str = "hsm-cluster";
/// What the signature tests sign.
const MESSAGE: &[u8] = b"OpenSSL interop: signed by a key that never leaves the HSM cluster";

const RSA: PairSpec = PairSpec {
    key_type: "rsa:2048",
    label: "ossl-rsa",
    id: "d1",
    needs: PairNeeds::Baseline,
};
const EC: PairSpec = PairSpec {
    key_type: "EC:prime256v1",
    label: "ossl-ec",
    id: "d2",
    needs: PairNeeds::Baseline,
};
const ED25519: PairSpec = PairSpec {
    key_type: "EC:edwards25519",
    label: "ossl-ed25519",
    id: "d4",
    needs: PairNeeds::Edwards,
};

/// `pkcs11:` URI of one half of a pair.
fn uri(spec: PairSpec, kind: &str) -> String {
    format!(
        "pkcs11:token={TOKEN_LABEL};object={};type={kind}",
        spec.label
    )
}

/// The OpenSSL configurations of this binary.
#[derive(Debug)]
struct Configs {
    /// Loads pkcs11-provider with our module.
    provider: PathBuf,
    /// Loads the libp11 engine with our module (`None` when the engine is not installed).
    engine: Option<PathBuf>,
    /// Loads nothing: plain software OpenSSL, the independent checker.
    plain: PathBuf,
}

/// A directory OpenSSL reports with `openssl version -m` / `-e`.
fn openssl_dir(flag: &str, key: &str) -> Option<PathBuf> {
    let out = std::process::Command::new("openssl")
        .args(["version", flag])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.trim().strip_prefix(key))?;
    Some(PathBuf::from(
        line.trim().trim_start_matches(':').trim().trim_matches('"'),
    ))
}

/// Fills a template of `tests/interop/openssl/`.
fn fill(template: &str, values: &[(&str, &Path)]) -> String {
    let path = workspace_root()
        .join("tests/interop/openssl")
        .join(template);
    let mut text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for (key, value) in values {
        let placeholder = format!("@{key}@");
        assert!(
            text.contains(&placeholder),
            "{template} has no {placeholder}"
        );
        text = text.replace(&placeholder, &value.to_string_lossy());
    }
    text
}

/// The configurations, written once; `None` (after a loud skip) without pkcs11-provider.
fn configs(fx: &Fixture, test: &str) -> Option<&'static Configs> {
    static CONFIGS: OnceLock<Option<Configs>> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        let provider = openssl_dir("-m", "MODULESDIR")
            .map(|d| d.join("pkcs11.so"))
            .filter(|p| p.is_file())?;
        let pin_file = fx.path("openssl-pin.txt");
        fs::write(&pin_file, format!("{}\n", fx.pin())).expect("write PIN file");
        let provider_conf = fx.path("openssl-provider.cnf");
        fs::write(
            &provider_conf,
            fill(
                "provider.cnf.in",
                &[
                    ("PROVIDER", &provider),
                    ("MODULE", &fx.module),
                    ("PIN_FILE", &pin_file),
                ],
            ),
        )
        .expect("write provider configuration");
        let engine = openssl_dir("-e", "ENGINESDIR")
            .map(|d| d.join("pkcs11.so"))
            .filter(|p| p.is_file())
            .map(|engine| {
                let conf = fx.path("openssl-engine.cnf");
                let pin = PathBuf::from(fx.pin());
                fs::write(
                    &conf,
                    fill(
                        "engine.cnf.in",
                        &[("ENGINE", &engine), ("MODULE", &fx.module), ("PIN", &pin)],
                    ),
                )
                .expect("write engine configuration");
                conf
            });
        let plain = fx.path("openssl-plain.cnf");
        fs::write(&plain, "# software OpenSSL only\n").expect("write plain configuration");
        Some(Configs {
            provider: provider_conf,
            engine,
            plain,
        })
    });
    if configs.is_none() {
        loud(&format!(
            "SKIPPED {test}: pkcs11-provider is not installed (Debian package pkcs11-provider, \
             bookworm-backports on Debian 12; scripts/test.sh installs it)"
        ));
    }
    configs.as_ref()
}

/// The fixture and the configurations, or `None` after a loud skip.
fn setup(test: &str) -> Option<(TestGuard, &'static Configs)> {
    let fx = Fixture::for_test(test, &["openssl"])?;
    let configs = configs(&fx, test)?;
    Some((fx, configs))
}

/// `openssl` with pkcs11-provider loaded.
fn ossl(fx: &Fixture, c: &Configs, label: &str) -> Client {
    fx.client(label, "openssl").env("OPENSSL_CONF", &c.provider)
}

/// Plain software `openssl`, the independent checker.
fn plain(fx: &Fixture, c: &Configs, label: &str) -> Client {
    fx.client(label, "openssl").env("OPENSSL_CONF", &c.plain)
}

fn scratch(fx: &Fixture, name: &str, data: &[u8]) -> PathBuf {
    let path = fx.path(name);
    fs::write(&path, data).expect("write scratch file");
    path
}

fn tampered(path: &Path) -> PathBuf {
    let mut bytes = fs::read(path).expect("read");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    let out = path.with_extension("tampered");
    fs::write(&out, bytes).expect("write");
    out
}

/// The pair, generated (asserting success) for a test.
fn pair(fx: &Fixture, spec: PairSpec) -> PathBuf {
    fx.keypair(spec).ok();
    fx.public_key_der(spec)
}

// ---- provider, store, public keys ----

#[test]
fn openssl_provider_loads_module() {
    let Some((fx, c)) = setup("openssl_provider_loads_module") else {
        return;
    };
    ossl(&fx, c, "openssl list -providers")
        .args(["list", "-providers"])
        .run()
        .ok()
        .contains("pkcs11")
        .contains("status: active");
    pair(&fx, EC);
    pair(&fx, RSA);
    ossl(&fx, c, "openssl storeutl -keys")
        .args(["storeutl", "-keys", "-text"])
        .arg(format!("pkcs11:token={TOKEN_LABEL}"))
        .run()
        .ok()
        .contains(&format!("object={};type=private", EC.label))
        .contains(&format!("object={};type=private", RSA.label))
        .contains("PKCS11 EC Private Key (256 bits)")
        .contains("PKCS11 RSA Private Key (2048 bits)");
}

/// `openssl pkey -pubin -in pkcs11:…;type=public -pubout` gives the public key `pkcs11-tool`
/// exports, byte for byte.
fn pkey_pubout(test: &str, spec: PairSpec) {
    let Some((fx, c)) = setup(test) else {
        return;
    };
    if !fx.pair_supported(test, spec) {
        return;
    }
    let expected = fs::read(pair(&fx, spec)).expect("public key");
    let out = fx.path(&format!("{}.openssl.pub.der", spec.label));
    let run = ossl(&fx, c, "openssl pkey -pubin -pubout (type=public)")
        .args(["pkey", "-pubin", "-in", &uri(spec, "public")])
        .args(["-pubout", "-outform", "DER", "-out"])
        .arg(&out)
        .run()
        .ok();
    assert_eq!(read_output(&out, &run), expected, "public key\n{run}");
    // The PEM form, as users print it.
    ossl(&fx, c, "openssl pkey -pubin -pubout (PEM)")
        .args(["pkey", "-pubin", "-in", &uri(spec, "public"), "-pubout"])
        .run()
        .ok()
        .contains("-----BEGIN PUBLIC KEY-----");
}

#[test]
fn openssl_pkey_pubout_rsa() {
    pkey_pubout("openssl_pkey_pubout_rsa", RSA);
}

#[test]
fn openssl_pkey_pubout_ec() {
    pkey_pubout("openssl_pkey_pubout_ec", EC);
    // From the private key's URI too (OpenSSL derives the public half from the token).
    let Some((fx, c)) = setup("openssl_pkey_pubout_ec") else {
        return;
    };
    let expected = fs::read(pair(&fx, EC)).expect("public key");
    let out = fx.path("ossl-ec.private-uri.pub.der");
    let run = ossl(&fx, c, "openssl pkey -pubout (type=private)")
        .args([
            "pkey",
            "-in",
            &uri(EC, "private"),
            "-pubout",
            "-outform",
            "DER",
        ])
        .arg("-out")
        .arg(&out)
        .run()
        .ok();
    assert_eq!(read_output(&out, &run), expected, "public key\n{run}");
}

#[test]
fn openssl_pkey_pubout_ed25519() {
    pkey_pubout("openssl_pkey_pubout_ed25519", ED25519);
}

// ---- sign / verify ----

/// `openssl pkeyutl -sign` with the private key's URI, verified by software OpenSSL with the
/// exported public key and by the provider with the public key's URI; a tampered signature
/// is refused.
fn pkeyutl_sign_verify(
    fx: &Fixture,
    c: &Configs,
    spec: PairSpec,
    name: &str,
    input: &Path,
    opts: &[&str],
) {
    let pubkey = pair(fx, spec);
    let sig = fx.path(&format!("{}.{name}.sig", spec.label));
    ossl(fx, c, &format!("openssl pkeyutl -sign ({name})"))
        .args(["pkeyutl", "-sign", "-inkey", &uri(spec, "private")])
        .args(opts)
        .arg("-in")
        .arg(input)
        .arg("-out")
        .arg(&sig)
        .run()
        .ok();
    let verify = |client: Client, key: &[&str], sig: &Path| {
        client
            .args(["pkeyutl", "-verify", "-pubin"])
            .args(key)
            .args(opts)
            .arg("-in")
            .arg(input)
            .arg("-sigfile")
            .arg(sig)
            .run()
    };
    let pub_s = pubkey.to_string_lossy().into_owned();
    let software = ["-keyform", "DER", "-inkey", pub_s.as_str()];
    verify(
        plain(fx, c, &format!("software openssl verifies ({name})")),
        &software,
        &sig,
    )
    .ok()
    .contains("Signature Verified Successfully");
    let public_uri = uri(spec, "public");
    verify(
        ossl(
            fx,
            c,
            &format!("provider verifies with the public URI ({name})"),
        ),
        &["-inkey", &public_uri],
        &sig,
    )
    .ok()
    .contains("Signature Verified Successfully");
    verify(
        plain(fx, c, &format!("software openssl, tampered ({name})")),
        &software,
        &tampered(&sig),
    )
    .failed()
    .contains("Signature Verification Failure");
}

/// `openssl dgst -sha256 -sign pkcs11:…` (hashing in OpenSSL, signing in the HSM), verified
/// in software.
fn dgst_sign_verify(fx: &Fixture, c: &Configs, spec: PairSpec, opts: &[&str]) {
    let pubkey = pair(fx, spec);
    let msg = scratch(fx, &format!("{}.dgst.msg", spec.label), MESSAGE);
    let sig = fx.path(&format!("{}.dgst.sig", spec.label));
    ossl(fx, c, "openssl dgst -sha256 -sign")
        .args(["dgst", "-sha256", "-sign", &uri(spec, "private")])
        .args(opts)
        .arg("-out")
        .arg(&sig)
        .arg(&msg)
        .run()
        .ok();
    plain(fx, c, "software openssl dgst -verify")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pubkey)
        .args(["-keyform", "DER"])
        .args(opts)
        .arg("-signature")
        .arg(&sig)
        .arg(&msg)
        .run()
        .ok()
        .contains("Verified OK");
}

#[test]
fn openssl_pkeyutl_sign_verify_rsa() {
    let test = "openssl_pkeyutl_sign_verify_rsa";
    let Some((fx, c)) = setup(test) else {
        return;
    };
    // PKCS#1 v1.5: the provider builds the DigestInfo and signs it with CKM_RSA_PKCS.
    let digest = scratch(&fx, "ossl-rsa.sha256", &sha256(MESSAGE));
    pkeyutl_sign_verify(
        &fx,
        c,
        RSA,
        "pkcs1",
        &digest,
        &["-pkeyopt", "digest:sha256"],
    );
    dgst_sign_verify(&fx, c, RSA, &[]);
    // PSS on the digest (CKM_RSA_PKCS_PSS), what TLS 1.3 uses.
    if fx.require(
        &format!("{test} (PSS)"),
        &[(Mech::RSA_PKCS_PSS, "sign"), (Mech::RSA_PKCS_PSS, "verify")],
    ) {
        let pss = [
            "-pkeyopt",
            "rsa_padding_mode:pss",
            "-pkeyopt",
            "digest:sha256",
            "-pkeyopt",
            "rsa_pss_saltlen:32",
        ];
        pkeyutl_sign_verify(&fx, c, RSA, "pss", &digest, &pss);
        dgst_sign_verify(
            &fx,
            c,
            RSA,
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
        );
    }
}

#[test]
fn openssl_pkeyutl_sign_verify_ec() {
    let Some((fx, c)) = setup("openssl_pkeyutl_sign_verify_ec") else {
        return;
    };
    // CKM_ECDSA on the digest OpenSSL computed.
    let digest = scratch(&fx, "ossl-ec.sha256", &sha256(MESSAGE));
    pkeyutl_sign_verify(&fx, c, EC, "ecdsa", &digest, &[]);
    dgst_sign_verify(&fx, c, EC, &[]);
}

#[test]
fn openssl_pkeyutl_sign_verify_ed25519() {
    let test = "openssl_pkeyutl_sign_verify_ed25519";
    let Some((fx, c)) = setup(test) else {
        return;
    };
    if !fx.pair_supported(test, ED25519) || !fx.require(test, &[(Mech::EDDSA, "sign")]) {
        return;
    }
    let msg = scratch(&fx, "ossl-ed25519.msg", MESSAGE);
    pkeyutl_sign_verify(&fx, c, ED25519, "eddsa", &msg, &["-rawin"]);
}

// ---- decrypt, derive ----

/// Software OpenSSL encrypts to the HSM key's public half; `openssl pkeyutl -decrypt` with the
/// private key's URI recovers the plaintext.
fn pkeyutl_decrypt(fx: &Fixture, c: &Configs, name: &str, opts: &[&str]) {
    let pubkey = pair(fx, RSA);
    let secret: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(11)).collect();
    let plain_path = scratch(fx, &format!("ossl-rsa.{name}.plain"), &secret);
    let ct = fx.path(&format!("ossl-rsa.{name}.ct"));
    plain(
        fx,
        c,
        &format!("software openssl pkeyutl -encrypt ({name})"),
    )
    .args(["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey"])
    .arg(&pubkey)
    .args(opts)
    .arg("-in")
    .arg(&plain_path)
    .arg("-out")
    .arg(&ct)
    .run()
    .ok();
    let back = fx.path(&format!("ossl-rsa.{name}.back"));
    let run = ossl(fx, c, &format!("openssl pkeyutl -decrypt ({name})"))
        .args(["pkeyutl", "-decrypt", "-inkey", &uri(RSA, "private")])
        .args(opts)
        .arg("-in")
        .arg(&ct)
        .arg("-out")
        .arg(&back)
        .run()
        .ok();
    assert_eq!(read_output(&back, &run), secret, "{name} decryption\n{run}");
}

#[test]
fn openssl_pkeyutl_decrypt_rsa_oaep_sha256() {
    let test = "openssl_pkeyutl_decrypt_rsa_oaep_sha256";
    let Some((fx, c)) = setup(test) else {
        return;
    };
    if !fx.require(test, &[(Mech::RSA_PKCS_OAEP, "decrypt")]) {
        return;
    }
    pkeyutl_decrypt(
        &fx,
        c,
        "oaep-sha256",
        &[
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ],
    );
}

#[test]
fn openssl_pkeyutl_decrypt_rsa_pkcs1() {
    let test = "openssl_pkeyutl_decrypt_rsa_pkcs1";
    let Some((fx, c)) = setup(test) else {
        return;
    };
    if !fx.require(test, &[(Mech::RSA_PKCS, "decrypt")]) {
        return;
    }
    pkeyutl_decrypt(&fx, c, "pkcs1", &["-pkeyopt", "rsa_padding_mode:pkcs1"]);
}

#[test]
fn openssl_pkeyutl_derive_ecdh() {
    let test = "openssl_pkeyutl_derive_ecdh";
    let Some((fx, c)) = setup(test) else {
        return;
    };
    if !fx.require(test, &[(Mech::ECDH1_DERIVE, "derive")]) {
        return;
    }
    let hsm_pub = pair(&fx, EC);
    let peer = fx.path("ossl-ecdh-peer.pem");
    let peer_pub = fx.path("ossl-ecdh-peer.pub.pem");
    plain(&fx, c, "software openssl genpkey (peer)")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .arg("-out")
        .arg(&peer)
        .run()
        .ok();
    plain(&fx, c, "software openssl pkey -pubout (peer)")
        .args(["pkey", "-pubout", "-in"])
        .arg(&peer)
        .arg("-out")
        .arg(&peer_pub)
        .run()
        .ok();
    let expected = fx.path("ossl-ecdh.software.secret");
    let run = plain(&fx, c, "software openssl pkeyutl -derive (peer side)")
        .args(["pkeyutl", "-derive", "-inkey"])
        .arg(&peer)
        .args(["-peerform", "DER", "-peerkey"])
        .arg(&hsm_pub)
        .arg("-out")
        .arg(&expected)
        .run()
        .ok();
    let expected = read_output(&expected, &run);
    let got = fx.path("ossl-ecdh.hsm.secret");
    let run = ossl(&fx, c, "openssl pkeyutl -derive (HSM side)")
        .args([
            "pkeyutl",
            "-derive",
            "-inkey",
            &uri(EC, "private"),
            "-peerkey",
        ])
        .arg(&peer_pub)
        .arg("-out")
        .arg(&got)
        .run()
        .ok();
    assert_eq!(
        read_output(&got, &run),
        expected,
        "ECDH secret differs\n{run}"
    );
}

// ---- certificates and TLS ----

/// `openssl req -x509 -key pkcs11:…`: a self-signed certificate for `localhost`, signed in the
/// HSM; made once per key and shared with the TLS tests.
fn certificate(fx: &Fixture, c: &Configs, spec: PairSpec) -> PathBuf {
    static CERTS: OnceLock<Mutex<HashMap<&'static str, PathBuf>>> = OnceLock::new();
    let certs = CERTS.get_or_init(Default::default);
    let mut certs = certs.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(cert) = certs.get(spec.label) {
        return cert.clone();
    }
    pair(fx, spec);
    let cert = fx.path(&format!("{}.crt", spec.label));
    ossl(fx, c, "openssl req -x509 -key pkcs11:")
        .args(["req", "-x509", "-new", "-key", &uri(spec, "private")])
        .args(["-subj", "/CN=localhost", "-days", "2", "-sha256"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-out")
        .arg(&cert)
        .run()
        .ok();
    certs.insert(spec.label, cert.clone());
    cert
}

fn req_x509(test: &str, spec: PairSpec, signature: &str) {
    let Some((fx, c)) = setup(test) else {
        return;
    };
    let cert = certificate(&fx, c, spec);
    let cert_s = cert.to_string_lossy().into_owned();
    plain(&fx, c, "software openssl verify (self-signed)")
        .args(["verify", "-CAfile", &cert_s, &cert_s])
        .run()
        .ok()
        .contains(&format!("{cert_s}: OK"));
    plain(&fx, c, "software openssl x509 -text")
        .args(["x509", "-noout", "-text", "-in", &cert_s])
        .run()
        .ok()
        .contains("Subject: CN = localhost")
        .contains(&format!("Signature Algorithm: {signature}"))
        .contains("DNS:localhost, IP Address:127.0.0.1");
    // The certificate's key is the HSM key.
    let from_cert = fx.path(&format!("{}.crt.pub.der", spec.label));
    let run = plain(&fx, c, "software openssl x509 -pubkey")
        .args(["x509", "-noout", "-pubkey", "-in", &cert_s])
        .run()
        .ok();
    let pem = scratch(
        &fx,
        &format!("{}.crt.pub.pem", spec.label),
        run.stdout.as_bytes(),
    );
    let run = plain(&fx, c, "software openssl pkey -pubin (to DER)")
        .args(["pkey", "-pubin", "-in"])
        .arg(&pem)
        .args(["-outform", "DER", "-out"])
        .arg(&from_cert)
        .run()
        .ok();
    assert_eq!(
        read_output(&from_cert, &run),
        fs::read(fx.public_key_der(spec)).expect("public key"),
        "the certificate does not carry the HSM key"
    );
}

#[test]
fn openssl_req_x509_self_signed_ec() {
    req_x509("openssl_req_x509_self_signed_ec", EC, "ecdsa-with-SHA256");
}

#[test]
fn openssl_req_x509_self_signed_rsa() {
    req_x509(
        "openssl_req_x509_self_signed_rsa",
        RSA,
        "sha256WithRSAEncryption",
    );
}

/// `openssl s_server` with the HSM-held key (through the provider) accepts one connection;
/// software `openssl s_client` completes the handshake and verifies the certificate. Returns
/// the client's and the server's runs.
fn tls_handshake(
    fx: &Fixture,
    c: &Configs,
    spec: PairSpec,
    server_opts: &[&str],
    client_opts: &[&str],
) -> (Run, Run) {
    let cert = certificate(fx, c, spec);
    let mut last_error = String::new();
    // The port was free when chosen; if something took it since, choose another.
    for _ in 0..3 {
        let port = free_port();
        let mut server = ossl(fx, c, "openssl s_server (HSM key)")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .args([
                "-naccept",
                "1",
                "-www",
                "-key",
                &uri(spec, "private"),
                "-cert",
            ])
            .arg(&cert)
            .args(server_opts)
            .timeout(Duration::from_secs(120))
            .spawn();
        if let Err(e) = server.wait_for("ACCEPT", Duration::from_secs(60)) {
            last_error = e;
            continue;
        }
        let client = plain(fx, c, "software openssl s_client")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args([
                "-brief",
                "-verify_return_error",
                "-verify_hostname",
                "localhost",
            ])
            .arg("-CAfile")
            .arg(&cert)
            .args(client_opts)
            .timeout(Duration::from_secs(60))
            .run();
        let server = server.finish(Duration::from_secs(20));
        return (client, server);
    }
    panic!("openssl s_server did not start:\n{last_error}");
}

/// Asserts the handshake completed and verified, showing both sides on failure.
#[track_caller]
fn assert_handshake(client: &Run, server: &Run, protocol: &str, signature: &str) {
    let both = format!("{client}\n{server}");
    for needle in [
        "CONNECTION ESTABLISHED",
        &format!("Protocol version: {protocol}"),
        &format!("Signature type: {signature}"),
        "Verification: OK",
        "Peer certificate: CN = localhost",
    ] {
        assert!(
            client.output().contains(needle),
            "TLS client output lacks {needle:?}\n{both}"
        );
    }
    assert!(
        server.output().contains("1 server accepts that finished"),
        "the server did not finish the handshake\n{both}"
    );
}

#[test]
fn openssl_s_server_tls13_ec() {
    let Some((fx, c)) = setup("openssl_s_server_tls13_ec") else {
        return;
    };
    let (client, server) = tls_handshake(&fx, c, EC, &["-tls1_3"], &["-tls1_3"]);
    assert_handshake(&client, &server, "TLSv1.3", "ECDSA");
}

#[test]
fn openssl_s_server_tls13_rsa_pss() {
    let test = "openssl_s_server_tls13_rsa_pss";
    let Some((fx, c)) = setup(test) else {
        return;
    };
    // TLS 1.3 signs the handshake with RSA-PSS on a digest: CKM_RSA_PKCS_PSS.
    if !fx.require(test, &[(Mech::RSA_PKCS_PSS, "sign")]) {
        return;
    }
    let (client, server) = tls_handshake(
        &fx,
        c,
        RSA,
        &["-tls1_3"],
        &["-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"],
    );
    assert_handshake(&client, &server, "TLSv1.3", "RSA-PSS");
}

#[test]
fn openssl_s_server_tls12_rsa_pkcs1() {
    let Some((fx, c)) = setup("openssl_s_server_tls12_rsa_pkcs1") else {
        return;
    };
    let (client, server) = tls_handshake(
        &fx,
        c,
        RSA,
        &["-tls1_2"],
        &["-tls1_2", "-sigalgs", "RSA+SHA256"],
    );
    assert_handshake(&client, &server, "TLSv1.2", "RSA");
}

// ---- the libp11 engine ----

#[test]
fn openssl_engine_libp11_sign() {
    let test = "openssl_engine_libp11_sign";
    let Some((fx, c)) = setup(test) else {
        return;
    };
    let Some(engine_conf) = &c.engine else {
        loud(&format!(
            "SKIPPED {test}: the libp11 engine is not installed (Debian package \
             libengine-pkcs11-openssl; scripts/test.sh installs it)"
        ));
        return;
    };
    // libp11 0.4.12 (Debian 12) gives up enumerating private keys ("Unable to enumerate
    // private keys") as soon as the token shows it an Ed25519 private key, which it predates;
    // every PKCS#11 call it makes succeeds. The other tests of this file make Ed25519 keys as
    // alice, so the engine runs as a crypto user of its own, whose keys are only its own.
    let pin = fx.add_user("engine");
    let conf = fx.path("openssl-engine-user.cnf");
    let text = fs::read_to_string(engine_conf).expect("read engine configuration");
    assert!(
        text.contains(fx.pin()),
        "engine configuration holds the PIN"
    );
    fs::write(&conf, text.replace(fx.pin(), &pin)).expect("write engine configuration");
    let as_engine_user = |label: &str| {
        fx.pkcs11_tool(label)
            .args(["--login", "--pin"])
            .arg(&pin)
            .redact(&pin)
    };
    let msg = scratch(&fx, "engine.msg", MESSAGE);
    let mut ec_public = None;
    for (key_type, label, id) in [
        ("EC:prime256v1", "engine-ec", "e1"),
        ("rsa:2048", "engine-rsa", "e2"),
    ] {
        as_engine_user(&format!(
            "pkcs11-tool --keypairgen {key_type} (engine user)"
        ))
        .args([
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
            "--id",
            id,
        ])
        .run()
        .ok();
        let pubkey = fx.path(&format!("{label}.pub.der"));
        as_engine_user("pkcs11-tool --read-object --type pubkey (engine user)")
            .args(["--read-object", "--type", "pubkey", "--id", id, "-o"])
            .arg(&pubkey)
            .run()
            .ok();
        let private = format!("pkcs11:token={TOKEN_LABEL};object={label};type=private");
        let sig = fx.path(&format!("{label}.engine.sig"));
        fx.client(&format!("openssl dgst -engine pkcs11 ({label})"), "openssl")
            .env("OPENSSL_CONF", &conf)
            .args(["dgst", "-sha256", "-engine", "pkcs11", "-keyform", "engine"])
            .args(["-sign", &private, "-out"])
            .arg(&sig)
            .arg(&msg)
            .run()
            .ok()
            .contains("Engine \"pkcs11\" set.");
        plain(&fx, c, "software openssl dgst -verify (engine signature)")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&pubkey)
            .args(["-keyform", "DER", "-signature"])
            .arg(&sig)
            .arg(&msg)
            .run()
            .ok()
            .contains("Verified OK");
        if key_type.starts_with("EC:") {
            ec_public = Some((private, pubkey));
        }
    }
    // The engine reads public keys from the token too.
    let (private, pubkey) = ec_public.expect("the EC pair was made");
    let out = fx.path("engine-ec.engine.pub.der");
    let run = fx
        .client("openssl pkey -engine pkcs11 -pubout", "openssl")
        .env("OPENSSL_CONF", &conf)
        .args([
            "pkey", "-engine", "pkcs11", "-inform", "engine", "-in", &private,
        ])
        .args(["-pubout", "-outform", "DER", "-out"])
        .arg(&out)
        .run()
        .ok();
    assert_eq!(
        read_output(&out, &run),
        fs::read(&pubkey).expect("public key"),
        "engine's public key\n{run}"
    );
}

// ---- process exit ----

#[test]
fn openssl_exits_cleanly_with_module_debug_logging() {
    let Some((fx, c)) = setup("openssl_exits_cleanly_with_module_debug_logging") else {
        return;
    };
    // OpenSSL closes the provider's sessions and calls C_Finalize from its atexit handler,
    // after the main thread's thread-locals are gone (CLIENTS.md, "Loading and teardown").
    // The module must not crash there whatever it logs: here with the harness's configuration
    // (log_level = "debug", log file).
    pair(&fx, EC);
    let out = fx.path("ossl-ec.debug-logging.pub.der");
    let run = ossl(&fx, c, "openssl pkey -pubout (module logging at debug)")
        .env(
            hsm_proto::config::MODULE_CONFIG_ENV,
            fx.cluster.module_config(),
        )
        .args([
            "pkey",
            "-in",
            &uri(EC, "private"),
            "-pubout",
            "-outform",
            "DER",
        ])
        .arg("-out")
        .arg(&out)
        .run()
        .lacks("panicked")
        .ok();
    assert_eq!(
        read_output(&out, &run),
        fs::read(fx.public_key_der(EC)).expect("public key"),
        "public key\n{run}"
    );
}
