//! `hsmctl dev`: a working local cluster in one command, like `vault server -dev`.
//!
//! Builds the daemon and the module when run through cargo, initializes a development
//! directory on first use (key-file unseal, generated passwords), runs one daemon child
//! process per node, unseals them, joins the nodes after the first into its cluster, makes
//! sure the crypto user `alice` exists, writes `D/env`, shows the cluster's status, and stops
//! every daemon on Ctrl-C or SIGTERM. A node that dies is reported once; the others keep
//! running. A second run restarts the same nodes on their data.
//!
//! Ports: node i (1-based) listens on `BASE + 2(i-1)` for clients and the next port for the
//! other nodes ([`dev_ports`]).

use crate::client::{NodeClient, load_config};
use crate::daemon::{self, RunningDaemon};
use crate::error::{CtlError, Result};
use crate::init::{self, DEV_USER, InitOptions, MODULE_FILE};
use crate::layout::{ClusterDir, DEFAULT_NODE, DevEnv, NodeToml};
use crate::node;
use crate::ops;
use crate::secret_input::split_pin;
use crate::status::{self, ClusterView};
use hsm_proto::config::ModuleConfig;
use hsm_proto::msg::{Role, SealState, UserType};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The first port `hsmctl dev` uses unless told otherwise.
pub const DEFAULT_PORT: u16 = 5700;
/// How long a freshly unsealed cluster may take to elect a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(120);

/// The client and cluster ports of node `i` (1-based): `base + 2(i-1)` and the next one.
///
/// # Errors
/// If `i` is 0 or the ports would pass 65535.
pub fn dev_ports(base: u16, i: u16) -> Result<(u16, u16)> {
    let offset = i
        .checked_sub(1)
        .and_then(|n| n.checked_mul(2))
        .ok_or_else(|| CtlError::Usage(format!("node number {i}: nodes count from 1")))?;
    let client = base.checked_add(offset);
    match client.and_then(|c| c.checked_add(1).map(|cluster| (c, cluster))) {
        Some(ports) => Ok(ports),
        None => Err(CtlError::Usage(format!(
            "--port {base}: node {i} would need ports beyond 65535; choose a lower port"
        ))),
    }
}

/// The name of development node `i`: `node1`, `node2`, …
pub fn dev_node_name(i: u16) -> String {
    format!("node{i}")
}

/// The number of a development node's name (`node3` → 3).
fn dev_node_number(name: &str) -> Option<u16> {
    name.strip_prefix("node")?.parse().ok().filter(|n| *n > 0)
}

/// What `hsmctl dev` is asked to do.
#[derive(Debug)]
pub struct DevOptions {
    /// The cluster directory.
    pub dir: PathBuf,
    /// The first port, if given.
    pub port: Option<u16>,
    /// How many nodes.
    pub nodes: u16,
    /// Skip the cargo build.
    pub no_build: bool,
    /// An explicit `hsm-daemon`.
    pub daemon_bin: Option<PathBuf>,
}

const BANNER: &str = "\
==========================================================================
  WARNING: DEVELOPMENT CLUSTER. NOT FOR PRODUCTION.
  It unseals with a key file stored next to its data and its passwords
  sit in a plain file: anyone who can read this directory can use every
  key. Use `hsmctl init` (passphrase unseal) for anything real.
==========================================================================";

