//! Sign, verify, encrypt, decrypt, digest, random.
//!
//! `*Init` checks the mechanism and the key locally (the node checks again when the operation
//! runs) and records the operation in the session: no round trip.
//!
//! Single-part calls send one request. Multi-part calls buffer their input in the module, up
//! to what one request carries ([`MAX_ACCUMULATED`], about 4 MiB); `*Final` sends it as one
//! single-part request, so a multi-part operation also costs one round trip. Only input
//! beyond that streams to the node as `OperationUpdate` requests of that size (the node keeps
//! the operation's state), up to [`MAX_MULTIPART`] in total; `*Final` then ends it with
//! `OperationFinal`. Encryption and
//! decryption return all their output at `*Final` (`*Update` outputs nothing, which the spec
//! allows and GCM requires anyway).
//!
//! The size-query protocol: a call without an output buffer runs the operation, keeps the
//! result and returns its length; the next call hands the kept result out.
//! `CKR_BUFFER_TOO_SMALL` keeps the operation (and its result); success and every other error
//! end it.

use super::Token;
use super::object::FindState;
use super::session::Session;
use crate::client::unexpected;
use crate::error::{Error, Result};
use cryptoki_sys as ck;
use hsm_proto::frame::{MAX_FRAME_LEN, MAX_RANDOM_LEN};
use hsm_proto::mechlist;
use hsm_proto::{ErrorCode, Mechanism, MechanismParams, ObjectId, ObjectInfo, Request, Response};
use hsm_proto::{OperationKind, OperationStart, SecretBytes};
use zeroize::Zeroizing;

/// The most input one request carries: what fits in one frame with room for the rest.
pub const MAX_ACCUMULATED: usize = MAX_FRAME_LEN - (64 << 10);

/// The most input one multi-part operation takes (`CKR_DATA_LEN_RANGE` beyond).
pub const MAX_MULTIPART: usize = 64 << 20;

/// The operations a session can have active, one of each kind (PKCS#11 allows them at the
/// same time).
#[derive(Debug, Default)]
pub struct Operations {
    /// `C_FindObjects*`.
    pub find: Option<FindState>,
    sign: Option<Operation>,
    verify: Option<Operation>,
    encrypt: Option<Operation>,
    decrypt: Option<Operation>,
    digest: Option<Operation>,
}

/// The kind of a cryptographic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `C_Sign*`.
    Sign,
    /// `C_Verify*`.
    Verify,
    /// `C_Encrypt*`.
    Encrypt,
    /// `C_Decrypt*`.
    Decrypt,
    /// `C_Digest*`.
    Digest,
}

impl Kind {
    /// The mechanism flag this kind needs.
    fn mechanism_flag(self) -> ck::CK_FLAGS {
        match self {
            Kind::Sign => ck::CKF_SIGN,
            Kind::Verify => ck::CKF_VERIFY,
            Kind::Encrypt => ck::CKF_ENCRYPT,
            Kind::Decrypt => ck::CKF_DECRYPT,
            Kind::Digest => ck::CKF_DIGEST,
        }
    }

    /// The key usage this kind needs.
    fn usage(self) -> u32 {
        match self {
            Kind::Sign => ObjectInfo::SIGN,
            Kind::Verify => ObjectInfo::VERIFY,
            Kind::Encrypt => ObjectInfo::ENCRYPT,
            Kind::Decrypt => ObjectInfo::DECRYPT,
            Kind::Digest => 0,
        }
    }

    fn wire(self) -> OperationKind {
        match self {
            Kind::Sign => OperationKind::Sign,
            Kind::Verify => OperationKind::Verify,
            Kind::Encrypt => OperationKind::Encrypt,
            Kind::Decrypt => OperationKind::Decrypt,
            Kind::Digest => OperationKind::Digest,
        }
    }
}

impl Operations {
    fn slot(&mut self, kind: Kind) -> &mut Option<Operation> {
        match kind {
            Kind::Sign => &mut self.sign,
            Kind::Verify => &mut self.verify,
            Kind::Encrypt => &mut self.encrypt,
            Kind::Decrypt => &mut self.decrypt,
            Kind::Digest => &mut self.digest,
        }
    }
}

