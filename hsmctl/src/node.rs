//! `hsmctl node add | join | remove`: growing and shrinking a cluster.
//!
//! A node joins in two commands because an operator must start and unseal it in between:
//!
//! 1. `node add` issues the node's certificate (a new node id) from `D/ca.key`, writes
//!    `D/<name>/node.toml` and runs `hsm-daemon init --join` (a store without the cluster
//!    domain key);
//! 2. the operator runs `hsm-daemon run` for it and unseals it (`hsmctl unseal --node <name>`):
//!    it waits, `awaiting-join`;
//! 3. `node join` asks it for a fresh public key, has a member wrap the cluster domain key to
//!    that key (admin login), hands the package to the new node, asks the cluster to add it
//!    (it catches up as a learner, then votes), and adds its client address to
//!    `D/pkcs11.toml` and `D/admin.toml`.
//!
//! `node join` can be run again after a failure: it continues from where the node is.

use crate::client::{NodeClient, load_config};
use crate::daemon;
use crate::error::{CtlError, Result};
use crate::init::{Created, check_node_name, node_ports, toml_of};
use crate::layout::{ClusterDir, NodeToml, fresh_node_id, replace};
use crate::pki::ClusterCa;
use crate::secret_input;
use crate::status::{self, ClusterView};
use hsm_proto::Password;
use hsm_proto::config::ModuleConfig;
use hsm_proto::msg::{SealState, UserType};
use std::fs;
use std::path::PathBuf;

/// What `node add` is asked to do.
#[derive(Debug)]
pub struct AddOptions {
    /// The cluster directory (made by `hsmctl init`).
    pub dir: PathBuf,
    /// The new node's name.
    pub name: String,
    /// Its client port.
    pub listen: String,
    /// Its cluster port (default: client port + 1).
    pub cluster_listen: Option<String>,
    /// Development mode: unseal with `D/dev.key`.
    pub dev: bool,
    /// An explicit `hsm-daemon`.
    pub daemon_bin: Option<PathBuf>,
}

/// What `node add` made.
#[derive(Debug)]
pub struct Added {
    /// The cluster directory.
    pub dir: ClusterDir,
    /// The node's configuration file.
    pub node_toml: PathBuf,
    /// Its configuration.
    pub node: NodeToml,
}

/// `hsmctl node add`.
///
/// # Errors
/// If the directory is not a cluster directory with its CA key, the node exists, an address
/// is invalid or taken by another node of the directory, or a step fails (what was made is
/// removed again).
pub fn add(opts: &AddOptions) -> Result<Added> {
    let dir = ClusterDir::new(&opts.dir)?;
    for needed in [dir.ca_cert(), dir.ca_key(), dir.admin_toml()] {
        if !needed.is_file() {
            return Err(CtlError::Usage(format!(
                "{} is not a cluster directory with its CA key (no {}): run `hsmctl init` \
                 first, or add the node where the CA key is kept",
                dir.root().display(),
                needed.display()
            )));
        }
    }
    check_node_name(&opts.name)?;
    let node_dir = dir.node_dir(&opts.name);
    if node_dir.exists() {
        return Err(CtlError::Usage(format!(
            "{} exists: node {:?} was added before (a removed node's directory must be \
             deleted before its name is used again)",
            node_dir.display(),
            opts.name
        )));
    }
    let (listen, cluster_listen) = node_ports(&opts.listen, opts.cluster_listen.as_deref())?;
    for other in dir.node_names()? {
        let them = NodeToml::load(&dir.node_toml(&other))?;
        for mine in [listen.to_string(), cluster_listen.to_string()] {
            if mine == them.listen || mine == them.cluster_listen {
                return Err(CtlError::Usage(format!(
                    "{mine} is already used by node {other} ({})",
                    dir.node_toml(&other).display()
                )));
            }
        }
    }
    let dev_key = if opts.dev {
        if !dir.dev_key().is_file() {
            return Err(CtlError::Usage(format!(
                "--dev: {} does not exist; this cluster was not made with `init --dev`",
                dir.dev_key().display()
            )));
        }
        Some(dir.dev_key())
    } else {
        None
    };
    let bin = daemon::locate(opts.daemon_bin.as_deref())?;
    let passphrase = match dev_key {
        Some(_) => None,
        None => Some(secret_input::obtain(
            secret_input::ENV_UNSEAL,
            &format!("New unseal passphrase for node {:?}: ", opts.name),
            true,
        )?),
    };
    let ca = load_ca(&dir)?;

    let mut created = Created::default();
    let result = (|| {
        created.dir(&node_dir)?;
        let node_id = fresh_node_id()?;
        created.issued(
            &node_dir.join("node.pem"),
            &node_dir.join("node.key"),
            &ca.issue_node(&opts.name, node_id)?,
        )?;
        let node = NodeToml::standard(
            &opts.name,
            node_id,
            &listen.to_string(),
            &cluster_listen.to_string(),
        );
        let node_toml = dir.node_toml(&opts.name);
        created.file(&node_toml, toml_of(&node)?.as_bytes(), 0o644)?;
        created.dir(&node_dir.join("data"))?;
        daemon::init_joiner_store(&bin, &node_toml, dev_key.as_deref(), passphrase.as_ref())?;
        Ok((node_toml, node))
    })();
    match result {
        Ok((node_toml, node)) => Ok(Added {
            dir,
            node_toml,
            node,
        }),
        Err(e) => {
            created.undo();
            Err(e)
        }
    }
}

