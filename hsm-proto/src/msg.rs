//! Requests and responses: one typed pair per operation.

use crate::attr::{AttrOutcome, Attribute};
use crate::error::WireError;
use crate::mech::Mechanism;
use crate::secret::{Password, SecretBytes};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Major protocol version. A peer with another major version is refused at the handshake.
pub const PROTOCOL_MAJOR: u16 = 3;
/// Minor protocol version: additions that an older peer can ignore.
pub const PROTOCOL_MINOR: u16 = 0;

/// The first frame a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Client's major protocol version.
    pub major: u16,
    /// Client's minor protocol version.
    pub minor: u16,
    /// Free text naming the client software, for the node's log.
    pub software: String,
}

impl Hello {
    /// This build's hello.
    pub fn current(software: &str) -> Self {
        Hello {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
            software: software.to_owned(),
        }
    }
}

/// The node's answer to [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The node speaks this version; requests may follow.
    Accepted {
        /// Node's major version.
        major: u16,
        /// Node's minor version.
        minor: u16,
        /// Node name.
        node: String,
    },
    /// The node will not talk to this client; the connection is closed after this frame.
    Refused {
        /// Why, for the client to show.
        message: String,
    },
}

/// Identifies a request on a connection; the response carries the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// A PKCS#11 session as the module numbers it (its `CK_SESSION_HANDLE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// A stable, cluster-wide object identifier (128 bits, random).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(pub u128);

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({:032x})", self.0)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What the module caches about an object handle so that `C_SignInit` and friends answer the
/// spec's errors (`CKR_KEY_TYPE_INCONSISTENT`, `CKR_KEY_FUNCTION_NOT_PERMITTED`) without a round
/// trip. The node checks again, authoritatively, when the operation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The object.
    pub id: ObjectId,
    /// `CKO_*`.
    pub class: u64,
    /// `CKK_*`, or `None` for objects that are not keys.
    pub key_type: Option<u64>,
    /// Usage flags, [`ObjectInfo::SIGN`] and the others.
    pub usage: u32,
}

impl ObjectInfo {
    /// `CKA_SIGN` is true.
    pub const SIGN: u32 = 1 << 0;
    /// `CKA_VERIFY` is true.
    pub const VERIFY: u32 = 1 << 1;
    /// `CKA_ENCRYPT` is true.
    pub const ENCRYPT: u32 = 1 << 2;
    /// `CKA_DECRYPT` is true.
    pub const DECRYPT: u32 = 1 << 3;
    /// `CKA_WRAP` is true.
    pub const WRAP: u32 = 1 << 4;
    /// `CKA_UNWRAP` is true.
    pub const UNWRAP: u32 = 1 << 5;
    /// `CKA_DERIVE` is true.
    pub const DERIVE: u32 = 1 << 6;
    /// `CKA_TOKEN` is true (a token object, not a session object).
    pub const TOKEN: u32 = 1 << 7;
    /// `CKA_PRIVATE` is true.
    pub const PRIVATE: u32 = 1 << 8;

    /// Whether every flag in `flags` is set.
    pub fn allows(&self, flags: u32) -> bool {
        self.usage & flags == flags
    }
}

/// PKCS#11 user types we accept at login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserType {
    /// `CKU_USER`: a crypto user.
    User,
    /// `CKU_SO`: an admin.
    SecurityOfficer,
}

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Manages users, nodes and backups; cannot use keys.
    Admin,
    /// Owns and uses keys.
    CryptoUser,
    /// Reads the audit log.
    Auditor,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::CryptoUser => "crypto-user",
            Role::Auditor => "auditor",
        })
    }
}

/// What an operator hands a sealed node to unseal it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum UnsealSecret {
    /// The operator passphrase (stretched with Argon2id on the node).
    Passphrase(Password),
    /// The content of a development key file (`hsmctl dev` only).
    DevKey(SecretBytes),
}

