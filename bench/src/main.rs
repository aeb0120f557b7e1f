//! `hsm-bench`: measures any PKCS#11 module (ours, SoftHSMv2) and the raw crypto library on
//! the same operations, and writes a markdown table and a PNG chart side by side.
//!
//! Each column runs in its own child process (`hsm-bench worker`), so a module that crashes
//! or hangs costs its own column only, and the SoftHSMv2 child gets its `SOFTHSM2_CONF`
//! without touching this process's environment.
#![forbid(unsafe_code)]

mod abuse;
mod chart;
mod columns;
mod error;
mod failover;
mod limit;
mod measure;
mod ops;
mod pkcs11;
mod report;
mod results;
mod softhsm;
mod worker;

use clap::{Args, Parser, Subcommand};
use columns::OursSpec;
use error::{BenchError, Result, io};
use ops::Op;
use report::Column;
use results::{Cell, Line, Outcome};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use worker::Plan;

/// The kinds of column, in table order (`ours` stands for every ours column).
const TARGETS: &[&str] = &["limit", "softhsm", "ours"];

#[derive(Parser, Debug)]
#[command(
    name = "hsm-bench",
    about = "Benchmark a PKCS#11 module against SoftHSMv2 and the raw crypto library",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Re-render the table and chart from the results files in --out.
    Report(ReportArgs),
    /// Print a free TCP port on 127.0.0.1 (for scripts); with --count N, the first of N
    /// consecutive free ports.
    FreePort(FreePortArgs),
    /// Create COUNT AES-256 token keys through a module as fast as it takes them, from many
    /// sessions, and leave them there (the scale test's fill; bench/scale.sh).
    Fill(FillArgs),
    /// Signing throughput over time while the leader of an `hsmctl dev` cluster is killed
    /// and restarted: failover.json and failover.png in --out (bench/run.sh runs it on the
    /// 3-node cluster).
    Failover(FailoverArgs),
    /// A good client's P-256 signatures while another client abuses the node (wrong-password
    /// logins, large answers never read): abuse.md and abuse.json in --out (bench/run.sh
    /// --abuse).
    Abuse(AbuseArgs),
    /// Measure one column (started by hsm-bench itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Columns to measure: limit, softhsm, ours (`ours` = every --ours column).
    #[arg(long, value_delimiter = ',', default_value = "limit,softhsm,ours")]
    targets: Vec<String>,
    /// An ours column: `[LABEL=]CONF[,pin-env=VAR][,module=PATH][,token=LABEL]`. Repeat it
    /// for more columns (e.g. a 1-node and a 3-node cluster); each column's worker gets
    /// HSM_PKCS11_CONF=CONF and the PIN from $VAR [default: --ours-pin-env]. LABEL defaults
    /// to "ours (N nodes)" from CONF's `nodes`. Without --ours: one column with the inherited
    /// $HSM_PKCS11_CONF.
    #[arg(long = "ours", value_name = "SPEC")]
    ours: Vec<String>,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Warm-up seconds per cell (run, not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent sessions (one thread each) per row.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    sessions: Vec<usize>,
    /// Only these operations (ids, e.g. p256-sign,aes-gcm-1k; `find` for every C_FindObjects
    /// row). Default: all.
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// Object counts for the C_FindObjects rows.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    find_counts: Vec<u32>,
    /// Shorthand for --find-counts 1000,10000,100000 (setup takes minutes).
    #[arg(long)]
    large_find: bool,
    /// Output directory for the results files, results.md and chart.png.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// Our module [default: $HSM_PKCS11_MODULE, else target/release/libhsm_pkcs11.so]. Any
    /// PKCS#11 module works here. The default for every --ours column.
    #[arg(long)]
    ours_module: Option<PathBuf>,
    /// The environment variable holding the PIN for --ours-module (never a flag, so it does
    /// not show in `ps`). The default for every --ours column.
    #[arg(long, default_value = "HSM_PIN")]
    ours_pin_env: String,
    /// Use the token with this label in --ours-module [default: the first initialized one].
    #[arg(long)]
    ours_token: Option<String>,
    /// Column header for --ours-module without --ours [default: "ours (N nodes)" from
    /// $HSM_PKCS11_CONF, else "ours"].
    #[arg(long)]
    ours_label: Option<String>,
    /// The SoftHSMv2 module.
    #[arg(long, default_value = softhsm::DEFAULT_MODULE)]
    softhsm_module: PathBuf,
    /// Leave the C_FindObjects population in the token (for throwaway tokens: saves time).
    #[arg(long)]
    no_cleanup: bool,
    /// A worker that makes no progress for this many seconds is stopped.
    #[arg(long, default_value_t = 120)]
    stall_timeout: u64,
    /// TTF font for the chart [default: DejaVu Sans from fonts-dejavu-core].
    #[arg(long)]
    font: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct FreePortArgs {
    /// How many consecutive ports must be free (e.g. 6 for `hsmctl dev --nodes 3`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    count: u16,
}

#[derive(Args, Debug)]
struct FillArgs {
    /// How many AES-256 token keys to create.
    #[arg(long)]
    count: usize,
    /// Concurrent sessions (one thread each).
    #[arg(long, default_value_t = 32)]
    sessions: usize,
    /// The module [default: $HSM_PKCS11_MODULE, else target/release/libhsm_pkcs11.so]; its
    /// configuration comes from the environment ($HSM_PKCS11_CONF for ours).
    #[arg(long)]
    module: Option<PathBuf>,
    /// The environment variable holding the PIN.
    #[arg(long, default_value = "HSM_PIN")]
    pin_env: String,
    /// Use the token with this label [default: the first initialized one].
    #[arg(long)]
    token: Option<String>,
}

#[derive(Args, Debug)]
struct FailoverArgs {
    /// The module [default: $HSM_PKCS11_MODULE, else target/release/libhsm_pkcs11.so]; its
    /// configuration comes from $HSM_PKCS11_CONF.
    #[arg(long)]
    module: Option<PathBuf>,
    /// The environment variable holding the PIN.
    #[arg(long, default_value = "HSM_PIN")]
    pin_env: String,
    /// The `hsmctl dev` cluster directory.
    #[arg(long)]
    cluster_dir: PathBuf,
    /// Directory of the hsmctl and hsm-daemon binaries [default: next to hsm-bench].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Signing sessions (one thread each).
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    /// Length of the run, seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// When the leader is killed (SIGKILL), seconds from the start.
    #[arg(long, default_value_t = 8)]
    kill_at: u64,
    /// When it is started again and unsealed.
    #[arg(long, default_value_t = 16)]
    restart_at: u64,
    /// Output directory.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// TTF font for the chart.
    #[arg(long)]
    font: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct AbuseArgs {
    /// The module [default: $HSM_PKCS11_MODULE, else target/release/libhsm_pkcs11.so]; its
    /// configuration comes from $HSM_PKCS11_CONF (the abuser uses its certificate too).
    #[arg(long)]
    module: Option<PathBuf>,
    /// The environment variable holding the PIN.
    #[arg(long, default_value = "HSM_PIN")]
    pin_env: String,
    /// Signing sessions of the good client.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// The node's process ids (its memory is reported).
    #[arg(long, value_delimiter = ',')]
    node_pids: Vec<u32>,
    /// Output directory.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct ReportArgs {
    /// The directory holding <target>.jsonl.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// TTF font for the chart.
    #[arg(long)]
    font: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct WorkerArgs {
    #[arg(long)]
    target: String,
    #[arg(long)]
    column: String,
    #[arg(long)]
    module: Option<PathBuf>,
    #[arg(long)]
    pin_env: Option<String>,
    #[arg(long)]
    token: Option<String>,
    /// Nodes in the column's cluster, when known (recorded in the results).
    #[arg(long)]
    nodes: Option<usize>,
    /// The node processes, whose context switches are counted per operation.
    #[arg(long, value_delimiter = ',')]
    node_pids: Vec<u32>,
    #[arg(long)]
    plan: String,
    #[arg(long)]
    results: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Cmd::Report(args)) => report_cmd(&args.out, args.font.as_deref()),
        Some(Cmd::FreePort(args)) => free_port(args.count),
        Some(Cmd::Fill(args)) => fill_cmd(&args),
        Some(Cmd::Failover(args)) => failover_cmd(&args),
        Some(Cmd::Abuse(args)) => abuse_cmd(&args),
        Some(Cmd::Worker(args)) => worker_cmd(&args),
        None => run(&cli.run),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hsm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the first of `count` consecutive ports on 127.0.0.1 that are free now. Candidates
/// lie below the kernel's ephemeral range, so that outgoing connections (the module's, the
/// nodes') do not take them between this answer and the daemons binding them.
fn free_port(count: u16) -> Result<()> {
    let bind = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port));
    if count == 1 {
        let listener = bind(0).map_err(io("bind 127.0.0.1:0"))?;
        let port = listener.local_addr().map_err(io("local address"))?.port();
        println!("{port}");
        return Ok(());
    }
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32_768);
    let (first, last) = if low > 12_000 {
        (10_000u32, u32::from(low) - u32::from(count))
    } else {
        (u32::from(low).max(1024), 65_535 - u32::from(count))
    };
    // A cheap spread over the range, different per call.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..200 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let base = first + (seed >> 8) % (last - first);
        let Ok(base) = u16::try_from(base) else {
            continue;
        };
        let held: Vec<_> = (0..count).map_while(|i| bind(base + i).ok()).collect();
        if held.len() == usize::from(count) {
            println!("{base}");
            return Ok(());
        }
    }
    Err(BenchError::Usage(format!(
        "no {count} consecutive free ports found on 127.0.0.1"
    )))
}

