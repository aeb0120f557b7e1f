//! `CKM_SHA_1`, `CKM_SHA224`, `CKM_SHA256`, `CKM_SHA384`, `CKM_SHA512`: streaming digests
//! (`C_DigestKey` is an update with the key's value, fed by the caller).

use super::{Mech, Operation, Registry, Started, expect_no_signature, no_params};
use crate::error::Error;
use aws_lc_rs::digest::{self, Algorithm, Context};
use cryptoki_sys as ck;
use hsm_proto::Mechanism;
use zeroize::Zeroizing;

struct Sha(&'static Algorithm);

struct DigestOp(Context);

impl Operation for DigestOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.0.update(data);
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        expect_no_signature(signature)?;
        Ok(Zeroizing::new(self.0.finish().as_ref().to_vec()))
    }
}

impl Mech for Sha {
    fn digest(&self, mech: &Mechanism) -> Result<Started, Error> {
        no_params(mech)?;
        Started::op(DigestOp(Context::new(self.0)))
    }
}

pub(super) fn register(r: &mut Registry) {
    r.add(ck::CKM_SHA_1, Sha(&digest::SHA1_FOR_LEGACY_USE_ONLY));
    r.add(ck::CKM_SHA224, Sha(&digest::SHA224));
    r.add(ck::CKM_SHA256, Sha(&digest::SHA256));
    r.add(ck::CKM_SHA384, Sha(&digest::SHA384));
    r.add(ck::CKM_SHA512, Sha(&digest::SHA512));
}
