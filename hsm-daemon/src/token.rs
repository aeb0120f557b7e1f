//! The token's replicated state: objects, users and the cluster's own records, changed only by
//! committed [`Command`]s, applied in log order on every node.
//!
//! Everything random (ids, keys, IVs) is made, and every key is CDK-wrapped, before a command
//! exists; a command is self-contained (a key pair is one command) and carries the client's
//! request key. [`TokenState::apply`] is deterministic and refuses nothing: a command that no
//! longer fits (a destroyed object's second destroy) changes nothing and says so. A batch of
//! entries is written in one sealed transaction together with the last applied log id and the
//! membership; memory changes only after that transaction is durable.

use crate::error::Error;
use crate::object::{self, Object, StoredObject};
use crate::seal::{ClusterDomainKey, KEY_LEN};
use crate::store::Table;
use crate::store::sealed::{SealedBatch, SealedStore};
use crate::users::{Lockouts, UserRecord};
use cluster_sync::openraft::EntryPayload;
use cluster_sync::{Applied, Entry, Fault, LogId, SnapshotMeta, StoredMembership};
use cryptoki_sys as ck;
use hsm_proto::{Attribute, ObjectId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, RwLock};
use zeroize::Zeroizing;

mod snapshot;

/// Meta-table key of the sealed cluster domain key.
pub const CDK_KEY: &[u8] = b"cdk";
/// Meta-table key of the sealed cluster identity.
pub const IDENTITY_KEY: &[u8] = b"identity";
/// Meta-table key of the sealed record that proves the unseal secret of a joining node.
pub const NSK_CHECK_KEY: &[u8] = b"nsk-check";
/// Meta-table key of the mark that the founder's initial state went through the log.
const SEEDED_KEY: &[u8] = b"seeded";
/// Objects per command when the founder puts its initial state through the log.
const SEED_CHUNK: usize = 64;
/// Meta-table key of the node ids removed from the cluster (never to come back).
const REMOVED_KEY: &[u8] = b"removed-nodes";
/// Applied-table keys.
const APPLIED_KEY: &[u8] = b"last-applied";
const MEMBERSHIP_KEY: &[u8] = b"membership";
/// How many applied request keys are remembered (a retry older than this many mutations is
/// not recognized).
pub const REQUEST_WINDOW: usize = 100_000;

/// The cluster's identity, made at `init` and learned by a joining node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// Random, hex; shown as the token's serial number.
    pub cluster_id: String,
    /// The name chosen at init; the token's label.
    pub cluster_name: String,
}

impl ClusterIdentity {
    /// A new identity for a new cluster.
    ///
    /// # Errors
    /// If the RNG fails.
    pub fn generate(cluster_name: &str) -> Result<ClusterIdentity, Error> {
        let mut id = [0u8; 16];
        crate::seal::random_bytes(&mut id)?;
        Ok(ClusterIdentity {
            cluster_id: hex::encode(id),
            cluster_name: cluster_name.to_owned(),
        })
    }
}

/// A change of token state, as the replicated log carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Creates or replaces objects (one for most calls; both halves of a key pair).
    PutObjects(Vec<(ObjectId, StoredObject)>),
    /// Destroys an object.
    DestroyObject(ObjectId),
    /// Creates or replaces a user.
    PutUser {
        /// User name.
        name: String,
        /// Role and password hash.
        user: UserRecord,
    },
    /// Remembers that a node was removed: its certificate is refused from now on.
    ForgetNode(u64),
}

/// What applying one entry did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied now.
    Applied,
    /// Its request key was applied before (at `index`); nothing changed. `objects` are the
    /// objects that first application created.
    Duplicate {
        /// Index of the first application.
        index: u64,
        /// Objects it created.
        objects: Vec<ObjectId>,
    },
    /// Not a command (blank or membership entry).
    NotACommand,
    /// The bytes are not a command this node understands; nothing changed.
    Undecodable,
}

impl Outcome {
    /// Encodes as the answer to one proposal.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes the answer to one proposal.
    pub fn decode(answer: &[u8]) -> Outcome {
        postcard::from_bytes(answer).unwrap_or(Outcome::Undecodable)
    }
}

/// A request key applied before: where, and what it created.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AppliedRequest {
    index: u64,
    objects: Vec<ObjectId>,
}

