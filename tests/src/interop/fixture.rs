//! One cluster per interop test binary (one per `tests/interop_*.rs` file), started by the
//! first test that needs it and shared by the others, so the clients' flows reuse keys and the
//! whole suite stays within a few minutes.
//!
//! A static is never dropped, so the cluster's daemon would outlive the test process: a small
//! watchdog process (started here, by pid) stops the daemon and removes the test directories
//! once the test process is gone, unless a test failed (then they are kept for inspection).

use super::client::{Client, find_program, loud};
use super::mechanisms::{Mech, Mechanisms};
use crate::build::artifacts;
use crate::cluster::{Cluster, KEEP_ENV, TestDir, tail};
use std::ffi::OsStr;
use std::fs;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Points the clients at another PKCS#11 module instead of ours (with
/// [`REFERENCE_PIN_ENV`]): to check the interop tests themselves against a reference token
/// such as SoftHSMv2 (token label `hsm-cluster`), e.g. for flows whose mechanisms our token
/// does not serve yet. Tests asserting our token's identity or our cluster's users then fail.
pub const REFERENCE_MODULE_ENV: &str = "HSM_INTEROP_REFERENCE_MODULE";
/// The user PIN for [`REFERENCE_MODULE_ENV`].
pub const REFERENCE_PIN_ENV: &str = "HSM_INTEROP_REFERENCE_PIN";

/// Written into the scratch directory by a failing test: the watchdog then keeps the
/// directories.
const FAILED_MARKER: &str = "FAILED";

/// Waits for the test process to end, stops its daemon, removes the directories unless a test
/// failed. `$1` test pid, `$2` daemon pid, `$3` failure marker, then the directories.
const WATCHDOG: &str = r#"
while kill -0 "$1" 2>/dev/null; do sleep 1; done
kill "$2" 2>/dev/null
marker=$3
shift 3
if [ ! -e "$marker" ] && [ -z "${HSM_TESTS_KEEP:-}" ]; then rm -rf "$@"; fi
"#;

/// The cluster and scratch directory shared by the tests of one interop test binary.
#[derive(Debug)]
pub struct Fixture {
    /// The running cluster (one node, user `alice`).
    pub cluster: Cluster,
    /// Scratch directory for files the clients read and write.
    pub dir: PathBuf,
    /// `libhsm_pkcs11.so` (or the module of [`REFERENCE_MODULE_ENV`]).
    pub module: PathBuf,
    /// The user PIN the clients log in with.
    pin: String,
    /// Whether [`REFERENCE_MODULE_ENV`] replaced our module.
    pub reference: bool,
    /// OpenSC's `pkcs11-tool`.
    pub pkcs11_tool: PathBuf,
    /// What the module advertises.
    pub mechanisms: Mechanisms,
    /// The module configuration the clients get (`HSM_PKCS11_CONF`): the cluster's, at the
    /// default log level, as users run it (the harness's own is at `debug`).
    pub client_config: PathBuf,
    _scratch: TestDir,
    /// Kept, never waited on: it must outlive this process.
    _watchdog: Child,
}

/// A test's handle on the [`Fixture`]. When the test panics it marks the run as failed (the
/// directories are kept) and prints the end of the daemon's and the module's logs.
#[derive(Debug)]
pub struct TestGuard {
    test: String,
    fixture: &'static Fixture,
}

impl Deref for TestGuard {
    type Target = Fixture;

    fn deref(&self) -> &Fixture {
        self.fixture
    }
}

impl Drop for TestGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let fx = self.fixture;
        let _ = fs::write(fx.dir.join(FAILED_MARKER), &self.test);
        eprintln!(
            "---- {}: hsm-daemon log ({}), last lines ----\n{}\n---- module log ({}), last lines ----\n{}\n---- directories kept: {} and {} ----",
            self.test,
            fx.cluster.daemon_log_path().display(),
            tail(&fx.cluster.daemon_log_path(), 40),
            fx.cluster.module_log_path().display(),
            tail(&fx.cluster.module_log_path(), 40),
            fx.dir.display(),
            fx.cluster.dir.display()
        );
    }
}

/// The panic message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".to_owned())
}

impl Fixture {
    /// The fixture for test `test`, when `pkcs11-tool` and every program in `programs` are
    /// installed; otherwise `None` after a loud skip message (`scripts/test.sh` installs them).
    ///
    /// # Panics
    /// If the cluster could not be started (in every test of the binary, with the reason).
    pub fn for_test(test: &str, programs: &[&str]) -> Option<TestGuard> {
        let missing: Vec<&str> = std::iter::once("pkcs11-tool")
            .chain(programs.iter().copied())
            .filter(|p| find_program(p).is_none())
            .collect();
        if !missing.is_empty() {
            loud(&format!(
                "SKIPPED {test}: {} not installed (run scripts/test.sh, which installs the \
                 interop clients)",
                missing.join(", ")
            ));
            return None;
        }
        static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
        let fixture = FIXTURE.get_or_init(|| {
            catch_unwind(AssertUnwindSafe(Fixture::start)).map_err(|p| panic_message(&*p))
        });
        match fixture {
            Ok(fixture) => Some(TestGuard {
                test: test.to_owned(),
                fixture,
            }),
            Err(why) => panic!("the interop cluster could not be started: {why}"),
        }
    }

