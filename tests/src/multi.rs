//! A test cluster of several nodes: separate `hsm-daemon` processes on free ports of
//! 127.0.0.1, built the way an operator builds one, with `hsmctl` only: `init --dev` (node 1,
//! the founder), then for every further node `node add --dev`, `hsm-daemon run`, `unseal
//! --node`, `node join`. Nodes are numbered from 0 in this API (`node1` is index 0).
//!
//! What a fault test needs: [`MultiCluster::kill`] (SIGKILL), [`MultiCluster::stop`]
//! (SIGTERM), [`MultiCluster::restart`] (start + unseal), [`MultiCluster::restart_sealed`],
//! [`MultiCluster::wipe_and_rejoin`] (a new node id on the old name and ports),
//! [`MultiCluster::status`], [`MultiCluster::leader`],
//! [`MultiCluster::wait_applied_everywhere`], and [`MultiCluster::module_config_for`] to pin a
//! module to one node. Dropping it kills every daemon, printing the ends of their logs first
//! when the test is failing.

use crate::build::artifacts;
use crate::cluster::{
    CLUSTER_DIR_ENV, LISTENING, TestDir, assert_success, free_port, read_env_file, tail,
};
use hsm_proto::msg::{NodeStatus, SealState};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to listen (a hang guard, not a performance bound).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a cluster may take to elect a leader after a change.
const LEADER_TIMEOUT: Duration = Duration::from_secs(120);

/// One node of a [`MultiCluster`].
#[derive(Debug)]
pub struct ClusterNode {
    /// `node1`, `node2`, …: its directory under the cluster directory.
    pub name: String,
    /// Its client port on 127.0.0.1.
    pub client_port: u16,
    /// Its cluster port on 127.0.0.1.
    pub cluster_port: u16,
    /// Its node id (from its `node.toml`; new after [`MultiCluster::wipe_and_rejoin`]).
    pub node_id: u64,
    child: Option<Child>,
}

impl ClusterNode {
    /// `127.0.0.1:<client port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// A running cluster of several nodes.
#[derive(Debug)]
pub struct MultiCluster {
    /// The cluster directory.
    pub dir: PathBuf,
    /// `alice:password`.
    pub user_pin: String,
    /// `admin:password`.
    pub so_pin: String,
    nodes: Vec<ClusterNode>,
    _owned: Option<TestDir>,
}

/// Runs `hsmctl` (stdin closed: it never waits at a prompt).
fn hsmctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(&artifacts().hsmctl);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run hsmctl")
}

