//! `hsm-bench failover`: signing throughput over time through the module while the cluster's
//! leader is killed with SIGKILL and restarted (a real `hsm-daemon` and `hsmctl unseal`), drawn
//! as a PNG line chart, with the longest stall and the target's verdict: no stretch of more
//! than 2 s in which throughput stays below half of the steady rate.
//!
//! It works on a development cluster made by `hsmctl dev` (bench/run.sh passes its directory):
//! the leader comes from `hsmctl status --json`, its daemon's pid from `/proc`, and the
//! restarted daemon (a child of this process) is stopped again when the run ends.

use crate::error::{BenchError, Result, io};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Width of one throughput sample.
const BUCKET: Duration = Duration::from_millis(250);
/// The target: throughput may not stay below half the steady rate for longer than this.
const TARGET_GAP: Duration = Duration::from_secs(2);
/// DER of the P-256 curve OID.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// What to run.
#[derive(Debug)]
pub struct Spec {
    /// The module.
    pub module: PathBuf,
    /// The PIN.
    pub pin: String,
    /// The `hsmctl dev` cluster directory.
    pub cluster_dir: PathBuf,
    /// The `hsmctl` binary.
    pub hsmctl: PathBuf,
    /// The `hsm-daemon` binary.
    pub daemon: PathBuf,
    /// Signing sessions (one thread each).
    pub sessions: usize,
    /// Length of the run.
    pub seconds: u64,
    /// When the leader is killed.
    pub kill_at: u64,
    /// When it is started again (and unsealed).
    pub restart_at: u64,
    /// Where failover.json and failover.png go.
    pub out: PathBuf,
    /// Font for the chart.
    pub font: Option<PathBuf>,
}

/// What the run measured.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    sessions: usize,
    ops: u64,
    failed: u64,
    steady_ops_per_s: f64,
    longest_stall_ms: f64,
    longest_below_half_ms: u64,
    target_met: bool,
    killed: String,
    /// Signatures (and other requests) each node answered between 1 s and the kill.
    spread: Vec<(String, u64)>,
    events: Vec<(f64, String)>,
    /// Operations per second, one value per 250 ms sample.
    series: Vec<f64>,
}

impl Summary {
    /// Signatures made.
    pub fn ops(&self) -> u64 {
        self.ops
    }
    /// Signatures that failed.
    pub fn failed(&self) -> u64 {
        self.failed
    }
    /// The steady rate before the kill.
    pub fn steady(&self) -> f64 {
        self.steady_ops_per_s
    }
    /// The longest single signature.
    pub fn stall_ms(&self) -> f64 {
        self.longest_stall_ms
    }
    /// The longest stretch below half the steady rate.
    pub fn below_half_ms(&self) -> u64 {
        self.longest_below_half_ms
    }
    /// Requests per node during steady signing.
    pub fn spread(&self) -> &[(String, u64)] {
        &self.spread
    }
    /// Whether the target was met.
    pub fn met(&self) -> bool {
        self.target_met
    }
}

fn usage(m: impl Into<String>) -> BenchError {
    BenchError::Usage(m.into())
}

