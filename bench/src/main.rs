//! `hsm-bench`: measures any PKCS#11 module (ours, SoftHSMv2) and the raw crypto library on
//! the same operations, and writes a markdown table and a PNG chart side by side.
//!
//! Each column runs in its own child process (`hsm-bench worker`), so a module that crashes
//! or hangs costs its own column only, and the SoftHSMv2 child gets its `SOFTHSM2_CONF`
//! without touching this process's environment.
#![forbid(unsafe_code)]

mod chart;
mod error;
mod limit;
mod measure;
mod ops;
mod pkcs11;
mod report;
mod results;
mod softhsm;
mod worker;

use clap::{Args, Parser, Subcommand};
use error::{BenchError, Result, io};
use ops::Op;
use report::Column;
use results::{Cell, Line, Outcome};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use worker::Plan;

/// The columns, in table order.
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
    /// Print a free TCP port on 127.0.0.1 (for scripts).
    FreePort,
    /// Measure one column (started by hsm-bench itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Columns to measure: limit, softhsm, ours.
    #[arg(long, value_delimiter = ',', default_value = "limit,softhsm,ours")]
    targets: Vec<String>,
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
    /// PKCS#11 module works here.
    #[arg(long)]
    ours_module: Option<PathBuf>,
    /// The environment variable holding the PIN for --ours-module (never a flag, so it does
    /// not show in `ps`).
    #[arg(long, default_value = "HSM_PIN")]
    ours_pin_env: String,
    /// Use the token with this label in --ours-module [default: the first initialized one].
    #[arg(long)]
    ours_token: Option<String>,
    /// Column header for --ours-module.
    #[arg(long, default_value = "ours (1 node)")]
    ours_label: String,
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
    #[arg(long)]
    plan: String,
    #[arg(long)]
    results: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Cmd::Report(args)) => report_cmd(&args.out, args.font.as_deref()),
        Some(Cmd::FreePort) => free_port(),
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

fn free_port() -> Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("bind 127.0.0.1:0"))?;
    let port = listener.local_addr().map_err(io("local address"))?.port();
    println!("{port}");
    Ok(())
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

/// The default column header of a target.
fn header(target: &str, ours_label: &str) -> String {
    match target {
        "limit" => "limit".into(),
        "softhsm" => "SoftHSMv2".into(),
        _ => ours_label.into(),
    }
}

fn run(args: &RunArgs) -> Result<()> {
    let plan = plan_of(args)?;
    for t in &args.targets {
        if !TARGETS.contains(&t.as_str()) {
            return Err(BenchError::Usage(format!(
                "unknown target {t:?}; known: {}",
                TARGETS.join(", ")
            )));
        }
    }
    std::fs::create_dir_all(&args.out).map_err(io(format!("create {}", args.out.display())))?;
    let plan_json = serde_json::to_string(&plan).map_err(|source| BenchError::Json {
        what: "encode the plan".into(),
        source,
    })?;
    let exe = std::env::current_exe().map_err(io("locate hsm-bench itself"))?;
    for target in TARGETS
        .iter()
        .filter(|t| args.targets.iter().any(|a| a == *t))
    {
        let results = results::path_for(&args.out, target);
        let column = header(target, &args.ours_label);
        eprintln!("== {column} ==");
        let mut cmd = Command::new(&exe);
        cmd.arg("worker")
            .args([
                "--target", target, "--column", &column, "--plan", &plan_json,
            ])
            .arg("--results")
            .arg(&results);
        // Keeps the SoftHSMv2 token directory alive until its worker is done.
        let mut _token = None;
        let prepared: Result<()> = match *target {
            "limit" => Ok(()),
            "softhsm" => softhsm::Token::create(&args.softhsm_module).map(|token| {
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
            _ => ours_module(args).map(|module| {
                cmd.arg("--module")
                    .arg(module)
                    .args(["--pin-env", &args.ours_pin_env]);
                if let Some(t) = &args.ours_token {
                    cmd.args(["--token", t]);
                }
            }),
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
            eprintln!("hsm-bench: {column}: {reason}");
            mark_missing(&results, &plan, &reason)?;
        }
    }
    let columns = load_columns(&args.out, &args.targets)?;
    render(&args.out, &columns, args.font.as_deref())
}

fn ours_module(args: &RunArgs) -> Result<PathBuf> {
    let module = args
        .ours_module
        .clone()
        .or_else(|| std::env::var_os("HSM_PKCS11_MODULE").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/release/libhsm_pkcs11.so"));
    if !module.is_file() {
        return Err(BenchError::Usage(format!(
            "{} does not exist (build it, or pass --ours-module)",
            module.display()
        )));
    }
    if std::env::var_os(&args.ours_pin_env).is_none() {
        return Err(BenchError::Usage(format!(
            "${} is not set: it holds the PIN (user:password) for {}",
            args.ours_pin_env,
            module.display()
        )));
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

fn load_columns(out: &Path, targets: &[String]) -> Result<Vec<Column>> {
    let mut columns = Vec::new();
    for target in TARGETS.iter().filter(|t| targets.iter().any(|a| a == *t)) {
        let path = results::path_for(out, target);
        if !path.is_file() {
            continue;
        }
        let results = results::load(&path)?;
        let header = results
            .meta
            .as_ref()
            .map_or_else(|| header(target, "ours"), |m| m.column.clone());
        columns.push(Column {
            target: (*target).to_string(),
            header,
            results,
        });
    }
    Ok(columns)
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
    let targets: Vec<String> = TARGETS.iter().map(|t| (*t).to_string()).collect();
    let columns = load_columns(out, &targets)?;
    if columns.is_empty() {
        return Err(BenchError::Usage(format!(
            "no results files (*.jsonl) in {}",
            out.display()
        )));
    }
    render(out, &columns, font)
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
    worker::run(&args.target, &args.column, &backend, &plan, &args.results)
}
