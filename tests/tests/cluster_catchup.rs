//! Catch-up of a node that missed writes, on one three-node cluster of real daemons:
//!
//! 1. a follower killed (SIGKILL), keys made without it, the follower restarted and
//!    unsealed: it applies up to the leader's index and the keys work through it;
//! 2. with `[raft] snapshot_every = 20, keep_logs = 5` on every node (rolling restart), a
//!    follower killed and 70 keys made: the leader snapshots and purges its log past the
//!    follower's last entry, so the follower, restarted, can only catch up through a
//!    snapshot; it does, and the keys work through it;
//! 3. a node whose data directory is wiped re-joins under a new id (`wipe_and_rejoin`) and
//!    receives everything.

mod cluster_util;

use cluster_util::{
    Module, SETTLE, assert_converged, own_process, raft, set_raft, settle, step, wait_applied,
    wait_for,
};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use hsm_tests::MultiCluster;
use hsm_tests::keys::{aes_key, by_label, ec_pair, find, sha256};
use std::time::Instant;

/// Every label is found exactly once through the module's node(s), and each EC key signs
/// there and its signature verifies there.
fn usable_through(
    cluster: &MultiCluster,
    module: &mut Module,
    i: usize,
    labels: &[String],
    what: &str,
) {
    let name = cluster.node(i).name.clone();
    module.use_nodes(cluster, &[i]);
    let s = module.session();
    for label in labels {
        let found = find(&s, &by_label(label, None));
        assert!(
            !found.is_empty(),
            "{what}: {label} not found through {name}"
        );
        if let [private] = find(&s, &by_label(label, Some(ObjectClass::PRIVATE_KEY))).as_slice() {
            let [public] = find(&s, &by_label(label, Some(ObjectClass::PUBLIC_KEY)))[..] else {
                panic!("{what}: {label}: no single public half through {name}");
            };
            let digest = sha256(label.as_bytes());
            let sig = s
                .sign(&Mechanism::Ecdsa, *private, &digest)
                .unwrap_or_else(|e| panic!("{what}: C_Sign with {label} through {name}: {e}"));
            s.verify(&Mechanism::Ecdsa, public, &digest, &sig)
                .unwrap_or_else(|e| panic!("{what}: C_Verify with {label} through {name}: {e}"));
        }
    }
}

fn follower_catches_up_from_the_log(
    cluster: &mut MultiCluster,
    module: &mut Module,
) -> Vec<String> {
    let what = step("a killed follower catches up from the log");
    let (leader, _) = settle(cluster);
    let f = (leader + 1) % 3;
    cluster.kill(f);
    module.use_nodes(cluster, &[leader]);
    let s = module.session();
    let mut labels = Vec::new();
    for n in 0..5 {
        let label = format!("missed-ec-{n}");
        ec_pair(&s, true, &label, label.as_bytes());
        labels.push(label);
        let label = format!("missed-aes-{n}");
        aes_key(&s, 32, &label, &[Attribute::Token(true)]);
        labels.push(label);
    }
    drop(s);
    let last = raft(cluster, leader)
        .and_then(|r| r.last_log)
        .expect("leader's last log");
    cluster.restart(f);
    wait_applied(cluster, f, last);
    let (leader, _) = settle(cluster);
    let (lr, fr) = (
        raft(cluster, leader).expect("leader"),
        raft(cluster, f).expect("follower"),
    );
    assert_eq!(
        fr.applied,
        lr.applied,
        "{what}: {} applied {:?}, the leader {:?}",
        cluster.node(f).name,
        fr.applied,
        lr.applied
    );
    usable_through(cluster, module, f, &labels, &what);
    assert_converged(cluster, &[0, 1, 2], &what);
    labels
}

fn follower_catches_up_through_a_snapshot(
    cluster: &mut MultiCluster,
    module: &mut Module,
) -> Vec<String> {
    let what = step("a follower behind a purged log catches up through a snapshot");
    module.finalize();
    for i in 0..cluster.len() {
        set_raft(cluster, i, &[("snapshot_every", 20), ("keep_logs", 5)]);
    }
    // Rolling restart, one node at a time, so the cluster keeps its quorum.
    for i in 0..cluster.len() {
        cluster.restart(i);
        settle(cluster);
    }
    let (leader, _) = settle(cluster);
    let f = (leader + 2) % 3;
    let behind = raft(cluster, f)
        .and_then(|r| r.last_log)
        .expect("follower's last log");
    cluster.kill(f);

    module.use_nodes(cluster, &[leader]);
    let s = module.session();
    let mut labels = Vec::new();
    for n in 0..70 {
        let label = format!("snap-aes-{n:02}");
        aes_key(&s, 32, &label, &[Attribute::Token(true)]);
        labels.push(label);
    }
    ec_pair(&s, true, "snap-ec", b"snap-ec");
    labels.push("snap-ec".into());
    drop(s);
    let lr = wait_for(
        &format!("{what}: the leader purges its log past index {behind}"),
        SETTLE,
        || {
            let r = raft(cluster, leader);
            let purged = r.as_ref().and_then(|r| r.purged);
            (
                purged.is_some_and(|p| p > behind)
                    && r.as_ref().is_some_and(|r| r.snapshot.is_some()),
                r,
            )
        },
    )
    .expect("leader status");
    eprintln!(
        "{what}: follower {} stopped at {behind}; leader snapshot {:?}, purged {:?}, last {:?}",
        cluster.node(f).name,
        lr.snapshot,
        lr.purged,
        lr.last_log
    );

    cluster.restart(f);
    let last = lr.last_log.expect("leader's last log");
    wait_applied(cluster, f, last);
    let fr = raft(cluster, f).expect("follower status");
    assert!(
        fr.snapshot.is_some_and(|s| s > behind),
        "{what}: {} has no snapshot past {behind}: {fr:?}",
        cluster.node(f).name
    );
    usable_through(cluster, module, f, &labels, &what);
    assert_converged(cluster, &[0, 1, 2], &what);
    labels
}

fn wiped_node_rejoins(cluster: &mut MultiCluster, module: &mut Module, labels: &[String]) {
    let what = step("a wiped node re-joins and receives everything");
    module.finalize();
    let (leader, _) = settle(cluster);
    let w = (leader + 1) % 3;
    let old_id = cluster.node(w).node_id;
    cluster.wipe_and_rejoin(w);
    assert_ne!(cluster.node(w).node_id, old_id, "{what}: same node id");
    // The re-joined node runs with the default [raft] table of `node add`; nothing here
    // depends on it.
    let inv = assert_converged(cluster, &[0, 1, 2], &what);
    for label in labels {
        assert!(
            inv.values().any(|l| l == label),
            "{what}: {label} missing after the re-join"
        );
    }
    usable_through(cluster, module, w, labels, &what);
}

#[test]
fn followers_catch_up() {
    own_process(
        "followers_catch_up",
        |_| Vec::new(),
        |_root| {
            let started = Instant::now();
            let mut cluster = MultiCluster::start(3);
            eprintln!("3-node cluster up in {:?}", started.elapsed());
            let mut module = Module::load(&cluster);
            let mut labels = follower_catches_up_from_the_log(&mut cluster, &mut module);
            labels.extend(follower_catches_up_through_a_snapshot(
                &mut cluster,
                &mut module,
            ));
            wiped_node_rejoins(&mut cluster, &mut module, &labels);
            module.finalize();
            eprintln!("followers_catch_up: {:?}", started.elapsed());
        },
    );
}
