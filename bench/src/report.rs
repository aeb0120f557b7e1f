//! The markdown table, context switches per operation, the targets of issues 9 and 8 under
//! it, and the notes that explain "n/a".

use crate::columns::{nodes_text, ours_index};
use crate::ops::{Op, thousands};
use crate::results::{Outcome, TargetResults};
use std::fmt::Write as _;

/// One column: a target name and its results.
#[derive(Debug)]
pub struct Column {
    /// `limit`, `softhsm`, `ours`, `ours2`, …
    pub target: String,
    /// The header text.
    pub header: String,
    /// What was measured.
    pub results: TargetResults,
}

/// The table's rows: every (operation, sessions) any column has, in catalogue order.
pub fn rows(columns: &[Column]) -> Vec<(Op, usize)> {
    let mut rows: Vec<(Op, usize)> = columns
        .iter()
        .flat_map(|c| c.results.cells.iter())
        .filter_map(|cell| Op::parse(&cell.op).map(|op| (op, cell.sessions)))
        .collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// 12345.6 → "12,346"; 42.37 → "42.4"; 0.4 → "0.40".
pub fn rate(ops_per_sec: f64) -> String {
    if ops_per_sec >= 100.0 {
        thousands(ops_per_sec.round() as u64)
    } else if ops_per_sec >= 1.0 {
        format!("{ops_per_sec:.1}")
    } else {
        format!("{ops_per_sec:.2}")
    }
}

/// Microseconds in the unit that reads best.
pub fn latency(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.1} µs")
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

fn cell_text(outcome: Option<&Outcome>) -> String {
    match outcome {
        None => "—".into(),
        Some(Outcome::Measured {
            ops_per_sec,
            p50_us,
            p99_us,
            ..
        }) => format!(
            "{}/s · {} · {}",
            rate(*ops_per_sec),
            latency(*p50_us),
            latency(*p99_us)
        ),
        Some(Outcome::NotApplicable { .. }) => "n/a".into(),
        Some(Outcome::Failed { error }) => format!("error: {}", short(error)),
        Some(Outcome::NotRun { .. }) => "not run".into(),
    }
}

/// Error text short enough for a cell; the notes give the full text.
fn short(error: &str) -> String {
    let first = error.split(':').next_back().unwrap_or(error).trim();
    first.chars().take(40).collect()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => {
            let r = a / b;
            if r >= 100.0 {
                format!("{}×", thousands(r.round() as u64))
            } else if r >= 10.0 {
                format!("{r:.1}×")
            } else if r >= 0.1 {
                format!("{r:.2}×")
            } else {
                format!("{r:.3}×")
            }
        }
        _ => "—".into(),
    }
}

fn find<'a>(columns: &'a [Column], target: &str) -> Option<&'a Column> {
    columns.iter().find(|c| c.target == target)
}

impl Column {
    /// Whether this is one of our module's columns.
    pub fn is_ours(&self) -> bool {
        ours_index(&self.target).is_some()
    }

    /// Nodes in its cluster, when recorded.
    pub fn nodes(&self) -> Option<usize> {
        self.results.meta.as_ref().and_then(|m| m.nodes)
    }

    /// "3 nodes" when the node count is known, else the header.
    fn short(&self) -> String {
        self.nodes().map_or_else(|| self.header.clone(), nodes_text)
    }
}

/// What each ours column is for in the ratios and targets.
struct Roles<'a> {
    /// The column the ours/SoftHSMv2 and ours/limit ratios and the issue-5 targets use: the
    /// first 1-node column, else the first ours column.
    primary: Option<&'a Column>,
    /// The first 1-node column, the reference of the replicated columns.
    baseline: Option<&'a Column>,
    /// Every other ours column, each with a ratio column against `primary`.
    others: Vec<&'a Column>,
    /// The ours columns of clusters with 2 nodes or more (the issue-8 targets).
    replicated: Vec<&'a Column>,
}

fn roles(columns: &[Column]) -> Roles<'_> {
    let ours: Vec<&Column> = columns.iter().filter(|c| c.is_ours()).collect();
    let baseline = ours.iter().copied().find(|c| c.nodes() == Some(1));
    let primary = baseline.or_else(|| ours.first().copied());
    let others = ours
        .iter()
        .copied()
        .filter(|c| primary.is_none_or(|p| p.target != c.target))
        .collect();
    let replicated = ours
        .iter()
        .copied()
        .filter(|c| c.nodes().is_some_and(|n| n >= 2))
        .collect();
    Roles {
        primary,
        baseline,
        others,
        replicated,
    }
}

