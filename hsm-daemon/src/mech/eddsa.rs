//! `CKM_EDDSA` with Ed25519 keys: pure Ed25519 (RFC 8032) only. `CK_EDDSA_PARAMS` (Ed25519ph,
//! Ed25519ctx) is `MechanismParamInvalid`: aws-lc-rs signs only the pure form. The message is
//! collected whole (Ed25519 hashes it twice), up to [`super::MAX_BUFFERED`] bytes.

use super::{
    KeyRef, MAX_BUFFERED, Mech, Operation, Registry, SignInput, Started, expect_no_signature,
    expect_signature, failed, key_type_inconsistent, param_invalid, signature_invalid,
};
use crate::error::Error;
use crate::keys::{PublicKey, SecretKey};
use aws_lc_rs::signature;
use cryptoki_sys as ck;
use hsm_proto::{ErrorCode, Mechanism, MechanismParams};
use std::sync::Arc;
use zeroize::Zeroizing;

const SIGNATURE_LEN: usize = 64;

fn pure_only(mech: &Mechanism) -> Result<(), Error> {
    match mech.params {
        MechanismParams::None => Ok(()),
        _ => Err(param_invalid(
            "CKM_EDDSA: only pure Ed25519 (no CK_EDDSA_PARAMS) is supported",
        )),
    }
}

struct SignOp {
    key: Arc<SecretKey>,
    input: SignInput,
}

impl Operation for SignOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.input.update(data)?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        expect_no_signature(signature)?;
        let SecretKey::Ed25519(pair) = self.key.as_ref() else {
            return Err(failed("Ed25519 key access"));
        };
        let sig = pair
            .try_sign(&self.input.finish())
            .map_err(|_| failed("Ed25519 signing"))?;
        Ok(Zeroizing::new(sig.as_ref().to_vec()))
    }
}

struct VerifyOp {
    key: Vec<u8>,
    input: SignInput,
}

impl Operation for VerifyOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.input.update(data)?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        let sig = expect_signature(signature)?;
        if sig.len() != SIGNATURE_LEN {
            return Err(Error::new(
                ErrorCode::SignatureLenRange,
                "Ed25519 signatures are 64 bytes",
            ));
        }
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.key)
            .verify(&self.input.finish(), sig)
            .map(|()| Zeroizing::new(Vec::new()))
            .map_err(|_| signature_invalid())
    }
}

struct Eddsa;

impl Mech for Eddsa {
    fn sign(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        pure_only(mech)?;
        let key = match key {
            KeyRef::Secret(k) if matches!(k.as_ref(), SecretKey::Ed25519(_)) => k.clone(),
            _ => return Err(key_type_inconsistent(mech, "an Ed25519 private key")),
        };
        Started::op(SignOp {
            key,
            input: SignInput::raw(MAX_BUFFERED),
        })
    }

    fn verify(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        pure_only(mech)?;
        let public = match key {
            KeyRef::Public(p) => p.as_ref().clone(),
            KeyRef::Secret(k) => k
                .public()
                .ok_or_else(|| key_type_inconsistent(mech, "an Ed25519 key"))?,
            KeyRef::None => return Err(key_type_inconsistent(mech, "an Ed25519 public key")),
        };
        let PublicKey::Ed25519 { key } = public else {
            return Err(key_type_inconsistent(mech, "an Ed25519 public key"));
        };
        Started::op(VerifyOp {
            key,
            input: SignInput::raw(MAX_BUFFERED),
        })
    }
}

pub(super) fn register(r: &mut Registry) {
    r.add(ck::CKM_EDDSA, Eddsa);
}
