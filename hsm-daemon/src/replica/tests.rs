//! openraft's storage suite over the real parts: the sealed redb store as the log, the token
//! state as the state machine, snapshots sealed under the CDK. Plus what the suite leaves out:
//! reopening, commands and their deduplication.

use super::SealedLog;
use crate::seal::{ClusterDomainKey, UnsealMethod};
use crate::store::redb_store::RedbStore;
use crate::store::sealed::SealedStore;
use crate::token::{ClusterIdentity, Command, Outcome, TokenState};
use crate::users;
use cluster_sync::openraft::testing::{StoreBuilder, Suite};
use cluster_sync::openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, StorageError};
use cluster_sync::{
    Batch, LogStore, Proposal, RequestKey, SnapshotStore, StateMachine, TypeConfig,
};
use hsm_proto::msg::{Role, UnsealSecret};
use hsm_proto::{Password, SecretBytes};
use std::sync::{Arc, OnceLock};
use zeroize::Zeroizing;

/// One CDK and identity for every store a test makes, as in one cluster.
fn cluster() -> &'static (Zeroizing<[u8; 32]>, ClusterIdentity) {
    static C: OnceLock<(Zeroizing<[u8; 32]>, ClusterIdentity)> = OnceLock::new();
    C.get_or_init(|| {
        let cdk = ClusterDomainKey::generate().unwrap();
        (
            Zeroizing::new(*cdk.expose_secret()),
            ClusterIdentity::generate("suite").unwrap(),
        )
    })
}

fn sealed_store(dir: &std::path::Path) -> Arc<SealedStore> {
    let raw = Arc::new(RedbStore::open(&dir.join("store.redb")).unwrap());
    static METHOD: OnceLock<UnsealMethod> = OnceLock::new();
    let method = METHOD.get_or_init(|| UnsealMethod::new_dev_key_file().unwrap());
    let nsk = method
        .derive(&UnsealSecret::DevKey(SecretBytes::new(vec![7; 32])))
        .unwrap();
    Arc::new(SealedStore::new(raw, nsk))
}

fn new_state(dir: &std::path::Path) -> (Arc<SealedStore>, Arc<TokenState>) {
    let store = sealed_store(dir);
    let (cdk, identity) = cluster();
    let cdk = ClusterDomainKey::from_bytes(cdk.clone()).unwrap();
    let admin = users::new_record(Role::Admin, &Password::new("password1".into())).unwrap();
    TokenState::initialize(&store, &cdk, identity, ("admin", admin)).unwrap();
    let state = Arc::new(TokenState::load(store.clone(), "suite").unwrap());
    (store, state)
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, SnapshotStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, SnapshotStore), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = new_state(dir.path());
        let log = LogStore::new(Arc::new(SealedLog::new(store)));
        let sm = SnapshotStore::new(state, dir.path().join("snapshots")).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn sealed_redb_log_and_token_state_pass_the_openraft_suite() {
    Suite::test_all(Builder).unwrap();
}

fn entry(index: u64, key: u128, command: &Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Batch(vec![Proposal {
            key: RequestKey(key),
            command: postcard::to_allocvec(command).unwrap(),
        }])),
    }
}

fn user_command(name: &str) -> Command {
    Command::PutUser {
        name: name.into(),
        user: users::new_record(Role::CryptoUser, &Password::new("password1".into())).unwrap(),
    }
}

