//! EC and Edwards keys through the real module, checked with RustCrypto (`p256`, `p384`,
//! `p521`, `k256`, `ed25519-dalek`): generation on every curve with `CKA_EC_PARAMS` as the
//! named-curve OID and `CKA_EC_POINT` as a DER OCTET STRING, every ECDSA mechanism both ways
//! (HSM signs, crate verifies; crate signs, HSM verifies an imported public key), import of
//! private values per curve, and Ed25519 with RFC 8032's first test vector.

mod token_util;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use ed25519_dalek::{Signer, Verifier};
use hsm_tests::{assert_ckr, isolated};
use sha2::Digest;
use token_util::{
    CURVES, Checks, Curve, ED25519_NAME, ED25519_OID, bytes, curve_crate, ecdsa_prehash, h,
    octet_string, parse_octet_string,
};

type HashFn = fn(&[u8]) -> Vec<u8>;

fn sha1(d: &[u8]) -> Vec<u8> {
    sha1::Sha1::digest(d).to_vec()
}
fn sha224(d: &[u8]) -> Vec<u8> {
    sha2::Sha224::digest(d).to_vec()
}
fn sha256(d: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(d).to_vec()
}
fn sha384(d: &[u8]) -> Vec<u8> {
    sha2::Sha384::digest(d).to_vec()
}
fn sha512(d: &[u8]) -> Vec<u8> {
    sha2::Sha512::digest(d).to_vec()
}

/// The ECDSA mechanisms with the hash each applies (`None`: the caller's digest).
fn ecdsa_mechanisms() -> Vec<(&'static str, Mechanism<'static>, Option<HashFn>)> {
    vec![
        ("CKM_ECDSA", Mechanism::Ecdsa, None),
        ("CKM_ECDSA_SHA1", Mechanism::EcdsaSha1, Some(sha1 as HashFn)),
        ("CKM_ECDSA_SHA224", Mechanism::EcdsaSha224, Some(sha224)),
        ("CKM_ECDSA_SHA256", Mechanism::EcdsaSha256, Some(sha256)),
        ("CKM_ECDSA_SHA384", Mechanism::EcdsaSha384, Some(sha384)),
        ("CKM_ECDSA_SHA512", Mechanism::EcdsaSha512, Some(sha512)),
    ]
}

fn import_public(s: &Session, curve: &Curve, point: &[u8]) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(curve.params.to_vec()),
        Attribute::EcPoint(octet_string(point)),
        Attribute::Verify(true),
    ])
    .unwrap_or_else(|e| panic!("C_CreateObject({} public key): {e}", curve.name))
}

fn import_private(s: &Session, curve: &Curve, scalar: &[u8]) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(curve.params.to_vec()),
        Attribute::Value(scalar.to_vec()),
        Attribute::Sign(true),
    ])
    .unwrap_or_else(|e| panic!("C_CreateObject({} private key): {e}", curve.name))
}