/// What the module checks locally about a mechanism, beyond its row in [`mechlist`].
/// Mechanisms without a rule are left entirely to the node.
#[derive(Clone, Copy, Debug)]
struct Rule {
    kind: ck::CK_MECHANISM_TYPE,
    key_type: ck::CK_KEY_TYPE,
    /// Whether `*Update`/`*Final` are allowed (the spec's single-part-only mechanisms: no).
    multipart: bool,
    params: Params,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Params {
    /// No parameter.
    None,
    /// Whatever the node accepts.
    Any,
    /// `CK_GCM_PARAMS`, 12-byte IV, 128-bit tag.
    Gcm,
    /// `CK_RSA_PKCS_PSS_PARAMS` with SHA-256 and MGF1-SHA-256.
    PssSha256,
}

/// Sorted by mechanism number (a test keeps it sorted).
const RULES: &[Rule] = &[
    rule(ck::CKM_RSA_PKCS, ck::CKK_RSA, false, Params::None),
    rule(ck::CKM_RSA_X_509, ck::CKK_RSA, false, Params::None),
    rule(ck::CKM_RSA_PKCS_OAEP, ck::CKK_RSA, false, Params::Any),
    rule(ck::CKM_RSA_PKCS_PSS, ck::CKK_RSA, false, Params::Any),
    rule(ck::CKM_SHA256_RSA_PKCS, ck::CKK_RSA, true, Params::None),
    rule(
        ck::CKM_SHA256_RSA_PKCS_PSS,
        ck::CKK_RSA,
        true,
        Params::PssSha256,
    ),
    rule(ck::CKM_ECDSA, ck::CKK_EC, false, Params::None),
    rule(ck::CKM_ECDSA_SHA256, ck::CKK_EC, true, Params::None),
    rule(ck::CKM_EDDSA, ck::CKK_EC_EDWARDS, false, Params::Any),
    rule(ck::CKM_AES_GCM, ck::CKK_AES, true, Params::Gcm),
];

const fn rule(
    kind: ck::CK_MECHANISM_TYPE,
    key_type: ck::CK_KEY_TYPE,
    multipart: bool,
    params: Params,
) -> Rule {
    Rule {
        kind,
        key_type,
        multipart,
        params,
    }
}

fn rule_of(kind: u64) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.kind as u64 == kind)
}

/// Checks a mechanism's parameters against its rule.
fn check_params(rule: &Rule, params: &MechanismParams) -> Result<()> {
    let ok = match (rule.params, params) {
        (Params::Any, _) => true,
        (Params::None, MechanismParams::None) => true,
        (Params::Gcm, MechanismParams::Gcm { iv, tag_bits, .. }) => {
            iv.len() == 12 && *tag_bits == 128
        }
        (Params::PssSha256, MechanismParams::Pss { hash, mgf, .. }) => {
            *hash == ck::CKM_SHA256 as u64 && *mgf == ck::CKG_MGF1_SHA256 as u64
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ErrorCode::MechanismParamInvalid.into())
    }
}

/// An active operation.
#[derive(Debug)]
struct Operation {
    key: Option<ObjectId>,
    mechanism: Mechanism,
    multipart: bool,
    /// `*Update` (or `C_DigestKey`) was called: only more of those and `*Final` may follow.
    streaming: bool,
    /// Input not yet sent to the node.
    buffer: Zeroizing<Vec<u8>>,
    /// All input so far, for the [`MAX_MULTIPART`] bound.
    fed: usize,
    /// The node holds this operation's state (an `OperationUpdate` or `DigestKey` went out).
    started: bool,
    /// The connection whose node holds that state: the rest of the operation goes there,
    /// and fails with `CKR_DEVICE_ERROR` if that node fails (such an operation cannot be
    /// resumed elsewhere).
    conn: Option<u64>,
    /// Output the node produced for updates, handed out at `*Final`.
    output: Zeroizing<Vec<u8>>,
    /// The result of a size query or a too-small buffer, handed out by the next call.
    result: Option<Zeroizing<Vec<u8>>>,
}

impl Operation {
    /// What the node needs to start this operation, if it has not started it yet.
    fn start(&self) -> Option<OperationStart> {
        (!self.started).then(|| OperationStart {
            key: self.key,
            mechanism: self.mechanism.clone(),
        })
    }
}

