//! The client listener: TLS 1.3 with client certificates, the version handshake, then
//! pipelined requests. A connection reads frames and hands each request to a blocking task
//! (crypto off the I/O threads); one writer task coalesces responses into few TLS writes.
//! A malformed or oversized frame is logged and drops that connection; the node keeps serving.

use crate::handler::{self, Connection};
use crate::node::Node;
use hsm_proto::frame::{self, FrameError};
use hsm_proto::{Envelope, Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish the TLS and version handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per connection before the reader waits for the writer.
const WRITE_QUEUE: usize = 1024;

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
        tokio::spawn(async move {
            let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
            match connection(tcp, peer, id, acceptor, node).await {
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

    let conn = Arc::new(Connection::default());
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
        let (node, conn, tx) = (node.clone(), conn.clone(), tx.clone());
        // Crypto, Argon2id and disk commits block: run them on the blocking pool.
        tokio::task::spawn_blocking(move || {
            let request_id = envelope.id;
            let response = handler::handle(&node, &conn, envelope.body);
            let bytes = match frame::encode(&Envelope {
                id: request_id,
                body: response,
            }) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("cannot encode a response: {e}");
                    let err = Response::Error(hsm_proto::WireError::new(
                        hsm_proto::ErrorCode::DeviceError,
                        "response too large to send",
                    ));
                    match frame::encode(&Envelope {
                        id: request_id,
                        body: err,
                    }) {
                        Ok(b) => b,
                        Err(_) => return,
                    }
                }
            };
            let _ = tx.blocking_send(bytes);
        });
    };
    drop(tx);
    let _ = writer.await;
    result
}
