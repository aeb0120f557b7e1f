//! Randomized mechanisms: round trips, and signatures/ciphertexts checked by an independent
//! implementation (RustCrypto `rsa`, `p256`, `p384`, `k256`, `ed25519-dalek`). Also the error
//! codes the spec assigns to misuse.

use super::*;
use OperationKind::{Decrypt, Encrypt, Sign, Verify};
use sha2::Digest as _;

fn rsa_public_rustcrypto() -> ::rsa::RsaPublicKey {
    let KeyRef::Public(p) = &rsa2048().1 else {
        unreachable!()
    };
    let keys::PublicKey::Rsa {
        modulus, exponent, ..
    } = p.as_ref()
    else {
        unreachable!()
    };
    ::rsa::RsaPublicKey::new(
        ::rsa::BigUint::from_bytes_be(modulus),
        ::rsa::BigUint::from_bytes_be(exponent),
    )
    .unwrap()
}

fn pss(
    kind: ck::CK_MECHANISM_TYPE,
    hash: ck::CK_MECHANISM_TYPE,
    mgf: ck::CK_RSA_PKCS_MGF_TYPE,
    salt: u64,
) -> Mechanism {
    mech(
        kind,
        MechanismParams::Pss {
            hash: hash as u64,
            mgf: mgf as u64,
            salt_len: salt,
        },
    )
}

