//! Tests of the mechanisms: published vectors (`vectors`), Wycheproof (`wycheproof`), round
//! trips and independent checks with RustCrypto (`roundtrip`), the mechanism table against
//! the registry (`table`), and property tests that no input panics (`props`).

mod props;
mod roundtrip;
mod table;
mod vectors;
mod wycheproof;

use super::*;
use crate::keys::{self, GeneratedPair};
use cryptoki_sys as ck;
use std::sync::OnceLock;

pub(super) fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

pub(super) fn mech(kind: ck::CK_MECHANISM_TYPE, params: MechanismParams) -> Mechanism {
    Mechanism {
        kind: kind as u64,
        params,
    }
}

pub(super) fn plain(kind: ck::CK_MECHANISM_TYPE) -> Mechanism {
    Mechanism::plain(kind as u64)
}

pub(super) fn secret(key: keys::SecretKey) -> KeyRef {
    KeyRef::Secret(Arc::new(key))
}

pub(super) fn aes(key: &[u8]) -> KeyRef {
    secret(keys::import_secret(ck::CKK_AES as u64, key).unwrap().0)
}

pub(super) fn generic(key: &[u8]) -> KeyRef {
    secret(
        keys::import_secret(ck::CKK_GENERIC_SECRET as u64, key)
            .unwrap()
            .0,
    )
}

pub(super) fn public(key: &keys::PublicKey) -> KeyRef {
    KeyRef::Public(Arc::new(key.clone()))
}

/// One RSA-2048 key pair for the whole test binary (generation is slow).
pub(super) fn rsa2048() -> &'static (KeyRef, KeyRef) {
    static KEY: OnceLock<(KeyRef, KeyRef)> = OnceLock::new();
    KEY.get_or_init(|| {
        let GeneratedPair {
            private, public: p, ..
        } = keys::generate_rsa(2048).unwrap();
        (secret(private), public(&p))
    })
}

/// Runs an operation over `data` fed in `chunk`-byte updates (all at once for 0).
pub(super) fn run_chunked(
    kind: OperationKind,
    key: &KeyRef,
    m: &Mechanism,
    data: &[u8],
    chunk: usize,
    signature: Option<&[u8]>,
) -> Result<Vec<u8>, Error> {
    let mut op = start(kind, key.clone(), m)?.op;
    let mut out = Vec::new();
    if chunk == 0 {
        out.extend_from_slice(&op.update(data)?);
    } else {
        for c in data.chunks(chunk) {
            out.extend_from_slice(&op.update(c)?);
        }
    }
    out.extend_from_slice(&op.finish(signature)?);
    Ok(out)
}

pub(super) fn run(
    kind: OperationKind,
    key: &KeyRef,
    m: &Mechanism,
    data: &[u8],
) -> Result<Vec<u8>, Error> {
    run_chunked(kind, key, m, data, 0, None)
}

pub(super) fn verify(key: &KeyRef, m: &Mechanism, data: &[u8], sig: &[u8]) -> Result<(), Error> {
    run_chunked(OperationKind::Verify, key, m, data, 0, Some(sig)).map(|_| ())
}

pub(super) fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorCode {
    r.unwrap_err().code
}
