//! The binaries under test, built once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set by a parent test process for its children: the binaries are already built.
pub const SKIP_BUILD_ENV: &str = "HSM_TESTS_SKIP_BUILD";

/// Where the built binaries are.
#[derive(Debug)]
pub struct Artifacts {
    /// The workspace root.
    pub workspace: PathBuf,
    /// `target/release` (or wherever this test binary's profile directory is).
    pub profile_dir: PathBuf,
    /// `hsm-daemon`.
    pub daemon: PathBuf,
    /// `hsmctl`.
    pub hsmctl: PathBuf,
    /// `libhsm_pkcs11.so`.
    pub module: PathBuf,
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The profile directory this test binary was built into: it sits in `<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Builds `hsm-daemon`, the module and `hsmctl` (once per process, in the same profile as the
/// tests, so `cargo test --release --workspace` alone is enough) and returns their paths.
///
/// # Panics
/// If the build fails (its output is in the panic message) or an artifact is missing.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let workspace = workspace_root();
        let profile_dir = profile_dir();
        if std::env::var_os(SKIP_BUILD_ENV).is_none() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.arg("build");
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let out = cmd
                .args(["-p", "hsm-daemon", "-p", "hsm-pkcs11", "-p", "hsmctl"])
                .current_dir(&workspace)
                .output()
                .expect("cannot run cargo");
            assert!(
                out.status.success(),
                "cargo build of hsm-daemon, hsm-pkcs11 and hsmctl failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let artifacts = Artifacts {
            daemon: profile_dir.join("hsm-daemon"),
            hsmctl: profile_dir.join("hsmctl"),
            module: profile_dir.join("libhsm_pkcs11.so"),
            workspace,
            profile_dir,
        };
        for path in [&artifacts.daemon, &artifacts.hsmctl, &artifacts.module] {
            assert!(path.is_file(), "{} was not built", path.display());
        }
        artifacts
    })
}
