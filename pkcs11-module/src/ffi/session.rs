//! Session management and login.

use super::{array, bad, out};
use crate::token;
use cryptoki_sys as ck;
use std::ffi::c_void;

cryptoki_fn! {
    /// Opens a session (no round trip). Notification callbacks are never called.
    fn C_OpenSession(
        slot: ck::CK_SLOT_ID,
        flags: ck::CK_FLAGS,
        _application: *mut c_void,
        _notify: ck::CK_NOTIFY,
        session: *mut ck::CK_SESSION_HANDLE,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes a handle to fill.
        let session = unsafe { out(session) }?;
        *session = token.open_session(slot, flags)?;
        Ok(())
    }

    /// Closes a session; the node drops its session objects.
    fn C_CloseSession(session: ck::CK_SESSION_HANDLE) {
        token::current()?.close_session(session)
    }

    /// Closes every session of the slot.
    fn C_CloseAllSessions(slot: ck::CK_SLOT_ID) {
        token::current()?.close_all_sessions(slot)
    }

    /// Session state and flags.
    fn C_GetSessionInfo(session: ck::CK_SESSION_HANDLE, info: *mut ck::CK_SESSION_INFO) {
        let token = token::current()?;
        let value = token.session_info(session)?;
        // SAFETY: the caller passes a CK_SESSION_INFO to fill.
        *unsafe { out(info) }? = value;
        Ok(())
    }

    /// Logs in with a `name:password` PIN.
    fn C_Login(
        session: ck::CK_SESSION_HANDLE,
        user_type: ck::CK_USER_TYPE,
        pin: *mut ck::CK_UTF8CHAR,
        pin_len: ck::CK_ULONG,
    ) {
        let token = token::current()?;
        if pin.is_null() {
            return Err(bad());
        }
        // SAFETY: the caller passes `pin_len` bytes of PIN.
        let pin = unsafe { array(pin, pin_len) }?;
        token.login(session, user_type, pin)
    }

    /// Logs out.
    fn C_Logout(session: ck::CK_SESSION_HANDLE) {
        token::current()?.logout(session)
    }

    /// Changes the logged-in user's password (`name:password` or the bare password).
    fn C_SetPIN(
        session: ck::CK_SESSION_HANDLE,
        old: *mut ck::CK_UTF8CHAR,
        old_len: ck::CK_ULONG,
        new: *mut ck::CK_UTF8CHAR,
        new_len: ck::CK_ULONG,
    ) {
        let token = token::current()?;
        if old.is_null() || new.is_null() {
            return Err(bad());
        }
        // SAFETY: the caller passes `old_len` bytes.
        let old = unsafe { array(old, old_len) }?;
        // SAFETY: the caller passes `new_len` bytes.
        let new = unsafe { array(new, new_len) }?;
        token.set_pin(session, old, new)
    }

    /// In an SO session: creates the crypto user of a `name:password` PIN, or resets its
    /// password.
    fn C_InitPIN(session: ck::CK_SESSION_HANDLE, pin: *mut ck::CK_UTF8CHAR, pin_len: ck::CK_ULONG) {
        let token = token::current()?;
        if pin.is_null() {
            return Err(bad());
        }
        // SAFETY: the caller passes `pin_len` bytes.
        let pin = unsafe { array(pin, pin_len) }?;
        token.init_pin(session, pin)
    }
}