#[test]
fn rsa_signatures_verify_independently() {
    let (sk, pk) = rsa2048();
    let other = rsa_public_rustcrypto();
    let msg = b"The quick brown fox jumps over the lazy dog";
    let h256 = sha2::Sha256::digest(msg);
    let h384 = sha2::Sha384::digest(msg);
    let h512 = sha2::Sha512::digest(msg);

    // Hash-and-sign, PKCS#1 v1.5, streamed.
    for (kind, scheme, hashed) in [
        (
            ck::CKM_SHA256_RSA_PKCS,
            ::rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            h256.to_vec(),
        ),
        (
            ck::CKM_SHA384_RSA_PKCS,
            ::rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
            h384.to_vec(),
        ),
        (
            ck::CKM_SHA512_RSA_PKCS,
            ::rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            h512.to_vec(),
        ),
    ] {
        let sig = run_chunked(Sign, sk, &plain(kind), msg, 5, None).unwrap();
        other.verify(scheme, &hashed, &sig).unwrap();
        verify(pk, &plain(kind), msg, &sig).unwrap();
        // The private key object verifies too (through its public half).
        verify(sk, &plain(kind), msg, &sig).unwrap();
        assert_eq!(
            code(verify(pk, &plain(kind), b"other", &sig)),
            ErrorCode::SignatureInvalid
        );
    }

    // CKM_RSA_PKCS over a DigestInfo equals the hashing mechanism (deterministic padding).
    let digest_info = [hex("3031300d060960864801650304020105000420"), h256.to_vec()].concat();
    let raw = run(Sign, sk, &plain(ck::CKM_RSA_PKCS), &digest_info).unwrap();
    let hashed = run(Sign, sk, &plain(ck::CKM_SHA256_RSA_PKCS), msg).unwrap();
    assert_eq!(raw, hashed);
    verify(pk, &plain(ck::CKM_RSA_PKCS), &digest_info, &raw).unwrap();
    // Any other input (a SHA-1 DigestInfo, or not a DigestInfo at all) is signed raw through
    // aws-lc's C API; the RustCrypto verifier checks the exact bytes that were signed.
    let sha1_info = [hex("3021300906052b0e03021a05000414"), vec![7; 20]].concat();
    for input in [sha1_info.as_slice(), b"not a digest info".as_slice()] {
        let sig = run(Sign, sk, &plain(ck::CKM_RSA_PKCS), input).unwrap();
        other
            .verify(::rsa::Pkcs1v15Sign::new_unprefixed(), input, &sig)
            .unwrap();
        verify(pk, &plain(ck::CKM_RSA_PKCS), input, &sig).unwrap();
        assert_eq!(
            code(verify(pk, &plain(ck::CKM_RSA_PKCS), b"other input", &sig)),
            ErrorCode::SignatureInvalid
        );
    }
    assert_eq!(
        code(run(Sign, sk, &plain(ck::CKM_RSA_PKCS), &[0; 300])),
        ErrorCode::DataLenRange
    );
    // SHA-1 and SHA-224 hash-and-sign: the signature opens to the DigestInfo of the hash.
    for (kind, info_prefix, hash) in [
        (
            ck::CKM_SHA1_RSA_PKCS,
            "3021300906052b0e03021a05000414",
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, msg),
        ),
        (
            ck::CKM_SHA224_RSA_PKCS,
            "302d300d06096086480165030402040500041c",
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA224, msg),
        ),
    ] {
        let sig = run_chunked(Sign, sk, &plain(kind), msg, 5, None).unwrap();
        let info = [hex(info_prefix), hash.as_ref().to_vec()].concat();
        other
            .verify(::rsa::Pkcs1v15Sign::new_unprefixed(), &info, &sig)
            .unwrap();
        verify(pk, &plain(kind), msg, &sig).unwrap();
        assert_eq!(
            code(verify(pk, &plain(kind), b"other", &sig)),
            ErrorCode::SignatureInvalid
        );
    }

    // PSS: prehashed and hashing, default and custom salt lengths.
    for salt in [32u64, 0, 20, 64, 222] {
        let m = pss(
            ck::CKM_RSA_PKCS_PSS,
            ck::CKM_SHA256,
            ck::CKG_MGF1_SHA256,
            salt,
        );
        let sig = run(Sign, sk, &m, &h256).unwrap();
        verify(pk, &m, &h256, &sig).unwrap();
        let hashing = pss(
            ck::CKM_SHA256_RSA_PKCS_PSS,
            ck::CKM_SHA256,
            ck::CKG_MGF1_SHA256,
            salt,
        );
        verify(pk, &hashing, msg, &sig).unwrap();
        let sig = run_chunked(Sign, sk, &hashing, msg, 3, None).unwrap();
        verify(pk, &m, &h256, &sig).unwrap();
        if salt == 32 {
            other
                .verify(::rsa::Pss::new::<sha2::Sha256>(), &h256, &sig)
                .unwrap();
        }
        // A different salt length does not verify.
        let wrong = pss(
            ck::CKM_RSA_PKCS_PSS,
            ck::CKM_SHA256,
            ck::CKG_MGF1_SHA256,
            salt + 1,
        );
        assert_eq!(
            code(verify(pk, &wrong, &h256, &sig)),
            ErrorCode::SignatureInvalid
        );
    }
    let m = pss(
        ck::CKM_SHA512_RSA_PKCS_PSS,
        ck::CKM_SHA512,
        ck::CKG_MGF1_SHA512,
        64,
    );
    let sig = run(Sign, sk, &m, msg).unwrap();
    other
        .verify(::rsa::Pss::new::<sha2::Sha512>(), &h512, &sig)
        .unwrap();
    let m = pss(
        ck::CKM_SHA384_RSA_PKCS_PSS,
        ck::CKM_SHA384,
        ck::CKG_MGF1_SHA384,
        48,
    );
    let sig = run(Sign, sk, &m, msg).unwrap();
    other
        .verify(::rsa::Pss::new::<sha2::Sha384>(), &h384, &sig)
        .unwrap();

    // PSS with SHA-1 and SHA-224 (through aws-lc's C API), prehashed and hashing.
    for (hash, mgf, alg, hashing) in [
        (
            ck::CKM_SHA_1,
            ck::CKG_MGF1_SHA1,
            &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            ck::CKM_SHA1_RSA_PKCS_PSS,
        ),
        (
            ck::CKM_SHA224,
            ck::CKG_MGF1_SHA224,
            &aws_lc_rs::digest::SHA224,
            ck::CKM_SHA224_RSA_PKCS_PSS,
        ),
    ] {
        let salt = alg.output_len as u64;
        let digest = aws_lc_rs::digest::digest(alg, msg);
        let pre = pss(ck::CKM_RSA_PKCS_PSS, hash, mgf, salt);
        let sig = run(Sign, sk, &pre, digest.as_ref()).unwrap();
        verify(pk, &pre, digest.as_ref(), &sig).unwrap();
        let full = pss(hashing, hash, mgf, salt);
        verify(pk, &full, msg, &sig).unwrap();
        let sig = run_chunked(Sign, sk, &full, msg, 7, None).unwrap();
        verify(pk, &pre, digest.as_ref(), &sig).unwrap();
        assert_eq!(
            code(verify(pk, &full, b"other", &sig)),
            ErrorCode::SignatureInvalid
        );
    }

    // PSS parameter errors.
    for bad in [
        pss(ck::CKM_RSA_PKCS_PSS, ck::CKM_SHA256, ck::CKG_MGF1_SHA1, 32),
        pss(ck::CKM_RSA_PKCS_PSS, ck::CKM_SHA_1, ck::CKG_MGF1_SHA256, 20),
        pss(
            ck::CKM_SHA256_RSA_PKCS_PSS,
            ck::CKM_SHA384,
            ck::CKG_MGF1_SHA384,
            48,
        ),
        pss(
            ck::CKM_RSA_PKCS_PSS,
            ck::CKM_SHA256,
            ck::CKG_MGF1_SHA256,
            223,
        ),
        pss(ck::CKM_RSA_PKCS_PSS, 0x1234, ck::CKG_MGF1_SHA256, 32),
        plain(ck::CKM_RSA_PKCS_PSS),
    ] {
        assert_eq!(
            code(start(Sign, sk.clone(), &bad)),
            ErrorCode::MechanismParamInvalid
        );
    }
    let m = pss(
        ck::CKM_RSA_PKCS_PSS,
        ck::CKM_SHA256,
        ck::CKG_MGF1_SHA256,
        32,
    );
    assert_eq!(
        code(run(Sign, sk, &m, &h256[..31])),
        ErrorCode::DataLenRange
    );
    assert_eq!(
        code(verify(pk, &m, &h256, &[0; 255])),
        ErrorCode::SignatureLenRange
    );
}

