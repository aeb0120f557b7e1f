//! The markdown table, the targets of issue 5 under it, and the notes that explain "n/a".

use crate::ops::{Op, thousands};
use crate::results::{Outcome, TargetResults};
use std::fmt::Write as _;

/// One column: a target name and its results.
#[derive(Debug)]
pub struct Column {
    /// `limit`, `softhsm`, `ours`.
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

    let ours = find(columns, "ours");
    let softhsm = find(columns, "softhsm");
    let limit = find(columns, "limit");
    let mut header = String::from("| operation | sessions |");
    let mut rule = String::from("|---|---:|");
    for c in columns {
        let _ = write!(header, " {} |", c.header);
        rule.push_str("---:|");
    }
    if ours.is_some() {
        if let Some(s) = softhsm {
            let _ = write!(header, " ours/{} |", s.header);
            rule.push_str("---:|");
        }
        if let Some(l) = limit {
            let _ = write!(header, " ours/{} |", l.header);
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
        if let Some(o) = ours {
            let ours_rate = o
                .results
                .outcome(&id, sessions)
                .and_then(Outcome::ops_per_sec);
            if let Some(s) = softhsm {
                let r = s
                    .results
                    .outcome(&id, sessions)
                    .and_then(Outcome::ops_per_sec);
                let _ = write!(line, " {} |", ratio(ours_rate, r));
            }
            if let Some(l) = limit {
                let r = l
                    .results
                    .outcome(&id, sessions)
                    .and_then(Outcome::ops_per_sec);
                let _ = write!(line, " {} |", ratio(ours_rate, r));
            }
        }
        let _ = writeln!(md, "{line}");
    }

    md.push_str(&targets(columns));
    md.push_str(&notes(columns));
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

/// The targets of issue 5 (on this 2-core machine), measured against this run.
fn targets(columns: &[Column]) -> String {
    let ours = find(columns, "ours");
    let softhsm = find(columns, "softhsm");
    let limit = find(columns, "limit");
    let mut md = String::from(
        "\n## Targets (issue 5)\n\n| target | goal | measured (ours) | result |\n|---|---:|---:|---|\n",
    );
    let mut row = |name: &str, goal: String, measured: Option<String>, result: String| {
        let _ = writeln!(
            md,
            "| {name} | {goal} | {} | {result} |",
            measured.unwrap_or_else(|| "—".into())
        );
    };

    // Throughput targets at 16 sessions.
    let throughput = [
        (
            Op::Rsa2048Sign,
            "RSA-2048 sign, 16 sessions ≥ 0.9 × limit (best)",
            best(limit, Op::Rsa2048Sign).map(|l| (0.9 * l, "0.9 × limit")),
            5300.0,
        ),
        (
            Op::P256Sign,
            "P-256 sign, 16 sessions ≥ 2 × SoftHSMv2 (best)",
            best(softhsm, Op::P256Sign).map(|s| (2.0 * s, "2 × SoftHSMv2")),
            48_000.0,
        ),
        (
            Op::AesGcm1K,
            "AES-GCM 1 KiB, 16 sessions > SoftHSMv2 (best)",
            best(softhsm, Op::AesGcm1K).map(|s| (s, "SoftHSMv2 best")),
            100_000.0,
        ),
    ];
    for (op, name, goal, fallback) in throughput {
        let (goal, how) = goal.unwrap_or((fallback, "issue's reference"));
        let goal_text = format!("{}/s ({how})", rate(goal));
        match at_most(ours, op, 16) {
            Some((sessions, outcome)) => {
                let m = outcome.ops_per_sec().unwrap_or_default();
                let note = if sessions == 16 {
                    String::new()
                } else {
                    format!(" (at {sessions} sessions)")
                };
                row(
                    name,
                    goal_text,
                    Some(format!("{}/s{note}", rate(m))),
                    verdict(m, goal, true),
                );
            }
            None => row(name, goal_text, None, "not measured".into()),
        }
    }

    // Added latency at 1 session.
    for op in [Op::P256Sign, Op::Rsa2048Sign, Op::AesGcm1K] {
        let name = format!(
            "{}: added p50 latency vs in-process (1 session) ≤ 60 µs",
            op.short_title()
        );
        match (p50_at_1(ours, op), p50_at_1(limit, op)) {
            (Some(o), Some(l)) => row(
                &name,
                "60 µs".into(),
                Some(format!(
                    "{} ({} − {})",
                    latency(o - l),
                    latency(o),
                    latency(l)
                )),
                verdict(o - l, 60.0, false),
            ),
            _ => row(&name, "60 µs".into(), None, "not measured".into()),
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
