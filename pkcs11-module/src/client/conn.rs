//! One pipelined TLS connection to one node.
//!
//! A caller encodes its frame on its own thread, appends it to the connection's outbox and
//! blocks on its thread's reply slot; one writer task sends whatever the outbox holds in one
//! write (so sixteen callers cost a handful of syscalls, not sixteen), and one reader task hands
//! each response to the waiter registered under its request id: a thread's slot, or a oneshot
//! channel for the module's own background task. No lock is held while a caller waits, so every
//! application thread can have a request in flight.
//!
//! When the connection dies (reset, bad frame, the module closing it), every request in
//! flight fails at once with the reason, so the caller can fail over without waiting for its
//! timeout.

use crate::error::{Error, Result};
use hsm_proto::frame::{self, FrameError};
use hsm_proto::{Envelope, Request, RequestId, Response};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio_rustls::client::TlsStream;
use zeroize::Zeroize;

/// Buffers that grew beyond this for one large request are shrunk back afterwards.
const KEEP_BUFFER: usize = 256 << 10;

/// The highest log index any response reflected (read-your-writes): every request carries
/// it, and a node that has not applied it yet waits before serving, so a key created through
/// one node is usable at once through another.
static SEEN_INDEX: AtomicU64 = AtomicU64::new(0);

/// Connection ids, unique in the process (0 is never used).
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Why a request got no answer.
#[derive(Debug)]
pub enum Failure {
    /// Not sent: the connection was already dead. Retrying elsewhere is always harmless.
    NotSent(String),
    /// Sent, and the connection died or the answer did not come in time: the node may or may
    /// not have acted on it.
    Unknown(String),
    /// The request cannot be sent at all (too large, the thread is exiting).
    Local(Error),
}

/// One connection's shared state.
pub struct Connection {
    /// Unique in the process; session objects and multi-part state name it.
    pub id: u64,
    /// `host:port`, for logs.
    pub node: String,
    /// Requests sent and not yet answered (for least-outstanding routing).
    outstanding: AtomicUsize,
    dead: AtomicBool,
    /// The login epoch this connection's node-side login reflects (see `Client`).
    pub epoch: AtomicU64,
    /// Serializes bringing this connection's login up to date.
    pub login_lock: Mutex<()>,
    /// Encoded frames waiting for the writer.
    outbox: Mutex<Vec<u8>>,
    /// Wakes the writer (and tells it to stop once the connection is dead).
    wake: Notify,
    pending: Mutex<HashMap<u64, Waiter>>,
    /// When it was opened, for the flapping rule.
    pub opened: std::time::Instant,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("node", &self.node)
            .field("alive", &self.is_alive())
            .field("outstanding", &self.outstanding())
            .finish_non_exhaustive()
    }
}

/// Who waits for a response.
enum Waiter {
    Thread(Arc<Slot>),
    Task(oneshot::Sender<Result<Response, String>>),
}

impl Connection {
    /// A connection to `node`, not yet driven.
    pub fn new(node: String) -> Connection {
        Connection {
            id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
            node,
            outstanding: AtomicUsize::new(0),
            dead: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            login_lock: Mutex::new(()),
            outbox: Mutex::new(Vec::new()),
            wake: Notify::new(),
            pending: Mutex::new(HashMap::with_capacity(64)),
            opened: std::time::Instant::now(),
        }
    }