/// The header of a ratio column: "3 nodes / 1 node".
fn ratio_header(of: &Column, to: &Column) -> String {
    format!("{} / {}", of.short(), to.short())
}

fn rate_of(column: &Column, id: &str, sessions: usize) -> Option<f64> {
    column
        .results
        .outcome(id, sessions)
        .and_then(Outcome::ops_per_sec)
}

/// The full markdown document: header, table, targets, notes.
pub fn markdown(columns: &[Column]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# hsm-bench results\n");
    if let Some(meta) = columns.iter().find_map(|c| c.results.meta.as_ref()) {
        let _ = writeln!(
            md,
            "Run {} UTC on {} ({} CPUs); per cell {} s warm-up then {} s measured.\n",
            meta.started, meta.cpu_model, meta.cpus, meta.warmup_s, meta.window_s
        );
    }
    for c in columns {
        match &c.results.meta {
            Some(m) => {
                let _ = writeln!(
                    md,
                    "- **{}**: {} (load average {} at start, {} at end)",
                    c.header,
                    m.description,
                    m.loadavg,
                    c.results.loadavg_end.as_deref().unwrap_or("?")
                );
            }
            None => {
                let _ = writeln!(md, "- **{}**: no results", c.header);
            }
        }
    }
    let _ = writeln!(
        md,
        "\nEach cell: throughput over all sessions · p50 · p99 latency per operation. \
         n/a: the module does not offer it (see notes).\n"
    );

    let roles = roles(columns);
    let ours = roles.primary;
    let softhsm = find(columns, "softhsm");
    let limit = find(columns, "limit");
    if let (Some(p), false) = (ours, roles.others.is_empty()) {
        let _ = writeln!(
            md,
            "Ratios of throughput (ops/s): `ours/…` is {}; `N nodes / 1 node` compares a \
             replicated cluster with it, cell by cell.\n",
            p.header
        );
    }
    let mut header = String::from("| operation | sessions |");
    let mut rule = String::from("|---|---:|");
    for c in columns {
        let _ = write!(header, " {} |", c.header);
        rule.push_str("---:|");
    }
    if let Some(p) = ours {
        if let Some(s) = softhsm {
            let _ = write!(header, " ours/{} |", s.header);
            rule.push_str("---:|");
        }
        if let Some(l) = limit {
            let _ = write!(header, " ours/{} |", l.header);
            rule.push_str("---:|");
        }
        for o in &roles.others {
            let _ = write!(header, " {} |", ratio_header(o, p));
            rule.push_str("---:|");
        }
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for (op, sessions) in rows(columns) {
        let id = op.id();
        let mut line = format!("| {} | {sessions} |", op.title());
        for c in columns {
            let _ = write!(line, " {} |", cell_text(c.results.outcome(&id, sessions)));
        }
        if let Some(p) = ours {
            let ours_rate = rate_of(p, &id, sessions);
            for reference in [softhsm, limit].into_iter().flatten() {
                let _ = write!(
                    line,
                    " {} |",
                    ratio(ours_rate, rate_of(reference, &id, sessions))
                );
            }
            for o in &roles.others {
                let _ = write!(line, " {} |", ratio(rate_of(o, &id, sessions), ours_rate));
            }
        }
        let _ = writeln!(md, "{line}");
    }

    md.push_str(&switches_table(columns));
    md.push_str(&targets(columns, roles.primary));
    for r in &roles.replicated {
        md.push_str(&replication_targets(columns, r, roles.baseline));
    }
    md.push_str(&notes(columns));
    md
}

/// Context switches per operation of each module column, where the worker counted them.
fn switches_table(columns: &[Column]) -> String {
    let counted: Vec<&Column> = columns
        .iter()
        .filter(|c| c.target != "limit")
        .filter(|c| {
            c.results
                .cells
                .iter()
                .any(|x| x.outcome.switches().is_some())
        })
        .collect();
    if counted.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "\n## Context switches per operation\n\nVoluntary and involuntary switches of every \
         thread during the window, divided by the operations completed: in the client process \
         (the benchmark with the module loaded) and, for our columns, in the node processes.\n\n\
         | operation | sessions |",
    );
    let mut rule = String::from("|---|---:|");
    for c in &counted {
        let _ = write!(md, " {} |", c.header);
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "\n{rule}");
    for (op, sessions) in rows(columns) {
        let id = op.id();
        let cells: Vec<String> = counted
            .iter()
            .map(
                |c| match c.results.outcome(&id, sessions).and_then(Outcome::switches) {
                    Some((client, Some(node))) => {
                        format!("{client:.1} + {node:.1} = {:.1}", client + node)
                    }
                    Some((client, None)) => format!("{client:.1}"),
                    None => "—".into(),
                },
            )
            .collect();
        if cells.iter().all(|c| c == "—") {
            continue;
        }
        let _ = writeln!(
            md,
            "| {} | {sessions} | {} |",
            op.title(),
            cells.join(" | ")
        );
    }
    md
}

