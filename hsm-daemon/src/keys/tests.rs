use super::*;
use crate::mech::{self, KeyRef};
use hsm_proto::Mechanism;
use hsm_proto::OperationKind;
use std::sync::{Arc, OnceLock};

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

/// One RSA-2048 key for the whole test binary: generation is the slow part.
fn rsa2048() -> &'static GeneratedPair {
    static KEY: OnceLock<GeneratedPair> = OnceLock::new();
    KEY.get_or_init(|| generate_rsa(2048).unwrap())
}

fn sign_verify_works(private: SecretKey, public: PublicKey, kind: u64) {
    let mech = Mechanism::plain(kind);
    let private = KeyRef::Secret(Arc::new(private));
    let mut op = mech::start(OperationKind::Sign, private, &mech).unwrap().op;
    op.update(b"message").unwrap();
    let sig = op.finish(None).unwrap();
    let mut op = mech::start(
        OperationKind::Verify,
        KeyRef::Public(Arc::new(public)),
        &mech,
    )
    .unwrap()
    .op;
    op.update(b"message").unwrap();
    op.finish(Some(&sig)).unwrap();
}

#[test]
fn curves_are_named_by_oid_or_printable_string() {
    for curve in Curve::ALL {
        assert_eq!(Curve::from_ec_params(curve.oid_der()), Some(curve));
        assert_eq!(curve.point_len(), 1 + 2 * curve.scalar_len());
    }
    let printable = |s: &str| {
        let mut v = vec![0x13, s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    };
    assert_eq!(
        Curve::from_ec_params(&printable("prime256v1")),
        Some(Curve::P256)
    );
    assert_eq!(
        Curve::from_ec_params(&printable("secp521r1")),
        Some(Curve::P521)
    );
    assert_eq!(Curve::from_ec_params(&printable("edwards25519")), None);
    assert_eq!(Curve::from_ec_params(der::ED25519_OID), None);
    assert_eq!(Curve::from_ec_params(&[0x06, 0x03, 1, 2, 3]), None);
    assert!(is_ed25519_params(der::ED25519_OID));
    assert!(is_ed25519_params(&printable("edwards25519")));
    assert!(!is_ed25519_params(der::P256_OID));
    assert_eq!(
        (Curve::P521.scalar_len(), Curve::P521.point_len()),
        (66, 133)
    );
}

#[test]
fn ec_keys_round_trip_through_material_value_and_pkcs8() {
    for curve in Curve::ALL {
        let pair = generate_ec(curve).unwrap();
        let PublicKey::Ec { curve: c, point } = &pair.public else {
            panic!("not an EC public key");
        };
        assert_eq!(*c, curve);
        assert_eq!(point.len(), curve.point_len());
        assert_eq!(pair.private.key_type(), ck::CKK_EC as u64);
        assert_eq!(pair.private.size_bits(), curve.bits());

        let reloaded = parse_material(&pair.material).unwrap();
        assert_eq!(reloaded.public(), Some(pair.public.clone()));

        let scalar = pair.private.value().unwrap();
        assert_eq!(scalar.len(), curve.scalar_len());
        let imported = import_ec_private(curve, &scalar).unwrap();
        assert_eq!(imported.public, pair.public);

        let (key_type, unwrapped) = import_pkcs8(&pair.private.wrap_payload()).unwrap();
        assert_eq!(key_type, ck::CKK_EC as u64);
        assert_eq!(unwrapped.public, pair.public);

        let from_attrs =
            ec_public_from_attributes(curve.oid_der(), &pair.public.ec_point_attribute()).unwrap();
        assert_eq!(from_attrs, pair.public);
        sign_verify_works(imported.private, pair.public, ck::CKM_ECDSA_SHA256 as u64);
    }
}

#[test]
fn ec_spki_is_read_by_rustcrypto() {
    use p256::pkcs8::DecodePublicKey;
    let p = generate_ec(Curve::P256).unwrap().public;
    let PublicKey::Ec { point, .. } = &p else {
        unreachable!()
    };
    let parsed = p256::PublicKey::from_public_key_der(&p.spki_der()).unwrap();
    assert_eq!(parsed.to_sec1_bytes().as_ref(), point.as_slice());

    let p = generate_ec(Curve::P384).unwrap().public;
    assert!(p384::PublicKey::from_public_key_der(&p.spki_der()).is_ok());
    let p = generate_ec(Curve::Secp256k1).unwrap().public;
    assert!(k256::PublicKey::from_public_key_der(&p.spki_der()).is_ok());
    let p = generate_ed25519().unwrap().public;
    let PublicKey::Ed25519 { key } = &p else {
        unreachable!()
    };
    let parsed = ed25519_dalek::VerifyingKey::from_public_key_der(&p.spki_der()).unwrap();
    assert_eq!(parsed.as_bytes().as_slice(), key.as_slice());
}

#[test]
fn independent_ec_pkcs8_imports() {
    use p256::pkcs8::EncodePrivateKey;
    let mut scalar = [0u8; 32];
    scalar[31] = 7;
    let secret = p256::SecretKey::from_slice(&scalar).unwrap();
    let der = secret.to_pkcs8_der().unwrap();
    let (key_type, pair) = import_pkcs8(der.as_bytes()).unwrap();
    assert_eq!(key_type, ck::CKK_EC as u64);
    assert_eq!(pair.private.value().unwrap().as_slice(), scalar.as_slice());
    let PublicKey::Ec { point, .. } = &pair.public else {
        unreachable!()
    };
    assert_eq!(
        point.as_slice(),
        secret.public_key().to_sec1_bytes().as_ref()
    );
}

#[test]
fn ec_scalars_out_of_range_are_refused() {
    assert!(import_ec_private(Curve::P256, &[0u8; 32]).is_err());
    let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    assert!(import_ec_private(Curve::P256, &n).is_err());
    assert!(import_ec_private(Curve::P256, &[1u8; 33]).is_err());
    // Short values are left-padded; leading zeros are fine.
    let short = import_ec_private(Curve::P256, &[1]).unwrap();
    let mut padded = vec![0u8; 40];
    padded[39] = 1;
    assert_eq!(
        import_ec_private(Curve::P256, &padded).unwrap().public,
        short.public
    );
    let err = import_ec_private(Curve::P384, &[]).unwrap_err();
    assert_eq!(err.code, ErrorCode::AttributeValueInvalid);
}

#[test]
fn ed25519_keys_follow_rfc8032() {
    // RFC 8032, 7.1, test 1.
    let seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let public = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    let pair = import_ed25519_private(&seed).unwrap();
    assert_eq!(
        pair.public,
        PublicKey::Ed25519 {
            key: public.clone()
        }
    );
    assert_eq!(pair.private.value().unwrap().as_slice(), seed.as_slice());
    assert_eq!(pair.private.key_type(), ck::CKK_EC_EDWARDS as u64);
    assert_eq!(
        parse_material(&pair.material).unwrap().public(),
        Some(pair.public.clone())
    );
    assert!(import_ed25519_private(&seed[..31]).is_err());

    let generated = generate_ed25519().unwrap();
    let (kt, again) = import_pkcs8(&generated.private.wrap_payload()).unwrap();
    assert_eq!(kt, ck::CKK_EC_EDWARDS as u64);
    assert_eq!(again.public, generated.public);

    let mut printable = vec![0x13, 12];
    printable.extend_from_slice(b"edwards25519");
    let attr = generated.public.ec_point_attribute();
    assert_eq!(attr[..2], [0x04, 32]);
    assert_eq!(
        ec_public_from_attributes(&printable, &attr).unwrap(),
        generated.public
    );
    assert_eq!(generated.public.ec_params(), Some(der::ED25519_OID));
    sign_verify_works(generated.private, generated.public, ck::CKM_EDDSA as u64);
}

#[test]
fn rsa_components_round_trip_and_bad_keys_are_refused() {
    let pair = rsa2048();
    assert_eq!(pair.private.size_bits(), 2048);
    let c = pair.private.rsa_components().unwrap();
    assert_eq!(bit_len(&c.modulus), 2048);
    assert_eq!(c.public_exponent, vec![1, 0, 1]);
    let imported = import_rsa_private(&c).unwrap();
    assert_eq!(imported.public, pair.public);

    // Independent decoding of the PKCS#8 we wrap (the `rsa` crate) agrees on every component.
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let other = rsa::RsaPrivateKey::from_pkcs8_der(&pair.private.wrap_payload()).unwrap();
    assert_eq!(other.n().to_bytes_be(), c.modulus);
    assert_eq!(other.d().to_bytes_be(), c.private_exponent.to_vec());
    assert_eq!(other.primes()[0].to_bytes_be(), c.prime1.to_vec());
    assert_eq!(other.primes()[1].to_bytes_be(), c.prime2.to_vec());

    let mut bad = pair.private.rsa_components().unwrap();
    let last = bad.private_exponent.len() - 1;
    bad.private_exponent[last] ^= 2;
    assert_eq!(
        import_rsa_private(&bad).unwrap_err().code,
        ErrorCode::AttributeValueInvalid
    );
    let mut bad = pair.private.rsa_components().unwrap();
    bad.coefficient[0] ^= 0x40;
    assert!(import_rsa_private(&bad).is_err());

    let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let der = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&small).unwrap();
    assert_eq!(
        import_pkcs8(der.as_bytes()).unwrap_err().code,
        ErrorCode::KeySizeRange
    );
    let debug = format!("{c:?} {:?}", pair.private);
    assert!(!debug.contains(&hex::encode(&c.prime1[..8])));
}