/// Runs `cargo build` for the daemon and the module when `hsmctl` itself runs under cargo
/// (`cargo run -p hsmctl -- dev`), so that one command builds everything it needs.
fn build_if_under_cargo() -> Result<()> {
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if !workspace.join("Cargo.toml").is_file() {
        return Ok(());
    }
    // Build into the profile directory hsmctl runs from, so the daemon and module land next
    // to it.
    let release = daemon::own_dir()?
        .file_name()
        .is_some_and(|n| n == "release");
    let mut cmd = Command::new(cargo);
    cmd.arg("build");
    if release {
        cmd.arg("--release");
    }
    cmd.args(["-p", "hsm-daemon", "-p", "hsm-pkcs11"])
        .current_dir(&workspace);
    eprintln!(
        "hsmctl dev: building hsm-daemon and the PKCS#11 module in {}",
        workspace.display()
    );
    let status = cmd
        .status()
        .map_err(|e| CtlError::Usage(format!("cannot run cargo: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(CtlError::Usage(format!("cargo build failed ({status})")))
    }
}

/// Makes sure the development crypto user exists: if it cannot log in, an admin creates it.
/// Returns whether it was created now.
async fn ensure_dev_user(config: &ModuleConfig, env: &DevEnv) -> Result<bool> {
    let (user, password) = split_pin(&env.user_pin)?;
    let mut client = NodeClient::connect(config).await?;
    match client.login(UserType::User, &user, password.clone()).await {
        Ok(_) => return Ok(false),
        Err(CtlError::Node(_)) => {}
        Err(e) => return Err(e),
    }
    let (admin, admin_password) = split_pin(&env.so_pin)?;
    let mut admin_client = NodeClient::connect(config).await?;
    admin_client
        .login(UserType::SecurityOfficer, &admin, admin_password)
        .await?;
    admin_client
        .create_user(&user, password.clone(), Role::CryptoUser)
        .await?;
    // Prove the new account works before telling anyone to use it.
    let mut check = NodeClient::connect(config).await?;
    check.login(UserType::User, &user, password).await?;
    Ok(true)
}

/// One development node and its daemon child.
struct DevNode {
    name: String,
    daemon: RunningDaemon,
    /// Reported dead already.
    dead: bool,
}

impl DevNode {
    fn start(bin: &Path, dir: &ClusterDir, name: &str) -> Result<DevNode> {
        let log = dir.node_log(name);
        let daemon = RunningDaemon::start(bin, &dir.node_toml(name), &log)?;
        println!(
            "{name}: hsm-daemon (pid {}) listens on {} (log: {})",
            daemon.pid(),
            daemon.addr,
            log.display()
        );
        Ok(DevNode {
            name: name.to_owned(),
            daemon,
            dead: false,
        })
    }
}

/// Unseals one node if it is sealed; returns its state afterwards.
async fn unseal_node(admin: &ModuleConfig, dir: &ClusterDir, name: &str) -> Result<SealState> {
    let addr = NodeToml::load(&dir.node_toml(name))?.client_addr();
    let mut client = NodeClient::connect_to(admin, &addr).await?;
    if client.status().await?.seal == SealState::Sealed {
        client.unseal(ops::dev_key_secret(&dir.dev_key())?).await?;
    }
    Ok(client.status().await?.seal)
}

/// Waits until some node of the configuration reports itself leader.
async fn wait_for_leader(admin: &ModuleConfig) -> Result<ClusterView> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let view = ClusterView::new(&status::gather(admin).await);
        if view.leader.is_some() {
            return Ok(view);
        }
        if Instant::now() > deadline {
            return Err(CtlError::Timeout(format!(
                "no leader within {}s:\n{}",
                LEADER_TIMEOUT.as_secs(),
                view.table()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Joins a started, unsealed node (the admin PIN from `D/env`).
async fn join_node(dir: &ClusterDir, env: &DevEnv, name: &str) -> Result<()> {
    println!("{name}: joining the cluster (it catches up, then votes)");
    let joined = node::join(dir, name, &env.so_pin).await?;
    match joined.index {
        Some(index) => println!("{name}: joined as a voting member (log index {index})"),
        None => println!("{name}: already a voting member"),
    }
    Ok(())
}

fn print_usage(dir: &ClusterDir, env: &DevEnv) {
    let root = dir.root().display();
    println!();
    println!("{BANNER}");
    println!();
    println!("Environment ({}):", dir.env_file().display());
    print!("{}", env.render());
    println!();
    println!("Use it from another shell:");
    println!("  source {}", dir.env_file().display());
    println!(
        "  pkcs11-tool --module \"$HSM_PKCS11_MODULE\" --login --pin \"$HSM_PIN\" --list-objects"
    );
    println!(
        "  pkcs11-tool --module \"$HSM_PKCS11_MODULE\" --login --pin \"$HSM_PIN\" \
         --keypairgen --key-type EC:prime256v1 --label my-key"
    );
    let hsmctl = std::env::current_exe().unwrap_or_else(|_| "hsmctl".into());
    println!("  {} status --dir {root}", hsmctl.display());
    if !env.module.is_file() {
        println!(
            "NOTE: {} does not exist yet: build it with `cargo build --release -p hsm-pkcs11`",
            env.module.display()
        );
    }
}

/// The signals that stop `hsmctl dev`.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Starts watching; from here on SIGTERM and SIGINT no longer kill `hsmctl` outright.
    /// Needs a runtime context.
    fn watch() -> Result<StopSignals> {
        let signal_err = |e: std::io::Error| CtlError::Usage(format!("cannot watch signals: {e}"));
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).map_err(signal_err)?,
            int: signal(SignalKind::interrupt()).map_err(signal_err)?,
        })
    }
}

/// Waits for Ctrl-C or SIGTERM. A node that dies is reported once and the others keep
/// running; when every node has died there is nothing left to run.
async fn wait_for_stop(signals: &mut StopSignals, nodes: &mut [DevNode]) -> Result<&'static str> {
    loop {
        tokio::select! {
            _ = signals.term.recv() => return Ok("SIGTERM"),
            _ = signals.int.recv() => return Ok("Ctrl-C"),
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                for node in nodes.iter_mut().filter(|n| !n.dead) {
                    if let Some(status) = node.daemon.exited() {
                        node.dead = true;
                        println!(
                            "node {} (pid {}) died: {status}; the others keep running",
                            node.name,
                            node.daemon.pid()
                        );
                        println!(
                            "  its log {} ends with:\n{}",
                            node.daemon.log_path().display(),
                            node.daemon.log_tail(10)
                        );
                    }
                }
                if nodes.iter().all(|n| n.dead) {
                    return Err(CtlError::Daemon(
                        "every node of the development cluster has died".into(),
                    ));
                }
            }
        }
    }
}