/// A target's verdict.
fn verdict(measured: f64, goal: f64, higher_is_better: bool) -> String {
    if higher_is_better {
        if measured >= goal {
            format!("met (+{:.0}%)", (measured / goal - 1.0) * 100.0)
        } else {
            format!(
                "**missed** by {:.0}% (needs {:.2}×)",
                (1.0 - measured / goal) * 100.0,
                goal / measured.max(f64::MIN_POSITIVE)
            )
        }
    } else if measured <= goal {
        format!("met ({:.0}% of the budget)", measured / goal * 100.0)
    } else {
        format!(
            "**missed** by {} ({:.1}× the budget)",
            latency(measured - goal),
            measured / goal
        )
    }
}

fn best(column: Option<&Column>, op: Op) -> Option<f64> {
    column?
        .results
        .cells
        .iter()
        .filter(|c| c.op == op.id())
        .filter_map(|c| c.outcome.ops_per_sec())
        .reduce(f64::max)
}

/// The outcome at the largest session count measured up to `sessions`, with that count.
fn at_most(column: Option<&Column>, op: Op, sessions: usize) -> Option<(usize, &Outcome)> {
    column?
        .results
        .cells
        .iter()
        .filter(|c| c.op == op.id() && c.sessions <= sessions)
        .filter(|c| matches!(c.outcome, Outcome::Measured { .. }))
        .max_by_key(|c| c.sessions)
        .map(|c| (c.sessions, &c.outcome))
}

fn p50_at_1(column: Option<&Column>, op: Op) -> Option<f64> {
    column?
        .results
        .outcome(&op.id(), 1)
        .and_then(Outcome::p50_us)
}

