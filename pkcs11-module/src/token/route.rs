//! Which node a request may go to, and whether it may be retried on another.
//!
//! Token objects exist on every node, so a request about them goes anywhere. A session object
//! exists only on the node connection that created it (the *home* connection, which every
//! request that may create one uses): a request naming one is pinned there, and once that
//! connection is gone the object is gone too (`CKR_OBJECT_HANDLE_INVALID`,
//! `CKR_KEY_HANDLE_INVALID` in key functions). Searches go home while session objects exist,
//! so they see them.
//!
//! Reads and crypto retry freely; mutations carry a fresh request key, the same on every
//! retry of the call, so the cluster applies each once; `C_SetPIN` never retries once sent.

use super::Token;
use super::object::is_token_object;
use super::session::Session;
use crate::client::{Retry, Route, Served, request_key};
use crate::error::{Error, Result};
use cryptoki_sys as ck;
use hsm_proto::attr::{self, Attribute};
use hsm_proto::{ErrorCode, ObjectId, Request, Response};

impl Token {
    /// Sends a request on behalf of a session, where its objects allow.
    pub(super) fn call_for(&self, session: &Session, request: &Request) -> Result<Response> {
        self.call_served(session, request).map(|s| s.response)
    }

    /// [`Token::call_for`], also saying which connection served (new session objects live
    /// there).
    pub(super) fn call_served(&self, session: &Session, request: &Request) -> Result<Served> {
        session.mark_used();
        let (route, invalid) = self.route_for(request)?;
        let retry = retry_for(request)?;
        match self.client().call(request, route, retry) {
            // The node holding a session object the request names failed mid-call: the
            // object is gone.
            Err(Error::Device(why)) if matches!(route, Route::Conn(c) if !self.client().is_live(c)) =>
            {
                tracing::info!(request = request.name(), "session object lost: {why}");
                Err(invalid.into())
            }
            other => other,
        }
    }

    /// Sends a request on one connection only (state of a multi-part operation lives there).
    pub(super) fn call_on(
        &self,
        session: &Session,
        request: &Request,
        conn: u64,
    ) -> Result<Served> {
        session.mark_used();
        self.client().call(request, Route::Conn(conn), Retry::Never)
    }

    /// The route for a request, and the code for "the session object it names is gone".
    fn route_for(&self, request: &Request) -> Result<(Route, ErrorCode)> {
        let (ids, invalid) = referenced(request);
        let objects = self.objects.read()?;
        for id in ids.into_iter().flatten() {
            if let Some(conn) = objects.conn_of(id) {
                if !self.client().is_live(conn) {
                    return Err(invalid.into());
                }
                return Ok((Route::Conn(conn), invalid));
            }
        }
        let route = match request {
            Request::GenerateKey { template, .. }
            | Request::CreateObject { template, .. }
            | Request::UnwrapKey { template, .. }
            | Request::DeriveKey { template, .. }
                if !is_token_object(template) =>
            {
                Route::Home
            }
            Request::GenerateKeyPair {
                public_template,
                private_template,
                ..
            } if !is_token_object(public_template) || !is_token_object(private_template) => {
                Route::Home
            }
            Request::CopyObject { template, .. }
                if matches!(
                    attr::find(template, ck::CKA_TOKEN as u64),
                    Some(Attribute::Token(false))
                ) =>
            {
                Route::Home
            }
            Request::FindObjects { .. } if objects.has_session_objects() => Route::Home,
            _ => Route::Any,
        };
        Ok((route, invalid))
    }
}

/// The objects a request names, and the code for one that is gone.
fn referenced(request: &Request) -> ([Option<ObjectId>; 2], ErrorCode) {
    let object = ErrorCode::ObjectHandleInvalid;
    let key = ErrorCode::KeyHandleInvalid;
    match request {
        Request::Sign { key: k, .. }
        | Request::Verify { key: k, .. }
        | Request::Encrypt { key: k, .. }
        | Request::Decrypt { key: k, .. }
        | Request::DigestKey { key: k, .. } => ([Some(*k), None], key),
        Request::GetAttributeValue { object: o, .. }
        | Request::SetAttributeValue { object: o, .. }
        | Request::DestroyObject { object: o, .. }
        | Request::GetObjectSize { object: o, .. }
        | Request::CopyObject { object: o, .. } => ([Some(*o), None], object),
        Request::WrapKey {
            wrapping_key,
            key: k,
            ..
        } => ([Some(*wrapping_key), Some(*k)], key),
        Request::UnwrapKey { unwrapping_key, .. } => (
            [Some(*unwrapping_key), None],
            ErrorCode::UnwrappingKeyHandleInvalid,
        ),
        Request::DeriveKey { base_key, .. } => ([Some(*base_key), None], key),
        Request::OperationUpdate {
            start: Some(start), ..
        }
        | Request::OperationFinal {
            start: Some(start), ..
        } => ([start.key, None], key),
        _ => ([None, None], object),
    }
}

/// How a request may be retried.
fn retry_for(request: &Request) -> Result<Retry> {
    Ok(match request {
        Request::GenerateKey { .. }
        | Request::GenerateKeyPair { .. }
        | Request::CreateObject { .. }
        | Request::CopyObject { .. }
        | Request::UnwrapKey { .. }
        | Request::DeriveKey { .. }
        | Request::DestroyObject { .. }
        | Request::SetAttributeValue { .. }
        | Request::CreateUser { .. }
        | Request::InitPin { .. } => Retry::Keyed(request_key()?),
        Request::SetPin { .. }
        | Request::OperationUpdate { .. }
        | Request::OperationFinal { .. }
        | Request::OperationCancel { .. }
        | Request::DigestKey { .. } => Retry::Never,
        _ => Retry::Safe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_proto::{Mechanism, SecretBytes, SessionId};

    #[test]
    fn mutations_carry_keys_and_reads_retry_freely() {
        let s = SessionId(1);
        let sign = Request::Sign {
            session: s,
            key: ObjectId(5),
            mechanism: Mechanism::plain(ck::CKM_ECDSA as u64),
            data: SecretBytes::new(vec![1]),
        };
        assert_eq!(retry_for(&sign).unwrap(), Retry::Safe);
        assert_eq!(referenced(&sign).0, [Some(ObjectId(5)), None]);
        let destroy = Request::DestroyObject {
            session: s,
            object: ObjectId(6),
        };
        assert!(matches!(retry_for(&destroy).unwrap(), Retry::Keyed(k) if k != 0));
        let pin = Request::SetPin {
            old: hsm_proto::Password::new("a".into()),
            new: hsm_proto::Password::new("b".into()),
        };
        assert_eq!(retry_for(&pin).unwrap(), Retry::Never);
    }

    #[test]
    fn each_call_gets_its_own_key() {
        let create = Request::CreateObject {
            session: SessionId(1),
            template: vec![],
        };
        assert_ne!(retry_for(&create).unwrap(), retry_for(&create).unwrap());
    }
}
