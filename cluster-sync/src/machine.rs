//! The state machine side: the daemon's [`StateMachine`] adapted to openraft's
//! `RaftStateMachine`, with snapshots kept as files.
//!
//! A snapshot file is `MAGIC || meta length (u32 BE) || meta (postcard) || the state
//! machine's own stream`. The file is what travels to a follower (openraft sends it in
//! chunks), so the receiver gets the same bytes; meta and data live in one file, replaced by
//! one rename, so a crash never pairs a snapshot with another's metadata. The data is the
//! state machine's to define; the daemon writes only CDK-wrapped key blobs into it.

use crate::{Applied, Entry, Fault, LogId, NodeId, SnapshotMeta, StoredMembership, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use openraft::{StorageError, StorageIOError};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncSeekExt;

const MAGIC: &[u8; 8] = b"HSMSNAP1";
/// Metadata larger than this is refused when reading a snapshot file.
const MAX_META: u32 = 16 << 20;

/// The replicated state, as the daemon implements it.
///
/// Correctness rules each implementation keeps (openraft relies on them):
/// - `apply` is deterministic: the same entries in the same order give every node the same
///   state. It cannot refuse a committed entry: a command that is wrong for the current state
///   is answered with a refusal in its [`Applied`], not an error. An `Err` means the store
///   failed, and stops the node's consensus.
/// - `apply` writes the state changes, the last applied log id and the membership (for
///   membership entries) of the whole batch in one durable transaction, and returns exactly
///   one [`Applied`] per entry, blank and membership entries included.
/// - `write_snapshot` writes a consistent view (one read transaction) and returns the last
///   applied log id and membership of exactly that view; it may run while `apply` runs.
/// - `install_snapshot` replaces the whole state with the snapshot's, atomically, and sets
///   the last applied log id and membership to the snapshot's.
pub trait StateMachine: Send + Sync + 'static {
    /// The last applied log id and the last membership.
    ///
    /// # Errors
    /// On a store fault.
    fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), Fault>;

    /// Applies committed entries.
    ///
    /// # Errors
    /// On a store fault only.
    fn apply(&self, entries: Vec<Entry>) -> Result<Vec<Applied>, Fault>;

    /// Writes the whole state to `out`.
    ///
    /// # Errors
    /// On a store or write fault.
    fn write_snapshot(
        &self,
        out: &mut dyn Write,
    ) -> Result<(Option<LogId>, StoredMembership), Fault>;

    /// Replaces the whole state with the one read from `input`.
    ///
    /// # Errors
    /// On a store fault or a damaged snapshot (then the state is unchanged).
    fn install_snapshot(&self, meta: &SnapshotMeta, input: &mut dyn Read) -> Result<(), Fault>;
}

type RaftResult<T> = std::result::Result<T, StorageError<NodeId>>;

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        ErrorVerb::Write,
        AnyError::error(e.to_string()),
    )
    .into()
}

async fn blocking<T: Send + 'static>(
    verb: ErrorVerb,
    f: impl FnOnce() -> std::result::Result<T, Fault> + Send + 'static,
) -> RaftResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(fault)) => Err(sm_err(verb, fault)),
        Err(join) => Err(sm_err(verb, format!("state machine task failed: {join}"))),
    }
}

fn fault(what: &str, path: &Path, e: impl std::fmt::Display) -> Fault {
    Fault(format!("{what} {}: {e}", path.display()))
}

/// Reads a snapshot file's header; leaves `r` at the start of the state machine's data.
///
/// # Errors
/// If the file is not a snapshot file.
pub fn read_header(r: &mut dyn Read) -> std::result::Result<SnapshotMeta, Fault> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|e| Fault(format!("snapshot header: {e}")))?;
    if &magic != MAGIC {
        return Err(Fault("not a snapshot file".into()));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| Fault(format!("snapshot header: {e}")))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_META {
        return Err(Fault(format!("snapshot metadata of {len} bytes")));
    }
    let mut meta = vec![0u8; len as usize];
    r.read_exact(&mut meta)
        .map_err(|e| Fault(format!("snapshot header: {e}")))?;
    postcard::from_bytes(&meta).map_err(|e| Fault(format!("snapshot metadata: {e}")))
}

