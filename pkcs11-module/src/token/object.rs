//! Objects: the handle table, creation, search, attributes, destruction.
//!
//! A `CK_OBJECT_HANDLE` is a module-local number (nonzero, never reused) for a node's
//! 128-bit [`ObjectId`]. The table caches the [`ObjectInfo`] the node sends with each object,
//! so `C_SignInit` and friends answer key errors without a round trip.

use super::Token;
use super::session::Session;
use crate::client::unexpected;
use crate::error::{Error, Result};
use cryptoki_sys as ck;
use hsm_proto::attr::{self, Attribute};
use hsm_proto::mechlist;
use hsm_proto::{AttrOutcome, ErrorCode, Mechanism, MechanismParams, ObjectId, ObjectInfo};
use hsm_proto::{Request, Response};
use std::collections::HashMap;

/// Handle ↔ object id, with what we know about each object.
#[derive(Debug)]
pub struct ObjectTable {
    by_handle: HashMap<u64, Entry>,
    by_id: HashMap<ObjectId, u64>,
    next: u64,
    /// How many entries are session objects.
    session_objects: usize,
}

impl Default for ObjectTable {
    fn default() -> Self {
        ObjectTable {
            by_handle: HashMap::new(),
            by_id: HashMap::new(),
            // 0 is CK_INVALID_HANDLE.
            next: 1,
            session_objects: 0,
        }
    }
}

/// One known object.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// What the node said about it.
    pub info: ObjectInfo,
    /// The session that created it, for session objects this module created.
    pub owner: Option<u64>,
    /// For a session object: the connection whose node holds it (it dies with it).
    pub conn: Option<u64>,
}

impl ObjectTable {
    /// The handle of an object, assigned on first sight. `conn` is the connection that
    /// reported it, recorded for session objects.
    pub fn register(&mut self, info: ObjectInfo, owner: Option<u64>, conn: u64) -> u64 {
        let conn = (!info.allows(ObjectInfo::TOKEN)).then_some(conn);
        if let Some(&handle) = self.by_id.get(&info.id)
            && let Some(entry) = self.by_handle.get_mut(&handle)
        {
            entry.info = info;
            if entry.owner.is_none() {
                entry.owner = owner;
            }
            if conn.is_some() && entry.conn.is_none() {
                self.session_objects += 1;
            }
            if conn.is_some() {
                entry.conn = conn;
            }
            return handle;
        }
        let handle = self.next;
        self.next += 1;
        if conn.is_some() {
            self.session_objects += 1;
        }
        self.by_handle.insert(handle, Entry { info, owner, conn });
        self.by_id.insert(info.id, handle);
        handle
    }

    /// What we know about a handle.
    pub fn get(&self, handle: u64) -> Option<Entry> {
        self.by_handle.get(&handle).copied()
    }

    /// Forgets a handle (its object was destroyed).
    pub fn remove(&mut self, handle: u64) {
        if let Some(entry) = self.by_handle.remove(&handle) {
            self.by_id.remove(&entry.info.id);
            if entry.conn.is_some() {
                self.session_objects = self.session_objects.saturating_sub(1);
            }
        }
    }

    /// Forgets the session objects of a closed session (the node destroys them).
    pub fn forget_session(&mut self, session: u64) {
        let by_id = &mut self.by_id;
        let mut gone = 0;
        self.by_handle.retain(|_, entry| {
            let keep = entry.owner != Some(session) || entry.conn.is_none();
            if !keep {
                by_id.remove(&entry.info.id);
                gone += 1;
            }
            keep
        });
        self.session_objects = self.session_objects.saturating_sub(gone);
    }

    /// The connection holding a session object, by id (`None` for token objects and
    /// unknown ids).
    pub fn conn_of(&self, id: ObjectId) -> Option<u64> {
        let handle = self.by_id.get(&id)?;
        self.by_handle.get(handle)?.conn
    }

    /// Whether any session object is known (searches must then see the home connection).
    pub fn has_session_objects(&self) -> bool {
        self.session_objects > 0
    }
}

