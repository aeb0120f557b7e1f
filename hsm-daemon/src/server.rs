//! The client listener: TLS 1.3 with client certificates (admin and application roles only),
//! the version handshake, then pipelined requests. A connection reads frames; cheap requests
//! (EC and Ed25519 signatures, verification, symmetric operations and digests of up to 64 KiB,
//! searches, attributes, small random) run inline on the connection's task and write their
//! answer at once; expensive ones (RSA private-key operations, commits, Argon2id, large inputs)
//! go to the blocking pool through bounded permits: per connection (a client that floods or
//! stops reading is paused, not the node), for the whole pool, and a small one for Argon2id.
//! One writer task coalesces responses into few TLS writes. A malformed or oversized frame is
//! logged and drops that connection; the node keeps serving.

use crate::handler::{self, Connection};
use crate::node::Node;
use hsm_proto::frame::{self, FrameError};
use hsm_proto::tls::{CertRole, peer_identity};
use hsm_proto::{Envelope, Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish the TLS and version handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per connection before the reader waits for the writer.
const WRITE_QUEUE: usize = 1024;
/// Requests one connection may have on the blocking pool (or waiting to queue their answer);
/// beyond, its reader waits: that client is paused, the others are not.
const PER_CONNECTION: usize = 32;
/// Requests on the blocking pool at once, all connections together.
const POOL: usize = 256;
/// Argon2id requests (login, unseal, password changes) at once: each takes tens of MiB and
/// most of a core for tens of milliseconds.
const ARGON: usize = 2;
/// The largest input a cheap operation handles inline.
const INLINE_BYTES: usize = 64 << 10;

/// Where a request runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cost {
    /// On the connection's task: microseconds.
    Inline,
    /// On the blocking pool.
    Pool,
    /// On the blocking pool, one of [`ARGON`].
    Argon,
}

fn cost(request: &Request) -> Cost {
    use hsm_proto::mechlist::is_rsa;
    let small = |n: usize| n <= INLINE_BYTES;
    let inline_if = |cheap: bool| if cheap { Cost::Inline } else { Cost::Pool };
    match request {
        Request::Status
        | Request::Logout
        | Request::CloseSession { .. }
        | Request::OperationCancel { .. }
        | Request::ResumeLogin { .. }
        | Request::RenewTicket
        | Request::FindObjects { .. }
        | Request::GetAttributeValue { .. }
        | Request::GetObjectSize { .. } => Cost::Inline,
        Request::GenerateRandom { length } => inline_if(small(*length as usize)),
        Request::Digest { data, .. } => inline_if(small(data.len())),
        // Public-key operations are cheap for every key type.
        Request::Verify {
            data, signature, ..
        } => inline_if(small(data.len() + signature.len())),
        Request::Encrypt { data, .. } => inline_if(small(data.len())),
        Request::Sign {
            mechanism, data, ..
        } => inline_if(!is_rsa(mechanism.kind) && small(data.len())),
        Request::Decrypt {
            mechanism, data, ..
        } => inline_if(!is_rsa(mechanism.kind) && small(data.len())),
        Request::Login { .. }
        | Request::Unseal(_)
        | Request::SetPin { .. }
        | Request::InitPin { .. }
        | Request::CreateUser { .. } => Cost::Argon,
        _ => Cost::Pool,
    }
}

/// The node-wide permits.
#[derive(Clone)]
struct Limits {
    pool: Arc<Semaphore>,
    argon: Arc<Semaphore>,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accepts connections until the listener fails.
///
/// # Errors
/// If accepting fails in a way that is not about one client.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    node: Arc<Node>,
) -> std::io::Result<()> {
    let limits = Limits {
        pool: Arc::new(Semaphore::new(POOL)),
        argon: Arc::new(Semaphore::new(ARGON)),
    };
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait and go on rather than die.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let node = node.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
            match connection(tcp, peer, id, acceptor, node, limits).await {
                Ok(()) | Err(FrameError::Closed) => tracing::debug!("conn {id} from {peer} closed"),
                Err(e) => tracing::warn!("conn {id} from {peer} dropped: {e}"),
            }
        });
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    id: u64,
    acceptor: TlsAcceptor,
    node: Arc<Node>,
    limits: Limits,
) -> Result<(), FrameError> {
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!("conn {id} from {peer}: TLS handshake refused: {e}");
            return Ok(());
        }
        Err(_) => {
            tracing::info!("conn {id} from {peer}: TLS handshake timed out");
            return Ok(());
        }
    };
    let Some((cert_role, cert_hash)) = client_role(&tls, peer, id) else {
        // close_notify, so the client reads a clean end rather than waiting.
        let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.shutdown()).await;
        return Ok(());
    };
    let hello = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        frame::server_handshake(&mut tls, node.name()),
    )
    .await
    .map_err(|_| FrameError::Version("version handshake timed out".into()))??;
    tracing::debug!(
        "conn {id} from {peer}: {} speaks {}.{}",
        hello.software,
        hello.major,
        hello.minor
    );

    let (read_half, mut write_half) = tokio::io::split(tls);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64 * 1024);
        while let Some(first) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&first);
            // Coalesce whatever else is ready into the same TLS records and syscall.
            while batch.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if write_half.write_all(&batch).await.is_err() || write_half.flush().await.is_err() {
                break;
            }
        }
        let _ = write_half.shutdown().await;
    });

    let ctx = Ctx {
        node,
        conn: Arc::new(Connection::new(cert_role, cert_hash)),
        tx,
        limits,
        mine: Arc::new(Semaphore::new(PER_CONNECTION)),
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut buf = Vec::new();
    let result = loop {
        if let Err(e) = frame::read_frame(&mut reader, &mut buf).await {
            break Err(e);
        }
        let envelope: Envelope<Request> = match frame::decode(&buf) {
            Ok(e) => e,
            Err(e) => break Err(e),
        };
        // Read-your-writes: a client that saw index N elsewhere is served once this node has
        // applied N (bounded; the request runs anyway after the wait, and says what it saw).
        if envelope.index > 0
            && let Some(token) = ctx.node.token()
            && token.state().applied_index() < envelope.index
        {
            let token = token.clone();
            let wanted = envelope.index;
            let wait = token.cluster().settings().write_timeout;
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if !token.wait_applied(wanted, wait).await {
                    tracing::warn!(
                        "conn {id}: index {wanted} not applied here within {wait:?}; serving anyway"
                    );
                }
                ctx.dispatch(envelope).await;
            });
            continue;
        }
        if !ctx.dispatch(envelope).await {
            break Ok(());
        }
    };
    drop(ctx);
    let _ = writer.await;
    result
}

