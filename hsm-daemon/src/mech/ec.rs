//! ECDSA (`CKM_ECDSA` on a caller's hash, `CKM_ECDSA_SHA1` … `CKM_ECDSA_SHA512`) on P-256,
//! P-384, P-521 and secp256k1, and ECDH (`CKM_ECDH1_DERIVE`) on the three NIST curves.
//!
//! Signatures are `r || s`, each the length of the curve order (PKCS#11's format).
//!
//! A hash of any length is signed as SEC 1 (4.1.3, step 5) says: its leftmost bits, as many as
//! the order has; a shorter hash is the same integer, left-padded. aws-lc-rs takes the value as
//! a digest exactly as long as the order in bytes, which is that integer for P-256, P-384 and
//! secp256k1. For P-521 (a 521-bit order) a hash up to 64 bytes is the same integer padded to
//! 64 bytes; a longer one (no standard hash is) is `DataLenRange`.
//!
//! ECDH on secp256k1 goes through `hsm_awslc` (aws-lc's C API, the same library):
//! aws-lc-rs's agreement module has the P curves only.

use super::{
    KeyRef, Mech, Operation, Registry, SignInput, Started, expect_no_signature, expect_signature,
    failed, key_type_inconsistent, no_params, param_invalid, signature_invalid,
};
use crate::der;
use crate::error::Error;
use crate::keys::{Curve, PublicKey, SecretKey};
use aws_lc_rs::agreement;
use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::signature;
use cryptoki_sys as ck;
use hsm_proto::{ErrorCode, Mechanism, MechanismParams};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Bytes of ANSI X9.63 KDF output [`super::derive`] returns for `CKD_SHA*_KDF`: the largest
/// generic secret we hold.
pub const KDF_OUTPUT_LEN: usize = crate::keys::GENERIC_SECRET_MAX_LEN;

/// The largest "hash" `CKM_ECDSA` accepts; SEC 1 only reads the leftmost bits of it anyway.
const MAX_RAW_HASH: usize = 1024;

/// The value ECDSA signs for `hash`, as a digest of the length aws-lc-rs expects for `curve`.
fn ecdsa_digest(curve: Curve, hash: &[u8]) -> Result<Digest, Error> {
    if hash.is_empty() {
        return Err(Error::new(
            ErrorCode::DataLenRange,
            "ECDSA needs a non-empty hash",
        ));
    }
    let carrier = curve.digest_carrier();
    let len = carrier.output_len;
    let mut e = Zeroizing::new([0u8; digest::MAX_OUTPUT_LEN]);
    if curve == Curve::P521 {
        // The order is 521 bits; a hash of up to 64 bytes is read whole.
        if hash.len() > len {
            return Err(Error::new(
                ErrorCode::DataLenRange,
                "ECDSA on P-521 signs a hash of at most 64 bytes",
            ));
        }
        e[len - hash.len()..len].copy_from_slice(hash);
    } else if hash.len() >= len {
        e[..len].copy_from_slice(&hash[..len]);
    } else {
        e[len - hash.len()..len].copy_from_slice(hash);
    }
    Digest::import_less_safe(&e[..len], carrier).map_err(|_| failed("digest import"))
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
        let SecretKey::Ec { curve, pair } = self.key.as_ref() else {
            return Err(failed("EC key access"));
        };
        let digest = ecdsa_digest(*curve, &self.input.finish())?;
        let sig = pair
            .ecdsa
            .sign_digest(&digest)
            .map_err(|_| failed("ECDSA signing"))?;
        Ok(Zeroizing::new(sig.as_ref().to_vec()))
    }
}

struct VerifyOp {
    curve: Curve,
    point: Vec<u8>,
    input: SignInput,
}

impl Operation for VerifyOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.input.update(data)?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        let sig = expect_signature(signature)?;
        if sig.len() != 2 * self.curve.scalar_len() {
            return Err(Error::new(
                ErrorCode::SignatureLenRange,
                format!(
                    "{} signatures are {} bytes",
                    self.curve.name(),
                    2 * self.curve.scalar_len()
                ),
            ));
        }
        let digest = ecdsa_digest(self.curve, &self.input.finish())?;
        signature::UnparsedPublicKey::new(self.curve.verification(), &self.point)
            .verify_digest(&digest, sig)
            .map(|()| Zeroizing::new(Vec::new()))
            .map_err(|_| signature_invalid())
    }
}

/// `CKM_ECDSA` (`hash: None`) or `CKM_ECDSA_SHA*`.
struct Ecdsa {
    hash: Option<&'static digest::Algorithm>,
}

impl Ecdsa {
    fn input(&self) -> SignInput {
        match self.hash {
            Some(h) => SignInput::hash(h),
            None => SignInput::raw(MAX_RAW_HASH),
        }
    }
}

impl Mech for Ecdsa {
    fn sign(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        no_params(mech)?;
        let key = match key {
            KeyRef::Secret(k) if matches!(k.as_ref(), SecretKey::Ec { .. }) => k.clone(),
            _ => return Err(key_type_inconsistent(mech, "an EC private key")),
        };
        Started::op(SignOp {
            key,
            input: self.input(),
        })
    }

    fn verify(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        no_params(mech)?;
        let public = match key {
            KeyRef::Public(p) => p.as_ref().clone(),
            KeyRef::Secret(k) => k
                .public()
                .ok_or_else(|| key_type_inconsistent(mech, "an EC key"))?,
            KeyRef::None => return Err(key_type_inconsistent(mech, "an EC public key")),
        };
        let PublicKey::Ec { curve, point } = public else {
            return Err(key_type_inconsistent(mech, "an EC public key"));
        };
        Started::op(VerifyOp {
            curve,
            point,
            input: self.input(),
        })
    }
}

