//! Encrypted, integrity-checked cluster backups.
//!
//! Empty on purpose: the backup archive format is built by its own issue. The crate exists so
//! the workspace layout matches ARCHITECTURE.md and the dependency direction (backup depends on
//! a snapshot type, never on the daemon) is fixed from the start.
#![forbid(unsafe_code)]
