//! Multi-part operations, wrap/unwrap and derive: the handler side. Crypto is in `crate::mech`;
//! here are the checks PKCS#11 assigns to the token (login, ownership, usage flags, allowed
//! mechanisms, extractability, trusted wrapping) and the objects that come out.

use super::{Session, incomplete, new_id, poisoned};
use crate::error::Error;
use crate::keys;
use crate::mech::{self, KeyRef, Operation, Started};
use crate::object::{self, Body, Object, Origin};
use cryptoki_sys as ck;
use hsm_proto::{
    Attribute, ErrorCode, Mechanism, ObjectId, OperationKind, OperationStart, Response,
    SecretBytes, SessionId,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The running multi-part operations of a connection, at most one per (session, kind).
#[derive(Default)]
pub struct Operations {
    active: Mutex<HashMap<(SessionId, OperationKind), Box<dyn Operation>>>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.active.lock().map(|a| a.len()).unwrap_or(0);
        write!(f, "Operations({n} active)")
    }
}

impl Operations {
    fn take(&self, key: (SessionId, OperationKind)) -> Result<Option<Box<dyn Operation>>, Error> {
        Ok(self.active.lock().map_err(|_| poisoned())?.remove(&key))
    }

    fn put(&self, key: (SessionId, OperationKind), op: Box<dyn Operation>) -> Result<(), Error> {
        self.active.lock().map_err(|_| poisoned())?.insert(key, op);
        Ok(())
    }

    /// Drops one operation (the module saw it end, or replaces it).
    pub fn cancel(&self, session: SessionId, kind: OperationKind) {
        if let Ok(mut a) = self.active.lock() {
            a.remove(&(session, kind));
        }
    }

    /// Drops every operation of a session (it closed).
    pub fn close_session(&self, session: SessionId) {
        if let Ok(mut a) = self.active.lock() {
            a.retain(|(s, _), _| *s != session);
        }
    }
}

fn usage_of(kind: OperationKind) -> (ck::CK_FLAGS, ck::CK_ATTRIBUTE_TYPE) {
    match kind {
        OperationKind::Sign => (ck::CKF_SIGN, ck::CKA_SIGN),
        OperationKind::Verify => (ck::CKF_VERIFY, ck::CKA_VERIFY),
        OperationKind::Encrypt => (ck::CKF_ENCRYPT, ck::CKA_ENCRYPT),
        OperationKind::Decrypt => (ck::CKF_DECRYPT, ck::CKA_DECRYPT),
        OperationKind::Digest => (ck::CKF_DIGEST, 0),
    }
}

fn key_ref(obj: &Object) -> KeyRef {
    match &obj.body {
        Body::Secret(k) => KeyRef::Secret(k.clone()),
        Body::Public(p) => KeyRef::Public(p.clone()),
        Body::None => KeyRef::None,
    }
}

