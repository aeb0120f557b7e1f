//! The module as a client of the cluster, used synchronously by any number of application
//! threads.
//!
//! **Nodes.** The configuration lists seed nodes; every node's status names the cluster's
//! members, and the module keeps a [`Link`] per member (a node added later is used without
//! editing the configuration, a removed one is dropped). Each link holds up to
//! `connections_per_node` long-lived, pipelined TLS connections ([`conn`]).
//!
//! **Routing.** Each request goes to the live connection with the fewest requests in flight
//! (ties rotate), except where state pins it: a session object lives on the connection that
//! created it, and the module keeps all of them on one *home* connection so that a search
//! sees them; a multi-part operation the node holds state for stays on its connection.
//!
//! **Failover.** When a node fails (connection reset, timeout, an answer saying it cannot
//! serve: sealed, not joined, no quorum), the request is retried on another node until the
//! call's failover budget is spent, if retrying is harmless: reads and crypto always;
//! mutations because each carries a request key, the same on every retry, so the cluster
//! applies it once. The failed node is backed off (longer each time it fails again soon after
//! coming back) and probed by the background task, which puts it back in use once it
//! answers unsealed.
//!
//! **Login.** `Login` answers with a ticket that any node of the cluster accepts
//! (`ResumeLogin`); the password is dropped as soon as `C_Login` returns. Each connection is
//! brought up to the application's login state (a login *epoch*) before its first request:
//! logged in with the ticket, or logged out. The background task renews the ticket at
//! half-life.

mod conn;

pub use conn::Connection;

use crate::error::{Error, Result};
use conn::Failure;
use hsm_proto::frame;
use hsm_proto::msg::{NodeStatus, Role, SealState, UserType};
use hsm_proto::{ErrorCode, Password, Request, Response, SecretBytes};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The least time a key-pair generation is given, whatever `request_timeout_ms` says.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(300);

/// What the module calls itself in the protocol handshake.
const SOFTWARE: &str = concat!("hsm-pkcs11/", env!("CARGO_PKG_VERSION"));

/// How often the background task looks after the links.
const TICK: Duration = Duration::from_millis(200);

/// The first back-off after a node fails; doubled for each further failure.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A node whose connection lived this long is not flapping: its failure count starts over.
const STABLE: Duration = Duration::from_secs(30);
/// How long a caller waits between rounds when no node can serve (at most; less near the
/// deadline).
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// Where and how to connect.
#[derive(Clone)]
pub struct ClientSettings {
    /// Seed node addresses, `host:port`.
    pub nodes: Vec<String>,
    /// The name to verify in node certificates; default the host part of the address.
    pub server_name: Option<String>,
    /// How long one attempt of a request on one node may take.
    pub request_timeout: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one call may spend in all, failing over between nodes.
    pub failover_timeout: Duration,
    /// Connections kept to each node.
    pub connections_per_node: usize,
    /// Whether to learn the members from the nodes (else: the seeds only).
    pub discover: bool,
    /// How often the membership is asked for.
    pub refresh_interval: Duration,
    /// TLS 1.3 with our client certificate.
    pub tls: Arc<ClientConfig>,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("nodes", &self.nodes)
            .field("server_name", &self.server_name)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("failover_timeout", &self.failover_timeout)
            .field("connections_per_node", &self.connections_per_node)
            .finish_non_exhaustive()
    }
}

/// Where a request may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Any node: the least loaded.
    Any,
    /// The home connection (where session objects live).
    Home,
    /// This connection only (it holds state the request needs); no failover.
    Conn(u64),
}

/// Whether a request may be sent again after an unknown outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Reads and crypto: harmless.
    Safe,
    /// A mutation with this request key: the cluster applies it once.
    Keyed(u128),
    /// Never after it may have reached a node.
    Never,
}

/// A node's answer and the connection that gave it.
#[derive(Debug)]
pub struct Served {
    /// The answer (never `Response::Error`: that is an `Err`).
    pub response: Response,
    /// The connection that served it.
    pub conn: u64,
}

/// Counters the tests and the benchmark read (also logged at finalize).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests moved to another node after a failure.
    pub failovers: AtomicU64,
    /// Connections opened.
    pub connects: AtomicU64,
}

/// One node the module knows of.
struct Link {
    address: String,
    /// The node's name, from its handshake or the membership.
    name: Mutex<Option<String>>,
    conns: Mutex<Vec<Arc<Connection>>>,
    health: Mutex<Health>,
    /// Dropped from the membership: being closed.
    removed: AtomicBool,
}

#[derive(Default)]
struct Health {
    /// Failures since the node was last stable.
    failures: u32,
    /// Not tried again before this.
    retry_at: Option<Instant>,
    /// A connection attempt is under way.
    connecting: usize,
    /// Why it last failed, for the "no node can serve" message.
    last_error: Option<String>,
}