fn load_ca(dir: &ClusterDir) -> Result<ClusterCa> {
    let read = |path: PathBuf| {
        fs::read_to_string(&path)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| CtlError::io("read", &path, e))
    };
    ClusterCa::load(&read(dir.ca_cert())?, &read(dir.ca_key())?)
}

/// Prints what `node add` made and the next steps.
pub fn report_added(added: &Added, dev: bool) {
    let root = added.dir.root().display();
    let name = &added.node.node_name;
    println!(
        "Added node {name} (id {}) in {}",
        added.node.node_id,
        added.dir.node_dir(name).display()
    );
    println!(
        "  client port {}, cluster port {}",
        added.node.listen, added.node.cluster_listen
    );
    println!("It is sealed and not yet a member. Next:");
    println!("  hsm-daemon run --config {}", added.node_toml.display());
    if dev {
        println!(
            "  hsmctl unseal --dir {root} --node {name} --dev-key-file {}",
            added.dir.dev_key().display()
        );
    } else {
        println!("  hsmctl unseal --dir {root} --node {name}");
    }
    println!("  hsmctl node join --dir {root} --name {name}");
}

/// The admin PIN (`name:password`) from `$HSM_SO_PIN` or a prompt.
///
/// # Errors
/// If it cannot be read.
pub fn admin_pin() -> Result<Password> {
    secret_input::obtain(
        secret_input::ENV_SO_PIN,
        "Admin PIN (name:password): ",
        false,
    )
}

/// Adds `addr` to a node list unless it is there. Returns whether the list changed.
pub fn with_node(nodes: &mut Vec<String>, addr: &str) -> bool {
    if nodes.iter().any(|n| n == addr) {
        false
    } else {
        nodes.push(addr.to_owned());
        true
    }
}

/// Removes `addr` from a node list, unless it is the only one left (a configuration must
/// name a node). Returns whether the list changed.
pub fn without_node(nodes: &mut Vec<String>, addr: &str) -> bool {
    let before = nodes.len();
    let kept: Vec<String> = nodes.iter().filter(|n| *n != addr).cloned().collect();
    if kept.is_empty() || kept.len() == before {
        false
    } else {
        *nodes = kept;
        true
    }
}

/// Applies `edit` to the node lists of `D/pkcs11.toml` and `D/admin.toml` (each rewritten
/// only if it changed).
///
/// # Errors
/// If a file cannot be read or written.
pub fn edit_client_configs(
    dir: &ClusterDir,
    edit: impl Fn(&mut Vec<String>) -> bool,
) -> Result<()> {
    for path in [dir.pkcs11_toml(), dir.admin_toml()] {
        if !path.is_file() {
            continue;
        }
        let mut config = load_config(&path)?;
        if edit(&mut config.nodes) {
            replace(&path, toml_of(&config)?.as_bytes(), 0o644)?;
        }
    }
    Ok(())
}

/// `config` narrowed to the given addresses.
fn only(config: &ModuleConfig, nodes: Vec<String>) -> ModuleConfig {
    ModuleConfig {
        nodes,
        ..config.clone()
    }
}

/// Connects, as the admin, to the member best placed to change the membership: the leader if
/// some node knows it, else the first unsealed member. `except` is never chosen.
async fn admin_session(
    admin: &ModuleConfig,
    except: &[String],
    so_pin: &Password,
) -> Result<NodeClient> {
    let members: Vec<String> = admin
        .nodes
        .iter()
        .filter(|n| !except.contains(n))
        .cloned()
        .collect();
    if members.is_empty() {
        return Err(CtlError::Usage(
            "the admin configuration names no other member of the cluster".into(),
        ));
    }
    let candidates = only(admin, members);
    let view = ClusterView::new(&status::gather(&candidates).await);
    let leader_addr = view
        .nodes
        .iter()
        .find(|r| r.node_id.is_some() && r.node_id == view.leader)
        .map(|r| r.address.clone());
    let unsealed = view
        .nodes
        .iter()
        .filter(|r| r.state == "unsealed")
        .map(|r| r.address.clone());
    let order: Vec<String> = leader_addr.into_iter().chain(unsealed).collect();
    let Some(first) = order.first() else {
        return Err(CtlError::Usage(format!(
            "no member is up and unsealed (asked {}); unseal the cluster first",
            candidates.nodes.join(", ")
        )));
    };
    let mut client = NodeClient::connect_to(admin, first).await?;
    let (user, password) = secret_input::split_pin(so_pin)?;
    client
        .login(UserType::SecurityOfficer, &user, password)
        .await?;
    Ok(client)
}

/// What `node join` did.
#[derive(Debug)]
pub struct Joined {
    /// The log index of the membership with the node as a voter; `None` if it already was one.
    pub index: Option<u64>,
    /// The node's client address (now in the client configurations).
    pub client_addr: String,
}