/// Copies a kept result out, or reports the length needed. Ends the operation when the
/// result was delivered.
fn deliver(slot: &mut Option<Operation>, out: Option<&mut [u8]>) -> Result<usize> {
    let Some(result) = slot.as_ref().and_then(|op| op.result.as_ref()) else {
        *slot = None;
        return Err(Error::Device("operation has no result".into()));
    };
    let n = result.len();
    match out {
        None => Ok(n),
        Some(buf) if buf.len() < n => Err(Error::BufferTooSmall(n)),
        Some(buf) => {
            buf[..n].copy_from_slice(result);
            *slot = None;
            Ok(n)
        }
    }
}

impl Token {
    /// `C_SignInit`, `C_VerifyInit`, `C_EncryptInit`, `C_DecryptInit`, `C_DigestInit`
    /// (without a key).
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `OperationActive`; `MechanismInvalid` for a mechanism not
    /// served for this kind; `MechanismParamInvalid`; `KeyHandleInvalid`;
    /// `KeyTypeInconsistent` for a key of the wrong type; `KeyFunctionNotPermitted` when the
    /// key's usage flags forbid it.
    pub fn operation_init(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        kind: Kind,
        mechanism: Mechanism,
        key: Option<ck::CK_OBJECT_HANDLE>,
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        let slot = ops.slot(kind);
        if slot.is_some() {
            return Err(ErrorCode::OperationActive.into());
        }
        if !mechlist::supports(mechanism.kind, kind.mechanism_flag() as u64) {
            return Err(ErrorCode::MechanismInvalid.into());
        }
        let rule = rule_of(mechanism.kind);
        if let Some(rule) = rule {
            check_params(rule, &mechanism.params)?;
        }
        let key = match key {
            None => None,
            Some(key) => {
                let entry = self.object(key)?.ok_or(ErrorCode::KeyHandleInvalid)?;
                let key_type = entry.info.key_type.ok_or(ErrorCode::KeyTypeInconsistent)?;
                if let Some(r) = rule
                    && key_type != r.key_type as u64
                {
                    tracing::debug!(
                        "mechanism {:#x} needs key type {:#x}; key {key} is of type {key_type:#x}",
                        mechanism.kind,
                        r.key_type
                    );
                    return Err(ErrorCode::KeyTypeInconsistent.into());
                }
                if !entry.info.allows(kind.usage()) {
                    return Err(ErrorCode::KeyFunctionNotPermitted.into());
                }
                Some(entry.info.id)
            }
        };
        *slot = Some(Operation {
            key,
            mechanism,
            // Without a local rule the node decides what a mechanism allows.
            multipart: rule.is_none_or(|r| r.multipart),
            streaming: false,
            buffer: Zeroizing::new(Vec::new()),
            fed: 0,
            started: false,
            conn: None,
            output: Zeroizing::new(Vec::new()),
            result: None,
        });
        Ok(())
    }

    /// `*Init` with a NULL mechanism: ends the active operation of that kind, if any.
    ///
    /// # Errors
    /// `SessionHandleInvalid`.
    pub fn operation_cancel(&self, handle: ck::CK_SESSION_HANDLE, kind: Kind) -> Result<()> {
        let session = self.session(handle)?;
        let op = session.ops.lock()?.slot(kind).take();
        if let Some(op) = op {
            self.abandon(&session, kind, &op);
        }
        Ok(())
    }

    /// Drops the node's state of an operation that ends without `OperationFinal`. Waits for
    /// the answer: the node runs a connection's requests concurrently, so a cancel sent
    /// without waiting could overtake the start of the session's next operation and kill it.
    /// Errors are only logged; the state dies with the session anyway.
    fn abandon(&self, session: &Session, kind: Kind, op: &Operation) {
        if op.started
            && let Some(conn) = op.conn
        {
            let request = Request::OperationCancel {
                session: session.id(),
                kind: kind.wire(),
            };
            if let Err(e) = self.call_on(session, &request, conn) {
                tracing::debug!("cancel of an abandoned operation failed: {e}");
            }
        }
    }

    /// Ends an operation after an error.
    fn fail(&self, session: &Session, kind: Kind, slot: &mut Option<Operation>, e: Error) -> Error {
        if let Some(op) = slot.take() {
            self.abandon(session, kind, &op);
        }
        e
    }

