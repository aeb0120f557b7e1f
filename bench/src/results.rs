//! The results files: one JSON object per line, `<out>/<target>.jsonl`, written as cells finish
//! so that a worker that dies still leaves everything it measured.

use crate::error::{BenchError, Result, io};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One line of a results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    /// What was measured, where and when (first line).
    Meta(Meta),
    /// One operation at one session count.
    Cell(Cell),
    /// The worker finished (last line).
    Done {
        /// /proc/loadavg at the end.
        loadavg: String,
    },
    /// The worker stopped early and why.
    Stop {
        /// Why.
        reason: String,
    },
}

/// The header of a results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// `limit`, `softhsm`, `ours`.
    pub target: String,
    /// The column header.
    pub column: String,
    /// Library and token description (for `limit`: the crypto library).
    pub description: String,
    /// UTC start time, `YYYY-MM-DD HH:MM`.
    pub started: String,
    /// Measured window per cell, seconds.
    pub window_s: f64,
    /// Warm-up per cell, seconds.
    pub warmup_s: f64,
    /// Online CPUs.
    pub cpus: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// /proc/loadavg when the worker started.
    pub loadavg: String,
    /// Nodes in the measured cluster (ours), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
}

/// One cell of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// [`crate::ops::Op::id`].
    pub op: String,
    /// Concurrent sessions (threads).
    pub sessions: usize,
    /// The result.
    pub outcome: Outcome,
}

/// What a cell shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Numbers.
    Measured {
        /// Operations inside the window.
        ops: u64,
        /// Throughput over all sessions.
        ops_per_sec: f64,
        /// Median latency.
        p50_us: f64,
        /// 99th percentile latency.
        p99_us: f64,
        /// Mean latency.
        mean_us: f64,
        /// Context switches per operation in the client process (the benchmark with the
        /// module in it), during the window.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_switches: Option<f64>,
        /// Context switches per operation in the node processes, when their ids were given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node_switches: Option<f64>,
    },
    /// The module does not offer the mechanism or key size ("n/a").
    NotApplicable {
        /// The missing mechanism or the `CKR_*` that said so.
        reason: String,
    },
    /// The operation or its setup failed.
    Failed {
        /// `CKR_*` or description.
        error: String,
    },
    /// Never ran (the worker stopped before).
    NotRun {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// Throughput, when measured.
    pub fn ops_per_sec(&self) -> Option<f64> {
        match self {
            Outcome::Measured { ops_per_sec, .. } => Some(*ops_per_sec),
            _ => None,
        }
    }

    /// Context switches per operation (client, node), when counted.
    pub fn switches(&self) -> Option<(f64, Option<f64>)> {
        match self {
            Outcome::Measured {
                client_switches: Some(c),
                node_switches,
                ..
            } => Some((*c, *node_switches)),
            _ => None,
        }
    }

    /// Median latency, when measured.
    pub fn p50_us(&self) -> Option<f64> {
        match self {
            Outcome::Measured { p50_us, .. } => Some(*p50_us),
            _ => None,
        }
    }
}

/// Appends lines to a results file, one flushed line at a time; shared between the worker's
/// main thread and its watchdog.
#[derive(Debug)]
pub struct Writer {
    file: Mutex<File>,
    path: PathBuf,
}

impl Writer {
    /// Creates (truncates) the file.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path) -> Result<Writer> {
        let file = File::create(path).map_err(io(format!("create {}", path.display())))?;
        Ok(Writer {
            file: Mutex::new(file),
            path: path.to_path_buf(),
        })
    }

    /// Opens the file for appending.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn append(path: &Path) -> Result<Writer> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(io(format!("open {}", path.display())))?;
        Ok(Writer {
            file: Mutex::new(file),
            path: path.to_path_buf(),
        })
    }

    /// Writes one line.
    ///
    /// # Errors
    /// Serialization or the write failed.
    pub fn write(&self, line: &Line) -> Result<()> {
        let mut text = serde_json::to_string(line).map_err(|source| BenchError::Json {
            what: format!("encode a line for {}", self.path.display()),
            source,
        })?;
        text.push('\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| BenchError::Usage("results writer poisoned".into()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .map_err(io(format!("write {}", self.path.display())))
    }
}

/// Everything one results file holds.
#[derive(Clone, Debug, Default)]
pub struct TargetResults {
    /// The header, if the worker got that far.
    pub meta: Option<Meta>,
    /// The cells in file order (a later cell for the same op and sessions wins).
    pub cells: Vec<Cell>,
    /// Why the worker stopped early, if it did.
    pub stopped: Option<String>,
    /// /proc/loadavg when the worker finished.
    pub loadavg_end: Option<String>,
}

impl TargetResults {
    /// The outcome of one cell.
    pub fn outcome(&self, op: &str, sessions: usize) -> Option<&Outcome> {
        self.cells
            .iter()
            .rev()
            .find(|c| c.op == op && c.sessions == sessions)
            .map(|c| &c.outcome)
    }
}

/// Reads a results file; a line that does not parse (e.g. cut short by a crash) is skipped.
///
/// # Errors
/// The file cannot be read.
pub fn load(path: &Path) -> Result<TargetResults> {
    let file = File::open(path).map_err(io(format!("open {}", path.display())))?;
    let mut out = TargetResults::default();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io(format!("read {}", path.display())))?;
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Meta(m)) => out.meta = Some(m),
            Ok(Line::Cell(c)) => out.cells.push(c),
            Ok(Line::Stop { reason }) => out.stopped = Some(reason),
            Ok(Line::Done { loadavg }) => out.loadavg_end = Some(loadavg),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// The results file of a target in an output directory.
pub fn path_for(out: &Path, target: &str) -> PathBuf {
    out.join(format!("{target}.jsonl"))
}