fn plan_of(args: &RunArgs) -> Result<Plan> {
    let finite = |v: f64| v.is_finite() && v >= 0.0;
    if !finite(args.seconds) || args.seconds == 0.0 || !finite(args.warmup) {
        return Err(BenchError::Usage(
            "--seconds must be > 0 and --warmup ≥ 0".into(),
        ));
    }
    if args.sessions.is_empty() || args.sessions.iter().any(|&s| s == 0 || s > 1024) {
        return Err(BenchError::Usage(
            "--sessions takes counts from 1 to 1024".into(),
        ));
    }
    let counts: Vec<u32> = if args.large_find {
        vec![1000, 10_000, 100_000]
    } else {
        args.find_counts.clone()
    };
    if counts.contains(&0) {
        return Err(BenchError::Usage("--find-counts must be > 0".into()));
    }
    let all = Op::all(&counts);
    let ops = if args.ops.is_empty() {
        all
    } else {
        let mut chosen = Vec::new();
        for id in &args.ops {
            if id == "find" {
                chosen.extend(all.iter().copied().filter(|o| matches!(o, Op::Find(_))));
            } else {
                chosen.push(Op::parse(id).ok_or_else(|| {
                    let ids: Vec<String> = all.iter().map(|o| o.id()).collect();
                    BenchError::Usage(format!(
                        "unknown operation {id:?}; known: {}",
                        ids.join(", ")
                    ))
                })?);
            }
        }
        chosen.sort_unstable();
        chosen.dedup();
        chosen
    };
    Ok(Plan {
        ops: ops.iter().map(|o| o.id()).collect(),
        sessions: args.sessions.clone(),
        warmup_s: args.warmup,
        window_s: args.seconds,
        cleanup: !args.no_cleanup,
        stall_s: args.stall_timeout,
    })
}

