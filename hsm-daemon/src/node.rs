//! A node: sealed until an operator unseals it, then part of the cluster (or, a new node,
//! waiting to be admitted), then serving its token.

use crate::config::NodeConfig;
use crate::error::Error;
use crate::join::JoinKey;
use crate::replica::{SealedLog, Token};
use crate::seal::UnsealMethod;
use crate::store::Store;
use crate::store::Table;
use crate::store::sealed::{SEAL_META_KEY, SealedStore};
use crate::token::{CDK_KEY, ClusterIdentity, NSK_CHECK_KEY, TokenState};
use cluster_sync::net::{Authorize, ClusterSlot, Network};
use cluster_sync::{Cluster, LogStore, NodeInfo, SnapshotStore};
use hsm_proto::ErrorCode;
use hsm_proto::msg::{JoinPackage, MemberStatus, NodeStatus, RaftStatus, SealState, UnsealSecret};
use hsm_proto::tls::CertRole;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::runtime::Handle;

/// The clear record that marks a store made by `hsm-daemon init --join`: the node was not
/// the founder and must never initialize a cluster of its own.
pub const JOIN_MARKER_KEY: &[u8] = b"join";

/// The clear metadata record: how to derive the node sealing key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealMeta {
    /// Format version of this record.
    pub version: u32,
    /// Node name at init.
    pub node: String,
    /// Cluster name (not secret; shown by status while sealed).
    pub cluster: String,
    /// Unseal method and its parameters.
    pub method: UnsealMethod,
}

impl SealMeta {
    /// Reads the record from a raw store.
    ///
    /// # Errors
    /// `DeviceError` if the store is not initialized or the record is damaged.
    pub fn read(store: &dyn Store) -> Result<Option<SealMeta>, Error> {
        match store.get(Table::Meta, SEAL_META_KEY)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| Error::device(format!("seal metadata is damaged: {e}"))),
        }
    }
}

/// A node unsealed but not yet admitted to a cluster.
#[derive(Debug)]
struct Joining {
    store: Arc<SealedStore>,
    key: JoinKey,
}

/// The state the cluster port's authorization reads (set at unseal).
pub type StateSlot = Arc<OnceLock<Arc<TokenState>>>;

/// Builds the cluster port's authorization: a node certificate of a node not removed.
pub fn authorize(state: StateSlot) -> Authorize {
    Arc::new(move |cert| {
        let peer = hsm_proto::tls::peer_identity(cert).map_err(|e| e.to_string())?;
        if peer.role != CertRole::Node {
            return Err(format!(
                "CN={} holds a {} certificate, not a node certificate",
                peer.common_name, peer.role
            ));
        }
        let id = peer
            .node_id
            .ok_or_else(|| format!("node certificate CN={} has no node id", peer.common_name))?;
        if let Some(s) = state.get()
            && s.is_removed(id)
        {
            return Err(format!(
                "node {id} (CN={}) was removed from the cluster",
                peer.common_name
            ));
        }
        Ok(id)
    })
}

/// One node.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    raw: Arc<dyn Store>,
    meta: SealMeta,
    token: OnceLock<Arc<Token>>,
    joining: Mutex<Option<Joining>>,
    unsealing: Mutex<()>,
    runtime: Handle,
    network: Option<Network>,
    slot: ClusterSlot,
    state_slot: StateSlot,
    /// Client requests answered since start (reported in the status).
    requests: std::sync::atomic::AtomicU64,
}

