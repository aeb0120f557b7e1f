//! The one error type of `hsmctl`: every failure becomes a message an operator can act on.

use hsm_proto::WireError;
use hsm_proto::frame::FrameError;
use hsm_proto::tls::TlsSetupError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a command failed. `Display` is the line printed after `hsmctl: error:`; no variant ever
/// carries a password or key bytes.
#[derive(Debug)]
#[non_exhaustive]
pub enum CtlError {
    /// The command line or the environment asks for something impossible.
    Usage(String),
    /// A file or directory operation failed.
    Io {
        /// What we were doing, naming the path.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// A configuration file is missing or malformed.
    Config(String),
    /// Generating a certificate or key failed.
    Pki(rcgen::Error),
    /// The TLS configuration could not be built.
    Tls(TlsSetupError),
    /// The node could not be reached or spoke garbage.
    Connect {
        /// The address tried.
        addr: String,
        /// What happened.
        message: String,
    },
    /// A frame could not be read or written.
    Frame(FrameError),
    /// The node answered with an error.
    Node(WireError),
    /// The node answered with a response of the wrong kind.
    Unexpected(String),
    /// Running `hsm-daemon` failed.
    Daemon(String),
    /// Something took longer than we are willing to wait.
    Timeout(String),
    /// No node of the configuration answered (the last error).
    NoNode(String),
}

impl CtlError {
    /// An I/O error with the path it concerns.
    pub fn io(what: &str, path: &Path, source: io::Error) -> CtlError {
        CtlError::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Usage(m) | CtlError::Config(m) => f.write_str(m),
            CtlError::Io { context, source } => write!(f, "cannot {context}: {source}"),
            CtlError::Pki(e) => write!(f, "certificate generation failed: {e}"),
            CtlError::Tls(e) => write!(f, "TLS setup failed: {e}"),
            CtlError::Connect { addr, message } => {
                write!(f, "cannot reach the node at {addr}: {message}")
            }
            CtlError::Frame(e) => write!(f, "protocol error: {e}"),
            CtlError::Node(e) => write!(f, "the node refused: {e}"),
            CtlError::Unexpected(m) => write!(f, "unexpected answer from the node: {m}"),
            CtlError::Daemon(m) => write!(f, "hsm-daemon: {m}"),
            CtlError::Timeout(m) => write!(f, "timed out: {m}"),
            CtlError::NoNode(m) => write!(f, "no node answered: {m}"),
        }
    }
}

impl std::error::Error for CtlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CtlError::Io { source, .. } => Some(source),
            CtlError::Pki(e) => Some(e),
            CtlError::Tls(e) => Some(e),
            CtlError::Frame(e) => Some(e),
            CtlError::Node(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rcgen::Error> for CtlError {
    fn from(e: rcgen::Error) -> Self {
        CtlError::Pki(e)
    }
}

impl From<TlsSetupError> for CtlError {
    fn from(e: TlsSetupError) -> Self {
        CtlError::Tls(e)
    }
}

impl From<FrameError> for CtlError {
    fn from(e: FrameError) -> Self {
        CtlError::Frame(e)
    }
}

impl From<WireError> for CtlError {
    fn from(e: WireError) -> Self {
        CtlError::Node(e)
    }
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, CtlError>;

/// Turns a relative path into an absolute one without requiring it to exist.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| CtlError::io("resolve", path, e))
}
