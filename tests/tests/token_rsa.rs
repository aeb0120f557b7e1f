//! RSA through the real module, checked with the `rsa` crate: import of a private key with all
//! CRT components (a bad one refused and not stored), every PKCS#1 v1.5 and PSS signature
//! mechanism the token lists (PKCS#1 v1.5 is deterministic, so the HSM's signature must equal
//! the crate's byte for byte), OAEP and PKCS#1 v1.5 encryption both ways, and one generated
//! key pair. A mechanism the token does not list must be refused with
//! `CKR_MECHANISM_INVALID` (`token_mechanisms` reports what is missing).

mod token_util;

use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys as ck;
use hsm_tests::keys::find;
use hsm_tests::token_probe::run_token_probe;
use hsm_tests::{assert_ckr, isolated};
use rsa::rand_core::OsRng;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use sha2::Digest;
use token_util::{Checks, attr, bytes, flag, offered, offers, rsa_test_key};

#[derive(Clone, Copy, Debug)]
enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "SHA1",
            Hash::Sha224 => "SHA224",
            Hash::Sha256 => "SHA256",
            Hash::Sha384 => "SHA384",
            Hash::Sha512 => "SHA512",
        }
    }
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Hash::Sha224 => sha2::Sha224::digest(data).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
    fn len(self) -> usize {
        self.digest(b"").len()
    }
    fn pkcs1(self) -> Pkcs1v15Sign {
        match self {
            Hash::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
            Hash::Sha224 => Pkcs1v15Sign::new::<sha2::Sha224>(),
            Hash::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
            Hash::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
            Hash::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
        }
    }
    fn pss(self) -> Pss {
        match self {
            Hash::Sha1 => Pss::new::<sha1::Sha1>(),
            Hash::Sha224 => Pss::new::<sha2::Sha224>(),
            Hash::Sha256 => Pss::new::<sha2::Sha256>(),
            Hash::Sha384 => Pss::new::<sha2::Sha384>(),
            Hash::Sha512 => Pss::new::<sha2::Sha512>(),
        }
    }
    fn oaep(self, label: Option<&str>) -> Oaep {
        match (self, label) {
            (Hash::Sha1, None) => Oaep::new::<sha1::Sha1>(),
            (Hash::Sha224, None) => Oaep::new::<sha2::Sha224>(),
            (Hash::Sha256, None) => Oaep::new::<sha2::Sha256>(),
            (Hash::Sha384, None) => Oaep::new::<sha2::Sha384>(),
            (Hash::Sha512, None) => Oaep::new::<sha2::Sha512>(),
            (Hash::Sha1, Some(l)) => Oaep::new_with_label::<sha1::Sha1, _>(l),
            (Hash::Sha224, Some(l)) => Oaep::new_with_label::<sha2::Sha224, _>(l),
            (Hash::Sha256, Some(l)) => Oaep::new_with_label::<sha2::Sha256, _>(l),
            (Hash::Sha384, Some(l)) => Oaep::new_with_label::<sha2::Sha384, _>(l),
            (Hash::Sha512, Some(l)) => Oaep::new_with_label::<sha2::Sha512, _>(l),
        }
    }
    /// `CKM_SHA*` (the hash of PSS and OAEP parameters).
    fn ckm(self) -> MechanismType {
        match self {
            Hash::Sha1 => MechanismType::SHA1,
            Hash::Sha224 => MechanismType::SHA224,
            Hash::Sha256 => MechanismType::SHA256,
            Hash::Sha384 => MechanismType::SHA384,
            Hash::Sha512 => MechanismType::SHA512,
        }
    }
    fn mgf(self) -> PkcsMgfType {
        match self {
            Hash::Sha1 => PkcsMgfType::MGF1_SHA1,
            Hash::Sha224 => PkcsMgfType::MGF1_SHA224,
            Hash::Sha256 => PkcsMgfType::MGF1_SHA256,
            Hash::Sha384 => PkcsMgfType::MGF1_SHA384,
            Hash::Sha512 => PkcsMgfType::MGF1_SHA512,
        }
    }
    fn pss_params(self) -> PkcsPssParams {
        PkcsPssParams {
            hash_alg: self.ckm(),
            mgf: self.mgf(),
            s_len: (self.len() as u64).into(),
        }
    }
    /// `CKM_SHA*_RSA_PKCS`.
    fn rsa_pkcs(self) -> (ck::CK_MECHANISM_TYPE, Mechanism<'static>) {
        match self {
            Hash::Sha1 => (ck::CKM_SHA1_RSA_PKCS, Mechanism::Sha1RsaPkcs),
            Hash::Sha224 => (ck::CKM_SHA224_RSA_PKCS, Mechanism::Sha224RsaPkcs),
            Hash::Sha256 => (ck::CKM_SHA256_RSA_PKCS, Mechanism::Sha256RsaPkcs),
            Hash::Sha384 => (ck::CKM_SHA384_RSA_PKCS, Mechanism::Sha384RsaPkcs),
            Hash::Sha512 => (ck::CKM_SHA512_RSA_PKCS, Mechanism::Sha512RsaPkcs),
        }
    }
    /// `CKM_SHA*_RSA_PKCS_PSS` (`None`: cryptoki cannot build it; the probe signs).
    fn rsa_pss(self) -> (ck::CK_MECHANISM_TYPE, Option<Mechanism<'static>>) {
        let p = self.pss_params();
        match self {
            Hash::Sha1 => (
                ck::CKM_SHA1_RSA_PKCS_PSS,
                Some(Mechanism::Sha1RsaPkcsPss(p)),
            ),
            Hash::Sha224 => (ck::CKM_SHA224_RSA_PKCS_PSS, None),
            Hash::Sha256 => (
                ck::CKM_SHA256_RSA_PKCS_PSS,
                Some(Mechanism::Sha256RsaPkcsPss(p)),
            ),
            Hash::Sha384 => (
                ck::CKM_SHA384_RSA_PKCS_PSS,
                Some(Mechanism::Sha384RsaPkcsPss(p)),
            ),
            Hash::Sha512 => (
                ck::CKM_SHA512_RSA_PKCS_PSS,
                Some(Mechanism::Sha512RsaPkcsPss(p)),
            ),
        }
    }
}

