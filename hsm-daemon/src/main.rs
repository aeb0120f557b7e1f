//! `hsm-daemon`: `init` creates a node's sealed store; `run` serves it.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use cluster_sync::net::{ClusterSlot, Network};
use hsm_daemon::config::NodeConfig;
use hsm_daemon::error::Error;
use hsm_daemon::node::{self, JOIN_MARKER_KEY, Node, SealMeta, StateSlot};
use hsm_daemon::seal::{ClusterDomainKey, KEY_LEN, UnsealMethod};
use hsm_daemon::store::Store;
use hsm_daemon::store::redb_store::RedbStore;
use hsm_daemon::store::sealed::{SEAL_META_KEY, SealedStore};
use hsm_daemon::store::{Batch, Table};
use hsm_daemon::token::{ClusterIdentity, NSK_CHECK_KEY, TokenState};
use hsm_daemon::{harden, server, users};
use hsm_proto::msg::{Role, UnsealSecret};
use hsm_proto::{Password, SecretBytes};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "hsm-daemon", version, about = "One node of the HSM cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the node's sealed store. Reads from stdin, one per line: the unseal passphrase
    /// (not with --dev-key-file), then the first admin's password.
    Init {
        /// The node configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Cluster name.
        #[arg(long, default_value = "hsm-cluster")]
        cluster_name: String,
        /// Name of the first admin.
        #[arg(long, default_value = "admin")]
        admin_user: String,
        /// Development only: unseal with this 32-byte key file (created if missing) instead of
        /// a passphrase.
        #[arg(long)]
        dev_key_file: Option<PathBuf>,
        /// Make the store of a node that will join an existing cluster (`hsmctl node add`):
        /// no cluster domain key and no admin of its own; both come from the cluster. Reads
        /// only the unseal passphrase.
        #[arg(long)]
        join: bool,
    },
    /// Serve. The node starts sealed.
    Run {
        /// The node configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Cmd::Init {
            config,
            cluster_name,
            admin_user,
            dev_key_file,
            join,
        } => init(
            &config,
            &cluster_name,
            &admin_user,
            dev_key_file.as_deref(),
            join,
        ),
        Cmd::Run { config } => run(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hsm-daemon: {message}");
            ExitCode::FAILURE
        }
    }
}

