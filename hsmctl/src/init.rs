//! `hsmctl init`: a new cluster directory with its CA, certificates, configuration files and
//! an initialized (sealed) node store.

use crate::daemon::{self, InitSecrets};
use crate::error::{CtlError, Result};
use crate::layout::{ClusterDir, DevEnv, NodeToml, fresh_node_id, local_addr, write_new};
use crate::pki::{ClusterCa, Issued};
use crate::secret_input;
use hsm_proto::Password;
use hsm_proto::config::ModuleConfig;
use hsm_proto::tls::CertRole;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The crypto user `hsmctl dev` creates.
pub const DEV_USER: &str = "alice";
/// The module file name cargo produces.
pub const MODULE_FILE: &str = "libhsm_pkcs11.so";

/// What `init` is asked to do.
#[derive(Debug)]
pub struct InitOptions {
    /// The cluster directory.
    pub dir: PathBuf,
    /// The node's name.
    pub node_name: String,
    /// Where the node listens for clients.
    pub listen: String,
    /// Where the node listens for the other nodes (default: the client port + 1).
    pub cluster_listen: Option<String>,
    /// The cluster's name.
    pub cluster_name: String,
    /// The initial admin.
    pub admin_user: String,
    /// Development mode: key-file unseal, generated passwords.
    pub dev: bool,
    /// An explicit `hsm-daemon`.
    pub daemon_bin: Option<PathBuf>,
}

/// What `init` made.
#[derive(Debug)]
pub struct Initialized {
    /// The cluster directory.
    pub dir: ClusterDir,
    /// The node's configuration file.
    pub node_toml: PathBuf,
    /// The development environment (dev mode only).
    pub dev_env: Option<DevEnv>,
}

/// Files and directories created so far, removed again if `init` (or `node add`) fails
/// halfway, so that a failed command can simply be run again.
#[derive(Debug, Default)]
pub struct Created {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Created {
    /// Creates a directory (if missing) and remembers it.
    ///
    /// # Errors
    /// If it cannot be created.
    pub fn dir(&mut self, path: &Path) -> Result<()> {
        if !path.exists() {
            fs::create_dir(path).map_err(|e| CtlError::io("create directory", path, e))?;
            self.dirs.push(path.to_path_buf());
        }
        Ok(())
    }

    /// Writes a new file and remembers it.
    ///
    /// # Errors
    /// If it exists or cannot be written.
    pub fn file(&mut self, path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        write_new(path, bytes, mode)?;
        self.files.push(path.to_path_buf());
        Ok(())
    }

    /// Writes a certificate (0644) and its key (0600).
    ///
    /// # Errors
    /// If either exists or cannot be written.
    pub fn issued(&mut self, cert: &Path, key: &Path, issued: &Issued) -> Result<()> {
        self.file(cert, issued.cert_pem.as_bytes(), 0o644)?;
        self.file(key, issued.key_pem.as_bytes(), 0o600)
    }

    /// Remembers a file something else created.
    pub fn created_file(&mut self, path: &Path) {
        self.files.push(path.to_path_buf());
    }

