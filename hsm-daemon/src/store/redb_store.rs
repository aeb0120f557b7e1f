//! The redb backend: one file, every commit fsynced (redb's default durability).

use super::{Batch, Entries, Entry, Store, StoreError, Table};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

fn def(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

fn e(context: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{context}: {err}"))
}

/// A [`Store`] in a redb file.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Opens (or creates) the store file and makes sure every table exists.
    ///
    /// # Errors
    /// If the file cannot be opened or is not a redb database.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Database::create(path).map_err(|err| e(&path.display().to_string(), err))?;
        let txn = db.begin_write().map_err(|err| e("begin", err))?;
        for table in Table::ALL {
            txn.open_table(def(table))
                .map_err(|err| e("open table", err))?;
        }
        txn.commit().map_err(|err| e("commit", err))?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|err| e("begin read", err))?;
        let t = txn
            .open_table(def(table))
            .map_err(|err| e("open table", err))?;
        let value = t.get(key).map_err(|err| e("get", err))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(&self, table: Table) -> Result<Entries, StoreError> {
        let txn = self.db.begin_read().map_err(|err| e("begin read", err))?;
        let t = txn
            .open_table(def(table))
            .map_err(|err| e("open table", err))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|err| e("scan", err))? {
            let (k, v) = entry.map_err(|err| e("scan", err))?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn range(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let txn = self.db.begin_read().map_err(|err| e("begin read", err))?;
        let t = txn
            .open_table(def(table))
            .map_err(|err| e("open table", err))?;
        let iter = match end {
            Some(end) => t.range(start..end),
            None => t.range(start..),
        }
        .map_err(|err| e("range", err))?;
        let mut out = Vec::new();
        for entry in iter.take(limit) {
            let (k, v) = entry.map_err(|err| e("range", err))?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn last(&self, table: Table) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(|err| e("begin read", err))?;
        let t = txn
            .open_table(def(table))
            .map_err(|err| e("open table", err))?;
        let last = t.last().map_err(|err| e("last", err))?;
        Ok(last.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
    }

    fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|err| e("begin write", err))?;
        for r in &batch.ranges {
            let mut t = txn
                .open_table(def(r.table))
                .map_err(|err| e("open table", err))?;
            let start = r.start.as_slice();
            match &r.end {
                Some(end) => t.retain_in(start..end.as_slice(), |_, _| false),
                None => t.retain_in(start.., |_, _| false),
            }
            .map_err(|err| e("delete range", err))?;
        }
        {
            for w in &batch.writes {
                let mut t = txn
                    .open_table(def(w.table))
                    .map_err(|err| e("open table", err))?;
                match &w.value {
                    Some(v) => {
                        t.insert(w.key.as_slice(), v.as_slice())
                            .map_err(|err| e("put", err))?;
                    }
                    None => {
                        t.remove(w.key.as_slice()).map_err(|err| e("delete", err))?;
                    }
                }
            }
        }
        txn.commit().map_err(|err| e("commit", err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_passes_the_store_conformance_suite() {
        let dir = std::env::temp_dir().join(format!("hsm-redb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        let _ = std::fs::remove_file(&path);
        super::super::conformance::run(|| RedbStore::open(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
