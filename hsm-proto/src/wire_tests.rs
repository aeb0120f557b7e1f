//! The wire format of every message: each request and response variant (a match without a
//! wildcard makes a new variant fail to compile here until it has a sample) round-trips
//! through a frame byte for byte, with arbitrary byte strings, text and numbers in its fields;
//! every strict prefix of a frame is refused, arbitrary bytes never panic the decoder; and one
//! frame is pinned byte for byte, so that a change of the encoding is a decision (with a
//! protocol version bump, which the handshake refuses with a message) and not an accident.

use crate::attr::{AttrOutcome, Attribute};
use crate::error::{ErrorCode, WireError};
use crate::frame;
use crate::mech::{Mechanism, MechanismParams};
use crate::msg::{
    Envelope, JoinPackage, MemberStatus, NodeStatus, ObjectId, ObjectInfo, OperationKind,
    OperationStart, RaftStatus, Request, RequestId, Response, Role, SealState, SessionId,
    UnsealSecret, UserType,
};
use crate::secret::{Password, SecretBytes};
use proptest::prelude::*;

/// The values a sample's fields are made from.
#[derive(Clone, Debug)]
struct Pieces {
    bytes: Vec<u8>,
    more: Vec<u8>,
    text: String,
    n: u64,
    id: u128,
}

impl Pieces {
    fn secret(&self) -> SecretBytes {
        SecretBytes::new(self.bytes.clone())
    }
    fn password(&self) -> Password {
        Password::new(self.text.clone())
    }
    fn session(&self) -> SessionId {
        SessionId(self.n)
    }
    fn object(&self) -> ObjectId {
        ObjectId(self.id)
    }
    fn mechanisms(&self) -> [Mechanism; 4] {
        [
            Mechanism::plain(self.n),
            Mechanism {
                kind: 0x1087,
                params: MechanismParams::Gcm {
                    iv: self.bytes.clone(),
                    aad: self.more.clone(),
                    tag_bits: self.n,
                },
            },
            Mechanism {
                kind: 0x0d,
                params: MechanismParams::Pss {
                    hash: self.n,
                    mgf: 2,
                    salt_len: 32,
                },
            },
            Mechanism {
                kind: 0x09,
                params: MechanismParams::Oaep {
                    hash: 0x250,
                    mgf: 2,
                    label: self.more.clone(),
                },
            },
        ]
    }
    fn mechanism(&self) -> Mechanism {
        let all = self.mechanisms();
        all[(self.n % 4) as usize].clone()
    }
    fn template(&self) -> Vec<Attribute> {
        // CKA_LABEL (bytes) and CKA_TOKEN (a bool).
        let mut t = vec![Attribute::from_raw(0x03, &self.bytes).expect("label")];
        t.push(Attribute::from_raw(0x01, &[u8::from(self.n % 2 == 1)]).expect("token"));
        t
    }
    fn info(&self) -> ObjectInfo {
        ObjectInfo {
            id: self.object(),
            class: self.n,
            key_type: Some(self.n / 2),
            usage: self.n as u32,
        }
    }
    fn start(&self) -> Option<OperationStart> {
        (!self.n.is_multiple_of(3)).then(|| OperationStart {
            key: Some(self.object()),
            mechanism: self.mechanism(),
        })
    }
    fn package(&self) -> JoinPackage {
        JoinPackage {
            cluster_id: self.text.clone(),
            cluster_name: self.text.clone(),
            node_id: self.n,
            ephemeral_public: self.bytes.clone(),
            wrapped_cdk: self.more.clone(),
        }
    }
    fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.text.clone(),
            cluster: self.text.clone(),
            seal: SealState::Unsealed,
            dev_unseal: self.n.is_multiple_of(2),
            objects: self.n,
            version: "0.1.0".into(),
            cluster_id: Some(self.text.clone()),
            raft: Some(RaftStatus {
                node_id: self.n,
                state: "Leader".into(),
                term: self.n,
                leader: Some(1),
                last_log: Some(self.n),
                applied: None,
                snapshot: Some(3),
                purged: None,
                millis_since_quorum_ack: Some(12),
                members: vec![MemberStatus {
                    node_id: 1,
                    name: self.text.clone(),
                    client_addr: "127.0.0.1:1".into(),
                    cluster_addr: "127.0.0.1:2".into(),
                    voter: true,
                    matched: Some(self.n),
                }],
            }),
            requests: self.n,
        }
    }
}

