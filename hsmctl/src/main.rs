//! `hsmctl`: the operator's command-line tool for HSM nodes.
//!
//! It creates cluster directories (CA, certificates, configuration, sealed store), unseals
//! nodes, shows their status and manages users, always through the node's authenticated
//! protocol (it never touches a store directly), and runs a one-command development cluster.
#![forbid(unsafe_code)]

mod client;
mod daemon;
mod dev;
mod error;
mod init;
mod layout;
mod node;
mod ops;
mod pki;
mod secret_input;
mod status;

use clap::{Args, Parser, Subcommand, ValueEnum};
use error::{CtlError, Result};
use hsm_proto::config::ModuleConfig;
use hsm_proto::msg::Role;
use layout::{ClusterDir, DEFAULT_DIR, DEFAULT_NODE, NodeToml};
use std::path::PathBuf;
use std::process::ExitCode;

/// Operate HSM cluster nodes.
#[derive(Debug, Parser)]
#[command(name = "hsmctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a cluster directory: CA, node and client certificates, configuration files,
    /// and the first node's sealed store (runs `hsm-daemon init`): a one-node cluster that
    /// `hsmctl node add` grows.
    Init {
        /// The cluster directory to create.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// The node's name (a certificate SAN and the node's directory name).
        #[arg(long, default_value = DEFAULT_NODE)]
        node_name: String,
        /// Address the node listens on for clients.
        #[arg(long, default_value = "127.0.0.1:5700")]
        listen: String,
        /// Address the node listens on for the other nodes [default: the --listen host, its
        /// port + 1].
        #[arg(long)]
        cluster_listen: Option<String>,
        /// The cluster's name.
        #[arg(long, default_value = "hsm-cluster")]
        cluster_name: String,
        /// The initial admin user (also the name of hsmctl's client certificate).
        #[arg(long, default_value = "admin")]
        admin_user: String,
        /// Development mode: unseal with the key file D/dev.key, generate passwords into
        /// D/env. Never for real keys.
        #[arg(long)]
        dev: bool,
        /// The hsm-daemon binary (default: next to hsmctl, else on PATH).
        #[arg(long)]
        daemon_bin: Option<PathBuf>,
    },
    /// Unseal every sealed node the configuration lists, or only `--node` (passphrase from
    /// $HSM_UNSEAL_PASSPHRASE or a prompt, asked once). A joining node then awaits `hsmctl
    /// node join`.
    Unseal {
        #[command(flatten)]
        target: Target,
        /// Unseal with a development key file instead of a passphrase.
        #[arg(long)]
        dev_key_file: Option<PathBuf>,
    },
    /// Show every node's status, one row each: seal state, consensus role, term, log and
    /// applied index, lag behind the leader, the leader. Asks every node the configuration
    /// lists (unreachable ones are shown as such); exit code 0 when at least one answers.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Grow or shrink the cluster.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Run a local development cluster: build, init, start every node, unseal, join them,
    /// create user alice, print how to use it, and stop the nodes on Ctrl-C. A node that
    /// dies is reported and the others keep running. Run again, it restarts the same nodes
    /// on their data.
    Dev {
        /// The development cluster directory (reused when it exists).
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// The first port: node i listens on 127.0.0.1, client port BASE+2(i-1), cluster
        /// port BASE+2(i-1)+1 [default: 5700].
        #[arg(long)]
        port: Option<u16>,
        /// How many nodes (1 to 9). A second run starts the nodes the directory has and adds
        /// any missing ones.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
        nodes: u16,
        /// Do not run `cargo build` first.
        #[arg(long)]
        no_build: bool,
        /// The hsm-daemon binary (default: next to hsmctl, else on PATH).
        #[arg(long)]
        daemon_bin: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Prepare a new node in the cluster directory: issue its certificate (a new node id)
    /// from D/ca.key, write D/<name>/node.toml and create its store (`hsm-daemon init
    /// --join`: the unseal passphrase from $HSM_UNSEAL_PASSPHRASE or a prompt, or --dev).
    /// Then start it (`hsm-daemon run --config D/<name>/node.toml`), unseal it (`hsmctl
    /// unseal --dir D --node <name>`) and run `hsmctl node join`.
    Add {
        /// The cluster directory (made by `hsmctl init`, with its CA key).
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// The new node's name (a certificate SAN and the node's directory name).
        #[arg(long)]
        name: String,
        /// Address the node listens on for clients.
        #[arg(long)]
        listen: String,
        /// Address the node listens on for the other nodes [default: the --listen host, its
        /// port + 1].
        #[arg(long)]
        cluster_listen: Option<String>,
        /// Development mode: unseal with D/dev.key. Never for real keys.
        #[arg(long)]
        dev: bool,
        /// The hsm-daemon binary (default: next to hsmctl, else on PATH).
        #[arg(long)]
        daemon_bin: Option<PathBuf>,
    },
    /// Make a node prepared by `node add`, running and unsealed, a voting member: a member
    /// wraps the cluster domain key to the node's fresh key, the node catches up with the
    /// log, then votes (this can take minutes). Then adds its address to D/pkcs11.toml and
    /// D/admin.toml. Logs in as admin: $HSM_SO_PIN="admin:password" or a prompt. Safe to
    /// run again after a failure.
    Join {
        /// The cluster directory.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// The node's name.
        #[arg(long)]
        name: String,
    },
    /// Remove a node from the cluster for good (its id can never rejoin) and from
    /// D/pkcs11.toml and D/admin.toml. Logs in as admin ($HSM_SO_PIN or a prompt). Then stop
    /// its daemon and delete D/<name> before the name is used again.
    Remove {
        /// The cluster directory.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// The node's name.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        name: Option<String>,
        /// The node's id (as `hsmctl status` shows it).
        #[arg(long)]
        id: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user (logs in as admin: $HSM_SO_PIN="admin:password" or a prompt; the new
    /// password comes from $HSM_NEW_USER_PASSWORD or a prompt).
    Create {
        /// The new user's name.
        name: String,
        /// The new user's role.
        #[arg(long, value_enum, default_value = "crypto-user")]
        role: RoleArg,
        #[command(flatten)]
        target: Target,
    },
}

/// Which nodes to talk to: a cluster directory's admin.toml, or an explicit config file;
/// `--node` narrows it to one node of the directory.
#[derive(Debug, Args)]
struct Target {
    /// The cluster directory (its admin.toml is used) [default: hsm-dev].
    #[arg(long, conflicts_with = "config")]
    dir: Option<PathBuf>,
    /// A client configuration file (the format of pkcs11.toml, with an admin certificate).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only this node of the directory (its client address from D/<node>/node.toml).
    #[arg(long, conflicts_with = "config")]
    node: Option<String>,
}

impl Target {
    fn config(&self) -> Result<ModuleConfig> {
        let dir = ClusterDir::new(self.dir.as_deref().unwrap_or(DEFAULT_DIR.as_ref()))?;
        let path = self.config.clone().unwrap_or_else(|| dir.admin_toml());
        let mut config = client::load_config(&path)?;
        if let Some(node) = &self.node {
            config.nodes = vec![NodeToml::load(&dir.node_toml(node))?.client_addr()];
        }
        Ok(config)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Admin,
    CryptoUser,
    Auditor,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Admin => Role::Admin,
            RoleArg::CryptoUser => Role::CryptoUser,
            RoleArg::Auditor => Role::Auditor,
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Usage(format!("cannot start the async runtime: {e}")))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            dir,
            node_name,
            listen,
            cluster_listen,
            cluster_name,
            admin_user,
            dev,
            daemon_bin,
        } => {
            let opts = init::InitOptions {
                dir,
                node_name,
                listen,
                cluster_listen,
                cluster_name,
                admin_user,
                dev,
                daemon_bin,
            };
            let done = init::run(&opts)?;
            init::report(&done, &opts);
            Ok(())
        }
        Command::Unseal {
            target,
            dev_key_file,
        } => runtime()?.block_on(ops::unseal(&target.config()?, dev_key_file.as_deref())),
        Command::Status { target, json } => {
            runtime()?.block_on(status::run(&target.config()?, json))
        }
        Command::Node { command } => run_node(command),
        Command::User {
            command: UserCommand::Create { name, role, target },
        } => runtime()?.block_on(ops::create_user(&target.config()?, &name, role.into())),
        Command::Dev {
            dir,
            port,
            nodes,
            no_build,
            daemon_bin,
        } => dev::run(
            &dev::DevOptions {
                dir,
                port,
                nodes,
                no_build,
                daemon_bin,
            },
            &runtime()?,
        ),
    }
}

