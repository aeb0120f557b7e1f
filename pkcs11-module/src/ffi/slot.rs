//! Slot and token management functions.

use super::{bad, out, write_list};
use crate::error::Error;
use crate::token;
use cryptoki_sys as ck;
use std::ffi::c_void;

cryptoki_fn! {
    /// The slot list: one slot, id 0, always with its token present.
    fn C_GetSlotList(
        _token_present: ck::CK_BBOOL,
        list: *mut ck::CK_SLOT_ID,
        count: *mut ck::CK_ULONG,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes a count and a list of that many ids, or NULL.
        unsafe { write_list(token.slots().iter().copied(), list, count) }
    }

    /// Slot information.
    fn C_GetSlotInfo(slot: ck::CK_SLOT_ID, info: *mut ck::CK_SLOT_INFO) {
        let token = token::current()?;
        let value = token.slot_info(slot)?;
        // SAFETY: the caller passes a CK_SLOT_INFO to fill.
        *unsafe { out(info) }? = value;
        Ok(())
    }

    /// Token information.
    fn C_GetTokenInfo(slot: ck::CK_SLOT_ID, info: *mut ck::CK_TOKEN_INFO) {
        let token = token::current()?;
        let value = token.token_info(slot)?;
        // SAFETY: the caller passes a CK_TOKEN_INFO to fill.
        *unsafe { out(info) }? = value;
        Ok(())
    }

    /// The mechanisms the cluster serves.
    fn C_GetMechanismList(
        slot: ck::CK_SLOT_ID,
        list: *mut ck::CK_MECHANISM_TYPE,
        count: *mut ck::CK_ULONG,
    ) {
        let token = token::current()?;
        let mechanisms = token.mechanisms(slot)?;
        // SAFETY: the caller passes a count and a list of that many entries, or NULL.
        unsafe { write_list(mechanisms, list, count) }
    }

    /// One mechanism's key sizes and flags.
    fn C_GetMechanismInfo(
        slot: ck::CK_SLOT_ID,
        kind: ck::CK_MECHANISM_TYPE,
        info: *mut ck::CK_MECHANISM_INFO,
    ) {
        let token = token::current()?;
        let value = token.mechanism_info(slot, kind)?;
        // SAFETY: the caller passes a CK_MECHANISM_INFO to fill.
        *unsafe { out(info) }? = value;
        Ok(())
    }

    /// Slot events never happen (the token is always present): `CKR_NO_EVENT` with
    /// `CKF_DONT_BLOCK`; blocking waits are not supported.
    fn C_WaitForSlotEvent(
        flags: ck::CK_FLAGS,
        slot: *mut ck::CK_SLOT_ID,
        _reserved: *mut c_void,
    ) {
        token::current()?;
        if slot.is_null() {
            return Err(bad());
        }
        if flags & ck::CKF_DONT_BLOCK != 0 {
            return Err(Error::NoEvent);
        }
        Err(hsm_proto::ErrorCode::FunctionNotSupported.into())
    }
}