fn be(n: &BigUint) -> Vec<u8> {
    n.to_bytes_be()
}

/// The template importing `key` as a private key with every CRT component.
fn private_template(key: &RsaPrivateKey, label: &str, token: bool) -> Vec<Attribute> {
    let primes = key.primes();
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(token),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Sign(true),
        Attribute::Decrypt(true),
        Attribute::Modulus(be(key.n())),
        Attribute::PublicExponent(be(key.e())),
        Attribute::PrivateExponent(be(key.d())),
        Attribute::Prime1(be(&primes[0])),
        Attribute::Prime2(be(&primes[1])),
        Attribute::Exponent1(be(key.dp().expect("dp"))),
        Attribute::Exponent2(be(key.dq().expect("dq"))),
        Attribute::Coefficient(key.crt_coefficient().expect("qinv").to_bytes_be()),
    ]
}

fn import_public(s: &Session, key: &RsaPublicKey) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Modulus(be(key.n())),
        Attribute::PublicExponent(be(key.e())),
        Attribute::Verify(true),
        Attribute::Encrypt(true),
    ])
    .expect("C_CreateObject(RSA public key)")
}

#[test]
fn rsa_crt_import_and_every_signature_mechanism() {
    isolated(
        "rsa_crt_import_and_every_signature_mechanism",
        |cluster, token| {
            rsa_signatures(
                cluster,
                &token,
                &[
                    Hash::Sha1,
                    Hash::Sha224,
                    Hash::Sha256,
                    Hash::Sha384,
                    Hash::Sha512,
                ],
            )
        },
    );
}