fn read_secret_line(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    what: &str,
) -> Result<Password, String> {
    let line = lines
        .next()
        .ok_or_else(|| format!("expected the {what} on stdin"))?
        .map_err(|e| format!("cannot read the {what}: {e}"))?;
    Ok(Password::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

fn open_store(config: &NodeConfig) -> Result<Arc<dyn Store>, String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", config.data_dir.display()))?;
    set_private(&config.data_dir, 0o700);
    let store = RedbStore::open(&config.data_dir.join("store.redb")).map_err(|e| e.to_string())?;
    Ok(Arc::new(store))
}

fn set_private(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

fn dev_key(path: &Path) -> Result<SecretBytes, String> {
    if !path.exists() {
        let mut key = zeroize::Zeroizing::new(vec![0u8; KEY_LEN]);
        hsm_daemon::seal::random_bytes(&mut key).map_err(|e| e.to_string())?;
        std::fs::write(path, &key[..])
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        set_private(path, 0o600);
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(SecretBytes::new(bytes))
}

fn init(
    config_path: &Path,
    cluster: &str,
    admin: &str,
    dev_key_file: Option<&Path>,
    join: bool,
) -> Result<(), String> {
    let config = NodeConfig::load(config_path)?;
    let store = open_store(&config)?;
    if SealMeta::read(store.as_ref())
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Err(format!(
            "{} is already initialized",
            config.data_dir.display()
        ));
    }
    users::check_name(admin).map_err(|e| e.message)?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let (method, secret) = match dev_key_file {
        Some(path) => {
            eprintln!(
                "hsm-daemon: WARNING: development unseal with key file {}",
                path.display()
            );
            (
                UnsealMethod::new_dev_key_file(),
                UnsealSecret::DevKey(dev_key(path)?),
            )
        }
        None => {
            let pass = read_secret_line(&mut lines, "unseal passphrase")?;
            if pass.expose_secret().len() < 8 {
                return Err("the unseal passphrase must be at least 8 characters".into());
            }
            (
                UnsealMethod::new_passphrase(),
                UnsealSecret::Passphrase(pass),
            )
        }
    };
    let method = method.map_err(|e| e.to_string())?;
    let nsk_method = method.clone();
    let meta = SealMeta {
        version: 1,
        node: config.node_name.clone(),
        cluster: if join {
            "(joining)".to_owned()
        } else {
            cluster.to_owned()
        },
        method,
    };
    let mut batch = Batch::default();
    if join {
        let nsk = nsk_method.derive(&secret).map_err(|e| e.to_string())?;
        let sealed = SealedStore::new(store.clone(), nsk);
        // Proves the unseal secret at unseal, before the cluster domain key exists here.
        let mut check = hsm_daemon::store::sealed::SealedBatch::default();
        check.put(
            Table::Meta,
            NSK_CHECK_KEY.to_vec(),
            zeroize::Zeroizing::new(b"nsk".to_vec()),
        );
        sealed.commit(check).map_err(|e| e.to_string())?;
        batch.put(Table::Meta, JOIN_MARKER_KEY.to_vec(), b"1".to_vec());
    } else {
        let admin_password = read_secret_line(&mut lines, "admin password")?;
        let admin_record =
            users::new_record(Role::Admin, &admin_password).map_err(|e| e.message)?;
        let nsk = nsk_method.derive(&secret).map_err(|e| e.to_string())?;
        let sealed = SealedStore::new(store.clone(), nsk);
        let cdk = ClusterDomainKey::generate().map_err(|e| e.to_string())?;
        let identity = ClusterIdentity::generate(cluster).map_err(|e| e.to_string())?;
        // The sealed records first, the clear seal record last: a crash in between leaves a
        // store that still reads as uninitialized and can be initialized again.
        TokenState::initialize(&sealed, &cdk, &identity, (admin, admin_record))
            .map_err(|e: Error| e.to_string())?;
    }
    batch.put(
        Table::Meta,
        SEAL_META_KEY.to_vec(),
        postcard::to_allocvec(&meta).map_err(|e| format!("encoding failed: {e}"))?,
    );
    store.commit(batch).map_err(|e| e.to_string())?;
    if join {
        eprintln!(
            "hsm-daemon: initialized joining node {} (id {}) in {}; start it, unseal it, and admit it with `hsmctl node add`",
            config.node_name,
            config.node_id,
            config.data_dir.display()
        );
    } else {
        eprintln!(
            "hsm-daemon: initialized node {} (id {}) of cluster {cluster} in {} (admin user: {admin})",
            config.node_name,
            config.node_id,
            config.data_dir.display()
        );
    }
    Ok(())
}

fn run(config_path: &Path) -> Result<(), String> {
    let hardening = harden::harden_process()?;
    for w in &hardening.warnings {
        tracing::warn!("{w}");
    }
    let config = NodeConfig::load(config_path)?;
    let store = open_store(&config)?;
    let tls = hsm_proto::tls::server_config(&config.ca_cert, &config.node_cert, &config.node_key)
        .map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hsm-io")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let slot: ClusterSlot = Arc::default();
    let state_slot: StateSlot = Arc::default();
    let authorize = node::authorize(state_slot.clone());
    let network = match &config.cluster_listen {
        Some(_) => {
            let client = hsm_proto::tls::cluster_client_config(
                &config.ca_cert,
                &config.node_cert,
                &config.node_key,
            )
            .map_err(|e| e.to_string())?;
            Some(Network::new(Arc::new(client), authorize.clone()))
        }
        None => None,
    };
    let node = Arc::new(
        Node::new(
            config.clone(),
            store,
            runtime.handle().clone(),
            network,
            slot.clone(),
            state_slot,
        )
        .map_err(|e| e.message)?,
    );
    let stop_node = node.clone();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        if let Some(cluster_listen) = &config.cluster_listen {
            let cluster_tls = hsm_proto::tls::cluster_server_config(
                &config.ca_cert,
                &config.node_cert,
                &config.node_key,
            )
            .map_err(|e| e.to_string())?;
            let cluster_listener = tokio::net::TcpListener::bind(cluster_listen)
                .await
                .map_err(|e| format!("cannot listen on {cluster_listen}: {e}"))?;
            let cluster_addr = cluster_listener.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(cluster_sync::net::serve(
                cluster_listener,
                tokio_rustls::TlsAcceptor::from(Arc::new(cluster_tls)),
                slot,
                authorize,
                config.node_name.clone(),
            ));
            eprintln!("hsm-daemon: cluster port on {cluster_addr}");
        }
        tracing::info!(
            "node {} (id {}) is SEALED; unseal it with `hsmctl unseal`",
            node.name(),
            node.id()
        );
        eprintln!("hsm-daemon: listening on {addr}");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        tokio::select! {
            r = server::serve(listener, acceptor, node) => r.map_err(|e| e.to_string()),
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); Ok(()) }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); Ok(()) }
        }
    })?;
    if let Some(token) = stop_node.token() {
        let cluster = token.cluster().clone();
        let _ = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(2), cluster.shutdown()).await
        });
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
