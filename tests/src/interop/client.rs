//! Running a real client program (`pkcs11-tool`, `openssl`, `java`, `p11-kit`, …) with a time
//! bound, keeping everything it printed so a failing test shows the client's own words.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A hang guard for one client run, not a performance bound: generous enough for an RSA-3072
/// key generation or a JVM start on a busy two-core machine.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// The first `name` on `$PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Prints a banner that shows in the test output even when the test passes: libtest captures
/// `print!`/`eprint!` of passing tests, and a skipped flow must be visible in CI logs, so this
/// writes to the process's standard error directly.
pub fn loud(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\n!!!!! {message} !!!!!\n");
}

/// A unique file name stem for one run's output files.
fn next_stem(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(48)
        .collect();
    format!("{n:04}-{clean}")
}

/// A client command to run: program, arguments, environment, optional standard input.
#[derive(Debug)]
pub struct Client {
    label: String,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    cwd: Option<PathBuf>,
    timeout: Duration,
    redact: Vec<String>,
    runs_dir: PathBuf,
}

impl Client {
    /// A command named `label` in failure messages; its output files go to `runs_dir`.
    pub fn new(runs_dir: &Path, label: &str, program: impl AsRef<OsStr>) -> Client {
        Client {
            label: label.to_owned(),
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            stdin: None,
            cwd: None,
            timeout: DEFAULT_TIMEOUT,
            redact: Vec::new(),
            runs_dir: runs_dir.to_path_buf(),
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Client {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Client
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the client.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Client {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Feeds `data` on standard input (default: `/dev/null`).
    pub fn stdin(mut self, data: &[u8]) -> Client {
        self.stdin = Some(data.to_vec());
        self
    }

    /// Runs the client in `dir`.
    pub fn current_dir(mut self, dir: &Path) -> Client {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Overrides the hang guard.
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Replaces `secret` by `<redacted>` wherever the command line is shown.
    pub fn redact(mut self, secret: &str) -> Client {
        if !secret.is_empty() {
            self.redact.push(secret.to_owned());
        }
        self
    }

    /// The command line as shown in messages, secrets redacted.
    fn shown(&self) -> String {
        let mut line = Path::new(&self.program)
            .file_name()
            .unwrap_or(self.program.as_os_str())
            .to_string_lossy()
            .into_owned();
        for a in &self.args {
            line.push(' ');
            let a = a.to_string_lossy();
            if a.contains([' ', ';', '&']) {
                line.push_str(&format!("'{a}'"));
            } else {
                line.push_str(&a);
            }
        }
        for s in &self.redact {
            line = line.replace(s.as_str(), "<redacted>");
        }
        line
    }

    fn command(&self, stem: &str) -> (Command, PathBuf, PathBuf) {
        fs::create_dir_all(&self.runs_dir).expect("create runs directory");
        let stdout_path = self.runs_dir.join(format!("{stem}.stdout"));
        let stderr_path = self.runs_dir.join(format!("{stem}.stderr"));
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdout(File::create(&stdout_path).expect("create stdout file"))
            .stderr(File::create(&stderr_path).expect("create stderr file"));
        match &self.stdin {
            Some(data) => {
                let path = self.runs_dir.join(format!("{stem}.stdin"));
                fs::write(&path, data).expect("write stdin file");
                cmd.stdin(File::open(&path).expect("open stdin file"));
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        (cmd, stdout_path, stderr_path)
    }

    /// Runs the client to completion (killing it if it outlives the hang guard).
    ///
    /// # Panics
    /// If the program cannot be started.
    pub fn run(self) -> Run {
        let stem = next_stem(&self.label);
        let (mut cmd, stdout_path, stderr_path) = self.command(&stem);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.shown()));
        let status = wait_bounded(&mut child, self.timeout);
        if std::env::var_os("HSM_INTEROP_TIMING").is_some() {
            loud(&format!(
                "TIMING {:.2}s {}",
                started.elapsed().as_secs_f64(),
                self.label
            ));
        }
        Run {
            label: self.label.clone(),
            command: self.shown(),
            status,
            timeout: self.timeout,
            stdout: fs::read_to_string(&stdout_path).unwrap_or_else(|_| lossy(&stdout_path)),
            stderr: fs::read_to_string(&stderr_path).unwrap_or_else(|_| lossy(&stderr_path)),
            elapsed: started.elapsed(),
        }
    }

    /// Starts the client in the background (a server); see [`Background`].
    ///
    /// # Panics
    /// If the program cannot be started.
    pub fn spawn(self) -> Background {
        let stem = next_stem(&self.label);
        let (mut cmd, stdout_path, stderr_path) = self.command(&stem);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.shown()));
        Background {
            label: self.label.clone(),
            command: self.shown(),
            child: Some(child),
            stdout_path,
            stderr_path,
            started: Instant::now(),
        }
    }
}

fn lossy(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// Waits for `child` up to `timeout`; kills it (by its own pid) after that. `None`: killed.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one client run did.
#[derive(Clone, Debug)]
pub struct Run {
    /// The step's name.
    pub label: String,
    /// The command line, secrets redacted.
    pub command: String,
    /// Its exit status; `None` if it hung and was killed.
    pub status: Option<ExitStatus>,
    /// The hang guard it ran under.
    pub timeout: Duration,
    /// Everything it printed on standard output.
    pub stdout: String,
    /// Everything it printed on standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Run {
    /// Whether it exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Its exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Standard output and standard error together.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts it succeeded; the panic message carries its whole output.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert!(self.succeeded(), "{} failed\n{self}", self.label);
        self
    }

    /// Asserts it failed (exited non-zero, not hung).
    #[track_caller]
    pub fn failed(self) -> Run {
        assert!(
            self.status.is_some_and(|s| !s.success()),
            "{} was expected to fail\n{self}",
            self.label
        );
        self
    }

    /// Asserts its output (stdout or stderr) contains `needle`.
    #[track_caller]
    pub fn contains(self, needle: &str) -> Run {
        assert!(
            self.output().contains(needle),
            "{}: output lacks {needle:?}\n{self}",
            self.label
        );
        self
    }

    /// Asserts its output (stdout or stderr) does not contain `needle`.
    #[track_caller]
    pub fn lacks(self, needle: &str) -> Run {
        assert!(
            !self.output().contains(needle),
            "{}: output unexpectedly contains {needle:?}\n{self}",
            self.label
        );
        self
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("HUNG: killed after {}s", self.timeout.as_secs()),
        };
        write!(
            f,
            "---- {} ----\n$ {}\n({status}, {:.1}s)\n---- stdout ----\n{}\n---- stderr ----\n{}\n----",
            self.label,
            self.command,
            self.elapsed.as_secs_f64(),
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// A client running in the background (e.g. `openssl s_server`). Dropping it kills it.
#[derive(Debug)]
pub struct Background {
    label: String,
    command: String,
    child: Option<Child>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    started: Instant,
}

impl Background {
    /// What it printed so far (stdout and stderr).
    pub fn output_so_far(&self) -> String {
        format!("{}{}", lossy(&self.stdout_path), lossy(&self.stderr_path))
    }

    /// Waits until it prints `needle`. `Err` (with what it printed) if it exits first or
    /// `timeout` passes.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output_so_far().contains(needle) {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                let why = if exited { "exited" } else { "timed out" };
                return Err(format!(
                    "{} {why} before printing {needle:?}:\n$ {}\n{}",
                    self.label,
                    self.command,
                    self.output_so_far()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets it exit by itself within `grace`, kills it otherwise, and returns what it did
    /// (`status` is `None` if it had to be killed).
    pub fn finish(mut self, grace: Duration) -> Run {
        let status = match self.child.as_mut() {
            Some(child) => wait_bounded(child, grace),
            None => None,
        };
        self.child = None;
        Run {
            label: self.label.clone(),
            command: self.command.clone(),
            status,
            timeout: grace,
            stdout: lossy(&self.stdout_path),
            stderr: lossy(&self.stderr_path),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