    /// Removes everything remembered, newest first.
    pub fn undo(self) {
        for f in self.files.iter().rev() {
            let _ = fs::remove_file(f);
        }
        // The node's data directory may hold whatever a failed daemon init left behind.
        for d in self.dirs.iter().rev() {
            if d.file_name().is_some_and(|n| n == "data") {
                let _ = fs::remove_dir_all(d);
            } else {
                let _ = fs::remove_dir(d);
            }
        }
    }
}

/// A client configuration of `dir` for one node address, with the named client certificate.
pub fn module_config(dir: &ClusterDir, addr: &str, client: &str) -> ModuleConfig {
    ModuleConfig {
        nodes: vec![addr.to_owned()],
        server_name: None,
        ca_cert: dir.ca_cert(),
        client_cert: dir.client_cert(client),
        client_key: dir.client_key(client),
        token_label: None,
        log_file: None,
        log_level: None,
        request_timeout_ms: None,
        connect_timeout_ms: None,
        failover_timeout_ms: None,
        connections_per_node: None,
        discover_members: None,
        membership_refresh_ms: None,
    }
}

/// Parses a `--listen`-style option: an IP address and a port.
///
/// # Errors
/// If it is not one.
pub fn parse_listen(option: &str, value: &str) -> Result<SocketAddr> {
    value.parse().map_err(|_| {
        CtlError::Usage(format!(
            "{option} {value}: expected an IP address and port such as 127.0.0.1:5700"
        ))
    })
}

/// A node's client and cluster addresses from `--listen` and `--cluster-listen` (default: the
/// client port + 1), which must differ.
///
/// # Errors
/// `Usage` for an address that does not parse, or two equal ones.
pub fn node_ports(listen: &str, cluster_listen: Option<&str>) -> Result<(SocketAddr, SocketAddr)> {
    let listen = parse_listen("--listen", listen)?;
    let cluster_listen = match cluster_listen {
        Some(addr) => parse_listen("--cluster-listen", addr)?,
        None => default_cluster_listen(listen)?,
    };
    if cluster_listen == listen {
        return Err(CtlError::Usage(format!(
            "--cluster-listen {cluster_listen}: the cluster port must differ from the client port"
        )));
    }
    Ok((listen, cluster_listen))
}

/// The cluster port a node gets when none is given: the same host, the client port + 1.
///
/// # Errors
/// If the client port is the last one.
pub fn default_cluster_listen(listen: SocketAddr) -> Result<SocketAddr> {
    let port = listen.port().checked_add(1).ok_or_else(|| {
        CtlError::Usage(format!(
            "--listen {listen}: no port after it for the cluster port; pass --cluster-listen"
        ))
    })?;
    Ok(SocketAddr::new(listen.ip(), port))
}

/// Checks a node name: it names a directory and is a DNS name in the node's certificate.
///
/// # Errors
/// If it is empty or has other characters than letters, digits, '-' and '.'.
pub fn check_node_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok && !matches!(name, "clients" | "data") {
        Ok(())
    } else {
        Err(CtlError::Usage(format!(
            "node name {name:?}: use letters, digits, '-' and '.' (not `clients`)"
        )))
    }
}

/// Encodes a configuration file.
///
/// # Errors
/// If the value cannot be encoded.
pub fn toml_of<T: serde::Serialize>(value: &T) -> Result<String> {
    toml::to_string(value).map_err(|e| CtlError::Config(format!("cannot encode TOML: {e}")))
}

/// Creates and initializes a cluster directory.
///
/// # Errors
/// If the directory is already initialized, an argument is invalid, a secret cannot be read,
/// or any step fails (what was created is removed again).
pub fn run(opts: &InitOptions) -> Result<Initialized> {
    let dir = ClusterDir::new(&opts.dir)?;
    if dir.is_initialized() {
        return Err(CtlError::Usage(format!(
            "{} is already initialized (it has {}); refusing to overwrite it",
            dir.root().display(),
            dir.ca_cert().display()
        )));
    }
    let (listen, cluster_listen) = node_ports(&opts.listen, opts.cluster_listen.as_deref())?;
    check_node_name(&opts.node_name)?;
    if opts.admin_user == "app" {
        // clients/app.* is the application certificate; the admin's must be another file.
        return Err(CtlError::Usage(
            "--admin-user app: `app` names the application certificate; choose another name".into(),
        ));
    }
    let bin = daemon::locate(opts.daemon_bin.as_deref())?;

    // Ask for every secret before writing anything, so a typo at a prompt leaves nothing behind.
    let (passphrase, admin_password, user_password) = if opts.dev {
        (
            None,
            secret_input::generate_password()?,
            Some(secret_input::generate_password()?),
        )
    } else {
        let passphrase =
            secret_input::obtain(secret_input::ENV_UNSEAL, "New unseal passphrase: ", true)?;
        let admin = secret_input::obtain(
            secret_input::ENV_ADMIN_PASSWORD,
            &format!("Password for the admin user {:?}: ", opts.admin_user),
            true,
        )?;
        (Some(passphrase), admin, None)
    };

    let mut created = Created::default();
    match write_all(
        opts,
        &dir,
        (listen, cluster_listen),
        &mut created,
        &bin,
        passphrase.as_ref(),
        &admin_password,
    ) {
        Ok(node_toml) => {
            let dev_env = match user_password {
                Some(user_password) => {
                    let env = DevEnv {
                        module: daemon::own_dir()?.join(MODULE_FILE),
                        conf: dir.pkcs11_toml(),
                        user_pin: Password::new(format!(
                            "{DEV_USER}:{}",
                            user_password.expose_secret()
                        )),
                        so_pin: Password::new(format!(
                            "{}:{}",
                            opts.admin_user,
                            admin_password.expose_secret()
                        )),
                    };
                    env.write(&dir.env_file())?;
                    Some(env)
                }
                None => None,
            };
            Ok(Initialized {
                dir,
                node_toml,
                dev_env,
            })
        }
        Err(e) => {
            created.undo();
            Err(e)
        }
    }
}