#[test]
fn rsa_public_keys_and_material() {
    let pair = rsa2048();
    let PublicKey::Rsa {
        modulus, exponent, ..
    } = &pair.public
    else {
        panic!("not RSA");
    };
    assert_eq!(
        rsa_public_from_components(modulus, exponent).unwrap(),
        pair.public
    );
    assert!(rsa_public_from_components(&modulus[..128], exponent).is_err());
    assert!(pair.public.ec_point_attribute().is_empty());
    use rsa::pkcs8::DecodePublicKey;
    let parsed = rsa::RsaPublicKey::from_public_key_der(&pair.public.spki_der()).unwrap();
    use rsa::traits::PublicKeyParts;
    assert_eq!(&parsed.n().to_bytes_be(), modulus);

    let reloaded = parse_material(&pair.material).unwrap();
    assert_eq!(reloaded.public(), Some(pair.public.clone()));
    // The tag of earlier builds reads the same PKCS#8.
    let mut legacy = vec![2u8];
    legacy.extend_from_slice(&pair.private.wrap_payload());
    assert_eq!(
        parse_material(&legacy).unwrap().public(),
        Some(pair.public.clone())
    );
}

#[test]
fn legacy_p256_material_still_parses() {
    let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let mut material = vec![1u8];
    material.extend_from_slice(doc.as_ref());
    let key = parse_material(&material).unwrap();
    assert!(matches!(
        key,
        SecretKey::Ec {
            curve: Curve::P256,
            ..
        }
    ));
    let mut aes = vec![3u8];
    aes.extend_from_slice(&[9u8; 32]);
    assert_eq!(parse_material(&aes).unwrap().key_type(), ck::CKK_AES as u64);
    for bad in [&[][..], &[9, 1, 2], &[3, 1, 2, 3], &[4, 0x30, 0], &[5]] {
        assert_eq!(
            parse_material(bad).unwrap_err().code,
            ErrorCode::DeviceError
        );
    }
}

