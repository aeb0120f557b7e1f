//! OpenSC's `pkcs11-tool` driving the module against a live cluster, each flow its own test:
//! information and slots, mechanisms, login with `user:password`, key generation of every key
//! type, sign/verify (checked independently with `openssl`), encrypt/decrypt, wrap/unwrap,
//! derive, certificate and data objects, and `pkcs11-tool --test`.
//!
//! One cluster for the whole file; keys are generated once and shared. A flow that needs a
//! mechanism the module does not advertise yet (issue 3) skips with a loud message and runs by
//! itself once `C_GetMechanismList` lists it.

use hsm_tests::interop::{
    Fixture, Mech, PairNeeds, PairSpec, Run, TestGuard, loud, objects_matching, read_output,
};
use hsm_tests::keys::{sha256, sha256_digest_info};
use sha2::{Digest, Sha384};
use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The token label the module reports.
const TOKEN_LABEL: &str = "hsm-cluster";
/// The message every signature test signs.
const MESSAGE: &[u8] = b"pkcs11-tool interop: signed inside the HSM cluster";

const RSA_2048: PairSpec = PairSpec {
    key_type: "rsa:2048",
    label: "iop-rsa2048",
    id: "a1",
    needs: PairNeeds::Baseline,
};
const RSA_3072: PairSpec = PairSpec {
    key_type: "rsa:3072",
    label: "iop-rsa3072",
    id: "a2",
    needs: PairNeeds::Baseline,
};
const P256: PairSpec = PairSpec {
    key_type: "EC:prime256v1",
    label: "iop-p256",
    id: "a3",
    needs: PairNeeds::Baseline,
};
const P384: PairSpec = PairSpec {
    key_type: "EC:secp384r1",
    label: "iop-p384",
    id: "a4",
    needs: PairNeeds::EcBits(384),
};
/// `pkcs11-tool` names Ed25519 `EC:edwards25519`.
const ED25519: PairSpec = PairSpec {
    key_type: "EC:edwards25519",
    label: "iop-ed25519",
    id: "a5",
    needs: PairNeeds::Edwards,
};

/// Writes `data` to a scratch file.
fn scratch(fx: &Fixture, name: &str, data: &[u8]) -> PathBuf {
    let path = fx.path(name);
    fs::write(&path, data).expect("write scratch file");
    path
}

/// A copy of `path` with one byte flipped.
fn tampered(path: &std::path::Path) -> PathBuf {
    let mut bytes = fs::read(path).expect("read");
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    let out = path.with_extension("tampered");
    fs::write(&out, bytes).expect("write");
    out
}

fn openssl(fx: &Fixture, label: &str) -> hsm_tests::interop::Client {
    fx.client(label, "openssl")
}

/// One signature made by `pkcs11-tool --sign`, verified by `pkcs11-tool --verify` and by
/// `openssl` (independently, with the exported public key).
struct SignCase<'a> {
    spec: PairSpec,
    mechanism: &'a str,
    input: PathBuf,
    extra: &'a [&'a str],
    signature_len: Option<usize>,
    /// `openssl` arguments verifying the signature (`{sig}` stands for its file) and what
    /// openssl says when it holds; `None` when openssl cannot read this format.
    openssl_verify: Option<(Vec<String>, &'a str)>,
}

/// Runs a [`SignCase`]; returns the signature file.
fn sign_case(fx: &Fixture, case: &SignCase<'_>) -> PathBuf {
    let sig = fx.path(&format!(
        "{}-{}.sig",
        case.spec.label,
        case.mechanism.to_lowercase()
    ));
    let run = fx
        .pkcs11_tool_user(&format!("pkcs11-tool --sign -m {}", case.mechanism))
        .args(["--sign", "--id", case.spec.id, "-m", case.mechanism])
        .args(case.extra)
        .arg("-i")
        .arg(&case.input)
        .arg("-o")
        .arg(&sig)
        .run()
        .ok();
    let signature = read_output(&sig, &run);
    if let Some(len) = case.signature_len {
        assert_eq!(
            signature.len(),
            len,
            "{} signature length\n{run}",
            case.mechanism
        );
    }
    fx.pkcs11_tool_user(&format!("pkcs11-tool --verify -m {}", case.mechanism))
        .args(["--verify", "--id", case.spec.id, "-m", case.mechanism])
        .args(case.extra)
        .arg("-i")
        .arg(&case.input)
        .arg("--signature-file")
        .arg(&sig)
        .run()
        .ok()
        .contains("Signature is valid");
    if let Some((args, says)) = &case.openssl_verify {
        let mut verify = openssl(fx, &format!("openssl verifies {}", case.mechanism));
        for a in args {
            verify = verify.arg(a.replace("{sig}", &sig.to_string_lossy()));
        }
        verify.run().ok().contains(says);
    }
    sig
}

/// `pkcs11-tool --verify` refuses a tampered signature.
fn tampered_signature_rejected(fx: &Fixture, case: &SignCase<'_>, sig: &std::path::Path) {
    let bad = tampered(sig);
    let run = fx
        .pkcs11_tool_user(&format!(
            "pkcs11-tool --verify (tampered) -m {}",
            case.mechanism
        ))
        .args(["--verify", "--id", case.spec.id, "-m", case.mechanism])
        .args(case.extra)
        .arg("-i")
        .arg(&case.input)
        .arg("--signature-file")
        .arg(&bad)
        .run()
        .lacks("Signature is valid");
    assert!(
        run.output().contains("Invalid signature") || !run.succeeded(),
        "a tampered signature was not refused\n{run}"
    );
}