impl Session<'_> {
    /// A key for an operation of `kind`, checked as the spec's `C_*Init` would.
    pub(super) fn operation_key(
        &self,
        kind: OperationKind,
        id: ObjectId,
        mechanism: &Mechanism,
    ) -> Result<KeyRef, Error> {
        let (mech_flag, usage) = usage_of(kind);
        // Signing and decryption always use a private or secret key: the login is checked
        // first, so a logged-out caller hears that rather than "no such key".
        let needs_user = matches!(kind, OperationKind::Sign | OperationKind::Decrypt);
        let obj = match self.key_for(id, mechanism, mech_flag, usage, needs_user) {
            Err(e) if e.code == ErrorCode::KeyHandleInvalid && self.login()?.is_none() => {
                return Err(Error::new(
                    ErrorCode::UserNotLoggedIn,
                    format!("key {id} is not visible: log in as its owner"),
                ));
            }
            other => other?,
        };
        // Using a private or secret key needs its owner logged in; public keys anyone may use.
        if matches!(obj.body, Body::Secret(_)) {
            let user = self.crypto_user()?;
            if obj.owner != user {
                return Err(Error::new(
                    ErrorCode::KeyHandleInvalid,
                    format!("no key {id}"),
                ));
            }
        }
        Ok(key_ref(&obj))
    }

    fn start(&self, kind: OperationKind, start: &OperationStart) -> Result<Started, Error> {
        let key = match (kind, start.key) {
            (OperationKind::Digest, _) => {
                super::check_mechanism(&start.mechanism, ck::CKF_DIGEST)?;
                KeyRef::None
            }
            (_, Some(id)) => self.operation_key(kind, id, &start.mechanism)?,
            (_, None) => {
                return Err(Error::new(
                    ErrorCode::KeyHandleInvalid,
                    "the operation needs a key",
                ));
            }
        };
        mech::start(kind, key, &start.mechanism)
    }

    /// A whole single-part operation: start, one update, finish.
    pub(super) fn single(
        &self,
        kind: OperationKind,
        key: Option<ObjectId>,
        mechanism: Mechanism,
        data: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Output, Error> {
        let Started {
            mut op,
            generated_iv,
        } = self.start(kind, &OperationStart { key, mechanism })?;
        let mut data = op.update(data)?;
        data.extend_from_slice(&op.finish(signature)?);
        Ok(Output { data, generated_iv })
    }

    pub(super) fn operation_update(
        &self,
        session: SessionId,
        kind: OperationKind,
        start: Option<OperationStart>,
        data: &[u8],
    ) -> Result<Response, Error> {
        let slot = (session, kind);
        let mut op = match start {
            Some(s) => {
                self.conn.operations.take(slot)?;
                self.start(kind, &s)?.op
            }
            None => self
                .conn
                .operations
                .take(slot)?
                .ok_or_else(not_initialized)?,
        };
        // An error ends the operation: it is simply not put back.
        let out = op.update(data)?;
        self.conn.operations.put(slot, op)?;
        Ok(Response::OperationData(SecretBytes::new(out.to_vec())))
    }

    pub(super) fn operation_final(
        &self,
        session: SessionId,
        kind: OperationKind,
        start: Option<OperationStart>,
        signature: Option<Vec<u8>>,
    ) -> Result<Response, Error> {
        let slot = (session, kind);
        let op = match start {
            Some(s) => {
                self.conn.operations.take(slot)?;
                self.start(kind, &s)?.op
            }
            None => self
                .conn
                .operations
                .take(slot)?
                .ok_or_else(not_initialized)?,
        };
        let out = op.finish(signature.as_deref())?;
        Ok(match kind {
            OperationKind::Verify => Response::Verified,
            _ => Response::OperationData(SecretBytes::new(out.to_vec())),
        })
    }

    pub(super) fn digest_key(
        &self,
        session: SessionId,
        start: Option<OperationStart>,
        key: ObjectId,
    ) -> Result<Response, Error> {
        let slot = (session, OperationKind::Digest);
        let mut op = match start {
            Some(s) => {
                self.conn.operations.take(slot)?;
                self.start(OperationKind::Digest, &s)?.op
            }
            None => self
                .conn
                .operations
                .take(slot)?
                .ok_or_else(not_initialized)?,
        };
        let obj = self.object(key, ErrorCode::KeyHandleInvalid)?;
        let value = match &obj.body {
            Body::Secret(k) if obj.class() == ck::CKO_SECRET_KEY as u64 => k.value(),
            _ => None,
        }
        .ok_or_else(|| {
            Error::new(
                ErrorCode::KeyIndigestible,
                format!("key {key} cannot be digested"),
            )
        })?;
        op.update(&value)?;
        self.conn.operations.put(slot, op)?;
        Ok(Response::OperationData(SecretBytes::default()))
    }

    pub(super) fn wrap_key(
        &self,
        mechanism: &Mechanism,
        wrapping: ObjectId,
        key: ObjectId,
    ) -> Result<Response, Error> {
        let wrapper = self
            .key_for(wrapping, mechanism, ck::CKF_WRAP, ck::CKA_WRAP, false)
            .map_err(|e| {
                if e.code == ErrorCode::KeyHandleInvalid {
                    Error::new(ErrorCode::WrappingKeyHandleInvalid, e.message)
                } else {
                    e
                }
            })?;
        let target = self.object(key, ErrorCode::KeyHandleInvalid)?;
        let user = self.crypto_user()?;
        if target.owner != user {
            return Err(Error::new(
                ErrorCode::KeyHandleInvalid,
                format!("no key {key}"),
            ));
        }
        let Body::Secret(secret) = &target.body else {
            return Err(Error::new(
                ErrorCode::KeyNotWrappable,
                format!("object {key} is not a private or secret key"),
            ));
        };
        if !target.flag(ck::CKA_EXTRACTABLE) {
            return Err(Error::new(
                ErrorCode::KeyUnextractable,
                format!("key {key} is not extractable"),
            ));
        }
        if target.flag(ck::CKA_WRAP_WITH_TRUSTED) && !wrapper.flag(ck::CKA_TRUSTED) {
            return Err(Error::new(
                ErrorCode::KeyNotWrappable,
                format!("key {key} may only be wrapped by a trusted key (CKA_WRAP_WITH_TRUSTED)"),
            ));
        }
        let payload = secret.wrap_payload();
        Ok(Response::WrappedKey(mech::wrap(
            mechanism,
            &key_ref(&wrapper),
            &payload,
        )?))
    }

    pub(super) fn unwrap_key(
        &self,
        session: SessionId,
        mechanism: &Mechanism,
        unwrapping: ObjectId,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<Response, Error> {
        let unwrapper = self
            .key_for(unwrapping, mechanism, ck::CKF_UNWRAP, ck::CKA_UNWRAP, false)
            .map_err(|e| {
                if e.code == ErrorCode::KeyHandleInvalid {
                    Error::new(ErrorCode::UnwrappingKeyHandleInvalid, e.message)
                } else {
                    e
                }
            })?;
        let owner = self.crypto_user()?;
        if unwrapper.owner != owner {
            return Err(Error::new(
                ErrorCode::UnwrappingKeyHandleInvalid,
                format!("no key {unwrapping}"),
            ));
        }
        let payload = mech::unwrap(mechanism, &key_ref(&unwrapper), wrapped)?;
        self.import_from_bytes(session, &owner, template, &payload, ImportSource::Unwrapped)
    }

    pub(super) fn derive_key(
        &self,
        session: SessionId,
        mechanism: &Mechanism,
        base: ObjectId,
        template: &[Attribute],
    ) -> Result<Response, Error> {
        let base_obj = self.key_for(base, mechanism, ck::CKF_DERIVE, ck::CKA_DERIVE, true)?;
        let Body::Secret(secret) = &base_obj.body else {
            return Err(Error::new(
                ErrorCode::KeyTypeInconsistent,
                "derivation needs a private key",
            ));
        };
        let owner = self.crypto_user()?;
        let shared = mech::derive(mechanism, secret)?;
        self.import_from_bytes(session, &owner, template, &shared, ImportSource::Derived)
    }

    /// Makes a key object from raw bytes (unwrapped payload or derived secret) and a template.
    fn import_from_bytes(
        &self,
        session: SessionId,
        owner: &str,
        template: &[Attribute],
        bytes: &[u8],
        source: ImportSource,
    ) -> Result<Response, Error> {
        let class = match hsm_proto::attr::find(template, ck::CKA_CLASS as u64) {
            Some(Attribute::Class(c)) => *c,
            _ if source == ImportSource::Derived => ck::CKO_SECRET_KEY as u64,
            _ => return Err(incomplete("CKA_CLASS")),
        };
        let (key_type, secret, public, material, extra) = if class == ck::CKO_SECRET_KEY as u64 {
            let key_type = match hsm_proto::attr::find(template, ck::CKA_KEY_TYPE as u64) {
                Some(Attribute::KeyType(k)) => *k,
                _ if source == ImportSource::Derived => ck::CKK_GENERIC_SECRET as u64,
                _ => return Err(incomplete("CKA_KEY_TYPE")),
            };
            let len = match hsm_proto::attr::find(template, ck::CKA_VALUE_LEN as u64) {
                Some(Attribute::ValueLen(n)) => *n as usize,
                _ => bytes.len(),
            };
            if len == 0 || len > bytes.len() {
                return Err(Error::new(
                    ErrorCode::TemplateInconsistent,
                    format!("CKA_VALUE_LEN {len} is not possible here"),
                ));
            }
            let (key, material) = keys::import_secret(key_type, &bytes[..len])?;
            (
                key_type,
                key,
                None,
                material,
                vec![Attribute::ValueLen(len as u64)],
            )
        } else if class == ck::CKO_PRIVATE_KEY as u64 && source == ImportSource::Unwrapped {
            let (key_type, pair) = keys::import_pkcs8(bytes)?;
            (
                key_type,
                pair.private,
                Some(pair.public),
                pair.material,
                Vec::new(),
            )
        } else {
            return Err(Error::new(
                ErrorCode::TemplateInconsistent,
                "CKA_CLASS: a secret key (or, for unwrap, a private key)",
            ));
        };
        let mut attrs = object::merge_template(
            class,
            Some(key_type),
            template,
            object::key_defaults(class, key_type),
            Origin::Created,
        )?;
        for a in extra {
            attrs.insert(a.type_code(), a);
        }
        if let Some(p) = &public {
            object::public_attributes(&mut attrs, p, class);
        }
        object::secret_attributes(&mut attrs, &secret);
        let obj = self.new_key_object(
            new_id()?,
            owner,
            attrs,
            Origin::Created,
            Body::Secret(Arc::new(secret)),
            Some(&material),
        )?;
        Ok(Response::ObjectCreated(self.add(session, obj)?))
    }
}

/// The result of a single-part operation.
pub(super) struct Output {
    /// Signature, ciphertext, plaintext or digest (empty for verify).
    pub data: zeroize::Zeroizing<Vec<u8>>,
    /// The IV the token chose, for GCM with a generated IV.
    pub generated_iv: Option<Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ImportSource {
    Unwrapped,
    Derived,
}

fn not_initialized() -> Error {
    Error::new(
        ErrorCode::OperationNotInitialized,
        "no such operation is active in this session",
    )
}