impl Link {
    fn new(address: String, name: Option<String>) -> Link {
        Link {
            address,
            name: Mutex::new(name),
            conns: Mutex::new(Vec::new()),
            health: Mutex::new(Health::default()),
            removed: AtomicBool::new(false),
        }
    }

    fn name(&self) -> Option<String> {
        lock(&self.name).clone()
    }

    /// Whether a connection may be attempted now.
    fn may_connect(&self, now: Instant) -> bool {
        !self.removed.load(Ordering::Relaxed)
            && lock(&self.health).retry_at.is_none_or(|at| at <= now)
    }

    /// Records a failure and backs the node off.
    fn failed(&self, why: &str) {
        let mut h = lock(&self.health);
        h.failures = h.failures.saturating_add(1);
        let backoff = BACKOFF_MIN
            .saturating_mul(1u32 << h.failures.saturating_sub(1).min(6))
            .min(BACKOFF_MAX);
        h.retry_at = Some(Instant::now() + backoff);
        h.last_error = Some(why.to_owned());
    }

    fn live(&self) -> Vec<Arc<Connection>> {
        lock(&self.conns)
            .iter()
            .filter(|c| c.is_alive())
            .cloned()
            .collect()
    }
}

/// The application's login, as every connection must reflect it.
struct LoginState {
    username: String,
    ticket: SecretBytes,
    renew_at: Instant,
}

/// A client of the cluster shared by every thread of the application.
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Handle,
    connector: TlsConnector,
    settings: ClientSettings,
    links: RwLock<Vec<Arc<Link>>>,
    /// Every live connection, rebuilt when one opens or dies: the request path reads it.
    live: RwLock<Arc<[Arc<Connection>]>>,
    home: Mutex<Option<Arc<Connection>>>,
    /// The leader's node name, as the last status said: mutations go there first (a
    /// follower would forward them, one more hop on the commit path).
    leader: Mutex<Option<String>>,
    /// Ask for the membership at the next tick (a node failed: the leader may have changed).
    refresh_soon: AtomicBool,
    login: Mutex<Option<LoginState>>,
    /// Bumped by every login and logout; a connection is usable once its epoch matches.
    epoch: AtomicU64,
    /// Serializes login and logout.
    login_serial: Mutex<()>,
    /// Serializes connection attempts made by callers (the background task makes its own).
    connect_serial: Mutex<()>,
    next_id: AtomicU64,
    closed: AtomicBool,
    stats: Stats,
    /// Spreads ties between equally loaded connections.
    rotor: AtomicUsize,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.inner.settings)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A fresh request key: 128 random bits, so that no two calls of any two clients collide.
pub fn request_key() -> Result<u128> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Device(format!("no randomness: {e}")))?;
    Ok(u128::from_le_bytes(b).max(1))
}

impl Client {
    /// A client that connects on first use, on `runtime`, and starts its background task.
    pub fn new(runtime: Handle, settings: ClientSettings) -> Client {
        let links = settings
            .nodes
            .iter()
            .map(|a| Arc::new(Link::new(a.clone(), None)))
            .collect();
        let inner = Arc::new(Inner {
            connector: TlsConnector::from(settings.tls.clone()),
            runtime: runtime.clone(),
            settings,
            links: RwLock::new(links),
            live: RwLock::new(Arc::from(Vec::new())),
            home: Mutex::new(None),
            leader: Mutex::new(None),
            refresh_soon: AtomicBool::new(false),
            login: Mutex::new(None),
            epoch: AtomicU64::new(0),
            login_serial: Mutex::new(()),
            connect_serial: Mutex::new(()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
            rotor: AtomicUsize::new(0),
        });
        runtime.spawn(maintain(Arc::downgrade(&inner)));
        Client { inner }
    }

    /// Whether `C_Finalize` closed this client.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Sends a request where `route` allows and waits for its answer, failing over as
    /// `retry` allows. A node's error answer becomes [`Error::Node`].
    ///
    /// # Errors
    /// The node's verdict; `DeviceError` when no node could serve within the failover
    /// budget (or the pinned connection failed); `NotInitialized` once `C_Finalize` began;
    /// `DataLenRange` when the request does not fit in one frame.
    pub fn call(&self, request: &Request, route: Route, retry: Retry) -> Result<Served> {
        self.inner.call(request, route, retry)
    }

    /// [`Client::call`] on any node, retried freely: for reads.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub fn read(&self, request: &Request) -> Result<Response> {
        self.call(request, Route::Any, Retry::Safe)
            .map(|s| s.response)
    }

