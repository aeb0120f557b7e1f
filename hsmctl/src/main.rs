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
mod ops;
mod pki;
mod secret_input;

use clap::{Args, Parser, Subcommand, ValueEnum};
use error::{CtlError, Result};
use hsm_proto::msg::Role;
use layout::{ClusterDir, DEFAULT_DIR, DEFAULT_NODE};
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
    /// and the node's sealed store (runs `hsm-daemon init`).
    Init {
        /// The cluster directory to create.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// The node's name (a certificate SAN and the node's directory name).
        #[arg(long, default_value = DEFAULT_NODE)]
        node_name: String,
        /// Address the node listens on.
        #[arg(long, default_value = "127.0.0.1:5700")]
        listen: String,
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
    /// Unseal a node (passphrase from $HSM_UNSEAL_PASSPHRASE or a prompt).
    Unseal {
        #[command(flatten)]
        target: Target,
        /// Unseal with a development key file instead of a passphrase.
        #[arg(long)]
        dev_key_file: Option<PathBuf>,
    },
    /// Show a node's status (exit code 0 when the node answers, sealed or not).
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Run a local development cluster: build, init, start, unseal, create user alice, print
    /// how to use it, and stop the node on Ctrl-C.
    Dev {
        /// The development cluster directory (reused when it exists).
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// The port the node listens on (127.0.0.1) [default: 5700].
        #[arg(long)]
        port: Option<u16>,
        /// Do not run `cargo build` first.
        #[arg(long)]
        no_build: bool,
        /// The hsm-daemon binary (default: next to hsmctl, else on PATH).
        #[arg(long)]
        daemon_bin: Option<PathBuf>,
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

/// Which node to talk to: a cluster directory's admin.toml, or an explicit config file.
#[derive(Debug, Args)]
struct Target {
    /// The cluster directory (its admin.toml is used).
    #[arg(long, conflicts_with = "config")]
    dir: Option<PathBuf>,
    /// A client configuration file (the format of pkcs11.toml, with an admin certificate).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Target {
    fn config_path(&self) -> Result<PathBuf> {
        match (&self.config, &self.dir) {
            (Some(config), _) => Ok(config.clone()),
            (None, dir) => {
                let dir = ClusterDir::new(dir.as_deref().unwrap_or(DEFAULT_DIR.as_ref()))?;
                Ok(dir.admin_toml())
            }
        }
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
            cluster_name,
            admin_user,
            dev,
            daemon_bin,
        } => {
            let opts = init::InitOptions {
                dir,
                node_name,
                listen,
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
        } => runtime()?.block_on(ops::unseal(&target.config_path()?, dev_key_file.as_deref())),
        Command::Status { target } => runtime()?.block_on(ops::status(&target.config_path()?)),
        Command::User {
            command: UserCommand::Create { name, role, target },
        } => runtime()?.block_on(ops::create_user(&target.config_path()?, &name, role.into())),
        Command::Dev {
            dir,
            port,
            no_build,
            daemon_bin,
        } => dev::run(
            &dev::DevOptions {
                dir,
                port,
                no_build,
                daemon_bin,
            },
            &runtime()?,
        ),
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