/// What every request of one connection needs.
#[derive(Clone)]
struct Ctx {
    node: Arc<Node>,
    conn: Arc<Connection>,
    tx: mpsc::Sender<Vec<u8>>,
    limits: Limits,
    /// This connection's share of the pool.
    mine: Arc<Semaphore>,
}

impl Ctx {
    /// Runs a request where its cost says and queues its answer. False once the connection's
    /// writer is gone.
    async fn dispatch(&self, envelope: Envelope<Request>) -> bool {
        let cost = cost(&envelope.body);
        if cost == Cost::Inline {
            let bytes = respond(&self.node, &self.conn, envelope);
            return self.tx.send(bytes).await.is_ok();
        }
        // Held until the answer is queued: a client that does not read keeps at most
        // PER_CONNECTION answers and then stops being read.
        let Ok(mine) = self.mine.clone().acquire_owned().await else {
            return false;
        };
        let Ok(pool) = self.limits.pool.clone().acquire_owned().await else {
            return false;
        };
        let argon = match cost {
            Cost::Argon => match self.limits.argon.clone().acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => return false,
            },
            _ => None,
        };
        let (node, conn, tx) = (self.node.clone(), self.conn.clone(), self.tx.clone());
        let tx_later = tx.clone();
        tokio::spawn(async move {
            // The worker queues the answer itself when the writer has room (the common case:
            // no extra hop); when it has none (a client not reading), the answer waits here,
            // in a task, not in a blocked pool thread.
            let computed = tokio::task::spawn_blocking(move || {
                let bytes = {
                    let _permits = (pool, argon);
                    respond(&node, &conn, envelope)
                };
                match tx.try_send(bytes) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
                    Err(mpsc::error::TrySendError::Full(bytes)) => Some(bytes),
                }
            })
            .await;
            if let Ok(Some(bytes)) = computed {
                let _ = tx_later.send(bytes).await;
            }
            drop(mine);
        });
        true
    }
}

/// Handles one request and encodes its answer.
fn respond(node: &Node, conn: &Connection, envelope: Envelope<Request>) -> Vec<u8> {
    let request_id = envelope.id;
    let call = handler::Call::new(envelope.key);
    let response = handler::handle(node, conn, envelope.body, &call);
    node.count_request();
    let index = call.index.get();
    match frame::encode(&Envelope {
        id: request_id,
        index,
        key: 0,
        body: response,
    }) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("cannot encode a response: {e}");
            let err = Response::Error(hsm_proto::WireError::new(
                hsm_proto::ErrorCode::DeviceError,
                "response too large to send",
            ));
            frame::encode(&Envelope::new(request_id, err)).unwrap_or_default()
        }
    }
}

/// The role in the client's certificate (verified against the cluster CA by the handshake)
/// and the SHA-256 of the certificate, or `None`, logged, when the client port must not serve
/// it: a node certificate, or one without a valid role.
fn client_role(
    tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
    id: u64,
) -> Option<(CertRole, [u8; 32])> {
    let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        tracing::info!("conn {id} from {peer}: refused: no client certificate");
        return None;
    };
    match peer_identity(cert) {
        Ok(who) if who.role == CertRole::Node => {
            tracing::info!(
                "conn {id} from {peer}: refused CN={} with role {}: the client port serves \
                 admin and application certificates only",
                who.common_name,
                who.role
            );
            None
        }
        Ok(who) => {
            tracing::debug!(
                "conn {id} from {peer}: CN={} role {}",
                who.common_name,
                who.role
            );
            let mut hash = [0u8; 32];
            hash.copy_from_slice(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref()).as_ref(),
            );
            Some((who.role, hash))
        }
        Err(e) => {
            tracing::info!("conn {id} from {peer}: refused: {e}");
            None
        }
    }
}