/// One sample of every request variant.
fn requests(p: &Pieces) -> Vec<Request> {
    let s = p.session();
    vec![
        Request::Status,
        Request::Unseal(UnsealSecret::Passphrase(p.password())),
        Request::Unseal(UnsealSecret::DevKey(p.secret())),
        Request::Login {
            user_type: UserType::User,
            username: p.text.clone(),
            password: p.password(),
        },
        Request::ResumeLogin { ticket: p.secret() },
        Request::RenewTicket,
        Request::Logout,
        Request::CreateUser {
            username: p.text.clone(),
            password: p.password(),
            role: Role::CryptoUser,
        },
        Request::JoinKey,
        Request::AdmitNode {
            node_id: p.n,
            join_key: p.bytes.clone(),
        },
        Request::CompleteJoin(p.package()),
        Request::AddNode {
            node_id: p.n,
            name: p.text.clone(),
            cluster_addr: p.text.clone(),
            client_addr: p.text.clone(),
        },
        Request::RemoveNode { node_id: p.n },
        Request::CloseSession { session: s },
        Request::GenerateKey {
            session: s,
            mechanism: p.mechanism(),
            template: p.template(),
        },
        Request::GenerateKeyPair {
            session: s,
            mechanism: p.mechanism(),
            public_template: p.template(),
            private_template: p.template(),
        },
        Request::CreateObject {
            session: s,
            template: p.template(),
        },
        Request::FindObjects {
            session: s,
            template: p.template(),
        },
        Request::GetAttributeValue {
            session: s,
            object: p.object(),
            types: vec![p.n, 0, u64::MAX],
        },
        Request::DestroyObject {
            session: s,
            object: p.object(),
        },
        Request::Sign {
            session: s,
            key: p.object(),
            mechanism: p.mechanism(),
            data: p.secret(),
        },
        Request::Verify {
            session: s,
            key: p.object(),
            mechanism: p.mechanism(),
            data: p.bytes.clone(),
            signature: p.more.clone(),
        },
        Request::Encrypt {
            session: s,
            key: p.object(),
            mechanism: p.mechanism(),
            data: p.secret(),
        },
        Request::Decrypt {
            session: s,
            key: p.object(),
            mechanism: p.mechanism(),
            data: p.bytes.clone(),
        },
        Request::GenerateRandom { length: p.n as u32 },
        Request::SetAttributeValue {
            session: s,
            object: p.object(),
            template: p.template(),
        },
        Request::CopyObject {
            session: s,
            object: p.object(),
            template: p.template(),
        },
        Request::GetObjectSize {
            session: s,
            object: p.object(),
        },
        Request::OperationUpdate {
            session: s,
            kind: OperationKind::Sign,
            start: p.start(),
            data: p.secret(),
        },
        Request::OperationFinal {
            session: s,
            kind: OperationKind::Verify,
            start: p.start(),
            signature: Some(p.more.clone()),
        },
        Request::DigestKey {
            session: s,
            start: p.start(),
            key: p.object(),
        },
        Request::OperationCancel {
            session: s,
            kind: OperationKind::Digest,
        },
        Request::Digest {
            session: s,
            mechanism: p.mechanism(),
            data: p.secret(),
        },
        Request::WrapKey {
            session: s,
            mechanism: p.mechanism(),
            wrapping_key: p.object(),
            key: ObjectId(!p.id),
        },
        Request::UnwrapKey {
            session: s,
            mechanism: p.mechanism(),
            unwrapping_key: p.object(),
            wrapped: p.bytes.clone(),
            template: p.template(),
        },
        Request::DeriveKey {
            session: s,
            mechanism: p.mechanism(),
            base_key: p.object(),
            template: p.template(),
        },
        Request::SetPin {
            old: p.password(),
            new: Password::new(format!("{}!", p.text)),
        },
        Request::InitPin {
            username: p.text.clone(),
            password: p.password(),
        },
    ]
}