/// The fast-path targets of issue 9 (on this 2-core machine, 1 node), with issue 5's search
/// and commit budgets, measured against this run, for `ours`.
fn targets(columns: &[Column], ours: Option<&Column>) -> String {
    let softhsm = find(columns, "softhsm");
    let limit = find(columns, "limit");
    let mut md = format!(
        "\n## Targets (issue 9)\n\n| target | goal | measured ({}) | result |\n|---|---:|---:|---|\n",
        ours.map_or("ours", |c| c.header.as_str())
    );
    let mut row = |name: &str, goal: String, measured: Option<String>, result: String| {
        let _ = writeln!(
            md,
            "| {name} | {goal} | {} | {result} |",
            measured.unwrap_or_else(|| "—".into())
        );
    };

    // Added latency at 1 session.
    for op in [Op::P256Sign, Op::Ed25519Sign, Op::Hmac1K, Op::AesGcm1K] {
        let name = format!(
            "{}: added p50 latency vs in-process (1 session) ≤ {}",
            op.short_title(),
            latency(ADDED_P50_US)
        );
        match (p50_at_1(ours, op), p50_at_1(limit, op)) {
            (Some(o), Some(l)) => row(
                &name,
                latency(ADDED_P50_US),
                Some(format!(
                    "{} ({} − {})",
                    latency(o - l),
                    latency(o),
                    latency(l)
                )),
                verdict(o - l, ADDED_P50_US, false),
            ),
            _ => row(&name, latency(ADDED_P50_US), None, "not measured".into()),
        }
    }

    // Throughput against a reference, at given session counts.
    let throughput: [(Op, &[usize], &str, Goal<'_>); 7] = [
        (
            Op::P256Sign,
            &[16],
            "P-256 sign, 16 sessions ≥ 2 × SoftHSMv2 (best)",
            best(softhsm, Op::P256Sign).map(|s| (2.0 * s, "2 × SoftHSMv2")),
        ),
        (
            Op::AesGcm1K,
            &[16],
            "AES-GCM 1 KiB, 16 sessions ≥ 1.5 × SoftHSMv2 (best)",
            best(softhsm, Op::AesGcm1K).map(|s| (1.5 * s, "1.5 × SoftHSMv2")),
        ),
        (
            Op::Hmac1K,
            &[16],
            "HMAC-SHA256 1 KiB, 16 sessions ≥ 1.5 × SoftHSMv2 (best)",
            best(softhsm, Op::Hmac1K).map(|s| (1.5 * s, "1.5 × SoftHSMv2")),
        ),
        (
            Op::Rsa2048Verify,
            &[16],
            "RSA-2048 verify, 16 sessions ≥ SoftHSMv2 (best)",
            best(softhsm, Op::Rsa2048Verify).map(|s| (s, "SoftHSMv2")),
        ),
        (
            Op::P256Verify,
            &[16],
            "P-256 verify, 16 sessions ≥ SoftHSMv2 (best)",
            best(softhsm, Op::P256Verify).map(|s| (s, "SoftHSMv2")),
        ),
        (
            Op::AesGcm1M,
            &[1, 16],
            "AES-GCM 1 MiB ≥ 2 × SoftHSMv2 (same sessions)",
            None,
        ),
        (
            Op::Rsa2048Sign,
            &[16],
            "RSA-2048 sign, 16 sessions ≥ 0.9 × limit (best)",
            best(limit, Op::Rsa2048Sign).map(|l| (0.9 * l, "0.9 × limit")),
        ),
    ];
    for (op, sessions_list, name, goal) in throughput {
        for &sessions in sessions_list {
            let name = if sessions_list.len() > 1 {
                format!(
                    "{name}, {sessions} session{}",
                    if sessions == 1 { "" } else { "s" }
                )
            } else {
                name.to_owned()
            };
            // Without a fixed reference the goal is 2 × SoftHSMv2 at the same session count.
            let goal = goal.or_else(|| {
                softhsm
                    .and_then(|s| rate_of(s, &op.id(), sessions))
                    .map(|s| (2.0 * s, "2 × SoftHSMv2"))
            });
            let Some((goal, how)) = goal else {
                row(
                    &name,
                    "—".into(),
                    None,
                    "not measured (no reference)".into(),
                );
                continue;
            };
            let goal_text = format!("{}/s ({how})", rate(goal));
            match ours.and_then(|o| rate_of(o, &op.id(), sessions)) {
                Some(m) => row(
                    &name,
                    goal_text,
                    Some(format!("{}/s", rate(m))),
                    verdict(m, goal, true),
                ),
                None => row(&name, goal_text, None, "not measured".into()),
            }
        }
    }

    // C_FindObjects among 100,000.
    let name = "C_FindObjects by label among 100,000 objects, p50 (1 session) ≤ 1 ms";
    match p50_at_1(ours, Op::Find(100_000)) {
        Some(p) => row(
            name,
            "1 ms".into(),
            Some(latency(p)),
            verdict(p, 1000.0, false),
        ),
        None => row(
            name,
            "1 ms".into(),
            None,
            "not measured (run with --large-find)".into(),
        ),
    }

    // Committed AES key creation.
    let name = "AES key creation, committed, p50 (1 session) ≤ 5 ms";
    match p50_at_1(ours, Op::AesCreate) {
        Some(p) => row(
            name,
            "5 ms".into(),
            Some(latency(p)),
            verdict(p, 5000.0, false),
        ),
        None => row(name, "5 ms".into(), None, "not measured".into()),
    }
    md
}

/// A throughput goal and how it was derived, when the run has its reference.
type Goal<'a> = Option<(f64, &'a str)>;

/// Issue 9's budget for the latency the module, the wire and the node add at 1 session.
const ADDED_P50_US: f64 = 40.0;

/// The signing rows the 3-node / 1-node target covers.
const SIGN_OPS: &[Op] = &[
    Op::Rsa2048Sign,
    Op::Rsa3072Sign,
    Op::P256Sign,
    Op::P384Sign,
    Op::Ed25519Sign,
];

/// The goals of issue 8 for a replicated cluster's column.
const COMMIT_P50_US: f64 = 3000.0;
const COMMIT_RATE: f64 = 3000.0;

