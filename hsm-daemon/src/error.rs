//! The daemon's error: a PKCS#11-level code and a message for the logs. Every failure a client
//! can see ends up as one of these, so the code is chosen where the failure is understood.

use hsm_proto::{ErrorCode, WireError};
use std::fmt;

/// An error with the code the client receives. Messages never carry secrets or crypto-oracle
/// detail (which byte of the padding was wrong): a failed decrypt or verify says only that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What the client's PKCS#11 call returns.
    pub code: ErrorCode,
    /// Why, naming the attribute, handle or condition.
    pub message: String,
}

impl Error {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// A node-side fault the caller cannot fix (`CKR_DEVICE_ERROR`).
    pub fn device(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::DeviceError, message)
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
        Error::device(e.to_string())
    }
}

impl From<Error> for WireError {
    fn from(e: Error) -> WireError {
        WireError::new(e.code, e.message)
    }
}
