//! Sessions and login.
//!
//! Sessions are numbered by the module (the number is both the `CK_SESSION_HANDLE` and the
//! wire [`SessionId`]) and opening one costs no round trip. Login is application-wide, as
//! PKCS#11 says, and lives on the node per connection; [`crate::client`] repeats it after a
//! reconnect.

use super::Token;
use super::crypto::Operations;
use super::slot::check_slot;
use crate::error::{Error, Result};
use cryptoki_sys as ck;
use hsm_proto::msg::UserType;
use hsm_proto::{ErrorCode, Password, Request, Response, SessionId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One PKCS#11 session.
#[derive(Debug)]
pub struct Session {
    /// The handle, also the wire session id.
    pub handle: u64,
    /// `CKF_RW_SESSION` was given.
    pub rw: bool,
    /// A request naming this session reached the node, so closing it must tell the node.
    used: AtomicBool,
    /// Active operations (find, sign, verify, encrypt, decrypt).
    pub ops: Mutex<Operations>,
}

impl Session {
    /// The wire id.
    pub fn id(&self) -> SessionId {
        SessionId(self.handle)
    }

    /// Notes that a request naming this session reached the nodes.
    pub(super) fn mark_used(&self) {
        self.used.store(true, Ordering::Relaxed);
    }
}

impl Token {
    /// The session behind a handle.
    ///
    /// # Errors
    /// `SessionHandleInvalid`.
    pub fn session(&self, handle: ck::CK_SESSION_HANDLE) -> Result<Arc<Session>> {
        self.sessions
            .read()?
            .get(&(handle as u64))
            .cloned()
            .ok_or_else(|| {
                // C_Finalize on another thread empties the table first.
                if self.client().is_closed() {
                    Error::NotInitialized
                } else {
                    Error::Code(ErrorCode::SessionHandleInvalid)
                }
            })
    }

    /// `C_OpenSession`.
    ///
    /// # Errors
    /// `SlotIdInvalid`, `SessionParallelNotSupported` without `CKF_SERIAL_SESSION`,
    /// `SessionReadWriteSoExists` for a read-only session while the SO is logged in.
    pub fn open_session(
        &self,
        slot: ck::CK_SLOT_ID,
        flags: ck::CK_FLAGS,
    ) -> Result<ck::CK_SESSION_HANDLE> {
        check_slot(slot)?;
        if flags & ck::CKF_SERIAL_SESSION == 0 {
            return Err(Error::SessionParallelNotSupported);
        }
        let rw = flags & ck::CKF_RW_SESSION != 0;
        if !rw && *self.login.read()? == Some(UserType::SecurityOfficer) {
            return Err(Error::SessionReadWriteSoExists);
        }
        let handle = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = Arc::new(Session {
            handle,
            rw,
            used: AtomicBool::new(false),
            ops: Mutex::new(Operations::default()),
        });
        self.sessions.write()?.insert(handle, session);
        Ok(handle as ck::CK_SESSION_HANDLE)
    }

    /// `C_CloseSession`. Closing the last session logs the application out (spec).
    ///
    /// # Errors
    /// `SessionHandleInvalid`.
    pub fn close_session(&self, handle: ck::CK_SESSION_HANDLE) -> Result<()> {
        let (session, now_empty) = {
            let mut sessions = self.sessions.write()?;
            let session = sessions
                .remove(&(handle as u64))
                .ok_or(Error::Code(ErrorCode::SessionHandleInvalid))?;
            (session, sessions.is_empty())
        };
        self.release(&session)?;
        if now_empty {
            self.end_login()?;
        }
        Ok(())
    }

    /// `C_CloseAllSessions`.
    ///
    /// # Errors
    /// `SlotIdInvalid`.
    pub fn close_all_sessions(&self, slot: ck::CK_SLOT_ID) -> Result<()> {
        check_slot(slot)?;
        let closed: Vec<Arc<Session>> = self.sessions.write()?.drain().map(|(_, s)| s).collect();
        for session in &closed {
            self.release(session)?;
        }
        self.end_login()
    }

    /// Tells the node a session is gone (so its session objects die) and forgets their
    /// handles. Fire-and-forget: session ids are never reused, so nothing can race with it.
    fn release(&self, session: &Session) -> Result<()> {
        if session.used.load(Ordering::Relaxed) {
            self.client().send_and_forget(&Request::CloseSession {
                session: session.id(),
            });
        }
        self.objects.write()?.forget_session(session.handle);
        Ok(())
    }

    /// Logs out after the last session closed, if anyone is logged in.
    fn end_login(&self) -> Result<()> {
        let _serial = self.login_serial.lock()?;
        if self.login.read()?.is_none() {
            return Ok(());
        }
        *self.login.write()? = None;
        if let Err(e) = self.client().logout() {
            // The module state is what the application sees; the node forgets the login
            // with the connection anyway.
            // Expected when an application closes its sessions while exiting; not worth a
            // line on the application's stderr.
            tracing::debug!("logout after the last session closed failed: {e}");
        }
        Ok(())
    }

    /// `C_GetSessionInfo`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`.
    pub fn session_info(&self, handle: ck::CK_SESSION_HANDLE) -> Result<ck::CK_SESSION_INFO> {
        let session = self.session(handle)?;
        let state = match (*self.login.read()?, session.rw) {
            (None, false) => ck::CKS_RO_PUBLIC_SESSION,
            (None, true) => ck::CKS_RW_PUBLIC_SESSION,
            (Some(UserType::User), false) => ck::CKS_RO_USER_FUNCTIONS,
            (Some(UserType::User), true) => ck::CKS_RW_USER_FUNCTIONS,
            (Some(UserType::SecurityOfficer), _) => ck::CKS_RW_SO_FUNCTIONS,
        };
        let mut flags = ck::CKF_SERIAL_SESSION;
        if session.rw {
            flags |= ck::CKF_RW_SESSION;
        }
        Ok(ck::CK_SESSION_INFO {
            slotID: super::slot::SLOT_ID,
            state,
            flags,
            ulDeviceError: 0,
        })
    }

    /// `C_Login` with a `name:password` PIN.
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `OperationNotInitialized` for `CKU_CONTEXT_SPECIFIC` (no
    /// operation here needs re-authentication); `UserTypeInvalid`; `UserAlreadyLoggedIn` /
    /// `UserAnotherAlreadyLoggedIn`; `SessionReadOnlyExists` for an SO login while a
    /// read-only session is open; `PinIncorrect` for a PIN without `:`; the node's verdict.
    pub fn login(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        user_type: ck::CK_USER_TYPE,
        pin: &[u8],
    ) -> Result<()> {
        self.session(handle)?;
        let user_type = match user_type {
            ck::CKU_USER => UserType::User,
            ck::CKU_SO => UserType::SecurityOfficer,
            ck::CKU_CONTEXT_SPECIFIC => return Err(ErrorCode::OperationNotInitialized.into()),
            _ => return Err(ErrorCode::UserTypeInvalid.into()),
        };
        let _serial = self.login_serial.lock()?;
        match *self.login.read()? {
            Some(current) if current == user_type => {
                return Err(ErrorCode::UserAlreadyLoggedIn.into());
            }
            Some(_) => return Err(ErrorCode::UserAnotherAlreadyLoggedIn.into()),
            None => {}
        }
        if user_type == UserType::SecurityOfficer && self.sessions.read()?.values().any(|s| !s.rw) {
            return Err(Error::SessionReadOnlyExists);
        }
        let (username, password) = split_pin(pin)?;
        self.client().login(user_type, username, password)?;
        *self.login.write()? = Some(user_type);
        Ok(())
    }

    /// `C_Logout`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `UserNotLoggedIn`; a transport error.
    pub fn logout(&self, handle: ck::CK_SESSION_HANDLE) -> Result<()> {
        self.session(handle)?;
        let _serial = self.login_serial.lock()?;
        if self.login.read()?.is_none() {
            return Err(ErrorCode::UserNotLoggedIn.into());
        }
        *self.login.write()? = None;
        self.client().logout()
    }
}

impl Token {
    /// `C_SetPIN`: changes the logged-in user's password. Either PIN may be given as
    /// `name:password` (as for `C_Login`) or as the bare password.
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `SessionReadOnly`; `PinInvalid` for a new PIN that is not
    /// UTF-8 or empty; the node's verdict (`PinIncorrect`, `UserNotLoggedIn`, …).
    pub fn set_pin(&self, handle: ck::CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<()> {
        let session = self.session(handle)?;
        if !session.rw {
            return Err(ErrorCode::SessionReadOnly.into());
        }
        let username = self.client().username()?;
        let old = bare_password(old, username.as_deref()).ok_or(ErrorCode::PinIncorrect)?;
        let new = bare_password(new, username.as_deref())
            .filter(|p| !p.expose_secret().is_empty())
            .ok_or(ErrorCode::PinInvalid)?;
        self.client().set_pin(old, new)
    }

    /// `C_InitPIN`: in an SO session, creates the crypto user of a `name:password` PIN or
    /// resets its password.
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `UserNotLoggedIn` outside a read/write SO session;
    /// `PinInvalid` without `:`; the node's verdict.
    pub fn init_pin(&self, handle: ck::CK_SESSION_HANDLE, pin: &[u8]) -> Result<()> {
        let session = self.session(handle)?;
        if !session.rw || *self.login.read()? != Some(UserType::SecurityOfficer) {
            return Err(ErrorCode::UserNotLoggedIn.into());
        }
        let (username, password) = split_pin(pin).map_err(|_| ErrorCode::PinInvalid)?;
        let request = Request::InitPin { username, password };
        match self.call_for(&session, &request)? {
            Response::PinChanged => Ok(()),
            other => Err(crate::client::unexpected(&request, &other)),
        }
    }
}

/// The password of a PIN given as `name:password` (for the logged-in `name`) or bare.
fn bare_password(pin: &[u8], username: Option<&str>) -> Option<Password> {
    let text = std::str::from_utf8(pin).ok()?;
    let password = username
        .and_then(|name| text.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or(text);
    Some(Password::new(password.to_owned()))
}

/// Splits a `name:password` PIN at the first `:`.
///
/// # Errors
/// `PinIncorrect` if there is no `:` or the PIN is not UTF-8 (no such user can exist).
pub fn split_pin(pin: &[u8]) -> Result<(String, Password)> {
    let text = std::str::from_utf8(pin).map_err(|_| ErrorCode::PinIncorrect)?;
    let (name, password) = text.split_once(':').ok_or(ErrorCode::PinIncorrect)?;
    Ok((name.to_owned(), Password::new(password.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_split_at_the_first_colon() {
        let (name, pw) = split_pin(b"alice:pa:ss").unwrap();
        assert_eq!(name, "alice");
        assert_eq!(pw.expose_secret(), "pa:ss");
        let (name, pw) = split_pin(b":").unwrap();
        assert_eq!((name.as_str(), pw.expose_secret()), ("", ""));
        assert!(matches!(
            split_pin(b"alice"),
            Err(Error::Code(ErrorCode::PinIncorrect))
        ));
        assert!(matches!(
            split_pin(&[0xff, b':']),
            Err(Error::Code(ErrorCode::PinIncorrect))
        ));
    }

    #[test]
    fn set_pin_accepts_both_forms() {
        let p = |pin: &[u8], user| bare_password(pin, user).map(|p| p.expose_secret().to_owned());
        assert_eq!(p(b"alice:new:pw", Some("alice")).as_deref(), Some("new:pw"));
        assert_eq!(p(b"new:pw", Some("alice")).as_deref(), Some("new:pw"));
        assert_eq!(p(b"alice:x", None).as_deref(), Some("alice:x"));
        assert_eq!(p(&[0xff], Some("alice")), None);
    }
}