fn run_node(command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Add {
            dir,
            name,
            listen,
            cluster_listen,
            dev,
            daemon_bin,
        } => {
            let added = node::add(&node::AddOptions {
                dir,
                name,
                listen,
                cluster_listen,
                dev,
                daemon_bin,
            })?;
            node::report_added(&added, dev);
            Ok(())
        }
        NodeCommand::Join { dir, name } => {
            let dir = ClusterDir::new(&dir)?;
            let pin = node::admin_pin()?;
            let joined = runtime()?.block_on(node::join(&dir, &name, &pin))?;
            match joined.index {
                Some(index) => println!("{name}: joined; a voting member (log index {index})"),
                None => println!("{name}: already a voting member"),
            }
            println!(
                "{} now lists {} (so does {})",
                dir.pkcs11_toml().display(),
                joined.client_addr,
                dir.admin_toml().display()
            );
            Ok(())
        }
        NodeCommand::Remove { dir, name, id } => {
            let dir = ClusterDir::new(&dir)?;
            let which = match (name, id) {
                (Some(name), _) => node::NodeRef::Name(name),
                (None, Some(id)) => node::NodeRef::Id(id),
                (None, None) => return Err(CtlError::Usage("pass --name or --id".into())),
            };
            let pin = node::admin_pin()?;
            let removed = runtime()?.block_on(node::remove(&dir, &which, &pin))?;
            let who = removed
                .name
                .clone()
                .unwrap_or_else(|| removed.node_id.to_string());
            println!(
                "{who} (id {}): removed from the cluster (log index {})",
                removed.node_id, removed.index
            );
            println!("Its id can never rejoin. Stop its daemon; delete its directory before");
            if let Some(name) = &removed.name {
                println!(
                    "adding a node named {name} again ({}).",
                    dir.node_dir(name).display()
                );
            } else {
                println!("adding a node by that name again.");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hsmctl: error: {e}");
            ExitCode::FAILURE
        }
    }
}