    /// Whether connection `id` is still up (its session objects and operations exist).
    pub fn is_live(&self, id: u64) -> bool {
        self.inner
            .live_snapshot()
            .iter()
            .any(|c| c.id == id && c.is_alive())
    }

    /// Queues a request on every live connection without waiting (closing a session: its
    /// objects and operations may be on any of them). Without a connection the nodes hold
    /// nothing it could release.
    pub fn send_and_forget(&self, request: &Request) {
        for conn in self.inner.live_snapshot().iter() {
            if let Err(e) = conn.enqueue(self.inner.fresh_id(), 0, request) {
                tracing::debug!(request = request.name(), "not sent: {e}");
            }
        }
    }

    /// Logs in (on one node, with the password) and keeps the ticket for every other
    /// connection.
    ///
    /// # Errors
    /// The node's verdict (`CKR_PIN_INCORRECT`, `CKR_PIN_LOCKED`, …) or `DeviceError`.
    pub fn login(&self, user_type: UserType, username: String, password: Password) -> Result<Role> {
        self.inner.login(user_type, username, password)
    }

    /// Forgets the login and logs out on every connection (a connection where that cannot be
    /// confirmed is closed, so no login outlives `C_Logout`).
    ///
    /// # Errors
    /// None today; kept for the callers' sake.
    pub fn logout(&self) -> Result<()> {
        self.inner.logout();
        Ok(())
    }

    /// Changes the logged-in user's password (`C_SetPIN`). Not retried once sent: a retry
    /// after the change applied would fail with the old password.
    ///
    /// # Errors
    /// The node's verdict (`CKR_PIN_INCORRECT`, `CKR_USER_NOT_LOGGED_IN`, …) or a transport
    /// error.
    pub fn set_pin(&self, old: Password, new: Password) -> Result<()> {
        let request = Request::SetPin { old, new };
        match self.call(&request, Route::Any, Retry::Never)?.response {
            Response::PinChanged => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// The name of the logged-in user, if any.
    pub fn username(&self) -> Result<Option<String>> {
        Ok(lock(&self.inner.login).as_ref().map(|l| l.username.clone()))
    }

    /// Stops using the network: fails the requests in flight and refuses new ones. Called by
    /// `C_Finalize` before the runtime shuts down.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        for link in inner.links_snapshot() {
            for conn in lock(&link.conns).drain(..) {
                conn.kill("the module is finalizing");
            }
        }
        *lock(&inner.home) = None;
        inner.rebuild_live();
        *lock(&inner.login) = None;
        tracing::info!(
            failovers = inner.stats.failovers.load(Ordering::Relaxed),
            connects = inner.stats.connects.load(Ordering::Relaxed),
            "client closed"
        );
    }
}