/// The search state of `C_FindObjects*`: every match, handed out in order.
#[derive(Debug, Default)]
pub struct FindState {
    handles: Vec<ck::CK_OBJECT_HANDLE>,
    next: usize,
}

pub(super) fn is_token_object(template: &[Attribute]) -> bool {
    matches!(
        attr::find(template, ck::CKA_TOKEN as u64),
        Some(Attribute::Token(true))
    )
}

fn owner_of(info: &ObjectInfo, session: &Session) -> Option<u64> {
    if info.allows(ObjectInfo::TOKEN) {
        None
    } else {
        Some(session.handle)
    }
}

/// Checks a key-generation mechanism against the table; they take no parameters.
fn check_generation_mechanism(mechanism: &Mechanism, flag: ck::CK_FLAGS) -> Result<()> {
    if !mechlist::supports(mechanism.kind, flag as u64) {
        return Err(ErrorCode::MechanismInvalid.into());
    }
    if mechanism.params != MechanismParams::None {
        return Err(ErrorCode::MechanismParamInvalid.into());
    }
    Ok(())
}

impl Token {
    /// What we know about an object handle, or `None`; also `None` for a session object
    /// whose node failed (it is gone, and its handle with it).
    pub(super) fn object(&self, handle: ck::CK_OBJECT_HANDLE) -> Result<Option<Entry>> {
        let entry = self.objects.read()?.get(handle as u64);
        match entry {
            Some(Entry {
                conn: Some(conn), ..
            }) if !self.client().is_live(conn) => {
                tracing::info!(
                    handle,
                    "session object lost with the node that held it: handle invalid"
                );
                self.objects.write()?.remove(handle as u64);
                Ok(None)
            }
            other => Ok(other),
        }
    }

    pub(super) fn register(
        &self,
        info: ObjectInfo,
        session: &Session,
        conn: u64,
    ) -> Result<ck::CK_OBJECT_HANDLE> {
        let owner = owner_of(&info, session);
        Ok(self.objects.write()?.register(info, owner, conn) as ck::CK_OBJECT_HANDLE)
    }

