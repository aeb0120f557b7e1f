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
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

    /// The nodes of this directory: every `D/<name>/node.toml`, in natural order (`node2`
    /// before `node10`).
    ///
    /// # Errors
    /// If the directory cannot be read.
    pub fn node_names(&self) -> Result<Vec<String>> {
        let entries =
            fs::read_dir(&self.root).map_err(|e| CtlError::io("read directory", &self.root, e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("node.toml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        Ok(names)
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
    /// The node's id: random, nonzero, never reused, the one in its certificate.
    pub node_id: u64,
    /// `host:port` the node listens on for clients.
    pub listen: String,
    /// `host:port` the node listens on for the other nodes.
    pub cluster_listen: String,
    /// The client address others use (default: `listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// The cluster address others use (default: `cluster_listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_advertise: Option<String>,
    /// The store directory.
    pub data_dir: PathBuf,
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// The node's certificate.
    pub node_cert: PathBuf,
    /// The node's private key.
    pub node_key: PathBuf,
    /// Consensus tuning; the daemon's defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftToml>,
}

/// The optional `[raft]` table of `node.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftToml {
    /// Leader heartbeat interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Lower bound of the election timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_min_ms: Option<u64>,
    /// Upper bound of the election timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub election_max_ms: Option<u64>,
    /// How long a replicated write may take before it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_timeout_ms: Option<u64>,
    /// Log entries between snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind a snapshot (for followers catching up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_logs: Option<u64>,
    /// How long adding a node may wait for it to catch up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_timeout_ms: Option<u64>,
}

impl NodeToml {
    /// The layout `init` and `node add` write for a node living in `D/<node_name>/`.
    pub fn standard(node_name: &str, node_id: u64, listen: &str, cluster_listen: &str) -> NodeToml {
        NodeToml {
            node_name: node_name.to_owned(),
            node_id,
            listen: listen.to_owned(),
            cluster_listen: cluster_listen.to_owned(),
            advertise: None,
            cluster_advertise: None,
            data_dir: PathBuf::from("data"),
            ca_cert: PathBuf::from("../ca.pem"),
            node_cert: PathBuf::from("node.pem"),
            node_key: PathBuf::from("node.key"),
            raft: None,
        }
    }

    /// Reads a node configuration.
    ///
    /// # Errors
    /// If the file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<NodeToml> {
        let text = fs::read_to_string(path).map_err(|e| CtlError::io("read", path, e))?;
        toml::from_str(&text).map_err(|e| {
            let hint = if text.contains("node_id") {
                ""
            } else {
                " (it has no node_id: it was made by an hsmctl from before clusters; \
                 make the directory again)"
            };
            CtlError::Config(format!("bad node config {}: {e}{hint}", path.display()))
        })
    }

    /// The address clients on this machine use for the node's client port.
    pub fn client_addr(&self) -> String {
        local_addr(self.advertise.as_deref().unwrap_or(&self.listen))
    }

    /// The address the other nodes use for its cluster port.
    pub fn cluster_addr(&self) -> String {
        local_addr(
            self.cluster_advertise
                .as_deref()
                .unwrap_or(&self.cluster_listen),
        )
    }
}

/// The address a client on this machine uses to reach something listening on `listen`: an
/// unspecified address (`0.0.0.0`, `::`) becomes the loopback address.
pub fn local_addr(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()).to_string()
        }
        _ => listen.to_owned(),
    }
}

/// A fresh node id for `node.toml`: random, nonzero, and below 2^63 (TOML integers are
/// signed 64-bit, so a larger id could not be written).
///
/// # Errors
/// If the system random source fails.
pub fn fresh_node_id() -> Result<u64> {
    loop {
        let id = crate::pki::new_node_id()? >> 1;
        if id != 0 {
            return Ok(id);
        }
    }
}

/// Sorts `node2` before `node10`: the name without its trailing digits, then their value.
fn natural_key(name: &str) -> (&str, u64, &str) {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &name[stem.len()..];
    (stem, digits.parse().unwrap_or(0), name)
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
        let node = NodeToml::standard("node1", 42, "127.0.0.1:5700", "127.0.0.1:5701");
        let text = toml::to_string(&node).unwrap();
        assert_eq!(
            text,
            "node_name = \"node1\"\nnode_id = 42\nlisten = \"127.0.0.1:5700\"\n\
             cluster_listen = \"127.0.0.1:5701\"\ndata_dir = \"data\"\n\
             ca_cert = \"../ca.pem\"\nnode_cert = \"node.pem\"\nnode_key = \"node.key\"\n"
        );
        assert_eq!(toml::from_str::<NodeToml>(&text).unwrap(), node);
        assert_eq!(node.client_addr(), "127.0.0.1:5700");
        assert_eq!(node.cluster_addr(), "127.0.0.1:5701");
    }

    #[test]
    fn node_toml_with_advertised_addresses_and_raft_tuning() {
        let mut node = NodeToml::standard("n", 7, "0.0.0.0:5700", "0.0.0.0:5701");
        assert_eq!(node.client_addr(), "127.0.0.1:5700");
        assert_eq!(node.cluster_addr(), "127.0.0.1:5701");
        node.advertise = Some("hsm-a.example:5700".into());
        node.cluster_advertise = Some("10.0.0.1:5701".into());
        node.raft = Some(RaftToml {
            heartbeat_ms: Some(50),
            election_min_ms: Some(300),
            ..RaftToml::default()
        });
        let text = toml::to_string(&node).unwrap();
        assert!(
            text.ends_with("[raft]\nheartbeat_ms = 50\nelection_min_ms = 300\n"),
            "{text}"
        );
        assert_eq!(toml::from_str::<NodeToml>(&text).unwrap(), node);
        assert_eq!(node.client_addr(), "hsm-a.example:5700");
        assert_eq!(node.cluster_addr(), "10.0.0.1:5701");
    }

    #[test]
    fn fresh_node_ids_fit_in_toml() {
        for _ in 0..64 {
            let id = fresh_node_id().unwrap();
            assert!(id != 0 && i64::try_from(id).is_ok());
            let node = NodeToml::standard("n", id, "127.0.0.1:1", "127.0.0.1:2");
            let back: NodeToml = toml::from_str(&toml::to_string(&node).unwrap()).unwrap();
            assert_eq!(back.node_id, id);
        }
    }

    #[test]
    fn node_names_sort_naturally() {
        let mut names = vec!["node10", "node2", "node1", "alpha"];
        names.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        assert_eq!(names, ["alpha", "node1", "node2", "node10"]);
    }
}
