//! The advertised table (`hsm_proto::mechlist`) against the registry: every row is
//! implemented, every implementation is listed, and each flag is exactly a function the
//! mechanism performs ("list only what works").

use super::*;
use hsm_proto::mechlist::MECHANISMS;

/// Key generation is the caller's (keys.rs through the handler), not a registry entry.
const KEY_GENERATION: [ck::CK_MECHANISM_TYPE; 5] = [
    ck::CKM_RSA_PKCS_KEY_PAIR_GEN,
    ck::CKM_GENERIC_SECRET_KEY_GEN,
    ck::CKM_EC_KEY_PAIR_GEN,
    ck::CKM_EC_EDWARDS_KEY_PAIR_GEN,
    ck::CKM_AES_KEY_GEN,
];

fn is_keygen(kind: u64) -> bool {
    KEY_GENERATION.iter().any(|k| *k as u64 == kind)
}

#[test]
fn every_row_is_implemented_and_every_implementation_listed() {
    let listed: Vec<u64> = MECHANISMS
        .iter()
        .map(|m| m.kind)
        .filter(|k| !is_keygen(*k))
        .collect();
    assert_eq!(listed, implemented());
    for k in KEY_GENERATION {
        let row = hsm_proto::mechlist::info(k as u64).unwrap();
        let generates = (ck::CKF_GENERATE | ck::CKF_GENERATE_KEY_PAIR) as u64;
        assert_ne!(row.flags & generates, 0, "{k:#x}");
    }
}

#[test]
fn flags_are_exactly_the_functions_performed() {
    let base = keys::generate_ec(keys::Curve::P256).unwrap().private;
    let performs =
        |r: Result<(), Error>| !matches!(r, Err(e) if e.code == ErrorCode::MechanismInvalid);
    for row in MECHANISMS.iter().filter(|m| !is_keygen(m.kind)) {
        let m = Mechanism::plain(row.kind);
        let has = |f: ck::CK_FLAGS| row.flags & f as u64 != 0;
        let op = |kind| start(kind, KeyRef::None, &m).map(|_| ());
        let checks = [
            ("sign", ck::CKF_SIGN, performs(op(OperationKind::Sign))),
            (
                "verify",
                ck::CKF_VERIFY,
                performs(op(OperationKind::Verify)),
            ),
            (
                "encrypt",
                ck::CKF_ENCRYPT,
                performs(op(OperationKind::Encrypt)),
            ),
            (
                "decrypt",
                ck::CKF_DECRYPT,
                performs(op(OperationKind::Decrypt)),
            ),
            (
                "digest",
                ck::CKF_DIGEST,
                performs(op(OperationKind::Digest)),
            ),
            (
                "wrap",
                ck::CKF_WRAP,
                performs(wrap(&m, &KeyRef::None, b"").map(|_| ())),
            ),
            (
                "unwrap",
                ck::CKF_UNWRAP,
                performs(unwrap(&m, &KeyRef::None, b"").map(|_| ())),
            ),
            (
                "derive",
                ck::CKF_DERIVE,
                performs(derive(&m, &base).map(|_| ())),
            ),
        ];
        for (what, flag, does) in checks {
            assert_eq!(has(flag), does, "{:#x} {what}", row.kind);
        }
    }
}