#[test]
fn ecdsa_every_curve_every_hash_both_ways() {
    isolated(
        "ecdsa_every_curve_every_hash_both_ways",
        |_cluster, token| {
            let s = token.user_session();
            let msg = b"ECDSA on every curve of issue 3";
            let mut checks = Checks::new();
            for curve in &CURVES {
                let lib = curve_crate(curve);
                let mut hsm_pair = None;
                checks.run(&format!("CKM_EC_KEY_PAIR_GEN {}", curve.name), || {
                    let (public, private) = s
                        .generate_key_pair(
                            &Mechanism::EccKeyPairGen,
                            &[
                                Attribute::EcParams(curve.params.to_vec()),
                                Attribute::Verify(true),
                            ],
                            &[Attribute::Sign(true)],
                        )
                        .expect("C_GenerateKeyPair");
                    assert_eq!(bytes(&s, public, AttributeType::EcParams), curve.params);
                    assert_eq!(bytes(&s, private, AttributeType::EcParams), curve.params);
                    let der = bytes(&s, public, AttributeType::EcPoint);
                    let point = parse_octet_string(&der);
                    assert_eq!(point.len(), 1 + 2 * curve.field_len, "uncompressed point");
                    assert_eq!(point[0], 0x04, "uncompressed point");
                    hsm_pair = Some((public, private, point));
                });
                let Some((public, private, point)) = hsm_pair else {
                    continue;
                };
                // A key made by the crate, its public half imported.
                let (their_scalar, their_point) = (lib.random)();
                let their_public = import_public(&s, curve, &their_point);
                for (name, mech, hash) in ecdsa_mechanisms() {
                    checks.run(&format!("{name} {}", curve.name), || {
                        // CKM_ECDSA signs whatever digest it is given: try SHA-256's.
                        let (input, digest) = match hash {
                            Some(hash) => (msg.to_vec(), hash(msg)),
                            None => (sha256(msg), sha256(msg)),
                        };
                        let prehash = ecdsa_prehash(&digest, curve.field_len);
                        let sig = s.sign(&mech, private, &input).expect("C_Sign");
                        assert_eq!(sig.len(), 2 * curve.field_len, "r || s");
                        (lib.verify_prehash)(&point, &prehash, &sig)
                            .expect("the crate verifies the HSM's signature");
                        s.verify(&mech, public, &input, &sig)
                            .expect("the HSM verifies its own signature");
                        let theirs = (lib.sign_prehash)(&their_scalar, &prehash);
                        s.verify(&mech, their_public, &input, &theirs)
                            .expect("the HSM verifies the crate's signature");
                        let mut bad = theirs.clone();
                        bad[1] ^= 1;
                        assert_ckr(
                            s.verify(&mech, their_public, &input, &bad),
                            RvError::SignatureInvalid,
                        );
                        assert_ckr(
                            s.verify(&mech, their_public, &input, &theirs[1..]),
                            RvError::SignatureLenRange,
                        );
                    });
                }
                checks.run(
                    &format!("CKM_ECDSA {} on a SHA-512 digest", curve.name),
                    || {
                        let digest = sha512(msg);
                        let sig = s.sign(&Mechanism::Ecdsa, private, &digest).expect("C_Sign");
                        (lib.verify_prehash)(
                            &point,
                            &ecdsa_prehash(&digest, curve.field_len),
                            &sig,
                        )
                        .expect("the crate verifies");
                    },
                );
            }
            checks.finish();
        },
    );
}

#[test]
fn ec_private_value_import_per_curve() {
    isolated("ec_private_value_import_per_curve", |_cluster, token| {
        let s = token.user_session();
        let mut checks = Checks::new();
        for curve in &CURVES {
            let lib = curve_crate(curve);
            checks.run(&format!("import {} private key", curve.name), || {
                let (scalar, point) = (lib.random)();
                assert_eq!(scalar.len(), curve.field_len);
                let private = import_private(&s, curve, &scalar);
                assert_eq!(bytes(&s, private, AttributeType::EcParams), curve.params);
                assert_eq!(
                    hsm_tests::keys::attr_info(&s, private, &[AttributeType::Value]),
                    ["Sensitive"],
                    "an imported private key is sensitive by default"
                );
                let digest = sha256(b"imported");
                let sig = s
                    .sign(&Mechanism::Ecdsa, private, &digest)
                    .expect("C_Sign with the imported key");
                (lib.verify_prehash)(&point, &ecdsa_prehash(&digest, curve.field_len), &sig)
                    .expect("the crate verifies with the public key of the imported scalar");
            });
            checks.run(&format!("bad {} private values", curve.name), || {
                for (what, value) in [
                    ("zero", vec![0u8; curve.field_len]),
                    ("all ones (above the order)", vec![0xff; curve.field_len]),
                    ("too long", vec![1u8; curve.field_len + 8]),
                ] {
                    let r = s.create_object(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::KeyType(KeyType::EC),
                        Attribute::EcParams(curve.params.to_vec()),
                        Attribute::Value(value),
                        Attribute::Sign(true),
                    ]);
                    assert_eq!(
                        token_util::rv_of(r),
                        Some(RvError::AttributeValueInvalid),
                        "{what}"
                    );
                }
            });
        }
        checks.run("an unknown curve", || {
            // secp224r1 (1.3.132.0.33): not served.
            let r = s.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[Attribute::EcParams(vec![
                    0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x21,
                ])],
                &[Attribute::Sign(true)],
            );
            assert!(
                matches!(
                    token_util::rv_of(r),
                    Some(RvError::CurveNotSupported | RvError::AttributeValueInvalid)
                ),
                "an unsupported curve must be refused"
            );
        });
        checks.finish();
    });
}

/// RFC 8032 section 7.1, TEST 1.
const RFC8032_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const RFC8032_SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

fn eddsa() -> Mechanism<'static> {
    Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure))
}

