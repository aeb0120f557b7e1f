//! One HSM node: the sealed store, unseal, key objects and mechanisms, and the mTLS listener.
#![forbid(unsafe_code)]

pub mod config;
pub mod der;
pub mod error;
pub mod handler;
pub mod harden;
pub mod join;
pub mod keys;
pub mod mech;
pub mod node;
pub mod object;
pub mod replica;
pub mod seal;
pub mod server;
pub mod store;
pub mod ticket;
pub mod token;
pub mod users;