impl Inner {
    fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn live_snapshot(&self) -> Arc<[Arc<Connection>]> {
        match self.live.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn links_snapshot(&self) -> Vec<Arc<Link>> {
        match self.links.read() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Recomputes the live list from the links, dropping dead connections.
    fn rebuild_live(&self) {
        let mut all = Vec::new();
        for link in self.links_snapshot() {
            let mut conns = lock(&link.conns);
            conns.retain(|c| c.is_alive());
            all.extend(conns.iter().cloned());
        }
        let all: Arc<[Arc<Connection>]> = Arc::from(all);
        match self.live.write() {
            Ok(mut l) => *l = all,
            Err(p) => *p.into_inner() = all,
        }
    }

    fn link_of(&self, conn: &Connection) -> Option<Arc<Link>> {
        self.links_snapshot()
            .into_iter()
            .find(|l| lock(&l.conns).iter().any(|c| c.id == conn.id))
    }

    /// A node failed under `conn`: close the connection, back the node off, drop it from
    /// the live list.
    fn node_failed(&self, conn: &Connection, why: &str) {
        // Every caller with a request in flight on the node reports the same failure; the
        // first one (the connection is still listed) closes and backs off, so one failure
        // counts once against the node.
        if let Some(link) = self.link_of(conn) {
            tracing::warn!(node = %conn.node, "node failed: {why}");
            // Its other connections go too: the node, not the connection, failed.
            for c in lock(&link.conns).drain(..) {
                c.kill(why);
            }
            link.failed(why);
            if link.name().is_some() && *lock(&self.leader) == link.name() {
                *lock(&self.leader) = None;
            }
            self.refresh_soon.store(true, Ordering::Relaxed);
            self.rebuild_live();
        }
        conn.kill(why);
    }

    fn call(&self, request: &Request, route: Route, retry: Retry) -> Result<Served> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::NotInitialized);
        }
        // RSA-4096 generation takes seconds on an idle node and far longer on a saturated
        // one; a timeout there would report failure for a key the node goes on to create.
        let (attempt_timeout, budget) = match request {
            Request::GenerateKeyPair { .. } => (
                self.settings.request_timeout.max(KEYGEN_TIMEOUT),
                self.settings.failover_timeout.max(KEYGEN_TIMEOUT),
            ),
            _ => (
                self.settings.request_timeout,
                self.settings.failover_timeout,
            ),
        };
        let deadline = Instant::now() + budget;
        let key = match retry {
            Retry::Keyed(k) => k,
            _ => 0,
        };
        // Commits go to the leader when it is known (measured: a follower's forwarding hop
        // cost a third of the 3-node creation rate), except RSA key-pair generation, whose
        // cost is the generation itself, best spread over the nodes.
        let to_leader = key != 0
            && !matches!(request, Request::GenerateKeyPair { mechanism, .. }
                if mechanism.kind == cryptoki_sys::CKM_RSA_PKCS_KEY_PAIR_GEN as u64);
        let mut excluded: Vec<u64> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut attempts = 0u32;
        let mut rounds = 0u32;
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::NotInitialized);
            }
            let conn = match self.choose(route, &excluded, to_leader) {
                Ok(Some(conn)) => conn,
                Ok(None) => {
                    // Nothing to try this round: pause, then try every node again (one may
                    // have come back, or a leader been elected).
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(self.exhausted(request, &failures));
                    }
                    rounds += 1;
                    let pause = (ROUND_PAUSE * rounds.min(5)).min(deadline - now);
                    std::thread::sleep(pause);
                    excluded.clear();
                    continue;
                }
                Err(e) => return Err(e),
            };
            if attempts > 0 {
                self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    request = request.name(),
                    node = %conn.node,
                    "retrying on {} after: {}",
                    conn.node,
                    failures.last().map_or("", String::as_str)
                );
            }
            attempts += 1;
            let timeout = attempt_timeout
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(50));
            let outcome = self
                .ensure_login(&conn, timeout)
                .and_then(|()| conn.call(self.fresh_id(), key, request, timeout));
            let pinned = matches!(route, Route::Conn(_));
            match outcome {
                Ok(Response::Error(wire)) if wire.unavailable && !pinned => {
                    // The node is up but cannot serve this now (no quorum during an
                    // election, a failed store): try the others; its connection stays, as
                    // it may serve the next request.
                    tracing::info!(node = %conn.node, request = request.name(), "{wire}");
                    failures.push(format!("{}: {wire}", conn.node));
                    excluded.push(conn.id);
                }
                Ok(Response::Error(wire)) => {
                    // A retried destroy whose first attempt applied finds nothing to destroy.
                    if attempts > 1
                        && wire.code == ErrorCode::ObjectHandleInvalid
                        && matches!(request, Request::DestroyObject { .. })
                        && matches!(retry, Retry::Keyed(_))
                    {
                        return Ok(Served {
                            response: Response::ObjectDestroyed,
                            conn: conn.id,
                        });
                    }
                    return Err(node_error(request, wire));
                }
                Ok(response) => {
                    if key != 0 {
                        tracing::debug!(
                            request = request.name(),
                            "applied through {} (attempt {attempts})",
                            conn.node
                        );
                    }
                    return Ok(Served {
                        response,
                        conn: conn.id,
                    });
                }
                Err(Failure::Local(e)) => return Err(e),
                Err(Failure::NotSent(why)) => {
                    if pinned {
                        return Err(Error::Device(why));
                    }
                    self.node_failed(&conn, &why);
                    failures.push(why);
                    excluded.push(conn.id);
                }
                Err(Failure::Unknown(why)) => {
                    self.node_failed(&conn, &why);
                    if self.closed.load(Ordering::SeqCst) {
                        return Err(Error::NotInitialized);
                    }
                    if pinned || retry == Retry::Never {
                        return Err(Error::Device(why));
                    }
                    failures.push(why);
                    excluded.push(conn.id);
                }
            }
        }
    }

    /// The error when the failover budget is spent.
    fn exhausted(&self, request: &Request, failures: &[String]) -> Error {
        let mut why: Vec<String> = failures.iter().rev().take(3).cloned().collect();
        if why.is_empty() {
            for link in self.links_snapshot() {
                if let Some(e) = lock(&link.health).last_error.clone() {
                    why.push(format!("{}: {e}", link.address));
                }
            }
        }
        let message = format!(
            "no node could serve {} within {} ms: {}",
            request.name(),
            self.settings.failover_timeout.as_millis(),
            if why.is_empty() {
                "no node reachable".to_owned()
            } else {
                why.join("; ")
            }
        );
        tracing::warn!("{message}");
        Error::Device(message)
    }

    /// The connection for the next attempt, `None` when nothing can be tried right now.
    fn choose(
        &self,
        route: Route,
        excluded: &[u64],
        to_leader: bool,
    ) -> Result<Option<Arc<Connection>>> {
        match route {
            Route::Conn(id) => match self.live_snapshot().iter().find(|c| c.id == id) {
                Some(c) if c.is_alive() => Ok(Some(c.clone())),
                _ => Err(Error::Device(
                    "the node holding this operation's state failed; the operation cannot be resumed"
                        .into(),
                )),
            },
            Route::Home => {
                let mut home = lock(&self.home);
                if let Some(c) = home.as_ref()
                    && c.is_alive()
                    && !excluded.contains(&c.id)
                {
                    return Ok(Some(c.clone()));
                }
                let picked = self.pick(excluded);
                if let Some(c) = &picked {
                    if home.as_ref().is_some_and(|h| h.id != c.id) {
                        tracing::warn!(
                            node = %c.node,
                            "session objects now live on {} (the previous node's are gone)",
                            c.node
                        );
                    }
                    *home = Some(c.clone());
                }
                Ok(picked)
            }
            Route::Any if to_leader => Ok(self.leader_conn(excluded).or_else(|| self.pick(excluded))),
            Route::Any => Ok(self.pick(excluded)),
        }
    }

    /// A live connection to the leader, if the leader is known and not excluded.
    fn leader_conn(&self, excluded: &[u64]) -> Option<Arc<Connection>> {
        let leader = lock(&self.leader).clone()?;
        let link = self
            .links_snapshot()
            .into_iter()
            .find(|l| l.name().as_deref() == Some(leader.as_str()))?;
        link.live()
            .into_iter()
            .filter(|c| !excluded.contains(&c.id))
            .min_by_key(|c| c.outstanding())
    }

    /// The least-loaded live connection not excluded; if there is none, one newly opened.
    fn pick(&self, excluded: &[u64]) -> Option<Arc<Connection>> {
        let live = self.live_snapshot();
        let n = live.len();
        if n > 0 {
            let start = self.rotor.fetch_add(1, Ordering::Relaxed) % n;
            let mut best: Option<&Arc<Connection>> = None;
            for i in 0..n {
                let c = &live[(start + i) % n];
                if !c.is_alive() || excluded.contains(&c.id) {
                    continue;
                }
                if best.is_none_or(|b| c.outstanding() < b.outstanding()) {
                    best = Some(c);
                }
            }
            if let Some(c) = best {
                return Some(c.clone());
            }
        }
        self.connect_now(excluded)
    }

    /// Opens a connection to the first node that may be tried and answers, on the caller's
    /// thread (when no connection is up: at start, or when every node failed).
    fn connect_now(&self, excluded: &[u64]) -> Option<Arc<Connection>> {
        let _serial = lock(&self.connect_serial);
        // Another caller may have connected while we waited.
        if let Some(c) = self
            .live_snapshot()
            .iter()
            .find(|c| c.is_alive() && !excluded.contains(&c.id))
        {
            return Some(c.clone());
        }
        let now = Instant::now();
        for link in self.links_snapshot() {
            if !link.may_connect(now) {
                continue;
            }
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let inner_link = link.clone();
            let connector = self.connector.clone();
            let settings = self.settings.clone();
            // Runs on the runtime rather than with `block_on`, so that a runtime already
            // shut down (C_Finalize racing another thread) drops the task and we get an
            // error instead of a panic.
            self.runtime.spawn(async move {
                let _ = tx.send(open(&inner_link, &settings, &connector).await);
            });
            let wait = self.settings.connect_timeout + self.settings.request_timeout;
            match rx.recv_timeout(wait) {
                Ok(Ok((conn, status))) => {
                    self.installed(&link, &conn, Some(&status));
                    return Some(conn);
                }
                Ok(Err(why)) => {
                    tracing::warn!(node = %link.address, "cannot use node: {why}");
                    link.failed(&why);
                }
                Err(_) => {
                    if self.closed.load(Ordering::SeqCst) {
                        return None;
                    }
                    link.failed("connection attempt did not finish");
                }
            }
        }
        None
    }

    /// Puts a new connection in use and learns the membership from its node's status.
    fn installed(&self, link: &Link, conn: &Arc<Connection>, status: Option<&NodeStatus>) {
        if self.closed.load(Ordering::SeqCst) || link.removed.load(Ordering::Relaxed) {
            conn.kill("not needed");
            return;
        }
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        lock(&link.conns).push(conn.clone());
        lock(&link.health).last_error = None;
        tracing::info!(node = %conn.node, "connected");
        self.rebuild_live();
        if let Some(status) = status {
            self.learn(status);
        }
    }

    /// Adds the members a status names and drops the links of nodes no longer in it.
    fn learn(&self, status: &NodeStatus) {
        let Some(raft) = &status.raft else { return };
        let leader = raft
            .leader
            .and_then(|id| raft.members.iter().find(|m| m.node_id == id))
            .map(|m| m.name.clone());
        match leader {
            Some(name) => *lock(&self.leader) = Some(name),
            // An election is under way: ask again at the next tick.
            None => self.refresh_soon.store(true, Ordering::Relaxed),
        }
        if !self.settings.discover || raft.members.is_empty() {
            return;
        }
        let mut changed = false;
        {
            let mut links = match self.links.write() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            for m in &raft.members {
                let known = links
                    .iter()
                    .any(|l| l.address == m.client_addr || l.name().as_deref() == Some(&m.name));
                if !known && !m.client_addr.is_empty() {
                    tracing::info!(node = %m.client_addr, "new cluster member {}", m.name);
                    links.push(Arc::new(Link::new(
                        m.client_addr.clone(),
                        Some(m.name.clone()),
                    )));
                    changed = true;
                }
            }
            links.retain(|l| {
                let member = raft
                    .members
                    .iter()
                    .any(|m| m.client_addr == l.address || l.name().as_deref() == Some(&m.name));
                // A link whose node never answered keeps its place until it does: its name
                // is unknown, so it cannot be told apart from a member listed by name.
                let keep = member || l.name().is_none();
                if !keep {
                    tracing::info!(node = %l.address, "no longer a cluster member: dropped");
                    l.removed.store(true, Ordering::Relaxed);
                    for c in lock(&l.conns).drain(..) {
                        c.kill("the node left the cluster");
                    }
                    changed = true;
                }
                keep
            });
        }
        if changed {
            self.rebuild_live();
        }
    }

    /// Brings a connection's node-side login up to the application's login epoch.
    fn ensure_login(&self, conn: &Connection, timeout: Duration) -> Result<(), Failure> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if conn.epoch.load(Ordering::Acquire) == epoch {
            return Ok(());
        }
        let _serial = lock(&conn.login_lock);
        let epoch = self.epoch.load(Ordering::Acquire);
        if conn.epoch.load(Ordering::Acquire) == epoch {
            return Ok(());
        }
        let ticket = lock(&self.login).as_ref().map(|l| l.ticket.clone());
        let Some(ticket) = ticket else {
            // Logged out: a new connection has nothing to undo; an old one was logged out
            // by `logout` (or closed).
            if conn.epoch.load(Ordering::Acquire) != 0 {
                self.plain_call(conn, &Request::Logout, timeout)?;
            }
            conn.epoch.store(epoch, Ordering::Release);
            return Ok(());
        };
        let request = Request::ResumeLogin { ticket };
        let mut answer = self.plain_call(conn, &request, timeout)?;
        if let Response::Error(w) = &answer
            && w.code == ErrorCode::UserAlreadyLoggedIn
        {
            // A login of an earlier epoch is still there: replace it.
            self.plain_call(conn, &Request::Logout, timeout)?;
            answer = self.plain_call(conn, &request, timeout)?;
        }
        match answer {
            Response::LoggedIn {
                ticket,
                ticket_lifetime_s,
                ..
            } => {
                self.keep_ticket(epoch, ticket, ticket_lifetime_s);
                tracing::debug!(node = %conn.node, "login carried over with the ticket");
            }
            Response::Error(w) if w.unavailable => {
                return Err(Failure::NotSent(format!("{}: {w}", conn.node)));
            }
            other => {
                // Left for the node to enforce: the request will answer "not logged in".
                tracing::warn!(
                    node = %conn.node,
                    "login could not be carried over: {}",
                    match &other {
                        Response::Error(w) => w.to_string(),
                        o => response_name(o).to_owned(),
                    }
                );
            }
        }
        conn.epoch.store(epoch, Ordering::Release);
        Ok(())
    }

    fn plain_call(
        &self,
        conn: &Connection,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        conn.call(self.fresh_id(), 0, request, timeout)
    }

    /// Keeps a fresher ticket if the login is still the one of `epoch`.
    fn keep_ticket(&self, epoch: u64, ticket: SecretBytes, lifetime_s: u64) {
        let mut login = lock(&self.login);
        if self.epoch.load(Ordering::Acquire) == epoch
            && let Some(l) = login.as_mut()
        {
            l.ticket = ticket;
            l.renew_at = Instant::now() + Duration::from_secs(lifetime_s / 2);
        }
    }

    fn login(&self, user_type: UserType, username: String, password: Password) -> Result<Role> {
        let _serial = lock(&self.login_serial);
        let request = Request::Login {
            user_type,
            username: username.clone(),
            password,
        };
        let deadline = Instant::now() + self.settings.failover_timeout;
        let mut excluded = Vec::new();
        let mut failures = Vec::new();
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::NotInitialized);
            }
            let conn = match self.choose(Route::Any, &excluded, false)? {
                Some(c) => c,
                None if Instant::now() < deadline => {
                    std::thread::sleep(ROUND_PAUSE);
                    excluded.clear();
                    continue;
                }
                None => return Err(self.exhausted(&request, &failures)),
            };
            let _conn_serial = lock(&conn.login_lock);
            // The connection is in the logged-out state (or new); nothing to bring up to date.
            let answer = conn.call(self.fresh_id(), 0, &request, self.settings.request_timeout);
            match answer {
                Ok(Response::LoggedIn {
                    role,
                    ticket,
                    ticket_lifetime_s,
                }) => {
                    let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
                    *lock(&self.login) = Some(LoginState {
                        username,
                        ticket,
                        renew_at: Instant::now() + Duration::from_secs(ticket_lifetime_s / 2),
                    });
                    conn.epoch.store(epoch, Ordering::Release);
                    return Ok(role);
                }
                Ok(Response::Error(w)) if w.unavailable => {
                    failures.push(format!("{}: {w}", conn.node));
                    excluded.push(conn.id);
                }
                Ok(Response::Error(w)) => return Err(node_error(&request, w)),
                Ok(other) => return Err(unexpected(&request, &other)),
                Err(Failure::Local(e)) => return Err(e),
                Err(Failure::NotSent(why) | Failure::Unknown(why)) => {
                    drop(_conn_serial);
                    self.node_failed(&conn, &why);
                    failures.push(why);
                    excluded.push(conn.id);
                }
            }
        }
    }

    fn logout(&self) {
        let _serial = lock(&self.login_serial);
        let epoch = {
            let mut login = lock(&self.login);
            *login = None;
            self.epoch.fetch_add(1, Ordering::AcqRel) + 1
        };
        for conn in self.live_snapshot().iter() {
            let _conn_serial = lock(&conn.login_lock);
            if conn.epoch.load(Ordering::Acquire) == 0 {
                // Never logged in.
                conn.epoch.store(epoch, Ordering::Release);
                continue;
            }
            match self.plain_call(conn, &Request::Logout, self.settings.request_timeout) {
                Ok(Response::LoggedOut) => {}
                Ok(Response::Error(w)) if w.code == ErrorCode::UserNotLoggedIn => {}
                other => {
                    tracing::warn!(
                        node = %conn.node,
                        "logout not confirmed ({}); closing the connection",
                        match other {
                            Ok(r) => response_name(&r).to_owned(),
                            Err(Failure::NotSent(w) | Failure::Unknown(w)) => w,
                            Err(Failure::Local(e)) => e.to_string(),
                        }
                    );
                    conn.kill("logout not confirmed");
                    continue;
                }
            }
            conn.epoch.store(epoch, Ordering::Release);
        }
        self.rebuild_live();
    }
}

