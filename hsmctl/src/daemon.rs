//! Running `hsm-daemon`: finding the binary, `hsm-daemon init` with secrets on stdin, and
//! `hsm-daemon run` as a child process for `hsmctl dev`.

use crate::error::{CtlError, Result};
use hsm_proto::Password;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The line the daemon prints to stderr once it accepts connections.
pub const LISTENING: &str = "hsm-daemon: listening on ";
/// How long a starting daemon may take to listen (it opens its store and may derive keys).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stopping daemon may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

const BIN: &str = "hsm-daemon";

/// The directory of the running `hsmctl` (where cargo also puts `hsm-daemon` and the module).
///
/// # Errors
/// If the executable's path cannot be read.
pub fn own_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| CtlError::Usage(format!("cannot find the hsmctl executable: {e}")))?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| CtlError::Usage("hsmctl executable has no directory".into()))
}

/// Finds `hsm-daemon`: the explicit path, else next to `hsmctl`, else on `PATH`.
///
/// # Errors
/// If none exists.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(CtlError::Usage(format!(
                "--daemon-bin {}: no such file",
                path.display()
            )))
        };
    }
    let beside = own_dir()?.join(BIN);
    if beside.is_file() {
        return Ok(beside);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(BIN);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(CtlError::Usage(format!(
        "cannot find {BIN} next to hsmctl ({}) or on PATH; build it with \
         `cargo build --release -p hsm-daemon` or pass --daemon-bin",
        beside.display()
    )))
}

/// The secrets `hsm-daemon init` reads from stdin.
#[derive(Debug)]
pub struct InitSecrets<'a> {
    /// The unseal passphrase; `None` with a development key file.
    pub passphrase: Option<&'a Password>,
    /// The initial admin's password.
    pub admin_password: &'a Password,
}

/// Runs `hsm-daemon init` for a founder (a new cluster), feeding the secrets on stdin, one
/// per line.
///
/// # Errors
/// If the daemon cannot be started or exits unsuccessfully (its stderr is in the message: it
/// never contains the secrets).
pub fn init_store(
    bin: &Path,
    node_toml: &Path,
    cluster_name: &str,
    admin_user: &str,
    dev_key_file: Option<&Path>,
    secrets: &InitSecrets<'_>,
) -> Result<()> {
    let mut cmd = Command::new(bin);
    cmd.arg("init").arg("--config").arg(node_toml).args([
        "--cluster-name",
        cluster_name,
        "--admin-user",
        admin_user,
    ]);
    run_init(
        cmd,
        bin,
        dev_key_file,
        &[secrets.passphrase, Some(secrets.admin_password)],
    )
}

/// Runs `hsm-daemon init --join` for a node that will join an existing cluster: a store with
/// no cluster domain key and no users yet. The passphrase (absent with a development key file)
/// goes on stdin.
///
/// # Errors
/// As [`init_store`].
pub fn init_joiner_store(
    bin: &Path,
    node_toml: &Path,
    dev_key_file: Option<&Path>,
    passphrase: Option<&Password>,
) -> Result<()> {
    let mut cmd = Command::new(bin);
    cmd.arg("init").arg("--config").arg(node_toml).arg("--join");
    run_init(cmd, bin, dev_key_file, &[passphrase])
}

fn run_init(
    mut cmd: Command,
    bin: &Path,
    dev_key_file: Option<&Path>,
    secrets: &[Option<&Password>],
) -> Result<()> {
    if let Some(key) = dev_key_file {
        cmd.arg("--dev-key-file").arg(key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CtlError::Daemon(format!("cannot start {}: {e}", bin.display())))?;
    let mut input = zeroize::Zeroizing::new(String::new());
    for secret in secrets.iter().flatten() {
        input.push_str(secret.expose_secret());
        input.push('\n');
    }
    if let Some(mut stdin) = child.stdin.take() {
        // A daemon that fails early closes stdin; its exit status and stderr then tell why.
        let _ = stdin.write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| CtlError::Daemon(format!("waiting for init: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(CtlError::Daemon(format!(
            "init failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// A running `hsm-daemon run` child, stderr going to a log file.
#[derive(Debug)]
pub struct RunningDaemon {
    child: Child,
    log: PathBuf,
    /// The address it listens on, from its listening line.
    pub addr: String,
}

impl RunningDaemon {
    /// Starts `hsm-daemon run --config <node_toml>` and waits until it listens.
    ///
    /// # Errors
    /// If it cannot start, exits, or does not listen in time; the message carries the end of
    /// its log.
    pub fn start(bin: &Path, node_toml: &Path, log: &Path) -> Result<RunningDaemon> {
        let offset = fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| CtlError::io("open", log, e))?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(node_toml)
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| CtlError::io("open", log, e))?)
            .stderr(file)
            .spawn()
            .map_err(|e| CtlError::Daemon(format!("cannot start {}: {e}", bin.display())))?;
        let mut daemon = RunningDaemon {
            child,
            log: log.to_path_buf(),
            addr: String::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(addr) = listening_since(log, offset) {
                daemon.addr = addr;
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(CtlError::Daemon(format!(
                    "exited ({status}) before listening; its log {} ends with:\n{}",
                    log.display(),
                    tail(log, 20)
                )));
            }
            if Instant::now() > deadline {
                daemon.stop();
                return Err(CtlError::Timeout(format!(
                    "hsm-daemon did not listen within {}s; its log {} ends with:\n{}",
                    START_TIMEOUT.as_secs(),
                    log.display(),
                    tail(log, 20)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The end of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Sends SIGTERM without waiting (to stop several daemons at once, then [`Self::stop`]
    /// each).
    pub fn terminate(&mut self) {
        if self.exited().is_none()
            && let Ok(pid) = i32::try_from(self.child.id())
        {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    /// Stops it: SIGTERM, then SIGKILL if it has not exited in time. Returns how it exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for RunningDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address of the first listening line written after `offset`.
fn listening_since(log: &Path, offset: u64) -> Option<String> {
    let bytes = fs::read(log).ok()?;
    let start = usize::try_from(offset).ok()?.min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    text.lines().find_map(|line| {
        line.find(LISTENING)
            .map(|i| line[i + LISTENING.len()..].trim().to_owned())
    })
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Creates the development key file the daemon reads as its unseal secret: 32 random bytes,
/// mode 0600. (The daemon would create it too; making it here lets `hsmctl` own its mode.)
///
/// # Errors
/// If the file exists or cannot be written.
pub fn create_dev_key(path: &Path) -> Result<()> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(key.as_mut())
        .map_err(|_| CtlError::Usage("the system random source failed".into()))?;
    crate::layout::write_new(path, key.as_ref(), 0o600)
}