fn guard(test: &str, programs: &[&str]) -> Option<TestGuard> {
    Fixture::for_test(test, programs)
}

// ---- information, slots, mechanisms, login ----

#[test]
fn pkcs11_tool_show_info() {
    let Some(fx) = guard("pkcs11_tool_show_info", &[]) else {
        return;
    };
    fx.pkcs11_tool("pkcs11-tool --show-info")
        .arg("--show-info")
        .run()
        .ok()
        .contains("Cryptoki version 2.40")
        .contains("Manufacturer     hsm-cluster project")
        .contains("Library          hsm-cluster PKCS#11 module");
}

#[test]
fn pkcs11_tool_list_slots() {
    let Some(fx) = guard("pkcs11_tool_list_slots", &[]) else {
        return;
    };
    let run = fx
        .pkcs11_tool("pkcs11-tool --list-slots")
        .arg("--list-slots")
        .run()
        .ok()
        .contains("Slot 0 (0x0)")
        .contains(&format!("token label        : {TOKEN_LABEL}"))
        .contains("token manufacturer : hsm-cluster project");
    let flags = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("token flags        :"))
        .unwrap_or_else(|| panic!("no token flags line\n{run}"));
    for flag in [
        "login required",
        "rng",
        "token initialized",
        "PIN initialized",
    ] {
        assert!(flags.contains(flag), "token flags lack {flag:?}\n{run}");
    }
}

#[test]
fn pkcs11_tool_list_mechanisms() {
    let Some(fx) = guard("pkcs11_tool_list_mechanisms", &[]) else {
        return;
    };
    let run = fx
        .pkcs11_tool("pkcs11-tool --list-mechanisms")
        .arg("--list-mechanisms")
        .run()
        .ok()
        .contains("Supported mechanisms:");
    let listed = hsm_tests::interop::Mechanisms::parse(&run.stdout);
    // What pkcs11-tool sees is exactly the table the module and the node share.
    assert_eq!(
        listed.len(),
        hsm_proto::mechlist::MECHANISMS.len(),
        "pkcs11-tool lists another number of mechanisms than hsm_proto::mechlist\n{run}"
    );
    for m in hsm_tests::interop::mechanisms::ALL {
        assert_eq!(
            listed.row(*m).is_some(),
            hsm_proto::mechlist::info(m.code).is_some(),
            "{} ({}): pkcs11-tool's listing and hsm_proto::mechlist disagree\n{run}",
            m.ckm,
            m.name
        );
    }
    // The baseline every client relies on, with the flags they look for.
    for (m, flags) in [
        (Mech::RSA_PKCS_KEY_PAIR_GEN, &["generate_key_pair"][..]),
        (Mech::RSA_PKCS, &["sign", "verify"][..]),
        (Mech::SHA256_RSA_PKCS, &["sign", "verify"][..]),
        (Mech::SHA256_RSA_PKCS_PSS, &["sign", "verify"][..]),
        (Mech::EC_KEY_PAIR_GEN, &["generate_key_pair"][..]),
        (Mech::ECDSA, &["sign", "verify"][..]),
        (Mech::ECDSA_SHA256, &["sign", "verify"][..]),
        (Mech::AES_KEY_GEN, &["generate"][..]),
        (Mech::AES_GCM, &["encrypt", "decrypt"][..]),
    ] {
        for flag in flags {
            assert!(listed.has(m, flag), "{} lacks {flag}\n{run}", m.ckm);
        }
    }
    assert!(listed.has_key_size(Mech::RSA_PKCS_KEY_PAIR_GEN, 2048));
    assert!(listed.has_key_size(Mech::RSA_PKCS_KEY_PAIR_GEN, 3072));
    assert!(listed.has_key_size(Mech::EC_KEY_PAIR_GEN, 256));
    let absent: Vec<&str> = hsm_tests::interop::mechanisms::ALL
        .iter()
        .filter(|m| listed.row(**m).is_none())
        .map(|m| m.ckm)
        .collect();
    if !absent.is_empty() {
        loud(&format!(
            "NOTE pkcs11_tool_list_mechanisms: not advertised yet (issue 3), their flows are \
             skipped: {}",
            absent.join(", ")
        ));
    }
}

#[test]
fn pkcs11_tool_login_user_password() {
    let Some(fx) = guard("pkcs11_tool_login_user_password", &[]) else {
        return;
    };
    // The PIN is `user:password`, passed verbatim.
    fx.pkcs11_tool_user("pkcs11-tool --login --list-objects")
        .arg("--list-objects")
        .run()
        .ok()
        .lacks("error:");
    // A wrong password is refused with the spec's code (on a user of its own, so no lockout
    // policy can touch the user the other tests use).
    let pin = fx.add_user("iop-login");
    let user = pin.split_once(':').expect("user:password").0;
    fx.pkcs11_tool("pkcs11-tool --login (right PIN)")
        .args(["--login", "--pin", &pin, "--list-objects"])
        .redact(&pin)
        .run()
        .ok();
    fx.pkcs11_tool("pkcs11-tool --login (wrong password)")
        .args(["--login", "--pin", &format!("{user}:not-the-password")])
        .arg("--list-objects")
        .run()
        .failed()
        .contains("CKR_PIN_INCORRECT");
}

// ---- key generation ----