    /// `C_Sign`, `C_Encrypt`, `C_Decrypt`, `C_Digest`: runs the operation on `input`; `out`
    /// `None` is a size query. Returns the output length.
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `OperationNotInitialized` (also after `*Update`);
    /// `BufferTooSmall` with the length needed; `DataLenRange`; the node's verdict.
    pub fn operation_single(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        kind: Kind,
        input: &[u8],
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        let slot = ops.slot(kind);
        let Some(op) = slot.as_mut() else {
            return Err(ErrorCode::OperationNotInitialized.into());
        };
        if op.streaming {
            let e = ErrorCode::OperationNotInitialized.into();
            return Err(self.fail(&session, kind, slot, e));
        }
        if op.result.is_none() {
            match self.run_whole(&session, kind, op, input, None) {
                Ok(result) => op.result = Some(result),
                Err(e) => return Err(self.fail(&session, kind, slot, e)),
            }
        }
        deliver(slot, out)
    }

    /// `C_*Update`: buffers `part`, streaming to the node what does not fit in one request
    /// (encrypt and decrypt output nothing until `*Final`).
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `OperationNotInitialized` (also for single-part-only
    /// mechanisms such as `CKM_ECDSA`, which ends the operation); `DataLenRange` beyond
    /// [`MAX_MULTIPART`]; the node's verdict.
    pub fn operation_update(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        kind: Kind,
        part: &[u8],
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        let slot = ops.slot(kind);
        let Some(op) = slot.as_mut() else {
            return Err(ErrorCode::OperationNotInitialized.into());
        };
        if !op.multipart || op.result.is_some() {
            let e = ErrorCode::OperationNotInitialized.into();
            return Err(self.fail(&session, kind, slot, e));
        }
        if op.fed.saturating_add(part.len()) > MAX_MULTIPART {
            let e = ErrorCode::DataLenRange.into();
            return Err(self.fail(&session, kind, slot, e));
        }
        op.fed += part.len();
        op.streaming = true;
        if let Err(e) = self.feed(&session, kind, op, part) {
            return Err(self.fail(&session, kind, slot, e));
        }
        Ok(())
    }

    /// `C_SignFinal`, `C_EncryptFinal`, `C_DecryptFinal`, `C_DigestFinal`; `out` `None` is a
    /// size query.
    ///
    /// # Errors
    /// As [`Token::operation_single`]; `OperationNotInitialized` for single-part-only
    /// mechanisms.
    pub fn operation_final(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        kind: Kind,
        out: Option<&mut [u8]>,
    ) -> Result<usize> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        let slot = ops.slot(kind);
        let Some(op) = slot.as_mut() else {
            return Err(ErrorCode::OperationNotInitialized.into());
        };
        if !op.multipart {
            let e = ErrorCode::OperationNotInitialized.into();
            return Err(self.fail(&session, kind, slot, e));
        }
        if op.result.is_none() {
            match self.finish(&session, kind, op, None) {
                Ok(result) => op.result = Some(result),
                Err(e) => return Err(self.fail(&session, kind, slot, e)),
            }
        }
        deliver(slot, out)
    }

    /// `C_Verify`: checks `signature` over `data`. Always ends the operation.
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `OperationNotInitialized`; `SignatureInvalid` (from the
    /// node) and the node's other verdicts.
    pub fn verify(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        data: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        let slot = ops.slot(Kind::Verify);
        let Some(mut op) = slot.take() else {
            return Err(ErrorCode::OperationNotInitialized.into());
        };
        if op.streaming {
            self.abandon(&session, Kind::Verify, &op);
            return Err(ErrorCode::OperationNotInitialized.into());
        }
        let result = self.run_whole(&session, Kind::Verify, &mut op, data, Some(signature));
        self.end_verify(&session, &op, result)
    }

    /// `C_VerifyFinal`: checks `signature` over the accumulated data. Always ends the
    /// operation.
    ///
    /// # Errors
    /// As [`Token::verify`]; `OperationNotInitialized` for single-part-only mechanisms.
    pub fn verify_final(&self, handle: ck::CK_SESSION_HANDLE, signature: &[u8]) -> Result<()> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        let Some(mut op) = ops.slot(Kind::Verify).take() else {
            return Err(ErrorCode::OperationNotInitialized.into());
        };
        if !op.multipart {
            self.abandon(&session, Kind::Verify, &op);
            return Err(ErrorCode::OperationNotInitialized.into());
        }
        let result = self.finish(&session, Kind::Verify, &mut op, Some(signature));
        self.end_verify(&session, &op, result)
    }

