//! `libhsm_pkcs11.so`: the PKCS#11 module of the HSM cluster.
//!
//! Three layers, each only talking to the one below:
//! - [`ffi`]: the C ABI. One macro makes every exported function (panics caught, NULL and
//!   length checks, `Result -> CK_RV`); immutable function tables for PKCS#11 2.40 and 3.0.
//! - [`token`]: the safe Rust token API: sessions, login, object handles, operation state.
//! - [`client`]: one pipelined mutual-TLS connection to a node, driven by a small background
//!   runtime and shared by every application thread.
//!
//! Configuration: `$HSM_PKCS11_CONF` (default `/etc/hsm/pkcs11.toml`), an
//! [`hsm_proto::config::ModuleConfig`]. PINs are `name:password`.
//!
//! After `fork()` every function answers `CKR_CRYPTOKI_NOT_INITIALIZED` in the child until
//! it calls `C_Initialize`, which builds fresh state (the parent's is forgotten, not
//! dropped). The library is linked with `-z nodelete` so that `dlclose` never unmaps code
//! the runtime threads may still run.
// The FFI layer is the one place in the workspace where `unsafe` is allowed; every block
// carries a `// SAFETY:` comment (clippy::undocumented_unsafe_blocks is denied).
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod client;
pub mod error;
pub mod ffi;
mod log;
pub mod token;

pub use error::{Error, Result};