/// Whether a node can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealState {
    /// Keys are not available; only status and unseal are answered.
    Sealed,
    /// Serving.
    Unsealed,
    /// Unsealed, but not yet part of a cluster: waiting for an admin to admit it
    /// (`hsmctl node add`); serves nothing else.
    AwaitingJoin,
}

/// A node's status, answered sealed or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// Cluster name (from init).
    pub cluster: String,
    /// Sealed or serving.
    pub seal: SealState,
    /// Whether this node was initialized with a development key file.
    pub dev_unseal: bool,
    /// Token objects known (0 while sealed).
    pub objects: u64,
    /// Daemon version.
    pub version: String,
    /// The cluster's id (hex), made at `hsmctl init`; `None` while sealed or before joining.
    pub cluster_id: Option<String>,
    /// This node's consensus, once unsealed and part of a cluster.
    pub raft: Option<RaftStatus>,
    /// Client requests this node has answered since it started (all connections), so an
    /// operator (and the failover tests) can see how a module spreads its load.
    pub requests: u64,
}

/// A node's view of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    /// This node's id.
    pub node_id: u64,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Index of the last entry in this node's log.
    pub last_log: Option<u64>,
    /// Index of the last entry applied here.
    pub applied: Option<u64>,
    /// Last index covered by this node's snapshot.
    pub snapshot: Option<u64>,
    /// Last index purged from this node's log.
    pub purged: Option<u64>,
    /// Milliseconds since a quorum last acknowledged this leader (leaders only).
    pub millis_since_quorum_ack: Option<u64>,
    /// The members, as this node knows them.
    pub members: Vec<MemberStatus>,
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Node id.
    pub node_id: u64,
    /// Node name.
    pub name: String,
    /// Client port address.
    pub client_addr: String,
    /// Cluster port address.
    pub cluster_addr: String,
    /// A voter (else a learner, still catching up).
    pub voter: bool,
    /// Last index known replicated to it (reported by the leader only).
    pub matched: Option<u64>,
}

/// What a joining node receives: the cluster domain key, wrapped to the joining node's fresh
/// P-256 key (ECDH with an ephemeral key of the admitting node, HKDF-SHA-256, AES-256-GCM),
/// with the cluster's identity bound into the encryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinPackage {
    /// The cluster's id (hex).
    pub cluster_id: String,
    /// The cluster's name.
    pub cluster_name: String,
    /// The joining node's id.
    pub node_id: u64,
    /// The admitting node's ephemeral public key (uncompressed SEC 1 point).
    #[serde(with = "crate::bytes")]
    pub ephemeral_public: Vec<u8>,
    /// The wrapped key: nonce || ciphertext || tag.
    #[serde(with = "crate::bytes")]
    pub wrapped_cdk: Vec<u8>,
}

/// Which of a session's operations a multi-part request continues. A session has at most one
/// active operation of each kind, as PKCS#11 says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationKind {
    /// `C_SignUpdate`/`C_SignFinal`.
    Sign,
    /// `C_VerifyUpdate`/`C_VerifyFinal`.
    Verify,
    /// `C_EncryptUpdate`/`C_EncryptFinal`.
    Encrypt,
    /// `C_DecryptUpdate`/`C_DecryptFinal`.
    Decrypt,
    /// `C_DigestUpdate`/`C_DigestKey`/`C_DigestFinal`.
    Digest,
}

/// What starts a multi-part operation on the node. The module initializes operations
/// locally (no round trip at `C_*Init`) and sends this with the first `*Update`/`*Final`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStart {
    /// The key (none for digests).
    pub key: Option<ObjectId>,
    /// The mechanism.
    pub mechanism: Mechanism,
}

