//! The client listener: TLS 1.3 with client certificates (admin and application roles only),
//! the version handshake, then pipelined requests. A connection reads frames; cheap requests
//! (EC and Ed25519 signatures, verification, symmetric operations and digests of up to 64 KiB,
//! searches, attributes, small random) run inline on the connection's task and write their
//! answer at once; expensive ones (RSA private-key operations, commits, Argon2id, large inputs)
//! go to the blocking pool through bounded permits: per connection (a client that floods or
//! stops reading is paused, not the node), for the whole pool, and a small one for Argon2id.
//! One writer task coalesces responses into few TLS writes. A malformed or oversized frame is
//! logged and drops that connection; the node keeps serving.
//!
//! Memory is bounded per connection and for the node: a request or answer of more than
//! [`CHARGE_FROM`] bytes is charged against its connection's byte budget and the node's until
//! its answer has been written, so a client that sends frames at the size limit, or stops
//! reading, is paused (its connection is no longer read) before it holds more than
//! [`CONNECTION_BYTES`]. Failed password checks (login, unseal, PIN change) are limited per
//! client certificate: after a burst, one every half second, the wait spent before the
//! Argon2id work, so a client guessing passwords costs the node little and its neighbours
//! nothing.

use crate::handler::{self, Connection};
use crate::node::Node;
use hsm_proto::frame::{self, FrameError};
use hsm_proto::tls::{CertRole, peer_identity};
use hsm_proto::{Envelope, Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
/// Requests and answers from this size on are charged against the byte budgets.
const CHARGE_FROM: usize = 16 << 10;
/// Bytes of charged requests and answers one connection may hold (a request at the frame
/// limit and its answer fit four times over).
const CONNECTION_BYTES: usize = 32 << 20;
/// Bytes of charged requests and answers the node holds for all connections together.
const NODE_BYTES: usize = 256 << 20;
/// Failed password checks a client certificate may make in a burst, and then per second.
const PASSWORD_BURST: f64 = 5.0;
const PASSWORD_RATE: f64 = 2.0;

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
    /// [`NODE_BYTES`], in KiB.
    bytes: Arc<Semaphore>,
    passwords: Arc<PasswordThrottle>,
}