fn rsa_signatures(
    cluster: &mut hsm_tests::Cluster,
    token: &hsm_tests::token::Token,
    hashes: &[Hash],
) {
    let s = token.user_session();
    let list = offered(cluster, &token.user_pin);
    let key = rsa_test_key();
    let public = key.to_public_key();
    let private = s
        .create_object(&private_template(&key, "rsa-fixed", true))
        .expect("C_CreateObject(RSA private key with CRT components)");
    let pubh = import_public(&s, &public);
    assert_eq!(bytes(&s, private, AttributeType::Modulus), be(key.n()));
    assert_eq!(
        bytes(&s, private, AttributeType::PublicExponent),
        be(key.e())
    );
    assert_eq!(
        attr(&s, pubh, AttributeType::ModulusBits),
        Attribute::ModulusBits(2048.into())
    );
    // Imported private keys are sensitive by default: no component comes out.
    assert!(flag(&s, private, AttributeType::Sensitive));
    for ty in [
        AttributeType::PrivateExponent,
        AttributeType::Prime1,
        AttributeType::Coefficient,
    ] {
        assert_eq!(
            hsm_tests::keys::attr_info(&s, private, &[ty]),
            ["Sensitive"],
            "{ty}"
        );
    }

    let msg = b"RSA signature mechanisms of issue 3";
    let mut checks = Checks::new();
    for &hash in hashes {
        let digest = hash.digest(msg);
        let expected = key.sign(hash.pkcs1(), &digest).expect("rsa crate signs");
        // CKM_RSA_PKCS with the caller's DigestInfo.
        checks.run(&format!("CKM_RSA_PKCS DigestInfo({})", hash.name()), || {
            let mut info = hash.pkcs1().prefix.to_vec();
            info.extend_from_slice(&digest);
            let sig = s
                .sign(&Mechanism::RsaPkcs, private, &info)
                .expect("C_Sign(CKM_RSA_PKCS)");
            assert_eq!(sig, expected, "PKCS#1 v1.5 is deterministic");
            s.verify(&Mechanism::RsaPkcs, pubh, &info, &expected)
                .expect("C_Verify(CKM_RSA_PKCS) of the crate's signature");
        });
        // CKM_SHA*_RSA_PKCS.
        let (kind, mech) = hash.rsa_pkcs();
        checks.run(&format!("CKM_{}_RSA_PKCS", hash.name()), || {
            if offers(&list, kind, ck::CKF_SIGN) {
                let sig = s.sign(&mech, private, msg).expect("C_Sign");
                assert_eq!(sig, expected, "PKCS#1 v1.5 is deterministic");
            } else {
                assert_ckr(s.sign(&mech, private, msg), RvError::MechanismInvalid);
            }
            if offers(&list, kind, ck::CKF_VERIFY) {
                s.verify(&mech, pubh, msg, &expected)
                    .expect("C_Verify of the crate's signature");
                assert_ckr(
                    s.verify(&mech, pubh, b"other", &expected),
                    RvError::SignatureInvalid,
                );
            } else {
                assert_ckr(
                    s.verify(&mech, pubh, msg, &expected),
                    RvError::MechanismInvalid,
                );
            }
        });
        // CKM_RSA_PKCS_PSS on a digest.
        checks.run(&format!("CKM_RSA_PKCS_PSS ({})", hash.name()), || {
            let mech = Mechanism::RsaPkcsPss(hash.pss_params());
            let sig = s.sign(&mech, private, &digest).expect("C_Sign");
            public
                .verify(hash.pss(), &digest, &sig)
                .expect("the rsa crate verifies the HSM's PSS signature");
            let theirs = key
                .sign_with_rng(&mut OsRng, hash.pss(), &digest)
                .expect("rsa crate PSS");
            s.verify(&mech, pubh, &digest, &theirs)
                .expect("C_Verify of the crate's PSS signature");
        });
        // CKM_SHA*_RSA_PKCS_PSS.
        let (kind, mech) = hash.rsa_pss();
        checks.run(&format!("CKM_{}_RSA_PKCS_PSS", hash.name()), || {
            let listed = offers(&list, kind, ck::CKF_SIGN | ck::CKF_VERIFY);
            let sig = match &mech {
                Some(mech) if listed => s.sign(mech, private, msg).expect("C_Sign"),
                Some(mech) => {
                    assert_ckr(s.sign(mech, private, msg), RvError::MechanismInvalid);
                    return;
                }
                None => {
                    let p = run_token_probe(
                        cluster,
                        &token.user_pin,
                        &[
                            "sign-pss",
                            "rsa-fixed",
                            &format!("{kind:x}"),
                            &format!("{:x}", ck::CK_MECHANISM_TYPE::from(hash.ckm())),
                            &format!("{:x}", ck::CKG_MGF1_SHA224),
                            &hash.len().to_string(),
                            &hex::encode(msg),
                        ],
                    );
                    if !listed {
                        p.assert_rv("init_rv", ck::CKR_MECHANISM_INVALID);
                        return;
                    }
                    p.assert_rv("init_rv", ck::CKR_OK);
                    p.assert_rv("rv", ck::CKR_OK);
                    hex::decode(p.get("sig")).expect("hex")
                }
            };
            public
                .verify(hash.pss(), &digest, &sig)
                .expect("the rsa crate verifies the HSM's PSS signature");
            if let Some(mech) = &mech {
                let theirs = key
                    .sign_with_rng(&mut OsRng, hash.pss(), &digest)
                    .expect("rsa crate PSS");
                s.verify(mech, pubh, msg, &theirs)
                    .expect("C_Verify of the crate's PSS signature");
            }
        });
    }
    checks.run("CKM_RSA_X_509 only if listed", || {
        if !list.contains_key(&(ck::CKM_RSA_X_509 as u64)) {
            assert_ckr(
                s.sign(&Mechanism::RsaX509, private, &[1; 256]),
                RvError::MechanismInvalid,
            );
        }
    });
    checks.run("an RSA key cannot do ECDSA", || {
        assert_ckr(
            s.sign(&Mechanism::Ecdsa, private, &[0; 32]),
            RvError::KeyTypeInconsistent,
        );
    });
    checks.finish();
}