/// One column to measure.
#[derive(Debug)]
struct Planned {
    /// `limit`, `softhsm`, `ours`, `ours2`, …: the results file's stem.
    target: String,
    /// The column header.
    header: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Limit,
    SoftHsm,
    /// A module other than SoftHSMv2: ours, or anything given as ours.
    Ours {
        /// The module, or why it cannot be used (reported when the column's turn comes).
        module: std::result::Result<PathBuf, String>,
        pin_env: String,
        token: Option<String>,
        /// The node processes serving it (their context switches are counted).
        node_pids: Vec<u32>,
        /// Set as `$HSM_PKCS11_CONF` for the worker; `None`: inherited.
        conf: Option<PathBuf>,
        nodes: Option<usize>,
    },
}

/// The columns of this run, in table order.
fn plan_columns(args: &RunArgs) -> Result<Vec<Planned>> {
    for t in &args.targets {
        if !TARGETS.contains(&t.as_str()) {
            return Err(BenchError::Usage(format!(
                "unknown target {t:?}; known: {}",
                TARGETS.join(", ")
            )));
        }
    }
    let wanted = |t: &str| args.targets.iter().any(|a| a == t);
    let mut columns = Vec::new();
    if wanted("limit") {
        columns.push(Planned {
            target: "limit".into(),
            header: "limit".into(),
            kind: Kind::Limit,
        });
    }
    if wanted("softhsm") {
        columns.push(Planned {
            target: "softhsm".into(),
            header: "SoftHSMv2".into(),
            kind: Kind::SoftHsm,
        });
    }
    if !wanted("ours") {
        return Ok(columns);
    }
    let specs = if args.ours.is_empty() {
        vec![None]
    } else {
        args.ours
            .iter()
            .map(|s| OursSpec::parse(s).map(Some))
            .collect::<Result<Vec<_>>>()?
    };
    let mut headers: Vec<String> = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let pin_env = spec
            .as_ref()
            .and_then(|s| s.pin_env.clone())
            .unwrap_or_else(|| args.ours_pin_env.clone());
        let module = ours_module(
            spec.as_ref()
                .and_then(|s| s.module.clone())
                .or_else(|| args.ours_module.clone()),
            &pin_env,
        );
        let conf = spec.as_ref().map(|s| s.conf.clone());
        if let Some(c) = &conf
            && !c.is_file()
        {
            return Err(BenchError::Usage(format!(
                "--ours: {} does not exist",
                c.display()
            )));
        }
        let nodes = conf
            .clone()
            .or_else(|| std::env::var_os(columns::CONF_ENV).map(PathBuf::from))
            .and_then(|c| columns::node_count(&c));
        let header = match &spec {
            Some(s) => s.label.clone(),
            None => args.ours_label.clone(),
        }
        .unwrap_or_else(|| columns::default_label(nodes));
        if headers.contains(&header) {
            return Err(BenchError::Usage(format!(
                "two ours columns are called {header:?}: give them labels (--ours LABEL=CONF)"
            )));
        }
        headers.push(header.clone());
        columns.push(Planned {
            target: columns::ours_target(i),
            header,
            kind: Kind::Ours {
                module,
                pin_env,
                node_pids: spec
                    .as_ref()
                    .map(|s| s.node_pids.clone())
                    .unwrap_or_default(),
                token: spec
                    .and_then(|s| s.token)
                    .or_else(|| args.ours_token.clone()),
                conf,
                nodes,
            },
        });
    }
    Ok(columns)
}