/// A request from a client (module or hsmctl) to a node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// → [`Response::Status`]. Answered sealed or not.
    Status,
    /// → [`Response::Unsealed`].
    Unseal(UnsealSecret),
    /// → [`Response::LoggedIn`]. Login applies to the whole connection, as PKCS#11 login applies
    /// to all sessions of an application.
    Login {
        /// `CKU_USER` or `CKU_SO`.
        user_type: UserType,
        /// User name (the part of the PIN before `:`).
        username: String,
        /// Password (the part after `:`).
        password: Password,
    },
    /// → [`Response::LoggedIn`]: logs the connection in with a login ticket that a node of the
    /// same cluster issued (at `Login`, `ResumeLogin` or `RenewTicket`), without the password.
    /// The module uses it to carry an application's login to every node it talks to, and to
    /// the node it fails over to. Refused for an expired ticket, one issued to another client
    /// certificate, or one whose user no longer exists or changed role.
    ResumeLogin {
        /// The ticket, as the node issued it.
        ticket: SecretBytes,
    },
    /// → [`Response::LoggedIn`]: a fresh ticket for the user logged in on this connection (the
    /// module renews before the old one expires).
    RenewTicket,
    /// → [`Response::LoggedOut`].
    Logout,
    /// → [`Response::UserCreated`]. Admin only.
    CreateUser {
        /// New user's name.
        username: String,
        /// Initial password.
        password: Password,
        /// Role.
        role: Role,
    },
    /// → [`Response::JoinKey`]: the fresh public key of a node awaiting join. Admin
    /// certificate.
    JoinKey,
    /// → [`Response::Admitted`]: a member wraps the cluster domain key to a joining node's
    /// key. Admin certificate and admin login.
    AdmitNode {
        /// The joining node's id (from its certificate and configuration).
        node_id: u64,
        /// The joining node's public key, as [`Response::JoinKey`] gave it.
        #[serde(with = "crate::bytes")]
        join_key: Vec<u8>,
    },
    /// → [`Response::Joined`]: a node awaiting join receives the package from `AdmitNode`,
    /// stores the cluster domain key sealed under its own key, and starts its consensus as a
    /// learner. Admin certificate.
    CompleteJoin(JoinPackage),
    /// → [`Response::MembershipChanged`]: the cluster adds a joined node (learner, catch-up,
    /// voter). Admin certificate and admin login.
    AddNode {
        /// Its id.
        node_id: u64,
        /// Its name (the DNS name in its certificate).
        name: String,
        /// Its cluster port, `host:port`.
        cluster_addr: String,
        /// Its client port, `host:port`.
        client_addr: String,
    },
    /// → [`Response::MembershipChanged`]: the cluster removes a node for good (its id can
    /// never rejoin). Admin certificate and admin login.
    RemoveNode {
        /// Its id.
        node_id: u64,
    },
    /// → [`Response::SessionClosed`]: drops the session's objects on the node.
    CloseSession {
        /// The session.
        session: SessionId,
    },
    /// → [`Response::KeyGenerated`].
    GenerateKey {
        /// Session (owner of the key if it is a session object).
        session: SessionId,
        /// `CKM_AES_KEY_GEN`, …
        mechanism: Mechanism,
        /// Key template.
        template: Vec<Attribute>,
    },
    /// → [`Response::KeyPairGenerated`].
    GenerateKeyPair {
        /// Session.
        session: SessionId,
        /// `CKM_EC_KEY_PAIR_GEN`, `CKM_RSA_PKCS_KEY_PAIR_GEN`, …
        mechanism: Mechanism,
        /// Public key template.
        public_template: Vec<Attribute>,
        /// Private key template.
        private_template: Vec<Attribute>,
    },
    /// → [`Response::ObjectCreated`]: imports an object from a full template (public keys
    /// today; private and secret keys, certificates and data objects with the full token).
    CreateObject {
        /// Session (owner if it is a session object).
        session: SessionId,
        /// The object's attributes.
        template: Vec<Attribute>,
    },
    /// → [`Response::Objects`]: every visible object that matches the template.
    FindObjects {
        /// Session.
        session: SessionId,
        /// Attributes to match exactly (empty matches all).
        template: Vec<Attribute>,
    },
    /// → [`Response::AttributeValues`], one outcome per requested type, in order.
    GetAttributeValue {
        /// Session.
        session: SessionId,
        /// The object.
        object: ObjectId,
        /// `CKA_*` codes.
        types: Vec<u64>,
    },
    /// → [`Response::ObjectDestroyed`].
    DestroyObject {
        /// Session.
        session: SessionId,
        /// The object.
        object: ObjectId,
    },
    /// → [`Response::Signature`].
    Sign {
        /// Session.
        session: SessionId,
        /// The key.
        key: ObjectId,
        /// Mechanism.
        mechanism: Mechanism,
        /// Data (or digest, for prehashed mechanisms).
        data: SecretBytes,
    },
    /// → [`Response::Verified`], or `SignatureInvalid`.
    Verify {
        /// Session.
        session: SessionId,
        /// The key.
        key: ObjectId,
        /// Mechanism.
        mechanism: Mechanism,
        /// Data (or digest).
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
        /// The signature to check.
        #[serde(with = "crate::bytes")]
        signature: Vec<u8>,
    },
    /// → [`Response::Ciphertext`].
    Encrypt {
        /// Session.
        session: SessionId,
        /// The key.
        key: ObjectId,
        /// Mechanism.
        mechanism: Mechanism,
        /// Plaintext.
        data: SecretBytes,
    },
    /// → [`Response::Plaintext`].
    Decrypt {
        /// Session.
        session: SessionId,
        /// The key.
        key: ObjectId,
        /// Mechanism.
        mechanism: Mechanism,
        /// Ciphertext.
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    },
    /// → [`Response::Random`].
    GenerateRandom {
        /// Bytes wanted (at most [`crate::frame::MAX_RANDOM_LEN`]).
        length: u32,
    },
    /// → [`Response::ObjectUpdated`].
    SetAttributeValue {
        /// Session.
        session: SessionId,
        /// The object.
        object: ObjectId,
        /// New values.
        template: Vec<Attribute>,
    },
    /// → [`Response::ObjectCreated`].
    CopyObject {
        /// Session (owner of the copy if it is a session object).
        session: SessionId,
        /// The original.
        object: ObjectId,
        /// Attributes that differ in the copy.
        template: Vec<Attribute>,
    },
    /// → [`Response::ObjectSize`].
    GetObjectSize {
        /// Session.
        session: SessionId,
        /// The object.
        object: ObjectId,
    },
    /// → [`Response::OperationData`]: feeds data to a multi-part operation; encryption and
    /// decryption answer with the output produced so far, the others with nothing.
    OperationUpdate {
        /// Session.
        session: SessionId,
        /// Which operation.
        kind: OperationKind,
        /// Set on the first update: starts (or restarts) the operation.
        start: Option<OperationStart>,
        /// Input.
        data: SecretBytes,
    },
    /// → [`Response::OperationData`] (the signature, digest or last output) or, for verify,
    /// [`Response::Verified`]. Ends the operation, whatever the outcome.
    OperationFinal {
        /// Session.
        session: SessionId,
        /// Which operation.
        kind: OperationKind,
        /// Set when no update came before (an operation over empty input).
        start: Option<OperationStart>,
        /// The signature to check, for verify.
        #[serde(with = "crate::bytes::option")]
        signature: Option<Vec<u8>>,
    },
    /// → [`Response::OperationData`] (empty): `C_DigestKey`, the key's value fed to a digest.
    DigestKey {
        /// Session.
        session: SessionId,
        /// Set if the digest has not been started on the node yet.
        start: Option<OperationStart>,
        /// The secret key whose value is digested.
        key: ObjectId,
    },
    /// → [`Response::OperationCancelled`]: drops an operation's state (after an error the
    /// module saw, or a new `*Init` replacing an abandoned one).
    OperationCancel {
        /// Session.
        session: SessionId,
        /// Which operation.
        kind: OperationKind,
    },
    /// → [`Response::Digest`]: single-part `C_Digest`.
    Digest {
        /// Session.
        session: SessionId,
        /// `CKM_SHA*`.
        mechanism: Mechanism,
        /// Data.
        data: SecretBytes,
    },
    /// → [`Response::WrappedKey`].
    WrapKey {
        /// Session.
        session: SessionId,
        /// Wrapping mechanism.
        mechanism: Mechanism,
        /// The wrapping key.
        wrapping_key: ObjectId,
        /// The key to wrap.
        key: ObjectId,
    },
    /// → [`Response::ObjectCreated`].
    UnwrapKey {
        /// Session.
        session: SessionId,
        /// Unwrapping mechanism.
        mechanism: Mechanism,
        /// The unwrapping key.
        unwrapping_key: ObjectId,
        /// The wrapped key.
        #[serde(with = "crate::bytes")]
        wrapped: Vec<u8>,
        /// Template of the new key.
        template: Vec<Attribute>,
    },
    /// → [`Response::ObjectCreated`].
    DeriveKey {
        /// Session.
        session: SessionId,
        /// Derivation mechanism (`CKM_ECDH1_DERIVE`).
        mechanism: Mechanism,
        /// The base key.
        base_key: ObjectId,
        /// Template of the derived key.
        template: Vec<Attribute>,
    },
    /// → [`Response::PinChanged`]: `C_SetPIN`, the logged-in user's own password.
    SetPin {
        /// Current password.
        old: Password,
        /// New password.
        new: Password,
    },
    /// → [`Response::PinChanged`]: `C_InitPIN` in an admin session; creates the crypto user or
    /// resets its password.
    InitPin {
        /// The crypto user.
        username: String,
        /// Its (new) password.
        password: Password,
    },
}

