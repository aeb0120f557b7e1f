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
}
