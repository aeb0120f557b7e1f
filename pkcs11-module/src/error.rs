//! The module's one error type and its mapping to `CK_RV`.

use cryptoki_sys as ck;
use hsm_proto::{ErrorCode, WireError};
use std::fmt;

/// Everything a module function can fail with.
///
/// Variants carry what a log line needs (the offending handle or attribute, the node's
/// message) and never secret material.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A spec error decided in the module whose code the wire protocol also carries.
    Code(ErrorCode),
    /// The caller's output buffer is too small; the length it needs.
    BufferTooSmall(usize),
    /// `C_Initialize` has not been called (or the process forked since).
    NotInitialized,
    /// `C_Initialize` was called twice.
    AlreadyInitialized,
    /// Mutex callbacks were given without `CKF_OS_LOCKING_OK`.
    CantLock,
    /// The application forbids us to create threads, and we need a runtime.
    NeedToCreateThreads,
    /// The slot id is not ours (we have slot 0 only).
    SlotIdInvalid,
    /// `C_OpenSession` without `CKF_SERIAL_SESSION`.
    SessionParallelNotSupported,
    /// An SO login while a read-only session is open.
    SessionReadOnlyExists,
    /// A read-only session while the SO is logged in.
    SessionReadWriteSoExists,
    /// `C_GetFunctionStatus` / `C_CancelFunction` (legacy, always this code).
    FunctionNotParallel,
    /// `C_WaitForSlotEvent` with `CKF_DONT_BLOCK`: nothing happened (nothing ever does).
    NoEvent,
    /// The node answered with an error.
    Node(WireError),
    /// The connection to the cluster failed or timed out.
    Device(String),
    /// A lock was poisoned by a panic on another thread.
    Poisoned,
    /// Setup failed (configuration, TLS files, runtime); the message names the cause.
    Setup(String),
}

/// The module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The `CK_RV` value of this error.
    pub fn ckr(&self) -> ck::CK_RV {
        match self {
            Error::Code(code) => code.ckr() as ck::CK_RV,
            Error::BufferTooSmall(_) => ck::CKR_BUFFER_TOO_SMALL,
            Error::NotInitialized => ck::CKR_CRYPTOKI_NOT_INITIALIZED,
            Error::AlreadyInitialized => ck::CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Error::CantLock => ck::CKR_CANT_LOCK,
            Error::NeedToCreateThreads => ck::CKR_NEED_TO_CREATE_THREADS,
            Error::SlotIdInvalid => ck::CKR_SLOT_ID_INVALID,
            Error::SessionParallelNotSupported => ck::CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            Error::SessionReadOnlyExists => ck::CKR_SESSION_READ_ONLY_EXISTS,
            Error::SessionReadWriteSoExists => ck::CKR_SESSION_READ_WRITE_SO_EXISTS,
            Error::FunctionNotParallel => ck::CKR_FUNCTION_NOT_PARALLEL,
            Error::NoEvent => ck::CKR_NO_EVENT,
            Error::Node(wire) => wire.code.ckr() as ck::CK_RV,
            Error::Device(_) => ck::CKR_DEVICE_ERROR,
            Error::Poisoned | Error::Setup(_) => ck::CKR_GENERAL_ERROR,
        }
    }
}

impl From<Error> for ck::CK_RV {
    fn from(e: Error) -> ck::CK_RV {
        e.ckr()
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        Error::Code(code)
    }
}

impl<T> From<std::sync::PoisonError<T>> for Error {
    fn from(_: std::sync::PoisonError<T>) -> Self {
        Error::Poisoned
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Code(code) => write!(f, "{code}"),
            Error::BufferTooSmall(n) => write!(f, "CKR_BUFFER_TOO_SMALL: {n} bytes needed"),
            Error::NotInitialized => f.write_str("CKR_CRYPTOKI_NOT_INITIALIZED"),
            Error::AlreadyInitialized => f.write_str("CKR_CRYPTOKI_ALREADY_INITIALIZED"),
            Error::CantLock => f.write_str(
                "CKR_CANT_LOCK: mutex callbacks given without CKF_OS_LOCKING_OK; this module \
                 only uses OS locking",
            ),
            Error::NeedToCreateThreads => f.write_str(
                "CKR_NEED_TO_CREATE_THREADS: the module needs its own threads to talk to the cluster",
            ),
            Error::SlotIdInvalid => f.write_str("CKR_SLOT_ID_INVALID: the only slot is 0"),
            Error::SessionParallelNotSupported => {
                f.write_str("CKR_SESSION_PARALLEL_NOT_SUPPORTED: CKF_SERIAL_SESSION is required")
            }
            Error::SessionReadOnlyExists => f.write_str("CKR_SESSION_READ_ONLY_EXISTS"),
            Error::SessionReadWriteSoExists => f.write_str("CKR_SESSION_READ_WRITE_SO_EXISTS"),
            Error::FunctionNotParallel => f.write_str("CKR_FUNCTION_NOT_PARALLEL"),
            Error::NoEvent => f.write_str("CKR_NO_EVENT"),
            Error::Node(wire) => write!(f, "node: {wire}"),
            Error::Device(m) => write!(f, "CKR_DEVICE_ERROR: {m}"),
            Error::Poisoned => f.write_str("CKR_GENERAL_ERROR: a lock was poisoned by a panic"),
            Error::Setup(m) => write!(f, "CKR_GENERAL_ERROR: {m}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_spec_values() {
        assert_eq!(Error::NotInitialized.ckr(), 0x190);
        assert_eq!(Error::BufferTooSmall(7).ckr(), 0x150);
        assert_eq!(
            Error::Code(ErrorCode::MechanismInvalid).ckr(),
            ck::CKR_MECHANISM_INVALID
        );
        let wire = WireError::new(ErrorCode::SignatureInvalid, "bad");
        assert_eq!(Error::Node(wire).ckr(), ck::CKR_SIGNATURE_INVALID);
        assert_eq!(Error::Device("x".into()).ckr(), ck::CKR_DEVICE_ERROR);
        assert_eq!(Error::Poisoned.ckr(), ck::CKR_GENERAL_ERROR);
    }
}