fn object_key(id: ObjectId) -> Vec<u8> {
    id.0.to_be_bytes().to_vec()
}

fn encode<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, Error> {
    postcard::to_allocvec(value)
        .map(Zeroizing::new)
        .map_err(|e| Error::device(format!("encoding failed: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::device(format!("{what} is damaged: {e}")))
}

fn fault(e: impl std::fmt::Display) -> Fault {
    Fault(e.to_string())
}

/// Token objects with indexes on the attributes applications search by (`pkcs11:` URIs use
/// label, id and class), so `C_FindObjects` does not scan.
#[derive(Debug, Default)]
struct Objects {
    by_id: HashMap<ObjectId, Arc<Object>>,
    by_label: HashMap<Vec<u8>, HashSet<ObjectId>>,
    by_ckaid: HashMap<Vec<u8>, HashSet<ObjectId>>,
    by_class: HashMap<u64, HashSet<ObjectId>>,
}

fn index_keys(obj: &Object) -> (Option<Vec<u8>>, Option<Vec<u8>>, u64) {
    let label = match obj.attrs.get(&(ck::CKA_LABEL as u64)) {
        Some(Attribute::Label(l)) => Some(l.clone()),
        _ => None,
    };
    let id = match obj.attrs.get(&(ck::CKA_ID as u64)) {
        Some(Attribute::Id(i)) => Some(i.clone()),
        _ => None,
    };
    (label, id, obj.class())
}

impl Objects {
    fn insert(&mut self, obj: Arc<Object>) {
        self.remove(obj.id);
        let (label, ckaid, class) = index_keys(&obj);
        if let Some(l) = label {
            self.by_label.entry(l).or_default().insert(obj.id);
        }
        if let Some(i) = ckaid {
            self.by_ckaid.entry(i).or_default().insert(obj.id);
        }
        self.by_class.entry(class).or_default().insert(obj.id);
        self.by_id.insert(obj.id, obj);
    }

    fn remove(&mut self, id: ObjectId) {
        let Some(old) = self.by_id.remove(&id) else {
            return;
        };
        let (label, ckaid, class) = index_keys(&old);
        fn unlink<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, HashSet<ObjectId>>,
            key: K,
            id: ObjectId,
        ) {
            if let Some(set) = map.get_mut(&key) {
                set.remove(&id);
                if set.is_empty() {
                    map.remove(&key);
                }
            }
        }
        if let Some(l) = label {
            unlink(&mut self.by_label, l, id);
        }
        if let Some(i) = ckaid {
            unlink(&mut self.by_ckaid, i, id);
        }
        unlink(&mut self.by_class, class, id);
    }

    /// Candidates for a template: the smallest indexed set it names, else everything.
    fn find(&self, template: &[Attribute]) -> Vec<Arc<Object>> {
        let empty = HashSet::new();
        let mut best: Option<&HashSet<ObjectId>> = None;
        for a in template {
            let set = match a {
                Attribute::Label(l) => self.by_label.get(l).unwrap_or(&empty),
                Attribute::Id(i) => self.by_ckaid.get(i).unwrap_or(&empty),
                Attribute::Class(c) => self.by_class.get(c).unwrap_or(&empty),
                _ => continue,
            };
            if best.is_none_or(|b| set.len() < b.len()) {
                best = Some(set);
            }
        }
        let candidates: Box<dyn Iterator<Item = &Arc<Object>>> = match best {
            Some(ids) => Box::new(ids.iter().filter_map(|id| self.by_id.get(id))),
            None => Box::new(self.by_id.values()),
        };
        candidates
            .filter(|o| o.matches(template))
            .cloned()
            .collect()
    }
}

/// The consensus-side records kept with the state: where the state is in the log.
#[derive(Debug, Default, Clone)]
struct Position {
    applied: Option<LogId>,
    membership: StoredMembership,
}

/// Request keys applied recently, oldest first.
#[derive(Debug, Default)]
struct Requests {
    by_key: HashMap<u128, AppliedRequest>,
    order: VecDeque<(u64, u128)>,
}

/// The unsealed token state.
#[derive(Debug)]
pub struct TokenState {
    store: Arc<SealedStore>,
    cdk: ClusterDomainKey,
    identity: ClusterIdentity,
    objects: RwLock<Objects>,
    users: RwLock<HashMap<String, UserRecord>>,
    position: RwLock<Position>,
    requests: Mutex<Requests>,
    removed: RwLock<BTreeSet<u64>>,
    /// Held while a batch changes memory and while a snapshot takes its view, so a snapshot
    /// is one consistent state.
    apply_lock: Mutex<()>,
    /// Login failure tracking (per node: not replicated).
    pub lockouts: Lockouts,
}

fn poisoned() -> Error {
    Error::device("internal lock poisoned")
}

fn order_key(index: u64, key: u128) -> Vec<u8> {
    let mut k = index.to_be_bytes().to_vec();
    k.extend_from_slice(&key.to_be_bytes());
    k
}

impl TokenState {
    /// Loads the token from an unsealed store: opens the CDK (the check that the unseal secret
    /// is right), migrates key blobs of an older format, then loads every object (unwrapped
    /// and parsed once), user, and the state machine's position.
    ///
    /// # Errors
    /// `PinIncorrect` if the CDK does not open (wrong unseal secret); `DeviceError` if a record
    /// is damaged.
    pub fn load(store: Arc<SealedStore>, default_name: &str) -> Result<TokenState, Error> {
        let cdk = Self::open_cdk(&store)?;
        let identity = match store.get(Table::Meta, IDENTITY_KEY)? {
            Some(bytes) => decode::<ClusterIdentity>("the cluster identity", &bytes)?,
            None => {
                // A store from before clusters had an identity: give it one, once.
                let identity = ClusterIdentity::generate(default_name)?;
                let mut batch = SealedBatch::default();
                batch.put(Table::Meta, IDENTITY_KEY.to_vec(), encode(&identity)?);
                store.commit(batch)?;
                tracing::info!(
                    "gave the existing store the cluster id {}",
                    identity.cluster_id
                );
                identity
            }
        };
        let mut objects = Objects::default();
        let mut migrated = SealedBatch::default();
        let mut migrated_count = 0usize;
        for (key, value) in store.scan(Table::Objects)? {
            let raw: [u8; 16] = key
                .as_slice()
                .try_into()
                .map_err(|_| Error::device("bad object key in store"))?;
            let id = ObjectId(u128::from_be_bytes(raw));
            let mut stored: StoredObject = decode(&format!("object {id}"), &value)?;
            if let Some(newer) = object::migrate_stored(id, stored.clone(), &cdk)? {
                migrated.put(Table::Objects, key.clone(), encode(&newer)?);
                migrated_count += 1;
                stored = newer;
            }
            objects.insert(Arc::new(Object::from_stored(id, stored, &cdk)?));
        }
        if migrated_count > 0 {
            store.commit(migrated)?;
            tracing::info!("migrated {migrated_count} key objects to the policy-bound wrap format");
        }
        let mut users = HashMap::new();
        for (key, value) in store.scan(Table::Users)? {
            let name =
                String::from_utf8(key).map_err(|_| Error::device("bad user name in store"))?;
            let user: UserRecord = decode(&format!("user {name}"), &value)?;
            users.insert(name, user);
        }
        let applied = match store.get(Table::Applied, APPLIED_KEY)? {
            Some(b) => decode("the last applied log id", &b)?,
            None => None,
        };
        let membership = match store.get(Table::Applied, MEMBERSHIP_KEY)? {
            Some(b) => decode("the membership", &b)?,
            None => StoredMembership::default(),
        };
        let mut requests = Requests::default();
        for (key, _) in store.scan(Table::RequestOrder)? {
            if key.len() != 24 {
                return Err(Error::device("bad request order key in store"));
            }
            let index = u64::from_be_bytes(key[..8].try_into().unwrap_or_default());
            let rk = u128::from_be_bytes(key[8..].try_into().unwrap_or_default());
            requests.order.push_back((index, rk));
        }
        for (key, value) in store.scan(Table::Requests)? {
            let raw: [u8; 16] = key
                .as_slice()
                .try_into()
                .map_err(|_| Error::device("bad request key in store"))?;
            let rec: AppliedRequest = decode("an applied request", &value)?;
            requests.by_key.insert(u128::from_be_bytes(raw), rec);
        }
        let removed = match store.get(Table::Meta, REMOVED_KEY)? {
            Some(b) => decode("the removed nodes", &b)?,
            None => BTreeSet::new(),
        };
        Ok(TokenState {
            store,
            cdk,
            identity,
            objects: RwLock::new(objects),
            users: RwLock::new(users),
            position: RwLock::new(Position {
                applied,
                membership,
            }),
            requests: Mutex::new(requests),
            removed: RwLock::new(removed),
            apply_lock: Mutex::new(()),
            lockouts: Lockouts::default(),
        })
    }

    fn open_cdk(store: &SealedStore) -> Result<ClusterDomainKey, Error> {
        let cdk_bytes = store
            .get(Table::Meta, CDK_KEY)
            .map_err(|_| {
                Error::new(
                    hsm_proto::ErrorCode::PinIncorrect,
                    "the unseal secret is incorrect",
                )
            })?
            .ok_or_else(|| {
                Error::device("the store holds no cluster domain key: not initialized")
            })?;
        let bytes: [u8; KEY_LEN] = cdk_bytes
            .as_slice()
            .try_into()
            .map_err(|_| Error::device("stored cluster domain key has a bad length"))?;
        ClusterDomainKey::from_bytes(Zeroizing::new(bytes))
    }

    /// Writes a brand-new founder token (at init): the sealed CDK, the cluster identity and
    /// the first admin.
    ///
    /// # Errors
    /// If the store fails.
    pub fn initialize(
        store: &SealedStore,
        cdk: &ClusterDomainKey,
        identity: &ClusterIdentity,
        admin: (&str, UserRecord),
    ) -> Result<(), Error> {
        let mut batch = Self::key_and_identity(cdk, identity)?;
        batch.put(Table::Users, admin.0.as_bytes().to_vec(), encode(&admin.1)?);
        store.commit(batch)
    }

    /// Writes what a joining node receives: the CDK and the cluster identity (sealed under
    /// this node's key), in one transaction.
    ///
    /// # Errors
    /// If the store fails.
    pub fn store_joined(
        store: &SealedStore,
        cdk: &ClusterDomainKey,
        identity: &ClusterIdentity,
    ) -> Result<(), Error> {
        store.commit(Self::key_and_identity(cdk, identity)?)
    }

    fn key_and_identity(
        cdk: &ClusterDomainKey,
        identity: &ClusterIdentity,
    ) -> Result<SealedBatch, Error> {
        let mut batch = SealedBatch::default();
        batch.put(
            Table::Meta,
            CDK_KEY.to_vec(),
            Zeroizing::new(cdk.expose_secret().to_vec()),
        );
        batch.put(Table::Meta, IDENTITY_KEY.to_vec(), encode(identity)?);
        Ok(batch)
    }

    /// Whether this (founder) node's initial state, made by `init` outside the log (the first
    /// admin; the objects of a store from before clusters), was put through the log.
    ///
    /// # Errors
    /// If the store fails.
    pub fn is_seeded(&self) -> Result<bool, Error> {
        Ok(self.store.get(Table::Meta, SEEDED_KEY)?.is_some())
    }

    /// Records that the initial state went through the log.
    ///
    /// # Errors
    /// If the store fails.
    pub fn mark_seeded(&self) -> Result<(), Error> {
        let mut batch = SealedBatch::default();
        batch.put(Table::Meta, SEEDED_KEY.to_vec(), Zeroizing::new(vec![1]));
        self.store.commit(batch)
    }

    /// The commands that put this node's whole current state through the log (so that nodes
    /// that join and catch up from the log get it): every user, and every object in chunks.
    ///
    /// # Errors
    /// If a lock is poisoned.
    pub fn seed_commands(&self) -> Result<Vec<Command>, Error> {
        let mut commands: Vec<Command> = self
            .users
            .read()
            .map_err(|_| poisoned())?
            .iter()
            .map(|(name, user)| Command::PutUser {
                name: name.clone(),
                user: user.clone(),
            })
            .collect();
        let objects: Vec<(ObjectId, StoredObject)> = self
            .objects
            .read()
            .map_err(|_| poisoned())?
            .by_id
            .values()
            .map(|o| (o.id, o.to_stored()))
            .collect();
        for chunk in objects.chunks(SEED_CHUNK) {
            commands.push(Command::PutObjects(chunk.to_vec()));
        }
        Ok(commands)
    }

    /// The cluster domain key, to wrap new key material before proposing it.
    pub fn cdk(&self) -> &ClusterDomainKey {
        &self.cdk
    }

    /// The cluster's identity.
    pub fn identity(&self) -> &ClusterIdentity {
        &self.identity
    }

    /// The node's sealed store.
    pub fn store(&self) -> &Arc<SealedStore> {
        &self.store
    }

    /// An object by id.
    pub fn object(&self, id: ObjectId) -> Result<Option<Arc<Object>>, Error> {
        Ok(self
            .objects
            .read()
            .map_err(|_| poisoned())?
            .by_id
            .get(&id)
            .cloned())
    }

    /// The token objects whose attributes match `template` (visibility is the caller's job).
    pub fn find(&self, template: &[Attribute]) -> Result<Vec<Arc<Object>>, Error> {
        Ok(self.objects.read().map_err(|_| poisoned())?.find(template))
    }

    /// Number of token objects.
    pub fn object_count(&self) -> usize {
        self.objects.read().map(|o| o.by_id.len()).unwrap_or(0)
    }

    /// A user's record.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, Error> {
        Ok(self
            .users
            .read()
            .map_err(|_| poisoned())?
            .get(name)
            .cloned())
    }

    /// Whether a node id was removed from the cluster.
    pub fn is_removed(&self, node_id: u64) -> bool {
        self.removed
            .read()
            .map(|r| r.contains(&node_id))
            .unwrap_or(true)
    }

    /// If `key` was applied already: its index and the objects it created.
    pub fn applied_request(&self, key: u128) -> Option<(u64, Vec<ObjectId>)> {
        let requests = self.requests.lock().ok()?;
        requests
            .by_key
            .get(&key)
            .map(|r| (r.index, r.objects.clone()))
    }

    /// The last applied log index.
    pub fn applied_index(&self) -> u64 {
        self.position
            .read()
            .ok()
            .and_then(|p| p.applied.map(|l| l.index))
            .unwrap_or(0)
    }

    /// Applies a batch of committed entries (see the module doc).
    fn apply_entries(&self, entries: Vec<Entry>) -> Result<Vec<Applied>, Error> {
        enum Change {
            Put(ObjectId, StoredObject),
            Destroy(ObjectId),
            User(String, UserRecord),
            Forget(u64),
        }
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let mut batch = SealedBatch::default();
        let mut changes = Vec::new();
        let mut out = Vec::with_capacity(entries.len());
        let mut membership = None;
        let mut new_requests: Vec<(u128, AppliedRequest)> = Vec::new();
        let mut removed = self.removed.read().map_err(|_| poisoned())?.clone();
        let mut removed_changed = false;
        {
            let requests = self.requests.lock().map_err(|_| poisoned())?;
            for entry in entries {
                let index = entry.log_id.index;
                let proposals = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        Vec::new()
                    }
                    EntryPayload::Normal(batch) => batch.0,
                };
                let mut answers = Vec::with_capacity(proposals.len());
                for proposal in proposals {
                    {
                        let key = proposal.key.0;
                        let seen = requests.by_key.get(&key).cloned().or_else(|| {
                            new_requests
                                .iter()
                                .find(|(k, _)| *k == key)
                                .map(|(_, r)| r.clone())
                        });
                        if let Some(first) = seen {
                            answers.push(
                                Outcome::Duplicate {
                                    index: first.index,
                                    objects: first.objects,
                                }
                                .encode(),
                            );
                            continue;
                        }
                        let Ok(command) = postcard::from_bytes::<Command>(&proposal.command) else {
                            tracing::error!(
                                "log entry {index} holds no command this node understands; skipped"
                            );
                            answers.push(Outcome::Undecodable.encode());
                            continue;
                        };
                        let mut created = Vec::new();
                        match command {
                            Command::PutObjects(objects) => {
                                for (id, stored) in objects {
                                    batch.put(Table::Objects, object_key(id), encode(&stored)?);
                                    created.push(id);
                                    changes.push(Change::Put(id, stored));
                                }
                            }
                            Command::DestroyObject(id) => {
                                batch.delete(Table::Objects, object_key(id));
                                changes.push(Change::Destroy(id));
                            }
                            Command::PutUser { name, user } => {
                                batch.put(Table::Users, name.as_bytes().to_vec(), encode(&user)?);
                                changes.push(Change::User(name, user));
                            }
                            Command::ForgetNode(id) => {
                                removed_changed |= removed.insert(id);
                                changes.push(Change::Forget(id));
                            }
                        }
                        if key != 0 {
                            let rec = AppliedRequest {
                                index,
                                objects: created,
                            };
                            batch.put(Table::Requests, key.to_be_bytes().to_vec(), encode(&rec)?);
                            batch.put(Table::RequestOrder, order_key(index, key), encode(&())?);
                            new_requests.push((key, rec));
                        }
                        answers.push(Outcome::Applied.encode());
                    }
                }
                out.push(Applied(answers));
            }
            // Forget the oldest request keys beyond the window, in the same transaction.
            let excess = (requests.order.len() + new_requests.len()).saturating_sub(REQUEST_WINDOW);
            for (index, key) in requests.order.iter().take(excess) {
                batch.delete(Table::Requests, key.to_be_bytes().to_vec());
                batch.delete(Table::RequestOrder, order_key(*index, *key));
            }
        }
        if removed_changed {
            batch.put(Table::Meta, REMOVED_KEY.to_vec(), encode(&removed)?);
        }
        batch.put(Table::Applied, APPLIED_KEY.to_vec(), encode(&Some(last))?);
        if let Some(m) = &membership {
            batch.put(Table::Applied, MEMBERSHIP_KEY.to_vec(), encode(m)?);
        }
        // Durable first, then visible.
        self.store.commit(batch)?;

        let _view = self.apply_lock.lock().map_err(|_| poisoned())?;
        {
            let mut objects = self.objects.write().map_err(|_| poisoned())?;
            let mut users = self.users.write().map_err(|_| poisoned())?;
            for change in changes {
                match change {
                    Change::Put(id, stored) => match Object::from_stored(id, stored, &self.cdk) {
                        Ok(obj) => objects.insert(Arc::new(obj)),
                        Err(e) => {
                            // Stored, but unusable here: the same blob opened on the node that
                            // made it, so this node's CDK or software differs.
                            tracing::error!("object {id} is stored but cannot be loaded: {e}");
                            objects.remove(id);
                        }
                    },
                    Change::Destroy(id) => objects.remove(id),
                    Change::User(name, user) => {
                        users.insert(name, user);
                    }
                    Change::Forget(id) => tracing::info!("node {id} is removed for good"),
                }
            }
        }
        {
            let mut requests = self.requests.lock().map_err(|_| poisoned())?;
            for (key, rec) in new_requests {
                requests.order.push_back((rec.index, key));
                requests.by_key.insert(key, rec);
            }
            while requests.order.len() > REQUEST_WINDOW {
                if let Some((_, key)) = requests.order.pop_front() {
                    requests.by_key.remove(&key);
                }
            }
        }
        if removed_changed {
            *self.removed.write().map_err(|_| poisoned())? = removed;
        }
        let mut position = self.position.write().map_err(|_| poisoned())?;
        position.applied = Some(last);
        if let Some(m) = membership {
            position.membership = m;
        }
        Ok(out)
    }
}

impl cluster_sync::StateMachine for TokenState {
    fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), Fault> {
        let p = self.position.read().map_err(|_| fault("lock poisoned"))?;
        Ok((p.applied, p.membership.clone()))
    }

    fn apply(&self, entries: Vec<Entry>) -> Result<Vec<Applied>, Fault> {
        self.apply_entries(entries).map_err(|e| {
            if e.is_store_fault() {
                tracing::error!("the store failed while applying committed entries: {e}");
            } else {
                tracing::error!("applying committed entries failed: {e}");
            }
            fault(e)
        })
    }

    fn write_snapshot(
        &self,
        out: &mut dyn Write,
    ) -> Result<(Option<LogId>, StoredMembership), Fault> {
        snapshot::write(self, out).map_err(fault)
    }

    fn install_snapshot(&self, meta: &SnapshotMeta, input: &mut dyn Read) -> Result<(), Fault> {
        snapshot::install(self, meta, input).map_err(|e| {
            tracing::error!("installing snapshot {} failed: {e}", meta.snapshot_id);
            fault(e)
        })
    }
}
