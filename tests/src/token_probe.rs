//! The token probe (`tests/c/token_probe.c`): what `cryptoki` cannot express about the full
//! token — the raw mechanism list (cryptoki silently drops mechanisms it has no name for), a
//! mechanism cryptoki cannot build (`CKM_SHA224_RSA_PKCS_PSS`), `CK_ULONG` attribute values it
//! cannot represent (`CK_UNAVAILABLE_INFORMATION`), and the variable-length output convention
//! of multi-part calls. Compiled once per process and run against a cluster.

use crate::build::artifacts;
use crate::cluster::Cluster;
use crate::probe::ckr_name;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The compiled probe.
///
/// # Panics
/// If `cc` fails.
pub fn token_probe_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| crate::probe::compile_c("token_probe.c", "hsm-tests-token-probe"))
}

/// One mechanism as the raw `C_GetMechanismList` / `C_GetMechanismInfo` report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawMechanism {
    /// `CKM_*`.
    pub kind: u64,
    /// The return code of `C_GetMechanismInfo`.
    pub info_rv: u64,
    /// `ulMinKeySize`.
    pub min: u64,
    /// `ulMaxKeySize`.
    pub max: u64,
    /// `CKF_*`.
    pub flags: u64,
}

/// What the probe printed.
#[derive(Debug)]
pub struct TokenProbeOutput {
    lines: Vec<(String, String)>,
    /// Its whole output, for failure messages.
    pub raw: String,
}

/// Runs the probe with `args` against a cluster, as the crypto user of `pin`.
///
/// # Panics
/// If the probe cannot run, stops on a failed setup step, or does not finish.
pub fn run_token_probe(cluster: &Cluster, pin: &str, args: &[&str]) -> TokenProbeOutput {
    let out = Command::new(token_probe_binary())
        .arg(&artifacts().module)
        .arg(pin)
        .args(args)
        .env(
            hsm_proto::config::MODULE_CONFIG_ENV,
            cluster.module_config(),
        )
        .output()
        .expect("run the token probe");
    let raw = format!(
        "token_probe {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the token probe stopped ({}):\n{raw}",
        out.status
    );
    let lines: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let output = TokenProbeOutput { lines, raw };
    assert_eq!(output.get("done"), "1", "{}", output.raw);
    output
}

fn parse_hex(v: &str) -> Option<u64> {
    u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

impl TokenProbeOutput {
    /// The values by key (the last line of each key wins).
    pub fn values(&self) -> BTreeMap<&str, &str> {
        self.lines
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// A raw value.
    #[track_caller]
    pub fn get(&self, key: &str) -> &str {
        self.lines
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("token probe printed no {key}:\n{}", self.raw))
    }

    /// A return code.
    #[track_caller]
    pub fn rv(&self, key: &str) -> u64 {
        let v = self.get(key);
        parse_hex(v).unwrap_or_else(|| panic!("{key} is not a return code: {v}"))
    }

    /// Asserts a return code.
    #[track_caller]
    pub fn assert_rv(&self, key: &str, expected: cryptoki_sys::CK_RV) {
        let got = self.rv(key);
        assert_eq!(
            got,
            expected,
            "{key}: expected {}, got {}\n{}",
            ckr_name(expected),
            ckr_name(got),
            self.raw
        );
    }

    /// Asserts a printed value.
    #[track_caller]
    pub fn assert_value(&self, key: &str, expected: &str) {
        assert_eq!(self.get(key), expected, "{key}\n{}", self.raw);
    }

    /// The `mech` lines of the `mechanisms` command.
    ///
    /// # Panics
    /// If a line is malformed.
    pub fn mechanisms(&self) -> Vec<RawMechanism> {
        self.lines
            .iter()
            .filter(|(k, _)| k == "mech")
            .map(|(_, v)| {
                let f: Vec<&str> = v.split(' ').collect();
                assert_eq!(f.len(), 5, "mech line {v:?}");
                RawMechanism {
                    kind: parse_hex(f[0]).expect("CKM"),
                    info_rv: parse_hex(f[1]).expect("rv"),
                    min: f[2].parse().expect("min"),
                    max: f[3].parse().expect("max"),
                    flags: parse_hex(f[4]).expect("flags"),
                }
            })
            .collect()
    }
}
