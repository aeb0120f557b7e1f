//! The snapshot stream: the whole token state as a sequence of records, each sealed under a
//! key derived from the cluster domain key, so every node (and a backup) can read it and no
//! one without the CDK can. Key objects inside are CDK-wrapped blobs, as in the log.
//!
//! Stream: `record*`, each `length (u32 BE) || nonce (12) || AES-256-GCM(postcard(Record))`
//! with the record's sequence number as associated data, so records cannot be reordered,
//! dropped or spliced from another snapshot without failing; the first is `Begin`, the last
//! `End` with the count, so a truncated stream fails too. The state is written from one
//! consistent view (taken under the apply lock), never held as one buffer.

use super::{APPLIED_KEY, MEMBERSHIP_KEY, REMOVED_KEY, object_key, order_key};
use super::{AppliedRequest, Position, Requests, TokenState, encode, poisoned};
use crate::error::Error;
use crate::object::{Object, StoredObject};
use crate::store::Table;
use crate::store::sealed::SealedBatch;
use crate::users::UserRecord;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use cluster_sync::{LogId, SnapshotMeta, StoredMembership};
use hsm_proto::ObjectId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::sync::Arc;

const FORMAT: u32 = 1;
/// The largest record accepted when reading (a data object is at most a frame).
const MAX_RECORD: usize = 8 << 20;

#[derive(Serialize, Deserialize)]
enum Record {
    Begin { format: u32, cluster_id: String },
    Object(ObjectId, StoredObject),
    User(String, UserRecord),
    Request(u128, AppliedRequest),
    Removed(BTreeSet<u64>),
    End { records: u64 },
}

fn sealer(state: &TokenState) -> Result<LessSafeKey, Error> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"hsm snapshot records v1");
    let prk = salt.extract(state.cdk.expose_secret());
    let okm = prk
        .expand(&[b"aes-256-gcm"], &AES_256_GCM)
        .map_err(|_| Error::device("snapshot key derivation failed"))?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

fn aad(seq: u64) -> [u8; 20] {
    let mut a = [0u8; 20];
    a[..12].copy_from_slice(b"hsm-snapshot");
    a[12..].copy_from_slice(&seq.to_be_bytes());
    a
}

struct Writer<'a> {
    key: LessSafeKey,
    out: &'a mut dyn Write,
    seq: u64,
}

impl Writer<'_> {
    fn record(&mut self, r: &Record) -> Result<(), Error> {
        let mut body = encode(r)?;
        let mut nonce = [0u8; NONCE_LEN];
        crate::seal::random_bytes(&mut nonce)?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(self.seq)),
                &mut *body,
            )
            .map_err(|_| Error::device("snapshot sealing failed"))?;
        let len = u32::try_from(NONCE_LEN + body.len())
            .map_err(|_| Error::device("snapshot record too large"))?;
        let io = |e: std::io::Error| Error::device(format!("writing the snapshot: {e}"));
        self.out.write_all(&len.to_be_bytes()).map_err(io)?;
        self.out.write_all(&nonce).map_err(io)?;
        self.out.write_all(&body).map_err(io)?;
        self.seq += 1;
        Ok(())
    }
}

/// Writes the whole state; returns the position it reflects.
pub(super) fn write(
    state: &TokenState,
    out: &mut dyn Write,
) -> Result<(Option<LogId>, StoredMembership), Error> {
    // One consistent view: apply changes memory only under this lock.
    let (objects, users, position, requests, removed) = {
        let _view = state.apply_lock.lock().map_err(|_| poisoned())?;
        let objects: Vec<Arc<Object>> = state
            .objects
            .read()
            .map_err(|_| poisoned())?
            .by_id
            .values()
            .cloned()
            .collect();
        let users = state.users.read().map_err(|_| poisoned())?.clone();
        let position = state.position.read().map_err(|_| poisoned())?.clone();
        let requests: Vec<(u128, AppliedRequest)> = {
            let r = state.requests.lock().map_err(|_| poisoned())?;
            r.order
                .iter()
                .filter_map(|(_, k)| r.by_key.get(k).map(|rec| (*k, rec.clone())))
                .collect()
        };
        let removed = state.removed.read().map_err(|_| poisoned())?.clone();
        (objects, users, position, requests, removed)
    };
    let mut w = Writer {
        key: sealer(state)?,
        out,
        seq: 0,
    };
    w.record(&Record::Begin {
        format: FORMAT,
        cluster_id: state.identity.cluster_id.clone(),
    })?;
    for o in &objects {
        w.record(&Record::Object(o.id, o.to_stored()))?;
    }
    for (name, user) in users {
        w.record(&Record::User(name, user))?;
    }
    for (k, rec) in requests {
        w.record(&Record::Request(k, rec))?;
    }
    w.record(&Record::Removed(removed))?;
    let records = w.seq;
    w.record(&Record::End { records })?;
    Ok((position.applied, position.membership))
}