impl Node {
    /// A sealed node over an initialized store. `network` (a client of the other nodes) is
    /// `None` for a node without a cluster port; `slot` and `state_slot` are shared with the
    /// cluster port's listener.
    ///
    /// # Errors
    /// `DeviceError` if the store has not been initialized.
    pub fn new(
        config: NodeConfig,
        raw: Arc<dyn Store>,
        runtime: Handle,
        network: Option<Network>,
        slot: ClusterSlot,
        state_slot: StateSlot,
    ) -> Result<Node, Error> {
        let meta = SealMeta::read(raw.as_ref())?.ok_or_else(|| {
            Error::device(
                "the store is not initialized: run `hsm-daemon init` (or `hsmctl init`) first",
            )
        })?;
        Ok(Node {
            config,
            raw,
            meta,
            token: OnceLock::new(),
            joining: Mutex::new(None),
            unsealing: Mutex::new(()),
            runtime,
            network,
            slot,
            state_slot,
            requests: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.config.node_name
    }

    /// Node id.
    pub fn id(&self) -> u64 {
        self.config.node_id
    }

    /// The token, if unsealed and part of a cluster.
    pub fn token(&self) -> Option<&Arc<Token>> {
        self.token.get()
    }

    fn is_joiner(&self) -> Result<bool, Error> {
        Ok(self.raw.get(Table::Meta, JOIN_MARKER_KEY)?.is_some())
    }

    fn awaiting_join(&self) -> bool {
        self.joining.lock().map(|j| j.is_some()).unwrap_or(false)
    }

    /// Status, sealed or not.
    pub fn status(&self) -> NodeStatus {
        let token = self.token();
        let seal = if token.is_some() {
            SealState::Unsealed
        } else if self.awaiting_join() {
            SealState::AwaitingJoin
        } else {
            SealState::Sealed
        };
        NodeStatus {
            node: self.name().to_owned(),
            cluster: token.map_or_else(
                || self.meta.cluster.clone(),
                |t| t.state().identity().cluster_name.clone(),
            ),
            seal,
            dev_unseal: self.meta.method.is_dev(),
            objects: token.map_or(0, |t| t.state().object_count() as u64),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            cluster_id: token.map(|t| t.state().identity().cluster_id.clone()),
            raft: token.map(|t| raft_status(t.cluster())),
            requests: self.requests.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Counts one answered client request.
    pub fn count_request(&self) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Unseals: derives the node sealing key (Argon2id: call off the I/O threads), opens the
    /// cluster domain key, loads every object and starts consensus; a node made with
    /// `init --join` that has not joined yet makes its join key and waits to be admitted.
    /// Unsealing an unsealed node is a no-op. Call from a blocking-pool thread.
    ///
    /// # Errors
    /// `PinIncorrect` for a wrong secret; `ArgumentsBad` for a secret of the other kind;
    /// `DeviceError` for a damaged store or a consensus that does not start.
    pub fn unseal(&self, secret: &UnsealSecret) -> Result<(), Error> {
        let _one_at_a_time = self
            .unsealing
            .lock()
            .map_err(|_| Error::device("internal lock poisoned"))?;
        if self.token.get().is_some() || self.awaiting_join() {
            return Ok(());
        }
        let nsk = self.meta.method.derive(secret)?;
        let store = Arc::new(SealedStore::new(self.raw.clone(), nsk));
        if self.meta.method.is_dev() {
            tracing::warn!(
                "DEVELOPMENT UNSEAL: node {} is unsealed by a key file kept on disk; never store real keys in it",
                self.name()
            );
        }
        if self.is_joiner()? && self.raw.get(Table::Meta, CDK_KEY)?.is_none() {
            store.get(Table::Meta, NSK_CHECK_KEY).map_err(|_| {
                Error::new(ErrorCode::PinIncorrect, "the unseal secret is incorrect")
            })?;
            let key = JoinKey::generate()?;
            *self
                .joining
                .lock()
                .map_err(|_| Error::device("internal lock poisoned"))? =
                Some(Joining { store, key });
            tracing::info!(
                "node {} (id {}) is unsealed and waits to be admitted (`hsmctl node add`)",
                self.name(),
                self.id()
            );
            return Ok(());
        }
        let state = TokenState::load(store, &self.meta.cluster)?;
        self.start(state)
    }

    /// This node's addresses, as the membership records them.
    fn info(&self) -> NodeInfo {
        NodeInfo {
            name: self.name().to_owned(),
            cluster_addr: self.config.cluster_addr().unwrap_or_default(),
            client_addr: self.config.client_addr(),
        }
    }

    fn start(&self, state: TokenState) -> Result<(), Error> {
        let state = Arc::new(state);
        let founder = !self.is_joiner()?;
        let log = LogStore::new(Arc::new(SealedLog::new(state.store().clone())));
        let snapshots = SnapshotStore::new(state.clone(), self.config.data_dir.join("snapshots"))
            .map_err(|e| Error::device(e.to_string()))?;
        let network = match &self.network {
            Some(n) => n.clone(),
            // A node without a cluster port: nobody to call, but openraft wants a network.
            None => Network::new(
                Arc::new(
                    rustls::ClientConfig::builder_with_provider(hsm_proto::tls::provider())
                        .with_protocol_versions(&[&rustls::version::TLS13])
                        .map_err(|e| Error::device(e.to_string()))?
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
                authorize(self.state_slot.clone()),
            ),
        };
        let settings = self.config.raft.settings();
        let _ = self.state_slot.set(state.clone());
        let cluster = self.runtime.block_on(async {
            let cluster = Cluster::start(self.id(), settings, network, log, snapshots).await?;
            if founder {
                cluster.initialize(self.info()).await?;
            }
            Ok::<_, cluster_sync::ClusterError>(cluster)
        })?;
        let _ = self.slot.set(cluster.clone());
        let token = Arc::new(Token::new(state, cluster, self.runtime.clone()));
        if founder && let Err(e) = seed(&token) {
            // Not fatal: the node serves, and the next unseal tries again.
            tracing::warn!("{e}; nodes that join before it succeeds may lack the first admin");
        }
        let _ = self.token.set(token);
        tracing::info!(
            "node {} (id {}) serves its token; consensus started{}",
            self.name(),
            self.id(),
            if founder { " (founder)" } else { "" }
        );
        Ok(())
    }

    /// The public join key of a node waiting to be admitted.
    ///
    /// # Errors
    /// `FunctionFailed` if this node is not waiting to be admitted.
    pub fn join_key(&self) -> Result<Vec<u8>, Error> {
        let joining = self
            .joining
            .lock()
            .map_err(|_| Error::device("internal lock poisoned"))?;
        match joining.as_ref() {
            Some(j) => Ok(j.key.public().to_vec()),
            None => Err(not_joining(self)),
        }
    }

    /// Receives the cluster domain key from a member and joins: stores it sealed under this
    /// node's key and starts consensus as a learner. Call from a blocking-pool thread.
    ///
    /// # Errors
    /// `FunctionFailed` if this node is not waiting to be admitted; `DeviceError` if the
    /// package does not open.
    pub fn complete_join(&self, package: &JoinPackage) -> Result<(), Error> {
        let _one_at_a_time = self
            .unsealing
            .lock()
            .map_err(|_| Error::device("internal lock poisoned"))?;
        let mut joining = self
            .joining
            .lock()
            .map_err(|_| Error::device("internal lock poisoned"))?;
        let Some(j) = joining.as_ref() else {
            return Err(not_joining(self));
        };
        let cdk = j.key.open(package, self.id())?;
        let identity = ClusterIdentity {
            cluster_id: package.cluster_id.clone(),
            cluster_name: package.cluster_name.clone(),
        };
        TokenState::store_joined(&j.store, &cdk, &identity)?;
        let store = j.store.clone();
        let state = TokenState::load(store, &identity.cluster_name)?;
        *joining = None;
        drop(joining);
        tracing::info!(
            "node {} joined cluster {} ({}); waiting to be added to the membership",
            self.name(),
            identity.cluster_name,
            identity.cluster_id
        );
        self.start(state)
    }
}

/// Puts a founder's initial state (made by `init` outside the log: the first admin, and the
/// objects of a store from before clusters) through the log once, so that a node that joins
/// and catches up from the log has it too. Each command rewrites what is already there.
fn seed(token: &Token) -> Result<(), Error> {
    let state = token.state();
    if state.is_seeded()? {
        return Ok(());
    }
    let commands = state.seed_commands()?;
    let n = commands.len();
    for command in commands {
        let mut last = None;
        for _attempt in 0..3 {
            match token.commit(&command, 0) {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(Error::device(format!(
                "cannot put the initial state through the log: {e}"
            )));
        }
    }
    state.mark_seeded()?;
    tracing::info!("the founder's initial state went through the log ({n} commands)");
    Ok(())
}

fn not_joining(node: &Node) -> Error {
    Error::new(
        ErrorCode::FunctionFailed,
        format!(
            "node {} is not waiting to join (it is sealed, or already part of a cluster)",
            node.name()
        ),
    )
}

/// The consensus part of a node's status.
pub fn raft_status(cluster: &Cluster) -> RaftStatus {
    let m = cluster.metrics();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, info)| MemberStatus {
            node_id: *id,
            name: info.name.clone(),
            client_addr: info.client_addr.clone(),
            cluster_addr: info.cluster_addr.clone(),
            voter: voters.contains(id),
            matched: m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index),
        })
        .collect();
    let state = if m.state.is_leader() {
        "leader"
    } else if m.state.is_candidate() {
        "candidate"
    } else if m.state.is_learner() || !voters.contains(&m.id) {
        "learner"
    } else {
        "follower"
    };
    RaftStatus {
        node_id: m.id,
        state: state.to_owned(),
        term: m.current_term,
        leader: m.current_leader,
        last_log: m.last_log_index,
        applied: m.last_applied.map(|l| l.index),
        snapshot: m.snapshot.map(|l| l.index),
        purged: m.purged.map(|l| l.index),
        millis_since_quorum_ack: m.millis_since_quorum_ack,
        members,
    }
}
