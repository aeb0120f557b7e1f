//! One process per PKCS#11 test.
//!
//! The module reads `$HSM_PKCS11_CONF` in `C_Initialize`, and a process loads it once, so two
//! tests with two clusters cannot share a process. Each such test therefore re-runs this
//! test binary for itself alone (`<exe> <name> --exact`), with `HSM_PKCS11_CONF` set for the
//! child; the child runs the body. The parent waits, shows the child's output, and fails if
//! the child did.

use crate::build::{SKIP_BUILD_ENV, artifacts};
use crate::cluster::{CLUSTER_DIR_ENV, Cluster, TestDir, tail};
use crate::multi::{MultiCluster, pinned_config_path};
use crate::token::Token;
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in a child: the name of the one test it runs.
pub const CHILD_ENV: &str = "HSM_TESTS_CHILD";

/// A hang guard, not a performance bound: generous enough for RSA-4096 generation on a busy
/// two-core machine.
const CHILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Whether this process is the child running test `name`.
///
/// # Panics
/// If this is a child for another test (which `--exact` rules out).
pub fn is_child(name: &str) -> bool {
    match std::env::var(CHILD_ENV) {
        Ok(child) => {
            assert_eq!(child, name, "child process ran the wrong test");
            true
        }
        Err(_) => false,
    }
}

/// Runs test `name` again in a child process of this test binary with extra environment
/// variables, and fails if it fails. `scratch` receives the child's output files; a
/// `daemon.pid` under `cluster_dir` is killed if the child hangs.
///
/// # Panics
/// If the child fails, hangs or does not run the test.
pub fn run_in_own_process(
    name: &str,
    env: &[(&str, OsString)],
    scratch: &Path,
    cluster_dir: Option<&Path>,
) {
    let art = artifacts();
    let stdout_path = scratch.join(format!("{name}.stdout"));
    let stderr_path = scratch.join(format!("{name}.stderr"));
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env(SKIP_BUILD_ENV, "1")
        .current_dir(&art.workspace)
        .stdout(File::create(&stdout_path).expect("create stdout file"))
        .stderr(File::create(&stderr_path).expect("create stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn the test's own process");
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // Its daemons would outlive it (`daemon.pid` has one pid a line).
            if let Some(pids) =
                cluster_dir.and_then(|d| fs::read_to_string(d.join("daemon.pid")).ok())
            {
                for pid in pids.split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    eprintln!("==== {name}: output of its own process ====\n{stdout}\n{stderr}\n====");
    let Some(status) = status else {
        panic!(
            "{name} did not finish within {}s; daemon log:\n{}",
            CHILD_TIMEOUT.as_secs(),
            cluster_dir.map_or_else(String::new, |d| tail(&d.join("daemon.log"), 40))
        );
    };
    assert!(
        status.success() && stdout.contains(&format!("test {name} ... ok")),
        "{name} failed in its own process ({status}); its output is above"
    );
}

/// Runs `body` in a process of its own with a fresh cluster and the module loaded for it with
/// the application certificate (`pkcs11.toml`). `name` must be the name of the calling
/// `#[test]` function.
pub fn isolated(name: &str, body: impl FnOnce(&mut Cluster, Token)) {
    isolated_with(name, "pkcs11.toml", body);
}

/// As [`isolated`], with the module loaded with the admin certificate (`admin.toml`): for
/// tests of admin requests such as `C_InitPIN`, which the node serves to admin certificates
/// only.
pub fn isolated_as_admin(name: &str, body: impl FnOnce(&mut Cluster, Token)) {
    isolated_with(name, "admin.toml", body);
}

fn isolated_with(name: &str, config_file: &str, body: impl FnOnce(&mut Cluster, Token)) {
    if is_child(name) {
        let mut cluster = Cluster::start();
        let token = Token::load(&cluster);
        body(&mut cluster, token);
        return;
    }
    let root = TestDir::new(name);
    let cluster_dir = root.path().join("cluster");
    run_in_own_process(
        name,
        &[
            (CLUSTER_DIR_ENV, cluster_dir.clone().into_os_string()),
            (
                hsm_proto::config::MODULE_CONFIG_ENV,
                cluster_dir.join(config_file).into_os_string(),
            ),
        ],
        root.path(),
        Some(&cluster_dir),
    );
}

/// Runs `body` in a process of its own with a fresh cluster of `nodes` nodes
/// ([`MultiCluster::start`]) and the module loaded for it: with every node
/// (`pinned: None`, `D/pkcs11.toml`), or pinned to node index `i` (`Some(i)`,
/// [`MultiCluster::module_config_for`]). `name` must be the name of the calling `#[test]`.
pub fn isolated_cluster(
    name: &str,
    nodes: usize,
    pinned: Option<usize>,
    body: impl FnOnce(&mut MultiCluster, Token),
) {
    let config_path = |dir: &Path| match pinned {
        Some(i) => pinned_config_path(dir, &format!("node{}", i + 1)),
        None => dir.join("pkcs11.toml"),
    };
    if is_child(name) {
        let mut cluster = MultiCluster::start(nodes);
        if let Some(i) = pinned {
            cluster.module_config_for(i);
        }
        let conf = std::env::var_os(hsm_proto::config::MODULE_CONFIG_ENV)
            .expect("HSM_PKCS11_CONF must be set (use hsm_tests::isolated_cluster)");
        assert_eq!(
            Path::new(&conf),
            config_path(&cluster.dir),
            "HSM_PKCS11_CONF points at another cluster"
        );
        let token = Token::load_with_pin(&cluster.user_pin);
        body(&mut cluster, token);
        return;
    }
    let root = TestDir::new(name);
    let cluster_dir = root.path().join("cluster");
    run_in_own_process(
        name,
        &[
            (CLUSTER_DIR_ENV, cluster_dir.clone().into_os_string()),
            (
                hsm_proto::config::MODULE_CONFIG_ENV,
                config_path(&cluster_dir).into_os_string(),
            ),
        ],
        root.path(),
        Some(&cluster_dir),
    );
}