/// The background task: closes what died, connects what is missing (each node as its
/// back-off allows), learns the membership, renews the login ticket. Ends when the client is
/// dropped or closed, or the runtime shuts down.
async fn maintain(inner: Weak<Inner>) {
    let mut last_refresh = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let mut died = false;
        for link in inner.links_snapshot() {
            {
                let mut conns = lock(&link.conns);
                // Nobody reads an idle connection: look whether its node closed it.
                for c in conns.iter() {
                    c.check_idle();
                }
                let before = conns.len();
                let stable = conns
                    .iter()
                    .any(|c| c.is_alive() && c.opened.elapsed() > STABLE);
                conns.retain(|c| c.is_alive());
                if conns.len() < before {
                    died = true;
                }
                if stable {
                    lock(&link.health).failures = 0;
                }
            }
            let want = inner.settings.connections_per_node.max(1);
            let have = link.live().len() + lock(&link.health).connecting;
            if have < want && link.may_connect(now) {
                lock(&link.health).connecting += 1;
                let (inner2, link2) = (inner.clone(), link.clone());
                tokio::spawn(async move {
                    let result = open(&link2, &inner2.settings, &inner2.connector).await;
                    lock(&link2.health).connecting -= 1;
                    match result {
                        Ok((conn, status)) => inner2.installed(&link2, &conn, Some(&status)),
                        Err(why) => {
                            tracing::debug!(node = %link2.address, "probe: {why}");
                            link2.failed(&why);
                        }
                    }
                });
            }
        }
        if died {
            inner.rebuild_live();
        }
        if now.duration_since(last_refresh) >= inner.settings.refresh_interval
            || inner.refresh_soon.swap(false, Ordering::Relaxed)
        {
            last_refresh = now;
            refresh(&inner).await;
        }
    }
}

