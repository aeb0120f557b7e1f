//! Logging: set up once per process, to stderr or the configured file, at the configured
//! level (default `warn`). The module's copy of `tracing` is its own (statically linked), so
//! this never touches the host application's logger.
//!
//! Nothing logged here or anywhere in the module contains a PIN, key material or data.

use hsm_proto::config::ModuleConfig;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::EnvFilter;

static INITIALIZED: AtomicBool = AtomicBool::new(false);
static INIT: std::sync::Once = std::sync::Once::new();

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
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
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
        // try_init: fails harmlessly if this copy of tracing already has a subscriber.
        let installed = match file {
            Some(file) => builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init()
                .is_ok(),
            None => builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
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