fn oaep(hash: ck::CK_MECHANISM_TYPE, mgf: ck::CK_RSA_PKCS_MGF_TYPE, label: &[u8]) -> Mechanism {
    mech(
        ck::CKM_RSA_PKCS_OAEP,
        MechanismParams::Oaep {
            hash: hash as u64,
            mgf: mgf as u64,
            label: label.to_vec(),
        },
    )
}

#[test]
fn rsa_encryption_round_trips_and_interoperates() {
    let (sk, pk) = rsa2048();
    let other = rsa_public_rustcrypto();
    let mut rng = ::rsa::rand_core::OsRng;
    for (hash, mgf) in [
        (ck::CKM_SHA_1, ck::CKG_MGF1_SHA1),
        (ck::CKM_SHA256, ck::CKG_MGF1_SHA256),
        (ck::CKM_SHA384, ck::CKG_MGF1_SHA384),
        (ck::CKM_SHA512, ck::CKG_MGF1_SHA512),
    ] {
        for label in [&b""[..], b"label"] {
            let m = oaep(hash, mgf, label);
            let ct = run(Encrypt, pk, &m, b"secret").unwrap();
            assert_eq!(ct.len(), 256);
            assert_eq!(
                run_chunked(Decrypt, sk, &m, &ct, 100, None).unwrap(),
                b"secret"
            );
            let wrong_label = oaep(hash, mgf, b"other");
            assert_eq!(
                code(run(Decrypt, sk, &wrong_label, &ct)),
                ErrorCode::EncryptedDataInvalid
            );
        }
    }
    // Encrypted by RustCrypto, decrypted here.
    let ct = other
        .encrypt(
            &mut rng,
            ::rsa::Oaep::new_with_label::<sha2::Sha256, _>("l"),
            b"hello",
        )
        .unwrap();
    let m = oaep(ck::CKM_SHA256, ck::CKG_MGF1_SHA256, b"l");
    assert_eq!(run(Decrypt, sk, &m, &ct).unwrap(), b"hello");
    let ct = other
        .encrypt(&mut rng, ::rsa::Pkcs1v15Encrypt, b"pkcs1")
        .unwrap();
    assert_eq!(
        run(Decrypt, sk, &plain(ck::CKM_RSA_PKCS), &ct).unwrap(),
        b"pkcs1"
    );
    let ct = run(Encrypt, pk, &plain(ck::CKM_RSA_PKCS), b"v15").unwrap();
    assert_eq!(
        run(Decrypt, sk, &plain(ck::CKM_RSA_PKCS), &ct).unwrap(),
        b"v15"
    );

    // Limits and parameters.
    let m = oaep(ck::CKM_SHA256, ck::CKG_MGF1_SHA256, b"");
    assert_eq!(
        code(run(Encrypt, pk, &m, &[0; 191])),
        ErrorCode::DataLenRange
    );
    assert!(run(Encrypt, pk, &m, &[0; 190]).is_ok());
    assert_eq!(
        code(run(Decrypt, sk, &m, &[0; 255])),
        ErrorCode::EncryptedDataLenRange
    );
    assert_eq!(
        code(run(Encrypt, pk, &plain(ck::CKM_RSA_PKCS), &[0; 246])),
        ErrorCode::DataLenRange
    );
    for bad in [
        oaep(ck::CKM_SHA256, ck::CKG_MGF1_SHA1, b""),
        oaep(ck::CKM_SHA224, ck::CKG_MGF1_SHA224, b""),
        plain(ck::CKM_RSA_PKCS_OAEP),
    ] {
        assert_eq!(
            code(start(Encrypt, pk.clone(), &bad)),
            ErrorCode::MechanismParamInvalid
        );
    }
    // Key kinds.
    assert_eq!(
        code(start(Decrypt, pk.clone(), &m)),
        ErrorCode::KeyTypeInconsistent
    );
    assert_eq!(
        code(start(Encrypt, aes(&[0; 16]), &m)),
        ErrorCode::KeyTypeInconsistent
    );

    // OAEP key wrapping.
    let wrapped = wrap(&m, pk, &[5; 32]).unwrap();
    assert_eq!(unwrap(&m, sk, &wrapped).unwrap().as_slice(), &[5; 32]);
    assert_eq!(code(wrap(&m, pk, &[5; 191])), ErrorCode::KeyNotWrappable);
    assert_eq!(
        code(unwrap(&m, sk, &wrapped[1..])),
        ErrorCode::WrappedKeyInvalid
    );
    assert_eq!(
        code(wrap(&plain(ck::CKM_RSA_PKCS), pk, &[5; 16])),
        ErrorCode::MechanismInvalid
    );
}

