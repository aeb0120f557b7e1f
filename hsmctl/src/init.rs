//! `hsmctl init`: a new cluster directory with its CA, certificates, configuration files and
//! an initialized (sealed) node store.

use crate::daemon::{self, InitSecrets};
use crate::error::{CtlError, Result};
use crate::layout::{ClusterDir, DevEnv, NodeToml, write_new};
use crate::pki::{ClusterCa, Issued};
use crate::secret_input;
use hsm_proto::Password;
use hsm_proto::config::ModuleConfig;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
    /// Where the node listens.
    pub listen: String,
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

/// Files and directories created so far, removed again if `init` fails halfway, so that a
/// failed `init` can simply be run again.
#[derive(Debug, Default)]
struct Created {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Created {
    fn dir(&mut self, path: &Path) -> Result<()> {
        if !path.exists() {
            fs::create_dir(path).map_err(|e| CtlError::io("create directory", path, e))?;
            self.dirs.push(path.to_path_buf());
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
        write_new(path, bytes, mode)?;
        self.files.push(path.to_path_buf());
        Ok(())
    }

    fn issued(&mut self, cert: &Path, key: &Path, issued: &Issued) -> Result<()> {
        self.file(cert, issued.cert_pem.as_bytes(), 0o644)?;
        self.file(key, issued.key_pem.as_bytes(), 0o600)
    }

    fn undo(self) {
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

/// The address a client on this machine uses to reach a node listening on `listen`.
fn client_addr(listen: SocketAddr) -> String {
    match listen.ip() {
        ip if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port()).to_string()
        }
        _ => listen.to_string(),
    }
}

fn module_config(dir: &ClusterDir, addr: &str, client: &str) -> ModuleConfig {
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
    let listen: SocketAddr = opts.listen.parse().map_err(|_| {
        CtlError::Usage(format!(
            "--listen {}: expected an IP address and port such as 127.0.0.1:5700",
            opts.listen
        ))
    })?;
    if opts.node_name.is_empty()
        || !opts
            .node_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(CtlError::Usage(format!(
            "--node-name {:?}: use letters, digits, '-' and '.'",
            opts.node_name
        )));
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
        listen,
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
    listen: SocketAddr,
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
    created.issued(
        &node_dir.join("node.pem"),
        &node_dir.join("node.key"),
        &ca.issue_node(&opts.node_name)?,
    )?;
    for client in [opts.admin_user.as_str(), "app"] {
        let issued = ca.issue_client(client)?;
        created.issued(&dir.client_cert(client), &dir.client_key(client), &issued)?;
    }

    let node_toml = dir.node_toml(&opts.node_name);
    let node = NodeToml::standard(&opts.node_name, &listen.to_string());
    created.file(&node_toml, toml_of(&node)?.as_bytes(), 0o644)?;
    let addr = client_addr(listen);
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
        created.files.push(dir.dev_key());
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
}