#[test]
fn ed25519_generate_sign_and_rfc8032_vector() {
    isolated(
        "ed25519_generate_sign_and_rfc8032_vector",
        |_cluster, token| {
            let s = token.user_session();
            let mut checks = Checks::new();
            checks.run("CKM_EC_EDWARDS_KEY_PAIR_GEN + CKM_EDDSA", || {
                let (public, private) = s
                    .generate_key_pair(
                        &Mechanism::EccEdwardsKeyPairGen,
                        &[
                            Attribute::EcParams(ED25519_OID.to_vec()),
                            Attribute::Verify(true),
                        ],
                        &[Attribute::Sign(true)],
                    )
                    .expect("C_GenerateKeyPair(Ed25519)");
                assert_eq!(
                    token_util::attr(&s, public, AttributeType::KeyType),
                    Attribute::KeyType(KeyType::EC_EDWARDS)
                );
                assert_eq!(bytes(&s, public, AttributeType::EcParams), ED25519_OID);
                let point = parse_octet_string(&bytes(&s, public, AttributeType::EcPoint));
                assert_eq!(point.len(), 32);
                let vk = ed25519_dalek::VerifyingKey::from_bytes(
                    &point.clone().try_into().expect("32 bytes"),
                )
                .expect("a valid Ed25519 point");
                for msg in [&b""[..], b"abc", &[0x5a; 1000]] {
                    let sig = s.sign(&eddsa(), private, msg).expect("C_Sign(CKM_EDDSA)");
                    assert_eq!(sig.len(), 64);
                    let sig = ed25519_dalek::Signature::from_slice(&sig).expect("signature");
                    vk.verify(msg, &sig).expect("ed25519-dalek verifies");
                    s.verify(&eddsa(), public, msg, &sig.to_bytes())
                        .expect("C_Verify(CKM_EDDSA)");
                }
            });
            checks.run("CKA_EC_PARAMS as the curve name edwards25519", || {
                s.generate_key_pair(
                    &Mechanism::EccEdwardsKeyPairGen,
                    &[
                        Attribute::EcParams(ED25519_NAME.to_vec()),
                        Attribute::Verify(true),
                    ],
                    &[Attribute::Sign(true)],
                )
                .expect("C_GenerateKeyPair(Ed25519 by name)");
            });
            checks.run("RFC 8032 test 1 with an imported key", || {
                let private = s
                    .create_object(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::KeyType(KeyType::EC_EDWARDS),
                        Attribute::EcParams(ED25519_OID.to_vec()),
                        Attribute::Value(h(RFC8032_SECRET)),
                        Attribute::Sign(true),
                    ])
                    .expect("C_CreateObject(Ed25519 private key)");
                let sig = s.sign(&eddsa(), private, b"").expect("C_Sign(CKM_EDDSA)");
                assert_eq!(sig, h(RFC8032_SIG), "Ed25519 is deterministic");
                let public = s
                    .create_object(&[
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::KeyType(KeyType::EC_EDWARDS),
                        Attribute::EcParams(ED25519_OID.to_vec()),
                        Attribute::EcPoint(octet_string(&h(RFC8032_PUBLIC))),
                        Attribute::Verify(true),
                    ])
                    .expect("C_CreateObject(Ed25519 public key)");
                s.verify(&eddsa(), public, b"", &h(RFC8032_SIG))
                    .expect("C_Verify of the RFC signature");
                let mut bad = h(RFC8032_SIG);
                bad[63] ^= 0x01;
                assert_ckr(
                    s.verify(&eddsa(), public, b"", &bad),
                    RvError::SignatureInvalid,
                );
                assert_ckr(
                    s.verify(&eddsa(), public, b"x", &h(RFC8032_SIG)),
                    RvError::SignatureInvalid,
                );
            });
            checks.run("a signature by ed25519-dalek verifies in the HSM", || {
                let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
                let public = s
                    .create_object(&[
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::KeyType(KeyType::EC_EDWARDS),
                        Attribute::EcParams(ED25519_OID.to_vec()),
                        Attribute::EcPoint(octet_string(sk.verifying_key().as_bytes())),
                        Attribute::Verify(true),
                    ])
                    .expect("C_CreateObject(Ed25519 public key)");
                let sig = sk.sign(b"from dalek");
                s.verify(&eddsa(), public, b"from dalek", &sig.to_bytes())
                    .expect("C_Verify(CKM_EDDSA)");
            });
            checks.run("an Ed25519 key cannot do ECDSA", || {
                let (_, private) = s
                    .generate_key_pair(
                        &Mechanism::EccEdwardsKeyPairGen,
                        &[Attribute::EcParams(ED25519_OID.to_vec())],
                        &[Attribute::Sign(true)],
                    )
                    .expect("C_GenerateKeyPair(Ed25519)");
                assert_ckr(
                    s.sign(&Mechanism::Ecdsa, private, &[0; 32]),
                    RvError::KeyTypeInconsistent,
                );
            });
            checks.finish();
        },
    );
}
