//! The connection to the cluster, used synchronously by any number of application threads.
//!
//! One TLS connection at a time, driven by the module's background tokio runtime. Requests are
//! pipelined: a caller encodes its frame on its own thread, appends it to a shared outbox and
//! blocks on its thread's reply slot; one writer task sends whatever the outbox holds in one
//! write (so sixteen callers cost a handful of syscalls, not sixteen), and one reader task hands
//! each response to the slot registered under its request id. No lock is held while a caller
//! waits, so every application thread can have a request in flight.
//!
//! The connection is opened on first use. When it dies, the requests in flight fail with
//! `CKR_DEVICE_ERROR` and the next request opens a new one, trying the configured nodes in
//! order. Login state lives on the connection in the node, so the client keeps the
//! credentials of the last successful `C_Login` (in a [`Password`], zeroized on drop) and logs
//! in again on every new connection before anyone else may use it. Session objects do not
//! survive a reconnect: the node drops them with the connection.

use crate::error::{Error, Result};
use hsm_proto::frame::{self, FrameError};
use hsm_proto::msg::{Role, UserType};
use hsm_proto::{Envelope, Password, Request, RequestId, Response};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroize;

/// The least time a key-pair generation is given, whatever `request_timeout_ms` says.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(300);

/// The highest log index any response reflected (read-your-writes): every request carries
/// it, and a node that has not applied it yet waits before serving, so a key created through
/// one node is usable at once through another.
static SEEN_INDEX: AtomicU64 = AtomicU64::new(0);

/// What the module calls itself in the protocol handshake.
const SOFTWARE: &str = concat!("hsm-pkcs11/", env!("CARGO_PKG_VERSION"));

/// The longest one connection attempt to one node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Buffers that grew beyond this for one large request are shrunk back afterwards.
const KEEP_BUFFER: usize = 256 << 10;

/// Where and how to connect.
#[derive(Clone)]
pub struct ClientSettings {
    /// Node addresses, `host:port`, tried in order.
    pub nodes: Vec<String>,
    /// The name to verify in node certificates; default the host part of the address.
    pub server_name: Option<String>,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// TLS 1.3 with our client certificate.
    pub tls: Arc<ClientConfig>,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("nodes", &self.nodes)
            .field("server_name", &self.server_name)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The login the client repeats on every new connection.
struct Credentials {
    user_type: UserType,
    username: String,
    password: Password,
}

impl Credentials {
    fn request(&self) -> Request {
        Request::Login {
            user_type: self.user_type,
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }
}

/// A client of the cluster shared by every thread of the application.
pub struct Client {
    runtime: Handle,
    connector: TlsConnector,
    settings: ClientSettings,
    /// The connection in use; replaced when it dies.
    current: RwLock<Option<Arc<Connection>>>,
    /// Serializes connecting and logging in (rare); never taken on the request path of a
    /// live connection.
    connect_lock: Mutex<()>,
    credentials: Mutex<Option<Credentials>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.settings)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client that will connect on first use, on `runtime`.
    pub fn new(runtime: Handle, settings: ClientSettings) -> Client {
        Client {
            runtime,
            connector: TlsConnector::from(settings.tls.clone()),
            settings,
            current: RwLock::new(None),
            connect_lock: Mutex::new(()),
            credentials: Mutex::new(None),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        }
    }

    /// Sends a request and waits for its answer. A node's error answer becomes
    /// [`Error::Node`]; a transport failure or timeout [`Error::Device`].
    ///
    /// # Errors
    /// As above; `Code(DataLenRange)` when the request does not fit in one frame.
    pub fn call(&self, request: &Request) -> Result<Response> {
        let conn = self.connection()?;
        // RSA-4096 generation takes seconds on an idle node and far longer on a saturated
        // one; a timeout there would report failure for a key the node goes on to create.
        let timeout = match request {
            Request::GenerateKeyPair { .. } => self.settings.request_timeout.max(KEYGEN_TIMEOUT),
            _ => self.settings.request_timeout,
        };
        let response = conn.call(self.fresh_id(), request, timeout)?;
        node_answer(request, response)
    }

    /// Queues a request whose answer nobody waits for (closing a session). Sent only if a
    /// connection is up: without one the node holds nothing the request could release.
    pub fn send_and_forget(&self, request: &Request) {
        let conn = match self.current.read() {
            Ok(guard) => guard.as_ref().filter(|c| c.is_alive()).cloned(),
            Err(_) => None,
        };
        if let Some(conn) = conn
            && let Err(e) = conn.enqueue(self.fresh_id(), request)
        {
            tracing::debug!(request = request.name(), "not sent: {e}");
        }
    }