/// Asks one node for the membership, and renews the ticket when it is due.
async fn refresh(inner: &Arc<Inner>) {
    let live = inner.live_snapshot();
    let Some(conn) = live.iter().find(|c| c.is_alive()).cloned() else {
        return;
    };
    let timeout = inner.settings.request_timeout;
    match conn
        .call_async(inner.fresh_id(), Request::Status, timeout)
        .await
    {
        Ok(Response::Status(status)) => inner.learn(&status),
        Ok(other) => tracing::debug!("status answered with {}", response_name(&other)),
        Err(e) => tracing::debug!(node = %conn.node, "status: {e}"),
    }
    let epoch = inner.epoch.load(Ordering::Acquire);
    let due = lock(&inner.login)
        .as_ref()
        .is_some_and(|l| Instant::now() >= l.renew_at);
    if due && conn.epoch.load(Ordering::Acquire) == epoch {
        match conn
            .call_async(inner.fresh_id(), Request::RenewTicket, timeout)
            .await
        {
            Ok(Response::LoggedIn {
                ticket,
                ticket_lifetime_s,
                ..
            }) => {
                inner.keep_ticket(epoch, ticket, ticket_lifetime_s);
                tracing::debug!("login ticket renewed");
            }
            Ok(Response::Error(w)) => tracing::warn!("login ticket not renewed: {w}"),
            Ok(_) => {}
            Err(e) => tracing::debug!("ticket renewal: {e}"),
        }
    }
}

