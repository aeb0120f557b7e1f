//! Node-to-node RPC over TLS 1.3 with node certificates: raft's append-entries, vote and
//! snapshot chunks, plus the cluster's own calls (a write forwarded to the leader, membership
//! changes asked of the leader).
//!
//! One request at a time per connection, answered in order; openraft opens one client per
//! replication stream, so streams do not wait for each other. A client connects lazily, on its
//! first call (openraft's `new_client` must not dial), and checks that the node answering is
//! the one it meant: the certificate must name the target's node name (TLS server name) and
//! carry the target's node id. The server checks that the peer presents a node certificate
//! of a node the caller's `authorize` accepts, and logs refusals with the peer's identity.

use crate::cluster::{BatchWritten, Cluster};
use crate::{Batch, NodeId, NodeInfo, TypeConfig};
use hsm_proto::frame::{self, FrameError};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Decides whether a certificate belongs to a node of this cluster; returns its node id.
pub type Authorize = Arc<dyn Fn(&CertificateDer<'_>) -> Result<NodeId, String> + Send + Sync>;

/// Names a file to which every node-to-node call is appended as sent, below TLS (a test hook:
/// the suite checks that no plaintext key material ever travels between nodes). Read once.
pub const RPC_DUMP_ENV: &str = "HSM_CLUSTER_RPC_DUMP";

fn dump(bytes: &[u8]) {
    static FILE: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
        std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = std::env::var_os(RPC_DUMP_ENV)?;
        tracing::warn!(
            "{RPC_DUMP_ENV} is set: recording node-to-node calls in {}",
            std::path::Path::new(&path).display()
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(std::sync::Mutex::new)
    });
    if let Some(f) = file
        && let Ok(mut f) = f.lock()
    {
        use std::io::Write;
        let _ = f.write_all(bytes);
    }
}

/// How long a peer has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection idle this long is closed by the server (a live peer sends heartbeats).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A call from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    /// Raft: replicate entries or heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft: request a vote.
    Vote(VoteRequest<NodeId>),
    /// Raft: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Writes received by a follower, for the leader to commit as one entry.
    Forward(Batch),
    /// Add a node (learner, caught up, then voter); the leader does it.
    AddNode {
        /// Its id.
        id: NodeId,
        /// Its addresses.
        info: NodeInfo,
    },
    /// Remove a node from the membership; the leader does it.
    RemoveNode {
        /// Its id.
        id: NodeId,
    },
}

/// Why a forwarded call failed on the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteFailure {
    /// The node asked is not the leader (any more); it names the leader if it knows one.
    NotLeader(Option<NodeId>),
    /// The leader could not do it.
    Failed(String),
}

impl fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteFailure::NotLeader(Some(l)) => write!(f, "not the leader (node {l} is)"),
            RemoteFailure::NotLeader(None) => f.write_str("not the leader, and no leader known"),
            RemoteFailure::Failed(m) => f.write_str(m),
        }
    }
}

/// The answer to an [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// To `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To `InstallSnapshot`.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// To `Forward`.
    Written(Result<BatchWritten, RemoteFailure>),
    /// To `AddNode` / `RemoveNode`: the log index of the final membership.
    MembershipChanged(Result<u64, RemoteFailure>),
    /// The node does not take part right now (sealed, not yet joined).
    Refused(String),
}

/// Why a call did not get an answer.
#[derive(Debug)]
pub enum CallError {
    /// Could not connect (the peer is down or unreachable).
    Unreachable(String),
    /// Connected, but the call failed or timed out.
    Network(String),
    /// The call does not fit in one frame.
    TooLarge(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "unreachable: {m}"),
            CallError::Network(m) => write!(f, "network: {m}"),
            CallError::TooLarge(m) => write!(f, "too large: {m}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Opens connections to other nodes.
#[derive(Clone)]
pub struct Network {
    tls: TlsConnector,
    authorize: Authorize,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Network")
    }
}

impl Network {
    /// A network with our node certificate (`tls`: a client config with the cluster ALPN).
    pub fn new(tls: Arc<rustls::ClientConfig>, authorize: Authorize) -> Network {
        Network {
            tls: TlsConnector::from(tls),
            authorize,
        }
    }

    /// A handle for calls to `target` (connects on first use).
    pub fn peer(&self, target: NodeId, info: &NodeInfo) -> Peer {
        Peer {
            target,
            info: info.clone(),
            net: self.clone(),
            conn: None,
        }
    }
}

type Conn = tokio_rustls::client::TlsStream<TcpStream>;

/// Calls to one node over one lazily opened connection.
pub struct Peer {
    target: NodeId,
    info: NodeInfo,
    net: Network,
    conn: Option<Conn>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Peer({} {})", self.target, self.info.cluster_addr)
    }
}

