//! The operator CLI against real nodes: status sealed and unsealed, unseal, user creation,
//! refusals, and the one-command development cluster with one node and with three.

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

/// The row of the status table for node `name`, split into its columns (NAME ID ADDRESS
/// STATE RAFT TERM LAST-LOG APPLIED LAG REQUESTS LEADER).
fn status_row<'a>(stdout: &'a str, name: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name) && cols.len() == 11)
        .unwrap_or_else(|| panic!("no status row for {name} in:\n{stdout}"))
}

/// A port `p` such that `p..p + count` were all free a moment ago on 127.0.0.1.
fn free_port_run(count: u16) -> u16 {
    for _ in 0..100 {
        let base = free_port();
        if base.checked_add(count).is_none() {
            continue;
        }
        let all_free =
            (base..base + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no run of {count} free ports");
}

#[test]
fn hsmctl_status_unseal_users_and_refusals() {
    let mut cluster = Cluster::start();
    let dir = cluster.dir.to_string_lossy().into_owned();
    let status = |c: &Cluster| c.hsmctl(&["status", "--dir", &dir], &[]);

    let out = status(&cluster);
    assert_success("hsmctl status", &out);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("cluster: hsm-cluster"), "{stdout}");
    assert!(stdout.contains("leader:  node1"), "{stdout}");
    assert!(stdout.contains("development key file"), "{stdout}");
    let row = status_row(&stdout, "node1");
    assert_eq!(row[2], cluster.addr(), "{stdout}");
    // A one-node cluster: its own leader, nothing to catch up.
    assert_eq!(
        (row[3], row[4], row[8], row[10]),
        ("unsealed", "leader", "0", "node1")
    );

    cluster.restart_sealed();
    let out = status(&cluster);
    assert_success("hsmctl status (sealed)", &out);
    let (stdout, _) = text(&out);
    assert_eq!(status_row(&stdout, "node1")[3], "sealed", "{stdout}");
    assert!(stdout.contains("node1 is SEALED"), "{stdout}");

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
    assert!(stdout.contains("node1 is SEALED"), "{stdout}");

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

/// The daemon pids `hsmctl dev` printed, by node name (`nodeK: hsm-daemon (pid N) listens`).
fn dev_pids(stdout: &str) -> BTreeMap<String, i32> {
    stdout
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(": hsm-daemon (pid ")?;
            let pid = rest.split(')').next()?.parse().ok()?;
            Some((name.to_owned(), pid))
        })
        .collect()
}

/// Runs `hsmctl dev --nodes <nodes>` until it is ready, lets `use_it` work with its
/// environment file (and its stdout file, to watch what it prints), then stops it with
/// SIGTERM. Returns the environment and its whole stdout.
fn run_dev(
    dir: &Path,
    (port, nodes): (u16, u16),
    scratch: &Path,
    run: u32,
    use_it: impl FnOnce(&BTreeMap<String, String>, &Path),
) -> (BTreeMap<String, String>, String) {
    let stdout_path = scratch.join(format!("dev{run}.stdout"));
    let stderr_path = scratch.join(format!("dev{run}.stderr"));
    let mut child = Command::new(&artifacts().hsmctl)
        .arg("dev")
        .arg("--no-build")
        .arg("--dir")
        .arg(dir)
        .args(["--port", &port.to_string()])
        .args(["--nodes", &nodes.to_string()])
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
    let deadline = Instant::now() + Duration::from_secs(600);
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
    use_it(&env, &stdout_path);

    let pid = i32::try_from(child.id()).expect("pid");
    signal::kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM hsmctl dev");
    let deadline = Instant::now() + Duration::from_secs(120);
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
        stdout.contains("SIGTERM: stopping hsm-daemon on every node"),
        "{}",
        outputs()
    );
    let pids = dev_pids(&stdout);
    assert_eq!(pids.len(), usize::from(nodes), "{}", outputs());
    for (name, pid) in pids {
        assert!(
            stdout.contains(&format!("{name}: hsm-daemon stopped")),
            "{}",
            outputs()
        );
        wait_gone(pid, &format!("the dev daemon of {name}"));
    }
    (env, stdout)
}

/// The PKCS#11 half of the dev tests, in a process of its own: run 1 makes a key and signs,
/// run 2 (after a restart of `hsmctl dev`) finds the key and signs with it.
fn dev_token_check() {
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
}

/// Runs [`dev_token_check`] as test `name` in its own process, with the dev environment.
fn use_token(name: &str, scratch: &Path, env: &BTreeMap<String, String>, run: u32) {
    run_in_own_process(
        name,
        &[
            ("HSM_PKCS11_CONF", env["HSM_PKCS11_CONF"].clone().into()),
            ("HSM_PIN", env["HSM_PIN"].clone().into()),
            (RUN_ENV, run.to_string().into()),
        ],
        scratch,
        None,
    );
}

#[test]
fn hsmctl_dev_runs_a_working_cluster() {
    if is_child(DEV_TEST) {
        dev_token_check();
        return;
    }

    let scratch = TestDir::new("dev");
    let dir = scratch.path().join("hsm-dev");
    let port = free_port_run(2);
    let use_it = |run: u32| {
        let scratch = scratch.path().to_path_buf();
        move |env: &BTreeMap<String, String>, _: &Path| use_token(DEV_TEST, &scratch, env, run)
    };

    let (env, stdout) = run_dev(&dir, (port, 1), scratch.path(), 1, use_it(1));
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
        "created crypto user \"alice\"",
        "The development cluster is running (1 node)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let row = status_row(&stdout, "node1");
    assert_eq!((row[3], row[4]), ("unsealed", "leader"), "{stdout}");

    // Again: same directory, same passwords, same keys, no new user.
    let (env2, stdout2) = run_dev(&dir, (port, 1), scratch.path(), 2, use_it(2));
    assert_eq!(env2, env, "a second run changed the environment");
    assert!(
        stdout2.contains("Reusing the development cluster"),
        "{stdout2}"
    );
    assert!(!stdout2.contains("created crypto user"), "{stdout2}");

    // The nodes' addresses are part of the membership: another port is refused.
    let out = Command::new(&artifacts().hsmctl)
        .args(["dev", "--no-build", "--nodes", "1", "--port"])
        .arg((port + 2).to_string())
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run hsmctl dev");
    assert!(!out.status.success(), "hsmctl dev moved a cluster");
    assert!(text(&out).1.contains("cannot move"), "{}", text(&out).1);
}

