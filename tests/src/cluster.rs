//! One test cluster of one node: a cluster directory made by `hsmctl init --dev`, a real
//! `hsm-daemon run` child process on its own ports, unsealed (a one-node consensus), with the
//! crypto user `alice`. Several nodes: [`crate::multi::MultiCluster`].

use crate::build::artifacts;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Set by a parent test process: the directory its child should make its cluster in.
pub const CLUSTER_DIR_ENV: &str = "HSM_TESTS_CLUSTER_DIR";
/// Set to keep every test directory (they are always kept when a test fails).
pub const KEEP_ENV: &str = "HSM_TESTS_KEEP";
/// The line the daemon prints once it accepts connections.
pub const LISTENING: &str = "hsm-daemon: listening on ";

/// How long a daemon may take to listen: it opens its store; on a loaded two-core machine
/// running several clusters that can take a while. Not a performance assertion.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The node name `hsmctl init` uses by default.
pub const NODE: &str = "node1";

/// A temporary directory, removed on drop unless the test failed or `HSM_TESTS_KEEP` is set.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// A fresh, empty directory whose name starts with `name`.
    pub fn new(name: &str) -> TestDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join("hsm-tests")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test directory");
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os(KEEP_ENV).is_some() {
            eprintln!("test directory kept: {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Reads the `export NAME='value'` lines of a `D/env` file.
pub fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .map_or_else(|| v.to_owned(), |v| v.replace(r"'\''", "'"));
            (k.trim().to_owned(), v)
        })
        .collect()
}

/// The last `n` lines of a file (empty if it does not exist).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Asserts a command succeeded, showing its output otherwise.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends SIGTERM to a daemon and waits for it to exit; kills it (and says so) when it does not
/// within the stop timeout.
///
/// # Errors
/// Why it had to be killed.
pub fn stop_child(mut child: Child) -> Result<(), String> {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "did not exit within {}s of SIGTERM",
                STOP_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running test cluster of one node. Dropping it kills the daemon; when the test is failing
/// it prints the end of the daemon's and the module's logs first.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster directory.
    pub dir: PathBuf,
    /// The node's port on 127.0.0.1.
    pub port: u16,
    /// `alice:password`.
    pub user_pin: String,
    /// `admin:password`.
    pub so_pin: String,
    daemon: Option<Child>,
    _owned: Option<TestDir>,
}

impl Cluster {
    /// Makes and starts a cluster: in the directory a parent test process chose (see
    /// [`crate::isolated`]), else in a fresh temporary directory.
    pub fn start() -> Cluster {
        match std::env::var_os(CLUSTER_DIR_ENV) {
            Some(dir) => Cluster::start_in(PathBuf::from(dir), None),
            None => {
                let owned = TestDir::new("cluster");
                Cluster::start_in(owned.path().to_path_buf(), Some(owned))
            }
        }
    }

    /// Initializes a cluster in `dir` without starting its daemon.
    pub fn init_only(dir: &Path) -> (u16, BTreeMap<String, String>) {
        let art = artifacts();
        let port = free_port();
        let out = Command::new(&art.hsmctl)
            .arg("init")
            .arg("--dev")
            .arg("--dir")
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--cluster-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--cluster-name", "hsm-cluster"])
            .arg("--daemon-bin")
            .arg(&art.daemon)
            .stdin(Stdio::null())
            .output()
            .expect("run hsmctl init");
        assert_success("hsmctl init --dev", &out);
        (port, read_env_file(&dir.join("env")))
    }

