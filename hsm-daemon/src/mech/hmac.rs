//! `CKM_SHA_1_HMAC`, `CKM_SHA224_HMAC` … `CKM_SHA512_HMAC` with `CKK_GENERIC_SECRET` keys:
//! full-length MACs, streamed. Verification compares in constant time.

use super::{
    KeyRef, Mech, Operation, Registry, Started, expect_no_signature, expect_signature,
    key_type_inconsistent, no_params, signature_invalid,
};
use crate::error::Error;
use crate::keys::SecretKey;
use aws_lc_rs::hmac::{self, Algorithm, Context};
use cryptoki_sys as ck;
use hsm_proto::{ErrorCode, Mechanism};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

struct Hmac(Algorithm);

struct HmacOp {
    ctx: Context,
    verify: bool,
}

impl Operation for HmacOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.ctx.update(data);
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        let tag = self.ctx.sign();
        if !self.verify {
            expect_no_signature(signature)?;
            return Ok(Zeroizing::new(tag.as_ref().to_vec()));
        }
        let expected = expect_signature(signature)?;
        if expected.len() != tag.as_ref().len() {
            return Err(Error::new(
                ErrorCode::SignatureLenRange,
                format!("this HMAC is {} bytes", tag.as_ref().len()),
            ));
        }
        if bool::from(tag.as_ref().ct_eq(expected)) {
            Ok(Zeroizing::new(Vec::new()))
        } else {
            Err(signature_invalid())
        }
    }
}

impl Hmac {
    fn start(&self, mech: &Mechanism, key: &KeyRef, verify: bool) -> Result<Started, Error> {
        no_params(mech)?;
        let KeyRef::Secret(secret) = key else {
            return Err(key_type_inconsistent(mech, "a generic secret key"));
        };
        let SecretKey::Generic { bytes } = secret.as_ref() else {
            return Err(key_type_inconsistent(mech, "a generic secret key"));
        };
        let key = hmac::Key::new(self.0, bytes);
        Started::op(HmacOp {
            ctx: Context::with_key(&key),
            verify,
        })
    }
}

impl Mech for Hmac {
    fn sign(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        self.start(mech, key, false)
    }

    fn verify(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        self.start(mech, key, true)
    }
}

pub(super) fn register(r: &mut Registry) {
    r.add(
        ck::CKM_SHA_1_HMAC,
        Hmac(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
    );
    r.add(ck::CKM_SHA224_HMAC, Hmac(hmac::HMAC_SHA224));
    r.add(ck::CKM_SHA256_HMAC, Hmac(hmac::HMAC_SHA256));
    r.add(ck::CKM_SHA384_HMAC, Hmac(hmac::HMAC_SHA384));
    r.add(ck::CKM_SHA512_HMAC, Hmac(hmac::HMAC_SHA512));
}
