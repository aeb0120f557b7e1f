//! The commands that talk to one running node: `unseal`, `user create`.

use crate::client::NodeClient;
use crate::error::{CtlError, Result};
use crate::secret_input;
use hsm_proto::SecretBytes;
use hsm_proto::config::ModuleConfig;
use hsm_proto::msg::{Role, SealState, UnsealSecret, UserType};
use std::path::Path;

/// Reads a development key file into an unseal secret.
///
/// # Errors
/// If the file cannot be read.
pub fn dev_key_secret(path: &Path) -> Result<UnsealSecret> {
    let bytes = std::fs::read(path).map_err(|e| CtlError::io("read", path, e))?;
    Ok(UnsealSecret::DevKey(SecretBytes::new(bytes)))
}

/// `hsmctl unseal`: unseals every sealed node the configuration lists (one with `--node`),
/// with a passphrase (`$HSM_UNSEAL_PASSPHRASE` or a prompt, asked once) or a development key
/// file. Unsealed nodes are left alone; unreachable ones are reported and skipped.
///
/// # Errors
/// If no node can be reached, or a node refuses the secret.
pub async fn unseal(config: &ModuleConfig, dev_key_file: Option<&Path>) -> Result<()> {
    let mut secret: Option<UnsealSecret> = match dev_key_file {
        Some(path) => Some(dev_key_secret(path)?),
        None => None,
    };
    let mut reached = 0;
    let mut last_err = None;
    for addr in &config.nodes {
        let mut client = match NodeClient::connect_to(config, addr).await {
            Ok(client) => client,
            Err(e) => {
                if config.nodes.len() > 1 {
                    eprintln!("{addr}: skipped: {e}");
                }
                last_err = Some(e);
                continue;
            }
        };
        reached += 1;
        let before = client.status().await?;
        match before.seal {
            SealState::Sealed => {}
            SealState::Unsealed => {
                println!("{}: already unsealed", client.node);
                continue;
            }
            SealState::AwaitingJoin => {
                println!("{}: already unsealed, awaiting join", client.node);
                continue;
            }
        }
        let secret = match (&secret, before.dev_unseal) {
            (Some(secret), _) => secret.clone(),
            (None, true) => {
                return Err(CtlError::Usage(format!(
                    "{} was initialized for development and unseals with its key file: \
                     pass --dev-key-file (D/dev.key in its cluster directory)",
                    client.node
                )));
            }
            (None, false) => secret
                .insert(UnsealSecret::Passphrase(secret_input::obtain(
                    secret_input::ENV_UNSEAL,
                    "Unseal passphrase: ",
                    false,
                )?))
                .clone(),
        };
        client.unseal(secret).await?;
        match client.status().await?.seal {
            SealState::Sealed => {
                return Err(CtlError::Unexpected(format!(
                    "{} accepted the secret but still reports sealed",
                    client.node
                )));
            }
            SealState::Unsealed => println!("{}: unsealed", client.node),
            SealState::AwaitingJoin => println!(
                "{}: unsealed, awaiting join (`hsmctl node join --name {}`)",
                client.node, client.node
            ),
        }
    }
    match (reached, last_err) {
        (0, Some(e)) => Err(e),
        (0, None) => Err(CtlError::Config("the configuration names no node".into())),
        _ => Ok(()),
    }
}

/// `hsmctl user create`: logs in as an admin (`$HSM_SO_PIN` = `name:password`, or a prompt)
/// and creates a user whose password comes from `$HSM_NEW_USER_PASSWORD` or a prompt.
///
/// # Errors
/// If login or creation fails.
pub async fn create_user(config: &ModuleConfig, name: &str, role: Role) -> Result<()> {
    if name.is_empty() || name.contains(':') {
        return Err(CtlError::Usage(format!(
            "user name {name:?}: must be non-empty and contain no ':'"
        )));
    }
    let so_pin = secret_input::obtain(
        secret_input::ENV_SO_PIN,
        "Admin PIN (name:password): ",
        false,
    )?;
    let (admin, admin_password) = secret_input::split_pin(&so_pin)?;
    let password = secret_input::obtain(
        secret_input::ENV_NEW_USER_PASSWORD,
        &format!("Password for the new user {name:?}: "),
        true,
    )?;
    let mut client = NodeClient::connect(config).await?;
    client
        .login(UserType::SecurityOfficer, &admin, admin_password)
        .await?;
    client.create_user(name, password, role).await?;
    println!("{}: created user {name:?} with role {role}", client.node);
    Ok(())
}