#[track_caller]
fn check_keypairgen(test: &str, spec: PairSpec, expect: &[&str]) {
    let Some(fx) = guard(test, &[]) else {
        return;
    };
    if !fx.pair_supported(test, spec) {
        return;
    }
    let mut run = fx
        .keypair(spec)
        .ok()
        .contains("Key pair generated:")
        .contains(&format!("label:      {}", spec.label))
        .contains(&format!("ID:         {}", spec.id));
    for e in expect {
        run = run.contains(e);
    }
    // Both halves are on the token afterwards.
    let listing = fx
        .pkcs11_tool_user("pkcs11-tool --list-objects")
        .arg("--list-objects")
        .run()
        .ok();
    let id = format!("ID:         {}\n", spec.id);
    for class in ["Private Key Object", "Public Key Object"] {
        assert_eq!(
            objects_matching(&listing.stdout, class, &id).len(),
            1,
            "one {class} with CKA_ID {}\n{listing}",
            spec.id
        );
    }
}

#[test]
fn pkcs11_tool_keypairgen_rsa_2048() {
    check_keypairgen(
        "pkcs11_tool_keypairgen_rsa_2048",
        RSA_2048,
        &[
            "Private Key Object; RSA",
            "Public Key Object; RSA 2048 bits",
        ],
    );
}

#[test]
fn pkcs11_tool_keypairgen_rsa_3072() {
    check_keypairgen(
        "pkcs11_tool_keypairgen_rsa_3072",
        RSA_3072,
        &[
            "Private Key Object; RSA",
            "Public Key Object; RSA 3072 bits",
        ],
    );
}

#[test]
fn pkcs11_tool_keypairgen_ec_p256() {
    check_keypairgen(
        "pkcs11_tool_keypairgen_ec_p256",
        P256,
        &[
            "Private Key Object; EC",
            "EC_POINT 256 bits",
            "EC_PARAMS:  06082a8648ce3d030107",
        ],
    );
}

#[test]
fn pkcs11_tool_keypairgen_ec_p384() {
    check_keypairgen(
        "pkcs11_tool_keypairgen_ec_p384",
        P384,
        &[
            "Private Key Object; EC",
            "EC_POINT 384 bits",
            "EC_PARAMS:  06052b81040022",
        ],
    );
}

#[test]
fn pkcs11_tool_keypairgen_ed25519() {
    check_keypairgen(
        "pkcs11_tool_keypairgen_ed25519",
        ED25519,
        &["Private Key Object"],
    );
}

/// `pkcs11-tool --keygen` of an AES-256 key, once per test binary.
fn aes_key(fx: &Fixture) -> Run {
    static KEY: OnceLock<Run> = OnceLock::new();
    KEY.get_or_init(|| {
        fx.pkcs11_tool_user("pkcs11-tool --keygen AES:32")
            .args(["--keygen", "--key-type", "AES:32"])
            .args(["--label", "iop-aes", "--id", "a6"])
            .run()
    })
    .clone()
}

#[test]
fn pkcs11_tool_keygen_aes() {
    let Some(fx) = guard("pkcs11_tool_keygen_aes", &[]) else {
        return;
    };
    aes_key(&fx)
        .ok()
        .contains("Key generated:")
        .contains("Secret Key Object; AES length 32")
        .contains("label:      iop-aes")
        .contains("never extractable");
}

// ---- sign / verify ----

#[test]
fn pkcs11_tool_sign_verify_rsa_2048() {
    let test = "pkcs11_tool_sign_verify_rsa_2048";
    let Some(fx) = guard(test, &["openssl"]) else {
        return;
    };
    let spec = RSA_2048;
    let pubkey = fx.public_key_der(spec).to_string_lossy().into_owned();
    let msg = scratch(&fx, "rsa2048.msg", MESSAGE);
    let msg_s = msg.to_string_lossy().into_owned();
    let dgst_verify = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["dgst", "-sha256", "-verify", &pubkey, "-keyform", "DER"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v.extend(["-signature".into(), "{sig}".into(), msg_s.clone()]);
        v
    };
    let pss_opts = [
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
    ];

    let pkcs1 = SignCase {
        spec,
        mechanism: "SHA256-RSA-PKCS",
        input: msg.clone(),
        extra: &[],
        signature_len: Some(256),
        openssl_verify: Some((dgst_verify(&[]), "Verified OK")),
    };
    let sig = sign_case(&fx, &pkcs1);
    tampered_signature_rejected(&fx, &pkcs1, &sig);

    // CKM_RSA_PKCS with the DigestInfo the caller built (what OpenSSL and Java do).
    let digest_info = scratch(&fx, "rsa2048.digestinfo", &sha256_digest_info(MESSAGE));
    sign_case(
        &fx,
        &SignCase {
            spec,
            mechanism: "RSA-PKCS",
            input: digest_info,
            extra: &[],
            signature_len: Some(256),
            openssl_verify: Some((dgst_verify(&[]), "Verified OK")),
        },
    );

    sign_case(
        &fx,
        &SignCase {
            spec,
            mechanism: "SHA256-RSA-PKCS-PSS",
            input: msg.clone(),
            extra: &["--mgf", "MGF1-SHA256", "--salt-len", "32"],
            signature_len: Some(256),
            openssl_verify: Some((dgst_verify(&pss_opts), "Verified OK")),
        },
    );

    // PSS on a digest the caller computed (TLS 1.3 signs this way).
    if fx.require(
        &format!("{test} (RSA-PKCS-PSS on a digest)"),
        &[(Mech::RSA_PKCS_PSS, "sign")],
    ) {
        let digest = scratch(&fx, "rsa2048.sha256", &sha256(MESSAGE));
        sign_case(
            &fx,
            &SignCase {
                spec,
                mechanism: "RSA-PKCS-PSS",
                input: digest,
                extra: &[
                    "--hash-algorithm",
                    "SHA256",
                    "--mgf",
                    "MGF1-SHA256",
                    "--salt-len",
                    "32",
                ],
                signature_len: Some(256),
                openssl_verify: Some((dgst_verify(&pss_opts), "Verified OK")),
            },
        );
    }
}