fn run(args: &RunArgs) -> Result<()> {
    let plan = plan_of(args)?;
    let planned = plan_columns(args)?;
    std::fs::create_dir_all(&args.out).map_err(io(format!("create {}", args.out.display())))?;
    let plan_json = serde_json::to_string(&plan).map_err(|source| BenchError::Json {
        what: "encode the plan".into(),
        source,
    })?;
    let exe = std::env::current_exe().map_err(io("locate hsm-bench itself"))?;
    for column in &planned {
        let results = results::path_for(&args.out, &column.target);
        eprintln!("== {} ==", column.header);
        let mut cmd = Command::new(&exe);
        cmd.arg("worker")
            .args([
                "--target",
                &column.target,
                "--column",
                &column.header,
                "--plan",
                &plan_json,
            ])
            .arg("--results")
            .arg(&results);
        // Keeps the SoftHSMv2 token directory alive until its worker is done.
        let mut _token = None;
        let prepared: Result<()> = match &column.kind {
            Kind::Limit => Ok(()),
            Kind::SoftHsm => softhsm::Token::create(&args.softhsm_module).map(|token| {
                cmd.arg("--module")
                    .arg(&args.softhsm_module)
                    .args([
                        "--pin-env",
                        softhsm::PIN_ENV,
                        "--token",
                        softhsm::TOKEN_LABEL,
                    ])
                    .env("SOFTHSM2_CONF", token.conf())
                    .env(softhsm::PIN_ENV, softhsm::USER_PIN);
                _token = Some(token);
            }),
            Kind::Ours {
                module,
                pin_env,
                token,
                conf,
                nodes,
                node_pids,
            } => match module {
                Ok(module) => {
                    cmd.arg("--module").arg(module).args(["--pin-env", pin_env]);
                    if !node_pids.is_empty() {
                        let pids: Vec<String> = node_pids.iter().map(u32::to_string).collect();
                        cmd.args(["--node-pids", &pids.join(",")]);
                    }
                    if let Some(t) = token {
                        cmd.args(["--token", t]);
                    }
                    if let Some(n) = nodes {
                        cmd.args(["--nodes", &n.to_string()]);
                    }
                    if let Some(c) = conf {
                        cmd.env(columns::CONF_ENV, c);
                    }
                    Ok(())
                }
                Err(e) => Err(BenchError::Usage(e.clone())),
            },
        };
        let status = match prepared {
            Ok(()) => cmd
                .status()
                .map(|s| s.to_string())
                .map_err(io("start the worker")),
            Err(e) => Err(e),
        };
        let reason = match status {
            Ok(s) if s == "exit status: 0" => None,
            Ok(s) => Some(format!("worker ended with {s}")),
            Err(e) => {
                // Nothing ran: start a fresh file so stale results do not pass for new ones.
                results::Writer::create(&results)?;
                Some(e.to_string())
            }
        };
        if let Some(reason) = reason {
            eprintln!("hsm-bench: {}: {reason}", column.header);
            mark_missing(&results, &plan, &reason)?;
        }
    }
    let mut columns = Vec::new();
    for p in &planned {
        columns.push(load_column(&args.out, &p.target, Some(&p.header))?);
    }
    render(&args.out, &columns, args.font.as_deref())
}