#[test]
fn rsa_oaep_and_pkcs1_encryption_both_ways() {
    isolated(
        "rsa_oaep_and_pkcs1_encryption_both_ways",
        |_cluster, token| {
            let s = token.user_session();
            let key = rsa_test_key();
            let public = key.to_public_key();
            let private = s
                .create_object(&private_template(&key, "rsa-enc", false))
                .expect("import");
            let pubh = import_public(&s, &public);
            let msg = b"a 32-byte AES key, say: 0123456";
            let mut checks = Checks::new();
            for hash in [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                for label in [None, Some("a label")] {
                    let source = match label {
                        Some(l) => PkcsOaepSource::data_specified(l.as_bytes()),
                        None => PkcsOaepSource::empty(),
                    };
                    let mech =
                        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash.ckm(), hash.mgf(), source));
                    checks.run(
                        &format!("CKM_RSA_PKCS_OAEP {} label {label:?}", hash.name()),
                        || {
                            let ct = public
                                .encrypt(&mut OsRng, hash.oaep(label), msg)
                                .expect("rsa crate OAEP");
                            assert_eq!(
                                s.decrypt(&mech, private, &ct).expect("C_Decrypt"),
                                msg,
                                "HSM decrypts the crate's OAEP"
                            );
                            let ct = s.encrypt(&mech, pubh, msg).expect("C_Encrypt");
                            assert_eq!(ct.len(), 256);
                            assert_eq!(
                                key.decrypt(hash.oaep(label), &ct)
                                    .expect("rsa crate decrypts"),
                                msg,
                                "the crate decrypts the HSM's OAEP"
                            );
                            // Another label: refused, nothing returned.
                            let other = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                                hash.ckm(),
                                hash.mgf(),
                                PkcsOaepSource::data_specified(b"wrong"),
                            ));
                            assert_ckr(
                                s.decrypt(&other, private, &ct),
                                RvError::EncryptedDataInvalid,
                            );
                        },
                    );
                }
            }
            checks.run("CKM_RSA_PKCS_OAEP message too long", || {
                let mech = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                    MechanismType::SHA256,
                    PkcsMgfType::MGF1_SHA256,
                    PkcsOaepSource::empty(),
                ));
                assert_ckr(s.encrypt(&mech, pubh, &[1; 200]), RvError::DataLenRange);
            });
            checks.run("CKM_RSA_PKCS encryption", || {
                let ct = public
                    .encrypt(&mut OsRng, Pkcs1v15Encrypt, msg)
                    .expect("rsa crate PKCS#1 v1.5");
                assert_eq!(
                    s.decrypt(&Mechanism::RsaPkcs, private, &ct)
                        .expect("C_Decrypt(CKM_RSA_PKCS)"),
                    msg
                );
                let ct = s
                    .encrypt(&Mechanism::RsaPkcs, pubh, msg)
                    .expect("C_Encrypt(CKM_RSA_PKCS)");
                assert_eq!(key.decrypt(Pkcs1v15Encrypt, &ct).expect("crate"), msg);
                // A ciphertext whose padding is wrong: refused without detail.
                let bad = public
                    .encrypt(&mut OsRng, hash_oaep_sha256(), msg)
                    .expect("an OAEP ciphertext");
                assert_ckr(
                    s.decrypt(&Mechanism::RsaPkcs, private, &bad),
                    RvError::EncryptedDataInvalid,
                );
                assert_ckr(
                    s.decrypt(&Mechanism::RsaPkcs, private, &[1; 100]),
                    RvError::EncryptedDataLenRange,
                );
            });
            checks.finish();
        },
    );
}