#[test]
fn ecdsa_signatures_verify_independently() {
    use keys::Curve;
    use p256::ecdsa::signature::Verifier;
    let msg = b"sign me";
    for curve in Curve::ALL {
        let pair = keys::generate_ec(curve).unwrap();
        let keys::PublicKey::Ec { point, .. } = &pair.public else {
            unreachable!()
        };
        let point = point.clone();
        let pk = public(&pair.public);
        let sk = secret(pair.private);
        let kinds = [
            ck::CKM_ECDSA_SHA1,
            ck::CKM_ECDSA_SHA224,
            ck::CKM_ECDSA_SHA256,
            ck::CKM_ECDSA_SHA384,
            ck::CKM_ECDSA_SHA512,
        ];
        for kind in kinds {
            let sig = run_chunked(Sign, &sk, &plain(kind), msg, 2, None).unwrap();
            assert_eq!(sig.len(), 2 * curve.scalar_len());
            verify(&pk, &plain(kind), msg, &sig).unwrap();
            assert_eq!(
                code(verify(&pk, &plain(kind), b"x", &sig)),
                ErrorCode::SignatureInvalid
            );
            assert_eq!(
                code(verify(&pk, &plain(kind), msg, &sig[1..])),
                ErrorCode::SignatureLenRange
            );
        }
        let sig = run(Sign, &sk, &plain(ck::CKM_ECDSA_SHA256), msg).unwrap();
        match curve {
            Curve::P256 => {
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
                vk.verify(msg, &p256::ecdsa::Signature::from_slice(&sig).unwrap())
                    .unwrap();
            }
            Curve::Secp256k1 => {
                let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
                let s = k256::ecdsa::Signature::from_slice(&sig).unwrap();
                vk.verify(msg, &s.normalize_s().unwrap_or(s)).unwrap();
            }
            Curve::P384 => {
                let sig = run(Sign, &sk, &plain(ck::CKM_ECDSA_SHA384), msg).unwrap();
                let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
                vk.verify(msg, &p384::ecdsa::Signature::from_slice(&sig).unwrap())
                    .unwrap();
            }
            Curve::P521 => {}
        }
        // Prehashed: a hash longer than the order is cut, a shorter one padded (SEC 1).
        let h = sha2::Sha512::digest(msg);
        let sig = run(Sign, &sk, &plain(ck::CKM_ECDSA), &h).unwrap();
        verify(&pk, &plain(ck::CKM_ECDSA_SHA512), msg, &sig).unwrap();
        let short = [1u8, 2, 3];
        let sig = run(Sign, &sk, &plain(ck::CKM_ECDSA), &short).unwrap();
        let mut padded = vec![0u8; curve.scalar_len().min(64) - 3];
        padded.extend_from_slice(&short);
        verify(&pk, &plain(ck::CKM_ECDSA), &padded, &sig).unwrap();
        assert_eq!(
            code(run(Sign, &sk, &plain(ck::CKM_ECDSA), b"")),
            ErrorCode::DataLenRange
        );
        assert_eq!(
            code(start(Sign, pk.clone(), &plain(ck::CKM_ECDSA))),
            ErrorCode::KeyTypeInconsistent
        );
    }
    // P-256 prehashed SHA-384: leftmost 256 bits; RustCrypto agrees.
    let pair = keys::generate_ec(Curve::P256).unwrap();
    let keys::PublicKey::Ec { point, .. } = &pair.public else {
        unreachable!()
    };
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).unwrap();
    let h = sha2::Sha384::digest(msg);
    let sig = run(Sign, &secret(pair.private), &plain(ck::CKM_ECDSA), &h).unwrap();
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    vk.verify_prehash(&h, &p256::ecdsa::Signature::from_slice(&sig).unwrap())
        .unwrap();
    // P-521 takes at most a 64-byte hash.
    let p521 = secret(keys::generate_ec(Curve::P521).unwrap().private);
    assert_eq!(
        code(run(Sign, &p521, &plain(ck::CKM_ECDSA), &[1; 65])),
        ErrorCode::DataLenRange
    );
}

