//! Quorum-committed replication of token commands: openraft 0.9.25 (`storage-v2`) with the
//! log in the node's sealed store, the state machine in the daemon, and node-to-node RPC over
//! TLS 1.3 with node certificates.
//!
//! This crate never sees plaintext key material: a [`Proposal`] carries the daemon's command
//! as opaque bytes, and the daemon puts only CDK-wrapped key blobs in it. The daemon supplies
//! the storage ([`LogBackend`], [`StateMachine`]); this crate adapts them to openraft, moves
//! RPCs between nodes ([`net`]), forwards writes to the leader and bounds how long a write may
//! wait for a quorum ([`Cluster`]).
#![forbid(unsafe_code)]

pub mod cluster;
pub mod machine;
pub mod net;
pub mod store;

#[cfg(test)]
mod tests;

pub use cluster::{BatchWritten, Cluster, ClusterError, ClusterSettings, Written};
pub use machine::{SnapshotStore, StateMachine};
pub use openraft;
pub use store::{LogBackend, LogStore, MetaKey};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's id in the cluster: random, never reused (a removed node cannot come back under it).
pub type NodeId = u64;

/// Where a node is reached: stored in the replicated membership, so every node knows every
/// other node's addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's name (a DNS name in its certificate, checked when we connect to it).
    pub name: String,
    /// `host:port` of its cluster port (node-to-node RPC).
    pub cluster_addr: String,
    /// `host:port` of its client port (the module and hsmctl).
    pub client_addr: String,
}

/// Makes a retried proposal apply once: the state machine remembers the keys it applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestKey(pub u128);

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One command for the log: the daemon's encoded command (wrapped key blobs only) and the key
/// that deduplicates it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Deduplication key.
    pub key: RequestKey,
    /// The daemon's command, encoded.
    pub command: Vec<u8>,
}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The command holds only wrapped material, but it is not ours to print.
        write!(f, "Proposal({}, {} bytes)", self.key, self.command.len())
    }
}

/// One log entry: the proposals that reached the leader together (group commit: openraft
/// 0.9 writes each entry with its own fsync, so concurrent calls share an entry). Each
/// proposal is still one self-contained command of one client call, applied in order, each
/// on its own (a refusal of one does not touch the others).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Proposal>);

/// The state machine's answers to one log entry: one per proposal, in order (none for blank
/// and membership entries); opaque to this crate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Vec<Vec<u8>>);

openraft::declare_raft_types!(
    /// The cluster's openraft types.
    pub TypeConfig:
        D = Batch,
        R = Applied,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = tokio::fs::File,
);

/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log position.
pub type LogId = openraft::LogId<NodeId>;
/// The membership as the state machine stores it.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
/// The running openraft instance.
pub type Raft = openraft::Raft<TypeConfig>;
/// Metrics of the running instance.
pub type Metrics = openraft::RaftMetrics<NodeId, NodeInfo>;

/// A storage fault reported by the daemon's store. Fatal to the node's consensus, as openraft
/// treats every storage error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault(pub String);

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage fault: {}", self.0)
    }
}

impl std::error::Error for Fault {}
