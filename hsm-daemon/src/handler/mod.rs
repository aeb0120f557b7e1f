//! Request handling: authorization, sessions, and the dispatch of each operation.
//!
//! Runs off the I/O threads (the server calls it in a blocking task): key generation, RSA and
//! Argon2id are CPU-heavy.

use crate::error::Error;
use crate::keys;
use crate::node::Node;
use crate::object::{self, Body, Object, Origin};
use crate::replica::{Committed, Token};
use crate::token::{self, Command, Outcome};
use crate::users;
use cryptoki_sys as ck;
use hsm_proto::msg::{Role, UserType};
use hsm_proto::tls::CertRole;
use hsm_proto::{
    AttrOutcome, Attribute, ErrorCode, Mechanism, ObjectId, ObjectInfo, OperationKind, Request,
    Response, SecretBytes, SessionId, WireError, mechlist,
};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod ops;

/// Who is logged in on a connection.
#[derive(Clone, Debug)]
struct LoggedIn {
    user: String,
    role: Role,
}

/// Per-connection state: the role of the client's certificate, login (PKCS#11 login covers
/// every session of the application) and the session objects, which die with their session or
/// the connection.
#[derive(Debug)]
pub struct Connection {
    cert_role: CertRole,
    /// SHA-256 of the client certificate, which login tickets are bound to.
    cert_hash: [u8; 32],
    login: Mutex<Option<LoggedIn>>,
    session_objects: Mutex<HashMap<ObjectId, (SessionId, Arc<Object>)>>,
    operations: ops::Operations,
}

impl Connection {
    /// A new connection whose client presented a certificate of `cert_role` whose DER has
    /// the SHA-256 `cert_hash`.
    pub fn new(cert_role: CertRole, cert_hash: [u8; 32]) -> Connection {
        Connection {
            cert_role,
            cert_hash,
            login: Mutex::default(),
            session_objects: Mutex::default(),
            operations: ops::Operations::default(),
        }
    }

    /// SHA-256 of the client's certificate (who is asking, across connections).
    pub fn cert_hash(&self) -> [u8; 32] {
        self.cert_hash
    }

    /// `UserNotLoggedIn` unless the client presented an admin certificate: admin requests
    /// need it as well as an admin login, so an application's key and a leaked admin password
    /// together still do not make an admin.
    fn require_admin_cert(&self, what: &str) -> Result<(), Error> {
        match self.cert_role {
            CertRole::Admin => Ok(()),
            CertRole::App => Err(Error::new(
                ErrorCode::UserNotLoggedIn,
                format!(
                    "{what}: admin requests need an admin certificate (admin.toml), not an \
                     application certificate"
                ),
            )),
            CertRole::Node => Err(Error::new(
                ErrorCode::UserNotLoggedIn,
                format!(
                    "{what}: admin requests need an admin certificate (admin.toml), not a \
                     node certificate"
                ),
            )),
        }
    }
}

fn poisoned() -> Error {
    Error::device("internal lock poisoned")
}

/// One request's context from its envelope: the client's request key (the same on every retry
/// of one PKCS#11 call; 0 for none) and, once handled, the log index the answer reflects.
#[derive(Debug, Default)]
pub struct Call {
    /// The client's request key.
    pub key: u128,
    /// The log index the response reflects (set by a mutation to its commit index).
    pub index: Cell<u64>,
}

impl Call {
    /// A call with the envelope's key.
    pub fn new(key: u128) -> Call {
        Call {
            key,
            index: Cell::new(0),
        }
    }
}

/// Handles one request and never panics on any input (errors become `Response::Error`).
pub fn handle(node: &Node, conn: &Connection, request: Request, call: &Call) -> Response {
    let name = request.name();
    let result = match request {
        Request::Status => Ok(Response::Status(node.status())),
        Request::Unseal(secret) => conn
            .require_admin_cert("unseal")
            .and_then(|()| node.unseal(&secret))
            .map(|()| {
                tracing::info!("node {} unsealed", node.name());
                Response::Unsealed
            }),
        Request::JoinKey => conn.require_admin_cert("join key").and_then(|()| {
            Ok(Response::JoinKey {
                node_id: node.id(),
                public_key: node.join_key()?,
            })
        }),
        Request::CompleteJoin(package) => conn
            .require_admin_cert("complete join")
            .and_then(|()| node.complete_join(&package))
            .map(|()| Response::Joined),
        other => match node.token() {
            None => {
                tracing::warn!(
                    "refusing {name}: node {} is sealed (run `hsmctl unseal`)",
                    node.name()
                );
                return Response::Error(WireError::sealed());
            }
            Some(token) => {
                let session = Session { token, conn, call };
                let r = session.handle(other);
                if call.index.get() == 0 {
                    call.index.set(token.state().applied_index());
                }
                r
            }
        },
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            if e.code == ErrorCode::DeviceError || e.code == ErrorCode::GeneralError {
                tracing::warn!("{name} failed: {e}");
            } else {
                tracing::debug!("{name} failed: {e}");
            }
            Response::Error(e.into())
        }
    }
}

struct Session<'a> {
    token: &'a Arc<Token>,
    conn: &'a Connection,
    call: &'a Call,
}