/// One node's status through `hsmctl status --json` (`node`: only that node of the
/// directory); `None` when it does not answer.
pub fn status_at(dir: &Path, node: Option<&str>) -> Vec<Option<NodeStatus>> {
    let dir_s = dir.to_string_lossy().into_owned();
    let mut args = vec!["status", "--json", "--dir", &dir_s];
    if let Some(node) = node {
        args.extend(["--node", node]);
    }
    let out = hsmctl(&args, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        // No node answered (no document), or an old hsmctl.
        return vec![None];
    };
    doc["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| serde_json::from_value(n["status"].clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until a node of the directory (`node`: that one) reports a leader it knows (a
/// daemon without consensus status counts as ready once unsealed).
///
/// # Panics
/// If none does in time.
pub fn wait_for_leader_at(dir: &Path, node: Option<&str>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let statuses = status_at(dir, node);
        let ready = statuses.iter().flatten().any(|s| match &s.raft {
            Some(raft) => raft.leader.is_some(),
            None => s.seal == SealState::Unsealed,
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {}s; statuses: {statuses:#?}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl MultiCluster {
    /// Makes and starts a cluster of `n` nodes (n ≥ 1): in the directory a parent test
    /// process chose (see [`crate::isolated_cluster`]), else in a fresh temporary directory.
    /// Returns once every node is a voter and a leader is known.
    pub fn start(n: usize) -> MultiCluster {
        assert!(n >= 1, "a cluster has at least one node");
        let mut cluster = match std::env::var_os(CLUSTER_DIR_ENV) {
            Some(dir) => MultiCluster::founder(PathBuf::from(dir), None),
            None => {
                let owned = TestDir::new("multi");
                MultiCluster::founder(owned.path().to_path_buf(), Some(owned))
            }
        };
        for _ in 1..n {
            cluster.add_node();
        }
        cluster.leader();
        cluster
    }

    /// `hsmctl init --dev` (node1), started, unsealed, with alice.
    fn founder(dir: PathBuf, owned: Option<TestDir>) -> MultiCluster {
        let (client_port, cluster_port) = (free_port(), free_port());
        let dir_s = dir.to_string_lossy().into_owned();
        let out = Command::new(&artifacts().hsmctl)
            .args(["init", "--dev", "--dir", &dir_s])
            .args(["--listen", &format!("127.0.0.1:{client_port}")])
            .args(["--cluster-listen", &format!("127.0.0.1:{cluster_port}")])
            .args(["--cluster-name", "hsm-cluster"])
            .arg("--daemon-bin")
            .arg(&artifacts().daemon)
            .stdin(Stdio::null())
            .output()
            .expect("run hsmctl init");
        assert_success("hsmctl init --dev", &out);
        let env = read_env_file(&dir.join("env"));
        // The module logs to a file the harness prints when a test fails.
        for file in ["pkcs11.toml", "admin.toml"] {
            edit_toml(&dir.join(file), |t| {
                t.insert(
                    "log_file".into(),
                    dir.join("module.log").to_string_lossy().into_owned().into(),
                );
                t.insert("log_level".into(), "debug".into());
            });
        }
        let mut cluster = MultiCluster {
            user_pin: env.get("HSM_PIN").expect("HSM_PIN in env").clone(),
            so_pin: env.get("HSM_SO_PIN").expect("HSM_SO_PIN in env").clone(),
            nodes: Vec::new(),
            dir,
            _owned: owned,
        };
        cluster.nodes.push(ClusterNode {
            name: "node1".into(),
            client_port,
            cluster_port,
            node_id: 0,
            child: None,
        });
        cluster.reload_node_id(0);
        // The ports were free when chosen; if something took one since, take others (nothing
        // has recorded them before the first unseal).
        for attempt in 1.. {
            match cluster.try_start_daemon(0) {
                Ok(()) => break,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    let (c, k) = (free_port(), free_port());
                    cluster.set_ports(0, c, k);
                    for file in ["pkcs11.toml", "admin.toml"] {
                        edit_toml(&cluster.dir.join(file), |t| {
                            t.insert(
                                "nodes".into(),
                                toml::Value::Array(vec![format!("127.0.0.1:{c}").into()]),
                            );
                        });
                    }
                }
                Err(log) => panic!("{log}"),
            }
        }
        cluster.unseal(0);
        wait_for_leader_at(&cluster.dir, Some("node1"), LEADER_TIMEOUT);
        let dir_s = cluster.dir_str();
        let password = cluster
            .user_pin
            .split_once(':')
            .expect("user:pw")
            .1
            .to_owned();
        let out = hsmctl(
            &["user", "create", "alice", "--dir", &dir_s],
            &[
                ("HSM_SO_PIN", cluster.so_pin.as_str()),
                ("HSM_NEW_USER_PASSWORD", &password),
            ],
        );
        assert_success("hsmctl user create alice", &out);
        cluster
    }

    /// Adds one more node (`node add --dev`, start, unseal, `node join`); returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let name = format!("node{}", i + 1);
        self.nodes.push(ClusterNode {
            name,
            client_port: 0,
            cluster_port: 0,
            node_id: 0,
            child: None,
        });
        self.prepare_and_join(i);
        i
    }

    /// `node add` node `i` on fresh ports (retrying if one was taken meanwhile), start,
    /// unseal, join.
    fn prepare_and_join(&mut self, i: usize) {
        for attempt in 1.. {
            let (c, k) = (free_port(), free_port());
            self.nodes[i].client_port = c;
            self.nodes[i].cluster_port = k;
            let name = self.nodes[i].name.clone();
            let dir_s = self.dir_str();
            let out = hsmctl(
                &[
                    "node",
                    "add",
                    "--dev",
                    "--dir",
                    &dir_s,
                    "--name",
                    &name,
                    "--listen",
                    &format!("127.0.0.1:{c}"),
                    "--cluster-listen",
                    &format!("127.0.0.1:{k}"),
                    "--daemon-bin",
                    &artifacts().daemon.to_string_lossy(),
                ],
                &[],
            );
            assert_success(&format!("hsmctl node add {name}"), &out);
            self.reload_node_id(i);
            match self.try_start_daemon(i) {
                Ok(()) => break,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    // Not a member yet: nothing remembers it. Prepare it again elsewhere.
                    fs::remove_dir_all(self.dir.join(&name)).expect("remove node directory");
                }
                Err(log) => panic!("{log}"),
            }
        }
        self.unseal(i);
        self.join(i);
    }

    fn dir_str(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    fn set_ports(&mut self, i: usize, client: u16, cluster: u16) {
        self.nodes[i].client_port = client;
        self.nodes[i].cluster_port = cluster;
        edit_toml(&self.node_toml(i), |t| {
            t.insert("listen".into(), format!("127.0.0.1:{client}").into());
            t.insert(
                "cluster_listen".into(),
                format!("127.0.0.1:{cluster}").into(),
            );
        });
    }

    fn reload_node_id(&mut self, i: usize) {
        let table: toml::Table =
            toml::from_str(&fs::read_to_string(self.node_toml(i)).expect("read node.toml"))
                .expect("parse node.toml");
        let id = table
            .get("node_id")
            .and_then(toml::Value::as_integer)
            .expect("node_id in node.toml");
        self.nodes[i].node_id = u64::try_from(id).expect("node ids are positive");
    }

    /// How many nodes (removed ones included: indices never change).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no node (never: a cluster has a founder).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &ClusterNode {
        &self.nodes[i]
    }

    /// Node `i`'s configuration file.
    pub fn node_toml(&self, i: usize) -> PathBuf {
        self.dir.join(&self.nodes[i].name).join("node.toml")
    }

    /// Node `i`'s store directory.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.nodes[i].name).join("data")
    }

    /// Node `i`'s daemon log (stderr of every run).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(&self.nodes[i].name).join("daemon.log")
    }

    /// The module configuration listing every member (application certificate).
    pub fn module_config(&self) -> PathBuf {
        self.dir.join("pkcs11.toml")
    }

    /// The module's log.
    pub fn module_log_path(&self) -> PathBuf {
        self.dir.join("module.log")
    }

    /// A module configuration that lists node `i` only (so a test can pin a module to one
    /// node): `D/pkcs11-<name>.toml`, logging to `D/module-<name>.log`. Written now, from
    /// `D/pkcs11.toml`.
    pub fn module_config_for(&self, i: usize) -> PathBuf {
        let name = &self.nodes[i].name;
        let path = pinned_config_path(&self.dir, name);
        let mut table: toml::Table =
            toml::from_str(&fs::read_to_string(self.module_config()).expect("read pkcs11.toml"))
                .expect("parse pkcs11.toml");
        table.insert(
            "nodes".into(),
            toml::Value::Array(vec![self.nodes[i].addr().into()]),
        );
        table.insert("discover_members".into(), false.into());
        table.insert(
            "log_file".into(),
            self.dir
                .join(format!("module-{name}.log"))
                .to_string_lossy()
                .into_owned()
                .into(),
        );
        fs::write(&path, toml::to_string(&table).expect("encode")).expect("write pinned config");
        path
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("daemon.pid")
    }

    /// Records every running daemon's pid (one a line) for a parent that must kill them if
    /// this process hangs.
    fn write_pids(&mut self) {
        let pids: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(|c| c.id().to_string()))
            .collect();
        let _ = fs::write(self.pid_file(), pids.join("\n"));
    }

    fn listening_lines(&self, i: usize) -> usize {
        fs::read_to_string(self.log_path(i))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(LISTENING))
            .count()
    }

    /// Starts node `i`'s daemon (sealed) and waits until it listens.
    ///
    /// # Panics
    /// If it exits before listening or does not listen in time.
    pub fn start_daemon(&mut self, i: usize) {
        if let Err(log) = self.try_start_daemon(i) {
            panic!("{log}");
        }
    }

    fn try_start_daemon(&mut self, i: usize) -> Result<(), String> {
        assert!(self.nodes[i].child.is_none(), "node {i} is already running");
        let before = self.listening_lines(i);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("open daemon log");
        let child = Command::new(&artifacts().daemon)
            .arg("run")
            .arg("--config")
            .arg(self.node_toml(i))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn hsm-daemon run");
        self.nodes[i].child = Some(child);
        self.write_pids();
        let deadline = Instant::now() + START_TIMEOUT;
        while self.listening_lines(i) <= before {
            if let Some(status) = self.nodes[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.nodes[i].child = None;
                self.write_pids();
                return Err(format!(
                    "{}: hsm-daemon exited ({status}) before listening; log:\n{}",
                    self.nodes[i].name,
                    tail(&self.log_path(i), 40)
                ));
            }
            assert!(
                Instant::now() < deadline,
                "{}: hsm-daemon did not print {LISTENING:?} within {}s; log:\n{}",
                self.nodes[i].name,
                START_TIMEOUT.as_secs(),
                tail(&self.log_path(i), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Whether node `i`'s daemon is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills node `i` with SIGKILL (no chance to flush or say goodbye) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.write_pids();
    }

    /// Stops node `i` with SIGTERM and waits for it to exit.
    ///
    /// # Panics
    /// If it does not exit in time (it is then killed).
    pub fn stop(&mut self, i: usize) {
        let Some(child) = self.nodes[i].child.take() else {
            return;
        };
        let stopped = crate::cluster::stop_child(child);
        self.write_pids();
        if let Err(why) = stopped {
            panic!(
                "{}: hsm-daemon {why}; log:\n{}",
                self.nodes[i].name,
                tail(&self.log_path(i), 40)
            );
        }
    }

    /// (Re)starts node `i` and unseals it: it rejoins the cluster on its own data.
    pub fn restart(&mut self, i: usize) {
        self.restart_sealed(i);
        self.unseal(i);
    }

    /// Stops node `i` if it runs, and starts it again: it comes back sealed.
    pub fn restart_sealed(&mut self, i: usize) {
        self.stop(i);
        self.start_daemon(i);
    }

    /// `hsmctl unseal --node` with the development key file.
    pub fn unseal(&self, i: usize) {
        let key = self.dir.join("dev.key").to_string_lossy().into_owned();
        let out = hsmctl(
            &[
                "unseal",
                "--dir",
                &self.dir_str(),
                "--node",
                &self.nodes[i].name,
                "--dev-key-file",
                &key,
            ],
            &[],
        );
        assert_success(
            &format!("hsmctl unseal --node {}", self.nodes[i].name),
            &out,
        );
    }

    /// `hsmctl node join` for node `i` (running and unsealed).
    pub fn join(&self, i: usize) {
        let out = hsmctl(
            &[
                "node",
                "join",
                "--dir",
                &self.dir_str(),
                "--name",
                &self.nodes[i].name,
            ],
            &[("HSM_SO_PIN", self.so_pin.as_str())],
        );
        assert_success(&format!("hsmctl node join {}", self.nodes[i].name), &out);
    }

    /// `hsmctl node remove` for node `i` (its daemon keeps running until stopped).
    pub fn remove(&self, i: usize) {
        let out = hsmctl(
            &[
                "node",
                "remove",
                "--dir",
                &self.dir_str(),
                "--name",
                &self.nodes[i].name,
            ],
            &[("HSM_SO_PIN", self.so_pin.as_str())],
        );
        assert_success(&format!("hsmctl node remove {}", self.nodes[i].name), &out);
    }

    /// Replaces node `i` by a fresh one of the same name: `node remove`, kill it, delete its
    /// directory, `node add` (a NEW node id, fresh ports), start, unseal, `node join`.
    pub fn wipe_and_rejoin(&mut self, i: usize) {
        let old_id = self.nodes[i].node_id;
        self.remove(i);
        self.kill(i);
        fs::remove_dir_all(self.dir.join(&self.nodes[i].name)).expect("delete node directory");
        self.prepare_and_join(i);
        assert_ne!(
            self.nodes[i].node_id, old_id,
            "a rejoined node got its old id"
        );
    }

    /// Node `i`'s status, `None` when it does not answer.
    pub fn status(&self, i: usize) -> Option<NodeStatus> {
        status_at(&self.dir, Some(&self.nodes[i].name))
            .into_iter()
            .next()
            .flatten()
    }

    /// Every node's status (`None` for those that do not answer), in index order.
    pub fn statuses(&self) -> Vec<Option<NodeStatus>> {
        (0..self.nodes.len()).map(|i| self.status(i)).collect()
    }

    /// The index of the leader: the node that says it leads in the highest term, once one
    /// does.
    ///
    /// # Panics
    /// If no node leads within two minutes.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let statuses = self.statuses();
            let leader = statuses
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, s.as_ref()?.raft.as_ref()?)))
                .filter(|(_, r)| r.state == "leader")
                .max_by_key(|(_, r)| r.term)
                .map(|(i, _)| i);
            if let Some(i) = leader {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {}s: {statuses:#?}",
                LEADER_TIMEOUT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node has applied `index` (`None`: the leader's last log
    /// index now). Returns the index waited for.
    ///
    /// # Panics
    /// If some running node has not applied it within `timeout`.
    pub fn wait_applied_everywhere(&mut self, index: Option<u64>, timeout: Duration) -> u64 {
        let target = match index {
            Some(index) => index,
            None => {
                let leader = self.leader();
                self.status(leader)
                    .and_then(|s| s.raft?.last_log)
                    .unwrap_or(0)
            }
        };
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.is_running(i))
                .collect();
            let statuses: Vec<(usize, Option<NodeStatus>)> =
                running.iter().map(|&i| (i, self.status(i))).collect();
            let behind: Vec<&(usize, Option<NodeStatus>)> = statuses
                .iter()
                .filter(|(_, s)| {
                    s.as_ref()
                        .and_then(|s| s.raft.as_ref()?.applied)
                        .is_none_or(|applied| applied < target)
                })
                .collect();
            if behind.is_empty() {
                return target;
            }
            assert!(
                Instant::now() < deadline,
                "not every running node applied index {target} within {}s; behind: {behind:#?}",
                timeout.as_secs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Where [`MultiCluster::module_config_for`] writes the configuration pinned to a node.
pub fn pinned_config_path(dir: &Path, node_name: &str) -> PathBuf {
    dir.join(format!("pkcs11-{node_name}.toml"))
}

fn edit_toml(path: &Path, edit: impl FnOnce(&mut toml::Table)) {
    let mut table: toml::Table =
        toml::from_str(&fs::read_to_string(path).expect("read config")).expect("parse config");
    edit(&mut table);
    fs::write(path, toml::to_string(&table).expect("encode")).expect("write config");
}

impl Drop for MultiCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!(
                    "---- {} hsm-daemon log ({}), last lines ----\n{}",
                    self.nodes[i].name,
                    self.log_path(i).display(),
                    tail(&self.log_path(i), 60)
                );
            }
            eprintln!(
                "---- module log ({}), last lines ----\n{}\n----",
                self.module_log_path().display(),
                tail(&self.module_log_path(), 60)
            );
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = fs::remove_file(self.pid_file());
    }
}