#[test]
fn a_retried_request_applies_once_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state) = new_state(dir.path());
    let out = state
        .apply(vec![
            entry(1, 42, &user_command("bob")),
            entry(2, 42, &user_command("carol")),
            entry(3, 0, &Command::DestroyObject(hsm_proto::ObjectId(9))),
        ])
        .unwrap();
    let outcomes: Vec<Outcome> = out.iter().map(|a| Outcome::decode(&a.0[0])).collect();
    assert_eq!(outcomes[0], Outcome::Applied);
    assert_eq!(
        outcomes[1],
        Outcome::Duplicate {
            index: 1,
            objects: vec![]
        }
    );
    assert_eq!(outcomes[2], Outcome::Applied);
    assert!(state.user("bob").unwrap().is_some());
    assert!(
        state.user("carol").unwrap().is_none(),
        "the duplicate changed nothing"
    );
    assert_eq!(state.applied_index(), 3);
    drop(state);
    drop(store);

    // Reopened: the state, the position and the remembered key are all there.
    let store = sealed_store(dir.path());
    let state = TokenState::load(store, "suite").unwrap();
    assert_eq!(state.applied_index(), 3);
    assert!(state.user("bob").unwrap().is_some());
    let out = state
        .apply(vec![entry(4, 42, &user_command("dave"))])
        .unwrap();
    assert!(matches!(
        Outcome::decode(&out[0].0[0]),
        Outcome::Duplicate { index: 1, .. }
    ));
    assert!(state.user("dave").unwrap().is_none());
    let garbage = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 5),
        payload: EntryPayload::Normal(Batch(vec![Proposal {
            key: RequestKey(7),
            command: vec![0xff; 3],
        }])),
    };
    let out = state.apply(vec![garbage]).unwrap();
    assert_eq!(Outcome::decode(&out[0].0[0]), Outcome::Undecodable);
    assert_eq!(
        state.applied_index(),
        5,
        "an undecodable entry still advances"
    );
}

#[test]
fn one_entry_holds_several_calls_each_applied_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, state) = new_state(dir.path());
    let proposal = |key: u128, command: &Command| Proposal {
        key: RequestKey(key),
        command: postcard::to_allocvec(command).unwrap(),
    };
    let batch = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Normal(Batch(vec![
            proposal(1, &user_command("bob")),
            Proposal {
                key: RequestKey(2),
                command: vec![0xff],
            },
            proposal(1, &user_command("eve")),
            proposal(3, &user_command("carol")),
        ])),
    };
    let out = state.apply(vec![batch]).unwrap();
    assert_eq!(out.len(), 1, "one answer per entry");
    let answers: Vec<Outcome> = out[0].0.iter().map(|a| Outcome::decode(a)).collect();
    assert_eq!(
        answers,
        vec![
            Outcome::Applied,
            Outcome::Undecodable,
            Outcome::Duplicate {
                index: 1,
                objects: vec![]
            },
            Outcome::Applied
        ]
    );
    assert!(state.user("bob").unwrap().is_some());
    assert!(state.user("eve").unwrap().is_none());
    assert!(state.user("carol").unwrap().is_some());
}

#[test]
fn a_snapshot_from_another_cluster_or_with_a_flipped_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, state) = new_state(dir.path());
    state
        .apply(vec![entry(1, 1, &user_command("bob"))])
        .unwrap();
    let mut snap = Vec::new();
    let (last, membership) = state.write_snapshot(&mut snap).unwrap();
    assert_eq!(last.map(|l| l.index), Some(1));
    let meta = cluster_sync::SnapshotMeta {
        last_log_id: last,
        last_membership: membership,
        snapshot_id: "t".into(),
    };
    assert!(
        !snap.windows(8).any(|w| w == b"password"),
        "records are sealed"
    );
    let dir2 = tempfile::tempdir().unwrap();
    let (_s2, other) = new_state(dir2.path());
    let mut flipped = snap.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    assert!(other.install_snapshot(&meta, &mut &flipped[..]).is_err());
    assert!(
        other
            .install_snapshot(&meta, &mut &snap[..snap.len() - 1])
            .is_err()
    );
    assert!(
        other.user("bob").unwrap().is_none(),
        "a refused snapshot changes nothing"
    );
    other.install_snapshot(&meta, &mut &snap[..]).unwrap();
    assert!(other.user("bob").unwrap().is_some());
    assert_eq!(other.applied_index(), 1);
}