fn write_all(
    opts: &InitOptions,
    dir: &ClusterDir,
    (listen, cluster_listen): (SocketAddr, SocketAddr),
    created: &mut Created,
    bin: &Path,
    passphrase: Option<&Password>,
    admin_password: &Password,
) -> Result<PathBuf> {
    if let Some(parent) = dir.root().parent() {
        fs::create_dir_all(parent).map_err(|e| CtlError::io("create directory", parent, e))?;
    }
    created.dir(dir.root())?;
    let node_dir = dir.node_dir(&opts.node_name);
    created.dir(&node_dir)?;
    created.dir(&dir.root().join("clients"))?;

    let ca = ClusterCa::generate(&opts.cluster_name)?;
    created.issued(&dir.ca_cert(), &dir.ca_key(), &ca.issued)?;
    // The same id goes into the certificate and node.toml: the daemon checks they agree.
    let node_id = fresh_node_id()?;
    created.issued(
        &node_dir.join("node.pem"),
        &node_dir.join("node.key"),
        &ca.issue_node(&opts.node_name, node_id)?,
    )?;
    for (client, role) in [
        (opts.admin_user.as_str(), CertRole::Admin),
        ("app", CertRole::App),
    ] {
        let issued = ca.issue_client(client, role)?;
        created.issued(&dir.client_cert(client), &dir.client_key(client), &issued)?;
    }

    let node_toml = dir.node_toml(&opts.node_name);
    let node = NodeToml::standard(
        &opts.node_name,
        node_id,
        &listen.to_string(),
        &cluster_listen.to_string(),
    );
    created.file(&node_toml, toml_of(&node)?.as_bytes(), 0o644)?;
    let addr = local_addr(&listen.to_string());
    created.file(
        &dir.pkcs11_toml(),
        toml_of(&module_config(dir, &addr, "app"))?.as_bytes(),
        0o644,
    )?;
    created.file(
        &dir.admin_toml(),
        toml_of(&module_config(dir, &addr, &opts.admin_user))?.as_bytes(),
        0o644,
    )?;
    created.dir(&node_dir.join("data"))?;

    let dev_key = if opts.dev {
        daemon::create_dev_key(&dir.dev_key())?;
        created.created_file(&dir.dev_key());
        Some(dir.dev_key())
    } else {
        None
    };
    daemon::init_store(
        bin,
        &node_toml,
        &opts.cluster_name,
        &opts.admin_user,
        dev_key.as_deref(),
        &InitSecrets {
            passphrase,
            admin_password,
        },
    )?;
    Ok(node_toml)
}

/// Prints what `init` made and what to do next (never a secret).
pub fn report(init: &Initialized, opts: &InitOptions) {
    let root = init.dir.root().display();
    println!("Initialized cluster {:?} in {root}", opts.cluster_name);
    println!("  CA certificate:   {}", init.dir.ca_cert().display());
    println!(
        "  node {}:       {}",
        opts.node_name,
        init.node_toml.display()
    );
    println!("  PKCS#11 config:   {}", init.dir.pkcs11_toml().display());
    println!("  hsmctl config:    {}", init.dir.admin_toml().display());
    if init.dev_env.is_some() {
        println!(
            "  DEVELOPMENT: unseal key file {} and passwords in {} (do not use for real keys)",
            init.dir.dev_key().display(),
            init.dir.env_file().display()
        );
    }
    println!("The node is sealed. Next:");
    println!("  hsm-daemon run --config {}", init.node_toml.display());
    if init.dev_env.is_some() {
        println!(
            "  hsmctl unseal --dir {root} --dev-key-file {}",
            init.dir.dev_key().display()
        );
    } else {
        println!("  hsmctl unseal --dir {root}");
    }
    println!("  hsmctl user create alice --dir {root}");
    println!("Grow it to three nodes (a quorum survives one failure):");
    println!("  hsmctl node add --dir {root} --name node2 --listen HOST:PORT");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_port_defaults_to_the_next_port() {
        let listen: SocketAddr = "127.0.0.1:5700".parse().unwrap();
        assert_eq!(
            default_cluster_listen(listen).unwrap().to_string(),
            "127.0.0.1:5701"
        );
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(default_cluster_listen(v6).unwrap().to_string(), "[::1]:10");
        assert!(default_cluster_listen("127.0.0.1:65535".parse().unwrap()).is_err());
    }

    #[test]
    fn node_names_are_directory_and_dns_safe() {
        for good in ["node1", "hsm-a.example", "n"] {
            check_node_name(good).unwrap();
        }
        for bad in ["", "a/b", "..", ".hidden", "clients", "a b", "nöde"] {
            assert!(check_node_name(bad).is_err(), "{bad:?}");
        }
    }
}