fn hash_oaep_sha256() -> Oaep {
    Oaep::new::<sha2::Sha256>()
}

#[test]
fn rsa_inconsistent_private_key_is_refused_and_not_stored() {
    isolated(
        "rsa_inconsistent_private_key_is_refused_and_not_stored",
        |_cluster, token| {
            let s = token.user_session();
            let key = rsa_test_key();
            // p * q != n: another prime-sized odd number in place of p.
            let mut template = private_template(&key, "bad-rsa", true);
            let p = &key.primes()[0] + BigUint::from(2u8);
            for a in &mut template {
                if let Attribute::Prime1(v) = a {
                    *v = p.to_bytes_be();
                }
            }
            assert_ckr(s.create_object(&template), RvError::AttributeValueInvalid);
            // A wrong private exponent.
            let mut template = private_template(&key, "bad-rsa", true);
            for a in &mut template {
                if let Attribute::PrivateExponent(v) = a {
                    *v = (key.d() + BigUint::from(2u8)).to_bytes_be();
                }
            }
            assert_ckr(s.create_object(&template), RvError::AttributeValueInvalid);
            // A modulus that does not match the primes.
            let mut template = private_template(&key, "bad-rsa", true);
            for a in &mut template {
                if let Attribute::Modulus(v) = a {
                    v[100] ^= 1;
                }
            }
            assert_ckr(s.create_object(&template), RvError::AttributeValueInvalid);
            assert!(
                find(&s, &[Attribute::Label(b"bad-rsa".to_vec())]).is_empty(),
                "a refused key was stored"
            );
            // The good one is accepted.
            s.create_object(&private_template(&key, "good-rsa", false))
                .expect("the consistent key imports");
        },
    );
}

#[test]
fn rsa_generated_key_pair_checked_with_the_rsa_crate() {
    isolated(
        "rsa_generated_key_pair_checked_with_the_rsa_crate",
        |_cluster, token| {
            let s = token.user_session();
            let (public, private) = s
                .generate_key_pair(
                    &Mechanism::RsaPkcsKeyPairGen,
                    &[
                        Attribute::ModulusBits(2048.into()),
                        Attribute::PublicExponent(vec![1, 0, 1]),
                        Attribute::Verify(true),
                        Attribute::Encrypt(true),
                    ],
                    &[Attribute::Sign(true), Attribute::Decrypt(true)],
                )
                .expect("C_GenerateKeyPair(RSA 2048)");
            for o in [public, private] {
                assert!(flag(&s, o, AttributeType::Local));
                assert_eq!(
                    attr(&s, o, AttributeType::KeyGenMechanism),
                    Attribute::KeyGenMechanism(MechanismType::RSA_PKCS_KEY_PAIR_GEN)
                );
            }
            let n = BigUint::from_bytes_be(&bytes(&s, public, AttributeType::Modulus));
            let e = BigUint::from_bytes_be(&bytes(&s, public, AttributeType::PublicExponent));
            assert_eq!(n.bits(), 2048);
            assert_eq!(bytes(&s, private, AttributeType::Modulus), n.to_bytes_be());
            let crate_key = RsaPublicKey::new(n, e).expect("valid public key");
            let msg = b"generated in the HSM";
            let sig = s
                .sign(&Mechanism::Sha256RsaPkcs, private, msg)
                .expect("C_Sign");
            crate_key
                .verify(Hash::Sha256.pkcs1(), &Hash::Sha256.digest(msg), &sig)
                .expect("rsa crate verifies");
            let ct = crate_key
                .encrypt(&mut OsRng, Oaep::new::<sha2::Sha256>(), msg)
                .expect("OAEP");
            let mech = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
                MechanismType::SHA256,
                PkcsMgfType::MGF1_SHA256,
                PkcsOaepSource::empty(),
            ));
            assert_eq!(s.decrypt(&mech, private, &ct).expect("C_Decrypt"), msg);
            // Sizes outside 2048..4096 are refused.
            let r = s.generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[Attribute::ModulusBits(1024.into())],
                &[Attribute::Sign(true)],
            );
            assert!(
                matches!(
                    token_util::rv_of(r),
                    Some(RvError::KeySizeRange | RvError::AttributeValueInvalid)
                ),
                "RSA-1024 generation was not refused with CKR_KEY_SIZE_RANGE"
            );
        },
    );
}