/// KiB permits for `len` bytes (rounded up).
fn kib(len: usize) -> u32 {
    u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Bytes held for one request or answer, released when dropped.
struct Charge {
    kib: u32,
    _connection: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
}

/// The size of the answer a request asks for, where the request says (random, encryption and
/// decryption return about what they are given), so that it is charged before the work
/// makes it.
fn expected_answer(request: &Request) -> usize {
    match request {
        Request::GenerateRandom { length } => *length as usize,
        Request::Encrypt { data, .. } => data.len(),
        Request::Decrypt { data, .. } => data.len(),
        _ => 0,
    }
}

/// An answer on its way to the writer, with what it is charged.
struct Outgoing {
    bytes: Vec<u8>,
    _charge: Option<Charge>,
}

/// Failed password checks per client certificate, as a token bucket: a burst of
/// [`PASSWORD_BURST`], then [`PASSWORD_RATE`] per second. Only certificates with recent
/// failures have an entry.
#[derive(Default)]
struct PasswordThrottle {
    buckets: std::sync::Mutex<std::collections::HashMap<[u8; 32], (f64, Instant)>>,
}

impl PasswordThrottle {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], (f64, Instant)>> {
        match self.buckets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn refilled(tokens: f64, at: Instant, now: Instant) -> f64 {
        (tokens + now.duration_since(at).as_secs_f64() * PASSWORD_RATE).min(PASSWORD_BURST)
    }

    /// How long `client` must wait before its next password check.
    fn delay(&self, client: &[u8; 32]) -> Duration {
        let now = Instant::now();
        match self.lock().get(client) {
            Some(&(tokens, at)) => {
                let tokens = Self::refilled(tokens, at, now);
                if tokens >= 1.0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64((1.0 - tokens) / PASSWORD_RATE)
                }
            }
            None => Duration::ZERO,
        }
    }

    /// Records a failed check by `client`.
    fn failed(&self, client: &[u8; 32]) {
        let now = Instant::now();
        let mut buckets = self.lock();
        if buckets.len() > 10_000 {
            // Forget the certificates whose buckets are full again.
            buckets.retain(|_, &mut (t, at)| Self::refilled(t, at, now) < PASSWORD_BURST);
        }
        let (tokens, at) = buckets.entry(*client).or_insert((PASSWORD_BURST, now));
        *tokens = Self::refilled(*tokens, *at, now) - 1.0;
        *at = now;
    }
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
        bytes: Arc::new(Semaphore::new(kib(NODE_BYTES) as usize)),
        passwords: Arc::new(PasswordThrottle::default()),
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
    let (tx, mut rx) = mpsc::channel::<Outgoing>(WRITE_QUEUE);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(64 * 1024);
        // Charges are released once their bytes are written.
        let mut charged = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&first.bytes);
            charged.push(first._charge);
            // Coalesce whatever else is ready into the same TLS records and syscall.
            while batch.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(more) => {
                        batch.extend_from_slice(&more.bytes);
                        charged.push(more._charge);
                    }
                    Err(_) => break,
                }
            }
            if write_half.write_all(&batch).await.is_err() || write_half.flush().await.is_err() {
                break;
            }
            charged.clear();
            if batch.capacity() > 1 << 20 {
                batch = Vec::with_capacity(64 * 1024);
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
        my_bytes: Arc::new(Semaphore::new(kib(CONNECTION_BYTES) as usize)),
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
        // The request and the answer it asks for are charged before any work; a connection
        // over its budget is not read until its answers are written.
        let Some(charge) = ctx
            .charge(buf.len() + expected_answer(&envelope.body))
            .await
        else {
            break Ok(());
        };
        if buf.capacity() > INLINE_BYTES * 2 {
            // Do not keep a large frame's buffer for an idle connection.
            buf = Vec::new();
        }
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
                ctx.dispatch(envelope, charge).await;
            });
            continue;
        }
        if !ctx.dispatch(envelope, charge).await {
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
    tx: mpsc::Sender<Outgoing>,
    limits: Limits,
    /// This connection's share of the pool.
    mine: Arc<Semaphore>,
    /// [`CONNECTION_BYTES`], in KiB.
    my_bytes: Arc<Semaphore>,
}

impl Ctx {
    /// Charges `len` bytes to this connection and the node, waiting for room; `Some(None)`
    /// for a small message (not charged), `None` if the budgets are gone (shutdown).
    async fn charge(&self, len: usize) -> Option<Option<Charge>> {
        if len < CHARGE_FROM {
            return Some(None);
        }
        let n = kib(len);
        let connection = self.my_bytes.clone().acquire_many_owned(n).await.ok()?;
        let node = self.limits.bytes.clone().acquire_many_owned(n).await.ok()?;
        Some(Some(Charge {
            kib: n,
            _connection: connection,
            _node: node,
        }))
    }

    /// Queues an answer with its charge: the request's when that covers it, else its own
    /// (and the request's is released).
    async fn queue(&self, bytes: Vec<u8>, request: Option<Charge>) -> bool {
        let answer = match request {
            Some(c) if c.kib >= kib(bytes.len()) => Some(c),
            _ if bytes.len() < CHARGE_FROM => None,
            request => {
                drop(request);
                match self.charge(bytes.len()).await {
                    Some(c) => c,
                    None => return false,
                }
            }
        };
        self.tx
            .send(Outgoing {
                bytes,
                _charge: answer,
            })
            .await
            .is_ok()
    }

