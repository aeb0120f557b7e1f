//! OpenSC's `pkcs11-tool`, an application we do not control, driving the module: list slots,
//! generate an EC key, sign, verify, list objects. `scripts/test.sh` installs it (package
//! `opensc`); without it this test says so loudly and passes.

use hsm_tests::{Cluster, TestDir, artifacts};
use std::path::Path;
use std::process::{Command, Output};

fn find_tool() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("pkcs11-tool"))
            .find(|p| p.is_file())
    })
}

fn run(tool: &Path, cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(tool)
        .arg("--module")
        .arg(&artifacts().module)
        .args(args)
        .env(
            hsm_proto::config::MODULE_CONFIG_ENV,
            cluster.module_config(),
        )
        .output()
        .expect("run pkcs11-tool")
}

#[track_caller]
fn ok(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pkcs11-tool {what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn pkcs11_tool_keypairgen_sign_verify_list() {
    let Some(tool) = find_tool() else {
        eprintln!(
            "\n!!!!! SKIPPED pkcs11_tool_keypairgen_sign_verify_list: pkcs11-tool is not \
             installed (apt-get install opensc, or run scripts/test.sh) !!!!!\n"
        );
        return;
    };
    let cluster = Cluster::start();
    let scratch = TestDir::new("pkcs11-tool");
    let pin = cluster.user_pin.clone();

    let slots = ok("--list-slots", &run(&tool, &cluster, &["--list-slots"]));
    assert!(slots.contains("Slot 0"), "{slots}");
    assert!(
        slots.contains("hsm-cluster"),
        "token label missing:\n{slots}"
    );

    let out = ok(
        "--keypairgen",
        &run(
            &tool,
            &cluster,
            &[
                "--login",
                "--pin",
                &pin,
                "--keypairgen",
                "--key-type",
                "EC:prime256v1",
                "--label",
                "k1",
                "--id",
                "01",
            ],
        ),
    );
    assert!(out.contains("k1"), "{out}");

    let data = scratch.path().join("digest.bin");
    let sig = scratch.path().join("sig.bin");
    std::fs::write(&data, hsm_tests::keys::sha256(b"signed by pkcs11-tool")).expect("write");
    let data_s = data.to_string_lossy().into_owned();
    let sig_s = sig.to_string_lossy().into_owned();
    ok(
        "--sign",
        &run(
            &tool,
            &cluster,
            &[
                "--login",
                "--pin",
                &pin,
                "--sign",
                "--mechanism",
                "ECDSA",
                "--label",
                "k1",
                "--input-file",
                &data_s,
                "--output-file",
                &sig_s,
            ],
        ),
    );
    let signature = std::fs::read(&sig).expect("signature file");
    assert_eq!(signature.len(), 64, "raw r || s");

    let verify = |sig_file: &str| {
        run(
            &tool,
            &cluster,
            &[
                "--login",
                "--pin",
                &pin,
                "--verify",
                "--mechanism",
                "ECDSA",
                "--label",
                "k1",
                "--input-file",
                &data_s,
                "--signature-file",
                sig_file,
            ],
        )
    };
    let out = ok("--verify", &verify(&sig_s));
    assert!(out.contains("Signature is valid"), "{out}");

    let mut tampered = signature.clone();
    tampered[7] ^= 0x01;
    let bad = scratch.path().join("bad.bin");
    std::fs::write(&bad, &tampered).expect("write");
    let out = verify(&bad.to_string_lossy());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Signature is valid"),
        "a tampered signature verified:\n{text}"
    );
    assert!(
        text.contains("Invalid signature") || !out.status.success(),
        "{text}"
    );

    let objects = ok(
        "--list-objects",
        &run(
            &tool,
            &cluster,
            &["--login", "--pin", &pin, "--list-objects"],
        ),
    );
    assert!(objects.contains("label:      k1"), "{objects}");
    assert!(objects.contains("Private Key Object; EC"), "{objects}");
    assert!(objects.contains("Public Key Object; EC"), "{objects}");
}