const DEV3_TEST: &str = "hsmctl_dev_runs_three_nodes_and_survives_one_dying";

/// `hsmctl status --dir D --json`, parsed.
fn status_json(dir: &Path) -> serde_json::Value {
    let out = Command::new(&artifacts().hsmctl)
        .args(["status", "--json", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run hsmctl status");
    assert_success("hsmctl status --json", &out);
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The raft states of the nodes in a status document, sorted (`unreachable` for nodes that
/// did not answer).
fn raft_states(doc: &serde_json::Value) -> Vec<String> {
    let mut states: Vec<String> = doc["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            n["raft_state"]
                .as_str()
                .unwrap_or(n["state"].as_str().unwrap_or("?"))
                .to_owned()
        })
        .collect();
    states.sort();
    states
}

/// Waits until the status shows one leader and `followers` followers (a fresh election may
/// be under way).
fn wait_for_states(dir: &Path, expected: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let doc = status_json(dir);
        if raft_states(&doc) == expected {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "expected raft states {expected:?}, got:\n{doc:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hsmctl_dev_runs_three_nodes_and_survives_one_dying() {
    if is_child(DEV3_TEST) {
        dev_token_check();
        return;
    }
    let scratch = TestDir::new("dev3");
    let dir = scratch.path().join("hsm-dev");
    let port = free_port_run(6);
    let scratch_path = scratch.path().to_path_buf();
    let dir2 = dir.clone();
    let (env, stdout) = run_dev(&dir, (port, 3), scratch.path(), 1, |env, stdout_path| {
        let doc = wait_for_states(&dir2, &["follower", "follower", "leader"]);
        // Node i on BASE+2(i-1); every node unsealed, in one cluster, all caught up.
        for (i, node) in doc["nodes"].as_array().expect("nodes").iter().enumerate() {
            assert_eq!(node["name"], format!("node{}", i + 1), "{doc:#}");
            assert_eq!(
                node["address"],
                format!("127.0.0.1:{}", port + 2 * u16::try_from(i).expect("i")),
                "{doc:#}"
            );
            assert_eq!(node["state"], "unsealed", "{doc:#}");
            assert_eq!(node["status"]["cluster_id"], doc["cluster_id"], "{doc:#}");
        }
        // Every node's client configuration lists all three.
        for file in ["pkcs11.toml", "admin.toml"] {
            let config = hsm_proto::config::ModuleConfig::load(&dir2.join(file)).expect(file);
            assert_eq!(config.nodes.len(), 3, "{file}: {:?}", config.nodes);
        }
        use_token(DEV3_TEST, &scratch_path, env, 1);

        // kill -9 one follower: reported once, the others keep serving.
        let leader = doc["leader_name"].as_str().expect("a leader").to_owned();
        let pids = dev_pids(&std::fs::read_to_string(stdout_path).expect("stdout"));
        let (victim, pid) = pids
            .iter()
            .find(|(name, _)| **name != leader)
            .map(|(n, p)| (n.clone(), *p))
            .expect("a follower");
        signal::kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
        let died = format!("node {victim} (pid {pid}) died: ");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::fs::read_to_string(stdout_path).unwrap_or_default();
            if out.contains(&died) {
                assert!(out.contains("the others keep running"), "{out}");
                break;
            }
            assert!(Instant::now() < deadline, "no death notice in:\n{out}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let doc = wait_for_states(&dir2, &["follower", "leader", "unreachable"]);
        let down = doc["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["state"] == "unreachable")
            .expect("the killed node");
        assert_eq!(down["name"], victim.as_str(), "{doc:#}");
    });
    assert!(
        stdout.contains("The development cluster is running (3 nodes)"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches(" died: ").count(),
        1,
        "one death, reported once:\n{stdout}"
    );

    // A second run starts every node on its data: no init, no join, the key still there.
    let dir3 = dir.clone();
    let scratch_path = scratch.path().to_path_buf();
    let (env2, stdout2) = run_dev(&dir, (port, 3), scratch.path(), 2, |env, _| {
        wait_for_states(&dir3, &["follower", "follower", "leader"]);
        use_token(DEV3_TEST, &scratch_path, env, 2);
    });
    assert_eq!(env2, env);
    assert!(
        stdout2.contains("Reusing the development cluster"),
        "{stdout2}"
    );
    for absent in ["Initialized", "added (client port", "joining the cluster"] {
        assert!(!stdout2.contains(absent), "{absent:?} in:\n{stdout2}");
    }
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
            // Its own free port: port + 1 (the default) may belong to another test.
            "--cluster-listen",
            &format!("127.0.0.1:{}", free_port()),
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
    assert!(text(&out).0.contains("node1 is SEALED"), "{}", text(&out).0);
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
    assert_eq!(
        status_row(&text(&out).0, "node1")[3],
        "unsealed",
        "{}",
        text(&out).0
    );
}
