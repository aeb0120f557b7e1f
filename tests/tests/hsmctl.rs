//! The operator CLI against real nodes: status sealed and unsealed, unseal, user creation,
//! refusals, and the one-command development cluster.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectClass;
use hsm_tests::cluster::{assert_success, read_env_file};
use hsm_tests::keys::{by_label, ec_pair, find, sha256};
use hsm_tests::{Cluster, TestDir, Token, artifacts, free_port, is_child, run_in_own_process};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hsmctl_status_unseal_users_and_refusals() {
    let mut cluster = Cluster::start();
    let dir = cluster.dir.to_string_lossy().into_owned();
    let status = |c: &Cluster| c.hsmctl(&["status", "--dir", &dir], &[]);

    let out = status(&cluster);
    assert_success("hsmctl status", &out);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("node:     node1"), "{stdout}");
    assert!(stdout.contains("cluster:  test-cluster"), "{stdout}");
    assert!(stdout.contains("state:    unsealed"), "{stdout}");
    assert!(stdout.contains("development key file"), "{stdout}");

    cluster.restart_sealed();
    let out = status(&cluster);
    assert_success("hsmctl status (sealed)", &out);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("state:    SEALED"), "{stdout}");

    // A wrong key file is refused and the node stays sealed.
    let wrong = cluster.dir.join("wrong.key");
    std::fs::write(&wrong, [0x42u8; 32]).expect("write");
    let out = cluster.hsmctl(
        &[
            "unseal",
            "--dir",
            &dir,
            "--dev-key-file",
            &wrong.to_string_lossy(),
        ],
        &[],
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "a wrong key unsealed the node");
    assert!(stderr.contains("hsmctl: error:"), "{stderr}");
    let (stdout, _) = text(&status(&cluster));
    assert!(stdout.contains("SEALED"), "{stdout}");

    // A development node without its key file: told what to pass.
    let out = cluster.hsmctl(&["unseal", "--dir", &dir], &[]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("--dev-key-file"), "{}", text(&out).1);

    cluster.unseal();
    let key = cluster.dir.join("dev.key").to_string_lossy().into_owned();
    let out = cluster.hsmctl(&["unseal", "--dir", &dir, "--dev-key-file", &key], &[]);
    assert_success("second unseal", &out);
    assert!(text(&out).0.contains("already unsealed"));

    // User creation: a wrong admin password is refused, and no password is ever printed.
    let out = cluster.hsmctl(
        &["user", "create", "bob", "--dir", &dir],
        &[
            ("HSM_SO_PIN", "admin:not-the-password-1"),
            ("HSM_NEW_USER_PASSWORD", "bob-password-2"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "wrong admin password accepted");
    assert!(stderr.contains("CKR_PIN_INCORRECT"), "{stderr}");
    for secret in ["not-the-password-1", "bob-password-2"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "password printed"
        );
    }
    // With the right one, bob is created; twice is refused.
    cluster.create_user("bob", "bob-password-2");
    let out = cluster.hsmctl(
        &["user", "create", "bob", "--dir", &dir],
        &[
            ("HSM_SO_PIN", cluster.so_pin.as_str()),
            ("HSM_NEW_USER_PASSWORD", "bob-password-3"),
        ],
    );
    assert!(!out.status.success(), "a user was created twice");
    // No prompt possible and no variable: a clear error, not a hang.
    let out = cluster.hsmctl(&["user", "create", "carol", "--dir", &dir], &[]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("HSM_SO_PIN"), "{}", text(&out).1);

    // init refuses to overwrite an initialized directory.
    let out = cluster.hsmctl(&["init", "--dev", "--dir", &dir], &[]);
    assert!(!out.status.success(), "init overwrote a cluster");
    assert!(
        text(&out).1.contains("already initialized"),
        "{}",
        text(&out).1
    );

    // A stopped node: status fails with a clear message.
    cluster.stop_daemon();
    let out = status(&cluster);
    assert!(!out.status.success(), "status of a stopped node succeeded");
    assert!(text(&out).1.contains("cannot reach"), "{}", text(&out).1);
}

const DEV_TEST: &str = "hsmctl_dev_runs_a_working_cluster";
const RUN_ENV: &str = "HSM_TESTS_DEV_RUN";

