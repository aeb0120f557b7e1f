//! The node's configuration file (`node.toml`).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A node's configuration. Relative paths are resolved against the directory of the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name (shown in status and the handshake; the DNS name in its certificate
    /// that other nodes check).
    pub node_name: String,
    /// This node's id in the cluster (the id in its certificate). Stores made before
    /// clusters have none: they run as node 1.
    #[serde(default = "default_node_id")]
    pub node_id: u64,
    /// Address to listen on for clients, `host:port`.
    pub listen: String,
    /// Address to listen on for other nodes, `host:port`. Without it the node runs alone (a
    /// one-node cluster that nobody can join).
    #[serde(default)]
    pub cluster_listen: Option<String>,
    /// The client address other nodes and clients use for this node (default: `listen`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// The cluster address other nodes use for this node (default: `cluster_listen`).
    #[serde(default)]
    pub cluster_advertise: Option<String>,
    /// Consensus timing and log retention.
    #[serde(default)]
    pub raft: RaftToml,
    /// Directory of the sealed store.
    pub data_dir: PathBuf,
    /// Cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM).
    pub node_cert: PathBuf,
    /// This node's TLS private key (PEM).
    pub node_key: PathBuf,
}

fn default_node_id() -> u64 {
    1
}

/// The `[raft]` table: every field optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftToml {
    /// Leader heartbeat, milliseconds (default 150).
    pub heartbeat_ms: Option<u64>,
    /// Election timeout range, milliseconds (default 800–1600).
    pub election_min_ms: Option<u64>,
    /// See `election_min_ms`.
    pub election_max_ms: Option<u64>,
    /// How long a mutation may wait for a quorum before it fails, milliseconds (default 5000).
    pub write_timeout_ms: Option<u64>,
    /// Build a snapshot every this many log entries (default 5000).
    pub snapshot_every: Option<u64>,
    /// Entries kept behind a snapshot (default 1000).
    pub keep_logs: Option<u64>,
    /// How long adding a node may wait for it to catch up, milliseconds (default 120000).
    pub join_timeout_ms: Option<u64>,
}

impl RaftToml {
    /// The settings, defaults filled in.
    pub fn settings(&self) -> cluster_sync::ClusterSettings {
        let d = cluster_sync::ClusterSettings::default();
        let ms = Duration::from_millis;
        cluster_sync::ClusterSettings {
            heartbeat: self.heartbeat_ms.map_or(d.heartbeat, ms),
            election: (
                self.election_min_ms.map_or(d.election.0, ms),
                self.election_max_ms.map_or(d.election.1, ms),
            ),
            write_timeout: self.write_timeout_ms.map_or(d.write_timeout, ms),
            snapshot_every: self.snapshot_every.unwrap_or(d.snapshot_every),
            keep_logs: self.keep_logs.unwrap_or(d.keep_logs),
            join_timeout: self.join_timeout_ms.map_or(d.join_timeout, ms),
        }
    }
}

impl NodeConfig {
    /// The client address others use for this node.
    pub fn client_addr(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.clone())
    }

    /// The cluster address others use for this node, if it has a cluster port.
    pub fn cluster_addr(&self) -> Option<String> {
        self.cluster_advertise
            .clone()
            .or_else(|| self.cluster_listen.clone())
    }

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