/// The module of an ours column, checked: it exists and its PIN variable is set.
fn ours_module(module: Option<PathBuf>, pin_env: &str) -> std::result::Result<PathBuf, String> {
    let module = module
        .or_else(|| std::env::var_os("HSM_PKCS11_MODULE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/release/libhsm_pkcs11.so"));
    if !module.is_file() {
        return Err(format!(
            "{} does not exist (build it, or pass --ours-module)",
            module.display()
        ));
    }
    if std::env::var_os(pin_env).is_none() {
        return Err(format!(
            "${pin_env} is not set: it holds the PIN (user:password) for {}",
            module.display()
        ));
    }
    Ok(module)
}

/// Adds a "not run" cell for every planned cell the worker did not write.
fn mark_missing(path: &Path, plan: &Plan, reason: &str) -> Result<()> {
    let done = if path.is_file() {
        results::load(path)?
    } else {
        results::TargetResults::default()
    };
    let writer = results::Writer::append(path)?;
    for op in &plan.ops {
        for &sessions in &plan.sessions {
            if done.outcome(op, sessions).is_none() {
                writer.write(&Line::Cell(Cell {
                    op: op.clone(),
                    sessions,
                    outcome: Outcome::NotRun {
                        reason: reason.into(),
                    },
                }))?;
            }
        }
    }
    Ok(())
}

/// One column from its results file; `header` when the file has none (a worker that never
/// started).
fn load_column(out: &Path, target: &str, header: Option<&str>) -> Result<Column> {
    let path = results::path_for(out, target);
    let results = if path.is_file() {
        results::load(&path)?
    } else {
        results::TargetResults::default()
    };
    let header = results.meta.as_ref().map_or_else(
        || header.map_or_else(|| target.to_string(), str::to_string),
        |m| m.column.clone(),
    );
    Ok(Column {
        target: target.to_string(),
        header,
        results,
    })
}

fn render(out: &Path, columns: &[Column], font: Option<&Path>) -> Result<()> {
    let md = report::markdown(columns);
    let md_path = out.join("results.md");
    std::fs::write(&md_path, &md).map_err(io(format!("write {}", md_path.display())))?;
    println!("{md}");
    let png = out.join("chart.png");
    match chart::draw(&png, columns, font) {
        Ok(()) => eprintln!("wrote {} and {}", md_path.display(), png.display()),
        // The table is the result; a chart problem is reported, not fatal.
        Err(e) => eprintln!("wrote {}; no chart: {e}", md_path.display()),
    }
    Ok(())
}

fn report_cmd(out: &Path, font: Option<&Path>) -> Result<()> {
    let entries = std::fs::read_dir(out).map_err(io(format!("read {}", out.display())))?;
    let mut targets: Vec<(usize, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".jsonl")?;
            columns::rank(stem).map(|r| (r, stem.to_string()))
        })
        .collect();
    targets.sort();
    if targets.is_empty() {
        return Err(BenchError::Usage(format!(
            "no results files (*.jsonl) in {}",
            out.display()
        )));
    }
    let mut columns = Vec::new();
    for (_, target) in &targets {
        columns.push(load_column(out, target, None)?);
    }
    render(out, &columns, font)
}

