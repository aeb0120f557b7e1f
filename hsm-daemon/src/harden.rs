//! Process hardening: no core dumps, not ptrace-able by other users, key memory locked.
//!
//! Everything goes through `nix`'s safe wrappers, so this crate keeps `forbid(unsafe_code)`.
//! `mlockall(MCL_CURRENT | MCL_FUTURE)` locks every page the daemon has and will map, which
//! covers every buffer that ever holds key material without tracking them one by one.

use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};

/// What hardening achieved, for the startup log.
#[derive(Debug, Default)]
pub struct Hardening {
    /// Problems that did not stop the daemon (for example mlock refused by RLIMIT_MEMLOCK).
    pub warnings: Vec<String>,
}

/// Disables core dumps and ptrace attachment, and locks memory.
///
/// # Errors
/// Only if core dumps cannot be disabled: a daemon that might dump key memory to disk must not
/// start. Failing to lock memory is reported as a warning (containers often forbid it).
pub fn harden_process() -> Result<Hardening, String> {
    let mut report = Hardening::default();
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| format!("cannot set RLIMIT_CORE to 0: {e}"))?;
    prctl::set_dumpable(false).map_err(|e| format!("cannot clear PR_SET_DUMPABLE: {e}"))?;
    if let Err(e) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
        report.warnings.push(format!(
            "mlockall failed ({e}); key memory may be swapped. Raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK"
        ));
    }
    Ok(report)
}
