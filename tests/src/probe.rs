//! The raw C ABI probe (`tests/c/raw_abi_probe.c`): compiled with the system C compiler once
//! per process and run against a cluster. It checks what `cryptoki` hides (buffer sizing,
//! partially filled templates, operation state) the way a C application sees it.

use crate::build::{artifacts, workspace_root};
use crate::cluster::Cluster;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Compiles `tests/c/<source>` with the system C compiler into the profile directory as
/// `<binary>` (a temporary name, then a rename, so concurrent test processes never run a
/// half-written file).
///
/// # Panics
/// If `cc` fails.
pub fn compile_c(source: &str, binary: &str) -> PathBuf {
    let source = workspace_root().join("tests/c").join(source);
    let out = artifacts().profile_dir.join(binary);
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let result = Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-o"])
        .arg(&tmp)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("run the C compiler (cc)");
    assert!(
        result.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).expect("install a compiled probe");
    out
}

/// The compiled probe.
///
/// # Panics
/// If `cc` fails.
pub fn probe_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| compile_c("raw_abi_probe.c", "hsm-tests-raw-abi-probe"))
}

/// What the probe observed.
#[derive(Debug)]
pub struct ProbeOutput {
    values: BTreeMap<String, String>,
    /// Its whole output, for failure messages.
    pub raw: String,
}

/// Runs the probe against a cluster (as the crypto user).
pub fn run_probe(cluster: &Cluster) -> ProbeOutput {
    let out = Command::new(probe_binary())
        .arg(&artifacts().module)
        .arg(&cluster.user_pin)
        .env(
            hsm_proto::config::MODULE_CONFIG_ENV,
            cluster.module_config(),
        )
        .output()
        .expect("run the probe");
    let raw = format!(
        "{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the probe stopped ({}):\n{raw}",
        out.status
    );
    let values = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    ProbeOutput { values, raw }
}

/// The spec name of a return code, for messages.
pub fn ckr_name(rv: u64) -> String {
    hsm_proto::ErrorCode::from_ckr(rv).map_or_else(
        || {
            if rv == 0 {
                "CKR_OK".into()
            } else {
                format!("{rv:#x}")
            }
        },
        |c| c.name().to_owned(),
    )
}

impl ProbeOutput {
    /// A raw value.
    #[track_caller]
    pub fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("probe printed no {key}:\n{}", self.raw))
    }

    /// A return code.
    #[track_caller]
    pub fn rv(&self, key: &str) -> u64 {
        let v = self.get(key);
        u64::from_str_radix(v.trim_start_matches("0x"), 16)
            .unwrap_or_else(|_| panic!("{key} is not a return code: {v}"))
    }

    /// Asserts a return code.
    #[track_caller]
    pub fn assert_rv(&self, key: &str, expected: cryptoki_sys::CK_RV) {
        let got = self.rv(key);
        assert_eq!(
            got,
            expected,
            "{key}: expected {}, got {}",
            ckr_name(expected),
            ckr_name(got)
        );
    }

    /// Asserts a printed value.
    #[track_caller]
    pub fn assert_value(&self, key: &str, expected: &str) {
        assert_eq!(self.get(key), expected, "{key}");
    }
}