fn new_id() -> Result<ObjectId, Error> {
    let mut b = [0u8; 16];
    crate::seal::random_bytes(&mut b)?;
    Ok(ObjectId(u128::from_be_bytes(b)))
}

fn ulong_in(template: &[Attribute], code: ck::CK_ATTRIBUTE_TYPE) -> Option<u64> {
    match hsm_proto::attr::find(template, code as u64) {
        Some(Attribute::ModulusBits(v) | Attribute::ValueLen(v)) => Some(*v),
        _ => None,
    }
}

fn incomplete(what: &str) -> Error {
    Error::new(ErrorCode::TemplateIncomplete, format!("{what} is required"))
}

fn check_mechanism(mechanism: &Mechanism, flag: ck::CK_FLAGS) -> Result<(), Error> {
    if mechlist::supports(mechanism.kind, flag as u64) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::MechanismInvalid,
            format!(
                "mechanism {:#x} is not available for this operation",
                mechanism.kind
            ),
        ))
    }
}

impl Session<'_> {
    fn state(&self) -> &token::TokenState {
        self.token.state()
    }

    fn login(&self) -> Result<Option<LoggedIn>, Error> {
        Ok(self.conn.login.lock().map_err(|_| poisoned())?.clone())
    }

    /// `UserNotLoggedIn` with `why` unless an admin is logged in.
    fn require_admin(&self, why: &str) -> Result<(), Error> {
        match self.login()? {
            Some(LoggedIn {
                role: Role::Admin, ..
            }) => Ok(()),
            _ => Err(Error::new(ErrorCode::UserNotLoggedIn, why)),
        }
    }

    /// The logged-in crypto user, or `UserNotLoggedIn` (admins cannot use keys).
    fn crypto_user(&self) -> Result<String, Error> {
        match self.login()? {
            Some(LoggedIn {
                user,
                role: Role::CryptoUser,
            }) => Ok(user),
            Some(LoggedIn { role, .. }) => Err(Error::new(
                ErrorCode::UserNotLoggedIn,
                format!("a {role} cannot create or use keys; log in as a crypto user"),
            )),
            None => Err(Error::new(
                ErrorCode::UserNotLoggedIn,
                "log in as a crypto user first",
            )),
        }
    }

    fn visible(&self, obj: &Object, login: &Option<LoggedIn>) -> bool {
        !obj.flag(ck::CKA_PRIVATE)
            || matches!(login, Some(LoggedIn { user, role: Role::CryptoUser }) if *user == obj.owner)
    }

    /// Finds an object the connection may see; `invalid` is the code for "no such handle"
    /// (`CKR_KEY_HANDLE_INVALID` in key functions, `CKR_OBJECT_HANDLE_INVALID` elsewhere).
    fn object(&self, id: ObjectId, invalid: ErrorCode) -> Result<Arc<Object>, Error> {
        let login = self.login()?;
        let found = match self
            .conn
            .session_objects
            .lock()
            .map_err(|_| poisoned())?
            .get(&id)
        {
            Some((_, o)) => Some(o.clone()),
            None => self.state().object(id)?,
        };
        match found {
            Some(o) if self.visible(&o, &login) => Ok(o),
            _ => Err(Error::new(invalid, format!("no object {id}"))),
        }
    }

    /// A key usable for `flag` with `mechanism` by the logged-in user.
    fn key_for(
        &self,
        id: ObjectId,
        mechanism: &Mechanism,
        mech_flag: ck::CK_FLAGS,
        usage: ck::CK_ATTRIBUTE_TYPE,
        needs_owner: bool,
    ) -> Result<Arc<Object>, Error> {
        check_mechanism(mechanism, mech_flag)?;
        let user = if needs_owner {
            Some(self.crypto_user()?)
        } else {
            None
        };
        let key = self.object(id, ErrorCode::KeyHandleInvalid)?;
        if let Some(user) = user
            && key.owner != user
        {
            return Err(Error::new(
                ErrorCode::KeyHandleInvalid,
                format!("no key {id}"),
            ));
        }
        if !key.flag(usage) {
            return Err(Error::new(
                ErrorCode::KeyFunctionNotPermitted,
                format!(
                    "key {id} does not allow {}",
                    Attribute::type_name(usage as u64)
                ),
            ));
        }
        if !key.allows_mechanism(mechanism.kind) {
            return Err(Error::new(
                ErrorCode::MechanismInvalid,
                format!(
                    "CKA_ALLOWED_MECHANISMS of key {id} excludes {:#x}",
                    mechanism.kind
                ),
            ));
        }
        Ok(key)
    }

    /// `FunctionFailed` for the id of a node that was removed: ids are never reused.
    fn refuse_removed(&self, node_id: u64) -> Result<(), Error> {
        if self.state().is_removed(node_id) {
            return Err(Error::new(
                ErrorCode::FunctionFailed,
                format!(
                    "node id {node_id} was removed from this cluster and cannot rejoin; add the node under a new id"
                ),
            ));
        }
        Ok(())
    }

    /// Whether the logged-in user may change `obj`: its owner, or an admin for a public object
    /// (to set `CKA_TRUSTED`). Returns whether that user is an admin.
    fn may_change(&self, obj: &Object) -> Result<bool, Error> {
        match self.login()? {
            Some(LoggedIn {
                role: Role::Admin, ..
            }) if !obj.flag(ck::CKA_PRIVATE) => Ok(true),
            Some(LoggedIn {
                user,
                role: Role::CryptoUser,
            }) if user == obj.owner => Ok(false),
            Some(_) | None if !obj.is_token() => Ok(false),
            _ => Err(Error::new(
                ErrorCode::UserNotLoggedIn,
                "log in as the object's owner to change it",
            )),
        }
    }

    /// Commits one command (the call's only one) and records its index for the response.
    fn commit(&self, command: Command) -> Result<Committed, Error> {
        let committed = self.token.commit(&command, self.call.key)?;
        self.call.index.set(committed.index);
        Ok(committed)
    }

    /// Records a login on the connection and answers with a fresh ticket for it.
    fn logged_in(&self, user: String, role: Role) -> Result<Response, Error> {
        let cdk = self.state().cdk().expose_secret();
        let ticket = crate::ticket::issue(cdk, &user, role, self.conn.cert_hash)?;
        *self.conn.login.lock().map_err(|_| poisoned())? = Some(LoggedIn { user, role });
        Ok(Response::LoggedIn {
            role,
            ticket,
            ticket_lifetime_s: crate::ticket::LIFETIME.as_secs(),
        })
    }

    /// Creates or changes a user's password, keeping (or setting) its role.
    fn set_password(
        &self,
        name: &str,
        role: Role,
        password: &hsm_proto::Password,
    ) -> Result<(), Error> {
        let user = users::new_record(role, password)?;
        self.commit(Command::PutUser {
            name: name.to_owned(),
            user,
        })
        .map(|_| ())
    }

    /// Replaces an existing object (same id) with a changed one, where it lives.
    fn replace(&self, obj: Object) -> Result<(), Error> {
        if obj.is_token() {
            self.commit(Command::PutObjects(vec![(obj.id, obj.to_stored())]))
                .map(|_| ())
        } else {
            let mut map = self.conn.session_objects.lock().map_err(|_| poisoned())?;
            match map.get_mut(&obj.id) {
                Some(entry) => {
                    entry.1 = Arc::new(obj);
                    Ok(())
                }
                None => Err(Error::new(
                    ErrorCode::ObjectHandleInvalid,
                    format!("no object {}", obj.id),
                )),
            }
        }
    }

    /// Stores new objects: token objects through the replicated log, all in one command (a
    /// key pair is one), session objects in this connection. When the call's request key was
    /// applied before (a retry), answers with the objects that first application created.
    fn add_all(&self, session: SessionId, objects: Vec<Object>) -> Result<Vec<ObjectInfo>, Error> {
        let mut infos: Vec<ObjectInfo> = objects.iter().map(Object::info).collect();
        let token_positions: Vec<usize> = objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_token())
            .map(|(i, _)| i)
            .collect();
        if !token_positions.is_empty() {
            let command = Command::PutObjects(
                objects
                    .iter()
                    .filter(|o| o.is_token())
                    .map(|o| (o.id, o.to_stored()))
                    .collect(),
            );
            if let Outcome::Duplicate { index, objects } = self.commit(command)?.outcome {
                tracing::info!(
                    "request {:032x} was applied at {index}: answering with its objects",
                    self.call.key
                );
                for (pos, id) in token_positions.iter().zip(objects) {
                    let first = self.state().object(id)?.ok_or_else(|| {
                        Error::new(
                            ErrorCode::FunctionFailed,
                            format!("the object {id} this request created is gone"),
                        )
                    })?;
                    infos[*pos] = first.info();
                }
            }
        }
        let mut map = self.conn.session_objects.lock().map_err(|_| poisoned())?;
        for obj in objects.into_iter().filter(|o| !o.is_token()) {
            map.insert(obj.id, (session, Arc::new(obj)));
        }
        Ok(infos)
    }

    /// Stores one new object, as [`Session::add_all`].
    fn add(&self, session: SessionId, obj: Object) -> Result<ObjectInfo, Error> {
        self.add_all(session, vec![obj])?
            .pop()
            .ok_or_else(|| Error::device("no object stored"))
    }

    fn new_key_object(
        &self,
        id: ObjectId,
        owner: &str,
        mut attrs: std::collections::BTreeMap<u64, Attribute>,
        origin: Origin,
        body: Body,
        material: Option<&[u8]>,
    ) -> Result<Object, Error> {
        object::finish(&mut attrs, id, origin);
        // Wrapped with the policy of the final attributes: nothing may change them after this.
        Object::new(id, owner, attrs, body, material, self.state().cdk())
    }

    fn handle(&self, request: Request) -> Result<Response, Error> {
        match request {
            Request::Login {
                user_type,
                username,
                password,
            } => {
                if self.login()?.is_some() {
                    return Err(Error::new(
                        ErrorCode::UserAlreadyLoggedIn,
                        "already logged in on this connection",
                    ));
                }
                let record = self.state().user(&username)?;
                let role =
                    self.state()
                        .lockouts
                        .authenticate(&username, record.as_ref(), &password)?;
                let wanted = match user_type {
                    UserType::User => Role::CryptoUser,
                    UserType::SecurityOfficer => Role::Admin,
                };
                if role != wanted {
                    return Err(Error::new(
                        ErrorCode::PinIncorrect,
                        format!("user {username} is a {role}, not a {wanted}"),
                    ));
                }
                tracing::info!("user {username} logged in as {role}");
                self.logged_in(username, role)
            }
            Request::ResumeLogin { ticket } => {
                if self.login()?.is_some() {
                    return Err(Error::new(
                        ErrorCode::UserAlreadyLoggedIn,
                        "already logged in on this connection",
                    ));
                }
                let cdk = self.state().cdk().expose_secret();
                let (username, role) =
                    crate::ticket::open(cdk, ticket.expose_secret(), self.conn.cert_hash)?;
                match self.state().user(&username)? {
                    Some(record) if record.role == role => {}
                    _ => {
                        return Err(Error::new(
                            ErrorCode::PinIncorrect,
                            format!(
                                "login ticket of {username}: no such {role} any more; log in again"
                            ),
                        ));
                    }
                }
                tracing::debug!("user {username} resumed a login as {role}");
                self.logged_in(username, role)
            }
            Request::RenewTicket => match self.login()? {
                Some(LoggedIn { user, role }) => {
                    let cdk = self.state().cdk().expose_secret();
                    Ok(Response::LoggedIn {
                        role,
                        ticket: crate::ticket::issue(cdk, &user, role, self.conn.cert_hash)?,
                        ticket_lifetime_s: crate::ticket::LIFETIME.as_secs(),
                    })
                }
                None => Err(Error::new(
                    ErrorCode::UserNotLoggedIn,
                    "nobody is logged in",
                )),
            },
            Request::Logout => match self.conn.login.lock().map_err(|_| poisoned())?.take() {
                Some(_) => Ok(Response::LoggedOut),
                None => Err(Error::new(
                    ErrorCode::UserNotLoggedIn,
                    "nobody is logged in",
                )),
            },
            Request::CreateUser {
                username,
                password,
                role,
            } => {
                self.conn.require_admin_cert("create user")?;
                self.require_admin("only an admin creates users")?;
                users::check_name(&username)?;
                if self.state().user(&username)?.is_some() {
                    return Err(Error::new(
                        ErrorCode::FunctionFailed,
                        format!("user {username} already exists"),
                    ));
                }
                self.set_password(&username, role, &password)?;
                tracing::info!("user {username} created with role {role}");
                Ok(Response::UserCreated)
            }
            Request::CloseSession { session } => {
                self.conn.operations.close_session(session);
                self.conn
                    .session_objects
                    .lock()
                    .map_err(|_| poisoned())?
                    .retain(|_, (s, _)| *s != session);
                Ok(Response::SessionClosed)
            }
            Request::GenerateKey {
                session,
                mechanism,
                template,
            } => self.generate_key(session, &mechanism, &template),
            Request::GenerateKeyPair {
                session,
                mechanism,
                public_template,
                private_template,
            } => self.generate_key_pair(session, &mechanism, &public_template, &private_template),
            Request::CreateObject { session, template } => self.create_object(session, &template),
            Request::FindObjects { template, .. } => {
                let login = self.login()?;
                let session_objects: Vec<Arc<Object>> = self
                    .conn
                    .session_objects
                    .lock()
                    .map_err(|_| poisoned())?
                    .values()
                    .map(|(_, o)| o.clone())
                    .collect();
                let mut found: Vec<ObjectInfo> = self
                    .state()
                    .find(&template)?
                    .into_iter()
                    .chain(session_objects.into_iter().filter(|o| o.matches(&template)))
                    .filter(|o| self.visible(o, &login))
                    .map(|o| o.info())
                    .collect();
                found.sort_by_key(|i| i.id);
                Ok(Response::Objects(found))
            }
            Request::SetAttributeValue {
                object, template, ..
            } => {
                let obj = self.object(object, ErrorCode::ObjectHandleInvalid)?;
                let is_admin = self.may_change(&obj)?;
                if !obj.flag(ck::CKA_MODIFIABLE) {
                    return Err(Error::new(
                        ErrorCode::ActionProhibited,
                        format!("object {object} is not modifiable"),
                    ));
                }
                let attrs = object::apply_changes(&obj, &template, is_admin, false)?;
                // Rewrapped when a policy attribute (CKA_SENSITIVE, a usage flag…) changed.
                let updated =
                    obj.with_attributes(obj.id, obj.owner.clone(), attrs, self.state().cdk())?;
                let info = updated.info();
                self.replace(updated)?;
                Ok(Response::ObjectUpdated(info))
            }
            Request::CopyObject {
                session,
                object,
                template,
            } => {
                let obj = self.object(object, ErrorCode::ObjectHandleInvalid)?;
                let owner = self.crypto_user()?;
                if !obj.flag(ck::CKA_COPYABLE) {
                    return Err(Error::new(
                        ErrorCode::ActionProhibited,
                        format!("object {object} is not copyable"),
                    ));
                }
                let mut attrs = object::apply_changes(&obj, &template, false, true)?;
                let id = new_id()?;
                attrs.insert(
                    ck::CKA_UNIQUE_ID as u64,
                    Attribute::UniqueId(id.to_string().into_bytes()),
                );
                // The copy is another object: its material is wrapped again with its own id,
                // owner and attributes, so blobs can never be swapped between objects.
                let copy = obj.with_attributes(id, owner, attrs, self.state().cdk())?;
                Ok(Response::ObjectCreated(self.add(session, copy)?))
            }
            Request::GetObjectSize { object, .. } => {
                let obj = self.object(object, ErrorCode::ObjectHandleInvalid)?;
                let attrs: usize = obj.attrs.values().map(|a| a.to_raw().len()).sum();
                Ok(Response::ObjectSize(
                    (attrs + obj.wrapped.as_ref().map_or(0, Vec::len)) as u64,
                ))
            }
            Request::SetPin { old, new } => {
                let Some(LoggedIn { user, role }) = self.login()? else {
                    return Err(Error::new(
                        ErrorCode::UserNotLoggedIn,
                        "log in to change your password",
                    ));
                };
                let record = self.state().user(&user)?;
                self.state()
                    .lockouts
                    .authenticate(&user, record.as_ref(), &old)?;
                self.set_password(&user, role, &new)?;
                tracing::info!("user {user} changed their password");
                Ok(Response::PinChanged)
            }
            Request::InitPin { username, password } => {
                self.conn.require_admin_cert("C_InitPIN")?;
                self.require_admin("C_InitPIN needs an admin (SO) session")?;
                users::check_name(&username)?;
                if let Some(existing) = self.state().user(&username)?
                    && existing.role != Role::CryptoUser
                {
                    return Err(Error::new(
                        ErrorCode::FunctionFailed,
                        format!("user {username} is a {}, not a crypto user", existing.role),
                    ));
                }
                self.set_password(&username, Role::CryptoUser, &password)?;
                tracing::info!("crypto user {username} initialized by an admin");
                Ok(Response::PinChanged)
            }
            Request::GetAttributeValue { object, types, .. } => {
                let obj = self.object(object, ErrorCode::ObjectHandleInvalid)?;
                Ok(Response::AttributeValues(
                    types
                        .iter()
                        .map(|t| obj.attribute(*t))
                        .collect::<Vec<AttrOutcome>>(),
                ))
            }
            Request::DestroyObject { object, .. } => {
                let obj = self.object(object, ErrorCode::ObjectHandleInvalid)?;
                if obj.is_token() {
                    let user = self.crypto_user()?;
                    if obj.owner != user {
                        return Err(Error::new(
                            ErrorCode::ObjectHandleInvalid,
                            format!("no object {object}"),
                        ));
                    }
                }
                if !obj.flag(ck::CKA_DESTROYABLE) {
                    return Err(Error::new(
                        ErrorCode::ActionProhibited,
                        format!("object {object} is not destroyable"),
                    ));
                }
                if obj.is_token() {
                    self.commit(Command::DestroyObject(object))?;
                } else {
                    self.conn
                        .session_objects
                        .lock()
                        .map_err(|_| poisoned())?
                        .remove(&object);
                }
                Ok(Response::ObjectDestroyed)
            }
            Request::Sign {
                key,
                mechanism,
                data,
                ..
            } => {
                let sig = self.single(
                    OperationKind::Sign,
                    Some(key),
                    mechanism,
                    data.expose_secret(),
                    None,
                )?;
                Ok(Response::Signature(sig.data.to_vec()))
            }
            Request::Verify {
                key,
                mechanism,
                data,
                signature,
                ..
            } => {
                self.single(
                    OperationKind::Verify,
                    Some(key),
                    mechanism,
                    &data,
                    Some(&signature),
                )?;
                Ok(Response::Verified)
            }
            Request::Encrypt {
                key,
                mechanism,
                data,
                ..
            } => {
                let out = self.single(
                    OperationKind::Encrypt,
                    Some(key),
                    mechanism,
                    data.expose_secret(),
                    None,
                )?;
                Ok(match out.generated_iv {
                    Some(iv) => Response::CiphertextWithIv {
                        iv,
                        data: out.data.to_vec(),
                    },
                    None => Response::Ciphertext(out.data.to_vec()),
                })
            }
            Request::Decrypt {
                key,
                mechanism,
                data,
                ..
            } => {
                let out = self.single(OperationKind::Decrypt, Some(key), mechanism, &data, None)?;
                Ok(Response::Plaintext(SecretBytes::new(out.data.to_vec())))
            }
            Request::Digest {
                mechanism, data, ..
            } => {
                let out = self.single(
                    OperationKind::Digest,
                    None,
                    mechanism,
                    data.expose_secret(),
                    None,
                )?;
                Ok(Response::Digest(out.data.to_vec()))
            }
            Request::OperationUpdate {
                session,
                kind,
                start,
                data,
            } => self.operation_update(session, kind, start, data.expose_secret()),
            Request::OperationFinal {
                session,
                kind,
                start,
                signature,
            } => self.operation_final(session, kind, start, signature),
            Request::DigestKey {
                session,
                start,
                key,
            } => self.digest_key(session, start, key),
            Request::OperationCancel { session, kind } => {
                self.conn.operations.cancel(session, kind);
                Ok(Response::OperationCancelled)
            }
            Request::WrapKey {
                mechanism,
                wrapping_key,
                key,
                ..
            } => self.wrap_key(&mechanism, wrapping_key, key),
            Request::UnwrapKey {
                session,
                mechanism,
                unwrapping_key,
                wrapped,
                template,
            } => self.unwrap_key(session, &mechanism, unwrapping_key, &wrapped, &template),
            Request::DeriveKey {
                session,
                mechanism,
                base_key,
                template,
            } => self.derive_key(session, &mechanism, base_key, &template),
            Request::GenerateRandom { length } => {
                if length > hsm_proto::frame::MAX_RANDOM_LEN {
                    return Err(Error::new(
                        ErrorCode::DataLenRange,
                        "at most 1 MiB of random per request",
                    ));
                }
                let mut out = vec![0u8; length as usize];
                crate::seal::random_bytes(&mut out)?;
                Ok(Response::Random(out))
            }
            Request::AdmitNode { node_id, join_key } => {
                self.conn.require_admin_cert("admit node")?;
                self.require_admin("only an admin admits nodes")?;
                self.refuse_removed(node_id)?;
                let package = crate::join::admit(
                    self.state().cdk(),
                    self.state().identity(),
                    node_id,
                    &join_key,
                )?;
                tracing::info!(
                    "node {node_id} admitted: cluster domain key wrapped to its join key"
                );
                Ok(Response::Admitted(package))
            }
            Request::AddNode {
                node_id,
                name,
                cluster_addr,
                client_addr,
            } => {
                self.conn.require_admin_cert("add node")?;
                self.require_admin("only an admin adds nodes")?;
                self.refuse_removed(node_id)?;
                let info = cluster_sync::NodeInfo {
                    name,
                    cluster_addr,
                    client_addr,
                };
                let index = self
                    .token
                    .block_on(self.token.cluster().add_node(node_id, info))?;
                self.call.index.set(index);
                tracing::info!("node {node_id} is a voter (membership at {index})");
                Ok(Response::MembershipChanged { index })
            }
            Request::RemoveNode { node_id } => {
                self.conn.require_admin_cert("remove node")?;
                self.require_admin("only an admin removes nodes")?;
                let index = self
                    .token
                    .block_on(self.token.cluster().remove_node(node_id))?;
                // Its certificate is refused from now on, everywhere.
                let forgotten = self.commit(Command::ForgetNode(node_id))?;
                tracing::info!("node {node_id} removed (membership at {index})");
                Ok(Response::MembershipChanged {
                    index: forgotten.index,
                })
            }
            Request::Status | Request::Unseal(_) | Request::JoinKey | Request::CompleteJoin(_) => {
                Err(Error::device("handled before the token"))
            }
            _ => Err(Error::new(
                ErrorCode::FunctionNotSupported,
                "this request is not supported by this node",
            )),
        }
    }

    fn generate_key(
        &self,
        session: SessionId,
        mechanism: &Mechanism,
        template: &[Attribute],
    ) -> Result<Response, Error> {
        check_mechanism(mechanism, ck::CKF_GENERATE)?;
        let owner = self.crypto_user()?;
        let class = ck::CKO_SECRET_KEY as u64;
        let key_type = if mechanism.kind == ck::CKM_GENERIC_SECRET_KEY_GEN as u64 {
            ck::CKK_GENERIC_SECRET as u64
        } else {
            ck::CKK_AES as u64
        };
        let origin = Origin::Generated(mechanism.kind);
        let mut attrs = object::merge_template(
            class,
            Some(key_type),
            template,
            object::key_defaults(class, key_type),
            origin,
        )?;
        let len =
            ulong_in(template, ck::CKA_VALUE_LEN).ok_or_else(|| incomplete("CKA_VALUE_LEN"))?;
        let (key, material) = keys::generate_secret(key_type, len)?;
        object::secret_attributes(&mut attrs, &key);
        let obj = self.new_key_object(
            new_id()?,
            &owner,
            attrs,
            origin,
            Body::Secret(Arc::new(key)),
            Some(&material),
        )?;
        Ok(Response::KeyGenerated {
            key: self.add(session, obj)?,
        })
    }

    fn generate_key_pair(
        &self,
        session: SessionId,
        mechanism: &Mechanism,
        public_template: &[Attribute],
        private_template: &[Attribute],
    ) -> Result<Response, Error> {
        check_mechanism(mechanism, ck::CKF_GENERATE_KEY_PAIR)?;
        let owner = self.crypto_user()?;
        let origin = Origin::Generated(mechanism.kind);
        let pub_class = ck::CKO_PUBLIC_KEY as u64;
        let priv_class = ck::CKO_PRIVATE_KEY as u64;
        let ec_params = || match hsm_proto::attr::find(public_template, ck::CKA_EC_PARAMS as u64) {
            Some(Attribute::EcParams(p)) => Ok(p.clone()),
            _ => Err(incomplete("CKA_EC_PARAMS")),
        };
        let (key_type, pair) = if mechanism.kind == ck::CKM_EC_KEY_PAIR_GEN as u64 {
            let params = ec_params()?;
            let curve = keys::Curve::from_ec_params(&params).ok_or_else(|| {
                Error::new(
                    ErrorCode::CurveNotSupported,
                    "CKA_EC_PARAMS: P-256, P-384, P-521 or secp256k1",
                )
            })?;
            (ck::CKK_EC as u64, keys::generate_ec(curve)?)
        } else if mechanism.kind == ck::CKM_EC_EDWARDS_KEY_PAIR_GEN as u64 {
            // pkcs11-tool names the curve; a template without CKA_EC_PARAMS means Ed25519 too.
            if let Ok(params) = ec_params()
                && !keys::is_ed25519_params(&params)
            {
                return Err(Error::new(
                    ErrorCode::CurveNotSupported,
                    "CKA_EC_PARAMS: only Ed25519",
                ));
            }
            (ck::CKK_EC_EDWARDS as u64, keys::generate_ed25519()?)
        } else {
            let bits = ulong_in(public_template, ck::CKA_MODULUS_BITS)
                .ok_or_else(|| incomplete("CKA_MODULUS_BITS"))?;
            if let Some(Attribute::PublicExponent(e)) =
                hsm_proto::attr::find(public_template, ck::CKA_PUBLIC_EXPONENT as u64)
            {
                let trimmed: Vec<u8> = e.iter().copied().skip_while(|b| *b == 0).collect();
                if trimmed != [1, 0, 1] {
                    return Err(Error::new(
                        ErrorCode::AttributeValueInvalid,
                        "CKA_PUBLIC_EXPONENT: only 65537 is supported",
                    ));
                }
            }
            (ck::CKK_RSA as u64, keys::generate_rsa(bits)?)
        };
        let mut pub_attrs = object::merge_template(
            pub_class,
            Some(key_type),
            public_template,
            object::key_defaults(pub_class, key_type),
            origin,
        )?;
        let mut priv_attrs = object::merge_template(
            priv_class,
            Some(key_type),
            private_template,
            object::key_defaults(priv_class, key_type),
            origin,
        )?;
        if let (Some(given), Some(params)) = (
            priv_attrs.get(&(ck::CKA_EC_PARAMS as u64)),
            pair.public.ec_params(),
        ) && *given != Attribute::EcParams(params.to_vec())
            && key_type == ck::CKK_EC as u64
        {
            return Err(Error::new(
                ErrorCode::TemplateInconsistent,
                "CKA_EC_PARAMS differs between the templates",
            ));
        }
        object::public_attributes(&mut pub_attrs, &pair.public, pub_class);
        object::public_attributes(&mut priv_attrs, &pair.public, priv_class);
        let public = self.new_key_object(
            new_id()?,
            &owner,
            pub_attrs,
            origin,
            Body::Public(Arc::new(pair.public)),
            None,
        )?;
        let private = self.new_key_object(
            new_id()?,
            &owner,
            priv_attrs,
            origin,
            Body::Secret(Arc::new(pair.private)),
            Some(&pair.material),
        )?;
        let mut infos = self.add_all(session, vec![public, private])?.into_iter();
        let (Some(public), Some(private)) = (infos.next(), infos.next()) else {
            return Err(Error::device("key pair not stored"));
        };
        Ok(Response::KeyPairGenerated { public, private })
    }

    /// Data objects and X.509 certificates: attributes only, no key.
    fn create_storage_object(
        &self,
        session: SessionId,
        owner: &str,
        class: u64,
        template: &[Attribute],
    ) -> Result<Response, Error> {
        if class == ck::CKO_CERTIFICATE as u64 {
            match hsm_proto::attr::find(template, ck::CKA_CERTIFICATE_TYPE as u64) {
                Some(Attribute::CertificateType(t)) if *t == ck::CKC_X_509 as u64 => {}
                Some(_) => {
                    return Err(Error::new(
                        ErrorCode::AttributeValueInvalid,
                        "CKA_CERTIFICATE_TYPE: X.509 only",
                    ));
                }
                None => return Err(incomplete("CKA_CERTIFICATE_TYPE")),
            }
            for (code, what) in [
                (ck::CKA_SUBJECT, "CKA_SUBJECT"),
                (ck::CKA_VALUE, "CKA_VALUE"),
            ] {
                if hsm_proto::attr::find(template, code as u64).is_none() {
                    return Err(incomplete(what));
                }
            }
        }
        let attrs = object::merge_template(
            class,
            None,
            template,
            object::storage_defaults(class),
            Origin::Created,
        )?;
        let obj =
            self.new_key_object(new_id()?, owner, attrs, Origin::Created, Body::None, None)?;
        Ok(Response::ObjectCreated(self.add(session, obj)?))
    }

    /// Imports an object from a full template: data objects, certificates, public keys, and
    /// private and secret keys (validated: a bad key is refused, never stored).
    fn create_object(&self, session: SessionId, template: &[Attribute]) -> Result<Response, Error> {
        let owner = self.crypto_user()?;
        let class = match hsm_proto::attr::find(template, ck::CKA_CLASS as u64) {
            Some(Attribute::Class(c)) => *c,
            _ => return Err(incomplete("CKA_CLASS")),
        };
        if class == ck::CKO_DATA as u64 || class == ck::CKO_CERTIFICATE as u64 {
            return self.create_storage_object(session, &owner, class, template);
        }
        let key_type = match hsm_proto::attr::find(template, ck::CKA_KEY_TYPE as u64) {
            Some(Attribute::KeyType(k)) => *k,
            _ => return Err(incomplete("CKA_KEY_TYPE")),
        };
        let bytes = |code: ck::CK_ATTRIBUTE_TYPE, what: &str| -> Result<Vec<u8>, Error> {
            match hsm_proto::attr::find(template, code as u64) {
                Some(a) => Ok(a.to_raw().to_vec()),
                None => Err(incomplete(what)),
            }
        };
        let is_ec = key_type == ck::CKK_EC as u64 || key_type == ck::CKK_EC_EDWARDS as u64;
        let mut attrs = object::merge_template(
            class,
            Some(key_type),
            template,
            object::key_defaults(class, key_type),
            Origin::Created,
        )?;
        let (body, material) = if class == ck::CKO_PUBLIC_KEY as u64 {
            let public = if is_ec {
                keys::ec_public_from_attributes(
                    &bytes(ck::CKA_EC_PARAMS, "CKA_EC_PARAMS")?,
                    &bytes(ck::CKA_EC_POINT, "CKA_EC_POINT")?,
                )?
            } else if key_type == ck::CKK_RSA as u64 {
                keys::rsa_public_from_components(
                    &bytes(ck::CKA_MODULUS, "CKA_MODULUS")?,
                    &bytes(ck::CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT")?,
                )?
            } else {
                return Err(Error::new(
                    ErrorCode::AttributeValueInvalid,
                    "CKA_KEY_TYPE: EC, EC_EDWARDS or RSA",
                ));
            };
            if public.key_type() != key_type {
                return Err(Error::new(
                    ErrorCode::TemplateInconsistent,
                    "CKA_KEY_TYPE does not fit CKA_EC_PARAMS",
                ));
            }
            object::public_attributes(&mut attrs, &public, class);
            (Body::Public(Arc::new(public)), None)
        } else if class == ck::CKO_PRIVATE_KEY as u64 {
            let secret_bytes = |code: ck::CK_ATTRIBUTE_TYPE, what: &str| {
                bytes(code, what).map(zeroize::Zeroizing::new)
            };
            let pair = if key_type == ck::CKK_RSA as u64 {
                keys::import_rsa_private(&keys::RsaComponents {
                    modulus: bytes(ck::CKA_MODULUS, "CKA_MODULUS")?,
                    public_exponent: bytes(ck::CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT")?,
                    private_exponent: secret_bytes(
                        ck::CKA_PRIVATE_EXPONENT,
                        "CKA_PRIVATE_EXPONENT",
                    )?,
                    prime1: secret_bytes(ck::CKA_PRIME_1, "CKA_PRIME_1")?,
                    prime2: secret_bytes(ck::CKA_PRIME_2, "CKA_PRIME_2")?,
                    exponent1: secret_bytes(ck::CKA_EXPONENT_1, "CKA_EXPONENT_1")?,
                    exponent2: secret_bytes(ck::CKA_EXPONENT_2, "CKA_EXPONENT_2")?,
                    coefficient: secret_bytes(ck::CKA_COEFFICIENT, "CKA_COEFFICIENT")?,
                })?
            } else if is_ec {
                let params = bytes(ck::CKA_EC_PARAMS, "CKA_EC_PARAMS")?;
                let value = secret_bytes(ck::CKA_VALUE, "CKA_VALUE")?;
                if keys::is_ed25519_params(&params) {
                    keys::import_ed25519_private(&value)?
                } else {
                    let curve = keys::Curve::from_ec_params(&params).ok_or_else(|| {
                        Error::new(
                            ErrorCode::CurveNotSupported,
                            "CKA_EC_PARAMS: unsupported curve",
                        )
                    })?;
                    keys::import_ec_private(curve, &value)?
                }
            } else {
                return Err(Error::new(
                    ErrorCode::AttributeValueInvalid,
                    "CKA_KEY_TYPE: EC, EC_EDWARDS or RSA",
                ));
            };
            if pair.private.key_type() != key_type {
                return Err(Error::new(
                    ErrorCode::TemplateInconsistent,
                    "CKA_KEY_TYPE does not fit CKA_EC_PARAMS",
                ));
            }
            object::public_attributes(&mut attrs, &pair.public, class);
            (Body::Secret(Arc::new(pair.private)), Some(pair.material))
        } else if class == ck::CKO_SECRET_KEY as u64 {
            let value = zeroize::Zeroizing::new(bytes(ck::CKA_VALUE, "CKA_VALUE")?);
            if let Some(Attribute::ValueLen(n)) =
                hsm_proto::attr::find(template, ck::CKA_VALUE_LEN as u64)
                && *n as usize != value.len()
            {
                return Err(Error::new(
                    ErrorCode::TemplateInconsistent,
                    "CKA_VALUE_LEN differs from the length of CKA_VALUE",
                ));
            }
            let (key, material) = keys::import_secret(key_type, &value)?;
            object::secret_attributes(&mut attrs, &key);
            (Body::Secret(Arc::new(key)), Some(material))
        } else {
            return Err(Error::new(
                ErrorCode::AttributeValueInvalid,
                "CKA_CLASS: not an object class we store",
            ));
        };
        let obj = self.new_key_object(
            new_id()?,
            &owner,
            attrs,
            Origin::Created,
            body,
            material.as_deref().map(|m| &m[..]),
        )?;
        Ok(Response::ObjectCreated(self.add(session, obj)?))
    }
}