    /// Whether requests can still be sent.
    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::Acquire)
    }

    /// Requests in flight.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    fn lock_pending(&self) -> MutexGuard<'_, HashMap<u64, Waiter>> {
        match self.pending.lock() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        }
    }

    /// Registers a waiter; false if the connection is dead.
    fn register(&self, id: u64, waiter: Waiter) -> bool {
        let mut pending = self.lock_pending();
        // Checked under the lock `kill` drains with, so no waiter is left behind.
        if !self.is_alive() {
            return false;
        }
        pending.insert(id, waiter);
        true
    }

    /// Sends `request` under `id` with the request key `key` and waits (on this thread) for
    /// its response.
    pub fn call(
        &self,
        id: u64,
        key: u128,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let slot = THREAD
            .try_with(|t| t.slot.clone())
            .map_err(|_| Failure::Local(Error::Device("called during thread teardown".into())))?;
        slot.arm(id);
        if !self.register(id, Waiter::Thread(slot.clone())) {
            slot.disarm();
            return Err(Failure::NotSent(format!(
                "connection to {} was lost",
                self.node
            )));
        }
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let result = self.send_and_wait(id, key, request, timeout, &slot);
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        result
    }

    fn send_and_wait(
        &self,
        id: u64,
        key: u128,
        request: &Request,
        timeout: Duration,
        slot: &Slot,
    ) -> Result<Response, Failure> {
        if let Err(e) = self.enqueue(id, key, request) {
            self.lock_pending().remove(&id);
            slot.disarm();
            return Err(Failure::Local(e));
        }
        match slot.wait(timeout) {
            Some(Ok(response)) => Ok(response),
            Some(Err(why)) => Err(Failure::Unknown(why)),
            None => {
                self.lock_pending().remove(&id);
                Err(Failure::Unknown(format!(
                    "no answer from {} within {} ms",
                    self.node,
                    timeout.as_millis()
                )))
            }
        }
    }

    /// [`Connection::call`] for the module's background task.
    pub async fn call_async(
        &self,
        id: u64,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, String> {
        let (tx, rx) = oneshot::channel();
        if !self.register(id, Waiter::Task(tx)) {
            return Err(format!("connection to {} was lost", self.node));
        }
        if let Err(e) = self.enqueue(id, 0, request) {
            self.lock_pending().remove(&id);
            return Err(e.to_string());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!("connection to {} was lost", self.node)),
            Err(_) => {
                self.lock_pending().remove(&id);
                Err(format!(
                    "no answer from {} within {} ms",
                    self.node,
                    timeout.as_millis()
                ))
            }
        }
    }

    /// Encodes the frame on the caller's thread and appends it to the outbox.
    pub fn enqueue(&self, id: u64, key: u128, request: &Request) -> Result<()> {
        let envelope = Envelope {
            id: RequestId(id),
            index: SEEN_INDEX.load(Ordering::Relaxed),
            key,
            body: request,
        };
        let mut scratch = Vec::new();
        let encoded = THREAD.try_with(|t| -> Result<()> {
            let mut scratch = t.scratch.borrow_mut();
            let result = self.encode_append(&envelope, request, &mut scratch);
            wipe(&mut scratch);
            result
        });
        match encoded {
            Ok(result) => result?,
            // A runtime thread without thread-locals left (teardown): a one-off buffer.
            Err(_) => {
                let result = self.encode_append(&envelope, request, &mut scratch);
                wipe(&mut scratch);
                result?
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    fn encode_append(
        &self,
        envelope: &Envelope<&Request>,
        request: &Request,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        match frame::encode_into(envelope, scratch) {
            Ok(()) => {
                let mut outbox = match self.outbox.lock() {
                    Ok(o) => o,
                    Err(p) => p.into_inner(),
                };
                outbox.extend_from_slice(scratch);
                Ok(())
            }
            Err(FrameError::TooLarge(n)) => {
                tracing::debug!(request = request.name(), "request of {n} bytes too large");
                Err(Error::Code(hsm_proto::ErrorCode::DataLenRange))
            }
            Err(e) => Err(Error::Device(format!("cannot encode request: {e}"))),
        }
    }

    /// Hands a response to whoever waits for it (if they have not given up).
    fn deliver(&self, id: u64, result: Result<Response, String>) {
        let waiter = self.lock_pending().remove(&id);
        match waiter {
            Some(Waiter::Thread(slot)) => slot.fill(id, result),
            Some(Waiter::Task(tx)) => {
                let _ = tx.send(result);
            }
            None => tracing::trace!(id, "response nobody waits for"),
        }
    }

    /// Marks the connection dead and fails every request in flight.
    pub fn kill(&self, why: &str) {
        let waiters: Vec<(u64, Waiter)> = {
            let mut pending = self.lock_pending();
            self.dead.store(true, Ordering::Release);
            pending.drain().collect()
        };
        for (id, waiter) in waiters {
            let why = format!("connection to {} lost: {why}", self.node);
            match waiter {
                Waiter::Thread(slot) => slot.fill(id, Err(why)),
                Waiter::Task(tx) => {
                    let _ = tx.send(Err(why));
                }
            }
        }
        self.wake.notify_one();
    }
}

/// Fails the connection's requests when its task ends, whichever way it ends (error, or
/// the runtime dropping the task at shutdown).
struct KillOnDrop(Arc<Connection>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill("connection closed");
    }
}

/// The connection's I/O task.
pub async fn drive(conn: Arc<Connection>, stream: TlsStream<TcpStream>) {
    let _guard = KillOnDrop(conn.clone());
    let (reader, writer) = tokio::io::split(stream);
    let why = tokio::select! {
        why = read_loop(&conn, reader) => Some(why),
        why = write_loop(&conn, writer) => why,
    };
    match why {
        Some(why) => tracing::warn!(node = %conn.node, "connection lost: {why}"),
        None => tracing::debug!(node = %conn.node, "connection closed"),
    }
}

async fn read_loop(conn: &Connection, mut reader: ReadHalf<TlsStream<TcpStream>>) -> String {
    let mut buf = Vec::new();
    loop {
        if let Err(e) = frame::read_frame(&mut reader, &mut buf).await {
            return e.to_string();
        }
        let decoded = frame::decode::<Envelope<Response>>(&buf);
        // Responses carry plaintext and signatures; do not leave them in a reused buffer.
        wipe(&mut buf);
        match decoded {
            Ok(envelope) => {
                SEEN_INDEX.fetch_max(envelope.index, Ordering::Relaxed);
                conn.deliver(envelope.id.0, Ok(envelope.body))
            }
            Err(e) => return format!("bad response from node: {e}"),
        }
    }
}

/// Returns why the connection failed, or `None` when the module closed it.
async fn write_loop(
    conn: &Connection,
    mut writer: WriteHalf<TlsStream<TcpStream>>,
) -> Option<String> {
    let mut batch = Vec::new();
    loop {
        conn.wake.notified().await;
        if !conn.is_alive() {
            let _ = writer.shutdown().await;
            return None;
        }
        {
            let mut outbox = match conn.outbox.lock() {
                Ok(o) => o,
                Err(p) => p.into_inner(),
            };
            std::mem::swap(&mut *outbox, &mut batch);
        }
        if batch.is_empty() {
            continue;
        }
        let written = async {
            writer.write_all(&batch).await?;
            writer.flush().await
        }
        .await;
        wipe(&mut batch);
        if let Err(e) = written {
            return Some(format!("write failed: {e}"));
        }
    }
}

/// Zeroes the used part of a reused buffer, empties it, and gives back memory a large
/// request made it grow to.
fn wipe(buf: &mut Vec<u8>) {
    buf.as_mut_slice().zeroize();
    buf.clear();
    if buf.capacity() > KEEP_BUFFER {
        buf.shrink_to(KEEP_BUFFER);
    }
}

/// Per-thread state reused by every request of that thread, so the request path allocates
/// nothing but the frame.
struct ThreadState {
    slot: Arc<Slot>,
    scratch: RefCell<Vec<u8>>,
}

thread_local! {
    static THREAD: ThreadState = ThreadState {
        slot: Arc::new(Slot::default()),
        scratch: RefCell::new(Vec::new()),
    };
}

/// Where one thread waits for the response to its request.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotState {
    /// The request id this slot waits for (0: none); late answers to an abandoned request
    /// are dropped by comparing it.
    armed: u64,
    result: Option<Result<Response, String>>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn arm(&self, id: u64) {
        let mut state = self.lock();
        state.armed = id;
        state.result = None;
    }

    fn disarm(&self) {
        let mut state = self.lock();
        state.armed = 0;
        state.result = None;
    }

    fn fill(&self, id: u64, result: Result<Response, String>) {
        let mut state = self.lock();
        if state.armed == id {
            state.result = Some(result);
            self.ready.notify_one();
        }
    }

    /// The result, or `None` on timeout. Disarms the slot either way.
    fn wait(&self, timeout: Duration) -> Option<Result<Response, String>> {
        let state = self.lock();
        let (mut state, _) = match self
            .ready
            .wait_timeout_while(state, timeout, |s| s.result.is_none())
        {
            Ok(x) => x,
            Err(p) => p.into_inner(),
        };
        state.armed = 0;
        state.result.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_drops_late_answers() {
        let slot = Slot::default();
        slot.arm(5);
        slot.fill(4, Ok(Response::Verified));
        assert!(slot.wait(Duration::from_millis(1)).is_none());
        slot.arm(6);
        slot.fill(6, Ok(Response::Verified));
        assert!(matches!(
            slot.wait(Duration::from_millis(1)),
            Some(Ok(Response::Verified))
        ));
    }

    #[test]
    fn a_killed_connection_fails_its_waiters_and_refuses_new_ones() {
        let conn = Arc::new(Connection::new("n1:1".into()));
        let c = conn.clone();
        let waiter =
            std::thread::spawn(move || c.call(7, 0, &Request::Status, Duration::from_secs(10)));
        // Wait until the request is registered, then kill.
        while conn.lock_pending().is_empty() {
            std::thread::yield_now();
        }
        assert_eq!(conn.outstanding(), 1);
        conn.kill("test");
        assert!(matches!(waiter.join().unwrap(), Err(Failure::Unknown(_))));
        assert_eq!(conn.outstanding(), 0);
        assert!(matches!(
            conn.call(8, 0, &Request::Status, Duration::from_secs(1)),
            Err(Failure::NotSent(_))
        ));
    }
}