    /// Logs in on the node and remembers the credentials for reconnects.
    ///
    /// # Errors
    /// The node's verdict (`CKR_PIN_INCORRECT`, `CKR_PIN_LOCKED`, …) or a transport error.
    pub fn login(&self, user_type: UserType, username: String, password: Password) -> Result<Role> {
        let _serial = self.connect_lock.lock()?;
        let conn = self.connection_locked()?;
        let credentials = Credentials {
            user_type,
            username,
            password,
        };
        let request = credentials.request();
        let response = conn.call(self.fresh_id(), &request, self.settings.request_timeout)?;
        match node_answer(&request, response)? {
            Response::LoggedIn { role } => {
                *self.credentials.lock()? = Some(credentials);
                Ok(role)
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Forgets the credentials and logs out on the node if a connection is up (without one,
    /// the node has no login to end).
    ///
    /// # Errors
    /// A transport error; a node's `CKR_USER_NOT_LOGGED_IN` is not an error here.
    pub fn logout(&self) -> Result<()> {
        let _serial = self.connect_lock.lock()?;
        *self.credentials.lock()? = None;
        let conn = self
            .current
            .read()?
            .as_ref()
            .filter(|c| c.is_alive())
            .cloned();
        let Some(conn) = conn else { return Ok(()) };
        let request = Request::Logout;
        let response = conn.call(self.fresh_id(), &request, self.settings.request_timeout)?;
        match node_answer(&request, response) {
            Ok(_) => Ok(()),
            Err(Error::Node(w)) if w.code == hsm_proto::ErrorCode::UserNotLoggedIn => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Changes the logged-in user's password (`C_SetPIN`) and keeps the new one for
    /// reconnects.
    ///
    /// # Errors
    /// The node's verdict (`CKR_PIN_INCORRECT`, `CKR_USER_NOT_LOGGED_IN`, …) or a transport
    /// error.
    pub fn set_pin(&self, old: Password, new: Password) -> Result<()> {
        let _serial = self.connect_lock.lock()?;
        let conn = self.connection_locked()?;
        let request = Request::SetPin {
            old,
            new: new.clone(),
        };
        let response = conn.call(self.fresh_id(), &request, self.settings.request_timeout)?;
        match node_answer(&request, response)? {
            Response::PinChanged => {
                if let Some(credentials) = self.credentials.lock()?.as_mut() {
                    credentials.password = new;
                }
                Ok(())
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// The name of the logged-in user, if any.
    pub fn username(&self) -> Result<Option<String>> {
        Ok(self
            .credentials
            .lock()?
            .as_ref()
            .map(|c| c.username.clone()))
    }

    /// Stops using the network: fails the requests in flight and refuses new ones. Called by
    /// `C_Finalize` before the runtime shuts down.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut current) = self.current.write()
            && let Some(conn) = current.take()
        {
            conn.kill("the module is finalizing");
        }
    }

    fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The live connection, opened if there is none.
    fn connection(&self) -> Result<Arc<Connection>> {
        if let Some(conn) = self.current.read()?.as_ref()
            && conn.is_alive()
        {
            return Ok(conn.clone());
        }
        let _serial = self.connect_lock.lock()?;
        self.connection_locked()
    }

    /// [`Client::connection`] for a caller that holds `connect_lock`.
    fn connection_locked(&self) -> Result<Arc<Connection>> {
        if let Some(conn) = self.current.read()?.as_ref()
            && conn.is_alive()
        {
            return Ok(conn.clone());
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Device("the module is finalizing".into()));
        }
        let conn = self.connect()?;
        if let Some(credentials) = self.credentials.lock()?.as_ref() {
            // Log in again before anyone else sees the connection, so no request runs on
            // it unauthenticated. A failure is logged and left for the node to enforce.
            let request = credentials.request();
            match conn
                .call(self.fresh_id(), &request, self.settings.request_timeout)
                .and_then(|r| node_answer(&request, r))
            {
                Ok(_) => tracing::info!(node = %conn.node, "logged in again after reconnecting"),
                Err(e) => tracing::warn!(node = %conn.node, "login after reconnect failed: {e}"),
            }
        }
        *self.current.write()? = Some(conn.clone());
        Ok(conn)
    }

    /// Opens a connection to the first node that answers and starts its I/O task.
    fn connect(&self) -> Result<Arc<Connection>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let settings = self.settings.clone();
        let connector = self.connector.clone();
        // Runs on the runtime rather than with `block_on`, so that a runtime already shut
        // down (C_Finalize racing another thread) drops the task and we get an error
        // instead of a panic.
        self.runtime.spawn(async move {
            let result = match connect_any(&settings, &connector).await {
                Ok((stream, node)) => {
                    let conn = Arc::new(Connection::new(node));
                    tokio::spawn(drive(conn.clone(), stream));
                    Ok(conn)
                }
                Err(e) => Err(e),
            };
            let _ = tx.send(result);
        });
        match rx.recv() {
            Ok(Ok(conn)) => {
                tracing::info!(node = %conn.node, "connected");
                Ok(conn)
            }
            Ok(Err(message)) => {
                tracing::warn!("cannot reach any node: {message}");
                Err(Error::Device(format!("cannot reach any node: {message}")))
            }
            Err(_) => Err(Error::Device("the module's runtime has stopped".into())),
        }
    }
}

/// Turns a node's error answer into [`Error::Node`], logged as the spec asks.
fn node_answer(request: &Request, response: Response) -> Result<Response> {
    match response {
        Response::Error(wire) => {
            if wire.code == hsm_proto::ErrorCode::DeviceError {
                tracing::warn!(request = request.name(), "node error: {wire}");
            } else {
                tracing::debug!(request = request.name(), "node error: {wire}");
            }
            Err(Error::Node(wire))
        }
        other => Ok(other),
    }
}

/// The error for a response of the wrong kind.
pub fn unexpected(request: &Request, response: &Response) -> Error {
    tracing::warn!(
        request = request.name(),
        "unexpected response {}",
        response_name(response)
    );
    Error::Device(format!("unexpected answer to {}", request.name()))
}

fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Status(_) => "Status",
        Response::Unsealed => "Unsealed",
        Response::LoggedIn { .. } => "LoggedIn",
        Response::LoggedOut => "LoggedOut",
        Response::UserCreated => "UserCreated",
        Response::SessionClosed => "SessionClosed",
        Response::KeyGenerated { .. } => "KeyGenerated",
        Response::KeyPairGenerated { .. } => "KeyPairGenerated",
        Response::ObjectCreated(_) => "ObjectCreated",
        Response::Objects(_) => "Objects",
        Response::AttributeValues(_) => "AttributeValues",
        Response::ObjectDestroyed => "ObjectDestroyed",
        Response::Signature(_) => "Signature",
        Response::Verified => "Verified",
        Response::Ciphertext(_) => "Ciphertext",
        Response::Plaintext(_) => "Plaintext",
        Response::Random(_) => "Random",
        Response::Error(_) => "Error",
        _ => "(newer response)",
    }
}

/// The host part of `host:port` or `[v6]:port`.
pub fn host_part(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        return &rest[..end];
    }
    match address.rsplit_once(':') {
        Some((host, _)) => host,
        None => address,
    }
}

async fn connect_any(
    settings: &ClientSettings,
    connector: &TlsConnector,
) -> Result<(TlsStream<TcpStream>, String), String> {
    let mut failures = Vec::new();
    let per_node = settings.request_timeout.min(CONNECT_TIMEOUT);
    for address in &settings.nodes {
        match tokio::time::timeout(per_node, connect_one(address, settings, connector)).await {
            Ok(Ok(stream)) => return Ok((stream, address.clone())),
            Ok(Err(e)) => failures.push(format!("{address}: {e}")),
            Err(_) => failures.push(format!("{address}: timed out after {per_node:?}")),
        }
    }
    Err(failures.join("; "))
}

async fn connect_one(
    address: &str,
    settings: &ClientSettings,
    connector: &TlsConnector,
) -> Result<TlsStream<TcpStream>, String> {
    let name = settings
        .server_name
        .clone()
        .unwrap_or_else(|| host_part(address).to_owned());
    let server_name =
        ServerName::try_from(name.clone()).map_err(|e| format!("bad server name {name:?}: {e}"))?;
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // Requests are small and latency-bound; the writer batches on its own.
    let _ = tcp.set_nodelay(true);
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let node = frame::client_handshake(&mut tls, SOFTWARE)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tracing::debug!(address, node, "protocol handshake done");
    Ok(tls)
}

/// One connection's shared state.
struct Connection {
    /// `host:port`, for logs.
    node: String,
    /// Encoded frames waiting for the writer.
    outbox: Mutex<Vec<u8>>,
    /// Wakes the writer (and tells it to stop once the connection is dead).
    wake: Notify,
    pending: Mutex<Pending>,
}

struct Pending {
    dead: bool,
    slots: HashMap<u64, Arc<Slot>>,
}

impl Connection {
    fn new(node: String) -> Connection {
        Connection {
            node,
            outbox: Mutex::new(Vec::new()),
            wake: Notify::new(),
            pending: Mutex::new(Pending {
                dead: false,
                slots: HashMap::with_capacity(64),
            }),
        }
    }

    fn is_alive(&self) -> bool {
        self.pending.lock().is_ok_and(|p| !p.dead)
    }

    /// Sends `request` under `id` and waits for its response.
    fn call(&self, id: u64, request: &Request, timeout: Duration) -> Result<Response> {
        let slot = THREAD
            .try_with(|t| t.slot.clone())
            .map_err(|_| Error::Device("called during thread teardown".into()))?;
        slot.arm(id)?;
        {
            let mut pending = self.pending.lock()?;
            if pending.dead {
                slot.disarm();
                return Err(Error::Device(format!(
                    "connection to {} was lost",
                    self.node
                )));
            }
            pending.slots.insert(id, slot.clone());
        }
        if let Err(e) = self.enqueue(id, request) {
            self.pending.lock()?.slots.remove(&id);
            slot.disarm();
            return Err(e);
        }
        match slot.wait(timeout)? {
            Some(result) => result.map_err(Error::Device),
            None => {
                self.pending.lock()?.slots.remove(&id);
                tracing::warn!(
                    node = %self.node,
                    request = request.name(),
                    "no answer within {} ms",
                    timeout.as_millis()
                );
                Err(Error::Device(format!(
                    "no answer from {} within {} ms",
                    self.node,
                    timeout.as_millis()
                )))
            }
        }
    }

    /// Encodes the frame on the caller's thread and appends it to the outbox.
    fn enqueue(&self, id: u64, request: &Request) -> Result<()> {
        let envelope = Envelope {
            id: RequestId(id),
            index: SEEN_INDEX.load(Ordering::Relaxed),
            key: 0,
            body: request,
        };
        THREAD
            .try_with(|t| -> Result<()> {
                let mut scratch = t.scratch.borrow_mut();
                let encoded = frame::encode_into(&envelope, &mut scratch);
                let result = match encoded {
                    Ok(()) => {
                        let mut outbox = self.outbox.lock()?;
                        outbox.extend_from_slice(&scratch);
                        Ok(())
                    }
                    Err(FrameError::TooLarge(n)) => {
                        tracing::debug!(request = request.name(), "request of {n} bytes too large");
                        Err(Error::Code(hsm_proto::ErrorCode::DataLenRange))
                    }
                    Err(e) => Err(Error::Device(format!("cannot encode request: {e}"))),
                };
                wipe(&mut scratch);
                result
            })
            .map_err(|_| Error::Device("called during thread teardown".into()))??;
        self.wake.notify_one();
        Ok(())
    }

    /// Hands a response to the caller waiting for it (if it has not given up).
    fn deliver(&self, id: u64, result: Result<Response, String>) {
        let slot = match self.pending.lock() {
            Ok(mut p) => p.slots.remove(&id),
            Err(p) => p.into_inner().slots.remove(&id),
        };
        match slot {
            Some(slot) => slot.fill(id, result),
            None => tracing::trace!(id, "response nobody waits for"),
        }
    }

    /// Marks the connection dead and fails every request in flight.
    fn kill(&self, why: &str) {
        let slots: Vec<(u64, Arc<Slot>)> = {
            let mut pending = match self.pending.lock() {
                Ok(p) => p,
                Err(p) => p.into_inner(),
            };
            pending.dead = true;
            pending.slots.drain().collect()
        };
        for (id, slot) in slots {
            slot.fill(id, Err(format!("connection to {} lost: {why}", self.node)));
        }
        self.wake.notify_one();
    }

    fn is_dead(&self) -> bool {
        !self.is_alive()
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
async fn drive(conn: Arc<Connection>, stream: TlsStream<TcpStream>) {
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
        if conn.is_dead() {
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

    fn arm(&self, id: u64) -> Result<()> {
        let mut state = self.lock();
        state.armed = id;
        state.result = None;
        Ok(())
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
    fn wait(&self, timeout: Duration) -> Result<Option<Result<Response, String>>> {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.result.is_none())?;
        state.armed = 0;
        Ok(state.result.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_part("127.0.0.1:5700"), "127.0.0.1");
        assert_eq!(host_part("node1.example:5700"), "node1.example");
        assert_eq!(host_part("[::1]:5700"), "::1");
        assert_eq!(host_part("localhost"), "localhost");
    }

    #[test]
    fn ip_addresses_are_valid_server_names() {
        assert!(ServerName::try_from("127.0.0.1".to_owned()).is_ok());
        assert!(ServerName::try_from("::1".to_owned()).is_ok());
    }

    #[test]
    fn slot_drops_late_answers() {
        let slot = Slot::default();
        slot.arm(5).unwrap();
        slot.fill(4, Ok(Response::Verified));
        assert!(slot.wait(Duration::from_millis(1)).unwrap().is_none());
        slot.arm(6).unwrap();
        slot.fill(6, Ok(Response::Verified));
        assert!(matches!(
            slot.wait(Duration::from_millis(1)).unwrap(),
            Some(Ok(Response::Verified))
        ));
    }
}
