use super::*;
use hsm_proto::msg::{MemberStatus, RaftStatus};

fn member(id: u64, name: &str, port: u16, voter: bool) -> MemberStatus {
    MemberStatus {
        node_id: id,
        name: name.into(),
        client_addr: format!("127.0.0.1:{port}"),
        cluster_addr: format!("127.0.0.1:{}", port + 1),
        voter,
        matched: None,
    }
}

fn members() -> Vec<MemberStatus> {
    vec![
        member(11, "node1", 5700, true),
        member(22, "node2", 5702, true),
        member(33, "node3", 5704, true),
    ]
}

fn up(name: &str, id: u64, state: &str, term: u64, last: u64, applied: u64) -> NodeStatus {
    NodeStatus {
        node: name.into(),
        cluster: "hsm-dev".into(),
        seal: SealState::Unsealed,
        dev_unseal: true,
        objects: 3,
        version: "0.1.0".into(),
        cluster_id: Some("c0ffee".into()),
        raft: Some(RaftStatus {
            node_id: id,
            state: state.into(),
            term,
            leader: Some(11),
            last_log: Some(last),
            applied: Some(applied),
            snapshot: None,
            purged: None,
            millis_since_quorum_ack: None,
            members: members(),
        }),
        requests: 0,
    }
}

fn report(port: u16, outcome: std::result::Result<NodeStatus, String>) -> NodeReport {
    NodeReport {
        addr: format!("127.0.0.1:{port}"),
        outcome,
    }
}

#[test]
fn lag_is_measured_against_the_leader_and_names_come_from_members() {
    let view = ClusterView::new(&[
        report(5700, Ok(up("node1", 11, "leader", 4, 120, 120))),
        report(5702, Ok(up("node2", 22, "follower", 4, 118, 100))),
        report(
            5704,
            Err("cannot reach the node at 127.0.0.1:5704: refused".into()),
        ),
    ]);
    assert_eq!(view.leader, Some(11));
    assert_eq!(view.leader_name.as_deref(), Some("node1"));
    assert_eq!(view.cluster_id.as_deref(), Some("c0ffee"));
    let lags: Vec<Option<u64>> = view.nodes.iter().map(|r| r.lag).collect();
    assert_eq!(lags, [Some(0), Some(20), None]);
    // The unreachable node is known by its address from the members list.
    let down = &view.nodes[2];
    assert_eq!(
        (down.name.as_deref(), down.node_id, down.state.as_str()),
        (Some("node3"), Some(33), "unreachable")
    );
    assert!(view.any_reachable());
}

#[test]
fn the_table_has_one_aligned_row_per_node() {
    let mut sealed = up("node3", 33, "follower", 0, 0, 0);
    sealed.seal = SealState::Sealed;
    sealed.raft = None;
    sealed.cluster_id = None;
    let view = ClusterView::new(&[
        report(5700, Ok(up("node1", 11, "leader", 4, 120, 120))),
        report(5702, Ok(up("node2", 22, "follower", 4, 118, 100))),
        report(5704, Ok(sealed)),
    ]);
    let table = view.table();
    let expected = "\
cluster: hsm-dev (id c0ffee)
leader:  node1
unseal:  development key file (NOT for production)

NAME   ID  ADDRESS         STATE     RAFT      TERM  LAST LOG  APPLIED  LAG  REQUESTS  LEADER
node1  11  127.0.0.1:5700  unsealed  leader    4     120       120      0    0         node1
node2  22  127.0.0.1:5702  unsealed  follower  4     118       100      20   0         node1
node3  33  127.0.0.1:5704  sealed    -         -     -         -        -    0         -

node3 is SEALED: unseal it with `hsmctl unseal --node node3`
";
    assert_eq!(table, expected, "got:\n{table}");
}

#[test]
fn the_leader_of_the_highest_term_wins_and_no_leader_means_no_lag() {
    // A partitioned old leader still believes it leads in term 3.
    let view = ClusterView::new(&[
        report(5700, Ok(up("node1", 11, "leader", 3, 50, 50))),
        report(5702, Ok(up("node2", 22, "leader", 5, 60, 58))),
    ]);
    assert_eq!(view.leader, Some(22));
    assert_eq!(view.nodes[0].lag, Some(10));
    assert_eq!(view.nodes[1].lag, Some(2));

    let view = ClusterView::new(&[
        report(5700, Ok(up("node1", 11, "candidate", 6, 50, 50))),
        report(5702, Err("down".into())),
    ]);
    assert_eq!(view.leader, None);
    assert!(view.nodes.iter().all(|r| r.lag.is_none()));
    assert!(view.table().contains("leader:  none known\n"));
    assert!(view.table().contains("node2 is unreachable: down"));
}

#[test]
fn nothing_reachable_is_reported_as_such() {
    let view = ClusterView::new(&[report(5700, Err("refused".into()))]);
    assert!(!view.any_reachable());
    assert_eq!(view.cluster, None);
    assert!(view.table().starts_with("cluster: no node answered\n"));
    assert_eq!(view.nodes[0].name, None);
    assert!(
        view.table()
            .contains("\n?     -   127.0.0.1:5700  unreachable")
    );
}

#[test]
fn json_is_one_document_with_the_full_answers() {
    let view = ClusterView::new(&[
        report(5700, Ok(up("node1", 11, "leader", 4, 120, 120))),
        report(5702, Err("refused".into())),
    ]);
    let doc: serde_json::Value = serde_json::from_str(&view.json().unwrap()).unwrap();
    assert_eq!(doc["leader"], 11);
    assert_eq!(doc["leader_name"], "node1");
    assert_eq!(doc["nodes"][0]["state"], "unsealed");
    assert_eq!(doc["nodes"][0]["raft_state"], "leader");
    assert_eq!(
        doc["nodes"][0]["status"]["raft"]["members"][1]["name"],
        "node2"
    );
    assert_eq!(doc["nodes"][1]["state"], "unreachable");
    assert_eq!(doc["nodes"][1]["name"], "node2");
    assert_eq!(doc["nodes"][1]["error"], "refused");
    assert!(doc["nodes"][1]["status"].is_null());
    // The full answer reads back as the protocol type.
    let status: NodeStatus = serde_json::from_value(doc["nodes"][0]["status"].clone()).unwrap();
    assert_eq!(status.node, "node1");
}