#[test]
fn ed25519_signatures_verify_independently() {
    let pair = keys::generate_ed25519().unwrap();
    let keys::PublicKey::Ed25519 { key } = &pair.public else {
        unreachable!()
    };
    let vk = ed25519_dalek::VerifyingKey::from_bytes(key.as_slice().try_into().unwrap()).unwrap();
    let sk = secret(pair.private);
    let msg = vec![0x5a; 10_000];
    let sig = run_chunked(Sign, &sk, &plain(ck::CKM_EDDSA), &msg, 999, None).unwrap();
    let s = ed25519_dalek::Signature::from_bytes(sig.as_slice().try_into().unwrap());
    vk.verify_strict(&msg, &s).unwrap();
    verify(&sk, &plain(ck::CKM_EDDSA), &msg, &sig).unwrap();
    let ph = mech(
        ck::CKM_EDDSA,
        MechanismParams::Eddsa {
            prehash: true,
            context: vec![],
        },
    );
    assert_eq!(
        code(start(Sign, sk.clone(), &ph)),
        ErrorCode::MechanismParamInvalid
    );
}

fn ecdh(kdf: ck::CK_EC_KDF_TYPE, shared: &[u8], public_data: Vec<u8>) -> Mechanism {
    mech(
        ck::CKM_ECDH1_DERIVE,
        MechanismParams::Ecdh1Derive {
            kdf: kdf as u64,
            shared_data: shared.to_vec(),
            public_data,
        },
    )
}

#[test]
fn ecdh_both_sides_agree() {
    use keys::Curve;
    for curve in [Curve::P256, Curve::P384, Curve::P521] {
        let a = keys::generate_ec(curve).unwrap();
        let b = keys::generate_ec(curve).unwrap();
        let pa = a.public.ec_point_attribute();
        let keys::PublicKey::Ec { point: pb, .. } = &b.public else {
            unreachable!()
        };
        // One side passes the raw point, the other the DER OCTET STRING.
        let ab = derive(&ecdh(ck::CKD_NULL, &[], pb.clone()), &a.private).unwrap();
        let ba = derive(&ecdh(ck::CKD_NULL, &[], pa.clone()), &b.private).unwrap();
        assert_eq!(ab, ba);
        assert_eq!(ab.len(), curve.scalar_len());
        for kdf in [
            ck::CKD_SHA1_KDF,
            ck::CKD_SHA224_KDF,
            ck::CKD_SHA256_KDF,
            ck::CKD_SHA384_KDF,
            ck::CKD_SHA512_KDF,
        ] {
            let x = derive(&ecdh(kdf, b"info", pb.clone()), &a.private).unwrap();
            let y = derive(&ecdh(kdf, b"info", pa.clone()), &b.private).unwrap();
            assert_eq!(x, y);
            assert_eq!(x.len(), KDF_OUTPUT_LEN);
        }
        // The SHA-256 KDF is X9.63 over the CKD_NULL output.
        let k = derive(&ecdh(ck::CKD_SHA256_KDF, b"", pb.clone()), &a.private).unwrap();
        let expect = sha2::Sha256::new()
            .chain_update(&ab)
            .chain_update([0, 0, 0, 1])
            .finalize();
        assert_eq!(k[..32], expect[..]);

        assert_eq!(
            code(derive(&ecdh(ck::CKD_NULL, b"x", pb.clone()), &a.private)),
            ErrorCode::MechanismParamInvalid
        );
        assert_eq!(
            code(derive(&ecdh(99, b"", pb.clone()), &a.private)),
            ErrorCode::MechanismParamInvalid
        );
        let mut off = pb.clone();
        let last = off.len() - 1;
        off[last] ^= 1;
        assert_eq!(
            code(derive(&ecdh(ck::CKD_NULL, b"", off), &a.private)),
            ErrorCode::MechanismParamInvalid
        );
        assert_eq!(
            code(derive(
                &ecdh(ck::CKD_NULL, b"", pb[..10].to_vec()),
                &a.private
            )),
            ErrorCode::MechanismParamInvalid
        );
    }
    let k1 = keys::generate_ec(Curve::Secp256k1).unwrap();
    let other = keys::generate_ec(Curve::Secp256k1).unwrap();
    let keys::PublicKey::Ec { point, .. } = other.public else {
        unreachable!()
    };
    let keys::PublicKey::Ec {
        point: k1_point, ..
    } = k1.public.clone()
    else {
        unreachable!()
    };
    // secp256k1 goes through aws-lc's C API: both sides agree here too.
    assert_eq!(
        derive(&ecdh(ck::CKD_NULL, b"", point.clone()), &k1.private).unwrap(),
        derive(&ecdh(ck::CKD_NULL, b"", k1_point), &other.private).unwrap()
    );
    let aes_key = keys::import_secret(ck::CKK_AES as u64, &[0; 16]).unwrap().0;
    assert_eq!(
        code(derive(&ecdh(ck::CKD_NULL, b"", point), &aes_key)),
        ErrorCode::KeyTypeInconsistent
    );
    assert_eq!(
        code(derive(&plain(ck::CKM_ECDH1_DERIVE), &k1.private)),
        ErrorCode::MechanismParamInvalid
    );
}

