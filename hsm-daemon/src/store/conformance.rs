//! The suite every [`Store`] backend must pass: ordering, atomic batches, durability across
//! reopen. `open` must return a handle on the same underlying storage each time it is called.

use super::{Batch, Store, Table};

/// Runs the suite.
pub fn run<S: Store>(open: impl Fn() -> S) {
    {
        let s = open();
        let mut b = Batch::default();
        for i in [3u8, 1, 2] {
            b.put(Table::Objects, vec![i], vec![i * 10]);
        }
        b.put(Table::Users, b"alice".to_vec(), b"x".to_vec());
        s.commit(b).unwrap();
        let keys: Vec<_> = s
            .scan(Table::Objects)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![vec![1], vec![2], vec![3]], "scan is ordered");
        assert_eq!(s.get(Table::Objects, &[2]).unwrap(), Some(vec![20]));
        assert_eq!(
            s.get(Table::Meta, &[2]).unwrap(),
            None,
            "tables are separate"
        );

        let mut b = Batch::default();
        b.delete(Table::Objects, vec![1]);
        b.put(Table::Objects, vec![2], vec![99]);
        s.commit(b).unwrap();
    }
    // Reopened: what was committed is there.
    let s = open();
    assert_eq!(s.get(Table::Objects, &[1]).unwrap(), None);
    assert_eq!(s.get(Table::Objects, &[2]).unwrap(), Some(vec![99]));
    assert_eq!(s.get(Table::Users, b"alice").unwrap(), Some(b"x".to_vec()));

    // Ranges, last, range deletes (before the batch's puts).
    let mut b = Batch::default();
    for i in 1u64..=10 {
        b.put(Table::RaftLog, i.to_be_bytes().to_vec(), vec![i as u8]);
    }
    s.commit(b).unwrap();
    let keys = |entries: super::Entries| -> Vec<u64> {
        entries
            .into_iter()
            .map(|(k, _)| u64::from_be_bytes(k.try_into().unwrap()))
            .collect()
    };
    let r = s
        .range(
            Table::RaftLog,
            &3u64.to_be_bytes(),
            Some(&6u64.to_be_bytes()),
            100,
        )
        .unwrap();
    assert_eq!(keys(r), vec![3, 4, 5], "range is half-open and ordered");
    let r = s
        .range(Table::RaftLog, &8u64.to_be_bytes(), None, 100)
        .unwrap();
    assert_eq!(keys(r), vec![8, 9, 10], "open-ended range");
    let r = s
        .range(Table::RaftLog, &1u64.to_be_bytes(), None, 2)
        .unwrap();
    assert_eq!(keys(r), vec![1, 2], "limit");
    let last = s.last(Table::RaftLog).unwrap().unwrap();
    assert_eq!(last.0, 10u64.to_be_bytes().to_vec());
    assert_eq!(s.last(Table::Requests).unwrap(), None);
    let mut b = Batch::default();
    b.delete_range(Table::RaftLog, 8u64.to_be_bytes().to_vec(), None);
    b.delete_range(
        Table::RaftLog,
        0u64.to_be_bytes().to_vec(),
        Some(3u64.to_be_bytes().to_vec()),
    );
    b.put(Table::RaftLog, 9u64.to_be_bytes().to_vec(), vec![9]);
    s.commit(b).unwrap();
    let r = s.range(Table::RaftLog, &[], None, 100).unwrap();
    assert_eq!(keys(r), vec![3, 4, 5, 6, 7, 9], "range deletes then puts");
}
