//! Sign, verify, encrypt, decrypt, random.
//!
//! `*Init` checks the mechanism and the key locally (the node checks again when the operation
//! runs) and records the operation in the session. Single-part calls run it on the node.
//! Multi-part calls accumulate the data in the module and send it at `*Final` (the node takes
//! whole messages); the total is bounded by what fits in one frame.
//!
//! The size-query protocol: a call without an output buffer runs the operation on the node,
//! keeps the result in the operation and returns its length; the next call hands the kept
//! result out. `CKR_BUFFER_TOO_SMALL` keeps the operation (and its result); success and every
//! other error end it.

use super::Token;
use super::object::FindState;
use super::session::Session;
use crate::client::unexpected;
use crate::error::{Error, Result};
use cryptoki_sys as ck;
use hsm_proto::SecretBytes;
use hsm_proto::frame::{MAX_FRAME_LEN, MAX_RANDOM_LEN};
use hsm_proto::mechlist;
use hsm_proto::{ErrorCode, Mechanism, MechanismParams, ObjectId, ObjectInfo, Request, Response};
use zeroize::Zeroizing;

/// The most data a multi-part operation accumulates: what fits in one request frame, with
/// room for the rest of the request.
pub const MAX_ACCUMULATED: usize = MAX_FRAME_LEN - (64 << 10);

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
}

impl Kind {
    /// The mechanism flag this kind needs.
    fn mechanism_flag(self) -> ck::CK_FLAGS {
        match self {
            Kind::Sign => ck::CKF_SIGN,
            Kind::Verify => ck::CKF_VERIFY,
            Kind::Encrypt => ck::CKF_ENCRYPT,
            Kind::Decrypt => ck::CKF_DECRYPT,
        }
    }

    /// The key usage this kind needs.
    fn usage(self) -> u32 {
        match self {
            Kind::Sign => ObjectInfo::SIGN,
            Kind::Verify => ObjectInfo::VERIFY,
            Kind::Encrypt => ObjectInfo::ENCRYPT,
            Kind::Decrypt => ObjectInfo::DECRYPT,
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
        }
    }
}

/// What a mechanism needs, beyond its row in [`mechlist`].
#[derive(Clone, Copy, Debug)]
struct Rule {
    kind: ck::CK_MECHANISM_TYPE,
    key_type: ck::CK_KEY_TYPE,
    /// Whether `*Update`/`*Final` are allowed (hashing and AEAD mechanisms).
    multipart: bool,
    params: Params,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Params {
    None,
    /// `CK_GCM_PARAMS`, 12-byte IV, 128-bit tag.
    Gcm,
    /// `CK_RSA_PKCS_PSS_PARAMS` with SHA-256 and MGF1-SHA-256.
    PssSha256,
}

/// Sorted by mechanism number.
const RULES: &[Rule] = &[
    rule(ck::CKM_RSA_PKCS, ck::CKK_RSA, false, Params::None),
    rule(ck::CKM_SHA256_RSA_PKCS, ck::CKK_RSA, true, Params::None),
    rule(
        ck::CKM_SHA256_RSA_PKCS_PSS,
        ck::CKK_RSA,
        true,
        Params::PssSha256,
    ),
    rule(ck::CKM_ECDSA, ck::CKK_EC, false, Params::None),
    rule(ck::CKM_ECDSA_SHA256, ck::CKK_EC, true, Params::None),
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
    key: ObjectId,
    mechanism: Mechanism,
    multipart: bool,
    /// `*Update` was called: only `*Update` and `*Final` may follow.
    streaming: bool,
    /// Data accumulated by `*Update`.
    data: Zeroizing<Vec<u8>>,
    /// The result of a size query or a too-small buffer, handed out by the next call.
    result: Option<Zeroizing<Vec<u8>>>,
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
    /// `C_SignInit`, `C_VerifyInit`, `C_EncryptInit`, `C_DecryptInit`.
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
        key: ck::CK_OBJECT_HANDLE,
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
        let entry = self.object(key)?.ok_or(ErrorCode::KeyHandleInvalid)?;
        let multipart = match rule_of(mechanism.kind) {
            Some(rule) => {
                check_params(rule, &mechanism.params)?;
                if entry.info.key_type != Some(rule.key_type as u64) {
                    return Err(ErrorCode::KeyTypeInconsistent.into());
                }
                rule.multipart
            }
            // Served but without a local rule: the node decides everything.
            None => false,
        };
        if entry.info.key_type.is_none() {
            return Err(ErrorCode::KeyTypeInconsistent.into());
        }
        if !entry.info.allows(kind.usage()) {
            return Err(ErrorCode::KeyFunctionNotPermitted.into());
        }
        *slot = Some(Operation {
            key: entry.info.id,
            mechanism,
            multipart,
            streaming: false,
            data: Zeroizing::new(Vec::new()),
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
        session.ops.lock()?.slot(kind).take();
        Ok(())
    }

    /// `C_Sign`, `C_Encrypt`, `C_Decrypt`: runs the operation on `input`; `out` `None` is a
    /// size query. Returns the output length.
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `OperationNotInitialized` (also after `*Update`);
    /// `BufferTooSmall` with the length needed; the node's verdict.
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
            *slot = None;
            return Err(ErrorCode::OperationNotInitialized.into());
        }
        if op.result.is_none() {
            match self.run(&session, kind, op, input) {
                Ok(result) => op.result = Some(result),
                Err(e) => {
                    *slot = None;
                    return Err(e);
                }
            }
        }
        deliver(slot, out)
    }

