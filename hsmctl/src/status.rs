//! `hsmctl status`: every node of the configuration asked for its status, one row each, as a
//! table for people or one JSON document for scripts.
//!
//! Gathering is I/O ([`gather`]); turning the answers into rows and text is pure
//! ([`ClusterView::new`], [`ClusterView::table`], [`ClusterView::json`]) and unit-tested.

use crate::client::NodeClient;
use crate::error::{CtlError, Result};
use hsm_proto::config::ModuleConfig;
use hsm_proto::msg::{NodeStatus, SealState};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long one node may take to answer a status request, connection included.
const STATUS_TIMEOUT: Duration = Duration::from_secs(20);

/// What one node answered.
#[derive(Clone, Debug)]
pub struct NodeReport {
    /// The address asked.
    pub addr: String,
    /// Its status, or why there is none.
    pub outcome: std::result::Result<NodeStatus, String>,
}

/// Asks every node of `config` for its status, all at once; the reports come back in the
/// configuration's order.
pub async fn gather(config: &ModuleConfig) -> Vec<NodeReport> {
    let config = Arc::new(config.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, addr) in config.nodes.iter().enumerate() {
        let config = Arc::clone(&config);
        let addr = addr.clone();
        tasks.spawn(async move {
            let ask = async {
                let mut client = NodeClient::connect_to(&config, &addr).await?;
                client.status().await
            };
            let outcome = match tokio::time::timeout(STATUS_TIMEOUT, ask).await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {}s", STATUS_TIMEOUT.as_secs())),
            };
            (i, NodeReport { addr, outcome })
        });
    }
    let mut reports: Vec<Option<NodeReport>> = vec![None; config.nodes.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, report)) = joined {
            reports[i] = Some(report);
        }
    }
    reports
        .into_iter()
        .zip(config.nodes.iter())
        .map(|(r, addr)| {
            r.unwrap_or_else(|| NodeReport {
                addr: addr.clone(),
                outcome: Err("the status task failed".into()),
            })
        })
        .collect()
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The node's name (from its answer, else from a member list that has its address).
    pub name: Option<String>,
    /// Its node id.
    pub node_id: Option<u64>,
    /// The address asked.
    pub address: String,
    /// `sealed`, `unsealed`, `awaiting-join` or `unreachable`.
    pub state: String,
    /// `leader`, `follower`, `candidate`, `learner`, or none before consensus runs.
    pub raft_state: Option<String>,
    /// Its current term.
    pub term: Option<u64>,
    /// The last index of its log.
    pub last_log: Option<u64>,
    /// The last index it applied.
    pub applied: Option<u64>,
    /// The leader's last log index minus this node's applied index.
    pub lag: Option<u64>,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// That leader's name, when some node knows it.
    pub leader_name: Option<String>,
    /// Why the node did not answer.
    pub error: Option<String>,
    /// Its full answer.
    pub status: Option<NodeStatus>,
}

impl Row {
    /// Whether the node answered.
    pub fn reachable(&self) -> bool {
        self.status.is_some()
    }
}

/// The whole cluster as the nodes answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// The cluster's name, from the first node that answered.
    pub cluster: Option<String>,
    /// The cluster's id, from the first node that knows it.
    pub cluster_id: Option<String>,
    /// The leader: the node reporting itself leader in the highest term.
    pub leader: Option<u64>,
    /// The leader's name.
    pub leader_name: Option<String>,
    /// Whether some node unseals with a development key file.
    pub dev_unseal: bool,
    /// One row per address, in the configuration's order.
    pub nodes: Vec<Row>,
}

/// The word for a seal state.
pub fn seal_word(seal: SealState) -> &'static str {
    match seal {
        SealState::Sealed => "sealed",
        SealState::Unsealed => "unsealed",
        SealState::AwaitingJoin => "awaiting-join",
    }
}

impl ClusterView {
    /// Rows from the nodes' answers.
    pub fn new(reports: &[NodeReport]) -> ClusterView {
        let statuses: Vec<&NodeStatus> = reports
            .iter()
            .filter_map(|r| r.outcome.as_ref().ok())
            .collect();
        // Names and ids by address and by id, from what every node says of itself and of
        // its members.
        let mut name_of_id: BTreeMap<u64, String> = BTreeMap::new();
        let mut member_at: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
        for status in &statuses {
            if let Some(raft) = &status.raft {
                for m in &raft.members {
                    name_of_id
                        .entry(m.node_id)
                        .or_insert_with(|| m.name.clone());
                    member_at.insert(m.client_addr.as_str(), (m.node_id, m.name.as_str()));
                }
            }
        }
        for status in &statuses {
            if let Some(raft) = &status.raft {
                name_of_id.insert(raft.node_id, status.node.clone());
            }
        }
        let leader_raft = statuses
            .iter()
            .filter_map(|s| s.raft.as_ref())
            .filter(|r| r.state == "leader")
            .max_by_key(|r| r.term);
        let leader = leader_raft.map(|r| r.node_id);
        let leader_last_log = leader_raft.and_then(|r| r.last_log);

        let nodes = reports
            .iter()
            .map(|report| match &report.outcome {
                Ok(status) => {
                    let raft = status.raft.as_ref();
                    let member = member_at.get(report.addr.as_str());
                    let applied = raft.and_then(|r| r.applied);
                    let known_leader = raft.and_then(|r| r.leader);
                    Row {
                        name: Some(status.node.clone()),
                        node_id: raft.map(|r| r.node_id).or(member.map(|(id, _)| *id)),
                        address: report.addr.clone(),
                        state: seal_word(status.seal).to_owned(),
                        raft_state: raft.map(|r| r.state.clone()),
                        term: raft.map(|r| r.term),
                        last_log: raft.and_then(|r| r.last_log),
                        applied,
                        lag: match (leader_last_log, raft) {
                            (Some(last), Some(_)) => {
                                Some(last.saturating_sub(applied.unwrap_or(0)))
                            }
                            _ => None,
                        },
                        leader: known_leader,
                        leader_name: known_leader.and_then(|id| name_of_id.get(&id).cloned()),
                        error: None,
                        status: Some(status.clone()),
                    }
                }
                Err(error) => {
                    let member = member_at.get(report.addr.as_str());
                    Row {
                        name: member.map(|(_, name)| (*name).to_owned()),
                        node_id: member.map(|(id, _)| *id),
                        address: report.addr.clone(),
                        state: "unreachable".into(),
                        raft_state: None,
                        term: None,
                        last_log: None,
                        applied: None,
                        lag: None,
                        leader: None,
                        leader_name: None,
                        error: Some(error.clone()),
                        status: None,
                    }
                }
            })
            .collect();
        ClusterView {
            cluster: statuses.first().map(|s| s.cluster.clone()),
            cluster_id: statuses.iter().find_map(|s| s.cluster_id.clone()),
            leader,
            leader_name: leader.and_then(|id| name_of_id.get(&id).cloned()),
            dev_unseal: statuses.iter().any(|s| s.dev_unseal),
            nodes,
        }
    }

