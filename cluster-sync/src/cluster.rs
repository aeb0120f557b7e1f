//! The node's view of the cluster: its running openraft instance, writes that reach the leader
//! wherever they arrive and wait a bounded time for a quorum, and membership changes.

use crate::net::{Network, RemoteFailure, Reply, Rpc};
use crate::{Applied, Batch, Metrics, NodeId, NodeInfo, Proposal, Raft};
use crate::{LogStore, SnapshotStore};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::Weak;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Timing and log-retention settings.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// Leader heartbeat interval (also the append-entries RPC timeout).
    pub heartbeat: Duration,
    /// Election timeout range.
    pub election: (Duration, Duration),
    /// How long a write may wait for a quorum before it fails.
    pub write_timeout: Duration,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (for followers a little behind).
    pub keep_logs: u64,
    /// How long adding a node may wait for it to catch up as a learner.
    pub join_timeout: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            heartbeat: Duration::from_millis(150),
            election: (Duration::from_millis(800), Duration::from_millis(1600)),
            write_timeout: Duration::from_secs(5),
            snapshot_every: 5000,
            keep_logs: 1000,
            join_timeout: Duration::from_secs(120),
        }
    }
}

/// A committed write: its log index and the state machine's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The log index it was committed at.
    pub index: u64,
    /// What applying it answered.
    pub answer: Vec<u8>,
}

/// A committed entry: its log index and the answers to its proposals, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchWritten {
    /// The log index.
    pub index: u64,
    /// One answer per proposal.
    pub applied: Applied,
}

/// Proposals queued at most (callers wait for room beyond that).
const QUEUE: usize = 8192;
/// Proposals in one entry at most.
const MAX_BATCH: usize = 256;
/// Bytes of commands in one entry at most (a single larger proposal goes alone), well
/// within one frame.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Entries being committed at once; while they are, new proposals gather into the next.
const IN_FLIGHT: usize = 4;

struct Queued {
    proposal: Proposal,
    answer: oneshot::Sender<Result<Written, ClusterError>>,
}

