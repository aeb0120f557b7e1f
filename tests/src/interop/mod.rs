//! Interop harness: the clients users run (OpenSC `pkcs11-tool`, OpenSSL 3 with pkcs11-provider
//! and the libp11 engine, Java SunPKCS11, p11-kit) driving the real module against a cluster
//! the test starts, as their users would.
//!
//! - [`Fixture`]: one cluster per test binary (each `tests/interop_*.rs`), shared by its tests;
//! - [`Client`] / [`Run`] / [`Background`]: a client run with a hang guard, whose whole output
//!   ends up in the failure message;
//! - [`Mechanisms`]: what `C_GetMechanismList` advertises, so a flow that needs a mechanism the
//!   token does not serve yet skips loudly and runs by itself once it is advertised;
//! - [`PairSpec`]: key pairs made once per binary with `pkcs11-tool` and shared.
//!
//! `HSM_INTEROP_TIMING=1` prints how long every client run took (to keep the suite fast).

pub mod client;
pub mod fixture;
pub mod mechanisms;
pub mod pairs;

pub use client::{Background, Client, DEFAULT_TIMEOUT, Run, find_program, loud};
pub use fixture::{Fixture, TestGuard};
pub use mechanisms::{Mech, MechRow, Mechanisms};
pub use pairs::{PairNeeds, PairSpec};

/// Reads a file the client wrote.
///
/// # Panics
/// If it is missing, with the run that should have written it.
#[track_caller]
pub fn read_output(path: &std::path::Path, run: &Run) -> Vec<u8> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{} did not write {}: {e}\n{run}", run.label, path.display()))
}

/// The objects of a `pkcs11-tool --list-objects` listing, one block each: the header line
/// (`Private Key Object; EC`, `Certificate Object; …`) and its indented attribute lines.
pub fn listed_objects(listing: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in listing.lines() {
        if line.contains(" Object") && !line.starts_with(char::is_whitespace) {
            blocks.push(format!("{line}\n"));
        } else if let Some(block) = blocks.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// The blocks of [`listed_objects`] whose class header starts with `class` (`"Private Key
/// Object"`, …; `""` for any) and that contain `needle` (`"ID:         a1"`, `"label:      x"`).
/// `pkcs11-tool --list-objects` does not filter by `--id` or `--label`, so tests filter here.
pub fn objects_matching(listing: &str, class: &str, needle: &str) -> Vec<String> {
    listed_objects(listing)
        .into_iter()
        .filter(|o| o.starts_with(class) && o.contains(needle))
        .collect()
}