/// `hsmctl node join`: makes a running, unsealed node added by `node add` a voting member.
///
/// # Errors
/// If the node is not running, still sealed, has another id than its configuration, no member
/// is up, the admin login fails, or a step is refused.
pub async fn join(dir: &ClusterDir, name: &str, so_pin: &Password) -> Result<Joined> {
    let node = NodeToml::load(&dir.node_toml(name))?;
    let client_addr = node.client_addr();
    let cluster_addr = node.cluster_addr();
    let admin = load_config(&dir.admin_toml())?;
    let mut joiner = NodeClient::connect_to(&admin, &client_addr).await?;
    let status = joiner.status().await?;
    let already_voter = |status: &hsm_proto::msg::NodeStatus| {
        status.raft.as_ref().is_some_and(|r| {
            r.members
                .iter()
                .any(|m| m.node_id == node.node_id && m.voter)
        })
    };
    let index = match status.seal {
        SealState::Sealed => {
            return Err(CtlError::Usage(format!(
                "node {name} is sealed: unseal it first (`hsmctl unseal --dir {} --node {name}`)",
                dir.root().display()
            )));
        }
        SealState::Unsealed if already_voter(&status) => None,
        seal => {
            let mut member =
                admin_session(&admin, std::slice::from_ref(&client_addr), so_pin).await?;
            if seal == SealState::AwaitingJoin {
                let (node_id, join_key) = joiner.join_key().await?;
                if node_id != node.node_id {
                    return Err(CtlError::Usage(format!(
                        "the node at {client_addr} says it is node {node_id}, but {} says {}: \
                         is another node listening there?",
                        dir.node_toml(name).display(),
                        node.node_id
                    )));
                }
                let package = member.admit_node(node_id, join_key).await?;
                joiner.complete_join(package).await?;
                println!("{name}: received the cluster domain key; catching up");
            }
            // Unsealed but not a voter: a join that stopped after CompleteJoin resumes here.
            let index = member
                .add_node(node.node_id, name, &cluster_addr, &client_addr)
                .await?;
            Some(index)
        }
    };
    edit_client_configs(dir, |nodes| with_node(nodes, &client_addr))?;
    Ok(Joined { index, client_addr })
}

/// Which node `node remove` removes.
#[derive(Clone, Debug)]
pub enum NodeRef {
    /// By its directory name.
    Name(String),
    /// By its id.
    Id(u64),
}

/// What `node remove` did.
#[derive(Debug)]
pub struct Removed {
    /// The node's id.
    pub node_id: u64,
    /// Its name, if known.
    pub name: Option<String>,
    /// The log index of the membership without it.
    pub index: u64,
}

/// `hsmctl node remove`: the cluster drops the node for good (its id can never rejoin) and
/// the client configurations stop naming it.
///
/// # Errors
/// If the node is unknown, no other member is up, the admin login fails, or the cluster
/// refuses.
pub async fn remove(dir: &ClusterDir, which: &NodeRef, so_pin: &Password) -> Result<Removed> {
    let admin = load_config(&dir.admin_toml())?;
    let view = ClusterView::new(&status::gather(&admin).await);
    let members: Vec<hsm_proto::msg::MemberStatus> = view
        .nodes
        .iter()
        .filter_map(|r| r.status.as_ref()?.raft.as_ref())
        .flat_map(|raft| raft.members.clone())
        .collect();
    let local = |id: u64| -> Result<Option<(String, NodeToml)>> {
        for name in dir.node_names()? {
            let node = NodeToml::load(&dir.node_toml(&name))?;
            if node.node_id == id {
                return Ok(Some((name, node)));
            }
        }
        Ok(None)
    };
    let (node_id, name, mut addrs) = match which {
        NodeRef::Name(name) => {
            let path = dir.node_toml(name);
            if !path.is_file() {
                return Err(CtlError::Usage(format!(
                    "no node {name:?} in {} (no {}); use --id",
                    dir.root().display(),
                    path.display()
                )));
            }
            let node = NodeToml::load(&path)?;
            (node.node_id, Some(name.clone()), vec![node.client_addr()])
        }
        NodeRef::Id(id) => match local(*id)? {
            Some((name, node)) => (*id, Some(name), vec![node.client_addr()]),
            None => (*id, None, Vec::new()),
        },
    };
    let member = members.iter().find(|m| m.node_id == node_id);
    let name = name.or_else(|| member.map(|m| m.name.clone()));
    if let Some(m) = member
        && !addrs.contains(&m.client_addr)
    {
        addrs.push(m.client_addr.clone());
    }
    if member.is_none() && !members.is_empty() {
        eprintln!("note: no answering node lists node {node_id} as a member; asking anyway");
    }
    let mut client = admin_session(&admin, &addrs, so_pin).await?;
    let index = client.remove_node(node_id).await?;
    edit_client_configs(dir, |nodes| {
        let mut changed = false;
        for addr in &addrs {
            changed |= without_node(nodes, addr);
        }
        changed
    })?;
    Ok(Removed {
        node_id,
        name,
        index,
    })
}

#[cfg(test)]
mod tests;