/// Why a cluster operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterError {
    /// No quorum committed it within the bounded time (the outcome may still be a commit
    /// later: retry with the same request key).
    Unavailable(String),
    /// The request was refused (membership change in progress, unknown node…).
    Refused(String),
    /// The node's consensus stopped (a storage fault).
    Fatal(String),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Unavailable(m) => write!(f, "cluster unavailable: {m}"),
            ClusterError::Refused(m) => write!(f, "refused: {m}"),
            ClusterError::Fatal(m) => write!(f, "consensus stopped: {m}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// This node's consensus.
pub struct Cluster {
    id: NodeId,
    raft: Raft,
    net: Network,
    settings: ClusterSettings,
    queue: mpsc::Sender<Queued>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cluster(node {})", self.id)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cluster {
    /// Starts consensus over the node's stores. A node that was never part of a cluster
    /// starts as a learner and waits to be initialized or added.
    ///
    /// # Errors
    /// `Fatal` if the configuration is invalid or the stores cannot be read.
    pub async fn start(
        id: NodeId,
        settings: ClusterSettings,
        net: Network,
        log: LogStore,
        machine: SnapshotStore,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let config = Config {
            cluster_name: "hsm".into(),
            heartbeat_interval: ms(settings.heartbeat),
            election_timeout_min: ms(settings.election.0),
            election_timeout_max: ms(settings.election.1),
            // The last chunk's call includes the whole install on the follower.
            install_snapshot_timeout: 30_000,
            max_payload_entries: 256,
            replication_lag_threshold: 100,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every.max(1)),
            snapshot_max_chunk_size: 1 << 20,
            max_in_snapshot_log_to_keep: settings.keep_logs,
            purge_batch_size: settings.keep_logs.clamp(1, 256),
            ..Config::default()
        }
        .validate()
        .map_err(|e| ClusterError::Fatal(format!("raft configuration: {e}")))?;
        let raft = Raft::new(id, Arc::new(config), net.clone(), log, machine)
            .await
            .map_err(|e| ClusterError::Fatal(e.to_string()))?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let cluster = Arc::new(Cluster {
            id,
            raft,
            net,
            settings,
            queue,
        });
        tokio::spawn(batcher(Arc::downgrade(&cluster), rx));
        Ok(cluster)
    }

    /// Makes this node the first member of a new cluster. Does nothing if it already is part
    /// of one.
    ///
    /// # Errors
    /// `Fatal` if consensus stopped.
    pub async fn initialize(&self, me: NodeInfo) -> Result<(), ClusterError> {
        let members = BTreeMap::from([(self.id, me)]);
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(e)) => Err(ClusterError::Refused(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(ClusterError::Fatal(f.to_string())),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft instance.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// A copy of the current metrics.
    pub fn metrics(&self) -> Metrics {
        self.raft.metrics().borrow().clone()
    }

    /// The settings this node runs with.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    /// The index of the last entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    }

    fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        let info = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, info))
    }

    /// Waits until this node has applied `index` (read-your-writes), at most `timeout`.
    /// Returns whether it has.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        if self.applied_index() >= index {
            return true;
        }
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read-your-writes")
            .await
            .is_ok()
    }

    /// Commits a proposal on a quorum, through the leader wherever it is, and returns once
    /// the leader applied it; fails after the configured write timeout. Concurrent proposals
    /// share log entries (group commit).
    ///
    /// # Errors
    /// `Unavailable` when no quorum committed it in time (its fate is then unknown: a retry
    /// with the same key applies at most once); `Fatal` if consensus stopped.
    pub async fn write(&self, proposal: Proposal) -> Result<Written, ClusterError> {
        let (answer, rx) = oneshot::channel();
        let timeout = self.settings.write_timeout;
        let queued = tokio::time::timeout(timeout, self.queue.send(Queued { proposal, answer }));
        match queued.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ClusterError::Fatal("the write queue is closed".into())),
            Err(_) => {
                return Err(ClusterError::Unavailable(format!(
                    "the write queue stayed full for {timeout:?}"
                )));
            }
        }
        // The batch has its own deadline; this one only guards against a lost answer.
        match tokio::time::timeout(timeout * 3, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClusterError::Fatal("the write was dropped".into())),
            Err(_) => Err(ClusterError::Unavailable(format!(
                "no answer within {:?}",
                timeout * 3
            ))),
        }
    }

    /// Commits one entry holding `batch`, through the leader wherever it is.
    async fn write_batch(&self, batch: Batch) -> Result<BatchWritten, ClusterError> {
        let proposal = batch;
        let deadline = Instant::now() + self.settings.write_timeout;
        let mut why = String::from("no leader elected");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClusterError::Unavailable(format!(
                    "not committed within {:?}: {why}",
                    self.settings.write_timeout
                )));
            }
            match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    match tokio::time::timeout(left, self.raft.client_write(proposal.clone())).await
                    {
                        Ok(Ok(r)) => {
                            return Ok(BatchWritten {
                                index: r.log_id.index,
                                applied: r.data,
                            });
                        }
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                            why = "leadership changed".into();
                        }
                        Ok(Err(RaftError::APIError(e))) => {
                            return Err(ClusterError::Refused(e.to_string()));
                        }
                        Ok(Err(RaftError::Fatal(f))) => {
                            return Err(ClusterError::Fatal(f.to_string()));
                        }
                        Err(_) => why = "the leader reached no quorum".into(),
                    }
                }
                Some((leader, info)) => {
                    let mut peer = self.net.peer(leader, &info);
                    match peer.call(&Rpc::Forward(proposal.clone()), left).await {
                        Ok(Reply::Written(Ok(w))) => return Ok(w),
                        Ok(Reply::Written(Err(f))) => why = format!("leader {leader}: {f}"),
                        Ok(Reply::Refused(m)) => why = format!("leader {leader}: {m}"),
                        Ok(other) => why = format!("leader {leader} answered {other:?}"),
                        Err(e) => why = format!("leader {leader}: {e}"),
                    }
                }
                None => why = "no leader elected".into(),
            }
            tokio::time::sleep(Duration::from_millis(50).min(left)).await;
        }
    }

    /// Writes forwarded to us: commit them as one entry if we lead.
    pub(crate) async fn write_as_leader(
        &self,
        proposal: Batch,
    ) -> Result<BatchWritten, RemoteFailure> {
        match self.leader() {
            Some((l, _)) if l == self.id => {}
            other => return Err(RemoteFailure::NotLeader(other.map(|(l, _)| l))),
        }
        match tokio::time::timeout(
            self.settings.write_timeout,
            self.raft.client_write(proposal),
        )
        .await
        {
            Ok(Ok(r)) => Ok(BatchWritten {
                index: r.log_id.index,
                applied: r.data,
            }),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(RemoteFailure::NotLeader(f.leader_id))
            }
            Ok(Err(e)) => Err(RemoteFailure::Failed(e.to_string())),
            Err(_) => Err(RemoteFailure::Failed(format!(
                "not committed within {:?}: no quorum",
                self.settings.write_timeout
            ))),
        }
    }

    async fn on_leader(
        &self,
        rpc: Rpc,
        local: impl AsyncFnOnce() -> Result<u64, RemoteFailure>,
    ) -> Result<u64, ClusterError> {
        let deadline = Instant::now() + self.settings.join_timeout;
        match self.leader() {
            Some((l, _)) if l == self.id => local()
                .await
                .map_err(|e| ClusterError::Refused(e.to_string())),
            Some((l, info)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.net.peer(l, &info).call(&rpc, left).await {
                    Ok(Reply::MembershipChanged(r)) => {
                        r.map_err(|e| ClusterError::Refused(format!("leader {l}: {e}")))
                    }
                    Ok(Reply::Refused(m)) => Err(ClusterError::Unavailable(m)),
                    Ok(other) => Err(ClusterError::Unavailable(format!("{other:?}"))),
                    Err(e) => Err(ClusterError::Unavailable(format!("leader {l}: {e}"))),
                }
            }
            None => Err(ClusterError::Unavailable("no leader elected".into())),
        }
    }

    /// Adds a node: as a learner, waits until it has caught up, then makes it a voter.
    /// Returns the log index of the final membership.
    ///
    /// # Errors
    /// `Unavailable` without a leader; `Refused` when the change fails.
    pub async fn add_node(&self, id: NodeId, info: NodeInfo) -> Result<u64, ClusterError> {
        let rpc = Rpc::AddNode {
            id,
            info: info.clone(),
        };
        self.on_leader(rpc, async || self.add_node_as_leader(id, info).await)
            .await
    }

    pub(crate) async fn add_node_as_leader(
        &self,
        id: NodeId,
        info: NodeInfo,
    ) -> Result<u64, RemoteFailure> {
        match self.leader() {
            Some((l, _)) if l == self.id => {}
            other => return Err(RemoteFailure::NotLeader(other.map(|(l, _)| l))),
        }
        tracing::info!("adding node {id} ({}) as a learner", info.name);
        match tokio::time::timeout(
            self.settings.join_timeout,
            self.raft.add_learner(id, info, true),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(RemoteFailure::Failed(e.to_string())),
            Err(_) => {
                return Err(RemoteFailure::Failed(format!(
                    "node {id} did not catch up within {:?}",
                    self.settings.join_timeout
                )));
            }
        }
        tracing::info!("node {id} caught up; making it a voter");
        let index = match self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
        {
            Ok(r) => r.log_id.index,
            Err(e) => return Err(RemoteFailure::Failed(e.to_string())),
        };
        // "Caught up" above allows a lag; answer once the new voter holds everything up to
        // its own membership, so that it can serve what the cluster had (users included).
        let replicated = self
            .raft
            .wait(Some(self.settings.join_timeout))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .is_some_and(|l| l.index >= index)
                },
                "new voter replicated",
            )
            .await;
        if replicated.is_err() {
            tracing::warn!("node {id} is a voter but has not replicated index {index} yet");
        }
        Ok(index)
    }

    /// Removes a node from the membership. Returns the log index of the final membership.
    ///
    /// # Errors
    /// `Unavailable` without a leader; `Refused` when the change fails.
    pub async fn remove_node(&self, id: NodeId) -> Result<u64, ClusterError> {
        self.on_leader(Rpc::RemoveNode { id }, async || {
            self.remove_node_as_leader(id).await
        })
        .await
    }

    pub(crate) async fn remove_node_as_leader(&self, id: NodeId) -> Result<u64, RemoteFailure> {
        let membership = {
            let m = self.raft.metrics();
            let m = m.borrow();
            match m.current_leader {
                Some(l) if l == self.id => {}
                other => return Err(RemoteFailure::NotLeader(other)),
            }
            m.membership_config.membership().clone()
        };
        let is_voter = membership.voter_ids().any(|v| v == id);
        let is_node = membership.get_node(&id).is_some();
        if !is_node {
            return Err(RemoteFailure::Failed(format!("node {id} is not a member")));
        }
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::info!("removing node {id}");
        match self.raft.change_membership(change, false).await {
            Ok(r) => Ok(r.log_id.index),
            Err(e) => Err(RemoteFailure::Failed(e.to_string())),
        }
    }

    /// Stops consensus.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Gathers queued proposals into entries: waits for room among the entries in flight, takes
/// every proposal queued by then (bounded), and commits them as one entry; each caller gets
/// its own answer.
async fn batcher(cluster: Weak<Cluster>, mut rx: mpsc::Receiver<Queued>) {
    let room = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = room.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut bytes = first.proposal.command.len();
        let mut queued = vec![first];
        while queued.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(q) => {
                    bytes += q.proposal.command.len();
                    queued.push(q);
                }
                Err(_) => break,
            }
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let (proposals, answers): (Vec<Proposal>, Vec<_>) =
                queued.into_iter().map(|q| (q.proposal, q.answer)).unzip();
            let n = proposals.len();
            match cluster.write_batch(Batch(proposals)).await {
                Ok(written) if written.applied.0.len() == n => {
                    for (answer, reply) in answers.into_iter().zip(written.applied.0) {
                        let _ = answer.send(Ok(Written {
                            index: written.index,
                            answer: reply,
                        }));
                    }
                }
                Ok(written) => {
                    let e = ClusterError::Fatal(format!(
                        "entry {} answered {} of {n} proposals",
                        written.index,
                        written.applied.0.len()
                    ));
                    for answer in answers {
                        let _ = answer.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for answer in answers {
                        let _ = answer.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
