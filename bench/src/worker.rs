//! One column's run, in its own process: set up each operation, measure it at every session
//! count, write each cell as soon as it is known. A watchdog ends the process if nothing
//! moves for too long (a module stuck in a call cannot be interrupted any other way).

use crate::error::{BenchError, OpError, Result};
use crate::limit;
use crate::measure::RunnerFactory;
use crate::measure::{Heartbeat, Timing, run_cell};
use crate::ops::Op;
use crate::pkcs11::{Module, Prepared};
use crate::report::{latency, rate};
use crate::results::{Cell, Line, Meta, Outcome, Writer};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to measure; passed from the parent to each worker as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Operation ids, in order.
    pub ops: Vec<String>,
    /// Session counts per operation.
    pub sessions: Vec<usize>,
    /// Warm-up per cell.
    pub warmup_s: f64,
    /// Measured window per cell.
    pub window_s: f64,
    /// Destroy the C_FindObjects population at the end.
    pub cleanup: bool,
    /// Watchdog: seconds without progress before the worker gives up.
    pub stall_s: u64,
}

/// Which backend a worker drives.
#[derive(Debug)]
pub enum BackendSpec {
    /// aws-lc-rs in-process.
    Limit,
    /// A PKCS#11 module.
    Module {
        /// The shared library.
        path: PathBuf,
        /// The environment variable with the user PIN.
        pin_env: String,
        /// Token label to pick, if not the first.
        token: Option<String>,
    },
}

enum Backend {
    Limit,
    Module(Box<Module>),
}

enum Ready {
    Limit(Box<RunnerFactory<'static>>),
    Module(Prepared),
}

impl Ready {
    fn factory(&self) -> &RunnerFactory<'static> {
        match self {
            Ready::Limit(f) => f.as_ref(),
            Ready::Module(p) => p.factory.as_ref(),
        }
    }
}

fn outcome_of(e: &OpError) -> Outcome {
    if e.unsupported {
        Outcome::NotApplicable {
            reason: e.code.clone(),
        }
    } else {
        Outcome::Failed {
            error: e.code.clone(),
        }
    }
}

fn start_watchdog(writer: Arc<Writer>, heartbeat: Arc<Heartbeat>, limit: Duration) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if heartbeat.silence() > limit {
                let reason = format!(
                    "no progress for {} s (a call into the module did not return); stopped",
                    limit.as_secs()
                );
                eprintln!("hsm-bench worker: {reason}");
                let _ = writer.write(&Line::Stop { reason });
                std::process::exit(3);
            }
        }
    });
}

/// Runs the plan for one column, writing `results`.
///
/// # Errors
/// The module cannot be loaded or the results file written. Failures of single operations are
/// results, not errors.
pub fn run(
    target: &str,
    column: &str,
    nodes: Option<usize>,
    node_pids: &[u32],
    spec: &BackendSpec,
    plan: &Plan,
    results: &Path,
) -> Result<()> {
    let writer = Arc::new(Writer::create(results)?);
    let heartbeat = Arc::new(Heartbeat::new());
    start_watchdog(
        Arc::clone(&writer),
        Arc::clone(&heartbeat),
        Duration::from_secs(plan.stall_s.max(5)),
    );
    let loadavg_start = loadavg();
    let mut backend = match spec {
        BackendSpec::Limit => Backend::Limit,
        BackendSpec::Module {
            path,
            pin_env,
            token,
        } => {
            let opened = std::env::var(pin_env)
                .map_err(|_| BenchError::Usage(format!("${pin_env} (the PIN) is not set")))
                .and_then(|pin| Module::open(path, AuthPin::from(pin), token.as_deref()));
            match opened {
                Ok(m) => Backend::Module(Box::new(m)),
                Err(e) => {
                    writer.write(&Line::Stop {
                        reason: e.to_string(),
                    })?;
                    return Err(e);
                }
            }
        }
    };
    let mut description = match &backend {
        Backend::Limit => limit::description(),
        Backend::Module(m) => m.description().to_string(),
    };
    if let Some(n) = nodes {
        let _ = write!(description, "; a {n}-node cluster");
    }
    eprintln!("  {description}");
    writer.write(&Line::Meta(Meta {
        target: target.into(),
        column: column.into(),
        description,
        started: utc_now(),
        window_s: plan.window_s,
        warmup_s: plan.warmup_s,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        cpu_model: cpu_model(),
        loadavg: loadavg_start,
        nodes,
    }))?;
    let timing = Timing {
        warmup: Duration::from_secs_f64(plan.warmup_s),
        window: Duration::from_secs_f64(plan.window_s),
    };
    let fill_threads = plan.sessions.iter().copied().max().unwrap_or(1);
    for id in &plan.ops {
        let op = Op::parse(id).ok_or_else(|| BenchError::Usage(format!("unknown op {id}")))?;
        heartbeat.beat();
        let ready = match &mut backend {
            Backend::Limit => limit::prepare(op).map(Ready::Limit),
            Backend::Module(m) => m.prepare(op, fill_threads, &heartbeat).map(Ready::Module),
        };
        for &sessions in &plan.sessions {
            let outcome = match &ready {
                Err(e) => outcome_of(e),
                Ok(r) => match run_cell(sessions, timing, &heartbeat, r.factory(), node_pids) {
                    Ok(m) => {
                        if let Some(e) = &m.cleanup_error {
                            eprintln!("  warning: {op} cleanup: {e}");
                        }
                        Outcome::Measured {
                            ops: m.ops,
                            ops_per_sec: m.ops_per_sec,
                            p50_us: m.p50_us,
                            p99_us: m.p99_us,
                            mean_us: m.mean_us,
                            client_switches: m.switches.map(|s| s.client),
                            node_switches: m.switches.and_then(|s| s.node),
                        }
                    }
                    Err(e) => outcome_of(&e),
                },
            };
            eprintln!("  {:<16} ×{sessions:<3} {}", op.id(), progress(&outcome));
            writer.write(&Line::Cell(Cell {
                op: op.id(),
                sessions,
                outcome,
            }))?;
        }
        if let (Backend::Module(m), Ok(Ready::Module(p))) = (&backend, ready)
            && let Err(e) = m.release(p)
        {
            eprintln!("  warning: {op}: destroying its keys failed: {e}");
        }
    }
    if let Backend::Module(m) = &mut backend
        && plan.cleanup
        && let Err(e) = m.cleanup(fill_threads, &heartbeat)
    {
        eprintln!("  warning: cleanup failed: {e}");
    }
    writer.write(&Line::Done { loadavg: loadavg() })?;
    Ok(())
}

fn progress(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Measured {
            ops_per_sec,
            p50_us,
            p99_us,
            ..
        } => format!(
            "{:>12}/s  p50 {:>9}  p99 {:>9}",
            rate(*ops_per_sec),
            latency(*p50_us),
            latency(*p99_us)
        ),
        Outcome::NotApplicable { reason } => format!("n/a ({reason})"),
        Outcome::Failed { error } => format!("error: {error}"),
        Outcome::NotRun { reason } => format!("not run: {reason}"),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Now, UTC, `YYYY-MM-DD HH:MM`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