    /// `C_GenerateKeyPair`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `MechanismInvalid`, `MechanismParamInvalid`,
    /// `SessionReadOnly` for token keys in a read-only session, and the node's verdict.
    pub fn generate_key_pair(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        mechanism: Mechanism,
        public_template: Vec<Attribute>,
        private_template: Vec<Attribute>,
    ) -> Result<(ck::CK_OBJECT_HANDLE, ck::CK_OBJECT_HANDLE)> {
        let session = self.session(handle)?;
        check_generation_mechanism(&mechanism, ck::CKF_GENERATE_KEY_PAIR)?;
        if !session.rw && (is_token_object(&public_template) || is_token_object(&private_template))
        {
            return Err(ErrorCode::SessionReadOnly.into());
        }
        let request = Request::GenerateKeyPair {
            session: session.id(),
            mechanism,
            public_template,
            private_template,
        };
        let served = self.call_served(&session, &request)?;
        match served.response {
            Response::KeyPairGenerated { public, private } => Ok((
                self.register(public, &session, served.conn)?,
                self.register(private, &session, served.conn)?,
            )),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// `C_GenerateKey`.
    ///
    /// # Errors
    /// As [`Token::generate_key_pair`].
    pub fn generate_key(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        mechanism: Mechanism,
        template: Vec<Attribute>,
    ) -> Result<ck::CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        check_generation_mechanism(&mechanism, ck::CKF_GENERATE)?;
        if !session.rw && is_token_object(&template) {
            return Err(ErrorCode::SessionReadOnly.into());
        }
        let request = Request::GenerateKey {
            session: session.id(),
            mechanism,
            template,
        };
        let served = self.call_served(&session, &request)?;
        match served.response {
            Response::KeyGenerated { key } => self.register(key, &session, served.conn),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// `C_CreateObject`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `SessionReadOnly`, and the node's verdict.
    pub fn create_object(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        template: Vec<Attribute>,
    ) -> Result<ck::CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        if !session.rw && is_token_object(&template) {
            return Err(ErrorCode::SessionReadOnly.into());
        }
        let request = Request::CreateObject {
            session: session.id(),
            template,
        };
        let served = self.call_served(&session, &request)?;
        match served.response {
            Response::ObjectCreated(info) => self.register(info, &session, served.conn),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// `C_DestroyObject`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `ObjectHandleInvalid`, `SessionReadOnly` for a token object
    /// in a read-only session, and the node's verdict.
    pub fn destroy_object(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        object: ck::CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let session = self.session(handle)?;
        let entry = self.object(object)?.ok_or(ErrorCode::ObjectHandleInvalid)?;
        if !session.rw && entry.info.allows(ObjectInfo::TOKEN) {
            return Err(ErrorCode::SessionReadOnly.into());
        }
        let request = Request::DestroyObject {
            session: session.id(),
            object: entry.info.id,
        };
        match self.call_for(&session, &request)? {
            Response::ObjectDestroyed => {
                self.objects.write()?.remove(object as u64);
                Ok(())
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// `C_GetObjectSize`: the node's estimate, in bytes.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `ObjectHandleInvalid`, and the node's verdict.
    pub fn object_size(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        object: ck::CK_OBJECT_HANDLE,
    ) -> Result<ck::CK_ULONG> {
        let session = self.session(handle)?;
        let entry = self.object(object)?.ok_or(ErrorCode::ObjectHandleInvalid)?;
        let request = Request::GetObjectSize {
            session: session.id(),
            object: entry.info.id,
        };
        match self.call_for(&session, &request)? {
            Response::ObjectSize(n) => Ok(n as ck::CK_ULONG),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// `C_SetAttributeValue`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `ObjectHandleInvalid`, `SessionReadOnly` for a token object
    /// in a read-only session, and the node's verdict (`AttributeReadOnly`, …).
    pub fn set_attribute_value(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        object: ck::CK_OBJECT_HANDLE,
        template: Vec<Attribute>,
    ) -> Result<()> {
        let session = self.session(handle)?;
        let entry = self.object(object)?.ok_or(ErrorCode::ObjectHandleInvalid)?;
        if !session.rw && entry.info.allows(ObjectInfo::TOKEN) {
            return Err(ErrorCode::SessionReadOnly.into());
        }
        let request = Request::SetAttributeValue {
            session: session.id(),
            object: entry.info.id,
            template,
        };
        let served = self.call_served(&session, &request)?;
        match served.response {
            Response::ObjectUpdated(info) => {
                self.objects
                    .write()?
                    .register(info, entry.owner, served.conn);
                Ok(())
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// `C_CopyObject`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `ObjectHandleInvalid`, `SessionReadOnly` when the copy would
    /// be a token object in a read-only session, and the node's verdict.
    pub fn copy_object(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        object: ck::CK_OBJECT_HANDLE,
        template: Vec<Attribute>,
    ) -> Result<ck::CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        let entry = self.object(object)?.ok_or(ErrorCode::ObjectHandleInvalid)?;
        let token_copy = match attr::find(&template, ck::CKA_TOKEN as u64) {
            Some(Attribute::Token(t)) => *t,
            _ => entry.info.allows(ObjectInfo::TOKEN),
        };
        if !session.rw && token_copy {
            return Err(ErrorCode::SessionReadOnly.into());
        }
        let request = Request::CopyObject {
            session: session.id(),
            object: entry.info.id,
            template,
        };
        let served = self.call_served(&session, &request)?;
        match served.response {
            Response::ObjectCreated(info) => self.register(info, &session, served.conn),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// `C_GetAttributeValue`: one outcome per requested type, in order. Types this module
    /// does not know are answered `Invalid` without asking the node.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `ObjectHandleInvalid`, and the node's verdict.
    pub fn attribute_values(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        object: ck::CK_OBJECT_HANDLE,
        types: &[u64],
    ) -> Result<Vec<AttrOutcome>> {
        let session = self.session(handle)?;
        let entry = self.object(object)?.ok_or(ErrorCode::ObjectHandleInvalid)?;
        let known: Vec<u64> = types
            .iter()
            .copied()
            .filter(|t| Attribute::kind_of(*t).is_some())
            .collect();
        let mut answers = if known.is_empty() {
            Vec::new().into_iter()
        } else {
            let request = Request::GetAttributeValue {
                session: session.id(),
                object: entry.info.id,
                types: known.clone(),
            };
            match self.call_for(&session, &request)? {
                Response::AttributeValues(values) if values.len() == known.len() => {
                    values.into_iter()
                }
                other => return Err(unexpected(&request, &other)),
            }
        };
        Ok(types
            .iter()
            .map(|t| {
                if Attribute::kind_of(*t).is_some() {
                    answers.next().unwrap_or(AttrOutcome::Invalid)
                } else {
                    AttrOutcome::Invalid
                }
            })
            .collect())
    }

    /// `C_FindObjectsInit`: asks the node for every match now; `C_FindObjects` hands them
    /// out. A template with an attribute type we do not know matches nothing.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `OperationActive`, and the node's verdict.
    pub fn find_objects_init(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        template: Option<Vec<Attribute>>,
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        if ops.find.is_some() {
            return Err(ErrorCode::OperationActive.into());
        }
        let Some(template) = template else {
            ops.find = Some(FindState::default());
            return Ok(());
        };
        let request = Request::FindObjects {
            session: session.id(),
            template,
        };
        let served = self.call_served(&session, &request)?;
        let found = match served.response {
            Response::Objects(found) => found,
            other => return Err(unexpected(&request, &other)),
        };
        let handles = {
            let mut objects = self.objects.write()?;
            found
                .iter()
                .map(|info| {
                    // Session objects this module did not create in this session keep the
                    // owner recorded when they were created.
                    objects.register(*info, None, served.conn) as ck::CK_OBJECT_HANDLE
                })
                .collect()
        };
        ops.find = Some(FindState { handles, next: 0 });
        Ok(())
    }

    /// `C_FindObjects`: fills `out` with the next handles and returns how many.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `OperationNotInitialized`.
    pub fn find_objects(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        out: &mut [ck::CK_OBJECT_HANDLE],
    ) -> Result<usize> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        let find = ops
            .find
            .as_mut()
            .ok_or(ErrorCode::OperationNotInitialized)?;
        let rest = &find.handles[find.next..];
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        find.next += n;
        Ok(n)
    }

    /// `C_FindObjectsFinal`.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, `OperationNotInitialized`.
    pub fn find_objects_final(&self, handle: ck::CK_SESSION_HANDLE) -> Result<()> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        ops.find
            .take()
            .map(|_| ())
            .ok_or(Error::Code(ErrorCode::OperationNotInitialized))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u128, flags: u32) -> ObjectInfo {
        ObjectInfo {
            id: ObjectId(id),
            class: ck::CKO_PRIVATE_KEY as u64,
            key_type: Some(ck::CKK_EC as u64),
            usage: flags,
        }
    }

    #[test]
    fn handles_are_stable_nonzero_and_never_reused() {
        let mut t = ObjectTable::default();
        let a = t.register(info(10, 0), Some(1), 7);
        let b = t.register(info(11, ObjectInfo::TOKEN), None, 7);
        assert!(a != 0 && b != 0 && a != b);
        assert!(t.has_session_objects());
        assert_eq!(t.conn_of(ObjectId(10)), Some(7));
        assert_eq!(t.conn_of(ObjectId(11)), None);
        assert_eq!(t.register(info(10, ObjectInfo::SIGN), None, 7), a);
        assert_eq!(t.get(a).unwrap().owner, Some(1));
        assert!(t.get(a).unwrap().info.allows(ObjectInfo::SIGN));
        t.forget_session(1);
        assert!(t.get(a).is_none());
        assert!(!t.has_session_objects());
        assert!(t.get(b).is_some());
        let c = t.register(info(10, 0), None, 8);
        assert!(c != a && c != b);
        t.remove(b);
        assert!(t.get(b).is_none());
        assert_ne!(t.register(info(11, 0), None, 8), b);
        t.remove(c);
        assert!(t.has_session_objects());
    }
}
