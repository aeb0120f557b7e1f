//! End-to-end test harness: real `hsm-daemon` processes on 127.0.0.1 with real mTLS, the real
//! `libhsm_pkcs11.so` loaded through `cryptoki`, the real `hsmctl` and `pkcs11-tool`.
//!
//! - [`artifacts`] builds the binaries once per test process;
//! - [`Cluster`] makes a cluster directory with `hsmctl init --dev`, runs its daemon as a
//!   child process, unseals it and creates the crypto user `alice`;
//! - [`isolated`] runs a PKCS#11 test in a process of its own (the module reads its
//!   configuration once per process), with a [`Token`] loaded for its cluster;
//!   [`isolated_cluster`] does the same with a [`MultiCluster`];
//! - [`probe`] drives the module through the raw C ABI;
//! - [`token_probe`] checks what `cryptoki` cannot express about the full token (raw
//!   mechanism list, multi-part buffer sizing);
//! - [`keys`] generates keys and builds the templates the tests share.
#![forbid(unsafe_code)]

pub mod build;
pub mod cluster;
pub mod interop;
pub mod isolate;
pub mod keys;
pub mod multi;
pub mod probe;
pub mod token;
pub mod token_probe;

pub use build::{Artifacts, artifacts};
pub use cluster::{Cluster, TestDir, free_port};
pub use isolate::{is_child, isolated, isolated_as_admin, isolated_cluster, run_in_own_process};
pub use multi::MultiCluster;
pub use token::{Token, assert_ckr, ckr, login_user};