/// Opens a connection to a link's node and checks that it serves: TLS, the version
/// handshake, then the node's status (unsealed, in a cluster).
async fn open(
    link: &Link,
    settings: &ClientSettings,
    connector: &TlsConnector,
) -> Result<(Arc<Connection>, NodeStatus), String> {
    let address = link.address.clone();
    let (stream, name) = match tokio::time::timeout(
        settings.connect_timeout,
        connect_one(&address, settings, connector),
    )
    .await
    {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return Err(format!("{address}: {e}")),
        Err(_) => {
            return Err(format!(
                "{address}: no connection within {} ms",
                settings.connect_timeout.as_millis()
            ));
        }
    };
    *lock(&link.name) = Some(name);
    let (tcp, tls) = stream.into_inner();
    let conn = tcp
        .into_std()
        .and_then(|tcp| Connection::new(address.clone(), tcp, tls, settings.request_timeout))
        .map(Arc::new)
        .map_err(|e| format!("{address}: socket: {e}"))?;
    // Ids of the background task's own requests: high bit set, never a caller's.
    static PROBE_ID: AtomicU64 = AtomicU64::new(1 << 63);
    let id = PROBE_ID.fetch_add(1, Ordering::Relaxed);
    let status = match conn
        .call_async(id, Request::Status, settings.request_timeout)
        .await
    {
        Ok(Response::Status(s)) => s,
        Ok(other) => {
            conn.kill("bad status");
            return Err(format!(
                "{address}: status answered with {}",
                response_name(&other)
            ));
        }
        Err(e) => {
            conn.kill("no status");
            return Err(e);
        }
    };
    let unusable = match status.seal {
        SealState::Unsealed if status.raft.is_some() => None,
        SealState::Unsealed => Some("unsealed but not part of a cluster"),
        SealState::Sealed => Some("sealed"),
        SealState::AwaitingJoin => Some("waiting to join the cluster"),
    };
    if let Some(why) = unusable {
        conn.kill(why);
        return Err(format!("{address} ({}) is {why}", status.node));
    }
    Ok((conn, status))
}