fn gcm(iv: Vec<u8>, aad: &[u8]) -> Mechanism {
    mech(
        ck::CKM_AES_GCM,
        MechanismParams::Gcm {
            iv,
            aad: aad.to_vec(),
            tag_bits: 128,
        },
    )
}

fn gcm_generated(aad: &[u8]) -> Mechanism {
    mech(
        ck::CKM_AES_GCM,
        MechanismParams::GcmGeneratedIv {
            iv_len: 12,
            aad: aad.to_vec(),
            tag_bits: 128,
        },
    )
}

#[test]
fn aes_gcm_generated_iv_and_errors() {
    let key = aes(&[7; 32]);
    let started = start(Encrypt, key.clone(), &gcm_generated(b"aad")).unwrap();
    let iv = started.generated_iv.clone().unwrap();
    assert_eq!(iv.len(), 12);
    let mut op = started.op;
    assert!(op.update(b"hello ").unwrap().is_empty());
    op.update(b"world").unwrap();
    let ct = op.finish(None).unwrap();
    assert_eq!(
        run(Decrypt, &key, &gcm(iv.clone(), b"aad"), &ct).unwrap(),
        b"hello world"
    );
    let second = start(Encrypt, key.clone(), &gcm_generated(b"")).unwrap();
    assert_ne!(second.generated_iv.unwrap(), iv);

    assert_eq!(
        code(run(Decrypt, &key, &gcm(iv.clone(), b"aa"), &ct)),
        ErrorCode::EncryptedDataInvalid
    );
    assert_eq!(
        code(run(Decrypt, &key, &gcm(iv.clone(), b"aad"), &ct[..15])),
        ErrorCode::EncryptedDataLenRange
    );
    assert_eq!(
        code(start(Decrypt, key.clone(), &gcm_generated(b""))),
        ErrorCode::MechanismParamInvalid
    );
    assert_eq!(
        code(start(Encrypt, key.clone(), &gcm(vec![0; 16], b""))),
        ErrorCode::MechanismParamInvalid
    );
    let short_tag = mech(
        ck::CKM_AES_GCM,
        MechanismParams::Gcm {
            iv: vec![0; 12],
            aad: vec![],
            tag_bits: 96,
        },
    );
    assert_eq!(
        code(start(Encrypt, key.clone(), &short_tag)),
        ErrorCode::MechanismParamInvalid
    );
    assert_eq!(
        code(start(Encrypt, key.clone(), &plain(ck::CKM_AES_GCM))),
        ErrorCode::MechanismParamInvalid
    );
    assert_eq!(
        code(start(Encrypt, generic(&[0; 16]), &gcm(vec![0; 12], b""))),
        ErrorCode::KeyTypeInconsistent
    );
    // Empty plaintext: just a tag.
    assert_eq!(
        run(Encrypt, &key, &gcm(vec![1; 12], b""), b"")
            .unwrap()
            .len(),
        16
    );
}

