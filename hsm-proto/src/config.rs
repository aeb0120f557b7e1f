//! The PKCS#11 module's configuration file (TOML), shared by the module that reads it and
//! `hsmctl` that writes it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Environment variable naming the module's configuration file.
pub const MODULE_CONFIG_ENV: &str = "HSM_PKCS11_CONF";
/// Where the module looks when the variable is not set.
pub const DEFAULT_MODULE_CONFIG_PATH: &str = "/etc/hsm/pkcs11.toml";

/// The module's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// Seed node addresses, `host:port`. The module learns the rest of the cluster's members
    /// from the first that answers, and spreads its requests over all of them.
    pub nodes: Vec<String>,
    /// The name to verify in the node certificates (default: the host part of the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This client's certificate (PEM).
    pub client_cert: PathBuf,
    /// This client's private key (PEM).
    pub client_key: PathBuf,
    /// Token label shown in `CK_TOKEN_INFO` (default `hsm-cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    /// Log file; the module logs to stderr when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// Log filter (`error`, `warn`, `info`, `debug`); default `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// How long one attempt of a request on one node may take, in milliseconds (default
    /// 10000; key-pair generation is always given at least 300 s). A node that does not answer
    /// in time is treated as failed and the request moves to another node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// How long one connection attempt (TCP, TLS, handshake) may take, in milliseconds
    /// (default 3000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// How long one PKCS#11 call may spend in all, failing over from node to node and waiting
    /// for one to serve (a leader election, a node coming back), in milliseconds (default
    /// 30000). Only when it is spent does the application get `CKR_DEVICE_ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout_ms: Option<u64>,
    /// Connections kept open to each node (default 1: requests are pipelined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_per_node: Option<usize>,
    /// Whether the module learns the cluster's members from the nodes (default true). With
    /// `false` it uses exactly the nodes listed here (to pin an application to chosen nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discover_members: Option<bool>,
    /// How often the module asks the cluster for its membership, in milliseconds (default
    /// 5000): a node added later is used, a removed one dropped, without editing this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership_refresh_ms: Option<u64>,
}

impl ModuleConfig {
    /// The path the module reads: `$HSM_PKCS11_CONF`, else the default path.
    pub fn path_from_env() -> PathBuf {
        std::env::var_os(MODULE_CONFIG_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE_CONFIG_PATH))
    }

    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// A message naming the file and the problem.
    pub fn load(path: &Path) -> Result<ModuleConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read PKCS#11 config {}: {e}", path.display()))?;
        let config: ModuleConfig = toml::from_str(&text)
            .map_err(|e| format!("bad PKCS#11 config {}: {e}", path.display()))?;
        if config.nodes.is_empty() {
            return Err(format!(
                "bad PKCS#11 config {}: `nodes` is empty",
                path.display()
            ));
        }
        Ok(config)
    }
}