/// Which request variant (no wildcard: a new variant must get a sample above).
fn request_variant(r: &Request) -> usize {
    match r {
        Request::Status => 0,
        Request::Unseal(_) => 1,
        Request::Login { .. } => 2,
        Request::ResumeLogin { .. } => 3,
        Request::RenewTicket => 4,
        Request::Logout => 5,
        Request::CreateUser { .. } => 6,
        Request::JoinKey => 7,
        Request::AdmitNode { .. } => 8,
        Request::CompleteJoin(_) => 9,
        Request::AddNode { .. } => 10,
        Request::RemoveNode { .. } => 11,
        Request::CloseSession { .. } => 12,
        Request::GenerateKey { .. } => 13,
        Request::GenerateKeyPair { .. } => 14,
        Request::CreateObject { .. } => 15,
        Request::FindObjects { .. } => 16,
        Request::GetAttributeValue { .. } => 17,
        Request::DestroyObject { .. } => 18,
        Request::Sign { .. } => 19,
        Request::Verify { .. } => 20,
        Request::Encrypt { .. } => 21,
        Request::Decrypt { .. } => 22,
        Request::GenerateRandom { .. } => 23,
        Request::SetAttributeValue { .. } => 24,
        Request::CopyObject { .. } => 25,
        Request::GetObjectSize { .. } => 26,
        Request::OperationUpdate { .. } => 27,
        Request::OperationFinal { .. } => 28,
        Request::DigestKey { .. } => 29,
        Request::OperationCancel { .. } => 30,
        Request::Digest { .. } => 31,
        Request::WrapKey { .. } => 32,
        Request::UnwrapKey { .. } => 33,
        Request::DeriveKey { .. } => 34,
        Request::SetPin { .. } => 35,
        Request::InitPin { .. } => 36,
    }
}
const REQUEST_VARIANTS: usize = 37;

/// One sample of every response variant.
fn responses(p: &Pieces) -> Vec<Response> {
    vec![
        Response::Status(p.status()),
        Response::Unsealed,
        Response::LoggedIn {
            role: Role::Admin,
            ticket: p.secret(),
            ticket_lifetime_s: p.n,
        },
        Response::LoggedOut,
        Response::UserCreated,
        Response::SessionClosed,
        Response::JoinKey {
            node_id: p.n,
            public_key: p.bytes.clone(),
        },
        Response::Admitted(p.package()),
        Response::Joined,
        Response::MembershipChanged { index: p.n },
        Response::KeyGenerated { key: p.info() },
        Response::KeyPairGenerated {
            public: p.info(),
            private: p.info(),
        },
        Response::ObjectCreated(p.info()),
        Response::Objects(vec![p.info(), p.info()]),
        Response::AttributeValues(vec![
            AttrOutcome::Value(p.template().remove(0)),
            AttrOutcome::Sensitive,
            AttrOutcome::Invalid,
        ]),
        Response::ObjectDestroyed,
        Response::Signature(p.bytes.clone()),
        Response::Verified,
        Response::Ciphertext(p.bytes.clone()),
        Response::Plaintext(p.secret()),
        Response::Random(p.bytes.clone()),
        Response::CiphertextWithIv {
            iv: p.more.clone(),
            data: p.bytes.clone(),
        },
        Response::ObjectUpdated(p.info()),
        Response::ObjectSize(p.n),
        Response::OperationData(p.secret()),
        Response::OperationCancelled,
        Response::Digest(p.bytes.clone()),
        Response::WrappedKey(p.bytes.clone()),
        Response::PinChanged,
        Response::Error(WireError {
            code: ErrorCode::PinIncorrect,
            message: p.text.clone(),
            unavailable: p.n.is_multiple_of(2),
        }),
    ]
}

/// Which response variant (no wildcard).
fn response_variant(r: &Response) -> usize {
    match r {
        Response::Status(_) => 0,
        Response::Unsealed => 1,
        Response::LoggedIn { .. } => 2,
        Response::LoggedOut => 3,
        Response::UserCreated => 4,
        Response::SessionClosed => 5,
        Response::JoinKey { .. } => 6,
        Response::Admitted(_) => 7,
        Response::Joined => 8,
        Response::MembershipChanged { .. } => 9,
        Response::KeyGenerated { .. } => 10,
        Response::KeyPairGenerated { .. } => 11,
        Response::ObjectCreated(_) => 12,
        Response::Objects(_) => 13,
        Response::AttributeValues(_) => 14,
        Response::ObjectDestroyed => 15,
        Response::Signature(_) => 16,
        Response::Verified => 17,
        Response::Ciphertext(_) => 18,
        Response::Plaintext(_) => 19,
        Response::Random(_) => 20,
        Response::CiphertextWithIv { .. } => 21,
        Response::ObjectUpdated(_) => 22,
        Response::ObjectSize(_) => 23,
        Response::OperationData(_) => 24,
        Response::OperationCancelled => 25,
        Response::Digest(_) => 26,
        Response::WrappedKey(_) => 27,
        Response::PinChanged => 28,
        Response::Error(_) => 29,
    }
}
const RESPONSE_VARIANTS: usize = 30;

