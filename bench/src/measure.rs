//! The timing harness: N threads, each with its own runner (for PKCS#11: its own session),
//! start together, warm up, then run the operation back to back for a fixed time while every
//! operation's latency is recorded.

use crate::error::OpError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One thread's way of doing the operation once.
pub trait Runner {
    /// Does the operation once; this call is what is timed.
    ///
    /// # Errors
    /// The operation failed; the thread stops measuring.
    fn run(&mut self) -> Result<(), OpError>;

    /// Unmeasured cleanup after the window (e.g. destroying generated keys).
    ///
    /// # Errors
    /// Cleanup failed; reported as a warning only.
    fn finish(&mut self) -> Result<(), OpError> {
        Ok(())
    }
}

/// Builds the runner of thread `i`, on that thread.
pub type RunnerFactory<'a> = dyn Fn(usize) -> Result<Box<dyn Runner>, OpError> + Sync + 'a;

/// How long to warm up and to measure.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Unrecorded run before the window.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
}

/// A process-wide "something still moves" signal for the stall watchdog.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new() -> Heartbeat {
        Heartbeat {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records progress.
    pub fn beat(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last progress.
    pub fn silence(&self) -> Duration {
        let now = self.base.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// What one cell measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Operations completed inside the window.
    pub ops: u64,
    /// Operations completed inside the window per second of the window, summed over threads
    /// (a thread's window stretches to its first completion when the operation is slower).
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Mean latency, microseconds.
    pub mean_us: f64,
    /// Context switches per operation during the window (Linux only).
    pub switches: Option<Switches>,
    /// A cleanup failure worth a note (not part of the measurement).
    pub cleanup_error: Option<String>,
}

/// Context switches per operation.
#[derive(Clone, Copy, Debug)]
pub struct Switches {
    /// In this process (the application with the module in it).
    pub client: f64,
    /// In the node processes, if given.
    pub node: Option<f64>,
}

/// Voluntary plus involuntary context switches of every thread of process `pid` (`None`:
/// this process), from `/proc`.
fn switches_of(pid: Option<u32>) -> Option<u64> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}/task"),
        None => "/proc/self/task".to_owned(),
    };
    let mut total = 0;
    for task in std::fs::read_dir(dir).ok()? {
        let Ok(status) = std::fs::read_to_string(task.ok()?.path().join("status")) else {
            continue; // the thread ended
        };
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some(total)
}

fn sample(node_pids: &[u32]) -> (Option<u64>, Option<u64>) {
    let client = switches_of(None);
    let node = if node_pids.is_empty() {
        None
    } else {
        node_pids
            .iter()
            .map(|&p| switches_of(Some(p)))
            .sum::<Option<u64>>()
    };
    (client, node)
}

struct ThreadOutcome {
    latencies_ns: Vec<u64>,
    rate: f64,
    error: Option<OpError>,
    cleanup_error: Option<OpError>,
}

/// Runs one cell: `threads` runners built by `factory`, warm-up, then the window.
///
/// # Errors
/// The first failure of any thread (building its runner or an operation): the cell reports
/// that code instead of numbers.
pub fn run_cell(
    threads: usize,
    timing: Timing,
    heartbeat: &Heartbeat,
    factory: &RunnerFactory<'_>,
    node_pids: &[u32],
) -> Result<Measured, OpError> {
    let barrier = Barrier::new(threads);
    // Threads stay alive until the window's switches are counted (an ended thread's count
    // leaves /proc with it).
    let done = Barrier::new(threads + 1);
    let outcomes = Mutex::new(Vec::with_capacity(threads));
    let started = OnceLock::new();
    let mut counted = None;
    std::thread::scope(|scope| {
        for i in 0..threads {
            let barrier = &barrier;
            let outcomes = &outcomes;
            let started = &started;
            let done = &done;
            scope.spawn(move || {
                let outcome = one_thread(i, barrier, started, timing, heartbeat, factory);
                if let Ok(mut all) = outcomes.lock() {
                    all.push(outcome);
                }
                done.wait();
            });
        }
        // Count context switches over the window, from this (otherwise idle) thread.
        let start = loop {
            if let Some(s) = started.get() {
                break Some(*s);
            }
            if outcomes.lock().is_ok_and(|o| o.len() == threads) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if let Some(start) = start {
            std::thread::sleep((start + timing.warmup).saturating_duration_since(Instant::now()));
            let before = sample(node_pids);
            std::thread::sleep(
                (start + timing.warmup + timing.window).saturating_duration_since(Instant::now()),
            );
            counted = Some((before, sample(node_pids)));
        }
        done.wait();
    });
    let outcomes = outcomes
        .into_inner()
        .map_err(|_| OpError::failed("a benchmark thread panicked"))?;
    if outcomes.len() != threads {
        return Err(OpError::failed("a benchmark thread panicked"));
    }
    if let Some(e) = outcomes.iter().find_map(|o| o.error.clone()) {
        return Err(e);
    }
    let cleanup_error = outcomes
        .iter()
        .find_map(|o| o.cleanup_error.as_ref().map(ToString::to_string));
    let ops_per_sec = outcomes.iter().map(|o| o.rate).sum();
    let mut all: Vec<u64> = outcomes.into_iter().flat_map(|o| o.latencies_ns).collect();
    if all.is_empty() {
        return Err(OpError::failed("no operation completed"));
    }
    all.sort_unstable();
    let sum: u128 = all.iter().map(|&n| u128::from(n)).sum();
    let count = all.len() as u64;
    let per_op = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / count as f64);
    let switches = counted.and_then(|((c0, n0), (c1, n1))| {
        Some(Switches {
            client: per_op(c0, c1)?,
            node: per_op(n0, n1),
        })
    });
    Ok(Measured {
        ops: count,
        ops_per_sec,
        p50_us: percentile(&all, 0.50) as f64 / 1000.0,
        p99_us: percentile(&all, 0.99) as f64 / 1000.0,
        mean_us: (sum / u128::from(count)) as f64 / 1000.0,
        switches,
        cleanup_error,
    })
}