// ----- ECDH ---------------------------------------------------------------------------------

/// ANSI X9.63 KDF (SEC 1, 3.6.1): `Hash(Z || counter || SharedInfo)` for counter = 1, 2, …,
/// concatenated and cut to `len`.
fn x963_kdf(
    alg: &'static digest::Algorithm,
    z: &[u8],
    shared: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + alg.output_len));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut ctx = digest::Context::new(alg);
        ctx.update(z);
        ctx.update(&counter.to_be_bytes());
        ctx.update(shared);
        out.extend_from_slice(ctx.finish().as_ref());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// The peer's point in `CK_ECDH1_DERIVE_PARAMS.pPublicData`: a SEC 1 uncompressed or
/// compressed point, raw or wrapped in a DER `OCTET STRING` (clients send both). aws-lc checks
/// that it is on the curve.
fn peer_point(curve: Curve, data: &[u8]) -> Option<&[u8]> {
    let is_point = |p: &[u8]| match p.first() {
        Some(0x04) => p.len() == curve.point_len(),
        Some(0x02 | 0x03) => p.len() == 1 + curve.scalar_len(),
        _ => false,
    };
    if is_point(data) {
        return Some(data);
    }
    let (body, rest) = der::read_tlv(data, 0x04)?;
    (rest.is_empty() && is_point(body)).then_some(body)
}

struct Ecdh;

impl Mech for Ecdh {
    fn derive(&self, mech: &Mechanism, base: &SecretKey) -> Result<Zeroizing<Vec<u8>>, Error> {
        let MechanismParams::Ecdh1Derive {
            kdf,
            shared_data,
            public_data,
        } = &mech.params
        else {
            return Err(param_invalid("ECDH needs CK_ECDH1_DERIVE_PARAMS"));
        };
        let kdf_hash: Option<&'static digest::Algorithm> = match *kdf {
            k if k == ck::CKD_NULL as u64 => {
                if !shared_data.is_empty() {
                    return Err(param_invalid("ECDH: CKD_NULL takes no shared data"));
                }
                None
            }
            k if k == ck::CKD_SHA1_KDF as u64 => Some(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            k if k == ck::CKD_SHA224_KDF as u64 => Some(&digest::SHA224),
            k if k == ck::CKD_SHA256_KDF as u64 => Some(&digest::SHA256),
            k if k == ck::CKD_SHA384_KDF as u64 => Some(&digest::SHA384),
            k if k == ck::CKD_SHA512_KDF as u64 => Some(&digest::SHA512),
            _ => {
                return Err(param_invalid(
                    "ECDH: the KDF must be CKD_NULL or CKD_SHA1/224/256/384/512_KDF",
                ));
            }
        };
        let SecretKey::Ec { curve, pair } = base else {
            return Err(key_type_inconsistent(mech, "an EC private key"));
        };
        let point = peer_point(*curve, public_data).ok_or_else(|| {
            param_invalid(format!(
                "ECDH: the public data must be a {} point (SEC 1, raw or in an OCTET STRING)",
                curve.name()
            ))
        })?;
        let finish = |z: &[u8]| match kdf_hash {
            None => Zeroizing::new(z.to_vec()),
            Some(h) => x963_kdf(h, z, shared_data, KDF_OUTPUT_LEN),
        };
        if *curve == Curve::Secp256k1 {
            let scalar = base.value().ok_or_else(|| failed("EC key access"))?;
            let z = hsm_awslc::ecdh_secp256k1(&scalar, point)
                .map(Zeroizing::new)
                .map_err(|_| param_invalid("ECDH: the public data is not a valid point"))?;
            return Ok(finish(&z));
        }
        let (Some(alg), Some(private)) = (curve.agreement(), pair.ecdh.as_ref()) else {
            return Err(Error::new(
                ErrorCode::CurveNotSupported,
                format!("ECDH on {} is not supported", curve.name()),
            ));
        };
        let peer = agreement::UnparsedPublicKey::new(alg, point);
        agreement::agree(
            private,
            peer,
            param_invalid("ECDH: the public data is not a valid point"),
            |z| Ok(finish(z)),
        )
    }
}

pub(super) fn register(r: &mut Registry) {
    r.add(ck::CKM_ECDSA, Ecdsa { hash: None });
    r.add(
        ck::CKM_ECDSA_SHA1,
        Ecdsa {
            hash: Some(&digest::SHA1_FOR_LEGACY_USE_ONLY),
        },
    );
    r.add(
        ck::CKM_ECDSA_SHA224,
        Ecdsa {
            hash: Some(&digest::SHA224),
        },
    );
    r.add(
        ck::CKM_ECDSA_SHA256,
        Ecdsa {
            hash: Some(&digest::SHA256),
        },
    );
    r.add(
        ck::CKM_ECDSA_SHA384,
        Ecdsa {
            hash: Some(&digest::SHA384),
        },
    );
    r.add(
        ck::CKM_ECDSA_SHA512,
        Ecdsa {
            hash: Some(&digest::SHA512),
        },
    );
    r.add(ck::CKM_ECDH1_DERIVE, Ecdh);
}

#[cfg(test)]
pub(super) fn x963_kdf_for_tests(
    alg: &'static digest::Algorithm,
    z: &[u8],
    shared: &[u8],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    x963_kdf(alg, z, shared, len)
}