    /// A verification's outcome; after a failure before `OperationFinal`, makes sure the
    /// node dropped its state.
    fn end_verify(
        &self,
        session: &Session,
        op: &Operation,
        result: Result<Zeroizing<Vec<u8>>>,
    ) -> Result<()> {
        if result.is_err() {
            self.abandon(session, Kind::Verify, op);
        }
        result.map(|_| ())
    }

    /// `C_DigestKey`: feeds a secret key's value to the active digest, on the node.
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `OperationNotInitialized`; `KeyHandleInvalid`; the node's
    /// verdict (`KeyIndigestible`, …).
    pub fn digest_key(
        &self,
        handle: ck::CK_SESSION_HANDLE,
        key: ck::CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        let slot = ops.slot(Kind::Digest);
        let Some(op) = slot.as_mut() else {
            return Err(ErrorCode::OperationNotInitialized.into());
        };
        let key = match self.object(key) {
            Ok(Some(entry)) => entry.info.id,
            Ok(None) => {
                let e = ErrorCode::KeyHandleInvalid.into();
                return Err(self.fail(&session, Kind::Digest, slot, e));
            }
            Err(e) => return Err(e),
        };
        op.streaming = true;
        let sent = (|| {
            if !op.buffer.is_empty() {
                self.flush(&session, Kind::Digest, op)?;
            }
            let request = Request::DigestKey {
                session: session.id(),
                start: op.start(),
                key,
            };
            match self.call_stateful(&session, op, &request)? {
                Response::OperationData(_) => {
                    op.started = true;
                    Ok(())
                }
                other => Err(unexpected(&request, &other)),
            }
        })();
        sent.map_err(|e| self.fail(&session, Kind::Digest, slot, e))
    }

    /// Sends a request of an operation whose state the node holds: the first goes where the
    /// key allows (and records the connection), the rest to that connection only.
    fn call_stateful(
        &self,
        session: &Session,
        op: &mut Operation,
        request: &Request,
    ) -> Result<Response> {
        match op.conn {
            Some(conn) => self.call_on(session, request, conn).map(|s| s.response),
            None => {
                let served = self.call_served(session, request)?;
                op.conn = Some(served.conn);
                Ok(served.response)
            }
        }
    }

    /// Buffers input, sending a full buffer to the node whenever more arrives than fits.
    fn feed(
        &self,
        session: &Session,
        kind: Kind,
        op: &mut Operation,
        mut input: &[u8],
    ) -> Result<()> {
        loop {
            let room = MAX_ACCUMULATED.saturating_sub(op.buffer.len());
            if input.len() <= room {
                op.buffer.extend_from_slice(input);
                return Ok(());
            }
            op.buffer.extend_from_slice(&input[..room]);
            input = &input[room..];
            self.flush(session, kind, op)?;
        }
    }

