//! The wire contract shared by the PKCS#11 module, the daemon and `hsmctl`.
//!
//! - [`msg`]: one typed request and response per operation, in [`msg::Envelope`]s with ids so a
//!   connection carries many requests in flight;
//! - [`frame`]: length-prefixed postcard frames with a hard size limit, and the version handshake;
//! - [`error`]: error codes that map 1:1 to `CKR_*`;
//! - [`attr`], [`mech`]: typed attributes and mechanisms;
//! - [`tls`]: rustls configurations (TLS 1.3, mutual authentication, one explicit provider);
//! - [`config`]: the module's configuration file.
#![forbid(unsafe_code)]

pub mod attr;
pub mod bytes;
pub mod config;
pub mod error;
pub mod frame;
pub mod mech;
pub mod mechlist;
pub mod msg;
pub mod secret;
pub mod tls;

#[cfg(test)]
mod wire_tests;

pub use attr::{AttrOutcome, Attribute};
pub use error::{ErrorCode, WireError};
pub use mech::{Mechanism, MechanismParams};
pub use msg::{
    Envelope, ObjectId, ObjectInfo, OperationKind, OperationStart, Request, RequestId, Response,
    SessionId,
};
pub use secret::{Password, SecretBytes};
