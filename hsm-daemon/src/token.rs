//! The token's state: objects and users, changed only by [`Command`]s applied in order.
//!
//! Every change of token state goes through [`Token::apply`], after its key material has been
//! generated and wrapped under the cluster domain key. That is the contract the replicated log
//! needs: the cluster issue replaces the local [`cluster_sync::SingleNode`] with openraft, and
//! the commands it carries are exactly these.

use crate::error::Error;
use crate::object::{Object, StoredObject};
use crate::seal::{ClusterDomainKey, KEY_LEN};
use crate::store::Table;
use crate::store::sealed::{SealedBatch, SealedStore};
use crate::users::{Lockouts, UserRecord};
use cluster_sync::{LogIndex, Replicator, SingleNode, StateMachine};
use cryptoki_sys as ck;
use hsm_proto::ObjectId;
use hsm_proto::msg::Role;
use hsm_proto::{Attribute, Password};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// Meta-table key of the sealed cluster domain key.
pub const CDK_KEY: &[u8] = b"cdk";

/// A change of token state, as the replicated log will carry it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Creates or replaces an object.
    PutObject {
        /// Its id.
        id: ObjectId,
        /// Attributes and CDK-wrapped material.
        object: StoredObject,
    },
    /// Destroys an object.
    DestroyObject {
        /// Its id.
        id: ObjectId,
    },
    /// Creates or replaces a user.
    PutUser {
        /// User name.
        name: String,
        /// Role and password hash.
        user: UserRecord,
    },
}

fn object_key(id: ObjectId) -> Vec<u8> {
    id.0.to_be_bytes().to_vec()
}

fn encode<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, Error> {
    postcard::to_allocvec(value)
        .map(Zeroizing::new)
        .map_err(|e| Error::device(format!("encoding failed: {e}")))
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

/// The unsealed token state.
#[derive(Debug)]
pub struct TokenState {
    store: SealedStore,
    cdk: ClusterDomainKey,
    objects: RwLock<Objects>,
    users: RwLock<HashMap<String, UserRecord>>,
    /// Login failure tracking.
    pub lockouts: Lockouts,
}

/// The token: its state behind the replicator that orders every change.
pub type Token = SingleNode<TokenState>;

fn poisoned() -> Error {
    Error::device("internal lock poisoned")
}

impl TokenState {
    /// Loads the token from an unsealed store: opens the CDK (the check that the unseal secret
    /// is right), then every object (unwrapped and parsed once) and user.
    ///
    /// # Errors
    /// `PinIncorrect` if the CDK does not open (wrong unseal secret); `DeviceError` if a record
    /// is damaged.
    pub fn load(store: SealedStore) -> Result<TokenState, Error> {
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
        let cdk = ClusterDomainKey::from_bytes(Zeroizing::new(bytes))?;
        let mut objects = Objects::default();
        for (key, value) in store.scan(Table::Objects)? {
            let raw: [u8; 16] = key
                .as_slice()
                .try_into()
                .map_err(|_| Error::device("bad object key in store"))?;
            let id = ObjectId(u128::from_be_bytes(raw));
            let stored: StoredObject = postcard::from_bytes(&value)
                .map_err(|e| Error::device(format!("object {id} is damaged: {e}")))?;
            objects.insert(Arc::new(Object::from_stored(id, stored, &cdk)?));
        }
        let mut users = HashMap::new();
        for (key, value) in store.scan(Table::Users)? {
            let name =
                String::from_utf8(key).map_err(|_| Error::device("bad user name in store"))?;
            let user: UserRecord = postcard::from_bytes(&value)
                .map_err(|e| Error::device(format!("user {name} is damaged: {e}")))?;
            users.insert(name, user);
        }
        Ok(TokenState {
            store,
            cdk,
            objects: RwLock::new(objects),
            users: RwLock::new(users),
            lockouts: Lockouts::default(),
        })
    }

    /// Writes a brand-new token (at init): the sealed CDK and the first admin.
    ///
    /// # Errors
    /// If the store fails.
    pub fn initialize(
        store: &SealedStore,
        cdk: &ClusterDomainKey,
        admin: (&str, UserRecord),
    ) -> Result<(), Error> {
        let mut batch = SealedBatch::default();
        batch.put(
            Table::Meta,
            CDK_KEY.to_vec(),
            Zeroizing::new(cdk.expose_secret().to_vec()),
        );
        batch.put(Table::Users, admin.0.as_bytes().to_vec(), encode(&admin.1)?);
        store.commit(batch)
    }

    /// The cluster domain key, to wrap new key material before proposing it.
    pub fn cdk(&self) -> &ClusterDomainKey {
        &self.cdk
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

    /// Changes (or creates) a user's password, keeping (or setting) its role.
    ///
    /// # Errors
    /// `PinLenRange` for a bad new password; store failures.
    pub fn set_password(
        token: &Token,
        name: &str,
        role: Role,
        password: &Password,
    ) -> Result<(), Error> {
        let user = crate::users::new_record(role, password)?;
        commit(
            token,
            Command::PutUser {
                name: name.to_owned(),
                user,
            },
        )
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
}

impl StateMachine for TokenState {
    type Command = Command;
    type Error = Error;

    /// Durable first, then visible: the store commit happens before memory changes, so an
    /// acknowledged command survives a crash and a failed one changes nothing.
    fn apply(&self, _index: LogIndex, command: Command) -> Result<(), Error> {
        match command {
            Command::PutObject { id, object } => {
                let mut batch = SealedBatch::default();
                batch.put(Table::Objects, object_key(id), encode(&object)?);
                let parsed = Object::from_stored(id, object, &self.cdk)?;
                self.store.commit(batch)?;
                self.objects
                    .write()
                    .map_err(|_| poisoned())?
                    .insert(Arc::new(parsed));
            }
            Command::DestroyObject { id } => {
                let mut batch = SealedBatch::default();
                batch.delete(Table::Objects, object_key(id));
                self.store.commit(batch)?;
                self.objects.write().map_err(|_| poisoned())?.remove(id);
            }
            Command::PutUser { name, user } => {
                let mut batch = SealedBatch::default();
                batch.put(Table::Users, name.as_bytes().to_vec(), encode(&user)?);
                self.store.commit(batch)?;
                self.users
                    .write()
                    .map_err(|_| poisoned())?
                    .insert(name, user);
            }
        }
        Ok(())
    }
}

/// Proposes a command and waits until it is committed and applied.
///
/// # Errors
/// As [`StateMachine::apply`].
pub fn commit(token: &Token, command: Command) -> Result<(), Error> {
    token.propose(command).map(|_| ())
}