    fn start_in(dir: PathBuf, owned: Option<TestDir>) -> Cluster {
        let (port, env) = Cluster::init_only(&dir);
        // The module logs to a file the harness prints when a test fails, whichever of the two
        // client configurations it is loaded with (hsmctl ignores these settings).
        for file in ["pkcs11.toml", "admin.toml"] {
            let conf_path = dir.join(file);
            let mut conf: toml::Table =
                toml::from_str(&fs::read_to_string(&conf_path).expect("read client config"))
                    .expect("parse client config");
            conf.insert(
                "log_file".into(),
                dir.join("module.log").to_string_lossy().into_owned().into(),
            );
            conf.insert("log_level".into(), "debug".into());
            fs::write(&conf_path, toml::to_string(&conf).expect("encode"))
                .expect("write client config");
        }

        let mut cluster = Cluster {
            port,
            user_pin: env.get("HSM_PIN").expect("HSM_PIN in env").clone(),
            so_pin: env.get("HSM_SO_PIN").expect("HSM_SO_PIN in env").clone(),
            dir,
            daemon: None,
            _owned: owned,
        };
        // The port was free when chosen; if something took it since, take another.
        for attempt in 1.. {
            match cluster.try_start_daemon() {
                Ok(()) => break,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    cluster.move_to_port(free_port());
                }
                Err(log) => panic!("{log}"),
            }
        }
        cluster.unseal();
        crate::multi::wait_for_leader_at(&cluster.dir, None, START_TIMEOUT);
        let password = cluster.user_password().to_owned();
        cluster.create_user("alice", &password);
        cluster
    }

    /// The password part of the user PIN.
    pub fn user_password(&self) -> &str {
        self.user_pin.split_once(':').expect("user:password").1
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The node's configuration file.
    pub fn node_toml(&self) -> PathBuf {
        self.dir.join(NODE).join("node.toml")
    }

    /// The node's store directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(NODE).join("data")
    }

    /// The module configuration (application certificate).
    pub fn module_config(&self) -> PathBuf {
        self.dir.join("pkcs11.toml")
    }

    /// The admin client configuration (admin certificate): hsmctl's, and the module's for
    /// tests of admin requests (`C_InitPIN`), which need an admin certificate.
    pub fn admin_config(&self) -> PathBuf {
        self.dir.join("admin.toml")
    }

    /// The node's certificate and key (a node certificate, refused on the client port).
    pub fn node_cert(&self) -> (PathBuf, PathBuf) {
        let node = self.dir.join(NODE);
        (node.join("node.pem"), node.join("node.key"))
    }

    /// The cluster CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A client certificate and key (`app`, `admin`).
    pub fn client_cert(&self, name: &str) -> (PathBuf, PathBuf) {
        let clients = self.dir.join("clients");
        (
            clients.join(format!("{name}.pem")),
            clients.join(format!("{name}.key")),
        )
    }

    /// The daemon's log (stderr of every run).
    pub fn daemon_log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// The module's log.
    pub fn module_log_path(&self) -> PathBuf {
        self.dir.join("module.log")
    }

    fn listening_lines(&self) -> usize {
        fs::read_to_string(self.daemon_log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(LISTENING))
            .count()
    }

    /// Starts `hsm-daemon run` (sealed) and waits until it listens.
    pub fn start_daemon(&mut self) {
        if let Err(log) = self.try_start_daemon() {
            panic!("{log}");
        }
    }

    /// Starts the daemon; `Err` with its log if it exits before listening.
    fn try_start_daemon(&mut self) -> Result<(), String> {
        assert!(self.daemon.is_none(), "daemon already running");
        let before = self.listening_lines();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log_path())
            .expect("open daemon log");
        let child = Command::new(&artifacts().daemon)
            .arg("run")
            .arg("--config")
            .arg(self.node_toml())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn hsm-daemon run");
        fs::write(self.dir.join("daemon.pid"), child.id().to_string()).expect("pid file");
        self.daemon = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while self.listening_lines() <= before {
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.daemon = None;
                return Err(format!(
                    "hsm-daemon exited ({status}) before listening; log:\n{}",
                    tail(&self.daemon_log_path(), 40)
                ));
            }
            assert!(
                Instant::now() < deadline,
                "hsm-daemon did not print {LISTENING:?} within {}s; log:\n{}",
                START_TIMEOUT.as_secs(),
                tail(&self.daemon_log_path(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Moves the cluster to another port: the node's and both clients' configurations.
    fn move_to_port(&mut self, port: u16) {
        let addr = format!("127.0.0.1:{port}");
        let edit = |path: PathBuf, key: &str, value: toml::Value| {
            let mut table: toml::Table =
                toml::from_str(&fs::read_to_string(&path).expect("read config")).expect("parse");
            table.insert(key.into(), value);
            fs::write(&path, toml::to_string(&table).expect("encode")).expect("write config");
        };
        edit(self.node_toml(), "listen", addr.clone().into());
        // Before the first unseal nothing has recorded the cluster port yet: it moves too.
        edit(
            self.node_toml(),
            "cluster_listen",
            format!("127.0.0.1:{}", free_port()).into(),
        );
        for file in ["pkcs11.toml", "admin.toml"] {
            edit(
                self.dir.join(file),
                "nodes",
                toml::Value::Array(vec![addr.clone().into()]),
            );
        }
        self.port = port;
    }

    /// Stops the daemon with SIGTERM and waits for it to exit.
    ///
    /// # Panics
    /// If it does not exit in time (it is then killed).
    pub fn stop_daemon(&mut self) {
        let Some(child) = self.daemon.take() else {
            return;
        };
        if let Err(why) = stop_child(child) {
            panic!(
                "hsm-daemon {why}; log:\n{}",
                tail(&self.daemon_log_path(), 40)
            );
        }
    }

    /// Stops and starts the daemon: it comes back sealed.
    pub fn restart_sealed(&mut self) {
        self.stop_daemon();
        self.start_daemon();
    }

    /// Whether the daemon child is running.
    pub fn daemon_running(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs `hsmctl` with arguments (stdin closed, so it never waits at a prompt).
    pub fn hsmctl(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(&artifacts().hsmctl);
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run hsmctl")
    }

    /// `hsmctl unseal` with the dev key file.
    pub fn unseal(&self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let key = self.dir.join("dev.key").to_string_lossy().into_owned();
        let out = self.hsmctl(&["unseal", "--dir", &dir, "--dev-key-file", &key], &[]);
        assert_success("hsmctl unseal", &out);
    }

    /// `hsmctl user create NAME` as the admin.
    pub fn create_user(&self, name: &str, password: &str) {
        let dir = self.dir.to_string_lossy().into_owned();
        let out = self.hsmctl(
            &["user", "create", name, "--dir", &dir],
            &[
                ("HSM_SO_PIN", self.so_pin.as_str()),
                ("HSM_NEW_USER_PASSWORD", password),
            ],
        );
        assert_success("hsmctl user create", &out);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- hsm-daemon log ({}), last lines ----\n{}\n---- module log ({}), last lines ----\n{}\n----",
                self.daemon_log_path().display(),
                tail(&self.daemon_log_path(), 60),
                self.module_log_path().display(),
                tail(&self.module_log_path(), 60)
            );
        }
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