fn read_record(key: &LessSafeKey, input: &mut dyn Read, seq: u64) -> Result<Record, Error> {
    let damaged = |why: &str| Error::device(format!("the snapshot is damaged: {why}"));
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|_| damaged("it ends early"))?;
    let len = u32::from_be_bytes(len) as usize;
    if !(NONCE_LEN + 16..=MAX_RECORD).contains(&len) {
        return Err(damaged("a record has an impossible length"));
    }
    let mut buf = zeroize::Zeroizing::new(vec![0u8; len]);
    input
        .read_exact(&mut buf)
        .map_err(|_| damaged("it ends early"))?;
    let nonce =
        Nonce::try_assume_unique_for_key(&buf[..NONCE_LEN]).map_err(|_| damaged("bad nonce"))?;
    let plain = key
        .open_in_place(nonce, Aad::from(aad(seq)), &mut buf[NONCE_LEN..])
        .map_err(|_| damaged("a record does not authenticate under this cluster's key"))?;
    postcard::from_bytes(plain).map_err(|_| damaged("a record does not decode"))
}

/// Replaces the whole state with a snapshot's, in one transaction, then in memory.
pub(super) fn install(
    state: &TokenState,
    meta: &SnapshotMeta,
    input: &mut dyn Read,
) -> Result<(), Error> {
    let key = sealer(state)?;
    match read_record(&key, input, 0)? {
        Record::Begin { format, cluster_id } => {
            if format != FORMAT {
                return Err(Error::device(format!(
                    "snapshot format {format} is not supported"
                )));
            }
            if cluster_id != state.identity.cluster_id {
                return Err(Error::device(format!(
                    "the snapshot is of cluster {cluster_id}, this node is in {}",
                    state.identity.cluster_id
                )));
            }
        }
        _ => return Err(Error::device("the snapshot does not start with its header")),
    }
    let mut batch = SealedBatch::default();
    for t in [
        Table::Objects,
        Table::Users,
        Table::Requests,
        Table::RequestOrder,
    ] {
        batch.delete_range(t, Vec::new(), None);
    }
    let mut objects = Vec::new();
    let mut users = HashMap::new();
    let mut requests = Requests::default();
    let mut removed = BTreeSet::new();
    let mut seq = 1u64;
    loop {
        match read_record(&key, input, seq)? {
            Record::Begin { .. } => return Err(Error::device("the snapshot has two headers")),
            Record::Object(id, stored) => {
                batch.put(Table::Objects, object_key(id), encode(&stored)?);
                objects.push((id, stored));
            }
            Record::User(name, user) => {
                batch.put(Table::Users, name.as_bytes().to_vec(), encode(&user)?);
                users.insert(name, user);
            }
            Record::Request(k, rec) => {
                batch.put(Table::Requests, k.to_be_bytes().to_vec(), encode(&rec)?);
                batch.put(Table::RequestOrder, order_key(rec.index, k), encode(&())?);
                requests.order.push_back((rec.index, k));
                requests.by_key.insert(k, rec);
            }
            Record::Removed(r) => removed = r,
            Record::End { records } => {
                if records != seq {
                    return Err(Error::device("the snapshot's record count is wrong"));
                }
                break;
            }
        }
        seq += 1;
    }
    batch.put(Table::Meta, REMOVED_KEY.to_vec(), encode(&removed)?);
    batch.put(
        Table::Applied,
        APPLIED_KEY.to_vec(),
        encode(&meta.last_log_id)?,
    );
    batch.put(
        Table::Applied,
        MEMBERSHIP_KEY.to_vec(),
        encode(&meta.last_membership)?,
    );
    state.store.commit(batch)?;

    let mut loaded = super::Objects::default();
    for (id, stored) in objects {
        match Object::from_stored(id, stored, &state.cdk) {
            Ok(o) => loaded.insert(Arc::new(o)),
            Err(e) => tracing::error!("object {id} from the snapshot cannot be loaded: {e}"),
        }
    }
    let _view = state.apply_lock.lock().map_err(|_| poisoned())?;
    *state.objects.write().map_err(|_| poisoned())? = loaded;
    *state.users.write().map_err(|_| poisoned())? = users;
    *state.requests.lock().map_err(|_| poisoned())? = requests;
    *state.removed.write().map_err(|_| poisoned())? = removed;
    *state.position.write().map_err(|_| poisoned())? = Position {
        applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
    };
    Ok(())
}