async fn connect_one(
    address: &str,
    settings: &ClientSettings,
    connector: &TlsConnector,
) -> Result<(TlsStream<TcpStream>, String), String> {
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
    Ok((tls, node))
}

/// Turns a node's error answer into [`Error::Node`], logged as the spec asks.
fn node_error(request: &Request, wire: hsm_proto::WireError) -> Error {
    if wire.code == ErrorCode::DeviceError {
        tracing::warn!(request = request.name(), "node error: {wire}");
    } else {
        tracing::debug!(request = request.name(), "node error: {wire}");
    }
    Error::Node(wire)
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
    fn back_off_grows_and_is_bounded() {
        let link = Link::new("n:1".into(), None);
        let now = Instant::now();
        assert!(link.may_connect(now));
        link.failed("x");
        let first = lock(&link.health).retry_at.unwrap() - now;
        assert!(!link.may_connect(Instant::now()));
        for _ in 0..20 {
            link.failed("x");
        }
        let later = lock(&link.health).retry_at.unwrap() - Instant::now();
        assert!(later > first, "{later:?} vs {first:?}");
        assert!(later <= BACKOFF_MAX);
    }

    #[test]
    fn request_keys_differ() {
        let a = request_key().unwrap();
        let b = request_key().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, 0);
    }
}