/// The base port of an existing development directory: node1's client port.
fn existing_base(dir: &ClusterDir) -> Result<u16> {
    let node1 = NodeToml::load(&dir.node_toml(DEFAULT_NODE))?;
    let listen: SocketAddr = node1.listen.parse().map_err(|_| {
        CtlError::Config(format!(
            "{}: listen = {:?} is not an address",
            dir.node_toml(DEFAULT_NODE).display(),
            node1.listen
        ))
    })?;
    Ok(listen.port())
}

/// `hsmctl dev`.
///
/// # Errors
/// Any step failing; the daemon children are stopped on the way out.
pub fn run(opts: &DevOptions, rt: &Runtime) -> Result<()> {
    if !opts.no_build {
        build_if_under_cargo()?;
    }
    // Watch signals before the daemon children exist, so that a SIGTERM while they start
    // still stops them cleanly instead of leaving them orphaned.
    let mut signals = {
        let _guard = rt.enter();
        StopSignals::watch()?
    };
    let bin = daemon::locate(opts.daemon_bin.as_deref())?;
    let dir = ClusterDir::new(&opts.dir)?;
    let base = if dir.is_initialized() {
        if !dir.dev_key().is_file() || !dir.env_file().is_file() {
            return Err(CtlError::Usage(format!(
                "{} is a cluster directory without {} and {}: it was not made by \
                 `hsmctl dev` or `hsmctl init --dev`; use `hsm-daemon run` and `hsmctl unseal`",
                dir.root().display(),
                dir.dev_key().display(),
                dir.env_file().display()
            )));
        }
        let base = existing_base(&dir)?;
        if let Some(port) = opts.port
            && port != base
        {
            // The cluster's replicated membership holds every node's addresses.
            return Err(CtlError::Usage(format!(
                "{} runs on ports from {base}; its nodes' addresses are part of the \
                 cluster's membership and cannot move. Use --port {base}, or another --dir",
                dir.root().display()
            )));
        }
        println!(
            "Reusing the development cluster in {}",
            dir.root().display()
        );
        base
    } else {
        let base = opts.port.unwrap_or(DEFAULT_PORT);
        dev_ports(base, opts.nodes)?;
        let (client, cluster) = dev_ports(base, 1)?;
        let init_opts = InitOptions {
            dir: opts.dir.clone(),
            node_name: DEFAULT_NODE.into(),
            listen: format!("127.0.0.1:{client}"),
            cluster_listen: Some(format!("127.0.0.1:{cluster}")),
            cluster_name: "hsm-dev".into(),
            admin_user: "admin".into(),
            dev: true,
            daemon_bin: Some(bin.clone()),
        };
        init::run(&init_opts)?;
        println!(
            "Initialized a development cluster in {}",
            dir.root().display()
        );
        base
    };

    // Passwords come back from D/env; the module path is refreshed in case the build moved.
    let mut env = DevEnv::load(&dir.env_file())?;
    env.module = daemon::own_dir()?.join(MODULE_FILE);
    env.conf = dir.pkcs11_toml();
    env.write(&dir.env_file())?;

    // Every node the directory has, started and unsealed; then a leader, then alice.
    let existing = dir.node_names()?;
    let mut nodes = Vec::new();
    for name in &existing {
        nodes.push(DevNode::start(&bin, &dir, name)?);
    }
    let admin = load_config(&dir.admin_toml())?;
    let mut waiting = Vec::new();
    for name in &existing {
        if rt.block_on(unseal_node(&admin, &dir, name))? == SealState::AwaitingJoin {
            waiting.push(name.clone());
        }
    }
    rt.block_on(wait_for_leader(&admin))?;
    // A node whose join did not finish last time.
    for name in &waiting {
        rt.block_on(join_node(&dir, &env, name))?;
    }
    if rt.block_on(ensure_dev_user(&admin, &env))? {
        println!("created crypto user {DEV_USER:?}");
    }

    // Nodes still missing: node add, start, unseal, join.
    let mut have = existing.len();
    let mut next = 1;
    while have < usize::from(opts.nodes) {
        while existing.contains(&dev_node_name(next))
            || nodes.iter().any(|n| n.name == dev_node_name(next))
        {
            next += 1;
        }
        let name = dev_node_name(next);
        let (client, cluster) = dev_ports(base, next)?;
        node::add(&node::AddOptions {
            dir: opts.dir.clone(),
            name: name.clone(),
            listen: format!("127.0.0.1:{client}"),
            cluster_listen: Some(format!("127.0.0.1:{cluster}")),
            dev: true,
            daemon_bin: Some(bin.clone()),
        })?;
        println!("{name}: added (client port {client}, cluster port {cluster})");
        nodes.push(DevNode::start(&bin, &dir, &name)?);
        rt.block_on(unseal_node(&admin, &dir, &name))?;
        rt.block_on(join_node(&dir, &env, &name))?;
        have += 1;
    }
    if existing.len() > usize::from(opts.nodes) {
        println!(
            "note: {} has {} nodes (more than --nodes {}); all of them run",
            dir.root().display(),
            existing.len(),
            opts.nodes
        );
    }
    nodes.sort_by_key(|n| dev_node_number(&n.name).unwrap_or(u16::MAX));

    let admin = load_config(&dir.admin_toml())?;
    let view = rt.block_on(wait_for_leader(&admin))?;
    println!();
    println!(
        "Cluster status (hsmctl status --dir {}):",
        dir.root().display()
    );
    print!("{}", view.table());
    if let Some(row) = view.nodes.iter().find(|r| r.state != "unsealed") {
        return Err(CtlError::Unexpected(format!(
            "{} is {}",
            row.name.as_deref().unwrap_or(&row.address),
            row.state
        )));
    }
    print_usage(&dir, &env);
    println!();
    println!(
        "The development cluster is running ({} node{}). Press Ctrl-C to stop it.",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" }
    );

    let outcome = rt.block_on(wait_for_stop(&mut signals, &mut nodes));
    let why = match &outcome {
        Ok(why) => *why,
        Err(_) => "every node died",
    };
    println!("{why}: stopping hsm-daemon on every node");
    for node in &mut nodes {
        node.daemon.terminate();
    }
    for node in &mut nodes {
        match node.daemon.stop() {
            Some(status) => println!("{}: hsm-daemon stopped ({status})", node.name),
            None => println!("{}: hsm-daemon stopped", node.name),
        }
    }
    outcome.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_i_uses_two_ports_from_the_base() {
        assert_eq!(dev_ports(5700, 1).unwrap(), (5700, 5701));
        assert_eq!(dev_ports(5700, 2).unwrap(), (5702, 5703));
        assert_eq!(dev_ports(5700, 3).unwrap(), (5704, 5705));
        assert_eq!(dev_ports(65534, 1).unwrap(), (65534, 65535));
        assert!(dev_ports(65534, 2).is_err());
        assert!(dev_ports(65535, 1).is_err());
        assert!(dev_ports(5700, 0).is_err());
    }

    #[test]
    fn node_names_and_numbers() {
        assert_eq!(dev_node_name(2), "node2");
        assert_eq!(dev_node_number("node12"), Some(12));
        assert_eq!(dev_node_number("node0"), None);
        assert_eq!(dev_node_number("other"), None);
    }
}
