//! The multi-node harness itself, driven only through `hsmctl`: a three-node cluster of
//! separate daemons elects one leader, survives a killed follower and a killed leader,
//! brings restarted nodes back, replaces a wiped node under a new id, and pins a module
//! configuration to one node; a PKCS#11 test in its own process with a module pinned to a
//! follower.

use cryptoki::mechanism::Mechanism;
use hsm_tests::MultiCluster;
use hsm_tests::cluster::assert_success;
use hsm_tests::keys::{ec_pair, sha256};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Applies one replicated write (a new user) through the admin CLI on node `i`.
fn write_on(cluster: &MultiCluster, i: usize, user: &str) {
    let out = Command::new(&hsm_tests::artifacts().hsmctl)
        .args([
            "user",
            "create",
            user,
            "--node",
            &cluster.node(i).name,
            "--dir",
        ])
        .arg(&cluster.dir)
        .env("HSM_SO_PIN", &cluster.so_pin)
        .env("HSM_NEW_USER_PASSWORD", "harness-pw-1")
        .stdin(Stdio::null())
        .output()
        .expect("run hsmctl");
    assert_success(&format!("hsmctl user create {user}"), &out);
}

fn states(cluster: &MultiCluster) -> Vec<String> {
    let mut states: Vec<String> = cluster
        .statuses()
        .into_iter()
        .map(|s| s.and_then(|s| s.raft).map_or("down".into(), |r| r.state))
        .collect();
    states.sort();
    states
}

#[test]
fn three_nodes_fail_over_restart_and_rejoin() {
    let mut cluster = MultiCluster::start(3);
    assert_eq!(cluster.len(), 3);
    let ids: Vec<u64> = (0..3).map(|i| cluster.node(i).node_id).collect();
    assert!(ids.iter().all(|&id| id != 0));
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    let leader = cluster.leader();
    let status = cluster.status(leader).expect("the leader answers");
    let raft = status.raft.expect("consensus status");
    assert_eq!(raft.members.len(), 3, "{:?}", raft.members);
    assert!(raft.members.iter().all(|m| m.voter));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            cluster.status(i).and_then(|s| s.raft).map(|r| r.node_id),
            Some(*id)
        );
    }
    write_on(&cluster, leader, "u1");
    let applied = cluster.wait_applied_everywhere(None, Duration::from_secs(60));
    assert!(applied > 0);

    // A follower killed: the others still commit; restarted and unsealed, it catches up.
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    assert!(cluster.status(follower).is_none());
    write_on(&cluster, leader, "u2");
    cluster.restart(follower);
    cluster.wait_applied_everywhere(None, Duration::from_secs(120));

    // Restarted sealed, a node serves nothing until unsealed.
    cluster.restart_sealed(follower);
    let sealed = cluster
        .status(follower)
        .expect("a sealed node answers status");
    assert_eq!(sealed.seal, hsm_proto::msg::SealState::Sealed);
    cluster.unseal(follower);
    cluster.wait_applied_everywhere(None, Duration::from_secs(120));
    assert_eq!(states(&cluster), ["follower", "follower", "leader"]);

    // A node wiped and rejoined gets a new id and catches up from the others.
    let wiped = (leader + 2) % 3;
    let old_id = cluster.node(wiped).node_id;
    cluster.wipe_and_rejoin(wiped);
    assert_ne!(cluster.node(wiped).node_id, old_id);
    cluster.wait_applied_everywhere(None, Duration::from_secs(120));
    assert_eq!(states(&cluster), ["follower", "follower", "leader"]);
    let members = cluster
        .status(cluster.leader())
        .and_then(|s| s.raft)
        .expect("raft")
        .members;
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(members.iter().all(|m| m.node_id != old_id));

    // A module configuration pinned to one node lists that node only.
    let pinned = cluster.module_config_for(wiped);
    let config = hsm_proto::config::ModuleConfig::load(&pinned).expect("pinned config");
    assert_eq!(config.nodes, [cluster.node(wiped).addr()]);
    let all = hsm_proto::config::ModuleConfig::load(&cluster.module_config()).expect("config");
    assert_eq!(all.nodes.len(), 3, "{:?}", all.nodes);
    assert!(all.nodes.contains(&cluster.node(wiped).addr()));

    // The leader killed: another is elected; restarted, the old one follows and catches up.
    let leader = cluster.leader();
    cluster.kill(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    cluster.restart(leader);
    cluster.wait_applied_everywhere(None, Duration::from_secs(120));
    assert_eq!(states(&cluster), ["follower", "follower", "leader"]);

    // Every node, the founder and the joined ones alike, serves the admin (a write on a
    // follower goes to the leader).
    for i in 0..cluster.len() {
        write_on(&cluster, i, &format!("on-node{}", i + 1));
    }
    cluster.wait_applied_everywhere(None, Duration::from_secs(60));
}

#[test]
fn a_module_pinned_to_one_node_uses_the_cluster() {
    hsm_tests::isolated_cluster(
        "a_module_pinned_to_one_node_uses_the_cluster",
        3,
        Some(1),
        |cluster, token| {
            // The module talks to node2 only; the key it makes is replicated everywhere.
            let s = token.user_session();
            let pair = ec_pair(&s, true, "pinned", b"p");
            let digest = sha256(b"pinned");
            let sig = s
                .sign(&Mechanism::Ecdsa, pair.private, &digest)
                .expect("sign on node2");
            s.verify(&Mechanism::Ecdsa, pair.public, &digest, &sig)
                .expect("verify on node2");
            let index = cluster.wait_applied_everywhere(None, Duration::from_secs(60));
            assert!(index > 0);
            for i in 0..cluster.len() {
                let objects = cluster.status(i).expect("status").objects;
                assert!(objects >= 2, "node{} has {objects} objects", i + 1);
            }
        },
    );
}
