//! Property tests: no input to start/update/finish/wrap/unwrap/derive, and no byte string
//! given to the key and DER parsers, panics. Every failure is an `Error` with a code.

use super::*;
use proptest::prelude::*;

fn keyring() -> &'static Vec<KeyRef> {
    static KEYS: OnceLock<Vec<KeyRef>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut v = vec![KeyRef::None, aes(&[1; 16]), aes(&[2; 24]), aes(&[3; 32])];
        v.push(generic(&[4; 1]));
        v.push(generic(&[5; 64]));
        for curve in keys::Curve::ALL {
            let pair = keys::generate_ec(curve).unwrap();
            v.push(public(&pair.public));
            v.push(secret(pair.private));
        }
        let ed = keys::generate_ed25519().unwrap();
        v.push(public(&ed.public));
        v.push(secret(ed.private));
        v.push(rsa2048().0.clone());
        v.push(rsa2048().1.clone());
        v
    })
}

fn kinds() -> Vec<u64> {
    let mut v = implemented();
    v.extend([0, 0x8000_0000, u64::MAX]);
    v
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn small_ulong() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..300, any::<u64>()]
}

fn params() -> impl Strategy<Value = MechanismParams> {
    prop_oneof![
        Just(MechanismParams::None),
        bytes(40).prop_map(MechanismParams::Bytes),
        (bytes(20), bytes(20), small_ulong())
            .prop_map(|(iv, aad, tag_bits)| MechanismParams::Gcm { iv, aad, tag_bits }),
        (small_ulong(), bytes(20), small_ulong()).prop_map(|(iv_len, aad, tag_bits)| {
            MechanismParams::GcmGeneratedIv {
                iv_len,
                aad,
                tag_bits,
            }
        }),
        (0x200u64..0x280, 0u64..8, small_ulong()).prop_map(|(hash, mgf, salt_len)| {
            MechanismParams::Pss {
                hash,
                mgf,
                salt_len,
            }
        }),
        (0x200u64..0x280, 0u64..8, bytes(20))
            .prop_map(|(hash, mgf, label)| MechanismParams::Oaep { hash, mgf, label }),
        (small_ulong(), bytes(20)).prop_map(|(counter_bits, block)| MechanismParams::AesCtr {
            counter_bits,
            block
        }),
        (0u64..16, bytes(20), bytes(140)).prop_map(|(kdf, shared_data, public_data)| {
            MechanismParams::Ecdh1Derive {
                kdf,
                shared_data,
                public_data,
            }
        }),
        (any::<bool>(), bytes(10))
            .prop_map(|(prehash, context)| MechanismParams::Eddsa { prehash, context }),
    ]
}

fn operation_kind() -> impl Strategy<Value = OperationKind> {
    prop_oneof![
        Just(OperationKind::Sign),
        Just(OperationKind::Verify),
        Just(OperationKind::Encrypt),
        Just(OperationKind::Decrypt),
        Just(OperationKind::Digest),
    ]
}

fn mechanism() -> impl Strategy<Value = Mechanism> {
    (prop::sample::select(kinds()), params()).prop_map(|(kind, params)| Mechanism { kind, params })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn operations_never_panic(
        kind in operation_kind(),
        m in mechanism(),
        key in 0usize..18,
        chunks in prop::collection::vec(bytes(300), 0..4),
        signature in prop::option::of(bytes(300)),
    ) {
        let key = keyring()[key % keyring().len()].clone();
        if let Ok(started) = start(kind, key, &m) {
            let mut op = started.op;
            let mut failed = false;
            for c in &chunks {
                if op.update(c).is_err() {
                    failed = true;
                    break;
                }
            }
            if !failed {
                let _ = op.finish(signature.as_deref());
            }
        }
    }

    #[test]
    fn wrap_unwrap_derive_never_panic(
        m in mechanism(),
        key in 0usize..18,
        data in bytes(600),
    ) {
        let key = keyring()[key % keyring().len()].clone();
        let _ = wrap(&m, &key, &data);
        let _ = unwrap(&m, &key, &data);
        if let KeyRef::Secret(k) = &key {
            let _ = derive(&m, k);
        }
    }

    #[test]
    fn parsers_never_panic(data in bytes(400), tag in 0u8..8) {
        let mut material = vec![tag];
        material.extend_from_slice(&data);
        let _ = keys::parse_material(&material);
        let _ = keys::import_pkcs8(&data);
        let _ = crate::der::pkcs8_algorithm(&data);
        let _ = crate::der::rsa_private_parts(&data);
        let _ = crate::der::ed25519_seed(&data);
        let _ = crate::der::parse_rsa_public_key(&data);
        for curve in keys::Curve::ALL {
            let _ = keys::ec_public_from_attributes(curve.oid_der(), &data);
            let _ = keys::import_ec_private(curve, &data);
        }
        let _ = keys::ec_public_from_attributes(&data, &data);
        let _ = keys::ec_public_from_attributes(crate::der::ED25519_OID, &data);
        let _ = keys::import_ed25519_private(&data);
        let _ = keys::rsa_public_from_components(&data, &[1, 0, 1]);
        for kt in [ck::CKK_AES, ck::CKK_GENERIC_SECRET, ck::CKK_RSA] {
            let _ = keys::import_secret(kt as u64, &data);
        }
    }
}