#[test]
fn wrap_formats_round_trip() {
    let kek128 = aes(&[1; 16]);
    let kek256 = aes(&[2; 32]);
    let ec = keys::generate_ec(keys::Curve::P384).unwrap();
    let pkcs8 = ec.private.wrap_payload();
    for kek in [&kek128, &kek256] {
        for kind in [ck::CKM_AES_KEY_WRAP_PAD, ck::CKM_AES_KEY_WRAP_KWP] {
            let m = plain(kind);
            let w = wrap(&m, kek, &pkcs8).unwrap();
            let back = unwrap(&m, kek, &w).unwrap();
            let (kt, again) = keys::import_pkcs8(&back).unwrap();
            assert_eq!(kt, ck::CKK_EC as u64);
            assert_eq!(again.public, ec.public);
            for len in [1, 7, 8, 9, 16, 17] {
                let w = wrap(&m, kek, &vec![3; len]).unwrap();
                assert_eq!(w.len(), len.div_ceil(8) * 8 + 8);
                assert_eq!(unwrap(&m, kek, &w).unwrap().to_vec(), vec![3; len]);
            }
            assert_eq!(code(wrap(&m, kek, &[])), ErrorCode::KeyNotWrappable);
            let kwp_iv = mech(kind, MechanismParams::Bytes(vec![0xa6, 0x59, 0x59, 0xa6]));
            assert!(wrap(&kwp_iv, kek, &[1; 5]).is_ok());
        }
        // AES-GCM: with a caller IV the output is ciphertext || tag; with a generated IV the
        // IV comes first.
        let with_iv = gcm(vec![9; 12], b"hdr");
        let w = wrap(&with_iv, kek, &[4; 32]).unwrap();
        assert_eq!(w.len(), 48);
        assert_eq!(run(Decrypt, kek, &with_iv, &w).unwrap(), vec![4; 32]);
        assert_eq!(unwrap(&with_iv, kek, &w).unwrap().to_vec(), vec![4; 32]);
        let generated = gcm_generated(b"hdr");
        let w = wrap(&generated, kek, &[4; 32]).unwrap();
        assert_eq!(w.len(), 12 + 48);
        assert_eq!(unwrap(&generated, kek, &w).unwrap().to_vec(), vec![4; 32]);
        assert_eq!(
            unwrap(&gcm(w[..12].to_vec(), b"hdr"), kek, &w[12..])
                .unwrap()
                .to_vec(),
            vec![4; 32]
        );
        let mut bad = w.clone();
        bad[20] ^= 1;
        assert_eq!(
            code(unwrap(&generated, kek, &bad)),
            ErrorCode::WrappedKeyInvalid
        );
        assert_eq!(
            code(unwrap(&generated, kek, &w[..11])),
            ErrorCode::WrappedKeyInvalid
        );
    }
    assert_eq!(
        code(wrap(
            &plain(ck::CKM_AES_KEY_WRAP),
            &generic(&[0; 16]),
            &[0; 16]
        )),
        ErrorCode::KeyTypeInconsistent
    );
    assert_eq!(
        code(wrap(&plain(ck::CKM_AES_CBC), &kek128, &[0; 16])),
        ErrorCode::MechanismInvalid
    );
    assert_eq!(
        code(wrap(&plain(0xdead_beef), &kek128, &[0; 16])),
        ErrorCode::MechanismInvalid
    );
}

#[test]
fn aes_modes_stream_and_refuse_bad_input() {
    let key = aes(&[5; 16]);
    let iv = MechanismParams::Bytes(vec![6; 16]);
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    // CBC-PAD round trips every length, whatever the update sizes.
    let m = mech(ck::CKM_AES_CBC_PAD, iv.clone());
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 999] {
        let ct = run_chunked(Encrypt, &key, &m, &data[..len], 7, None).unwrap();
        assert_eq!(ct.len(), (len / 16 + 1) * 16);
        for chunk in [0, 1, 16, 17] {
            assert_eq!(
                run_chunked(Decrypt, &key, &m, &ct, chunk, None).unwrap(),
                &data[..len]
            );
        }
    }
    // Decryption with CBC-PAD holds the last block back.
    let ct = run(Encrypt, &key, &m, &data[..32]).unwrap();
    let mut op = start(Decrypt, key.clone(), &m).unwrap().op;
    assert_eq!(op.update(&ct[..16]).unwrap().len(), 0);
    assert_eq!(op.update(&ct[16..32]).unwrap().len(), 16);
    assert_eq!(op.update(&ct[32..]).unwrap().len(), 16);
    assert!(op.finish(None).unwrap().is_empty());
    // A corrupted last block: opaque failure.
    let mut bad = ct.clone();
    bad[40] ^= 0x55;
    assert_eq!(
        code(run(Decrypt, &key, &m, &bad)),
        ErrorCode::EncryptedDataInvalid
    );
    assert_eq!(
        code(run(Decrypt, &key, &m, &ct[..40])),
        ErrorCode::EncryptedDataLenRange
    );
    assert_eq!(
        code(run(Decrypt, &key, &m, &[])),
        ErrorCode::EncryptedDataLenRange
    );

    for kind in [ck::CKM_AES_CBC, ck::CKM_AES_ECB] {
        let m = if kind == ck::CKM_AES_CBC {
            mech(kind, iv.clone())
        } else {
            plain(kind)
        };
        assert_eq!(
            code(run(Encrypt, &key, &m, &data[..17])),
            ErrorCode::DataLenRange
        );
        assert_eq!(
            code(run(Decrypt, &key, &m, &data[..17])),
            ErrorCode::EncryptedDataLenRange
        );
        let ct = run_chunked(Encrypt, &key, &m, &data[..992], 13, None).unwrap();
        assert_eq!(
            run_chunked(Decrypt, &key, &m, &ct, 5, None).unwrap(),
            &data[..992]
        );
    }
    assert_eq!(
        code(start(
            Encrypt,
            key.clone(),
            &mech(ck::CKM_AES_CBC, MechanismParams::Bytes(vec![0; 8]))
        )),
        ErrorCode::MechanismParamInvalid
    );
    assert_eq!(
        code(start(Encrypt, key.clone(), &plain(ck::CKM_AES_CBC))),
        ErrorCode::MechanismParamInvalid
    );
    assert_eq!(
        code(start(
            Encrypt,
            key.clone(),
            &mech(ck::CKM_AES_ECB, iv.clone())
        )),
        ErrorCode::MechanismParamInvalid
    );
}