    /// Runs a request where its cost says and queues its answer. False once the connection's
    /// writer is gone.
    async fn dispatch(&self, envelope: Envelope<Request>, charge: Option<Charge>) -> bool {
        // The writer ends when the client is gone: what it still had buffered is not worth
        // computing (a client that queued thousands of requests and hung up costs nothing).
        if self.tx.is_closed() {
            return false;
        }
        let cost = cost(&envelope.body);
        if cost == Cost::Inline {
            let (bytes, _) = respond(&self.node, &self.conn, envelope);
            return self.queue(bytes, charge).await;
        }
        if cost == Cost::Argon {
            // A client that keeps failing password checks waits here, before any work: its
            // connection is paused, everyone else's is not.
            let wait = self.limits.passwords.delay(&self.conn.cert_hash());
            if !wait.is_zero() {
                tracing::debug!("password checks throttled for {} ms", wait.as_millis());
                tokio::time::sleep(wait).await;
            }
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
        let ctx = self.clone();
        let passwords = self.limits.passwords.clone();
        tokio::spawn(async move {
            // The worker queues a small answer itself when the writer has room (the common
            // case: no extra hop); a large one (to be charged), or one the writer has no room
            // for (a client not reading), waits here, in a task, not in a blocked pool thread.
            let computed = tokio::task::spawn_blocking(move || {
                if tx.is_closed() {
                    return None;
                }
                let (bytes, failed_password) = {
                    let _permits = (pool, argon);
                    respond(&node, &conn, envelope)
                };
                if failed_password {
                    passwords.failed(&conn.cert_hash());
                }
                let covered = match &charge {
                    Some(c) => c.kib >= kib(bytes.len()),
                    None => bytes.len() < CHARGE_FROM,
                };
                if !covered {
                    return Some((bytes, charge));
                }
                let outgoing = Outgoing {
                    bytes,
                    _charge: charge,
                };
                match tx.try_send(outgoing) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
                    Err(mpsc::error::TrySendError::Full(o)) => Some((o.bytes, o._charge)),
                }
            })
            .await;
            if let Ok(Some((bytes, charge))) = computed {
                let _ = ctx.queue(bytes, charge).await;
            }
            drop(mine);
        });
        true
    }
}

/// Handles one request and encodes its answer; true if it was a failed password check.
fn respond(node: &Node, conn: &Connection, envelope: Envelope<Request>) -> (Vec<u8>, bool) {
    let request_id = envelope.id;
    let call = handler::Call::new(envelope.key);
    let checks_password = cost(&envelope.body) == Cost::Argon;
    let response = handler::handle(node, conn, envelope.body, &call);
    let failed_password = checks_password
        && matches!(&response, Response::Error(w)
            if matches!(w.code, hsm_proto::ErrorCode::PinIncorrect | hsm_proto::ErrorCode::PinLocked));
    node.count_request();
    let index = call.index.get();
    let bytes = match frame::encode(&Envelope {
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
    };
    (bytes, failed_password)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_failures_are_throttled_after_a_burst_per_certificate() {
        let throttle = PasswordThrottle::default();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(throttle.delay(&a), Duration::ZERO);
        for _ in 0..5 {
            assert_eq!(throttle.delay(&a), Duration::ZERO, "within the burst");
            throttle.failed(&a);
        }
        let wait = throttle.delay(&a);
        assert!(
            wait > Duration::from_millis(300) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(
            throttle.delay(&b),
            Duration::ZERO,
            "another client is not affected"
        );
        std::thread::sleep(wait);
        assert_eq!(throttle.delay(&a), Duration::ZERO, "refilled at the rate");
    }

    #[test]
    fn byte_charges_round_up_to_kib() {
        assert_eq!(kib(1), 1);
        assert_eq!(kib(1024), 1);
        assert_eq!(kib(1025), 2);
        assert!(kib(frame::MAX_FRAME_LEN) as usize * 2 <= kib(CONNECTION_BYTES) as usize);
    }
}