    /// `C_SignUpdate`, `C_VerifyUpdate`, `C_EncryptUpdate`, `C_DecryptUpdate`: accumulates
    /// `part` (encrypt and decrypt output nothing until `*Final`).
    ///
    /// # Errors
    /// `SessionHandleInvalid`; `OperationNotInitialized` (also for single-part-only
    /// mechanisms such as `CKM_ECDSA`, which ends the operation); `DataLenRange` beyond
    /// [`MAX_ACCUMULATED`].
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
            *slot = None;
            return Err(ErrorCode::OperationNotInitialized.into());
        }
        if op.data.len().saturating_add(part.len()) > MAX_ACCUMULATED {
            *slot = None;
            return Err(ErrorCode::DataLenRange.into());
        }
        op.data.extend_from_slice(part);
        op.streaming = true;
        Ok(())
    }

    /// `C_SignFinal`, `C_EncryptFinal`, `C_DecryptFinal`: runs the operation on the
    /// accumulated data; `out` `None` is a size query.
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
            *slot = None;
            return Err(ErrorCode::OperationNotInitialized.into());
        }
        if op.result.is_none() {
            let data = std::mem::take(&mut op.data);
            match self.run(&session, kind, op, &data) {
                Ok(result) => op.result = Some(result),
                Err(e) => {
                    *slot = None;
                    return Err(e);
                }
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
        let op = ops
            .slot(Kind::Verify)
            .take()
            .ok_or(ErrorCode::OperationNotInitialized)?;
        if op.streaming {
            return Err(ErrorCode::OperationNotInitialized.into());
        }
        self.run_verify(&session, op, data, signature)
    }

    /// `C_VerifyFinal`: checks `signature` over the accumulated data. Always ends the
    /// operation.
    ///
    /// # Errors
    /// As [`Token::verify`]; `OperationNotInitialized` for single-part-only mechanisms.
    pub fn verify_final(&self, handle: ck::CK_SESSION_HANDLE, signature: &[u8]) -> Result<()> {
        let session = self.session(handle)?;
        let mut ops = session.ops.lock()?;
        let mut op = ops
            .slot(Kind::Verify)
            .take()
            .ok_or(ErrorCode::OperationNotInitialized)?;
        if !op.multipart {
            return Err(ErrorCode::OperationNotInitialized.into());
        }
        let data = std::mem::take(&mut op.data);
        self.run_verify(&session, op, &data, signature)
    }

    fn run_verify(
        &self,
        session: &Session,
        op: Operation,
        data: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        let request = Request::Verify {
            session: session.id(),
            key: op.key,
            mechanism: op.mechanism,
            data: data.to_vec(),
            signature: signature.to_vec(),
        };
        match self.call_for(session, &request)? {
            Response::Verified => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Runs a sign, encrypt or decrypt on the node.
    fn run(
        &self,
        session: &Session,
        kind: Kind,
        op: &Operation,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        if data.len() > MAX_ACCUMULATED {
            return Err(ErrorCode::DataLenRange.into());
        }
        let (session_id, key, mechanism) = (session.id(), op.key, op.mechanism.clone());
        let request = match kind {
            Kind::Sign => Request::Sign {
                session: session_id,
                key,
                mechanism,
                data: SecretBytes::from_slice(data),
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
            Kind::Verify => return Err(Error::Device("verify has no output".into())),
        };
        match (kind, self.call_for(session, &request)?) {
            (Kind::Sign, Response::Signature(s)) => Ok(Zeroizing::new(s)),
            (Kind::Encrypt, Response::Ciphertext(c)) => Ok(Zeroizing::new(c)),
            (Kind::Decrypt, Response::Plaintext(p)) => Ok(p.into_zeroizing()),
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

    /// `C_SeedRandom`: the cluster's generator takes no seed.
    ///
    /// # Errors
    /// `SessionHandleInvalid`, otherwise always `RandomSeedNotSupported`.
    pub fn seed_random(&self, handle: ck::CK_SESSION_HANDLE) -> Result<()> {
        self.session(handle)?;
        Err(ErrorCode::RandomSeedNotSupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_cover_served_signature_and_cipher_mechanisms() {
        for m in mechlist::MECHANISMS {
            let op_flags =
                (ck::CKF_SIGN | ck::CKF_VERIFY | ck::CKF_ENCRYPT | ck::CKF_DECRYPT) as u64;
            if m.flags & op_flags != 0 {
                assert!(rule_of(m.kind).is_some(), "no rule for {:#x}", m.kind);
            }
        }
        assert!(RULES.windows(2).all(|w| w[0].kind < w[1].kind));
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

    #[test]
    fn size_query_keeps_the_result_until_delivered() {
        let mut slot = Some(Operation {
            key: ObjectId(1),
            mechanism: Mechanism::plain(ck::CKM_ECDSA as u64),
            multipart: false,
            streaming: false,
            data: Zeroizing::new(Vec::new()),
            result: Some(Zeroizing::new(vec![7; 64])),
        });
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
}
