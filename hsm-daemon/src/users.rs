//! Users: Argon2id password hashes, roles, and lockout after repeated failures.

use crate::error::Error;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hsm_proto::msg::Role;
use hsm_proto::{ErrorCode, Password};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins in a row that lock an account.
pub const MAX_FAILURES: u32 = 5;
/// How long a locked account stays locked.
pub const LOCKOUT: Duration = Duration::from_secs(60);

/// A user as stored (sealed) and replicated.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// What the user may do.
    pub role: Role,
    /// Argon2id PHC string.
    pub password_hash: String,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UserRecord {{ role: {}, password_hash: [REDACTED] }}",
            self.role
        )
    }
}

fn salt() -> Result<SaltString, Error> {
    let mut bytes = [0u8; 16];
    crate::seal::random_bytes(&mut bytes)?;
    SaltString::encode_b64(&bytes).map_err(|_| Error::device("salt encoding failed"))
}

/// Checks a user name: 1 to 64 of `[A-Za-z0-9._-]` (it appears in PINs as `name:password`).
///
/// # Errors
/// `ArgumentsBad` naming the rule.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::ArgumentsBad,
            "user names are 1 to 64 of A-Z a-z 0-9 . _ -",
        ))
    }
}

/// Makes a record for a new password.
///
/// # Errors
/// `PinLenRange` for a password shorter than 8 or longer than 255 bytes.
pub fn new_record(role: Role, password: &Password) -> Result<UserRecord, Error> {
    let len = password.expose_secret().len();
    if !(8..=255).contains(&len) {
        return Err(Error::new(
            ErrorCode::PinLenRange,
            "passwords are 8 to 255 bytes",
        ));
    }
    let salt = salt()?;
    let hash = Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map_err(|e| Error::device(format!("password hashing failed: {e}")))?
        .to_string();
    Ok(UserRecord {
        role,
        password_hash: hash,
    })
}

/// Tracks failures per user and locks accounts.
#[derive(Debug, Default)]
pub struct Lockouts {
    failures: Mutex<HashMap<String, (u32, Option<Instant>)>>,
}

/// A PHC string for a password nobody has, verified against when the user does not exist so
/// that an unknown name costs the same time as a wrong password.
static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl Lockouts {
    /// Verifies a login. The verifier compares in constant time.
    ///
    /// # Errors
    /// `PinLocked` while locked; `PinIncorrect` for an unknown user or a wrong password
    /// (indistinguishable on purpose).
    pub fn authenticate(
        &self,
        name: &str,
        record: Option<&UserRecord>,
        password: &Password,
    ) -> Result<Role, Error> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, Some(until))) = failures.get(name) {
            if Instant::now() < *until {
                return Err(Error::new(
                    ErrorCode::PinLocked,
                    format!("user {name} is locked after repeated failures"),
                ));
            }
            failures.remove(name);
        }
        drop(failures);
        let dummy = DUMMY_HASH.get_or_init(|| {
            SaltString::encode_b64(&[7; 16])
                .ok()
                .and_then(|s| {
                    Argon2::default()
                        .hash_password(b"no user has this password", &s)
                        .ok()
                        .map(|h| h.to_string())
                })
                .unwrap_or_default()
        });
        let phc = record.map_or(dummy.as_str(), |r| r.password_hash.as_str());
        let ok = PasswordHash::new(phc)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.expose_secret().as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        match (ok, record) {
            (true, Some(r)) => {
                self.failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                Ok(r.role)
            }
            _ => {
                let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                let entry = failures.entry(name.to_owned()).or_insert((0, None));
                entry.0 += 1;
                if entry.0 >= MAX_FAILURES {
                    entry.1 = Some(Instant::now() + LOCKOUT);
                }
                Err(Error::new(
                    ErrorCode::PinIncorrect,
                    format!("login failed for user {name}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_checks_password_and_locks_after_failures() {
        let rec = new_record(Role::CryptoUser, &Password::new("correct horse".into())).unwrap();
        assert!(!format!("{rec:?}").contains("argon2"));
        let l = Lockouts::default();
        assert_eq!(
            l.authenticate("alice", Some(&rec), &Password::new("correct horse".into()))
                .unwrap(),
            Role::CryptoUser
        );
        for _ in 0..MAX_FAILURES {
            let e = l
                .authenticate("alice", Some(&rec), &Password::new("wrong".into()))
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::PinIncorrect);
        }
        let e = l
            .authenticate("alice", Some(&rec), &Password::new("correct horse".into()))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PinLocked);
        let e = l
            .authenticate("nobody", None, &Password::new("x".into()))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PinIncorrect);
    }

    #[test]
    fn short_passwords_are_refused() {
        assert_eq!(
            new_record(Role::Admin, &Password::new("short".into()))
                .unwrap_err()
                .code,
            ErrorCode::PinLenRange
        );
    }
}
