//! The cluster directory that `hsmctl init` creates and every other command reads:
//!
//! ```text
//! D/ca.pem  D/ca.key
//! D/<node>/node.toml  D/<node>/node.pem  D/<node>/node.key  D/<node>/data/
//! D/clients/{admin,app}.{pem,key}
//! D/pkcs11.toml  D/admin.toml  D/dev.key  D/env
//! ```

use crate::error::{CtlError, Result, absolute};
use hsm_proto::Password;
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The node name `hsmctl dev` uses and `init` defaults to.
pub const DEFAULT_NODE: &str = "node1";
/// The directory `hsmctl dev` and the other commands default to.
pub const DEFAULT_DIR: &str = "hsm-dev";

/// Paths inside one cluster directory (always absolute, so that configuration files written
/// from them work from any working directory).
#[derive(Clone, Debug)]
pub struct ClusterDir {
    root: PathBuf,
}

impl ClusterDir {
    /// A cluster directory at `root` (which need not exist yet).
    ///
    /// # Errors
    /// If the current directory cannot be read to make `root` absolute.
    pub fn new(root: &Path) -> Result<ClusterDir> {
        Ok(ClusterDir {
            root: absolute(root)?,
        })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cluster CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// The cluster CA private key.
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    /// A node's directory.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join(node)
    }

    /// A node's configuration file.
    pub fn node_toml(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("node.toml")
    }

    /// The log file `hsmctl dev` sends a node's stderr to.
    pub fn node_log(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("daemon.log")
    }

    /// A client certificate (`admin`, `app`).
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.root.join("clients").join(format!("{name}.pem"))
    }

    /// A client private key.
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.root.join("clients").join(format!("{name}.key"))
    }

    /// The PKCS#11 module's configuration (application certificate).
    pub fn pkcs11_toml(&self) -> PathBuf {
        self.root.join("pkcs11.toml")
    }

    /// `hsmctl`'s configuration (admin certificate).
    pub fn admin_toml(&self) -> PathBuf {
        self.root.join("admin.toml")
    }

    /// The development unseal key file.
    pub fn dev_key(&self) -> PathBuf {
        self.root.join("dev.key")
    }

    /// The development environment file.
    pub fn env_file(&self) -> PathBuf {
        self.root.join("env")
    }

    /// Whether `init` already ran here (any of the files it creates first or last exists).
    pub fn is_initialized(&self) -> bool {
        self.ca_cert().exists() || self.admin_toml().exists() || self.ca_key().exists()
    }
}

/// `node.toml`, exactly the fields `hsm-daemon` reads. Relative paths are resolved by the
/// daemon against the directory holding the file, which keeps a cluster directory movable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeToml {
    /// Node name (also a SAN of its certificate).
    pub node_name: String,
    /// `host:port` the node listens on.
    pub listen: String,
    /// The store directory.
    pub data_dir: PathBuf,
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// The node's certificate.
    pub node_cert: PathBuf,
    /// The node's private key.
    pub node_key: PathBuf,
}

impl NodeToml {
    /// The layout `init` writes for a node living in `D/<node_name>/`.
    pub fn standard(node_name: &str, listen: &str) -> NodeToml {
        NodeToml {
            node_name: node_name.to_owned(),
            listen: listen.to_owned(),
            data_dir: PathBuf::from("data"),
            ca_cert: PathBuf::from("../ca.pem"),
            node_cert: PathBuf::from("node.pem"),
            node_key: PathBuf::from("node.key"),
        }
    }

    /// Reads a node configuration.
    ///
    /// # Errors
    /// If the file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<NodeToml> {
        let text = fs::read_to_string(path).map_err(|e| CtlError::io("read", path, e))?;
        toml::from_str(&text)
            .map_err(|e| CtlError::Config(format!("bad node config {}: {e}", path.display())))
    }
}

/// Writes a new file that must not exist yet, with the given mode from the first byte on (so a
/// private key is never readable by others, not even briefly).
///
/// # Errors
/// If the file exists or cannot be written.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CtlError::io("create", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| CtlError::io("write", path, e))
}

/// Replaces a file's content atomically (write a sibling, then rename), with the given mode.
///
/// # Errors
/// If it cannot be written.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).map_err(|e| CtlError::io("replace", path, e))
}