fn one_thread(
    i: usize,
    barrier: &Barrier,
    started: &OnceLock<Instant>,
    timing: Timing,
    heartbeat: &Heartbeat,
    factory: &RunnerFactory<'_>,
) -> ThreadOutcome {
    let built = factory(i);
    heartbeat.beat();
    // Every thread reaches the barrier, even one whose setup failed, so no one waits forever.
    barrier.wait();
    let mut runner = match built {
        Ok(r) => r,
        Err(e) => {
            return ThreadOutcome {
                latencies_ns: Vec::new(),
                rate: 0.0,
                error: Some(e),
                cleanup_error: None,
            };
        }
    };
    let start = Instant::now();
    let _ = started.set(start);
    let window_start = start + timing.warmup;
    let window_end = window_start + timing.window;
    let mut latencies_ns = Vec::with_capacity(4096);
    let mut last_end = window_end;
    let mut error = None;
    // An operation counts when it completes inside the window (whenever it started), so slow
    // operations that straddle the warm-up boundary are not lost. A thread that has completed
    // nothing by the end of the window keeps going until its first completion, so an
    // operation slower than the window still gets a (longer) window instead of no number.
    loop {
        let t0 = Instant::now();
        if t0 >= window_end && !latencies_ns.is_empty() {
            break;
        }
        let result = runner.run();
        let t1 = Instant::now();
        heartbeat.beat();
        match result {
            Ok(()) => {
                if t1 >= window_start && (t1 < window_end || latencies_ns.is_empty()) {
                    latencies_ns.push(u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX));
                    last_end = last_end.max(t1);
                }
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let cleanup_error = runner.finish().err();
    heartbeat.beat();
    let rate = latencies_ns.len() as f64 / (last_end - window_start).as_secs_f64();
    ThreadOutcome {
        latencies_ns,
        rate,
        error,
        cleanup_error,
    }
}

/// The `p` quantile (nearest rank) of sorted samples; 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    struct Sleepy;
    impl Runner for Sleepy {
        fn run(&mut self) -> Result<(), OpError> {
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        }
    }

    struct Failing(u32);
    impl Runner for Failing {
        fn run(&mut self) -> Result<(), OpError> {
            self.0 += 1;
            if self.0 > 3 {
                Err(OpError::failed("CKR_DEVICE_ERROR"))
            } else {
                Ok(())
            }
        }
    }

    const SHORT: Timing = Timing {
        warmup: Duration::from_millis(20),
        window: Duration::from_millis(200),
    };

    #[test]
    fn measures_rate_and_latency_over_threads() {
        let hb = Heartbeat::new();
        let m = run_cell(
            4,
            SHORT,
            &hb,
            &|_| Ok(Box::new(Sleepy) as Box<dyn Runner>),
            &[],
        )
        .unwrap();
        // 4 threads sleeping 2 ms each: about 2,000/s, latency about 2 ms.
        assert!(m.ops_per_sec > 1000.0 && m.ops_per_sec < 2100.0, "{m:?}");
        assert!(m.p50_us >= 2000.0 && m.p50_us < 20_000.0, "{m:?}");
        assert!(m.p99_us >= m.p50_us);
        // Each operation sleeps, so each costs its thread at least one switch.
        let switches = m.switches.expect("counted on Linux");
        assert!(switches.client >= 0.9, "{switches:?}");
        assert!(switches.node.is_none());
    }

    struct Slow;
    impl Runner for Slow {
        fn run(&mut self) -> Result<(), OpError> {
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        }
    }

    #[test]
    fn an_operation_slower_than_the_window_still_gets_a_number() {
        let hb = Heartbeat::new();
        let m = run_cell(
            2,
            SHORT,
            &hb,
            &|_| Ok(Box::new(Slow) as Box<dyn Runner>),
            &[],
        )
        .unwrap();
        assert_eq!(m.ops, 2);
        assert!(m.p50_us >= 500_000.0, "{m:?}");
        // One completion per thread after about 0.48 s of window: about 4/s in all.
        assert!(m.ops_per_sec > 3.0 && m.ops_per_sec < 4.5, "{m:?}");
    }

    #[test]
    fn a_failing_operation_reports_its_code() {
        let hb = Heartbeat::new();
        let e = run_cell(
            2,
            SHORT,
            &hb,
            &|_| Ok(Box::new(Failing(0)) as Box<dyn Runner>),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, "CKR_DEVICE_ERROR");
        let e = run_cell(
            2,
            SHORT,
            &hb,
            &|i| {
                if i == 1 {
                    Err(OpError::failed("CKR_SESSION_COUNT"))
                } else {
                    Ok(Box::new(Sleepy) as Box<dyn Runner>)
                }
            },
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, "CKR_SESSION_COUNT");
    }
}
