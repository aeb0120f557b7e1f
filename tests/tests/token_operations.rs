//! The operation state machine through the real module: `*Update`/`*Final` without `*Init`,
//! a second `*Init`, errors that end the operation, `CKR_BUFFER_TOO_SMALL` and size queries
//! that keep it (the raw C probe, since cryptoki sizes its buffers itself), bad mechanism
//! parameters and keys of the wrong type.

mod token_util;

use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType};
use cryptoki_sys as ck;
use hsm_tests::keys::{ec_pair, rsa_public_import};
use hsm_tests::token_probe::run_token_probe;
use hsm_tests::{assert_ckr, isolated};
use rsa::traits::PublicKeyParts;
use sha2::Digest;
use token_util::{Checks, aes_ctr, ctr_params, import_aes, import_secret, with_param};

#[test]
fn not_initialized_and_already_active() {
    isolated("not_initialized_and_already_active", |_cluster, token| {
        let s = token.user_session();
        let aes = import_aes(&s, &[1; 16], &[]);
        let pair = ec_pair(&s, false, "state", b"st");
        let nope = RvError::OperationNotInitialized;
        assert_ckr(s.sign_update(b"x"), nope);
        assert_ckr(s.sign_final(), nope);
        assert_ckr(s.verify_update(b"x"), nope);
        assert_ckr(s.verify_final(&[0; 64]), nope);
        assert_ckr(s.encrypt_update(b"x"), nope);
        assert_ckr(s.encrypt_final(), nope);
        assert_ckr(s.decrypt_update(b"x"), nope);
        assert_ckr(s.decrypt_final(), nope);
        assert_ckr(s.digest_update(b"x"), nope);
        assert_ckr(s.digest_final(), nope);
        assert_ckr(s.digest_key(aes), nope);

        // A second *Init while one is active; the first still completes.
        let active = RvError::OperationActive;
        s.sign_init(&Mechanism::EcdsaSha256, pair.private)
            .expect("C_SignInit");
        assert_ckr(s.sign_init(&Mechanism::EcdsaSha256, pair.private), active);
        s.sign_update(b"still").expect("C_SignUpdate");
        assert_eq!(s.sign_final().expect("C_SignFinal").len(), 64);
        s.verify_init(&Mechanism::Ecdsa, pair.public)
            .expect("C_VerifyInit");
        assert_ckr(s.verify_init(&Mechanism::Ecdsa, pair.public), active);
        assert_ckr(s.verify_final(&[0; 64]), nope);
        s.encrypt_init(&Mechanism::AesEcb, aes)
            .expect("C_EncryptInit");
        assert_ckr(s.encrypt_init(&Mechanism::AesEcb, aes), active);
        // (Multi-part output is token_multipart's subject: end with nothing fed.)
        assert_eq!(s.encrypt_final().expect("C_EncryptFinal"), Vec::<u8>::new());
        s.decrypt_init(&Mechanism::AesEcb, aes)
            .expect("C_DecryptInit");
        assert_ckr(s.decrypt_init(&Mechanism::AesEcb, aes), active);
        s.digest_init(&Mechanism::Sha256).expect("C_DigestInit");
        assert_ckr(s.digest_init(&Mechanism::Sha256), active);
        s.digest_update(b"abc").expect("C_DigestUpdate");
        assert_eq!(
            s.digest_final().expect("C_DigestFinal"),
            sha2::Sha256::digest(b"abc").to_vec()
        );
        // Operations of different kinds are active together: the decryption above is open.
        s.sign_init(&Mechanism::EcdsaSha256, pair.private)
            .expect("C_SignInit");
        s.encrypt_init(&Mechanism::AesEcb, aes)
            .expect("C_EncryptInit while a signature and a decryption are active");
        assert_eq!(s.decrypt_final().expect("C_DecryptFinal"), Vec::<u8>::new());
        assert_eq!(s.encrypt_final().expect("C_EncryptFinal"), Vec::<u8>::new());
        s.sign_update(b"together").expect("C_SignUpdate");
        assert_eq!(s.sign_final().expect("C_SignFinal").len(), 64);
    });
}