/// The four variables of `D/env`, what `source D/env` gives a shell.
#[derive(Debug)]
pub struct DevEnv {
    /// `HSM_PKCS11_MODULE`: the module to load.
    pub module: PathBuf,
    /// `HSM_PKCS11_CONF`: its configuration.
    pub conf: PathBuf,
    /// `HSM_PIN`: `alice:password`.
    pub user_pin: Password,
    /// `HSM_SO_PIN`: `admin:password`.
    pub so_pin: Password,
}

const ENV_MODULE: &str = "HSM_PKCS11_MODULE";
const ENV_CONF: &str = "HSM_PKCS11_CONF";
const ENV_PIN: &str = "HSM_PIN";
const ENV_SO_PIN: &str = "HSM_SO_PIN";

impl DevEnv {
    /// The file content: one `export NAME='value'` line per variable.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, value) in [
            (ENV_MODULE, self.module.to_string_lossy().as_ref()),
            (ENV_CONF, self.conf.to_string_lossy().as_ref()),
            (ENV_PIN, self.user_pin.expose_secret()),
            (ENV_SO_PIN, self.so_pin.expose_secret()),
        ] {
            out.push_str(&format!("export {name}={}\n", shell_quote(value)));
        }
        out
    }

    /// Writes the file (mode 0600: it holds passwords).
    ///
    /// # Errors
    /// If it cannot be written.
    pub fn write(&self, path: &Path) -> Result<()> {
        replace(path, self.render().as_bytes(), 0o600)
    }

    /// Reads a file written by [`DevEnv::write`].
    ///
    /// # Errors
    /// If the file cannot be read or lacks a variable.
    pub fn load(path: &Path) -> Result<DevEnv> {
        let text = zeroize::Zeroizing::new(
            fs::read_to_string(path).map_err(|e| CtlError::io("read", path, e))?,
        );
        let mut module = None;
        let mut conf = None;
        let mut user_pin = None;
        let mut so_pin = None;
        for line in text.lines() {
            let Some(assignment) = line.trim().strip_prefix("export ") else {
                continue;
            };
            let Some((name, value)) = assignment.split_once('=') else {
                continue;
            };
            let value = shell_unquote(value.trim());
            match name.trim() {
                ENV_MODULE => module = Some(PathBuf::from(value)),
                ENV_CONF => conf = Some(PathBuf::from(value)),
                ENV_PIN => user_pin = Some(Password::new(value)),
                ENV_SO_PIN => so_pin = Some(Password::new(value)),
                _ => {}
            }
        }
        let missing =
            |name: &str| CtlError::Config(format!("{} does not set {name}", path.display()));
        Ok(DevEnv {
            module: module.ok_or_else(|| missing(ENV_MODULE))?,
            conf: conf.ok_or_else(|| missing(ENV_CONF))?,
            user_pin: user_pin.ok_or_else(|| missing(ENV_PIN))?,
            so_pin: so_pin.ok_or_else(|| missing(ENV_SO_PIN))?,
        })
    }
}

/// Single-quotes a value for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Undoes [`shell_quote`] (and accepts an unquoted value).
fn shell_unquote(value: &str) -> String {
    match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace(r"'\''", "'"),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn env_file_round_trips_with_awkward_paths() {
        let env = DevEnv {
            module: PathBuf::from("/a b/it's/libhsm_pkcs11.so"),
            conf: PathBuf::from("/x/pkcs11.toml"),
            user_pin: Password::new("alice:pw1".into()),
            so_pin: Password::new("admin:pw2".into()),
        };
        let text = env.render();
        assert!(text.starts_with("export HSM_PKCS11_MODULE='/a b/it'\\''s/libhsm_pkcs11.so'\n"));
        let dir = std::env::temp_dir().join(format!("hsmctl-env-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("env");
        env.write(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = DevEnv::load(&path).unwrap();
        assert_eq!(back.module, env.module);
        assert_eq!(back.conf, env.conf);
        assert_eq!(back.user_pin.expose_secret(), "alice:pw1");
        assert_eq!(back.so_pin.expose_secret(), "admin:pw2");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_toml_has_exactly_the_daemon_fields() {
        let text = toml::to_string(&NodeToml::standard("node1", "127.0.0.1:5700")).unwrap();
        assert_eq!(
            text,
            "node_name = \"node1\"\nlisten = \"127.0.0.1:5700\"\ndata_dir = \"data\"\n\
             ca_cert = \"../ca.pem\"\nnode_cert = \"node.pem\"\nnode_key = \"node.key\"\n"
        );
    }
}