/// Encodes `body` in a frame, decodes it, encodes it again: the same bytes, the same variant.
/// Every strict prefix of the frame's body is refused.
fn round_trip<T>(body: &T, variant: fn(&T) -> usize, prefixes: bool) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let envelope = Envelope {
        id: RequestId(u64::MAX - 1),
        index: 77,
        key: u128::MAX / 3,
        body,
    };
    let bytes = frame::encode(&envelope).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    prop_assert_eq!(len, bytes.len() - 4);
    let back: Envelope<T> =
        frame::decode(&bytes[4..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(back.id, RequestId(u64::MAX - 1));
    prop_assert_eq!(back.index, 77);
    prop_assert_eq!(back.key, u128::MAX / 3);
    prop_assert_eq!(variant(&back.body), variant(body));
    let again = frame::encode(&Envelope {
        id: back.id,
        index: back.index,
        key: back.key,
        body: &back.body,
    })
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&again, &bytes);
    if prefixes {
        for cut in 0..bytes.len() - 4 {
            prop_assert!(
                frame::decode::<Envelope<T>>(&bytes[4..4 + cut]).is_err(),
                "a prefix of {} of {} bytes decoded",
                cut,
                bytes.len() - 4
            );
        }
    }
    Ok(())
}

fn pieces() -> impl Strategy<Value = Pieces> {
    (
        proptest::collection::vec(any::<u8>(), 0..600),
        proptest::collection::vec(any::<u8>(), 0..40),
        ".{0,40}",
        any::<u64>(),
        any::<u128>(),
    )
        .prop_map(|(bytes, more, text, n, id)| Pieces {
            bytes,
            more,
            text,
            n,
            id,
        })
}

#[test]
fn every_variant_has_a_sample() {
    let p = Pieces {
        bytes: vec![1, 2, 3],
        more: vec![],
        text: "x".into(),
        n: 5,
        id: 9,
    };
    let mut seen = [false; REQUEST_VARIANTS];
    for r in requests(&p) {
        seen[request_variant(&r)] = true;
    }
    assert!(
        seen.iter().all(|&s| s),
        "requests without a sample: {seen:?}"
    );
    let mut seen = [false; RESPONSE_VARIANTS];
    for r in responses(&p) {
        seen[response_variant(&r)] = true;
    }
    assert!(
        seen.iter().all(|&s| s),
        "responses without a sample: {seen:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_request_round_trips(p in pieces()) {
        for r in requests(&p) {
            round_trip(&r, request_variant, p.bytes.len() < 64)?;
        }
    }

    #[test]
    fn every_response_round_trips(p in pieces()) {
        for r in responses(&p) {
            round_trip(&r, response_variant, p.bytes.len() < 64)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// What a hostile peer sends: any bytes decode to a message or an error, never a panic,
    /// and never make the decoder reserve what the bytes claim.
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = frame::decode::<Envelope<Request>>(&bytes);
        let _ = frame::decode::<Envelope<Response>>(&bytes);
    }
}

/// One frame, byte for byte, as protocol 3 encodes it (and the module and node of protocol 3
/// exchange it): an `Encrypt` with GCM parameters. A change here changes the wire, which must
/// come with a new `PROTOCOL_MAJOR` (the handshake then refuses old peers with a message; see
/// `frame::tests::unknown_major_version_is_refused_with_a_message`).
#[test]
fn the_encoding_is_pinned() {
    let request = Request::Encrypt {
        session: SessionId(3),
        key: ObjectId(0x0102),
        mechanism: Mechanism {
            kind: 0x1087,
            params: MechanismParams::Gcm {
                iv: vec![0xaa; 2],
                aad: vec![],
                tag_bits: 128,
            },
        },
        data: SecretBytes::new(b"hi".to_vec()),
    };
    let bytes = frame::encode(&Envelope {
        id: RequestId(300),
        index: 5,
        key: 1,
        body: &request,
    })
    .expect("encode");
    // Length 20; id 300 and index 5 and key 1 as varints; variant 21 (Encrypt); session 3;
    // object 0x0102; mechanism 0x1087, params variant 1 (GCM), IV 2 bytes, empty AAD, tag
    // 128; data 2 bytes.
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex, "00000014ac0205011503820287210102aaaa008001026869",
        "the wire encoding changed"
    );
}
