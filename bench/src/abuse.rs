//! `hsm-bench abuse`: a well-behaved application's P-256 signatures through the module while
//! another client of the same node abuses it, phase by phase: quiet; wrong-password logins as
//! fast as the node answers them; requests for 1 MiB answers pipelined and never read (the
//! largest answers, held by a client that stops reading); both at once. Each phase reports the
//! good client's throughput and p50/p99, its p99 against the quiet one (the target: within
//! 3×), and the node's resident memory (from `/proc`, when its pid is given).
//!
//! The abuser speaks our protocol directly over mutually authenticated TLS with the
//! certificate of the module's configuration (`$HSM_PKCS11_CONF`): what a compromised
//! application host could do. It is our module's benchmark only.

use crate::error::{BenchError, Result, io};
use crate::measure::{Heartbeat, Timing, run_cell};
use crate::ops::Op;
use crate::pkcs11::Module;
use cryptoki::types::AuthPin;
use hsm_proto::config::ModuleConfig;
use hsm_proto::frame;
use hsm_proto::msg::UserType;
use hsm_proto::{Envelope, Password, Request, RequestId, Response};
use rustls_pki_types::ServerName;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The target: the good client's p99 under abuse within this many times its quiet p99.
const TARGET_RATIO: f64 = 3.0;
/// Connections that pipeline requests for 1 MiB answers and never read.
const HOARDERS: usize = 4;

/// What to run.
#[derive(Debug)]
pub struct Spec {
    /// The module.
    pub module: PathBuf,
    /// The PIN.
    pub pin: String,
    /// The module's configuration (node address, CA, client certificate).
    pub conf: PathBuf,
    /// Signing sessions of the good client.
    pub sessions: usize,
    /// Measured seconds per phase.
    pub seconds: f64,
    /// The node's process ids, for its memory.
    pub node_pids: Vec<u32>,
    /// Where abuse.md and abuse.json go.
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Quiet,
    Logins,
    Hoard,
    Both,
}

impl Phase {
    fn title(self) -> &'static str {
        match self {
            Phase::Quiet => "quiet",
            Phase::Logins => "wrong-password logins, as fast as answered",
            Phase::Hoard => "4 connections request 1 MiB answers and never read",
            Phase::Both => "both at once",
        }
    }
}

/// One phase's figures.
#[derive(Debug, serde::Serialize)]
struct Row {
    phase: &'static str,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p99_ratio: f64,
    node_rss_mib: Option<u64>,
    logins_tried: u64,
    large_requests_sent: u64,
}

