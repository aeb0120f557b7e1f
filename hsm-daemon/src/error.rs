//! The daemon's error: a PKCS#11-level code and a message for the logs. Every failure a client
//! can see ends up as one of these, so the code is chosen where the failure is understood.

use hsm_proto::{ErrorCode, WireError};
use std::fmt;

/// Where a failure comes from, kept beside the client's code so that the node can tell a
/// storage fault (fatal to its consensus, as openraft treats it) from a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// The request was refused (bad argument, template, handle, state): the code says which.
    Refused,
    /// Authentication or authorization failed.
    Auth,
    /// The store failed: an I/O error or a record that does not open.
    Store,
    /// The cluster did not commit in time (no quorum) or its consensus stopped.
    Cluster,
    /// A node-side fault: a poisoned lock, an encoding failure, a broken invariant.
    Internal,
}

/// An error with the code the client receives. Messages never carry secrets or crypto-oracle
/// detail (which byte of the padding was wrong): a failed decrypt or verify says only that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What the client's PKCS#11 call returns.
    pub code: ErrorCode,
    /// Why, naming the attribute, handle or condition.
    pub message: String,
    /// Where it comes from.
    pub cause: Cause,
}

impl Error {
    /// An error with a code and message; the cause follows from the code (a refusal, or an
    /// authentication failure, or for `CKR_DEVICE_ERROR` a node-side fault).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        let cause = match code {
            ErrorCode::DeviceError | ErrorCode::GeneralError => Cause::Internal,
            ErrorCode::PinIncorrect | ErrorCode::UserNotLoggedIn | ErrorCode::PinLocked => {
                Cause::Auth
            }
            _ => Cause::Refused,
        };
        Error {
            code,
            message: message.into(),
            cause,
        }
    }

    /// A node-side fault the caller cannot fix (`CKR_DEVICE_ERROR`).
    pub fn device(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::DeviceError, message)
    }

    /// A `CKR_DEVICE_ERROR` with a cause.
    pub fn with_cause(cause: Cause, message: impl Into<String>) -> Error {
        Error {
            code: ErrorCode::DeviceError,
            message: message.into(),
            cause,
        }
    }

    /// Whether the store failed (the node must not go on as if the write happened).
    pub fn is_store_fault(&self) -> bool {
        self.cause == Cause::Store
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Error {
        Error::with_cause(Cause::Store, e.to_string())
    }
}

impl From<cluster_sync::ClusterError> for Error {
    fn from(e: cluster_sync::ClusterError) -> Error {
        Error::with_cause(Cause::Cluster, e.to_string())
    }
}

impl From<Error> for WireError {
    fn from(e: Error) -> WireError {
        let unavailable = matches!(e.cause, Cause::Cluster | Cause::Store);
        WireError {
            unavailable,
            ..WireError::new(e.code, e.message)
        }
    }
}