/// `hsmctl status --json` of the cluster.
fn status(spec: &Spec) -> Result<serde_json::Value> {
    let out = Command::new(&spec.hsmctl)
        .args(["status", "--json", "--dir"])
        .arg(&spec.cluster_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(io("run hsmctl status"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).map_err(|source| BenchError::Json {
        what: "hsmctl status --json".into(),
        source,
    })
}

/// Requests each node has answered, by name.
fn requests(spec: &Spec) -> Result<Vec<(String, u64)>> {
    let value = status(spec)?;
    Ok(value
        .get("nodes")
        .and_then(|n| n.as_array())
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| {
                    let s = n.get("status")?;
                    Some((
                        s.get("node")?.as_str()?.to_owned(),
                        s.get("requests")?.as_u64()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The leader's node name.
fn leader(spec: &Spec) -> Result<String> {
    let value = status(spec)?;
    value
        .get("leader_name")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Module(format!("no leader in hsmctl status: {value}")))
}

/// The pid of the daemon running `config`.
fn daemon_pid(config: &Path) -> Result<u32> {
    let wanted = config.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").map_err(io("read /proc"))? {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a.ends_with("hsm-daemon"))
            && args.iter().any(|a| a == "run")
            && args.contains(&wanted)
        {
            return Ok(pid);
        }
    }
    Err(BenchError::Module(format!("no hsm-daemon runs {wanted}")))
}

fn run_quiet(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io(what.to_owned()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::Module(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn open_session(ctx: &Pkcs11, pin: &str) -> Result<Session> {
    let slot = *ctx
        .get_slots_with_token()
        .map_err(|e| BenchError::Module(format!("C_GetSlotList: {e}")))?
        .first()
        .ok_or_else(|| BenchError::Module("no slot".into()))?;
    let s = ctx
        .open_rw_session(slot)
        .map_err(|e| BenchError::Module(format!("C_OpenSession: {e}")))?;
    match s.login(UserType::User, Some(&AuthPin::from(pin.to_owned()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
            Ok(s)
        }
        Err(e) => Err(BenchError::Module(format!("C_Login: {e}"))),
    }
}

/// Runs the failover measurement and writes `failover.json` and `failover.png`.
///
/// # Errors
/// Setup failing (module, cluster, leader, daemon), or the outputs not written.
pub fn run(spec: &Spec) -> Result<Summary> {
    if spec.kill_at >= spec.restart_at || spec.restart_at >= spec.seconds || spec.sessions == 0 {
        return Err(usage(
            "need 0 < sessions and kill-at < restart-at < seconds",
        ));
    }
    let ctx = Pkcs11::new(&spec.module)
        .map_err(|e| BenchError::Module(format!("load {}: {e}", spec.module.display())))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| BenchError::Module(format!("C_Initialize: {e}")))?;
    let setup = open_session(&ctx, &spec.pin)?;
    let label = format!("hsm-bench-failover-{}", std::process::id()).into_bytes();
    let (_, key) = setup
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Label(label.clone()),
                Attribute::EcParams(P256_PARAMS.to_vec()),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::Label(label),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
            ],
        )
        .map_err(|e| BenchError::Module(format!("C_GenerateKeyPair: {e}")))?;

    let victim = leader(spec)?;
    let config = spec.cluster_dir.join(&victim).join("node.toml");
    let pid = daemon_pid(&config)?;
    eprintln!(
        "failover: {} sessions signing for {} s; node {victim} (the leader, pid {pid}) is killed \
         at {} s and restarted at {} s",
        spec.sessions, spec.seconds, spec.kill_at, spec.restart_at
    );

    let buckets: Arc<Vec<AtomicU64>> = Arc::new(
        (0..=(spec.seconds * 1000 / BUCKET.as_millis() as u64 + 8))
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let start = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..spec.sessions {
        let session = open_session(&ctx, &spec.pin)?;
        let (buckets, stop, failed, longest) = (
            buckets.clone(),
            stop.clone(),
            failed.clone(),
            longest.clone(),
        );
        threads.push(std::thread::spawn(move || {
            sign_loop(&session, key, start, &buckets, &stop, &failed, &longest)
        }));
    }

    let mut events = Vec::new();
    let at = |s: u64| start + Duration::from_secs(s);
    sleep_until(at(1));
    let before = requests(spec)?;
    sleep_until(at(spec.kill_at));
    let after = requests(spec)?;
    let spread: Vec<(String, u64)> = after
        .iter()
        .map(|(name, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == name)
                .map_or(0, |(_, v)| *v);
            (name.clone(), n.saturating_sub(was))
        })
        .collect();
    run_quiet(
        Command::new("kill").args(["-KILL", &pid.to_string()]),
        "kill -KILL the leader",
    )?;
    events.push((start.elapsed().as_secs_f64(), format!("kill -9 {victim}")));
    sleep_until(at(spec.restart_at));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.cluster_dir.join(&victim).join("restarted.log"))
        .map_err(io("open the restarted daemon's log"))?;
    let child = Command::new(&spec.daemon)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io("log"))?)
        .stderr(log)
        .spawn()
        .map_err(io("start hsm-daemon"))?;
    // Stopped when the run ends, whichever way: the cluster keeps only hsmctl dev's nodes.
    let _restarted = Restarted(child);
    events.push((start.elapsed().as_secs_f64(), format!("restart {victim}")));
    // The daemon needs a moment to listen; unseal retries until it does.
    let key_file = spec.cluster_dir.join("dev.key");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = run_quiet(
            Command::new(&spec.hsmctl)
                .arg("unseal")
                .arg("--dir")
                .arg(&spec.cluster_dir)
                .args(["--node", &victim])
                .arg("--dev-key-file")
                .arg(&key_file),
            "hsmctl unseal",
        );
        match r {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    events.push((start.elapsed().as_secs_f64(), format!("{victim} unsealed")));
    sleep_until(at(spec.seconds));
    stop.store(true, Ordering::SeqCst);
    let mut ops = 0;
    for t in threads {
        ops += t.join().unwrap_or(0);
    }
    drop(setup);
    let _ = ctx.finalize();

    let per_s = 1.0 / BUCKET.as_secs_f64();
    let n = (spec.seconds * 1000 / BUCKET.as_millis() as u64) as usize;
    let series: Vec<f64> = buckets[..n]
        .iter()
        .map(|b| b.load(Ordering::Relaxed) as f64 * per_s)
        .collect();
    // Steady: the median sample between warm-up (1 s) and the kill.
    let kill_idx = (spec.kill_at * 1000 / BUCKET.as_millis() as u64) as usize;
    let mut steady: Vec<f64> = series[4.min(kill_idx)..kill_idx].to_vec();
    steady.sort_by(f64::total_cmp);
    let steady_rate = steady.get(steady.len() / 2).copied().unwrap_or(0.0);
    let mut run = 0u64;
    let mut worst = 0u64;
    for v in &series[4.min(n)..] {
        if *v < steady_rate / 2.0 {
            run += BUCKET.as_millis() as u64;
            worst = worst.max(run);
        } else {
            run = 0;
        }
    }
    let longest_stall = *longest
        .lock()
        .map_err(|_| BenchError::Module("poisoned".into()))?;
    let summary = Summary {
        sessions: spec.sessions,
        ops,
        failed: failed.load(Ordering::Relaxed),
        steady_ops_per_s: steady_rate,
        longest_stall_ms: longest_stall.as_secs_f64() * 1000.0,
        longest_below_half_ms: worst,
        target_met: worst <= TARGET_GAP.as_millis() as u64 && failed.load(Ordering::Relaxed) == 0,
        killed: victim,
        spread,
        events,
        series,
    };
    std::fs::create_dir_all(&spec.out).map_err(io("create the output directory"))?;
    let json = serde_json::to_string_pretty(&summary).map_err(|source| BenchError::Json {
        what: "encode failover.json".into(),
        source,
    })?;
    std::fs::write(spec.out.join("failover.json"), json).map_err(io("write failover.json"))?;
    draw(
        &spec.out.join("failover.png"),
        &summary,
        spec.font.as_deref(),
    )?;
    Ok(summary)
}

/// The restarted daemon, stopped with SIGTERM when dropped.
struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// One signing thread; returns its count of signatures.
fn sign_loop(
    session: &Session,
    key: ObjectHandle,
    start: Instant,
    buckets: &[AtomicU64],
    stop: &AtomicBool,
    failed: &AtomicU64,
    longest: &Mutex<Duration>,
) -> u64 {
    let digest = [0x42u8; 32];
    let mut ops = 0;
    let mut worst = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        match session.sign(&Mechanism::Ecdsa, key, &digest) {
            Ok(_) => {
                ops += 1;
                let idx = (start.elapsed().as_millis() / BUCKET.as_millis()) as usize;
                if let Some(b) = buckets.get(idx) {
                    b.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("failover: a signature failed: {e}");
            }
        }
        worst = worst.max(began.elapsed());
    }
    if let Ok(mut l) = longest.lock() {
        *l = (*l).max(worst);
    }
    ops
}

/// Throughput over time, with the events and the half-steady line.
fn draw(path: &Path, s: &Summary, font: Option<&Path>) -> Result<()> {
    crate::chart::load_font(font)?;
    let err = |e: &dyn std::fmt::Display| BenchError::Chart(e.to_string());
    let root = BitMapBackend::new(path, (1100, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let secs = s.series.len() as f64 * BUCKET.as_secs_f64();
    let top = s.series.iter().copied().fold(s.steady_ops_per_s, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "ECDSA P-256 signing through the module, {} sessions, 3 nodes: {} killed and \
                 restarted (longest stall {:.0} ms, below half for at most {} ms)",
                s.sessions, s.killed, s.longest_stall_ms, s.longest_below_half_ms
            ),
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..secs, 0.0..top.max(1.0))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("signatures per second")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(&e))?;
    let points: Vec<(f64, f64)> = s
        .series
        .iter()
        .enumerate()
        .map(|(i, v)| ((i as f64 + 0.5) * BUCKET.as_secs_f64(), *v))
        .collect();
    chart
        .draw_series(std::iter::once(PathElement::new(
            points,
            RGBColor(40, 100, 200).stroke_width(2),
        )))
        .map_err(|e| err(&e))?;
    let half = s.steady_ops_per_s / 2.0;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, half), (secs, half)],
            RGBColor(200, 60, 60).stroke_width(1),
        )))
        .map_err(|e| err(&e))?;
    for (i, (t, label)) in s.events.iter().enumerate() {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(*t, 0.0), (*t, top)],
                RGBColor(120, 120, 120).stroke_width(1),
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                label.clone(),
                // Staggered: events can be a fraction of a second apart.
                (*t + 0.2, top * (0.96 - 0.05 * i as f64)),
                ("sans-serif", 13),
            )))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