/// Waits for `pid` to be gone.
fn wait_gone(pid: i32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while signal::kill(Pid::from_raw(pid), None).is_ok() {
        // A zombie still answers kill(0) until reaped; /proc says which it is.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.split(' ').nth(2) == Some("Z") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) is still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `hsmctl dev` until it is ready, lets `use_it` work with its environment file, then
/// stops it with SIGTERM. Returns the environment and its whole stdout.
fn run_dev(
    dir: &Path,
    port: u16,
    scratch: &Path,
    run: u32,
    use_it: impl FnOnce(&BTreeMap<String, String>),
) -> (BTreeMap<String, String>, String) {
    let stdout_path = scratch.join(format!("dev{run}.stdout"));
    let stderr_path = scratch.join(format!("dev{run}.stderr"));
    let mut child = Command::new(&artifacts().hsmctl)
        .arg("dev")
        .arg("--no-build")
        .arg("--dir")
        .arg(dir)
        .args(["--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn hsmctl dev");
    let outputs = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&stdout_path).unwrap_or_default(),
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while !std::fs::read_to_string(&stdout_path)
        .unwrap_or_default()
        .contains("The development cluster is running")
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("hsmctl dev exited early ({status}):\n{}", outputs());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hsmctl dev was not ready in time:\n{}", outputs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let env = read_env_file(&dir.join("env"));
    use_it(&env);

    let pid = i32::try_from(child.id()).expect("pid");
    signal::kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM hsmctl dev");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "hsmctl dev ignored SIGTERM:\n{}",
            outputs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    assert!(
        status.success(),
        "hsmctl dev exited with {status}:\n{}",
        outputs()
    );
    assert!(
        stdout.contains("SIGTERM: stopping hsm-daemon"),
        "{}",
        outputs()
    );
    assert!(stdout.contains("hsm-daemon stopped"), "{}", outputs());
    let daemon_pid: i32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("hsm-daemon (pid "))
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in:\n{stdout}"));
    wait_gone(daemon_pid, "the dev daemon");
    (env, stdout)
}

#[test]
fn hsmctl_dev_runs_a_working_cluster() {
    if is_child(DEV_TEST) {
        // Loaded with exactly what `source D/env` gives a shell.
        let pin = std::env::var("HSM_PIN").expect("HSM_PIN");
        let token = Token::load_with_pin(&pin);
        let s = token.user_session();
        let digest = sha256(b"dev");
        if std::env::var(RUN_ENV).as_deref() == Ok("1") {
            let pair = ec_pair(&s, true, "dev-key", b"dev");
            let sig = s
                .sign(&Mechanism::Ecdsa, pair.private, &digest)
                .expect("sign");
            s.verify(&Mechanism::Ecdsa, pair.public, &digest, &sig)
                .expect("verify");
        } else {
            // The second run reuses the first run's data.
            let private = find(&s, &by_label("dev-key", Some(ObjectClass::PRIVATE_KEY)));
            assert_eq!(private.len(), 1, "the key from the first run is gone");
            s.sign(&Mechanism::Ecdsa, private[0], &digest)
                .expect("sign with the first run's key");
        }
        return;
    }

    let scratch = TestDir::new("dev");
    let dir = scratch.path().join("hsm-dev");
    let port = free_port();
    let use_it = |run: u32| {
        let scratch = scratch.path().to_path_buf();
        move |env: &BTreeMap<String, String>| {
            run_in_own_process(
                DEV_TEST,
                &[
                    ("HSM_PKCS11_CONF", env["HSM_PKCS11_CONF"].clone().into()),
                    ("HSM_PIN", env["HSM_PIN"].clone().into()),
                    (RUN_ENV, run.to_string().into()),
                ],
                &scratch,
                None,
            );
        }
    };

    let (env, stdout) = run_dev(&dir, port, scratch.path(), 1, use_it(1));
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "HSM_PIN",
            "HSM_PKCS11_CONF",
            "HSM_PKCS11_MODULE",
            "HSM_SO_PIN"
        ]
    );
    assert_eq!(Path::new(&env["HSM_PKCS11_MODULE"]), artifacts().module);
    assert_eq!(Path::new(&env["HSM_PKCS11_CONF"]), dir.join("pkcs11.toml"));
    assert!(env["HSM_PIN"].starts_with("alice:"));
    assert!(env["HSM_SO_PIN"].starts_with("admin:"));
    for expected in [
        "DEVELOPMENT CLUSTER",
        &format!("source {}", dir.join("env").display()),
        "pkcs11-tool --module \"$HSM_PKCS11_MODULE\" --login --pin \"$HSM_PIN\" --list-objects",
        "--keypairgen --key-type EC:prime256v1",
        "state:    unsealed",
        "created crypto user \"alice\"",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }

    // Again: same directory, same passwords, same keys, no new user.
    let (env2, stdout2) = run_dev(&dir, port, scratch.path(), 2, use_it(2));
    assert_eq!(env2, env, "a second run changed the environment");
    assert!(
        stdout2.contains("Reusing the development cluster"),
        "{stdout2}"
    );
    assert!(!stdout2.contains("created crypto user"), "{stdout2}");
}