    /// Whether at least one node answered.
    pub fn any_reachable(&self) -> bool {
        self.nodes.iter().any(Row::reachable)
    }

    /// The table for people: a line about the cluster, one row per node, and what to do about
    /// sealed or unreachable nodes.
    pub fn table(&self) -> String {
        let dash = || "-".to_owned();
        let num = |n: Option<u64>| n.map_or_else(dash, |n| n.to_string());
        let header = [
            "NAME", "ID", "ADDRESS", "STATE", "RAFT", "TERM", "LAST LOG", "APPLIED", "LAG",
            "REQUESTS", "LEADER",
        ];
        let rows: Vec<[String; 11]> = self
            .nodes
            .iter()
            .map(|r| {
                [
                    r.name.clone().unwrap_or_else(|| "?".into()),
                    num(r.node_id),
                    r.address.clone(),
                    r.state.clone(),
                    r.raft_state.clone().unwrap_or_else(dash),
                    num(r.term),
                    num(r.last_log),
                    num(r.applied),
                    num(r.lag),
                    num(r.status.as_ref().map(|s| s.requests)),
                    match (&r.leader_name, r.leader) {
                        (Some(name), _) => name.clone(),
                        (None, Some(id)) => id.to_string(),
                        (None, None) => dash(),
                    },
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<w$}  "));
                }
            }
            out.trim_end().to_owned() + "\n"
        };

        let mut out = String::new();
        match (&self.cluster, &self.cluster_id) {
            (Some(name), Some(id)) => out.push_str(&format!("cluster: {name} (id {id})\n")),
            (Some(name), None) => out.push_str(&format!("cluster: {name}\n")),
            _ => out.push_str("cluster: no node answered\n"),
        }
        match &self.leader_name {
            Some(name) => out.push_str(&format!("leader:  {name}\n")),
            None if self.leader.is_some() => {
                out.push_str(&format!("leader:  {}\n", num(self.leader)));
            }
            None => out.push_str("leader:  none known\n"),
        }
        if self.dev_unseal {
            out.push_str("unseal:  development key file (NOT for production)\n");
        }
        out.push('\n');
        out.push_str(&line(&header.map(str::to_owned)));
        for row in &rows {
            out.push_str(&line(row));
        }
        for r in &self.nodes {
            let who = r.name.clone().unwrap_or_else(|| r.address.clone());
            match (r.state.as_str(), &r.error) {
                ("sealed", _) => out.push_str(&format!(
                    "\n{who} is SEALED: unseal it with `hsmctl unseal --node {who}`"
                )),
                ("awaiting-join", _) => out.push_str(&format!(
                    "\n{who} is waiting to join: `hsmctl node join --name {who}`"
                )),
                (_, Some(error)) => out.push_str(&format!("\n{who} is unreachable: {error}")),
                _ => {}
            }
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }

    /// The JSON document for scripts.
    ///
    /// # Errors
    /// If encoding fails (it does not for these types).
    pub fn json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| CtlError::Unexpected(format!("cannot encode JSON: {e}")))
    }
}

/// `hsmctl status [--json]`: asks every node of the configuration. Succeeds when at least one
/// node answers (sealed or not); fails, naming the last error, when none does.
///
/// # Errors
/// If no node answers.
pub async fn run(config: &ModuleConfig, json: bool) -> Result<()> {
    let reports = gather(config).await;
    let view = ClusterView::new(&reports);
    if json {
        println!("{}", view.json()?);
    } else {
        print!("{}", view.table());
    }
    if view.any_reachable() {
        Ok(())
    } else {
        Err(reports
            .iter()
            .rev()
            .find_map(|r| r.outcome.as_ref().err())
            .map_or_else(
                || CtlError::Config("the configuration names no node".into()),
                |e| CtlError::NoNode(e.clone()),
            ))
    }
}

#[cfg(test)]
mod tests;