/// The targets of issue 8 for the replicated column `r`: signing through it no slower than
/// through `baseline` (1 node), and committed AES key creation p50 and throughput.
fn replication_targets(columns: &[Column], r: &Column, baseline: Option<&Column>) -> String {
    let mut md = format!(
        "\n## Targets (issue 8): {}\n\n| target | goal | measured | result |\n|---|---:|---:|---|\n",
        r.header
    );
    let mut row = |name: &str, goal: &str, measured: Option<String>, result: String| {
        let _ = writeln!(
            md,
            "| {name} | {goal} | {} | {result} |",
            measured.unwrap_or_else(|| "—".into())
        );
    };
    let in_run = rows(columns);
    let signing: Vec<Op> = SIGN_OPS
        .iter()
        .copied()
        .filter(|op| in_run.iter().any(|(o, _)| o == op))
        .collect();
    let vs = baseline.map_or_else(|| "1 node".to_string(), |b| b.short());
    if signing.is_empty() {
        row(
            &format!("signing: {} / {vs} ≥ 1.0 (ops/s)", r.short()),
            "1.00×",
            None,
            "not measured (no signing row in this run)".into(),
        );
    }
    for op in signing {
        let name = format!(
            "{}: {} / {vs} ≥ 1.0 (ops/s, each session count)",
            op.short_title(),
            r.short()
        );
        let Some(b) = baseline else {
            row(
                &name,
                "1.00×",
                None,
                "not measured (no 1-node column)".into(),
            );
            continue;
        };
        let mut sessions: Vec<usize> = in_run
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, s)| *s)
            .collect();
        sessions.sort_unstable();
        let ratios: Vec<(usize, f64)> = sessions
            .into_iter()
            .filter_map(|s| {
                let (m, base) = (rate_of(r, &op.id(), s)?, rate_of(b, &op.id(), s)?);
                (base > 0.0).then(|| (s, m / base))
            })
            .collect();
        let worst = ratios.iter().map(|(_, q)| *q).reduce(f64::min);
        match worst {
            Some(worst) => {
                let text = ratios
                    .iter()
                    .map(|(s, q)| format!("{s}: {q:.2}×"))
                    .collect::<Vec<_>>()
                    .join(", ");
                row(&name, "1.00×", Some(text), verdict(worst, 1.0, true));
            }
            None => row(&name, "1.00×", None, "not measured".into()),
        }
    }

    let reference = |text: String, base: Option<String>| match base {
        Some(b) => format!("{text} ({vs}: {b})"),
        None => text,
    };
    let name = "AES-256 key, committed: p50 (1 session) ≤ 3 ms";
    match p50_at_1(Some(r), Op::AesCreate) {
        Some(p) => row(
            name,
            "3 ms",
            Some(reference(
                latency(p),
                p50_at_1(baseline, Op::AesCreate).map(latency),
            )),
            verdict(p, COMMIT_P50_US, false),
        ),
        None => row(name, "3 ms", None, "not measured".into()),
    }
    let name = "AES-256 key, committed: 16 sessions ≥ 3,000/s";
    match at_most(Some(r), Op::AesCreate, 16) {
        Some((sessions, outcome)) => {
            let m = outcome.ops_per_sec().unwrap_or_default();
            let note = if sessions == 16 {
                String::new()
            } else {
                format!(
                    " (at {sessions} session{})",
                    if sessions == 1 { "" } else { "s" }
                )
            };
            let base = baseline
                .and_then(|b| rate_of(b, &Op::AesCreate.id(), sessions))
                .map(|b| format!("{}/s", rate(b)));
            row(
                name,
                "3,000/s",
                Some(reference(format!("{}/s{note}", rate(m)), base)),
                verdict(m, COMMIT_RATE, true),
            );
        }
        None => row(name, "3,000/s", None, "not measured".into()),
    }
    md
}

