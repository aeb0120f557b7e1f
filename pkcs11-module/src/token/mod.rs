//! The safe Rust token API: everything the C functions do, without raw pointers.
//!
//! One [`Token`] exists between `C_Initialize` and `C_Finalize`. It owns the configuration,
//! the background runtime, the [`Client`], the sessions, the object-handle table and the
//! application-wide login state, each behind its own lock. Locks are held for bookkeeping
//! only; the one exception is a session's own operation state, held while that session's
//! request is in flight (PKCS#11 sessions are single-threaded by contract).
//!
//! Function groups live in submodules: [`slot`] (info, slots, mechanisms), [`session`]
//! (sessions, login), [`object`] (objects and handles), [`crypto`] (sign, verify, encrypt,
//! decrypt, random).

pub mod crypto;
pub mod keys;
pub mod object;
mod route;
pub mod session;
pub mod slot;

use crate::client::{Client, ClientSettings};
use crate::error::{Error, Result};
use crate::log;
use hsm_proto::config::ModuleConfig;
use hsm_proto::msg::UserType;
use object::ObjectTable;
use session::Session;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Default for `request_timeout_ms`.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Default for `connect_timeout_ms`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Default for `failover_timeout_ms`.
const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Default for `membership_refresh_ms`.
const DEFAULT_REFRESH: Duration = Duration::from_millis(5_000);

/// How long `C_Finalize` waits for the runtime's threads.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);

/// The module's state while initialized. `None` before `C_Initialize` and after
/// `C_Finalize`.
static STATE: RwLock<Option<Arc<Token>>> = RwLock::new(None);

/// The initialized module.
pub struct Token {
    /// The process that called `C_Initialize`; in a forked child every call sees
    /// "not initialized" until the child initializes again.
    pid: u32,
    /// `token_label` from the configuration, which overrides the cluster's name.
    label: Option<String>,
    /// The cluster's name and serial number, asked of a node once.
    identity: std::sync::OnceLock<(String, String)>,
    client: Client,
    /// Taken by `C_Finalize` to shut the runtime down.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    sessions: RwLock<HashMap<u64, Arc<Session>>>,
    next_session: AtomicU64,
    objects: RwLock<ObjectTable>,
    /// Who is logged in, application-wide.
    login: RwLock<Option<UserType>>,
    /// Serializes login and logout (rare; they wait for the node while holding it).
    login_serial: Mutex<()>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("pid", &self.pid)
            .field("label", &self.label)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The initialized module, or `NotInitialized` (also in a forked child that has not called
/// `C_Initialize` yet).
///
/// # Errors
/// `NotInitialized`; `Poisoned` if a panic poisoned the state lock.
pub fn current() -> Result<Arc<Token>> {
    let state = STATE.read()?;
    match state.as_ref() {
        Some(token) if token.pid == std::process::id() => Ok(token.clone()),
        _ => Err(Error::NotInitialized),
    }
}

/// `C_Initialize`: reads the configuration, sets up logging, the runtime and the client.
/// Connects nothing yet.
///
/// # Errors
/// `AlreadyInitialized`; `Setup` (logged, naming the file) if the configuration or the TLS
/// files cannot be used or the runtime cannot start.
pub fn initialize() -> Result<()> {
    // Holding the write lock while building makes concurrent C_Initialize calls safe: one
    // wins, the others see AlreadyInitialized.
    let mut state = STATE.write()?;
    if let Some(token) = state.take() {
        if token.pid == std::process::id() {
            *state = Some(token);
            return Err(Error::AlreadyInitialized);
        }
        // A forked child: the parent's runtime threads do not exist here and its connection
        // belongs to the parent. Dropping either would join dead threads or shut down the
        // parent's TLS session, so the child forgets them.
        std::mem::forget(token);
    }
    let path = ModuleConfig::path_from_env();
    let config = ModuleConfig::load(&path).map_err(|message| {
        log::setup_failure(&message);
        Error::Setup(message)
    })?;
    log::init(&config);
    let token = Token::new(config)?;
    tracing::info!(pid = token.pid, "initialized from {}", path.display());
    *state = Some(Arc::new(token));
    Ok(())
}

/// `C_Finalize`: closes the connection and stops the runtime (waiting at most
/// [`SHUTDOWN_TIMEOUT`]).
///
/// # Errors
/// `NotInitialized`.
pub fn finalize() -> Result<()> {
    let token = {
        let mut state = STATE.write()?;
        match state.take() {
            Some(token) if token.pid == std::process::id() => token,
            Some(token) => {
                // A forked child that did not initialize: keep forgetting the parent's state.
                *state = Some(token);
                return Err(Error::NotInitialized);
            }
            None => return Err(Error::NotInitialized),
        }
    };
    token.shut_down();
    Ok(())
}

impl Token {
    fn new(config: ModuleConfig) -> Result<Token> {
        let tls =
            hsm_proto::tls::client_config(&config.ca_cert, &config.client_cert, &config.client_key)
                .map_err(|e| {
                    let message = format!("PKCS#11 module TLS setup: {e}");
                    log::setup_failure(&message);
                    Error::Setup(message)
                })?;
        let workers = std::thread::available_parallelism()
            .map(|n| n.get().min(2))
            .unwrap_or(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("hsm-pkcs11-io")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| {
                let message = format!("cannot start the module's runtime: {e}");
                tracing::error!("{message}");
                Error::Setup(message)
            })?;
        let settings = ClientSettings {
            nodes: config.nodes.clone(),
            server_name: config.server_name.clone(),
            request_timeout: config
                .request_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            connect_timeout: config
                .connect_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            failover_timeout: config
                .failover_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_FAILOVER_TIMEOUT),
            connections_per_node: config.connections_per_node.unwrap_or(1).clamp(1, 16),
            discover: config.discover_members.unwrap_or(true),
            refresh_interval: config
                .membership_refresh_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_REFRESH)
                .max(Duration::from_millis(200)),
            tls: Arc::new(tls),
        };
        let client = Client::new(runtime.handle().clone(), settings);
        Ok(Token {
            pid: std::process::id(),
            label: config.token_label.clone(),
            identity: std::sync::OnceLock::new(),
            client,
            runtime: Mutex::new(Some(runtime)),
            sessions: RwLock::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            objects: RwLock::new(ObjectTable::default()),
            login: RwLock::new(None),
            login_serial: Mutex::new(()),
        })
    }

    fn shut_down(&self) {
        // Fails the requests in flight so that threads still inside the module return
        // (with CKR_DEVICE_ERROR) instead of waiting for their timeout.
        self.client.close();
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.clear();
        }
        let runtime = match self.runtime.lock() {
            Ok(mut r) => r.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(runtime) = runtime {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Called from inside some other runtime (an async application): blocking
                // here is not allowed, so let the threads wind down on their own.
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
            }
        }
        tracing::info!("finalized");
    }

    /// The client, for the function groups.
    fn client(&self) -> &Client {
        &self.client
    }
}