fn ctr(bits: u64, block: [u8; 16]) -> Mechanism {
    mech(
        ck::CKM_AES_CTR,
        MechanismParams::AesCtr {
            counter_bits: bits,
            block: block.to_vec(),
        },
    )
}

#[test]
fn aes_ctr_counter_rules() {
    let key = aes(&[8; 32]);
    for bits in [0, 129] {
        assert_eq!(
            code(start(Encrypt, key.clone(), &ctr(bits, [0; 16]))),
            ErrorCode::MechanismParamInvalid
        );
    }
    // 8 counter bits starting at 0xfe: two blocks, then the counter would wrap.
    let mut block = [0u8; 16];
    block[15] = 0xfe;
    let m = ctr(8, block);
    assert!(run(Encrypt, &key, &m, &[0; 32]).is_ok());
    assert_eq!(
        code(run(Encrypt, &key, &m, &[0; 33])),
        ErrorCode::DataLenRange
    );
    let mut op = start(Encrypt, key.clone(), &m).unwrap().op;
    op.update(&[0; 20]).unwrap();
    op.update(&[0; 12]).unwrap();
    assert_eq!(
        op.update(&[0; 1]).unwrap_err().code,
        ErrorCode::DataLenRange
    );
    // The counter carries within its bits: 0x11ff steps to 0x1200 with 16 counter bits.
    let mut block = [0u8; 16];
    block[14] = 0x11;
    block[15] = 0xff;
    let ks = run(Encrypt, &key, &ctr(16, block), &[0; 32]).unwrap();
    let mut next = block;
    next[14] = 0x12;
    next[15] = 0x00;
    let ecb = run(
        Encrypt,
        &key,
        &plain(ck::CKM_AES_ECB),
        &[block, next].concat(),
    )
    .unwrap();
    assert_eq!(ks, ecb);
    // With 128 counter bits the last block value is the end too.
    assert!(run(Encrypt, &key, &ctr(128, [0xff; 16]), &[0; 16]).is_ok());
    assert_eq!(
        code(run(Encrypt, &key, &ctr(128, [0xff; 16]), &[0; 17])),
        ErrorCode::DataLenRange
    );
    // A zero counter with 128 bits is effectively unlimited.
    assert!(run(Encrypt, &key, &ctr(128, [0; 16]), &[0; 4096]).is_ok());
}

#[test]
fn cmac_and_hmac_key_kinds() {
    assert_eq!(
        code(start(Sign, generic(&[0; 16]), &plain(ck::CKM_AES_CMAC))),
        ErrorCode::KeyTypeInconsistent
    );
    assert_eq!(
        code(start(Sign, aes(&[0; 16]), &plain(ck::CKM_SHA256_HMAC))),
        ErrorCode::KeyTypeInconsistent
    );
    assert_eq!(
        code(start(
            Sign,
            rsa2048().1.clone(),
            &plain(ck::CKM_SHA256_HMAC)
        )),
        ErrorCode::KeyTypeInconsistent
    );
    // A verify operation needs a signature, a sign operation must not get one.
    let op = start(Verify, generic(&[1; 32]), &plain(ck::CKM_SHA256_HMAC))
        .unwrap()
        .op;
    assert_eq!(op.finish(None).unwrap_err().code, ErrorCode::ArgumentsBad);
    let op = start(Sign, generic(&[1; 32]), &plain(ck::CKM_SHA256_HMAC))
        .unwrap()
        .op;
    assert_eq!(
        op.finish(Some(b"x")).unwrap_err().code,
        ErrorCode::ArgumentsBad
    );
    assert_eq!(
        code(start(Sign, aes(&[0; 16]), &plain(ck::CKM_AES_ECB))),
        ErrorCode::MechanismInvalid
    );
    assert_eq!(
        code(start(Sign, KeyRef::None, &plain(0x8000_0001))),
        ErrorCode::MechanismInvalid
    );
}

#[test]
fn pkcs7_unpadding_checks_every_padding_byte() {
    for pad in 0..=255u8 {
        let block = [pad; 16];
        let expect = (1..=16).contains(&pad).then(|| 16 - pad as usize);
        assert_eq!(aes::unpad_for_tests(&block), expect, "pad {pad}");
    }
    let mut block = [0u8; 16];
    block[12..].copy_from_slice(&[4, 4, 4, 4]);
    assert_eq!(aes::unpad_for_tests(&block), Some(12));
    block[12] = 5;
    assert_eq!(aes::unpad_for_tests(&block), None);
    block[12] = 4;
    block[11] = 4;
    assert_eq!(aes::unpad_for_tests(&block), Some(12));
}