impl Request {
    /// Short name of the operation, for logs (never the content).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "Status",
            Request::Unseal(_) => "Unseal",
            Request::Login { .. } => "Login",
            Request::ResumeLogin { .. } => "ResumeLogin",
            Request::RenewTicket => "RenewTicket",
            Request::Logout => "Logout",
            Request::CreateUser { .. } => "CreateUser",
            Request::CloseSession { .. } => "CloseSession",
            Request::JoinKey => "JoinKey",
            Request::AdmitNode { .. } => "AdmitNode",
            Request::CompleteJoin(_) => "CompleteJoin",
            Request::AddNode { .. } => "AddNode",
            Request::RemoveNode { .. } => "RemoveNode",
            Request::GenerateKey { .. } => "GenerateKey",
            Request::GenerateKeyPair { .. } => "GenerateKeyPair",
            Request::CreateObject { .. } => "CreateObject",
            Request::FindObjects { .. } => "FindObjects",
            Request::GetAttributeValue { .. } => "GetAttributeValue",
            Request::DestroyObject { .. } => "DestroyObject",
            Request::Sign { .. } => "Sign",
            Request::Verify { .. } => "Verify",
            Request::Encrypt { .. } => "Encrypt",
            Request::Decrypt { .. } => "Decrypt",
            Request::GenerateRandom { .. } => "GenerateRandom",
            Request::SetAttributeValue { .. } => "SetAttributeValue",
            Request::CopyObject { .. } => "CopyObject",
            Request::GetObjectSize { .. } => "GetObjectSize",
            Request::OperationUpdate { .. } => "OperationUpdate",
            Request::OperationFinal { .. } => "OperationFinal",
            Request::DigestKey { .. } => "DigestKey",
            Request::OperationCancel { .. } => "OperationCancel",
            Request::Digest { .. } => "Digest",
            Request::WrapKey { .. } => "WrapKey",
            Request::UnwrapKey { .. } => "UnwrapKey",
            Request::DeriveKey { .. } => "DeriveKey",
            Request::SetPin { .. } => "SetPin",
            Request::InitPin { .. } => "InitPin",
        }
    }
}