/// Why cells are n/a, failed or not run.
fn notes(columns: &[Column]) -> String {
    let mut md = String::new();
    for c in columns {
        let mut seen: Vec<String> = Vec::new();
        for cell in &c.results.cells {
            let text = match &cell.outcome {
                Outcome::NotApplicable { reason } => format!("n/a: {reason}"),
                Outcome::Failed { error } => format!("error: {error}"),
                Outcome::NotRun { reason } => format!("not run: {reason}"),
                Outcome::Measured { .. } => continue,
            };
            let title = Op::parse(&cell.op).map_or_else(|| cell.op.clone(), Op::title);
            let line = format!("- {}, {title}: {text}", c.header);
            if !seen.contains(&line) {
                seen.push(line);
            }
        }
        if let Some(stop) = &c.results.stopped {
            seen.push(format!("- {}: the worker stopped early: {stop}", c.header));
        }
        md.extend(seen.into_iter().map(|l| l + "\n"));
    }
    if md.is_empty() {
        md
    } else {
        format!("\n## Notes\n\n{md}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Cell, Meta, TargetResults};

    fn column(
        target: &str,
        header: &str,
        nodes: Option<usize>,
        cells: &[(Op, usize, f64, f64)],
    ) -> Column {
        Column {
            target: target.into(),
            header: header.into(),
            results: TargetResults {
                meta: Some(Meta {
                    target: target.into(),
                    column: header.into(),
                    description: "test".into(),
                    started: "2026-01-01 00:00".into(),
                    window_s: 1.0,
                    warmup_s: 0.0,
                    cpus: 2,
                    cpu_model: "test".into(),
                    loadavg: "0 0 0".into(),
                    nodes,
                }),
                cells: cells
                    .iter()
                    .map(|&(op, sessions, ops_per_sec, p50_us)| Cell {
                        op: op.id(),
                        sessions,
                        outcome: Outcome::Measured {
                            ops: 1,
                            ops_per_sec,
                            p50_us,
                            p99_us: p50_us,
                            mean_us: p50_us,
                            client_switches: Some(2.0),
                            node_switches: None,
                        },
                    })
                    .collect(),
                stopped: None,
                loadavg_end: None,
            },
        }
    }

    #[test]
    fn three_nodes_against_one() {
        let one = column(
            "ours",
            "ours (1 node)",
            Some(1),
            &[
                (Op::P256Sign, 1, 8000.0, 120.0),
                (Op::P256Sign, 16, 40_000.0, 400.0),
                (Op::AesCreate, 1, 1500.0, 660.0),
                (Op::AesCreate, 16, 2800.0, 5600.0),
            ],
        );
        let three = column(
            "ours2",
            "ours (3 nodes)",
            Some(3),
            &[
                (Op::P256Sign, 1, 8400.0, 118.0),
                (Op::P256Sign, 16, 38_000.0, 410.0),
                (Op::AesCreate, 1, 400.0, 2500.0),
                (Op::AesCreate, 16, 3100.0, 5000.0),
            ],
        );
        let md = markdown(&[one, three]);
        assert!(
            md.contains("| ours (1 node) | ours (3 nodes) | 3 nodes / 1 node |"),
            "{md}"
        );
        assert!(
            md.contains("| P-256 sign (ECDSA, 32-byte digest) | 16 | "),
            "{md}"
        );
        assert!(md.contains(" 0.95× |"), "{md}");
        assert!(md.contains("## Targets (issue 9)"), "{md}");
        assert!(md.contains("measured (ours (1 node))"), "{md}");
        assert!(md.contains("## Targets (issue 8): ours (3 nodes)"), "{md}");
        assert!(md.contains("1: 1.05×, 16: 0.95×"), "{md}");
        assert!(md.contains("**missed** by 5%"), "{md}");
        assert!(md.contains("2.50 ms (1 node: 660 µs)"), "{md}");
        assert!(md.contains("3,100/s (1 node: 2,800/s)"), "{md}");

        // Only the 3-node column: issue 5 is measured on it, the ratios need a 1-node column.
        let three = column(
            "ours",
            "ours (3 nodes)",
            Some(3),
            &[(Op::P256Sign, 1, 8400.0, 118.0)],
        );
        let md = markdown(&[three]);
        assert!(md.contains("measured (ours (3 nodes))"), "{md}");
        assert!(md.contains("not measured (no 1-node column)"), "{md}");
    }

    #[test]
    fn formats() {
        assert_eq!(rate(12345.6), "12,346");
        assert_eq!(rate(42.37), "42.4");
        assert_eq!(latency(81.2), "81 µs");
        assert_eq!(latency(1234.0), "1.23 ms");
        assert_eq!(latency(3.25), "3.2 µs");
        assert!(verdict(110.0, 100.0, true).starts_with("met"));
        assert!(verdict(50.0, 100.0, true).contains("missed** by 50%"));
        assert!(verdict(900.0, 1000.0, false).starts_with("met"));
        assert!(verdict(2000.0, 1000.0, false).contains("2.0×"));
    }
}