fn write_header(w: &mut dyn Write, meta: &SnapshotMeta) -> std::result::Result<(), Fault> {
    let bytes = postcard::to_allocvec(meta).map_err(|e| Fault(format!("snapshot meta: {e}")))?;
    let len = u32::try_from(bytes.len()).map_err(|_| Fault("snapshot meta too large".into()))?;
    w.write_all(MAGIC)
        .and_then(|()| w.write_all(&len.to_be_bytes()))
        .and_then(|()| w.write_all(&bytes))
        .map_err(|e| Fault(format!("snapshot header: {e}")))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// openraft's state machine over the daemon's [`StateMachine`], with snapshot files in a
/// directory of their own.
#[derive(Clone)]
pub struct SnapshotStore {
    machine: Arc<dyn StateMachine>,
    dir: PathBuf,
    incoming: Arc<Mutex<Option<PathBuf>>>,
    counter: Arc<AtomicU64>,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SnapshotStore {
    /// Adapts `machine`; snapshots live in `dir` (created if missing, stale temporaries
    /// removed).
    ///
    /// # Errors
    /// If the directory cannot be made.
    pub fn new(
        machine: Arc<dyn StateMachine>,
        dir: PathBuf,
    ) -> std::result::Result<SnapshotStore, Fault> {
        std::fs::create_dir_all(&dir).map_err(|e| fault("create", &dir, e))?;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(SnapshotStore {
            machine,
            dir,
            incoming: Arc::new(Mutex::new(None)),
            counter: Arc::new(AtomicU64::new(0)),
        })
    }

    fn current_path(&self) -> PathBuf {
        self.dir.join("current.snap")
    }

    fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{what}-{}-{n}.tmp", std::process::id()))
    }

    /// The metadata of the current snapshot, if there is one.
    ///
    /// # Errors
    /// If the file exists but cannot be read.
    pub fn current_meta(&self) -> std::result::Result<Option<SnapshotMeta>, Fault> {
        let path = self.current_path();
        match std::fs::File::open(&path) {
            Ok(f) => read_header(&mut BufReader::new(f)).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fault("open", &path, e)),
        }
    }

    fn build_blocking(&self) -> std::result::Result<SnapshotMeta, Fault> {
        let tmp = self.temp_path("build");
        let data_tmp = self.temp_path("data");
        // The state machine decides the log id the view reflects, so the data goes first and
        // the header (which names that id) is put in front of it afterwards.
        let (last, membership) = {
            let f = std::fs::File::create(&data_tmp).map_err(|e| fault("create", &data_tmp, e))?;
            let mut w = BufWriter::new(f);
            let state = self.machine.write_snapshot(&mut w)?;
            w.flush().map_err(|e| fault("write", &data_tmp, e))?;
            state
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let snapshot_id = match &last {
            Some(l) => format!("{}-{}-{nanos:x}", l.leader_id, l.index),
            None => format!("empty-{nanos:x}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id,
        };
        {
            let f = std::fs::File::create(&tmp).map_err(|e| fault("create", &tmp, e))?;
            let mut w = BufWriter::new(f);
            write_header(&mut w, &meta)?;
            let mut data =
                std::fs::File::open(&data_tmp).map_err(|e| fault("open", &data_tmp, e))?;
            std::io::copy(&mut data, &mut w).map_err(|e| fault("write", &tmp, e))?;
            let f = w
                .into_inner()
                .map_err(|e| fault("write", &tmp, e.error()))?;
            f.sync_all().map_err(|e| fault("sync", &tmp, e))?;
        }
        let _ = std::fs::remove_file(&data_tmp);
        std::fs::rename(&tmp, self.current_path()).map_err(|e| fault("rename", &tmp, e))?;
        sync_dir(&self.dir);
        Ok(meta)
    }

    async fn open_current(&self) -> RaftResult<Option<Snapshot<TypeConfig>>> {
        let this = self.clone();
        let meta = blocking(ErrorVerb::Read, move || this.current_meta()).await?;
        let Some(meta) = meta else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(self.current_path())
            .await
            .map_err(snap_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotStore {
    async fn build_snapshot(&mut self) -> RaftResult<Snapshot<TypeConfig>> {
        let this = self.clone();
        let meta = blocking(ErrorVerb::Write, move || this.build_blocking()).await?;
        tracing::info!(
            "snapshot {} built (last log {:?})",
            meta.snapshot_id,
            meta.last_log_id.map(|l| l.index)
        );
        let file = tokio::fs::File::open(self.current_path())
            .await
            .map_err(snap_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SnapshotStore {
    type SnapshotBuilder = SnapshotStore;

    async fn applied_state(&mut self) -> RaftResult<(Option<LogId>, StoredMembership)> {
        let machine = self.machine.clone();
        blocking(ErrorVerb::Read, move || machine.applied_state()).await
    }

    async fn apply<I>(&mut self, entries: I) -> RaftResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let n = entries.len();
        let machine = self.machine.clone();
        let out = blocking(ErrorVerb::Write, move || machine.apply(entries)).await?;
        if out.len() != n {
            return Err(sm_err(
                ErrorVerb::Write,
                format!("the state machine answered {} of {n} entries", out.len()),
            ));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> RaftResult<Box<tokio::fs::File>> {
        let path = self.temp_path("incoming");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(snap_err)?;
        let old = self
            .incoming
            .lock()
            .map_err(|_| snap_err("lock poisoned"))?
            .replace(path);
        if let Some(old) = old {
            let _ = tokio::fs::remove_file(old).await;
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<tokio::fs::File>,
    ) -> RaftResult<()> {
        use tokio::io::AsyncWriteExt;
        snapshot.flush().await.map_err(snap_err)?;
        snapshot.sync_all().await.map_err(snap_err)?;
        snapshot
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(snap_err)?;
        let std_file = snapshot.into_std().await;
        let incoming = self
            .incoming
            .lock()
            .map_err(|_| snap_err("lock poisoned"))?
            .take();
        let this = self.clone();
        let meta = meta.clone();
        blocking(ErrorVerb::Write, move || {
            // Keep our own copy as the current snapshot (whatever handle we were given), then
            // install from that copy.
            let tmp = this.temp_path("install");
            {
                let mut src = std_file;
                let mut out = std::fs::File::create(&tmp).map_err(|e| fault("create", &tmp, e))?;
                std::io::copy(&mut src, &mut out).map_err(|e| fault("write", &tmp, e))?;
                out.sync_all().map_err(|e| fault("sync", &tmp, e))?;
            }
            if let Some(path) = incoming {
                let _ = std::fs::remove_file(path);
            }
            let f = std::fs::File::open(&tmp).map_err(|e| fault("open", &tmp, e))?;
            let mut r = BufReader::new(f);
            let header = read_header(&mut r)?;
            if header.snapshot_id != meta.snapshot_id || header.last_log_id != meta.last_log_id {
                let _ = std::fs::remove_file(&tmp);
                return Err(Fault(format!(
                    "snapshot file {} does not match the announced snapshot {}",
                    header.snapshot_id, meta.snapshot_id
                )));
            }
            this.machine.install_snapshot(&meta, &mut r)?;
            std::fs::rename(&tmp, this.current_path()).map_err(|e| fault("rename", &tmp, e))?;
            sync_dir(&this.dir);
            tracing::info!(
                "snapshot {} installed (last log {:?})",
                meta.snapshot_id,
                meta.last_log_id.map(|l| l.index)
            );
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> RaftResult<Option<Snapshot<TypeConfig>>> {
        self.open_current().await
    }
}

/// The header writer, for the unit tests.
#[cfg(test)]
pub(crate) fn write_header_for_tests(out: &mut Vec<u8>, meta: &SnapshotMeta) {
    write_header(out, meta).expect("header");
}