#[test]
fn pkcs11_tool_sign_verify_rsa_3072() {
    let Some(fx) = guard("pkcs11_tool_sign_verify_rsa_3072", &["openssl"]) else {
        return;
    };
    let spec = RSA_3072;
    let pubkey = fx.public_key_der(spec).to_string_lossy().into_owned();
    let msg = scratch(&fx, "rsa3072.msg", MESSAGE);
    let msg_s = msg.to_string_lossy().into_owned();
    for (mechanism, extra, opts) in [
        ("SHA256-RSA-PKCS", &[][..], &[][..]),
        (
            "SHA256-RSA-PKCS-PSS",
            &["--mgf", "MGF1-SHA256", "--salt-len", "32"][..],
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ][..],
        ),
    ] {
        let mut verify: Vec<String> = ["dgst", "-sha256", "-verify", &pubkey, "-keyform", "DER"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        verify.extend(opts.iter().map(|s| (*s).to_owned()));
        verify.extend(["-signature".into(), "{sig}".into(), msg_s.clone()]);
        sign_case(
            &fx,
            &SignCase {
                spec,
                mechanism,
                input: msg.clone(),
                extra,
                signature_len: Some(384),
                openssl_verify: Some((verify, "Verified OK")),
            },
        );
    }
}

#[test]
fn pkcs11_tool_sign_verify_ec_p256() {
    let Some(fx) = guard("pkcs11_tool_sign_verify_ec_p256", &["openssl"]) else {
        return;
    };
    let spec = P256;
    let pubkey = fx.public_key_der(spec).to_string_lossy().into_owned();
    let msg = scratch(&fx, "p256.msg", MESSAGE);
    let digest = scratch(&fx, "p256.sha256", &sha256(MESSAGE));

    // CKM_ECDSA on a digest, raw r || s (pkcs11-tool's default format).
    let raw = SignCase {
        spec,
        mechanism: "ECDSA",
        input: digest.clone(),
        extra: &[],
        signature_len: Some(64),
        // openssl reads DER signatures: checked below with the `openssl` format.
        openssl_verify: None,
    };
    let sig = sign_case(&fx, &raw);
    tampered_signature_rejected(&fx, &raw, &sig);

    // The same as DER, verified by openssl on the digest.
    sign_case(
        &fx,
        &SignCase {
            spec,
            mechanism: "ECDSA",
            input: digest.clone(),
            extra: &["--signature-format", "openssl"],
            signature_len: None,
            openssl_verify: Some((
                [
                    "pkeyutl",
                    "-verify",
                    "-pubin",
                    "-keyform",
                    "DER",
                    "-inkey",
                    &pubkey,
                    "-in",
                    &digest.to_string_lossy(),
                    "-sigfile",
                    "{sig}",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
                "Signature Verified Successfully",
            )),
        },
    );

    // CKM_ECDSA_SHA256 on the message.
    sign_case(
        &fx,
        &SignCase {
            spec,
            mechanism: "ECDSA-SHA256",
            input: msg.clone(),
            extra: &["--signature-format", "openssl"],
            signature_len: None,
            openssl_verify: Some((
                [
                    "dgst",
                    "-sha256",
                    "-verify",
                    &pubkey,
                    "-keyform",
                    "DER",
                    "-signature",
                    "{sig}",
                    &msg.to_string_lossy(),
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
                "Verified OK",
            )),
        },
    );
}

#[test]
fn pkcs11_tool_sign_verify_ec_p384() {
    let test = "pkcs11_tool_sign_verify_ec_p384";
    let Some(fx) = guard(test, &["openssl"]) else {
        return;
    };
    if !fx.pair_supported(test, P384) || !fx.require_key_size(test, Mech::ECDSA, 384, "P-384") {
        return;
    }
    let spec = P384;
    let pubkey = fx.public_key_der(spec).to_string_lossy().into_owned();
    let digest = scratch(&fx, "p384.sha384", &Sha384::digest(MESSAGE));
    let raw = SignCase {
        spec,
        mechanism: "ECDSA",
        input: digest.clone(),
        extra: &[],
        signature_len: Some(96),
        openssl_verify: None,
    };
    let sig = sign_case(&fx, &raw);
    tampered_signature_rejected(&fx, &raw, &sig);
    sign_case(
        &fx,
        &SignCase {
            spec,
            mechanism: "ECDSA",
            input: digest.clone(),
            extra: &["--signature-format", "openssl"],
            signature_len: None,
            openssl_verify: Some((
                [
                    "pkeyutl",
                    "-verify",
                    "-pubin",
                    "-keyform",
                    "DER",
                    "-inkey",
                    &pubkey,
                    "-in",
                    &digest.to_string_lossy(),
                    "-sigfile",
                    "{sig}",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
                "Signature Verified Successfully",
            )),
        },
    );
    if fx.require(
        &format!("{test} (ECDSA-SHA384)"),
        &[(Mech::ECDSA_SHA384, "sign")],
    ) {
        let msg = scratch(&fx, "p384.msg", MESSAGE);
        sign_case(
            &fx,
            &SignCase {
                spec,
                mechanism: "ECDSA-SHA384",
                input: msg.clone(),
                extra: &["--signature-format", "openssl"],
                signature_len: None,
                openssl_verify: Some((
                    [
                        "dgst",
                        "-sha384",
                        "-verify",
                        &pubkey,
                        "-keyform",
                        "DER",
                        "-signature",
                        "{sig}",
                        &msg.to_string_lossy(),
                    ]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                    "Verified OK",
                )),
            },
        );
    }
}

#[test]
fn pkcs11_tool_sign_verify_ed25519() {
    let test = "pkcs11_tool_sign_verify_ed25519";
    let Some(fx) = guard(test, &["openssl"]) else {
        return;
    };
    if !fx.pair_supported(test, ED25519) || !fx.require(test, &[(Mech::EDDSA, "sign")]) {
        return;
    }
    let spec = ED25519;
    let pubkey = fx.public_key_der(spec).to_string_lossy().into_owned();
    let msg = scratch(&fx, "ed25519.msg", MESSAGE);
    let case = SignCase {
        spec,
        mechanism: "EDDSA",
        input: msg.clone(),
        extra: &[],
        signature_len: Some(64),
        openssl_verify: Some((
            [
                "pkeyutl",
                "-verify",
                "-pubin",
                "-keyform",
                "DER",
                "-inkey",
                &pubkey,
                "-rawin",
                "-in",
                &msg.to_string_lossy(),
                "-sigfile",
                "{sig}",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            "Signature Verified Successfully",
        )),
    };
    let sig = sign_case(&fx, &case);
    tampered_signature_rejected(&fx, &case, &sig);
}

// ---- encrypt / decrypt ----

/// An extractable, non-sensitive AES-256 key whose value `pkcs11-tool --read-object` returns,
/// so `openssl enc` can check what the token computed. Returns the key's value.
fn clear_aes_key(fx: &Fixture, label: &str, id: &str, extra: &[&str]) -> Vec<u8> {
    fx.pkcs11_tool_user(&format!("pkcs11-tool --keygen --extractable ({label})"))
        .args(["--keygen", "--key-type", "AES:32", "--extractable"])
        .args(extra)
        .args(["--label", label, "--id", id])
        .run()
        .ok()
        .contains("Secret Key Object; AES length 32");
    let path = fx.path(&format!("{label}.key"));
    let run = fx
        .pkcs11_tool_user("pkcs11-tool --read-object --type secrkey")
        .args(["--read-object", "--type", "secrkey", "--id", id, "-o"])
        .arg(&path)
        .run()
        .ok();
    let value = read_output(&path, &run);
    assert_eq!(value.len(), 32, "AES-256 key value\n{run}");
    value
}

#[test]
fn pkcs11_tool_encrypt_decrypt_aes_cbc() {
    let test = "pkcs11_tool_encrypt_decrypt_aes_cbc";
    let Some(fx) = guard(test, &["openssl"]) else {
        return;
    };
    // pkcs11-tool 0.23 encrypts with AES-ECB/CBC/CBC-PAD only (no AES-GCM): GCM is covered by
    // the Java flow.
    if !fx.require(
        test,
        &[
            (Mech::AES_CBC_PAD, "encrypt"),
            (Mech::AES_CBC_PAD, "decrypt"),
            (Mech::AES_CBC, "encrypt"),
            (Mech::AES_CBC, "decrypt"),
        ],
    ) {
        return;
    }
    let iv = "000102030405060708090a0b0c0d0e0f";
    let key = clear_aes_key(&fx, "iop-aes-clear", "a7", &[]);
    let plain: Vec<u8> = (0..100u8).collect();
    let plain_path = scratch(&fx, "cbc.plain", &plain);
    for (mechanism, cipher, input, nopad) in [
        ("AES-CBC-PAD", "aes-256-cbc", &plain[..], false),
        ("AES-CBC", "aes-256-cbc", &plain[..96], true),
    ] {
        let input_path = scratch(&fx, &format!("{mechanism}.in"), input);
        let ct = fx.path(&format!("{mechanism}.ct"));
        let run = fx
            .pkcs11_tool_user(&format!("pkcs11-tool --encrypt -m {mechanism}"))
            .args(["--encrypt", "--id", "a7", "-m", mechanism, "--iv", iv, "-i"])
            .arg(&input_path)
            .arg("-o")
            .arg(&ct)
            .run()
            .ok();
        let ciphertext = read_output(&ct, &run);
        // The same with openssl and the key's value.
        let expected = fx.path(&format!("{mechanism}.openssl.ct"));
        let mut enc = openssl(&fx, &format!("openssl enc -{cipher}"))
            .args(["enc", &format!("-{cipher}"), "-K", &hex::encode(&key)])
            .args(["-iv", iv, "-in"])
            .arg(&input_path)
            .arg("-out")
            .arg(&expected);
        if nopad {
            enc = enc.arg("-nopad");
        }
        let run = enc.run().ok();
        assert_eq!(
            ciphertext,
            read_output(&expected, &run),
            "{mechanism}: the token's ciphertext differs from openssl's"
        );
        let back = fx.path(&format!("{mechanism}.back"));
        let run = fx
            .pkcs11_tool_user(&format!("pkcs11-tool --decrypt -m {mechanism}"))
            .args(["--decrypt", "--id", "a7", "-m", mechanism, "--iv", iv, "-i"])
            .arg(&ct)
            .arg("-o")
            .arg(&back)
            .run()
            .ok();
        assert_eq!(read_output(&back, &run), input, "{mechanism} round trip");
    }
    // The sensitive key of the keygen flow encrypts and decrypts too.
    aes_key(&fx).ok();
    let ct = fx.path("sensitive.ct");
    fx.pkcs11_tool_user("pkcs11-tool --encrypt (sensitive key)")
        .args([
            "--encrypt",
            "--id",
            "a6",
            "-m",
            "AES-CBC-PAD",
            "--iv",
            iv,
            "-i",
        ])
        .arg(&plain_path)
        .arg("-o")
        .arg(&ct)
        .run()
        .ok();
    let back = fx.path("sensitive.back");
    let run = fx
        .pkcs11_tool_user("pkcs11-tool --decrypt (sensitive key)")
        .args([
            "--decrypt",
            "--id",
            "a6",
            "-m",
            "AES-CBC-PAD",
            "--iv",
            iv,
            "-i",
        ])
        .arg(&ct)
        .arg("-o")
        .arg(&back)
        .run()
        .ok();
    assert_eq!(read_output(&back, &run), plain, "AES-CBC-PAD round trip");
}

/// `openssl pkeyutl -encrypt` with the RSA-2048 public key, then `pkcs11-tool --decrypt`.
fn rsa_decrypt_case(fx: &Fixture, mechanism: &str, openssl_opts: &[&str], p11_opts: &[&str]) {
    let pubkey = fx.public_key_der(RSA_2048);
    let secret: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(7)).collect();
    let plain = scratch(fx, &format!("{mechanism}.plain"), &secret);
    let ct = fx.path(&format!("{mechanism}.ct"));
    openssl(fx, &format!("openssl pkeyutl -encrypt ({mechanism})"))
        .args(["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey"])
        .arg(&pubkey)
        .args(openssl_opts)
        .arg("-in")
        .arg(&plain)
        .arg("-out")
        .arg(&ct)
        .run()
        .ok();
    let back = fx.path(&format!("{mechanism}.back"));
    let run = fx
        .pkcs11_tool_user(&format!("pkcs11-tool --decrypt -m {mechanism}"))
        .args(["--decrypt", "--id", RSA_2048.id, "-m", mechanism])
        .args(p11_opts)
        .arg("-i")
        .arg(&ct)
        .arg("-o")
        .arg(&back)
        .run()
        .ok();
    assert_eq!(read_output(&back, &run), secret, "{mechanism} decryption");
}

#[test]
fn pkcs11_tool_decrypt_rsa_oaep_sha256() {
    let test = "pkcs11_tool_decrypt_rsa_oaep_sha256";
    let Some(fx) = guard(test, &["openssl"]) else {
        return;
    };
    if !fx.require(test, &[(Mech::RSA_PKCS_OAEP, "decrypt")]) {
        return;
    }
    rsa_decrypt_case(
        &fx,
        "RSA-PKCS-OAEP",
        &[
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha256",
            "-pkeyopt",
            "rsa_mgf1_md:sha256",
        ],
        &["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"],
    );
}

#[test]
fn pkcs11_tool_decrypt_rsa_pkcs1() {
    let test = "pkcs11_tool_decrypt_rsa_pkcs1";
    let Some(fx) = guard(test, &["openssl"]) else {
        return;
    };
    if !fx.require(test, &[(Mech::RSA_PKCS, "decrypt")]) {
        return;
    }
    rsa_decrypt_case(&fx, "RSA-PKCS", &[], &[]);
}

// ---- wrap / unwrap ----

/// Wraps a known extractable AES key under a known key-encryption key with `pkcs11-tool
/// --wrap`, checks the bytes against `openssl enc -id-aes256-wrap(-pad)` (RFC 3394 / 5649 are
/// deterministic), unwraps them with `pkcs11-tool --unwrap` and checks the new key's value.
fn wrap_unwrap_case(fx: &Fixture, mechanism: Mech, openssl_cipher: &str, ids: [&str; 3]) {
    let tag = mechanism.name.to_lowercase();
    let kek = clear_aes_key(fx, &format!("iop-kek-{tag}"), ids[0], &["--usage-wrap"]);
    let target = clear_aes_key(fx, &format!("iop-wrapped-{tag}"), ids[1], &[]);
    let mech_arg = format!("0x{:X}", mechanism.code);
    let wrapped = fx.path(&format!("{tag}.wrapped"));
    let run = fx
        .pkcs11_tool_user(&format!("pkcs11-tool --wrap -m {}", mechanism.name))
        .args(["--wrap", "-m", &mech_arg, "--id", ids[0]])
        .args(["--application-id", ids[1], "-o"])
        .arg(&wrapped)
        .run()
        .ok();
    let wrapped_bytes = read_output(&wrapped, &run);
    let target_path = scratch(fx, &format!("{tag}.target"), &target);
    let expected = fx.path(&format!("{tag}.openssl.wrapped"));
    let iv = if openssl_cipher.ends_with("-pad") {
        "A65959A6"
    } else {
        "A6A6A6A6A6A6A6A6"
    };
    let run = openssl(fx, &format!("openssl enc -{openssl_cipher}"))
        .args([
            "enc",
            &format!("-{openssl_cipher}"),
            "-K",
            &hex::encode(&kek),
        ])
        .args(["-iv", iv, "-in"])
        .arg(&target_path)
        .arg("-out")
        .arg(&expected)
        .run()
        .ok();
    assert_eq!(
        wrapped_bytes,
        read_output(&expected, &run),
        "{}: the token's wrapped key differs from openssl's",
        mechanism.ckm
    );

    let label = format!("iop-unwrapped-{tag}");
    fx.pkcs11_tool_user(&format!("pkcs11-tool --unwrap -m {}", mechanism.name))
        .args(["--unwrap", "-m", &mech_arg, "--id", ids[0], "-i"])
        .arg(&wrapped)
        .args(["--key-type", "AES:", "--extractable"])
        .args(["--application-id", ids[2], "--application-label", &label])
        .run()
        .ok();
    let listing = fx
        .pkcs11_tool_user("pkcs11-tool --list-objects (unwrapped)")
        .args(["--list-objects", "--type", "secrkey"])
        .run()
        .ok();
    let unwrapped = objects_matching(
        &listing.stdout,
        "Secret Key Object; AES",
        &format!("ID:         {}\n", ids[2]),
    );
    assert_eq!(unwrapped.len(), 1, "the unwrapped key\n{listing}");
    assert!(
        unwrapped[0].contains(&format!("label:      {label}")),
        "the unwrapped key's label\n{listing}"
    );
    // pkcs11-tool prints CKA_VALUE of a readable key: when the unwrap template left it
    // extractable, it must be the original key.
    if let Some(value) = unwrapped[0]
        .lines()
        .find_map(|l| l.trim().strip_prefix("VALUE:"))
    {
        assert_eq!(
            value.trim(),
            hex::encode(&target),
            "unwrapped key value\n{listing}"
        );
    }
}

#[test]
fn pkcs11_tool_wrap_unwrap_aes_key_wrap() {
    let test = "pkcs11_tool_wrap_unwrap_aes_key_wrap";
    let Some(fx) = guard(test, &["openssl"]) else {
        return;
    };
    if !fx.require(
        test,
        &[(Mech::AES_KEY_WRAP, "wrap"), (Mech::AES_KEY_WRAP, "unwrap")],
    ) {
        return;
    }
    wrap_unwrap_case(
        &fx,
        Mech::AES_KEY_WRAP,
        "id-aes256-wrap",
        ["b1", "b2", "b3"],
    );
}

#[test]
fn pkcs11_tool_wrap_unwrap_aes_key_wrap_pad() {
    let test = "pkcs11_tool_wrap_unwrap_aes_key_wrap_pad";
    let Some(fx) = guard(test, &["openssl"]) else {
        return;
    };
    if !fx.require(
        test,
        &[
            (Mech::AES_KEY_WRAP_PAD, "wrap"),
            (Mech::AES_KEY_WRAP_PAD, "unwrap"),
        ],
    ) {
        return;
    }
    wrap_unwrap_case(
        &fx,
        Mech::AES_KEY_WRAP_PAD,
        "id-aes256-wrap-pad",
        ["b4", "b5", "b6"],
    );
}

// ---- derive ----

#[test]
fn pkcs11_tool_derive_ecdh_p256() {
    let test = "pkcs11_tool_derive_ecdh_p256";
    let Some(fx) = guard(test, &["openssl"]) else {
        return;
    };
    if !fx.require(test, &[(Mech::ECDH1_DERIVE, "derive")]) {
        return;
    }
    let hsm_pub = fx.public_key_der(P256);
    // The peer: a software P-256 key.
    let peer = fx.path("ecdh-peer.pem");
    let peer_pub = fx.path("ecdh-peer.pub.der");
    openssl(&fx, "openssl genpkey (peer)")
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
    openssl(&fx, "openssl pkey -pubout (peer)")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&peer)
        .arg("-out")
        .arg(&peer_pub)
        .run()
        .ok();
    let expected = fx.path("ecdh.openssl.secret");
    let run = openssl(&fx, "openssl pkeyutl -derive (peer side)")
        .args(["pkeyutl", "-derive", "-inkey"])
        .arg(&peer)
        .args(["-peerform", "DER", "-peerkey"])
        .arg(&hsm_pub)
        .arg("-out")
        .arg(&expected)
        .run()
        .ok();
    let expected = read_output(&expected, &run);
    assert_eq!(expected.len(), 32);
    // The peer's point raw (pkcs11-tool's default) and DER-wrapped (--derive-pass-der):
    // clients hand in both forms.
    for (name, extra) in [("raw", &[][..]), ("der", &["--derive-pass-der"][..])] {
        let out = fx.path(&format!("ecdh.{name}.secret"));
        let run = fx
            .pkcs11_tool_user(&format!("pkcs11-tool --derive ECDH1-DERIVE ({name} point)"))
            .args(["--derive", "-m", "ECDH1-DERIVE", "--id", P256.id])
            .args(extra)
            .arg("-i")
            .arg(&peer_pub)
            .arg("-o")
            .arg(&out)
            .run()
            .ok();
        assert_eq!(
            read_output(&out, &run),
            expected,
            "ECDH secret ({name} point) differs from openssl's\n{run}"
        );
    }
}

// ---- certificate and data objects ----

#[test]
fn pkcs11_tool_write_read_delete_certificate() {
    let Some(fx) = guard("pkcs11_tool_write_read_delete_certificate", &["openssl"]) else {
        return;
    };
    // A certificate made in software: this flow is about storing it.
    let cert = fx.path("iop-cert.der");
    openssl(&fx, "openssl req -x509 (software key)")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout"])
        .arg(fx.path("iop-cert.key"))
        .args(["-subj", "/CN=interop-certificate", "-days", "2"])
        .args(["-outform", "DER", "-out"])
        .arg(&cert)
        .run()
        .ok();
    let der = fs::read(&cert).expect("certificate");
    fx.pkcs11_tool_user("pkcs11-tool --write-object --type cert")
        .arg("--write-object")
        .arg(&cert)
        .args(["--type", "cert", "--id", "c1", "--label", "iop-cert"])
        .run()
        .ok()
        .contains("Certificate Object; type = X.509 cert");
    let listing = fx
        .pkcs11_tool_user("pkcs11-tool --list-objects --type cert")
        .args(["--list-objects", "--type", "cert"])
        .run()
        .ok();
    let certs = objects_matching(&listing.stdout, "Certificate Object", "ID:         c1\n");
    assert_eq!(certs.len(), 1, "the certificate\n{listing}");
    for needle in [
        "label:      iop-cert",
        "subject:    DN: CN=interop-certificate",
    ] {
        assert!(certs[0].contains(needle), "lacks {needle:?}\n{listing}");
    }
    let back = fx.path("iop-cert.back.der");
    let run = fx
        .pkcs11_tool_user("pkcs11-tool --read-object --type cert")
        .args(["--read-object", "--type", "cert", "--id", "c1", "-o"])
        .arg(&back)
        .run()
        .ok();
    assert_eq!(read_output(&back, &run), der, "certificate read back");
    fx.pkcs11_tool_user("pkcs11-tool --delete-object --type cert")
        .args(["--delete-object", "--type", "cert", "--id", "c1"])
        .run()
        .ok();
    fx.pkcs11_tool_user("pkcs11-tool --list-objects after delete")
        .args(["--list-objects", "--type", "cert"])
        .run()
        .ok()
        .lacks("iop-cert");
    fx.pkcs11_tool_user("pkcs11-tool --read-object after delete")
        .args(["--read-object", "--type", "cert", "--id", "c1", "-o"])
        .arg(fx.path("iop-cert.gone.der"))
        .run()
        .failed();
}

#[test]
fn pkcs11_tool_write_read_delete_data() {
    let Some(fx) = guard("pkcs11_tool_write_read_delete_data", &[]) else {
        return;
    };
    let content: Vec<u8> = b"interop data object \x00\x01\x02 end".to_vec();
    let file = scratch(&fx, "iop-data.bin", &content);
    fx.pkcs11_tool_user("pkcs11-tool --write-object --type data")
        .arg("--write-object")
        .arg(&file)
        .args(["--type", "data", "--label", "iop-data"])
        .args(["--application-label", "hsm-interop"])
        .run()
        .ok()
        .contains("Created Data Object:");
    fx.pkcs11_tool_user("pkcs11-tool --list-objects --type data")
        .args(["--list-objects", "--type", "data"])
        .run()
        .ok()
        .contains("label:          'iop-data'")
        .contains("application:    'hsm-interop'");
    let back = fx.path("iop-data.back");
    let run = fx
        .pkcs11_tool_user("pkcs11-tool --read-object --type data")
        .args([
            "--read-object",
            "--type",
            "data",
            "--label",
            "iop-data",
            "-o",
        ])
        .arg(&back)
        .run()
        .ok();
    assert_eq!(read_output(&back, &run), content, "data object read back");
    fx.pkcs11_tool_user("pkcs11-tool --delete-object --type data")
        .args(["--delete-object", "--type", "data", "--label", "iop-data"])
        .run()
        .ok();
    fx.pkcs11_tool_user("pkcs11-tool --list-objects after delete")
        .args(["--list-objects", "--type", "data"])
        .run()
        .ok()
        .lacks("iop-data");
}

// ---- pkcs11-tool --test ----

#[test]
fn pkcs11_tool_test_login() {
    let test = "pkcs11_tool_test_login";
    let Some(fx) = guard(test, &[]) else {
        return;
    };
    // A user of its own: `--test` exercises every private key it sees, and the other tests
    // create and delete objects concurrently.
    let pin = fx.add_user("iop-p11test");
    for (args, what) in [
        (
            &["--keypairgen", "--key-type", "rsa:2048", "--id", "e1"][..],
            "RSA",
        ),
        (
            &["--keypairgen", "--key-type", "EC:prime256v1", "--id", "e2"][..],
            "EC",
        ),
        (
            &["--keygen", "--key-type", "AES:32", "--id", "e3"][..],
            "AES",
        ),
    ] {
        fx.pkcs11_tool(&format!("pkcs11-tool key for --test ({what})"))
            .args(["--login", "--pin", &pin])
            .args(args)
            .args(["--label", &format!("p11test-{what}")])
            .redact(&pin)
            .run()
            .ok();
    }
    let run = fx
        .pkcs11_tool("pkcs11-tool --test --login")
        .args(["--test", "--login", "--pin", &pin])
        .redact(&pin)
        .run();
    // pkcs11-tool 0.23 signs a SHA-1 DigestInfo with CKM_RSA_PKCS in its verify test. While
    // the token refuses SHA-1 signatures (CKM_SHA1_RSA_PKCS not advertised with CKF_SIGN) that
    // one error is expected and reported loudly, not hidden; any other error fails.
    let sha1_gap = "RSA-PKCS:   ERR: C_Sign() returned CKR_DATA_INVALID";
    // It reports errors in its output ("N errors") and exits 0 all the same.
    if run.output().contains(sha1_gap)
        && run.output().contains("1 errors")
        && !fx.mechanisms.has(Mech::SHA1_RSA_PKCS, "sign")
    {
        loud(&format!(
            "SKIPPED {test}: pkcs11-tool --test signs a SHA-1 DigestInfo with CKM_RSA_PKCS and \
             the token refuses SHA-1 signatures (CKR_DATA_INVALID; CKM_SHA1_RSA_PKCS is not \
             advertised with CKF_SIGN). --test passes once the token signs that DigestInfo. \
             Its only error:\n{run}"
        ));
        return;
    }
    run.ok().contains("No errors").lacks("ERR:");
}
