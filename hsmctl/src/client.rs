//! A connection to one node over mutually-authenticated TLS 1.3, speaking `hsm_proto`.

use crate::error::{CtlError, Result};
use hsm_proto::config::ModuleConfig;
use hsm_proto::frame;
use hsm_proto::msg::{JoinPackage, NodeStatus, Role, UnsealSecret, UserType};
use hsm_proto::{Envelope, Password, Request, RequestId, Response};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long a TCP connect plus TLS and protocol handshakes may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one request may take. Generous: unseal and login derive Argon2id keys, which on a
/// busy two-core machine takes seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a membership change may take: adding a node waits until it has caught up with
/// the log (or a snapshot) and become a voter.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(600);

/// What `hsmctl` calls itself in the protocol handshake.
const SOFTWARE: &str = concat!("hsmctl/", env!("CARGO_PKG_VERSION"));

/// One authenticated connection to a node.
#[derive(Debug)]
pub struct NodeClient {
    stream: TlsStream<TcpStream>,
    next_id: u64,
    /// The address connected to.
    pub addr: String,
    /// The node's name, from its handshake.
    pub node: String,
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl NodeClient {
    /// Connects to the first node of `config` that answers.
    ///
    /// # Errors
    /// If no node can be reached, or TLS or the handshake fails with every node.
    pub async fn connect(config: &ModuleConfig) -> Result<NodeClient> {
        let connector = connector(config)?;
        let mut last = None;
        for addr in &config.nodes {
            match Self::connect_with(&connector, config, addr).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| CtlError::Config("the configuration names no node".into())))
    }

    /// Connects to the node at `addr` with the certificates of `config` (whatever nodes it
    /// lists).
    ///
    /// # Errors
    /// If the node cannot be reached, or TLS or the handshake fails.
    pub async fn connect_to(config: &ModuleConfig, addr: &str) -> Result<NodeClient> {
        Self::connect_with(&connector(config)?, config, addr).await
    }

    async fn connect_with(
        connector: &TlsConnector,
        config: &ModuleConfig,
        addr: &str,
    ) -> Result<NodeClient> {
        let host = config
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(addr).to_owned());
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::open(connector, addr, host)).await {
            Ok(result) => result,
            Err(_) => Err(CtlError::Connect {
                addr: addr.to_owned(),
                message: "no answer".into(),
            }),
        }
    }

    async fn open(connector: &TlsConnector, addr: &str, host: String) -> Result<NodeClient> {
        let connect_err = |message: String| CtlError::Connect {
            addr: addr.to_owned(),
            message,
        };
        let name = ServerName::try_from(host.clone())
            .map_err(|e| connect_err(format!("bad server name {host:?}: {e}")))?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| connect_err(format!("TLS handshake failed: {e}")))?;
        let node = frame::client_handshake(&mut stream, SOFTWARE)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        Ok(NodeClient {
            stream,
            next_id: 1,
            addr: addr.to_owned(),
            node,
        })
    }

    /// Sends one request and waits for its answer. A `Response::Error` becomes
    /// `CtlError::Node`.
    ///
    /// # Errors
    /// Transport, protocol, timeout or node errors.
    pub async fn call(&mut self, body: Request) -> Result<Response> {
        self.call_within(body, REQUEST_TIMEOUT).await
    }

    /// [`NodeClient::call`] with another timeout.
    ///
    /// # Errors
    /// As [`NodeClient::call`].
    pub async fn call_within(&mut self, body: Request, timeout: Duration) -> Result<Response> {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let name = body.name();
        let exchange = async {
            frame::write_message(&mut self.stream, &Envelope::new(id, body)).await?;
            // Only one request is ever in flight on this connection, but skip anything that is
            // not ours rather than mis-attributing it.
            loop {
                let reply: Envelope<Response> = frame::read_message(&mut self.stream).await?;
                if reply.id == id {
                    return Ok::<_, CtlError>(reply.body);
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(Response::Error(e))) => Err(CtlError::Node(e)),
            Ok(other) => other,
            Err(_) => Err(CtlError::Timeout(format!(
                "{name} got no answer from {} within {}s",
                self.addr,
                timeout.as_secs()
            ))),
        }
    }

    /// The node's status.
    ///
    /// # Errors
    /// As [`NodeClient::call`].
    pub async fn status(&mut self) -> Result<NodeStatus> {
        match self.call(Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected("Status", &other)),
        }
    }

    /// Unseals the node.
    ///
    /// # Errors
    /// As [`NodeClient::call`]; a wrong secret is a node error.
    pub async fn unseal(&mut self, secret: UnsealSecret) -> Result<()> {
        match self.call(Request::Unseal(secret)).await? {
            Response::Unsealed => Ok(()),
            other => Err(unexpected("Unseal", &other)),
        }
    }

    /// Logs this connection in.
    ///
    /// # Errors
    /// As [`NodeClient::call`].
    pub async fn login(
        &mut self,
        user_type: UserType,
        username: &str,
        password: Password,
    ) -> Result<Role> {
        let request = Request::Login {
            user_type,
            username: username.to_owned(),
            password,
        };
        match self.call(request).await? {
            Response::LoggedIn { role, .. } => Ok(role),
            other => Err(unexpected("Login", &other)),
        }
    }

    /// Creates a user (an admin must be logged in on this connection).
    ///
    /// # Errors
    /// As [`NodeClient::call`].
    pub async fn create_user(
        &mut self,
        username: &str,
        password: Password,
        role: Role,
    ) -> Result<()> {
        let request = Request::CreateUser {
            username: username.to_owned(),
            password,
            role,
        };
        match self.call(request).await? {
            Response::UserCreated => Ok(()),
            other => Err(unexpected("CreateUser", &other)),
        }
    }
}

