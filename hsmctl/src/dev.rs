//! `hsmctl dev`: a working local cluster in one command, like `vault server -dev`.
//!
//! Builds the daemon and the module when run through cargo, initializes a development
//! directory on first use (key-file unseal, generated passwords), runs the daemon as a child
//! process, unseals it, makes sure the crypto user `alice` exists, writes `D/env`, shows the
//! cluster in use, and stops the daemon on Ctrl-C or SIGTERM. A second run reuses everything.

use crate::client::{NodeClient, load_config};
use crate::daemon::{self, RunningDaemon};
use crate::error::{CtlError, Result};
use crate::init::{self, DEV_USER, InitOptions, MODULE_FILE, toml_of};
use crate::layout::{ClusterDir, DEFAULT_NODE, DevEnv, NodeToml, replace};
use crate::ops;
use crate::secret_input::split_pin;
use hsm_proto::config::ModuleConfig;
use hsm_proto::msg::{Role, SealState, UserType};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The port `hsmctl dev` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 5700;

/// What `hsmctl dev` is asked to do.
#[derive(Debug)]
pub struct DevOptions {
    /// The cluster directory.
    pub dir: PathBuf,
    /// The port, if given.
    pub port: Option<u16>,
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

/// Unseals (if sealed), ensures the dev user, and prints the status.
async fn bring_up(dir: &ClusterDir, env: &DevEnv) -> Result<()> {
    let config = load_config(&dir.admin_toml())?;
    let mut client = NodeClient::connect(&config).await?;
    if client.status().await?.seal == SealState::Sealed {
        client.unseal(ops::dev_key_secret(&dir.dev_key())?).await?;
    }
    if ensure_dev_user(&config, env).await? {
        println!("created crypto user {DEV_USER:?}");
    }
    let status = client.status().await?;
    println!();
    println!(
        "Node status (hsmctl status --dir {}):",
        dir.root().display()
    );
    ops::print_status(&status, &client.addr);
    if status.seal != SealState::Unsealed {
        return Err(CtlError::Unexpected("the node is still sealed".into()));
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

/// Points an existing development cluster at another port: the node's and both clients'
/// configurations (certificates name hosts, not ports, so they stay valid).
fn move_to_port(dir: &ClusterDir, port: u16) -> Result<()> {
    let node_path = dir.node_toml(DEFAULT_NODE);
    let mut node = NodeToml::load(&node_path)?;
    let listen = format!("127.0.0.1:{port}");
    if node.listen == listen {
        return Ok(());
    }
    println!(
        "Moving the development cluster from {} to {listen}",
        node.listen
    );
    node.listen = listen.clone();
    replace(&node_path, toml_of(&node)?.as_bytes(), 0o644)?;
    for path in [dir.pkcs11_toml(), dir.admin_toml()] {
        let mut config = load_config(&path)?;
        config.nodes = vec![listen.clone()];
        replace(&path, toml_of(&config)?.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM, or for the daemon to die. Returns what happened.
async fn wait_for_stop(
    signals: &mut StopSignals,
    daemon: &mut RunningDaemon,
) -> Result<&'static str> {
    loop {
        tokio::select! {
            _ = signals.term.recv() => return Ok("SIGTERM"),
            _ = signals.int.recv() => return Ok("Ctrl-C"),
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some(status) = daemon.exited() {
                    return Err(CtlError::Daemon(format!(
                        "exited unexpectedly ({status}); its log ends with:\n{}",
                        daemon.log_tail(20)
                    )));
                }
            }
        }
    }
}

/// `hsmctl dev`.
///
/// # Errors
/// Any step failing; the daemon child is stopped on the way out.
pub fn run(opts: &DevOptions, rt: &Runtime) -> Result<()> {
    if !opts.no_build {
        build_if_under_cargo()?;
    }
    // Watch signals before the daemon child exists, so that a SIGTERM while it starts still
    // stops it cleanly instead of leaving it orphaned.
    let mut signals = {
        let _guard = rt.enter();
        StopSignals::watch()?
    };
    let bin = daemon::locate(opts.daemon_bin.as_deref())?;
    let dir = ClusterDir::new(&opts.dir)?;
    if dir.is_initialized() {
        if !dir.dev_key().is_file() || !dir.env_file().is_file() {
            return Err(CtlError::Usage(format!(
                "{} is a cluster directory without {} and {}: it was not made by \
                 `hsmctl dev` or `hsmctl init --dev`; use `hsm-daemon run` and `hsmctl unseal`",
                dir.root().display(),
                dir.dev_key().display(),
                dir.env_file().display()
            )));
        }
        if let Some(port) = opts.port {
            move_to_port(&dir, port)?;
        }
        println!(
            "Reusing the development cluster in {}",
            dir.root().display()
        );
    } else {
        let port = opts.port.unwrap_or(DEFAULT_PORT);
        let init_opts = InitOptions {
            dir: opts.dir.clone(),
            node_name: DEFAULT_NODE.into(),
            listen: format!("127.0.0.1:{port}"),
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
    }

    // Passwords come back from D/env; the module path is refreshed in case the build moved.
    let mut env = DevEnv::load(&dir.env_file())?;
    env.module = daemon::own_dir()?.join(MODULE_FILE);
    env.conf = dir.pkcs11_toml();
    env.write(&dir.env_file())?;

    let log = dir.node_log(DEFAULT_NODE);
    println!("Starting hsm-daemon (log: {})", log.display());
    let mut node = RunningDaemon::start(&bin, &dir.node_toml(DEFAULT_NODE), &log)?;
    println!("hsm-daemon (pid {}) listens on {}", node.pid(), node.addr);

    if let Err(e) = rt.block_on(bring_up(&dir, &env)) {
        node.stop();
        return Err(e);
    }
    print_usage(&dir, &env);
    println!();
    println!("The development cluster is running. Press Ctrl-C to stop it.");

    let why = rt.block_on(wait_for_stop(&mut signals, &mut node))?;
    println!("{why}: stopping hsm-daemon");
    match node.stop() {
        Some(status) => println!("hsm-daemon stopped ({status})"),
        None => println!("hsm-daemon stopped"),
    }
    Ok(())
}