/// A node's answer to a [`Request`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// Answer to `Status`.
    Status(NodeStatus),
    /// Answer to `Unseal`.
    Unsealed,
    /// Answer to `Login`, `ResumeLogin` and `RenewTicket`.
    LoggedIn {
        /// The role of the user now logged in.
        role: Role,
        /// A login ticket: opaque to the client, authenticated under a key every node of the
        /// cluster derives from the cluster domain key, bound to the client's certificate and
        /// the user, valid for `ticket_lifetime_s`. A secret: whoever holds it and the
        /// client's TLS key is logged in.
        ticket: SecretBytes,
        /// How long the ticket is valid, in seconds from now.
        ticket_lifetime_s: u64,
    },
    /// Answer to `Logout`.
    LoggedOut,
    /// Answer to `CreateUser`.
    UserCreated,
    /// Answer to `CloseSession`.
    SessionClosed,
    /// Answer to `JoinKey`.
    JoinKey {
        /// The node's id.
        node_id: u64,
        /// Its fresh P-256 public key (uncompressed SEC 1 point).
        #[serde(with = "crate::bytes")]
        public_key: Vec<u8>,
    },
    /// Answer to `AdmitNode`.
    Admitted(JoinPackage),
    /// Answer to `CompleteJoin`.
    Joined,
    /// Answer to `AddNode` / `RemoveNode`: the log index of the new membership.
    MembershipChanged {
        /// Log index.
        index: u64,
    },
    /// Answer to `GenerateKey`.
    KeyGenerated {
        /// The new key.
        key: ObjectInfo,
    },
    /// Answer to `GenerateKeyPair`.
    KeyPairGenerated {
        /// The public key.
        public: ObjectInfo,
        /// The private key.
        private: ObjectInfo,
    },
    /// Answer to `CreateObject`.
    ObjectCreated(ObjectInfo),
    /// Answer to `FindObjects`, in a stable order.
    Objects(Vec<ObjectInfo>),
    /// Answer to `GetAttributeValue`.
    AttributeValues(Vec<AttrOutcome>),
    /// Answer to `DestroyObject`.
    ObjectDestroyed,
    /// Answer to `Sign`.
    Signature(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Answer to `Verify` when the signature is valid.
    Verified,
    /// Answer to `Encrypt`.
    Ciphertext(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Answer to `Decrypt`.
    Plaintext(SecretBytes),
    /// Answer to `GenerateRandom`.
    Random(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Answer to `Encrypt` with [`crate::MechanismParams::GcmGeneratedIv`]: the IV the token
    /// chose and the ciphertext.
    CiphertextWithIv {
        /// The generated IV.
        #[serde(with = "crate::bytes")]
        iv: Vec<u8>,
        /// Ciphertext and tag.
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    },
    /// Answer to `SetAttributeValue`: the object's new summary.
    ObjectUpdated(ObjectInfo),
    /// Answer to `GetObjectSize`, in bytes.
    ObjectSize(u64),
    /// Answer to `OperationUpdate`, `OperationFinal` and `DigestKey`.
    OperationData(SecretBytes),
    /// Answer to `OperationCancel`.
    OperationCancelled,
    /// Answer to `Digest`.
    Digest(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Answer to `WrapKey`.
    WrappedKey(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Answer to `SetPin` and `InitPin`.
    PinChanged,
    /// Any request can fail.
    Error(WireError),
}

/// A request or response with its id: the unit inside one frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Matches a response to its request.
    pub id: RequestId,
    /// Read-your-writes. In a request: the highest log index the client has seen; the node
    /// waits (bounded) until it has applied it before serving. In a response: the log index
    /// the answer reflects (for a mutation, the index it was committed at).
    pub index: u64,
    /// In a request that changes token state: a key chosen by the client, the same on every
    /// retry of one PKCS#11 call, so that a retried mutation applies once. 0: none.
    pub key: u128,
    /// The message.
    pub body: T,
}

impl<T> Envelope<T> {
    /// An envelope with no index and no key.
    pub fn new(id: RequestId, body: T) -> Envelope<T> {
        Envelope {
            id,
            index: 0,
            key: 0,
            body,
        }
    }
}
