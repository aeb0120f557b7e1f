//! Key management: wrap, unwrap, derive. Each is one request; nothing is kept between calls.

use super::Token;
use super::object::is_token_object;
use crate::client::unexpected;
use crate::error::{Error, Result};
use cryptoki_sys as ck;
use hsm_proto::attr::Attribute;
use hsm_proto::mechlist;
use hsm_proto::{ErrorCode, Mechanism, Request, Response};

fn check_mechanism(mechanism: &Mechanism, flag: ck::CK_FLAGS) -> Result<()> {
    if mechlist::supports(mechanism.kind, flag as u64) {
        Ok(())
    } else {
        Err(ErrorCode::MechanismInvalid.into())
    }
}

impl Token {
    /// `C_WrapKey`: wraps `key` under `wrapping_key`; `out` `None` is a size query (the
    /// wrap runs on the node each time: there is no operation to keep a result in).
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `MechanismInvalid`, `WrappingKeyHandleInvalid`,
    /// `KeyHandleInvalid`, `BufferTooSmall` with the length needed, and the node's verdict.
    pub fn wrap_key(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        mechanism: Mechanism,
        wrapping_key: ck::CK_OBJECT_HANDLE,
        key: ck::CK_OBJECT_HANDLE,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let session = self.session(handle)?;
        check_mechanism(&mechanism, ck::CKF_WRAP)?;
        let wrapping = self
            .object(wrapping_key)?
            .ok_or(ErrorCode::WrappingKeyHandleInvalid)?;
        let key = self.object(key)?.ok_or(ErrorCode::KeyHandleInvalid)?;
        let request = Request::WrapKey {
            session: session.id(),
            mechanism,
            wrapping_key: wrapping.info.id,
            key: key.info.id,
        };
        let wrapped = match self.call_for(&session, &request)? {
            Response::WrappedKey(w) => w,
            other => return Err(unexpected(&request, &other)),
        };
        match out {
            None => Ok(wrapped.len()),
            Some(buf) if buf.len() < wrapped.len() => Err(Error::BufferTooSmall(wrapped.len())),
            Some(buf) => {
                buf[..wrapped.len()].copy_from_slice(&wrapped);
                Ok(wrapped.len())
            }
        }
    }

    /// `C_UnwrapKey`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `MechanismInvalid`, `UnwrappingKeyHandleInvalid`,
    /// `SessionReadOnly` for a token key in a read-only session, and the node's verdict.
    pub fn unwrap_key(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        mechanism: Mechanism,
        unwrapping_key: ck::CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: Vec<Attribute>,
    ) -> Result<ck::CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        check_mechanism(&mechanism, ck::CKF_UNWRAP)?;
        let unwrapping = self
            .object(unwrapping_key)?
            .ok_or(ErrorCode::UnwrappingKeyHandleInvalid)?;
        if !session.rw && is_token_object(&template) {
            return Err(ErrorCode::SessionReadOnly.into());
        }
        let request = Request::UnwrapKey {
            session: session.id(),
            mechanism,
            unwrapping_key: unwrapping.info.id,
            wrapped: wrapped.to_vec(),
            template,
        };
        let served = self.call_served(&session, &request)?;
        match served.response {
            Response::ObjectCreated(info) => self.register(info, &session, served.conn),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// `C_DeriveKey`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `MechanismInvalid`, `KeyHandleInvalid`, `SessionReadOnly`,
    /// and the node's verdict.
    pub fn derive_key(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        mechanism: Mechanism,
        base_key: ck::CK_OBJECT_HANDLE,
        template: Vec<Attribute>,
    ) -> Result<ck::CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        check_mechanism(&mechanism, ck::CKF_DERIVE)?;
        let base = self.object(base_key)?.ok_or(ErrorCode::KeyHandleInvalid)?;
        if !session.rw && is_token_object(&template) {
            return Err(ErrorCode::SessionReadOnly.into());
        }
        let request = Request::DeriveKey {
            session: session.id(),
            mechanism,
            base_key: base.info.id,
            template,
        };
        let served = self.call_served(&session, &request)?;
        match served.response {
            Response::ObjectCreated(info) => self.register(info, &session, served.conn),
            other => Err(unexpected(&request, &other)),
        }
    }
}
