//! The token behind the replicated log: the raft log in the node's sealed store, the token
//! state as the state machine, and the one way the handler changes state, [`Token::commit`].

use crate::error::Error;
use crate::store::Table;
use crate::store::sealed::{SealedBatch, SealedStore};
use crate::token::{Command, Outcome, TokenState};
use cluster_sync::{Cluster, ClusterError, Fault, LogBackend, MetaKey, Proposal, RequestKey};
use hsm_proto::ObjectId;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use zeroize::Zeroizing;

fn index_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

fn index_of(key: &[u8]) -> Result<u64, Fault> {
    let raw: [u8; 8] = key
        .try_into()
        .map_err(|_| Fault("bad log index key".into()))?;
    Ok(u64::from_be_bytes(raw))
}

fn fault(e: Error) -> Fault {
    Fault(e.to_string())
}

/// The raft log and its records in the node's sealed store: every entry sealed under the
/// node sealing key with its index as associated data; each write one fsynced transaction.
#[derive(Debug)]
pub struct SealedLog {
    store: Arc<SealedStore>,
}

impl SealedLog {
    /// The log in `store`.
    pub fn new(store: Arc<SealedStore>) -> SealedLog {
        SealedLog { store }
    }
}

impl LogBackend for SealedLog {
    fn read_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, Fault> {
        Ok(self
            .store
            .get(Table::RaftMeta, key.name().as_bytes())
            .map_err(fault)?
            .map(|v| v.to_vec()))
    }

    fn write_meta(&self, key: MetaKey, value: Vec<u8>) -> Result<(), Fault> {
        let mut batch = SealedBatch::default();
        batch.put(
            Table::RaftMeta,
            key.name().as_bytes().to_vec(),
            Zeroizing::new(value),
        );
        self.store.commit(batch).map_err(fault)
    }

    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), Fault> {
        let mut batch = SealedBatch::default();
        for (index, bytes) in entries {
            batch.put(Table::RaftLog, index_key(index), Zeroizing::new(bytes));
        }
        self.store.commit(batch).map_err(fault)
    }

    fn read_range(&self, start: u64, end: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, Fault> {
        let end_key = index_key(end);
        let end = if end == u64::MAX {
            None
        } else {
            Some(end_key.as_slice())
        };
        self.store
            .range(Table::RaftLog, &index_key(start), end, limit)
            .map_err(fault)?
            .into_iter()
            .map(|(k, v)| Ok((index_of(&k)?, v.to_vec())))
            .collect()
    }

    fn last_entry(&self) -> Result<Option<(u64, Vec<u8>)>, Fault> {
        match self.store.last(Table::RaftLog).map_err(fault)? {
            Some((k, v)) => Ok(Some((index_of(&k)?, v.to_vec()))),
            None => Ok(None),
        }
    }

    fn delete_from(&self, start: u64) -> Result<(), Fault> {
        let mut batch = SealedBatch::default();
        batch.delete_range(Table::RaftLog, index_key(start), None);
        self.store.commit(batch).map_err(fault)
    }

    fn delete_through(&self, end: u64) -> Result<(), Fault> {
        let mut batch = SealedBatch::default();
        let stop = end.checked_add(1).map(index_key);
        batch.delete_range(Table::RaftLog, index_key(0), stop);
        self.store.commit(batch).map_err(fault)
    }
}

/// A committed change: where it is in the log, and what applying it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Log index.
    pub index: u64,
    /// The state machine's answer.
    pub outcome: Outcome,
}

/// The unsealed token: its state and the consensus that orders every change of it.
#[derive(Debug)]
pub struct Token {
    state: Arc<TokenState>,
    cluster: Arc<Cluster>,
    runtime: Handle,
}

impl Token {
    /// The token over its state and running consensus.
    pub fn new(state: Arc<TokenState>, cluster: Arc<Cluster>, runtime: Handle) -> Token {
        Token {
            state,
            cluster,
            runtime,
        }
    }

    /// The state (objects, users), as applied here.
    pub fn state(&self) -> &TokenState {
        &self.state
    }

    /// The consensus.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Runs a future from a blocking-pool thread (the handler's).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Proposes one command with the client's request key (0: none given, a fresh one is
    /// used), waits until a quorum committed it and this node applied it, and returns where.
    /// Call from a blocking-pool thread.
    ///
    /// # Errors
    /// `DeviceError` when no quorum commits it within the write timeout (the outcome is then
    /// unknown: a retry with the same key applies at most once) or consensus stopped.
    pub fn commit(&self, command: &Command, key: u128) -> Result<Committed, Error> {
        let key = if key == 0 {
            let mut b = [0u8; 16];
            crate::seal::random_bytes(&mut b)?;
            u128::from_be_bytes(b) | 1
        } else {
            key
        };
        let proposal = Proposal {
            key: RequestKey(key),
            command: postcard::to_allocvec(command)
                .map_err(|e| Error::device(format!("encoding a command failed: {e}")))?,
        };
        let written = self
            .block_on(self.cluster.write(proposal))
            .map_err(|e: ClusterError| {
                tracing::warn!("a mutation failed: {e}");
                Error::from(e)
            })?;
        let timeout = self.cluster.settings().write_timeout;
        // Read-your-writes on this node: the leader applied it; we may be a follower.
        if !self.block_on(self.cluster.wait_applied(written.index, timeout)) {
            tracing::warn!(
                "entry {} is committed but not yet applied here after {timeout:?}",
                written.index
            );
        }
        Ok(Committed {
            index: written.index,
            outcome: Outcome::decode(&written.answer),
        })
    }

    /// Waits (bounded) until this node has applied `index`, for a client that saw it on
    /// another node. Returns whether it has.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        self.cluster.wait_applied(index, timeout).await
    }

    /// The objects a command with `key` created, if a command with that key was applied.
    pub fn already_applied(&self, key: u128) -> Option<(u64, Vec<ObjectId>)> {
        if key == 0 {
            None
        } else {
            self.state.applied_request(key)
        }
    }
}

#[cfg(test)]
mod tests;