/// Kills a daemon started by hand when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn hsmctl_init_with_a_passphrase() {
    let art = artifacts();
    let scratch = TestDir::new("passphrase");
    let dir = scratch.path().join("prod");
    let dir_s = dir.to_string_lossy().into_owned();
    let port = free_port();
    let hsmctl = |args: &[&str], env: &[(&str, &str)], stdin: Option<&str>| {
        let mut cmd = Command::new(&art.hsmctl);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run hsmctl");
        {
            use std::io::Write;
            let mut input = child.stdin.take().expect("stdin");
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).expect("write stdin");
            }
        }
        child.wait_with_output().expect("wait hsmctl")
    };

    let out = hsmctl(
        &[
            "init",
            "--dir",
            &dir_s,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cluster-name",
            "prod",
            "--daemon-bin",
            &art.daemon.to_string_lossy(),
        ],
        &[
            ("HSM_UNSEAL_PASSPHRASE", "correct horse battery staple"),
            ("HSM_ADMIN_PASSWORD", "admin-pw-4"),
        ],
        None,
    );
    assert_success("hsmctl init", &out);
    let (stdout, stderr) = text(&out);
    for secret in ["correct horse", "admin-pw-4"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
    assert!(!dir.join("dev.key").exists() && !dir.join("env").exists());
    // Private keys are readable by their owner only.
    for key in [
        "ca.key",
        "node1/node.key",
        "clients/admin.key",
        "clients/app.key",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(key))
            .expect(key)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }

    let log = File::create(scratch.path().join("daemon.log")).expect("log");
    let _daemon = KillOnDrop(
        Command::new(&art.daemon)
            .arg("run")
            .arg("--config")
            .arg(dir.join("node1/node.toml"))
            .stderr(log)
            .spawn()
            .expect("spawn daemon"),
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    while !std::fs::read_to_string(scratch.path().join("daemon.log"))
        .unwrap_or_default()
        .contains("listening on")
    {
        assert!(Instant::now() < deadline, "daemon did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = hsmctl(&["status", "--dir", &dir_s], &[], None);
    assert!(
        text(&out).0.contains("state:    SEALED"),
        "{}",
        text(&out).0
    );
    assert!(!text(&out).0.contains("development"), "{}", text(&out).0);

    // The passphrase from the environment, a wrong one refused, a right one from stdin.
    let out = hsmctl(
        &["unseal", "--dir", &dir_s],
        &[("HSM_UNSEAL_PASSPHRASE", "wrong horse")],
        None,
    );
    assert!(
        !out.status.success(),
        "a wrong passphrase unsealed the node"
    );
    let out = hsmctl(
        &["unseal", "--dir", &dir_s],
        &[],
        Some("correct horse battery staple\n"),
    );
    assert_success("hsmctl unseal (stdin)", &out);
    assert!(text(&out).0.contains("unsealed"));

    let config = dir.join("admin.toml").to_string_lossy().into_owned();
    let out = hsmctl(
        &["user", "create", "dave", "--config", &config],
        &[
            ("HSM_SO_PIN", "admin:admin-pw-4"),
            ("HSM_NEW_USER_PASSWORD", "dave-pw-5"),
        ],
        None,
    );
    assert_success("hsmctl user create", &out);
    let out = hsmctl(&["status", "--config", &config], &[], None);
    assert!(
        text(&out).0.contains("state:    unsealed"),
        "{}",
        text(&out).0
    );
}