#[test]
fn secret_keys_lengths_values_and_check_values() {
    let aes = ck::CKK_AES as u64;
    let generic = ck::CKK_GENERIC_SECRET as u64;
    for len in [16, 24, 32] {
        let (key, material) = generate_secret(aes, len).unwrap();
        assert_eq!(key.size_bits(), len * 8);
        assert_eq!(key.value().unwrap().len(), len as usize);
        let again = parse_material(&material).unwrap();
        assert_eq!(again.value(), key.value());
    }
    for len in [0, 15, 33, 64] {
        assert_eq!(
            generate_secret(aes, len).unwrap_err().code,
            ErrorCode::KeySizeRange
        );
        assert_eq!(
            import_secret(aes, &vec![0; len as usize]).unwrap_err().code,
            ErrorCode::AttributeValueInvalid
        );
    }
    assert!(generate_secret(generic, 0).is_err());
    assert!(generate_secret(generic, 513).is_err());
    let (key, material) = generate_secret(generic, 1).unwrap();
    assert_eq!(key.key_type(), generic);
    assert_eq!(parse_material(&material).unwrap().value(), key.value());
    assert_eq!(
        generate_secret(ck::CKK_RSA as u64, 16).unwrap_err().code,
        ErrorCode::TemplateInconsistent
    );

    // AES-128 of the zero block under the zero key starts 66e94b (FIPS-197 derived, well known).
    let (zero, _) = import_secret(aes, &[0; 16]).unwrap();
    assert_eq!(zero.check_value(), Some(hex("66e94b")));
    // SHA-1("abc") = a9993e36...
    let (abc, _) = import_secret(generic, b"abc").unwrap();
    assert_eq!(abc.check_value(), Some(hex("a9993e")));
    assert_eq!(abc.wrap_payload().as_slice(), b"abc");
    assert!(abc.public().is_none());
    assert!(rsa2048().private.check_value().is_none());
    assert!(!format!("{abc:?}").contains("abc"));
}

#[test]
fn ec_points_are_checked() {
    let pair = generate_ec(Curve::P256).unwrap();
    let PublicKey::Ec { point, .. } = &pair.public else {
        unreachable!()
    };
    // Raw point accepted too.
    assert_eq!(
        ec_public_from_attributes(der::P256_OID, point).unwrap(),
        pair.public
    );
    let mut off_curve = point.clone();
    off_curve[64] ^= 1;
    assert_eq!(
        ec_public_from_attributes(der::P256_OID, &off_curve)
            .unwrap_err()
            .code,
        ErrorCode::AttributeValueInvalid
    );
    assert_eq!(
        ec_public_from_attributes(der::P384_OID, point)
            .unwrap_err()
            .code,
        ErrorCode::AttributeValueInvalid
    );
    assert_eq!(
        ec_public_from_attributes(&[0x06, 0x03, 0x2b, 0x65, 0x71], point)
            .unwrap_err()
            .code,
        ErrorCode::CurveNotSupported
    );
}