/// `hsm-bench fill`: COUNT AES-256 token keys, as fast as the module takes them.
fn fill_cmd(args: &FillArgs) -> Result<()> {
    if args.count == 0 || args.sessions == 0 || args.sessions > 1024 {
        return Err(BenchError::Usage(
            "--count must be > 0 and --sessions from 1 to 1024".into(),
        ));
    }
    let module = ours_module(args.module.clone(), &args.pin_env).map_err(BenchError::Usage)?;
    let pin = std::env::var(&args.pin_env)
        .map_err(|_| BenchError::Usage(format!("${} (the PIN) is not set", args.pin_env)))?;
    let mut m = pkcs11::Module::open(
        &module,
        cryptoki::types::AuthPin::from(pin),
        args.token.as_deref(),
    )?;
    eprintln!("{}", m.description());
    let heartbeat = measure::Heartbeat::new();
    let begun = std::time::Instant::now();
    let outcome = m.fill_keys(args.count, args.sessions, &heartbeat);
    let secs = begun.elapsed().as_secs_f64();
    let made = m.filled();
    // For scripts: one line, key=value.
    println!(
        "keys={made} seconds={secs:.3} per_second={:.0} sessions={}",
        made as f64 / secs.max(1e-9),
        args.sessions
    );
    outcome.map_err(|e| BenchError::Module(format!("after {made} keys: {e}")))
}

fn abuse_cmd(args: &AbuseArgs) -> Result<()> {
    let module = ours_module(args.module.clone(), &args.pin_env).map_err(BenchError::Usage)?;
    let pin = std::env::var(&args.pin_env)
        .map_err(|_| BenchError::Usage(format!("${} (the PIN) is not set", args.pin_env)))?;
    let conf = std::env::var_os(columns::CONF_ENV)
        .map(PathBuf::from)
        .ok_or_else(|| BenchError::Usage(format!("${} is not set", columns::CONF_ENV)))?;
    if !args.seconds.is_finite() || args.seconds <= 0.0 || args.sessions == 0 {
        return Err(BenchError::Usage(
            "--seconds and --sessions must be positive".into(),
        ));
    }
    let md = abuse::run(&abuse::Spec {
        module,
        pin,
        conf,
        sessions: args.sessions,
        seconds: args.seconds,
        node_pids: args.node_pids.clone(),
        out: args.out.clone(),
    })?;
    println!("{md}");
    Ok(())
}

fn failover_cmd(args: &FailoverArgs) -> Result<()> {
    let module = ours_module(args.module.clone(), &args.pin_env).map_err(BenchError::Usage)?;
    let pin = std::env::var(&args.pin_env)
        .map_err(|_| BenchError::Usage(format!("${} (the PIN) is not set", args.pin_env)))?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(io("find hsm-bench's directory"))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let spec = failover::Spec {
        module,
        pin,
        cluster_dir: args.cluster_dir.clone(),
        hsmctl: bin_dir.join("hsmctl"),
        daemon: bin_dir.join("hsm-daemon"),
        sessions: args.sessions,
        seconds: args.seconds,
        kill_at: args.kill_at,
        restart_at: args.restart_at,
        out: args.out.clone(),
        font: args.font.clone(),
    };
    let s = failover::run(&spec)?;
    let spread: Vec<String> = s.spread().iter().map(|(n, r)| format!("{n} {r}")).collect();
    println!(
        "failover: requests per node while signing steadily: {}",
        spread.join(", ")
    );
    println!(
        "failover: {} signatures, {} failed; steady {:.0}/s; longest stall {:.0} ms; below half \
         the steady rate for at most {} ms (target: at most 2000 ms): {}; chart {}",
        s.ops(),
        s.failed(),
        s.steady(),
        s.stall_ms(),
        s.below_half_ms(),
        if s.met() { "met" } else { "NOT met" },
        args.out.join("failover.png").display()
    );
    Ok(())
}

fn worker_cmd(args: &WorkerArgs) -> Result<()> {
    let plan: Plan = serde_json::from_str(&args.plan).map_err(|source| BenchError::Json {
        what: "decode the plan".into(),
        source,
    })?;
    let backend = match (&args.module, &args.pin_env) {
        (Some(module), Some(pin_env)) => worker::BackendSpec::Module {
            path: module.clone(),
            pin_env: pin_env.clone(),
            token: args.token.clone(),
        },
        (None, _) if args.target == "limit" => worker::BackendSpec::Limit,
        _ => {
            return Err(BenchError::Usage(
                "worker needs --module and --pin-env".into(),
            ));
        }
    };
    worker::run(
        &args.target,
        &args.column,
        args.nodes,
        &args.node_pids,
        &backend,
        &plan,
        &args.results,
    )
}
