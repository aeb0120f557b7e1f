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

/// One opened record: (key, plaintext).
pub type OpenedEntry = (Vec<u8>, Zeroizing<Vec<u8>>);
/// Opened records: (key, plaintext) in key order.
pub type OpenedEntries = Vec<OpenedEntry>;
/// A put (`Some`) or delete (`None`) of one key.
type SealedWrite = (Table, Vec<u8>, Option<Zeroizing<Vec<u8>>>);

/// Plaintext writes, sealed at commit.
#[derive(Debug, Default)]
pub struct SealedBatch {
    ranges: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
    /// Puts (`Some`) and deletes (`None`), in the order given.
    writes: Vec<SealedWrite>,
}

impl SealedBatch {
    /// Adds a put of a plaintext value.
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Zeroizing<Vec<u8>>) {
        self.writes.push((table, key, Some(value)));
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.writes.push((table, key, None));
    }

    /// Adds a delete of every key in `start..end` (`None`: to the end); range deletes run
    /// before the batch's puts and deletes.
    pub fn delete_range(&mut self, table: Table, start: Vec<u8>, end: Option<Vec<u8>>) {
        self.ranges.push((table, start, end));
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.writes.is_empty()
    }
}

impl SealedStore {
    /// Wraps a raw store with the node sealing key.
    pub fn new(raw: Arc<dyn Store>, nsk: NodeSealingKey) -> SealedStore {
        SealedStore { raw, nsk }
    }

    fn open(&self, table: Table, key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.nsk.open(&context(table, key), sealed).map_err(|_| {
            Error::with_cause(
                crate::error::Cause::Store,
                format!(
                    "record {}/{} failed authentication: wrong unseal secret or tampered store",
                    table.name(),
                    hex::encode(key)
                ),
            )
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

    /// Reads and opens the records with `start <= key < end`, in key order, at most `limit`.
    ///
    /// # Errors
    /// As [`SealedStore::get`].
    pub fn range(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<OpenedEntries, Error> {
        let mut out = Vec::new();
        for (k, v) in self.raw.range(table, start, end, limit)? {
            let value = self.open(table, &k, &v)?;
            out.push((k, value));
        }
        Ok(out)
    }

    /// Reads and opens the record with the greatest key.
    ///
    /// # Errors
    /// As [`SealedStore::get`].
    pub fn last(&self, table: Table) -> Result<Option<OpenedEntry>, Error> {
        match self.raw.last(table)? {
            Some((k, v)) => {
                let value = self.open(table, &k, &v)?;
                Ok(Some((k, value)))
            }
            None => Ok(None),
        }
    }

    /// Seals and commits a batch atomically and durably.
    ///
    /// # Errors
    /// If sealing or the backend fails; then nothing was written.
    pub fn commit(&self, batch: SealedBatch) -> Result<(), Error> {
        let mut raw = Batch::default();
        for (table, start, end) in batch.ranges {
            raw.delete_range(table, start, end);
        }
        for (table, key, value) in batch.writes {
            match value {
                Some(value) => {
                    let sealed = self.nsk.seal(&context(table, &key), &value)?;
                    raw.put(table, key, sealed);
                }
                None => raw.delete(table, key),
            }
        }
        Ok(self.raw.commit(raw)?)
    }
}