    fn start() -> Fixture {
        let pkcs11_tool = find_program("pkcs11-tool").expect("pkcs11-tool on PATH");
        let (module, pin_override) = match std::env::var_os(REFERENCE_MODULE_ENV) {
            Some(module) => (
                PathBuf::from(module),
                Some(std::env::var(REFERENCE_PIN_ENV).expect("the reference token's PIN")),
            ),
            None => (artifacts().module.clone(), None),
        };
        let cluster = Cluster::start();
        let pin = pin_override
            .clone()
            .unwrap_or_else(|| cluster.user_pin.clone());
        let scratch = TestDir::new("interop");
        let dir = scratch.path().to_path_buf();
        let watchdog = Fixture::watch(&cluster, &dir);
        let client_config = dir.join("pkcs11-client.toml");
        let mut conf: toml::Table =
            toml::from_str(&fs::read_to_string(cluster.module_config()).expect("read pkcs11.toml"))
                .expect("parse pkcs11.toml");
        conf.insert("log_level".into(), "warn".into());
        fs::write(&client_config, toml::to_string(&conf).expect("encode"))
            .expect("write pkcs11-client.toml");
        let mut fixture = Fixture {
            cluster,
            dir,
            reference: pin_override.is_some(),
            module,
            pin,
            pkcs11_tool,
            mechanisms: Mechanisms::default(),
            client_config,
            _scratch: scratch,
            _watchdog: watchdog,
        };
        let listing = fixture
            .pkcs11_tool("pkcs11-tool --list-mechanisms")
            .arg("--list-mechanisms")
            .run()
            .ok();
        fixture.mechanisms = Mechanisms::parse(&listing.stdout);
        assert!(
            !fixture.mechanisms.is_empty(),
            "no mechanism parsed from\n{listing}"
        );
        fixture
    }

    /// Starts the watchdog that stops the daemon when this process is gone.
    fn watch(cluster: &Cluster, scratch: &Path) -> Child {
        let daemon_pid = fs::read_to_string(cluster.dir.join("daemon.pid"))
            .expect("daemon.pid written by the harness");
        Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("hsm-interop-watchdog")
            .arg(std::process::id().to_string())
            .arg(daemon_pid.trim())
            .arg(scratch.join(FAILED_MARKER))
            .arg(&cluster.dir)
            .arg(scratch)
            .env(KEEP_ENV, std::env::var_os(KEEP_ENV).unwrap_or_default())
            // Not the test's stdout/stderr: a pipe held open by the watchdog would keep
            // whoever reads the test output waiting.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the watchdog")
    }

    /// The crypto user's PIN, `alice:<password>`.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// A file in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A client command with the module's configuration in its environment
    /// (`HSM_PKCS11_CONF`, [`Fixture::client_config`]), run in the scratch directory, PINs
    /// redacted from messages.
    pub fn client(&self, label: &str, program: impl AsRef<OsStr>) -> Client {
        Client::new(&self.dir.join("runs"), label, program)
            .env(hsm_proto::config::MODULE_CONFIG_ENV, &self.client_config)
            .current_dir(&self.dir)
            .redact(&self.pin)
            .redact(&self.cluster.user_pin)
            .redact(self.cluster.user_password())
            .redact(&self.cluster.so_pin)
    }

    /// `pkcs11-tool --module <our module>`.
    pub fn pkcs11_tool(&self, label: &str) -> Client {
        self.client(label, &self.pkcs11_tool)
            .arg("--module")
            .arg(&self.module)
    }

    /// `pkcs11-tool --module <our module> --login --pin <alice's PIN>`.
    pub fn pkcs11_tool_user(&self, label: &str) -> Client {
        self.pkcs11_tool(label)
            .args(["--login", "--pin"])
            .arg(self.pin())
    }

    /// Whether every need is advertised; otherwise prints a loud skip naming what is missing
    /// and returns `false`.
    pub fn require(&self, test: &str, needs: &[(Mech, &str)]) -> bool {
        let missing = self.mechanisms.missing(needs);
        if missing.is_empty() {
            return true;
        }
        loud(&format!(
            "SKIPPED {test}: the module does not advertise {} (C_GetMechanismList); this flow \
             needs it (issue 3) and runs by itself once it is advertised",
            missing.join(", ")
        ));
        false
    }

    /// Whether `m` is advertised for `bits`-bit keys; otherwise a loud skip.
    pub fn require_key_size(&self, test: &str, m: Mech, bits: u64, what: &str) -> bool {
        if self.mechanisms.has_key_size(m, bits) {
            return true;
        }
        loud(&format!(
            "SKIPPED {test}: the module does not advertise {} for {bits}-bit keys ({what}); \
             this flow needs it (issue 3) and runs by itself once it is advertised",
            m.ckm
        ));
        false
    }

    /// Creates another crypto user and returns its PIN (`name:password`).
    pub fn add_user(&self, name: &str) -> String {
        let password = format!("{name}-interop-pw");
        self.cluster.create_user(name, &password);
        format!("{name}:{password}")
    }
}
