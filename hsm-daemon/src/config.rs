//! The node's configuration file (`node.toml`).

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A node's configuration. Relative paths are resolved against the directory of the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name (shown in status and the handshake).
    pub node_name: String,
    /// Address to listen on for clients, `host:port`.
    pub listen: String,
    /// Directory of the sealed store.
    pub data_dir: PathBuf,
    /// Cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM).
    pub node_cert: PathBuf,
    /// This node's TLS private key (PEM).
    pub node_key: PathBuf,
}

impl NodeConfig {
    /// Reads a configuration file.
    ///
    /// # Errors
    /// A message naming the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<NodeConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read node config {}: {e}", path.display()))?;
        let mut config: NodeConfig = toml::from_str(&text)
            .map_err(|e| format!("bad node config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.data_dir,
            &mut config.ca_cert,
            &mut config.node_cert,
            &mut config.node_key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }
}