impl NodeClient {
    /// A joining node's fresh public key (step 1 of a join), with the id it says it has.
    ///
    /// # Errors
    /// As [`NodeClient::call`]; a node that is not awaiting a join refuses.
    pub async fn join_key(&mut self) -> Result<(u64, Vec<u8>)> {
        match self.call(Request::JoinKey).await? {
            Response::JoinKey {
                node_id,
                public_key,
            } => Ok((node_id, public_key)),
            other => Err(unexpected("JoinKey", &other)),
        }
    }

    /// A member wraps the cluster domain key to a joining node's key (step 2; admin login).
    ///
    /// # Errors
    /// As [`NodeClient::call`].
    pub async fn admit_node(&mut self, node_id: u64, join_key: Vec<u8>) -> Result<JoinPackage> {
        match self.call(Request::AdmitNode { node_id, join_key }).await? {
            Response::Admitted(package) => Ok(package),
            other => Err(unexpected("AdmitNode", &other)),
        }
    }

    /// The joining node takes the package (step 3).
    ///
    /// # Errors
    /// As [`NodeClient::call`].
    pub async fn complete_join(&mut self, package: JoinPackage) -> Result<()> {
        match self.call(Request::CompleteJoin(package)).await? {
            Response::Joined => Ok(()),
            other => Err(unexpected("CompleteJoin", &other)),
        }
    }

    /// The cluster adds a joined node as a voter once it caught up (step 4; admin login).
    /// Returns the log index of the new membership. Waits up to ten minutes.
    ///
    /// # Errors
    /// As [`NodeClient::call`].
    pub async fn add_node(
        &mut self,
        node_id: u64,
        name: &str,
        cluster_addr: &str,
        client_addr: &str,
    ) -> Result<u64> {
        let request = Request::AddNode {
            node_id,
            name: name.to_owned(),
            cluster_addr: cluster_addr.to_owned(),
            client_addr: client_addr.to_owned(),
        };
        match self.call_within(request, MEMBERSHIP_TIMEOUT).await? {
            Response::MembershipChanged { index } => Ok(index),
            other => Err(unexpected("AddNode", &other)),
        }
    }

    /// The cluster removes a node for good (admin login). Returns the log index of the new
    /// membership.
    ///
    /// # Errors
    /// As [`NodeClient::call`].
    pub async fn remove_node(&mut self, node_id: u64) -> Result<u64> {
        match self
            .call_within(Request::RemoveNode { node_id }, MEMBERSHIP_TIMEOUT)
            .await?
        {
            Response::MembershipChanged { index } => Ok(index),
            other => Err(unexpected("RemoveNode", &other)),
        }
    }
}

fn connector(config: &ModuleConfig) -> Result<TlsConnector> {
    let tls =
        hsm_proto::tls::client_config(&config.ca_cert, &config.client_cert, &config.client_key)?;
    Ok(TlsConnector::from(Arc::new(tls)))
}

fn unexpected(request: &str, response: &Response) -> CtlError {
    // Name only the variant: a response may carry data that is not for a terminal.
    let debug = format!("{response:?}");
    let variant = debug.split(['(', ' ', '{']).next().unwrap_or("?");
    CtlError::Unexpected(format!("{variant} in answer to {request}"))
}

/// Loads the configuration `hsmctl` connects with.
///
/// # Errors
/// If the file cannot be read or is invalid.
pub fn load_config(path: &std::path::Path) -> Result<ModuleConfig> {
    ModuleConfig::load(path).map_err(CtlError::Config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_addresses() {
        assert_eq!(host_of("127.0.0.1:5700"), "127.0.0.1");
        assert_eq!(host_of("localhost:1"), "localhost");
        assert_eq!(host_of("[::1]:5700"), "::1");
    }
}
