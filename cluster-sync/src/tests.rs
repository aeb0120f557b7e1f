//! The adapters against openraft's storage suite, over in-memory backends (pure logic; the
//! daemon runs the same suite over its real sealed redb store).

use crate::machine::read_header;
use crate::{
    Applied, Entry, Fault, LogBackend, LogId, LogStore, MetaKey, SnapshotMeta, SnapshotStore,
    StateMachine, StoredMembership, TypeConfig,
};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, StorageError};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct MemLog {
    meta: Mutex<BTreeMap<&'static str, Vec<u8>>>,
    log: Mutex<BTreeMap<u64, Vec<u8>>>,
}

impl LogBackend for MemLog {
    fn read_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, Fault> {
        Ok(self.meta.lock().unwrap().get(key.name()).cloned())
    }
    fn write_meta(&self, key: MetaKey, value: Vec<u8>) -> Result<(), Fault> {
        self.meta.lock().unwrap().insert(key.name(), value);
        Ok(())
    }
    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), Fault> {
        self.log.lock().unwrap().extend(entries);
        Ok(())
    }
    fn read_range(&self, start: u64, end: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Fault> {
        Ok(self
            .log
            .lock()
            .unwrap()
            .range(start..end)
            .take(limit)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }
    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, Fault> {
        Ok(self
            .log
            .lock()
            .unwrap()
            .last_key_value()
            .map(|(k, v)| (*k, v.clone())))
    }
    fn delete_from(&self, start: u64) -> Result<(), Fault> {
        self.log.lock().unwrap().retain(|k, _| *k < start);
        Ok(())
    }
    fn delete_through(&self, end: u64) -> Result<(), Fault> {
        self.log.lock().unwrap().retain(|k, _| *k > end);
        Ok(())
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize, Clone)]
struct MemState {
    applied: Option<LogId>,
    membership: StoredMembership,
    data: BTreeMap<u128, Vec<u8>>,
}

#[derive(Default)]
struct MemMachine(Mutex<MemState>);

impl StateMachine for MemMachine {
    fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), Fault> {
        let s = self.0.lock().unwrap();
        Ok((s.applied, s.membership.clone()))
    }
    fn apply(&self, entries: Vec<Entry>) -> Result<Vec<Applied>, Fault> {
        let mut s = self.0.lock().unwrap();
        let mut out = Vec::new();
        for e in entries {
            s.applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(batch) => {
                    let n = batch.0.len();
                    for p in batch.0 {
                        s.data.insert(p.key.0, p.command);
                    }
                    out.push(Applied(vec![Vec::new(); n]));
                    continue;
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            out.push(Applied::default());
        }
        Ok(out)
    }
    fn write_snapshot(
        &self,
        out: &mut dyn Write,
    ) -> Result<(Option<LogId>, StoredMembership), Fault> {
        let s = self.0.lock().unwrap().clone();
        let bytes = postcard::to_allocvec(&s).map_err(|e| Fault(e.to_string()))?;
        out.write_all(&bytes).map_err(|e| Fault(e.to_string()))?;
        Ok((s.applied, s.membership))
    }
    fn install_snapshot(&self, _meta: &SnapshotMeta, input: &mut dyn Read) -> Result<(), Fault> {
        let mut bytes = Vec::new();
        input
            .read_to_end(&mut bytes)
            .map_err(|e| Fault(e.to_string()))?;
        *self.0.lock().unwrap() = postcard::from_bytes(&bytes).map_err(|e| Fault(e.to_string()))?;
        Ok(())
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, SnapshotStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, SnapshotStore), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::new(Arc::new(MemLog::default()));
        let sm =
            SnapshotStore::new(Arc::new(MemMachine::default()), dir.path().join("snap")).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn adapters_pass_the_openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

#[test]
fn snapshot_header_round_trips_and_rejects_garbage() {
    let meta = SnapshotMeta::default();
    let mut buf = Vec::new();
    super::machine::write_header_for_tests(&mut buf, &meta);
    buf.extend_from_slice(b"data");
    let mut r = &buf[..];
    assert_eq!(read_header(&mut r).unwrap(), meta);
    assert_eq!(r, b"data");
    assert!(read_header(&mut &b"NOTASNAPxxxx"[..]).is_err());
    let mut huge = b"HSMSNAP1".to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(read_header(&mut &huge[..]).is_err());
}

#[test]
fn rpc_messages_survive_postcard() {
    use crate::net::{Reply, Rpc};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use openraft::{CommittedLeaderId, Vote};
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 7), 9),
        payload: EntryPayload::Normal(crate::Batch(vec![crate::Proposal {
            key: crate::RequestKey(42),
            command: vec![1, 2, 3],
        }])),
    };
    let rpc = Rpc::AppendEntries(AppendEntriesRequest {
        vote: Vote::new_committed(3, 7),
        prev_log_id: Some(LogId::new(CommittedLeaderId::new(3, 7), 8)),
        entries: vec![entry.clone()],
        leader_commit: None,
    });
    let bytes = postcard::to_allocvec(&rpc).unwrap();
    match postcard::from_bytes::<Rpc>(&bytes).unwrap() {
        Rpc::AppendEntries(r) => assert_eq!(r.entries, vec![entry]),
        other => panic!("{other:?}"),
    }
    let reply: Reply = Reply::AppendEntries(Ok(AppendEntriesResponse::Success));
    let bytes = postcard::to_allocvec(&reply).unwrap();
    assert!(matches!(
        postcard::from_bytes::<Reply>(&bytes).unwrap(),
        Reply::AppendEntries(Ok(AppendEntriesResponse::Success))
    ));
    let fatal: Reply = Reply::AppendEntries(Err(openraft::error::RaftError::Fatal(
        openraft::error::Fatal::Panicked,
    )));
    let bytes = postcard::to_allocvec(&fatal).unwrap();
    assert!(matches!(
        postcard::from_bytes::<Reply>(&bytes).unwrap(),
        Reply::AppendEntries(Err(_))
    ));
}
