//! Login tickets: how an application's login follows it from node to node without the
//! password.
//!
//! A successful `Login` answers with a ticket; `ResumeLogin` with a valid ticket logs a
//! connection in on any node of the cluster, with no Argon2id and no password. The module uses
//! it to log in on every node it spreads load over and on the node it fails over to, so it
//! never keeps the password after `C_Login` returns.
//!
//! A ticket is `postcard(Claims) || HMAC-SHA-256(K, postcard(Claims))`, where `K` is derived
//! with HKDF from the cluster domain key (every node has it, nothing outside the cluster does).
//! The claims name the user and role, bind the SHA-256 of the client certificate that logged in
//! (a ticket lifted from an application's memory is useless without its TLS key too) and carry
//! an expiry. Tickets are stateless: a node cannot revoke one before it expires, but a
//! resumed login is refused once the user is gone or has another role.

use crate::error::Error;
use aws_lc_rs::{hkdf, hmac};
use hsm_proto::msg::Role;
use hsm_proto::{ErrorCode, SecretBytes};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// How long a ticket is valid. The module renews at half-life while the application stays
/// logged in.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Ticket format version.
const VERSION: u8 = 1;
/// The tag's length.
const TAG_LEN: usize = 32;
/// Tickets larger than this are refused before anything is parsed.
const MAX_TICKET: usize = 1024;

/// What a ticket says.
#[derive(Serialize, Deserialize)]
struct Claims {
    version: u8,
    user: String,
    role: Role,
    /// SHA-256 of the client certificate (DER) that logged in.
    cert: [u8; 32],
    /// Seconds since the Unix epoch.
    expires: u64,
    /// Makes every ticket distinct.
    nonce: [u8; 16],
}

fn key(cdk: &[u8]) -> hmac::Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"hsm login tickets v1").extract(cdk);
    // `expand` fails only for an output longer than 255 hashes; HMAC-SHA-256's is one.
    match prk.expand(&[b"hmac-sha256"], hmac::HMAC_SHA256) {
        Ok(okm) => hmac::Key::from(okm),
        Err(_) => unreachable!("HKDF output of one hash length"),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Issues a ticket for `user` in `role`, logged in with the certificate whose SHA-256 is
/// `cert`.
///
/// # Errors
/// `DeviceError` if no random nonce can be drawn or the claims do not encode.
pub fn issue(cdk: &[u8], user: &str, role: Role, cert: [u8; 32]) -> Result<SecretBytes, Error> {
    let mut nonce = [0u8; 16];
    crate::seal::random_bytes(&mut nonce)?;
    let claims = Claims {
        version: VERSION,
        user: user.to_owned(),
        role,
        cert,
        expires: now().saturating_add(LIFETIME.as_secs()),
        nonce,
    };
    let mut bytes = Zeroizing::new(
        postcard::to_stdvec(&claims).map_err(|e| Error::device(format!("ticket: {e}")))?,
    );
    let tag = hmac::sign(&key(cdk), &bytes);
    bytes.extend_from_slice(tag.as_ref());
    Ok(SecretBytes::new(std::mem::take(&mut *bytes)))
}

/// The user and role of a valid ticket presented with the certificate whose SHA-256 is `cert`.
///
/// # Errors
/// `PinIncorrect` for a ticket that is malformed, forged, expired, or from another certificate
/// (the message says which, never the ticket).
pub fn open(cdk: &[u8], ticket: &[u8], cert: [u8; 32]) -> Result<(String, Role), Error> {
    let refuse = |why: &str| Error::new(ErrorCode::PinIncorrect, format!("login ticket {why}"));
    if ticket.len() <= TAG_LEN || ticket.len() > MAX_TICKET {
        return Err(refuse("is malformed"));
    }
    let (body, tag) = ticket.split_at(ticket.len() - TAG_LEN);
    // Constant-time comparison of the tag.
    hmac::verify(&key(cdk), body, tag).map_err(|_| refuse("is not from this cluster"))?;
    let claims: Claims = postcard::from_bytes(body).map_err(|_| refuse("is malformed"))?;
    if claims.version != VERSION {
        return Err(refuse("has an unknown format"));
    }
    if claims.expires <= now() {
        return Err(refuse("has expired: log in again"));
    }
    // Not secret (a hash of a public certificate); a plain comparison is fine.
    if claims.cert != cert {
        return Err(refuse("was issued to another client certificate"));
    }
    Ok((claims.user, claims.role))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CDK: &[u8] = &[7u8; 32];

    #[test]
    fn a_ticket_opens_with_its_certificate_only() {
        let t = issue(CDK, "alice", Role::CryptoUser, [1; 32]).unwrap();
        let (user, role) = open(CDK, t.expose_secret(), [1; 32]).unwrap();
        assert_eq!((user.as_str(), role), ("alice", Role::CryptoUser));
        let e = open(CDK, t.expose_secret(), [2; 32]).unwrap_err();
        assert_eq!(e.code, ErrorCode::PinIncorrect);
        assert!(e.message.contains("another client certificate"), "{e}");
    }

    #[test]
    fn forged_and_foreign_tickets_are_refused() {
        let t = issue(CDK, "alice", Role::CryptoUser, [1; 32]).unwrap();
        let mut forged = t.expose_secret().to_vec();
        forged[2] ^= 1;
        assert!(open(CDK, &forged, [1; 32]).is_err());
        assert!(open(&[8u8; 32], t.expose_secret(), [1; 32]).is_err());
        assert!(open(CDK, &[0u8; 10], [1; 32]).is_err());
        assert!(open(CDK, &vec![0u8; 4096], [1; 32]).is_err());
    }

    #[test]
    fn expired_tickets_are_refused() {
        let claims = Claims {
            version: VERSION,
            user: "alice".into(),
            role: Role::CryptoUser,
            cert: [1; 32],
            expires: now() - 1,
            nonce: [0; 16],
        };
        let mut bytes = postcard::to_stdvec(&claims).unwrap();
        let tag = hmac::sign(&key(CDK), &bytes);
        bytes.extend_from_slice(tag.as_ref());
        let e = open(CDK, &bytes, [1; 32]).unwrap_err();
        assert!(e.message.contains("expired"), "{e}");
    }
}