#[test]
fn an_error_ends_the_operation() {
    isolated("an_error_ends_the_operation", |_cluster, token| {
        let s = token.user_session();
        let aes = import_aes(&s, &[2; 32], &[]);
        let nope = RvError::OperationNotInitialized;
        let mut checks = Checks::new();
        checks.run("C_DecryptFinal of a tampered GCM ciphertext", || {
            let mut iv = [5u8; 12];
            let mut ct = s
                .encrypt(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap()),
                    aes,
                    b"authentic",
                )
                .expect("C_Encrypt");
            ct[0] ^= 1;
            let mut iv = [5u8; 12];
            s.decrypt_init(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap()),
                aes,
            )
            .expect("C_DecryptInit");
            let _ = s.decrypt_update(&ct).expect("C_DecryptUpdate");
            assert_ckr(s.decrypt_final(), RvError::EncryptedDataInvalid);
            assert_ckr(s.decrypt_final(), nope);
            // A new operation may start at once.
            s.decrypt_init(&Mechanism::AesEcb, aes)
                .expect("C_DecryptInit after the error");
            assert_eq!(s.decrypt_final().expect("C_DecryptFinal"), Vec::<u8>::new());
        });
        checks.run("C_EncryptFinal of a partial ECB block", || {
            s.encrypt_init(&Mechanism::AesEcb, aes)
                .expect("C_EncryptInit");
            let _ = s.encrypt_update(&[0; 15]);
            assert_ckr(s.encrypt_final(), RvError::DataLenRange);
            assert_ckr(s.encrypt_final(), nope);
            s.encrypt_init(&Mechanism::AesEcb, aes)
                .expect("C_EncryptInit after the error");
            assert_eq!(
                s.encrypt_final().expect("C_EncryptFinal of nothing"),
                Vec::<u8>::new()
            );
        });
        checks.run("C_VerifyFinal of a bad signature", || {
            let pair = ec_pair(&s, false, "verify-end", b"v");
            s.verify_init(&Mechanism::EcdsaSha256, pair.public)
                .expect("C_VerifyInit");
            s.verify_update(b"message").expect("C_VerifyUpdate");
            assert_ckr(s.verify_final(&[1; 64]), RvError::SignatureInvalid);
            assert_ckr(s.verify_final(&[1; 64]), nope);
            assert_ckr(s.verify_update(b"more"), nope);
        });
        checks.run("a failed C_SignInit leaves nothing active", || {
            let pair = ec_pair(&s, false, "sign-end", b"s");
            assert_ckr(
                s.sign_init(&Mechanism::Sha256RsaPkcs, pair.private),
                RvError::KeyTypeInconsistent,
            );
            s.sign_init(&Mechanism::EcdsaSha256, pair.private)
                .expect("C_SignInit after a failed C_SignInit");
            s.sign_update(b"x").expect("C_SignUpdate");
            assert_eq!(s.sign_final().expect("C_SignFinal").len(), 64);
        });
        checks.finish();
    });
}

