//! Every record AEAD-sealed under the node sealing key, with "table/key" as associated data so
//! a record cannot be moved to another key or table. One record, [`SEAL_META_KEY`], stays in
//! clear: the parameters needed to derive the key at unseal (salt and costs; no secret).

use super::{Batch, Store, Table};
use crate::error::Error;
use crate::seal::NodeSealingKey;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The one clear record: how to derive the node sealing key.
pub const SEAL_META_KEY: &[u8] = b"seal";

fn context(table: Table, key: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(table.name().len() + 1 + key.len());
    c.extend_from_slice(table.name().as_bytes());
    c.push(b'/');
    c.extend_from_slice(key);
    c
}

/// A [`Store`] whose values are sealed under the node sealing key.
#[derive(Debug)]
pub struct SealedStore {
    raw: Arc<dyn Store>,
    nsk: NodeSealingKey,
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// Opened records: (key, plaintext) in key order.
pub type OpenedEntries = Vec<(Vec<u8>, Zeroizing<Vec<u8>>)>;

/// Plaintext writes, sealed at commit.
#[derive(Debug, Default)]
pub struct SealedBatch {
    puts: Vec<(Table, Vec<u8>, Zeroizing<Vec<u8>>)>,
    deletes: Vec<(Table, Vec<u8>)>,
}

impl SealedBatch {
    /// Adds a put of a plaintext value.
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Zeroizing<Vec<u8>>) {
        self.puts.push((table, key, value));
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.deletes.push((table, key));
    }
}

impl SealedStore {
    /// Wraps a raw store with the node sealing key.
    pub fn new(raw: Arc<dyn Store>, nsk: NodeSealingKey) -> SealedStore {
        SealedStore { raw, nsk }
    }

    fn open(&self, table: Table, key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.nsk.open(&context(table, key), sealed).map_err(|_| {
            Error::device(format!(
                "record {}/{} failed authentication: wrong unseal secret or tampered store",
                table.name(),
                hex::encode(key)
            ))
        })
    }

    /// Reads and opens one record.
    ///
    /// # Errors
    /// `DeviceError` if the backend fails or the record does not authenticate.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        match self.raw.get(table, key)? {
            Some(sealed) => Ok(Some(self.open(table, key, &sealed)?)),
            None => Ok(None),
        }
    }

    /// Reads and opens every record of a table, in key order.
    ///
    /// # Errors
    /// As [`SealedStore::get`].
    pub fn scan(&self, table: Table) -> Result<OpenedEntries, Error> {
        let mut out = Vec::new();
        for (k, v) in self.raw.scan(table)? {
            if table == Table::Meta && k == SEAL_META_KEY {
                continue;
            }
            let value = self.open(table, &k, &v)?;
            out.push((k, value));
        }
        Ok(out)
    }

    /// Seals and commits a batch atomically and durably.
    ///
    /// # Errors
    /// If sealing or the backend fails; then nothing was written.
    pub fn commit(&self, batch: SealedBatch) -> Result<(), Error> {
        let mut raw = Batch::default();
        for (table, key, value) in batch.puts {
            let sealed = self.nsk.seal(&context(table, &key), &value)?;
            raw.put(table, key, sealed);
        }
        for (table, key) in batch.deletes {
            raw.delete(table, key);
        }
        Ok(self.raw.commit(raw)?)
    }
}