impl Peer {
    async fn connect(&self) -> Result<Conn, CallError> {
        let tcp = TcpStream::connect(&self.info.cluster_addr)
            .await
            .map_err(|e| CallError::Unreachable(format!("{}: {e}", self.info.cluster_addr)))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.info.name.clone())
            .map_err(|_| CallError::Unreachable(format!("bad node name {:?}", self.info.name)))?;
        let tls = self
            .net
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| CallError::Unreachable(format!("TLS with {}: {e}", self.info.name)))?;
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| CallError::Unreachable("the peer sent no certificate".into()))?;
        match (self.net.authorize)(cert) {
            Ok(id) if id == self.target => Ok(tls),
            Ok(id) => Err(CallError::Unreachable(format!(
                "{} answered as node {id}, not node {}",
                self.info.cluster_addr, self.target
            ))),
            Err(why) => Err(CallError::Unreachable(format!(
                "{} is not a node of this cluster: {why}",
                self.info.cluster_addr
            ))),
        }
    }

    async fn exchange(&mut self, rpc: &Rpc) -> Result<Reply, CallError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(CallError::Unreachable("no connection".into()));
        };
        let bytes = frame::encode(rpc).map_err(|e| match e {
            FrameError::TooLarge(_) => CallError::TooLarge(e.to_string()),
            e => CallError::Network(e.to_string()),
        })?;
        dump(&bytes);
        let result = async {
            conn.write_all(&bytes).await?;
            conn.flush().await?;
            frame::read_message::<Reply, _>(conn).await
        }
        .await;
        result.map_err(|e: FrameError| {
            self.conn = None;
            CallError::Network(e.to_string())
        })
    }

    /// Sends one call and waits for its answer, at most `ttl`.
    ///
    /// # Errors
    /// `Unreachable` when no connection could be made, `Network` for a failure after it.
    pub async fn call(&mut self, rpc: &Rpc, ttl: Duration) -> Result<Reply, CallError> {
        match tokio::time::timeout(ttl, self.exchange(rpc)).await {
            Ok(r) => r,
            Err(_) => {
                // The answer may still come: the stream is out of step, start afresh.
                self.conn = None;
                Err(CallError::Network(format!(
                    "no answer from node {} within {ttl:?}",
                    self.target
                )))
            }
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError,
    ) -> RPCError<NodeId, NodeInfo, RaftError<NodeId, E>> {
        match e {
            CallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(_) | CallError::TooLarge(_) => {
                RPCError::Network(NetworkError::new(&e))
            }
        }
    }
}

fn unexpected(reply: &Reply) -> CallError {
    CallError::Network(format!("unexpected reply {reply:?}"))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Peer {
        self.peer(target, node)
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let entries = rpc.entries.len();
        match self.call(&Rpc::AppendEntries(rpc), option.hard_ttl()).await {
            // Fewer entries per call; openraft resends at once with the hint.
            Err(CallError::TooLarge(_)) if entries > 1 => Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint((entries / 2) as u64),
            )),
            Ok(Reply::AppendEntries(Ok(r))) => Ok(r),
            Ok(Reply::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(Reply::Refused(m)) => Err(self.rpc_error(CallError::Unreachable(m))),
            Ok(other) => Err(self.rpc_error(unexpected(&other))),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(&Rpc::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Reply::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(Reply::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(Reply::Refused(m)) => Err(self.rpc_error(CallError::Unreachable(m))),
            Ok(other) => Err(self.rpc_error(unexpected(&other))),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        match self.call(&Rpc::Vote(rpc), option.hard_ttl()).await {
            Ok(Reply::Vote(Ok(r))) => Ok(r),
            Ok(Reply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(Reply::Refused(m)) => Err(self.rpc_error(CallError::Unreachable(m))),
            Ok(other) => Err(self.rpc_error(unexpected(&other))),
            Err(e) => Err(self.rpc_error(e)),
        }
    }
}

/// Where the server finds the node's consensus once it is unsealed.
pub type ClusterSlot = Arc<OnceLock<Arc<Cluster>>>;

/// Serves the cluster port until the listener fails. `node_name` is for refusals' messages.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    slot: ClusterSlot,
    authorize: Authorize,
    node_name: String,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("cluster port: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, slot, authorize, name) = (
            acceptor.clone(),
            slot.clone(),
            authorize.clone(),
            node_name.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, peer, acceptor, slot, authorize, &name).await {
                tracing::debug!("cluster port: connection from {peer} ended: {e}");
            }
        });
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    slot: ClusterSlot,
    authorize: Authorize,
    node_name: &str,
) -> Result<(), FrameError> {
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!("cluster port: TLS handshake with {peer} refused: {e}");
            return Ok(());
        }
        Err(_) => {
            tracing::info!("cluster port: TLS handshake with {peer} timed out");
            return Ok(());
        }
    };
    let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        tracing::info!("cluster port: {peer} sent no certificate; refused");
        return Ok(());
    };
    let from = match authorize(cert) {
        Ok(id) => id,
        Err(why) => {
            tracing::warn!("cluster port: refused {peer}: {why}");
            let _ = tls.shutdown().await;
            return Ok(());
        }
    };
    let mut buf = Vec::new();
    loop {
        match tokio::time::timeout(IDLE_TIMEOUT, frame::read_frame(&mut tls, &mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        }
        let rpc: Rpc = frame::decode(&buf)?;
        let reply = match slot.get() {
            None => Reply::Refused(format!(
                "node {node_name} is sealed or not yet part of the cluster"
            )),
            Some(cluster) => dispatch(cluster, from, rpc).await,
        };
        let bytes = match frame::encode(&reply) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cluster port: cannot encode a reply to node {from}: {e}");
                frame::encode(&Reply::Refused("reply too large".into()))?
            }
        };
        dump(&bytes);
        tls.write_all(&bytes).await?;
        tls.flush().await?;
    }
}

async fn dispatch(cluster: &Arc<Cluster>, from: NodeId, rpc: Rpc) -> Reply {
    let raft = cluster.raft();
    match rpc {
        Rpc::AppendEntries(r) => Reply::AppendEntries(raft.append_entries(r).await),
        Rpc::Vote(r) => Reply::Vote(raft.vote(r).await),
        Rpc::InstallSnapshot(r) => Reply::InstallSnapshot(raft.install_snapshot(r).await),
        Rpc::Forward(batch) => {
            tracing::debug!("{} writes forwarded by node {from}", batch.0.len());
            Reply::Written(cluster.write_as_leader(batch).await)
        }
        Rpc::AddNode { id, info } => {
            Reply::MembershipChanged(cluster.add_node_as_leader(id, info).await)
        }
        Rpc::RemoveNode { id } => Reply::MembershipChanged(cluster.remove_node_as_leader(id).await),
    }
}
