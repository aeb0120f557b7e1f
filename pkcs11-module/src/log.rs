//! Logging: set up once per process, to stderr or the configured file, at the configured
//! level (default `warn`). The module's copy of `tracing` is its own (statically linked), so
//! this never touches the host application's logger.
//!
//! Nothing logged here or anywhere in the module contains a PIN, key material or data.

use hsm_proto::config::ModuleConfig;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

static INITIALIZED: AtomicBool = AtomicBool::new(false);
static INIT: std::sync::Once = std::sync::Once::new();
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
static SILENCED: AtomicBool = AtomicBool::new(false);

/// A thread-local with a destructor: once `try_with` on it fails, this thread's locals are
/// being or have been destroyed.
struct Canary;

impl Drop for Canary {
    fn drop(&mut self) {}
}

thread_local! {
    static CANARY: Canary = const { Canary };
}

/// Called first by every exported function. At process exit glibc destroys the main thread's
/// thread-locals *before* running `atexit` handlers, and OpenSSL's cleanup calls
/// `C_CloseSession`/`C_Finalize` from one: `tracing-subscriber` formats through a
/// `thread_local!` buffer and panics when it is gone. Switching logging off there lowers
/// tracing's static maximum level, so every log macro stops before touching a thread-local.
pub fn check_thread_teardown() {
    if CANARY.try_with(|_| ()).is_err()
        && !SILENCED.swap(true, Ordering::SeqCst)
        && let Some(handle) = FILTER.get()
    {
        let _ = handle.modify(|f| *f = EnvFilter::new("off"));
    }
}

/// Installs the subscriber (first call only: a process keeps its first configuration, also
/// across `C_Finalize`/`C_Initialize`).
pub fn init(config: &ModuleConfig) {
    INIT.call_once(|| {
        let level = config.log_level.as_deref().unwrap_or("warn");
        // A bare level applies to this module; a full filter (`a=b,c`) is taken as written.
        let spec = if level.contains('=') || level.contains(',') {
            level.to_owned()
        } else {
            format!("warn,hsm_pkcs11={level},hsm_proto={level}")
        };
        let filter = EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("hsm-pkcs11: bad log_level {level:?} ({e}); using warn");
            EnvFilter::new("warn")
        });
        let (filter, handle) = reload::Layer::new(filter);
        let _ = FILTER.set(handle);
        let layer = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_thread_names(true);
        let file = config.log_file.as_ref().and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    eprintln!(
                        "hsm-pkcs11: cannot open log file {}: {e}; logging to stderr",
                        path.display()
                    );
                })
                .ok()
        });
        // The file is written without a lock (each line is one append-mode write), so a
        // process that forks while another thread logs leaves its child no lock to wait on.
        // try_init: fails harmlessly if this copy of tracing already has a subscriber.
        let installed = match file {
            Some(file) => Registry::default()
                .with(filter)
                .with(layer.with_ansi(false).with_writer(Arc::new(file)))
                .try_init()
                .is_ok(),
            None => Registry::default()
                .with(filter)
                .with(
                    layer
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_writer(std::io::stderr),
                )
                .try_init()
                .is_ok(),
        };
        INITIALIZED.store(installed, Ordering::SeqCst);
    });
}

/// Reports a setup failure (bad configuration) that happens before logging is set up: a
/// line on stderr, or through the logger if it exists.
pub fn setup_failure(message: &str) {
    if INITIALIZED.load(Ordering::SeqCst) {
        tracing::error!("{message}");
    } else {
        eprintln!("hsm-pkcs11: C_Initialize failed: {message}");
    }
}
