//! The commands that talk to a running node: `unseal`, `status`, `user create`.

use crate::client::{NodeClient, load_config};
use crate::error::{CtlError, Result};
use crate::secret_input;
use hsm_proto::SecretBytes;
use hsm_proto::msg::{NodeStatus, Role, SealState, UnsealSecret, UserType};
use std::path::Path;

/// Prints a node's status for a human.
pub fn print_status(status: &NodeStatus, addr: &str) {
    let state = match status.seal {
        SealState::Sealed => "SEALED (run `hsmctl unseal`)",
        SealState::Unsealed => "unsealed",
    };
    println!("node:     {} ({addr})", status.node);
    println!("cluster:  {}", status.cluster);
    println!("state:    {state}");
    if status.dev_unseal {
        println!("unseal:   development key file (NOT for production)");
    }
    println!("objects:  {}", status.objects);
    println!("version:  {}", status.version);
}

/// `hsmctl status`.
///
/// # Errors
/// If the node cannot be reached.
pub async fn status(config: &Path) -> Result<()> {
    let config = load_config(config)?;
    let mut client = NodeClient::connect(&config).await?;
    let status = client.status().await?;
    print_status(&status, &client.addr);
    Ok(())
}

/// Reads a development key file into an unseal secret.
///
/// # Errors
/// If the file cannot be read.
pub fn dev_key_secret(path: &Path) -> Result<UnsealSecret> {
    let bytes = std::fs::read(path).map_err(|e| CtlError::io("read", path, e))?;
    Ok(UnsealSecret::DevKey(SecretBytes::new(bytes)))
}

/// `hsmctl unseal`: unseals with a passphrase (`$HSM_UNSEAL_PASSPHRASE` or a prompt) or a
/// development key file. An already unsealed node is left alone.
///
/// # Errors
/// If the node cannot be reached or refuses the secret.
pub async fn unseal(config: &Path, dev_key_file: Option<&Path>) -> Result<()> {
    let config = load_config(config)?;
    let mut client = NodeClient::connect(&config).await?;
    let before = client.status().await?;
    if before.seal == SealState::Unsealed {
        println!("{}: already unsealed", client.node);
        return Ok(());
    }
    let secret = match dev_key_file {
        Some(path) => dev_key_secret(path)?,
        None if before.dev_unseal => {
            return Err(CtlError::Usage(format!(
                "{} was initialized for development and unseals with its key file: \
                 pass --dev-key-file (D/dev.key in its cluster directory)",
                client.node
            )));
        }
        None => UnsealSecret::Passphrase(secret_input::obtain(
            secret_input::ENV_UNSEAL,
            "Unseal passphrase: ",
            false,
        )?),
    };
    client.unseal(secret).await?;
    let status = client.status().await?;
    if status.seal != SealState::Unsealed {
        return Err(CtlError::Unexpected(
            "the node accepted the secret but still reports sealed".into(),
        ));
    }
    println!("{}: unsealed", client.node);
    Ok(())
}

/// `hsmctl user create`: logs in as an admin (`$HSM_SO_PIN` = `name:password`, or a prompt)
/// and creates a user whose password comes from `$HSM_NEW_USER_PASSWORD` or a prompt.
///
/// # Errors
/// If login or creation fails.
pub async fn create_user(config: &Path, name: &str, role: Role) -> Result<()> {
    if name.is_empty() || name.contains(':') {
        return Err(CtlError::Usage(format!(
            "user name {name:?}: must be non-empty and contain no ':'"
        )));
    }
    let config = load_config(config)?;
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
    let mut client = NodeClient::connect(&config).await?;
    client
        .login(UserType::SecurityOfficer, &admin, admin_password)
        .await?;
    client.create_user(name, password, role).await?;
    println!("{}: created user {name:?} with role {role}", client.node);
    Ok(())
}