#[test]
fn buffer_too_small_and_size_queries_keep_the_operation() {
    isolated(
        "buffer_too_small_and_size_queries_keep_the_operation",
        |cluster, token| {
            let p = run_token_probe(cluster, &token.user_pin, &["buffers"]);
            let mut checks = Checks::new();
            checks.run("multi-part AES-CBC-PAD encryption", || {
                p.assert_rv("enc_init_rv", ck::CKR_OK);
                p.assert_rv("enc_update_rv", ck::CKR_OK);
                p.assert_rv("enc_final_query_rv", ck::CKR_OK);
                p.assert_value("enc_final_query_len", "48");
                p.assert_rv("enc_final_zero_rv", ck::CKR_BUFFER_TOO_SMALL);
                p.assert_value("enc_final_zero_len", "48");
                p.assert_rv("enc_final_rv", ck::CKR_OK);
                p.assert_value("enc_total_len", "48");
                p.assert_rv("enc_final_again_rv", ck::CKR_OPERATION_NOT_INITIALIZED);
            });
            checks.run("single-part decryption", || {
                p.assert_rv("dec_init_rv", ck::CKR_OK);
                p.assert_rv("dec_query_rv", ck::CKR_OK);
                p.assert_value("dec_query_len_ok", "1");
                p.assert_rv("dec_too_small_rv", ck::CKR_BUFFER_TOO_SMALL);
                p.assert_rv("dec_rv", ck::CKR_OK);
                p.assert_value("dec_len", "40");
                p.assert_value("dec_roundtrip", "1");
                p.assert_rv("dec_again_rv", ck::CKR_OPERATION_NOT_INITIALIZED);
            });
            checks.run("C_EncryptUpdate size query does not consume input", || {
                p.assert_rv("ecb_init_rv", ck::CKR_OK);
                p.assert_rv("ecb_update_query_rv", ck::CKR_OK);
                p.assert_rv("ecb_update_rv", ck::CKR_OK);
                p.assert_rv("ecb_final_rv", ck::CKR_OK);
                p.assert_value("ecb_total_len", "16");
                p.assert_value("ecb_multi_equals_single", "1");
            });
            checks.run("multi-part HMAC: C_SignFinal too small", || {
                p.assert_rv("sign_init_rv", ck::CKR_OK);
                p.assert_rv("sign_update_rv", ck::CKR_OK);
                p.assert_rv("sign_update2_rv", ck::CKR_OK);
                p.assert_rv("sign_final_query_rv", ck::CKR_OK);
                p.assert_value("sign_final_query_len", "32");
                p.assert_rv("sign_final_too_small_rv", ck::CKR_BUFFER_TOO_SMALL);
                p.assert_value("sign_final_too_small_len", "32");
                p.assert_rv("sign_final_rv", ck::CKR_OK);
                p.assert_rv("sign_final_again_rv", ck::CKR_OPERATION_NOT_INITIALIZED);
                p.assert_value("sign_multi_equals_single", "1");
            });
            checks.run("digest: too small keeps C_Digest and C_DigestFinal", || {
                let expected = hex::encode(sha2::Sha256::digest((0u8..40).collect::<Vec<_>>()));
                p.assert_rv("digest_init_rv", ck::CKR_OK);
                p.assert_rv("digest_query_rv", ck::CKR_OK);
                p.assert_value("digest_query_len", "32");
                p.assert_rv("digest_too_small_rv", ck::CKR_BUFFER_TOO_SMALL);
                p.assert_value("digest_too_small_len", "32");
                p.assert_rv("digest_rv", ck::CKR_OK);
                p.assert_value("digest", &expected);
                p.assert_rv("digest_final_too_small_rv", ck::CKR_BUFFER_TOO_SMALL);
                p.assert_value("digest_final_too_small_len", "32");
                p.assert_rv("digest_final_rv", ck::CKR_OK);
                p.assert_value("digest_multi", &expected);
            });
            checks.run("C_WrapKey size query and too small", || {
                p.assert_rv("wrap_query_rv", ck::CKR_OK);
                p.assert_value("wrap_query_len", "24");
                p.assert_rv("wrap_too_small_rv", ck::CKR_BUFFER_TOO_SMALL);
                p.assert_value("wrap_too_small_len", "24");
                p.assert_rv("wrap_rv", ck::CKR_OK);
                p.assert_value("wrap_len", "24");
            });
            checks.finish();
        },
    );
}

