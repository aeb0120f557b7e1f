//! Helpers shared by the `cluster_*` end-to-end tests (each uses a subset):
//!
//! - [`own_process`]: runs a test body in a process of its own (the module is loaded once per
//!   process), with the cluster directory and the module's configuration path set, and extra
//!   environment variables for the daemons (which inherit the child's environment);
//! - [`Module`]: the real `libhsm_pkcs11.so` through `cryptoki`, re-pointed at chosen nodes by
//!   rewriting its configuration file and running `C_Finalize` + `C_Initialize` (the module
//!   reads `$HSM_PKCS11_CONF` in every `C_Initialize`). The library stays loaded, so the
//!   highest log index it has seen carries over: a key made through node A and then used
//!   through node B exercises the read-your-writes wait on B;
//! - [`Raw`]: a client speaking the wire protocol to one node directly (object ids, request
//!   keys and log indexes are visible), and [`inventory`] / [`assert_converged`] built on it;
//! - [`set_raft`]: edits a node's `[raft]` table; [`Rng`]: a small seeded generator.
#![allow(dead_code)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hsm_proto::frame;
use hsm_proto::msg::{ObjectId, ObjectInfo, SessionId, UserType as WireUserType};
use hsm_proto::{AttrOutcome, Attribute, Envelope, Password, Request, RequestId, Response};
use hsm_tests::cluster::{CLUSTER_DIR_ENV, tail};
use hsm_tests::{MultiCluster, TestDir, artifacts, is_child, run_in_own_process};
use rustls_pki_types::ServerName;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Generous bound for the cluster to settle after a change (a hang guard, not a performance
/// assertion: two cores, three daemons, and the test itself).
pub const SETTLE: Duration = Duration::from_secs(120);

/// Runs `body` in a process of its own. In the parent: makes a scratch directory `R`, sets
/// `HSM_TESTS_CLUSTER_DIR=R/cluster` (where [`MultiCluster::start`] builds the cluster) and
/// `HSM_PKCS11_CONF=R/module.toml` (which [`Module`] writes), and
/// the variables `env(R)` names, and waits for the child. In the child: runs `body(R)`.
/// `name` must be the calling `#[test]`'s name.
pub fn own_process(
    name: &str,
    env: impl FnOnce(&Path) -> Vec<(&'static str, OsString)>,
    body: impl FnOnce(&Path),
) {
    if is_child(name) {
        let conf = std::env::var_os(hsm_proto::config::MODULE_CONFIG_ENV)
            .expect("HSM_PKCS11_CONF is set by own_process");
        let root = Path::new(&conf)
            .parent()
            .expect("R/module.toml")
            .to_path_buf();
        body(&root);
        return;
    }
    let root = TestDir::new(name);
    let cluster_dir = root.path().join("cluster");
    let mut all: Vec<(&str, OsString)> = vec![
        (CLUSTER_DIR_ENV, cluster_dir.clone().into_os_string()),
        (
            hsm_proto::config::MODULE_CONFIG_ENV,
            root.path().join("module.toml").into_os_string(),
        ),
    ];
    all.extend(env(root.path()));
    run_in_own_process(name, &all, root.path(), Some(&cluster_dir));
}

/// Prints a step's name (the child's output is shown by the parent) and returns it for
/// assertion messages.
pub fn step(name: &str) -> String {
    eprintln!("==== {:>6.1}s step: {name}", since_start().as_secs_f64());
    name.to_owned()
}

/// Time since this process first asked.
pub fn since_start() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// Waits until `done()` is true, polling every 50 ms.
///
/// # Panics
/// After `timeout`, with `what` and the last `state()`.
#[track_caller]
pub fn wait_for<S: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> (bool, S),
) -> S {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, state) = probe();
        if done {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {}s; last state: {state:#?}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real module, loaded once, pointed at chosen nodes.
#[derive(Debug)]
pub struct Module {
    ctx: Pkcs11,
    conf: PathBuf,
    slot: Option<Slot>,
    user_pin: String,
    /// The node indices the module is configured with now.
    pub nodes: Vec<usize>,
    /// Further settings written into the configuration by [`Module::use_nodes`].
    pub options: toml::Table,
}

impl Module {
    /// Loads `libhsm_pkcs11.so` (not initialized yet: see [`Module::use_nodes`]).
    pub fn load(cluster: &MultiCluster) -> Module {
        let conf = std::env::var_os(hsm_proto::config::MODULE_CONFIG_ENV)
            .expect("HSM_PKCS11_CONF is set by own_process");
        Module {
            ctx: Pkcs11::new(&artifacts().module).expect("load libhsm_pkcs11.so"),
            conf: PathBuf::from(conf),
            slot: None,
            user_pin: cluster.user_pin.clone(),
            nodes: Vec::new(),
            options: toml::Table::new(),
        }
    }

    /// Points the module at `nodes` (in that order; the module tries them in order): writes
    /// `$HSM_PKCS11_CONF` from `D/pkcs11.toml` with only those nodes, then `C_Finalize` (if
    /// initialized) and `C_Initialize`. The token label names the nodes, and is checked, so a
    /// module that did not re-read its configuration is caught.
    ///
    /// # Panics
    /// If any step fails. Every session must have been dropped before.
    pub fn use_nodes(&mut self, cluster: &MultiCluster, nodes: &[usize]) {
        self.finalize();
        let mut table: toml::Table = toml::from_str(
            &std::fs::read_to_string(cluster.module_config()).expect("read D/pkcs11.toml"),
        )
        .expect("parse D/pkcs11.toml");
        let addrs: Vec<toml::Value> = nodes
            .iter()
            .map(|&i| cluster.node(i).addr().into())
            .collect();
        let label = format!(
            "via {}",
            nodes
                .iter()
                .map(|&i| cluster.node(i).name.clone())
                .collect::<Vec<_>>()
                .join(",")
        );
        table.insert("nodes".into(), toml::Value::Array(addrs));
        // Exactly these nodes: the tests choose which node serves.
        table.insert("discover_members".into(), false.into());
        table.extend(self.options.clone());
        table.insert("token_label".into(), label.clone().into());
        std::fs::write(&self.conf, toml::to_string(&table).expect("encode")).expect("write conf");
        self.ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        let slots = self.ctx.get_slots_with_token().expect("C_GetSlotList");
        let slot = *slots.first().expect("a slot with a token");
        let info = self.ctx.get_token_info(slot).expect("C_GetTokenInfo");
        assert_eq!(
            info.label().trim_end(),
            label.as_str(),
            "the module did not re-read its configuration in C_Initialize"
        );
        self.slot = Some(slot);
        self.nodes = nodes.to_vec();
    }

    /// `C_Finalize` if initialized.
    pub fn finalize(&mut self) {
        if self.slot.take().is_some() {
            self.ctx.clone().finalize().expect("C_Finalize");
        }
    }

    /// Records that the module was finalized elsewhere (through a clone of the context).
    pub fn forget_initialized(&mut self) {
        self.slot = None;
    }

    /// The library context (to open sessions from other threads).
    pub fn ctx(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// The slot.
    pub fn slot(&self) -> Slot {
        self.slot.expect("Module::use_nodes first")
    }

    /// The crypto user's PIN.
    pub fn user_pin(&self) -> &str {
        &self.user_pin
    }

    /// A read-write session logged in as the crypto user.
    pub fn session(&self) -> Session {
        user_session(&self.ctx, self.slot(), &self.user_pin).expect("open and log in")
    }
}

/// A read-write session logged in as the crypto user, or the first failure.
///
/// # Errors
/// `C_OpenSession` or `C_Login` failed.
pub fn user_session(ctx: &Pkcs11, slot: Slot, pin: &str) -> cryptoki::error::Result<Session> {
    let session = ctx.open_rw_session(slot)?;
    match session.login(UserType::User, Some(&AuthPin::from(pin.to_owned()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
            Ok(session)
        }
        Err(e) => Err(e),
    }
}

/// Edits node `i`'s `[raft]` table (takes effect at its next start).
pub fn set_raft(cluster: &MultiCluster, i: usize, values: &[(&str, i64)]) {
    let path = cluster.node_toml(i);
    let mut table: toml::Table =
        toml::from_str(&std::fs::read_to_string(&path).expect("read node.toml")).expect("parse");
    let raft = table
        .entry("raft")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[raft] is a table");
    for (k, v) in values {
        raft.insert((*k).into(), (*v).into());
    }
    std::fs::write(&path, toml::to_string(&table).expect("encode")).expect("write node.toml");
}

/// The consensus status of node `i` (`None` if it does not answer or has none).
pub fn raft(cluster: &MultiCluster, i: usize) -> Option<hsm_proto::msg::RaftStatus> {
    cluster.status(i).and_then(|s| s.raft)
}

/// Waits until node `i` has applied at least `index`.
pub fn wait_applied(cluster: &MultiCluster, i: usize, index: u64) {
    wait_for(
        &format!("{} applies index {index}", cluster.node(i).name),
        SETTLE,
        || {
            let r = raft(cluster, i);
            (
                r.as_ref()
                    .and_then(|r| r.applied)
                    .is_some_and(|a| a >= index),
                r,
            )
        },
    );
}

/// Waits until a leader is known and every running node has applied its last log index;
/// returns the leader's index and that log index.
pub fn settle(cluster: &mut MultiCluster) -> (usize, u64) {
    let leader = cluster.leader();
    let index = cluster.wait_applied_everywhere(None, SETTLE);
    (leader, index)
}

/// A client speaking the wire protocol to one node, logged in as the crypto user.
#[derive(Debug)]
pub struct Raw {
    rt: tokio::runtime::Runtime,
    tls: TlsStream<TcpStream>,
    next: u64,
    /// The node's name, for messages.
    pub node: String,
}

/// The outcome of one raw request: the index the answer reflects and the answer.
#[derive(Debug)]
pub struct RawAnswer {
    /// `Envelope.index` of the response.
    pub index: u64,
    /// The response.
    pub body: Response,
}

impl Raw {
    /// Connects to node `i`'s client port with the application certificate and logs in.
    ///
    /// # Panics
    /// If the node cannot be reached or the login fails.
    pub fn connect(cluster: &MultiCluster, i: usize) -> Raw {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let clients = cluster.dir.join("clients");
        let config = hsm_proto::tls::client_config(
            &cluster.dir.join("ca.pem"),
            &clients.join("app.pem"),
            &clients.join("app.key"),
        )
        .expect("client config");
        let addr = cluster.node(i).addr();
        let tls = rt.block_on(async {
            let tcp = TcpStream::connect(&addr).await.expect("tcp connect");
            let name = ServerName::try_from("127.0.0.1").expect("name");
            let mut tls = TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .expect("TLS");
            frame::client_handshake(&mut tls, "hsm-tests-raw")
                .await
                .expect("protocol handshake");
            tls
        });
        let mut raw = Raw {
            rt,
            tls,
            next: 1,
            node: cluster.node(i).name.clone(),
        };
        let (user, password) = cluster.user_pin.split_once(':').expect("user:password");
        let login = Request::Login {
            user_type: WireUserType::User,
            username: user.to_owned(),
            password: Password::new(password.to_owned()),
        };
        match raw.call(0, 0, login).body {
            Response::LoggedIn { .. } => {}
            other => panic!("raw login on {}: {other:?}", raw.node),
        }
        raw
    }

    /// Sends one request with `index` (read-your-writes) and `key` (request key) and waits
    /// for its answer (at most a minute).
    pub fn call(&mut self, index: u64, key: u128, body: Request) -> RawAnswer {
        let id = self.next;
        self.next += 1;
        let node = self.node.clone();
        let tls = &mut self.tls;
        self.rt.block_on(async {
            let envelope = Envelope {
                id: RequestId(id),
                index,
                key,
                body,
            };
            let exchange = async {
                frame::write_message(tls, &envelope).await?;
                frame::read_message::<Envelope<Response>, _>(tls).await
            };
            let reply = tokio::time::timeout(Duration::from_secs(60), exchange)
                .await
                .unwrap_or_else(|_| panic!("{node}: no answer within 60 s"))
                .unwrap_or_else(|e| panic!("{node}: {e}"));
            assert_eq!(reply.id, RequestId(id), "{node}: answer to another request");
            RawAnswer {
                index: reply.index,
                body: reply.body,
            }
        })
    }

    /// Sends several requests at once (pipelined, each with its index and key) and returns
    /// their answers in the same order.
    pub fn calls(&mut self, requests: Vec<(u64, u128, Request)>) -> Vec<RawAnswer> {
        let first = self.next;
        self.next += requests.len() as u64;
        let node = self.node.clone();
        let tls = &mut self.tls;
        self.rt.block_on(async {
            let n = requests.len();
            let exchange = async {
                for (k, (index, key, body)) in requests.into_iter().enumerate() {
                    let envelope = Envelope {
                        id: RequestId(first + k as u64),
                        index,
                        key,
                        body,
                    };
                    frame::write_message(tls, &envelope).await?;
                }
                let mut answers: Vec<Option<RawAnswer>> = (0..n).map(|_| None).collect();
                for _ in 0..n {
                    let reply: Envelope<Response> = frame::read_message(tls).await?;
                    let k = usize::try_from(reply.id.0 - first).expect("our id");
                    answers[k] = Some(RawAnswer {
                        index: reply.index,
                        body: reply.body,
                    });
                }
                Ok::<_, frame::FrameError>(answers)
            };
            tokio::time::timeout(Duration::from_secs(60), exchange)
                .await
                .unwrap_or_else(|_| panic!("{node}: no answers within 60 s"))
                .unwrap_or_else(|e| panic!("{node}: {e}"))
                .into_iter()
                .map(|a| a.expect("every request answered"))
                .collect()
        })
    }

    /// Every token object the user sees, with its label, as this node has it once it applied
    /// `index`.
    pub fn objects(&mut self, index: u64) -> BTreeMap<ObjectId, String> {
        let found = match self
            .call(
                index,
                0,
                Request::FindObjects {
                    session: SessionId(1),
                    template: vec![Attribute::Token(true)],
                },
            )
            .body
        {
            Response::Objects(found) => found,
            other => panic!("{}: FindObjects: {other:?}", self.node),
        };
        found
            .into_iter()
            .map(|info| (info.id, self.label(info.id)))
            .collect()
    }

    /// An object's `CKA_LABEL`.
    pub fn label(&mut self, object: ObjectId) -> String {
        match self
            .call(
                0,
                0,
                Request::GetAttributeValue {
                    session: SessionId(1),
                    object,
                    types: vec![cryptoki_sys::CKA_LABEL as u64],
                },
            )
            .body
        {
            Response::AttributeValues(v) => match v.as_slice() {
                [AttrOutcome::Value(Attribute::Label(l))] => {
                    String::from_utf8_lossy(l).into_owned()
                }
                [AttrOutcome::Invalid] => String::new(),
                other => panic!("{}: CKA_LABEL of {object}: {other:?}", self.node),
            },
            other => panic!("{}: GetAttributeValue: {other:?}", self.node),
        }
    }

    /// The token objects with label `label`.
    pub fn find_label(&mut self, index: u64, label: &str) -> Vec<ObjectInfo> {
        match self
            .call(
                index,
                0,
                Request::FindObjects {
                    session: SessionId(1),
                    template: vec![Attribute::Label(label.as_bytes().to_vec())],
                },
            )
            .body
        {
            Response::Objects(found) => found,
            other => panic!("{}: FindObjects: {other:?}", self.node),
        }
    }
}

/// Node `i`'s token objects (id → label), read once it applied `index`.
pub fn inventory(cluster: &MultiCluster, i: usize, index: u64) -> BTreeMap<ObjectId, String> {
    Raw::connect(cluster, i).objects(index)
}

/// Labels that occur more than once in an inventory.
pub fn duplicate_labels(inv: &BTreeMap<ObjectId, String>) -> Vec<String> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for label in inv.values() {
        *count.entry(label).or_default() += 1;
    }
    count
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(l, _)| l.to_owned())
        .collect()
}

/// Waits until every running node applied the leader's last index, then asserts that the
/// nodes `nodes` hold exactly the same token objects (ids and labels) and report the same
/// object count in their status. Returns that common inventory.
///
/// # Panics
/// If they differ (the message names the differences and `context`).
pub fn assert_converged(
    cluster: &mut MultiCluster,
    nodes: &[usize],
    context: &str,
) -> BTreeMap<ObjectId, String> {
    let (_, index) = settle(cluster);
    let invs: Vec<BTreeMap<ObjectId, String>> = nodes
        .iter()
        .map(|&i| inventory(cluster, i, index))
        .collect();
    let first = &invs[0];
    for (k, inv) in nodes.iter().zip(&invs).skip(1) {
        let only_first: Vec<_> = first
            .iter()
            .filter(|(id, _)| !inv.contains_key(id))
            .collect();
        let only_here: Vec<_> = inv
            .iter()
            .filter(|(id, _)| !first.contains_key(id))
            .collect();
        assert!(
            first == inv,
            "{context}: {} and {} hold different objects at index {index}: only on {}: \
             {only_first:?}; only on {}: {only_here:?}",
            cluster.node(nodes[0]).name,
            cluster.node(*k).name,
            cluster.node(nodes[0]).name,
            cluster.node(*k).name,
        );
    }
    let counts: Vec<(String, Option<u64>)> = nodes
        .iter()
        .map(|&i| {
            (
                cluster.node(i).name.clone(),
                cluster.status(i).map(|s| s.objects),
            )
        })
        .collect();
    assert!(
        counts.iter().all(|(_, c)| *c == counts[0].1),
        "{context}: the nodes' status object counts differ: {counts:?}"
    );
    first.clone()
}

/// The pid of node `i`'s running daemon, found in `/proc` by its `--config` argument (the
/// harness does not expose its children's pids).
///
/// # Panics
/// If no such process runs.
pub fn daemon_pid(cluster: &MultiCluster, i: usize) -> nix::unistd::Pid {
    let config = cluster.node_toml(i).to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&b"run".as_slice()) && args.contains(&config.as_bytes()) {
            return nix::unistd::Pid::from_raw(pid);
        }
    }
    panic!("no hsm-daemon runs with --config {config}");
}

/// A daemon frozen with SIGSTOP until this is dropped (SIGCONT), so a test can make one node
/// fall behind without killing it.
#[derive(Debug)]
pub struct Frozen(nix::unistd::Pid);

impl Frozen {
    /// Freezes node `i`.
    pub fn new(cluster: &MultiCluster, i: usize) -> Frozen {
        let pid = daemon_pid(cluster, i);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Whether node `i`'s daemon log has a line containing `needle`.
pub fn log_has(cluster: &MultiCluster, i: usize, needle: &str) -> bool {
    std::fs::read_to_string(cluster.log_path(i))
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(needle))
}

/// The end of node `i`'s log, for failure messages.
pub fn log_tail(cluster: &MultiCluster, i: usize) -> String {
    tail(&cluster.log_path(i), 30)
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// SplitMix64: small, seedable, good enough to draw a fault schedule.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// A random u128 (request keys).
    pub fn u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }
}

/// A seed from the clock and the pid, for runs that are not given one.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Rng::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}