/// Runs the phases and writes abuse.md and abuse.json; returns the markdown.
///
/// # Errors
/// The module or the configuration cannot be used, or the results cannot be written.
pub fn run(spec: &Spec) -> Result<String> {
    let config = ModuleConfig::load(&spec.conf).map_err(BenchError::Usage)?;
    let address = config
        .nodes
        .first()
        .cloned()
        .ok_or_else(|| BenchError::Usage(format!("{}: no nodes", spec.conf.display())))?;
    let tls = Arc::new(
        hsm_proto::tls::client_config(&config.ca_cert, &config.client_cert, &config.client_key)
            .map_err(|e| BenchError::Usage(format!("TLS configuration: {e}")))?,
    );
    let server_name = config.server_name.clone().unwrap_or_else(|| {
        address
            .rsplit_once(':')
            .map_or(address.as_str(), |(h, _)| h)
            .trim_matches(['[', ']'])
            .to_owned()
    });
    let mut module = Module::open(&spec.module, AuthPin::from(spec.pin.clone()), None)?;
    let heartbeat = Heartbeat::new();
    let prepared = module
        .prepare(Op::P256Sign, spec.sessions, &heartbeat)
        .map_err(|e| BenchError::Module(format!("P-256 key: {e}")))?;
    let timing = Timing {
        warmup: Duration::from_secs(1),
        window: Duration::from_secs_f64(spec.seconds),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(io("start the abuser's runtime"))?;
    let abuser = Abuser {
        address,
        server_name,
        tls,
    };
    let mut rows = Vec::new();
    let mut quiet_p99 = None;
    for phase in [Phase::Quiet, Phase::Logins, Phase::Hoard, Phase::Both] {
        let stop = Arc::new(AtomicBool::new(false));
        let tried = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        if matches!(phase, Phase::Logins | Phase::Both) {
            let tls = runtime
                .block_on(abuser.open())
                .map_err(|e| BenchError::Module(format!("abuser: {e}")))?;
            tasks.push(runtime.spawn(guess(tls, tried.clone())));
        }
        if matches!(phase, Phase::Hoard | Phase::Both) {
            for _ in 0..HOARDERS {
                let tls = runtime
                    .block_on(abuser.open())
                    .map_err(|e| BenchError::Module(format!("abuser: {e}")))?;
                tasks.push(runtime.spawn(hoard(tls, sent.clone())));
            }
        }
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (stop, peak, pids) = (stop.clone(), peak.clone(), spec.node_pids.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_mib(&pids) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let measured = run_cell(
            spec.sessions,
            timing,
            &heartbeat,
            &*prepared.factory,
            &spec.node_pids,
        );
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        for t in tasks {
            t.abort();
        }
        let m = measured.map_err(|e| BenchError::Module(format!("{}: {e}", phase.title())))?;
        let quiet = *quiet_p99.get_or_insert(m.p99_us);
        let row = Row {
            phase: phase.title(),
            ops_per_sec: m.ops_per_sec,
            p50_us: m.p50_us,
            p99_us: m.p99_us,
            p99_ratio: m.p99_us / quiet.max(f64::MIN_POSITIVE),
            node_rss_mib: (!spec.node_pids.is_empty()).then(|| peak.load(Ordering::Relaxed)),
            logins_tried: tried.load(Ordering::Relaxed),
            large_requests_sent: sent.load(Ordering::Relaxed),
        };
        eprintln!(
            "  {:<52} {:>9.0}/s  p50 {:>6.0} µs  p99 {:>6.0} µs ({:.1}×)",
            row.phase, row.ops_per_sec, row.p50_us, row.p99_us, row.p99_ratio
        );
        rows.push(row);
        // Let the node drain what the abusers left before the next phase.
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(runtime);
    let _ = module.release(prepared);
    let md = markdown(&rows, spec.sessions);
    std::fs::create_dir_all(&spec.out).map_err(io(format!("create {}", spec.out.display())))?;
    write(&spec.out.join("abuse.md"), md.as_bytes())?;
    let json = serde_json::to_vec_pretty(&rows).map_err(|source| BenchError::Json {
        what: "encode the abuse results".into(),
        source,
    })?;
    write(&spec.out.join("abuse.json"), &json)?;
    Ok(md)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(io(format!("write {}", path.display())))
}

fn markdown(rows: &[Row], sessions: usize) -> String {
    let mut md = format!(
        "## Abuse (issue 9): a good client's P-256 signatures, {sessions} session{}, while another \
         client abuses the node\n\n\
         | phase | good client | p50 | p99 | p99 / quiet p99 | node memory (peak RSS) | abuser |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
        if sessions == 1 { "" } else { "s" }
    );
    for r in rows {
        let abuser = match (r.logins_tried, r.large_requests_sent) {
            (0, 0) => "—".to_owned(),
            (l, 0) => format!("{l} logins tried"),
            (0, s) => format!("{s} requests sent"),
            (l, s) => format!("{l} logins tried, {s} requests sent"),
        };
        let _ = writeln!(
            md,
            "| {} | {}/s | {} | {} | {:.2}× | {} | {abuser} |",
            r.phase,
            crate::report::rate(r.ops_per_sec),
            crate::report::latency(r.p50_us),
            crate::report::latency(r.p99_us),
            r.p99_ratio,
            r.node_rss_mib.map_or("—".into(), |m| format!("{m} MiB")),
        );
    }
    let worst = rows.iter().map(|r| r.p99_ratio).fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "\n| target | goal | measured | result |\n|---|---:|---:|---|\n\
         | good client's p99 under abuse ≤ 3 × quiet p99 | {TARGET_RATIO:.0}× | {worst:.2}× (worst phase) | {} |",
        if worst <= TARGET_RATIO {
            "met".to_owned()
        } else {
            format!("**missed** ({:.1}× the budget)", worst / TARGET_RATIO)
        }
    );
    md
}

/// Peak-independent resident memory of the node processes, MiB.
fn rss_mib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?;
        total += kb / 1024;
    }
    Some(total)
}

struct Abuser {
    address: String,
    server_name: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Abuser {
    async fn open(&self) -> std::result::Result<TlsStream<TcpStream>, String> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|e| format!("connect {}: {e}", self.address))?;
        let name =
            ServerName::try_from(self.server_name.clone()).map_err(|e| format!("name: {e}"))?;
        let mut tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        frame::client_handshake(&mut tls, "hsm-bench-abuser")
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        Ok(tls)
    }
}

/// Wrong-password logins for made-up users, one after the other, as fast as answered.
async fn guess(mut tls: TlsStream<TcpStream>, tried: Arc<AtomicU64>) {
    for n in 1u64.. {
        let login = Request::Login {
            user_type: UserType::User,
            username: format!("nobody{}", n % 7),
            password: Password::new("not the password".to_owned()),
        };
        if frame::write_message(&mut tls, &Envelope::new(RequestId(n), login))
            .await
            .is_err()
        {
            return;
        }
        let reply: std::result::Result<Envelope<Response>, _> = frame::read_message(&mut tls).await;
        if reply.is_err() {
            return;
        }
        tried.fetch_add(1, Ordering::Relaxed);
    }
}

/// Requests for 1 MiB of random, pipelined as fast as the node takes them, never read.
async fn hoard(mut tls: TlsStream<TcpStream>, sent: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    let mut id = 0;
    loop {
        buf.clear();
        for _ in 0..16 {
            id += 1;
            let request = Request::GenerateRandom {
                length: frame::MAX_RANDOM_LEN,
            };
            if frame::encode_into(&Envelope::new(RequestId(id), request), &mut buf).is_err() {
                return;
            }
        }
        if tls.write_all(&buf).await.is_err() {
            return;
        }
        sent.fetch_add(16, Ordering::Relaxed);
    }
}