#[test]
fn bad_parameters_are_mechanism_param_invalid() {
    isolated(
        "bad_parameters_are_mechanism_param_invalid",
        |_cluster, token| {
            let s = token.user_session();
            let aes = import_aes(&s, &[3; 16], &[]);
            let invalid = RvError::MechanismParamInvalid;
            let mut checks = Checks::new();
            checks.run("CKM_AES_GCM with an 8-byte IV", || {
                let mut iv = [1u8; 8];
                assert_ckr(
                    s.encrypt(
                        &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap()),
                        aes,
                        b"x",
                    ),
                    invalid,
                );
            });
            checks.run("CKM_AES_GCM without parameters", || {
                let m = Mechanism::VendorDefined(VendorDefinedMechanism::new::<u8>(
                    MechanismType::AES_GCM,
                    None,
                ));
                assert_ckr(s.encrypt(&m, aes, b"x"), invalid);
            });
            checks.run("CKM_AES_CBC with an 8-byte IV", || {
                let iv = [0u8; 8];
                assert_ckr(
                    s.encrypt(&with_param(MechanismType::AES_CBC, &iv), aes, &[0; 16]),
                    invalid,
                );
                assert_ckr(
                    s.decrypt(&with_param(MechanismType::AES_CBC_PAD, &iv), aes, &[0; 16]),
                    invalid,
                );
            });
            checks.run("CKM_AES_CBC without an IV", || {
                let m = Mechanism::VendorDefined(VendorDefinedMechanism::new::<u8>(
                    MechanismType::AES_CBC,
                    None,
                ));
                assert_ckr(s.encrypt(&m, aes, &[0; 16]), invalid);
            });
            checks.run("CKM_AES_CTR with 0 or 129 counter bits", || {
                for bits in [0u64, 129] {
                    let p = ctr_params(bits, [0; 16]);
                    assert_ckr(s.encrypt(&aes_ctr(&p), aes, b"x"), invalid);
                }
            });
            checks.run("CKM_AES_ECB with a parameter", || {
                let iv = [0u8; 16];
                assert_ckr(
                    s.encrypt(&with_param(MechanismType::AES_ECB, &iv), aes, &[0; 16]),
                    invalid,
                );
            });
            checks.run(
                "CKM_SHA256_RSA_PKCS_PSS with another hash in its parameters",
                || {
                    let key = token_util::rsa_test_key().to_public_key();
                    let public = s
                        .create_object(&rsa_public_import(
                            &key.n().to_bytes_be(),
                            &key.e().to_bytes_be(),
                            "pss-params",
                        ))
                        .expect("import");
                    let m = Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                        hash_alg: MechanismType::SHA384,
                        mgf: PkcsMgfType::MGF1_SHA384,
                        s_len: 48.into(),
                    });
                    assert_ckr(s.verify(&m, public, b"x", &[0; 256]), invalid);
                },
            );
            checks.finish();
        },
    );
}

#[test]
fn keys_of_the_wrong_type_or_gone() {
    isolated("keys_of_the_wrong_type_or_gone", |_cluster, token| {
        let s = token.user_session();
        let inconsistent = RvError::KeyTypeInconsistent;
        let aes = import_secret(
            &s,
            KeyType::AES,
            &[4; 16],
            &[Attribute::Sign(true), Attribute::Encrypt(true)],
        );
        let hmac = import_secret(
            &s,
            KeyType::GENERIC_SECRET,
            &[5; 32],
            &[Attribute::Sign(true), Attribute::Encrypt(true)],
        );
        let pair = ec_pair(&s, false, "types", b"t");
        let mut checks = Checks::new();
        checks.run("ECDSA with an AES key", || {
            assert_ckr(s.sign(&Mechanism::Ecdsa, aes, &[0; 32]), inconsistent);
        });
        checks.run("RSA PKCS#1 with an EC key", || {
            assert_ckr(
                s.sign(&Mechanism::Sha256RsaPkcs, pair.private, b"x"),
                inconsistent,
            );
        });
        checks.run("AES-CBC with a generic secret", || {
            assert_ckr(
                s.encrypt(&Mechanism::AesCbcPad([0; 16]), hmac, b"x"),
                inconsistent,
            );
        });
        checks.run("HMAC with an AES key", || {
            assert_ckr(s.sign(&Mechanism::Sha256Hmac, aes, b"x"), inconsistent);
        });
        checks.run("AES-CMAC with a generic secret", || {
            assert_ckr(s.sign(&Mechanism::AesCMac, hmac, b"x"), inconsistent);
        });
        checks.run("EdDSA with a P-256 key", || {
            assert_ckr(
                s.sign(
                    &Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                        cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
                    )),
                    pair.private,
                    b"x",
                ),
                inconsistent,
            );
        });
        checks.run("a destroyed key", || {
            let gone = import_aes(&s, &[6; 16], &[]);
            s.destroy_object(gone).expect("C_DestroyObject");
            assert_ckr(
                s.encrypt(&Mechanism::AesEcb, gone, &[0; 16]),
                RvError::KeyHandleInvalid,
            );
        });
        checks.finish();
    });
}
