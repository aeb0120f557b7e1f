//! A node: sealed until an operator unseals it, then serving its token.

use crate::error::Error;
use crate::seal::UnsealMethod;
use crate::store::Store;
use crate::store::Table;
use crate::store::sealed::{SEAL_META_KEY, SealedStore};
use crate::token::{Token, TokenState};
use hsm_proto::msg::{NodeStatus, SealState, UnsealSecret};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, OnceLock};

/// The clear metadata record: how to derive the node sealing key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealMeta {
    /// Format version of this record.
    pub version: u32,
    /// Node name at init.
    pub node: String,
    /// Cluster name (not secret; shown by status while sealed).
    pub cluster: String,
    /// Unseal method and its parameters.
    pub method: UnsealMethod,
}

impl SealMeta {
    /// Reads the record from a raw store.
    ///
    /// # Errors
    /// `DeviceError` if the store is not initialized or the record is damaged.
    pub fn read(store: &dyn Store) -> Result<Option<SealMeta>, Error> {
        match store.get(Table::Meta, SEAL_META_KEY)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| Error::device(format!("seal metadata is damaged: {e}"))),
        }
    }
}

/// One node.
#[derive(Debug)]
pub struct Node {
    name: String,
    raw: Arc<dyn Store>,
    meta: SealMeta,
    token: OnceLock<Arc<Token>>,
    unsealing: Mutex<()>,
}

impl Node {
    /// A sealed node over an initialized store.
    ///
    /// # Errors
    /// `DeviceError` if the store has not been initialized.
    pub fn new(name: String, raw: Arc<dyn Store>) -> Result<Node, Error> {
        let meta = SealMeta::read(raw.as_ref())?.ok_or_else(|| {
            Error::device(
                "the store is not initialized: run `hsm-daemon init` (or `hsmctl init`) first",
            )
        })?;
        Ok(Node {
            name,
            raw,
            meta,
            token: OnceLock::new(),
            unsealing: Mutex::new(()),
        })
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token, if unsealed.
    pub fn token(&self) -> Option<&Arc<Token>> {
        self.token.get()
    }

    /// Status, sealed or not.
    pub fn status(&self) -> NodeStatus {
        let token = self.token();
        NodeStatus {
            node: self.name.clone(),
            cluster: self.meta.cluster.clone(),
            seal: if token.is_some() {
                SealState::Unsealed
            } else {
                SealState::Sealed
            },
            dev_unseal: self.meta.method.is_dev(),
            objects: token.map_or(0, |t| t.machine().object_count() as u64),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Unseals: derives the node sealing key (Argon2id: call off the I/O threads), opens the
    /// cluster domain key and loads every object. Unsealing an unsealed node is a no-op.
    ///
    /// # Errors
    /// `PinIncorrect` for a wrong secret; `ArgumentsBad` for a secret of the other kind;
    /// `DeviceError` for a damaged store.
    pub fn unseal(&self, secret: &UnsealSecret) -> Result<(), Error> {
        let _one_at_a_time = self
            .unsealing
            .lock()
            .map_err(|_| Error::device("internal lock poisoned"))?;
        if self.token.get().is_some() {
            return Ok(());
        }
        let nsk = self.meta.method.derive(secret)?;
        let store = SealedStore::new(self.raw.clone(), nsk);
        let state = TokenState::load(store)?;
        if self.meta.method.is_dev() {
            tracing::warn!(
                "DEVELOPMENT UNSEAL: node {} is unsealed by a key file kept on disk; never store real keys in it",
                self.name
            );
        }
        let _ = self.token.set(Arc::new(Token::new(state)));
        Ok(())
    }
}