    /// Sends the buffered input as an `OperationUpdate`, starting the node's operation if
    /// needed; keeps the output of encryption and decryption for `*Final`.
    fn flush(&self, session: &Session, kind: Kind, op: &mut Operation) -> Result<()> {
        let data = SecretBytes::new(std::mem::take(&mut *op.buffer));
        let request = Request::OperationUpdate {
            session: session.id(),
            kind: kind.wire(),
            start: op.start(),
            data,
        };
        match self.call_stateful(session, op, &request)? {
            Response::OperationData(out) => {
                op.started = true;
                if op.output.len().saturating_add(out.len()) > MAX_MULTIPART + (64 << 10) {
                    return Err(ErrorCode::DataLenRange.into());
                }
                op.output.extend_from_slice(out.expose_secret());
                Ok(())
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Ends a multi-part operation: one single-part request if nothing went to the node yet,
    /// otherwise the rest of the input and `OperationFinal`. Returns the output (empty for
    /// verify).
    fn finish(
        &self,
        session: &Session,
        kind: Kind,
        op: &mut Operation,
        signature: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        if !op.started {
            let data = std::mem::take(&mut op.buffer);
            return self.run_single(session, kind, op, &data, signature);
        }
        if !op.buffer.is_empty() {
            self.flush(session, kind, op)?;
        }
        // The node ends the operation whatever the outcome of OperationFinal.
        op.started = false;
        let request = Request::OperationFinal {
            session: session.id(),
            kind: kind.wire(),
            start: None,
            signature: signature.map(<[u8]>::to_vec),
        };
        match (kind, self.call_stateful(session, op, &request)?) {
            (Kind::Verify, Response::Verified) => Ok(Zeroizing::new(Vec::new())),
            (Kind::Verify, Response::OperationData(d)) if d.is_empty() => {
                Ok(Zeroizing::new(Vec::new()))
            }
            (_, Response::OperationData(last)) => {
                let mut out = std::mem::take(&mut op.output);
                out.extend_from_slice(last.expose_secret());
                Ok(out)
            }
            (_, other) => Err(unexpected(&request, &other)),
        }
    }

    /// Runs a whole operation over `input`: one request when it fits in a frame, otherwise
    /// streamed (for mechanisms that allow multi-part).
    fn run_whole(
        &self,
        session: &Session,
        kind: Kind,
        op: &mut Operation,
        input: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        if input.len() <= MAX_ACCUMULATED {
            return self.run_single(session, kind, op, input, signature);
        }
        if !op.multipart || input.len() > MAX_MULTIPART {
            return Err(ErrorCode::DataLenRange.into());
        }
        self.feed(session, kind, op, input)?;
        self.finish(session, kind, op, signature)
    }

    /// One single-part request.
    fn run_single(
        &self,
        session: &Session,
        kind: Kind,
        op: &Operation,
        data: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        if data.len() > MAX_ACCUMULATED {
            return Err(ErrorCode::DataLenRange.into());
        }
        let session_id = session.id();
        let mechanism = op.mechanism.clone();
        let key = op.key.unwrap_or(ObjectId(0));
        let request = match kind {
            Kind::Sign => Request::Sign {
                session: session_id,
                key,
                mechanism,
                data: SecretBytes::from_slice(data),
            },
            Kind::Verify => Request::Verify {
                session: session_id,
                key,
                mechanism,
                data: data.to_vec(),
                signature: signature.unwrap_or_default().to_vec(),
            },
            Kind::Encrypt => Request::Encrypt {
                session: session_id,
                key,
                mechanism,
                data: SecretBytes::from_slice(data),
            },
            Kind::Decrypt => Request::Decrypt {
                session: session_id,
                key,
                mechanism,
                data: data.to_vec(),
            },
            Kind::Digest => Request::Digest {
                session: session_id,
                mechanism,
                data: SecretBytes::from_slice(data),
            },
        };
        match (kind, self.call_for(session, &request)?) {
            (Kind::Sign, Response::Signature(s)) => Ok(Zeroizing::new(s)),
            (Kind::Verify, Response::Verified) => Ok(Zeroizing::new(Vec::new())),
            (Kind::Encrypt, Response::Ciphertext(c)) => Ok(Zeroizing::new(c)),
            (Kind::Decrypt, Response::Plaintext(p)) => Ok(p.into_zeroizing()),
            (Kind::Digest, Response::Digest(d)) => Ok(Zeroizing::new(d)),
            (_, other) => Err(unexpected(&request, &other)),
        }
    }

    /// `C_GenerateRandom`: fills `out` from the node, in chunks of at most
    /// [`MAX_RANDOM_LEN`].
    ///
    /// # Errors
    /// `SessionHandleInvalid` and the node's verdict.
    pub fn generate_random(&self, handle: ck::CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        let session = self.session(handle)?;
        for chunk in out.chunks_mut(MAX_RANDOM_LEN as usize) {
            let request = Request::GenerateRandom {
                // A chunk is at most MAX_RANDOM_LEN, a u32.
                length: chunk.len() as u32,
            };
            match self.call_for(&session, &request)? {
                Response::Random(bytes) if bytes.len() == chunk.len() => {
                    chunk.copy_from_slice(&bytes)
                }
                other => return Err(unexpected(&request, &other)),
            }
        }
        Ok(())
    }

    /// `C_SeedRandom`: accepted and ignored, as the spec permits. The node's generator is
    /// aws-lc's DRBG, seeded by the operating system; caller-supplied seed adds nothing an
    /// HSM should trust.
    ///
    /// # Errors
    /// `SessionHandleInvalid`.
    pub fn seed_random(&self, handle: ck::CK_SESSION_HANDLE) -> Result<()> {
        self.session(handle)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_sorted_and_name_key_types() {
        assert!(RULES.windows(2).all(|w| w[0].kind < w[1].kind));
        // Every served signature or cipher mechanism of the first slice has a local rule.
        for m in [
            ck::CKM_RSA_PKCS,
            ck::CKM_SHA256_RSA_PKCS,
            ck::CKM_SHA256_RSA_PKCS_PSS,
            ck::CKM_ECDSA,
            ck::CKM_ECDSA_SHA256,
            ck::CKM_AES_GCM,
        ] {
            assert!(rule_of(m as u64).is_some(), "{m:#x}");
        }
        assert!(!rule_of(ck::CKM_ECDSA as u64).unwrap().multipart);
        assert!(rule_of(ck::CKM_ECDSA_SHA256 as u64).unwrap().multipart);
    }

    #[test]
    fn gcm_and_pss_parameters_are_checked() {
        let gcm = rule_of(ck::CKM_AES_GCM as u64).unwrap();
        let good = MechanismParams::Gcm {
            iv: vec![0; 12],
            aad: vec![1, 2],
            tag_bits: 128,
        };
        assert!(check_params(gcm, &good).is_ok());
        let short_iv = MechanismParams::Gcm {
            iv: vec![0; 8],
            aad: vec![],
            tag_bits: 128,
        };
        assert!(check_params(gcm, &short_iv).is_err());
        assert!(check_params(gcm, &MechanismParams::None).is_err());
        let pss = rule_of(ck::CKM_SHA256_RSA_PKCS_PSS as u64).unwrap();
        let sha256 = MechanismParams::Pss {
            hash: ck::CKM_SHA256 as u64,
            mgf: ck::CKG_MGF1_SHA256 as u64,
            salt_len: 32,
        };
        assert!(check_params(pss, &sha256).is_ok());
        let sha1 = MechanismParams::Pss {
            hash: ck::CKM_SHA_1 as u64,
            mgf: ck::CKG_MGF1_SHA1 as u64,
            salt_len: 20,
        };
        assert!(check_params(pss, &sha1).is_err());
        let ecdsa = rule_of(ck::CKM_ECDSA as u64).unwrap();
        assert!(check_params(ecdsa, &MechanismParams::Bytes(vec![1])).is_err());
    }

    fn op_with_result(result: Vec<u8>) -> Option<Operation> {
        Some(Operation {
            key: Some(ObjectId(1)),
            mechanism: Mechanism::plain(ck::CKM_ECDSA as u64),
            multipart: false,
            streaming: false,
            buffer: Zeroizing::new(Vec::new()),
            fed: 0,
            started: false,
            conn: None,
            output: Zeroizing::new(Vec::new()),
            result: Some(Zeroizing::new(result)),
        })
    }

    #[test]
    fn size_query_keeps_the_result_until_delivered() {
        let mut slot = op_with_result(vec![7; 64]);
        assert_eq!(deliver(&mut slot, None).unwrap(), 64);
        assert!(slot.is_some());
        let mut small = [0u8; 10];
        assert!(matches!(
            deliver(&mut slot, Some(&mut small)),
            Err(Error::BufferTooSmall(64))
        ));
        assert!(slot.is_some());
        let mut big = [0u8; 100];
        assert_eq!(deliver(&mut slot, Some(&mut big)).unwrap(), 64);
        assert_eq!(&big[..64], &[7; 64][..]);
        assert!(slot.is_none());
    }

    #[test]
    fn an_operation_starts_the_node_side_once() {
        let mut op = op_with_result(Vec::new()).unwrap();
        assert!(op.start().is_some());
        op.started = true;
        assert!(op.start().is_none());
    }
}
