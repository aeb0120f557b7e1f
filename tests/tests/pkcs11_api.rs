//! Every PKCS#11 function of this slice, through the real module and `cryptoki`, each result
//! checked. Each test runs in its own process against its own cluster (see `isolated`).

use cryptoki::context::{CInitializeArgs, CInitializeFlags};
use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{SessionState, UserType};
use cryptoki::types::AuthPin;
use cryptoki_sys as ck;
use hsm_proto::mechlist::MECHANISMS;
use hsm_tests::keys::{
    P256_PARAMS, aes_key, attr_bytes, attr_info, by_label, ec_pair, find, rsa_pair, sha256,
    sha256_digest_info, unwrap_ec_point,
};
use hsm_tests::{assert_ckr, isolated};

fn pss_sha256() -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    }
}

#[test]
fn info_slots_mechanisms_initialize_finalize() {
    isolated(
        "info_slots_mechanisms_initialize_finalize",
        |_cluster, token| {
            let ctx = &token.ctx;
            let info = ctx.get_library_info().expect("C_GetInfo");
            assert!(
                info.cryptoki_version().major() >= 2,
                "{:?}",
                info.cryptoki_version()
            );
            assert!(!info.manufacturer_id().trim().is_empty());
            assert!(!info.library_description().trim().is_empty());

            let all = ctx.get_all_slots().expect("C_GetSlotList(FALSE)");
            let with_token = ctx.get_slots_with_token().expect("C_GetSlotList(TRUE)");
            assert!(!all.is_empty());
            assert!(with_token.iter().all(|s| all.contains(s)));
            let slot_info = ctx.get_slot_info(token.slot).expect("C_GetSlotInfo");
            assert!(slot_info.token_present());

            let token_info = ctx.get_token_info(token.slot).expect("C_GetTokenInfo");
            assert_eq!(token_info.label().trim_end(), "hsm-cluster");
            assert!(token_info.token_initialized());
            assert!(token_info.login_required());
            assert!(token_info.user_pin_initialized());
            assert!(token_info.rng());

            // The advertised list is exactly the shared table, and each row matches.
            let mut listed: Vec<u64> = ctx
                .get_mechanism_list(token.slot)
                .expect("C_GetMechanismList")
                .into_iter()
                .map(u64::from)
                .collect();
            listed.sort_unstable();
            // cryptoki 0.12 silently drops the mechanism types it has no name for (CKM_SHA224,
            // CKM_ECDSA_SHA224, CKM_AES_KEY_WRAP_KWP) from the list it returns; the raw C probe
            // sees the whole list. Compare what cryptoki can represent.
            let representable: Vec<_> = MECHANISMS
                .iter()
                .filter(|m| MechanismType::try_from(m.kind).is_ok())
                .collect();
            let mut expected: Vec<u64> = representable.iter().map(|m| m.kind).collect();
            expected.sort_unstable();
            assert_eq!(listed, expected);
            for row in representable {
                let mech = MechanismType::try_from(row.kind).expect("known mechanism");
                let mi = ctx
                    .get_mechanism_info(token.slot, mech)
                    .unwrap_or_else(|e| panic!("C_GetMechanismInfo({mech}): {e}"));
                assert_eq!(mi.min_key_size() as u64, row.min_key_size, "{mech}");
                assert_eq!(mi.max_key_size() as u64, row.max_key_size, "{mech}");
                let has = |flag: u64| row.flags & flag != 0;
                for (name, got, flag) in [
                    ("CKF_SIGN", mi.sign(), ck::CKF_SIGN),
                    ("CKF_VERIFY", mi.verify(), ck::CKF_VERIFY),
                    ("CKF_ENCRYPT", mi.encrypt(), ck::CKF_ENCRYPT),
                    ("CKF_DECRYPT", mi.decrypt(), ck::CKF_DECRYPT),
                    ("CKF_GENERATE", mi.generate(), ck::CKF_GENERATE),
                    (
                        "CKF_GENERATE_KEY_PAIR",
                        mi.generate_key_pair(),
                        ck::CKF_GENERATE_KEY_PAIR,
                    ),
                    (
                        "CKF_EC_UNCOMPRESS",
                        mi.ec_uncompressed(),
                        ck::CKF_EC_UNCOMPRESS,
                    ),
                ] {
                    assert_eq!(got, has(flag), "{mech} {name}");
                }
            }
            assert_ckr(
                ctx.get_mechanism_info(token.slot, MechanismType::DES3_ECB),
                RvError::MechanismInvalid,
            );

            // Finalize, then every call says not initialized until C_Initialize again.
            let again = ctx.clone();
            token.ctx.finalize().expect("C_Finalize");
            assert_ckr(again.get_all_slots(), RvError::CryptokiNotInitialized);
            again
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                .expect("C_Initialize after C_Finalize");
            assert_ckr(
                again.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)),
                RvError::CryptokiAlreadyInitialized,
            );
            let slot = again.get_slots_with_token().expect("slots")[0];
            let session = again.open_ro_session(slot).expect("session after re-init");
            assert_eq!(session.generate_random_vec(16).expect("random").len(), 16);
        },
    );
}

#[test]
fn sessions_states_login_logout() {
    isolated("sessions_states_login_logout", |_cluster, token| {
        let ro = token.ctx.open_ro_session(token.slot).expect("RO session");
        let rw = token.ctx.open_rw_session(token.slot).expect("RW session");
        let state = |s: &cryptoki::session::Session| {
            s.get_session_info()
                .expect("C_GetSessionInfo")
                .session_state()
        };
        let ro_info = ro.get_session_info().expect("C_GetSessionInfo");
        assert_eq!(ro_info.session_state(), SessionState::RoPublic);
        assert!(!ro_info.read_write());
        assert_eq!(ro_info.slot_id(), token.slot);
        assert_eq!(state(&rw), SessionState::RwPublic);
        assert!(rw.get_session_info().unwrap().read_write());

        // Login is for the application: every session sees it.
        rw.login(UserType::User, Some(&AuthPin::from(token.user_pin.clone())))
            .expect("C_Login");
        assert_eq!(state(&rw), SessionState::RwUser);
        assert_eq!(state(&ro), SessionState::RoUser);
        assert_ckr(
            ro.login(UserType::User, Some(&AuthPin::from(token.user_pin.clone()))),
            RvError::UserAlreadyLoggedIn,
        );
        let third = token
            .ctx
            .open_rw_session(token.slot)
            .expect("third session");
        assert_eq!(state(&third), SessionState::RwUser);

        rw.logout().expect("C_Logout");
        assert_eq!(state(&rw), SessionState::RwPublic);
        assert_eq!(state(&ro), SessionState::RoPublic);
        assert_ckr(rw.logout(), RvError::UserNotLoggedIn);

        // A closed session's handle is dead; others live on.
        let handle = third.handle();
        third.close().expect("C_CloseSession");
        assert_ne!(handle, ro.handle());
        assert_eq!(state(&ro), SessionState::RoPublic);
        ro.close().expect("C_CloseSession");
        rw.close().expect("C_CloseSession");
    });
}

#[test]
fn ec_p256_generate_sign_verify() {
    isolated("ec_p256_generate_sign_verify", |_cluster, token| {
        let s = token.user_session();
        let pair = ec_pair(&s, false, "ec-session", b"ec1");
        let attrs = s
            .get_attributes(
                pair.public,
                &[
                    AttributeType::Class,
                    AttributeType::KeyType,
                    AttributeType::Token,
                ],
            )
            .expect("attributes");
        assert_eq!(
            attrs,
            vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(false),
            ]
        );
        assert_eq!(
            attr_bytes(&s, pair.public, AttributeType::EcParams),
            P256_PARAMS
        );
        let point = unwrap_ec_point(&attr_bytes(&s, pair.public, AttributeType::EcPoint));
        assert_eq!(point.len(), 65);

        let msg = b"the quick brown fox";
        let digest = sha256(msg);
        // CKM_ECDSA on a digest the caller made (how OpenSSL and Java use it).
        let sig = s
            .sign(&Mechanism::Ecdsa, pair.private, &digest)
            .expect("C_Sign ECDSA");
        assert_eq!(sig.len(), 64, "r || s");
        s.verify(&Mechanism::Ecdsa, pair.public, &digest, &sig)
            .expect("C_Verify ECDSA");
        let mut bad = sig.clone();
        bad[10] ^= 0x01;
        assert_ckr(
            s.verify(&Mechanism::Ecdsa, pair.public, &digest, &bad),
            RvError::SignatureInvalid,
        );
        assert_ckr(
            s.verify(&Mechanism::Ecdsa, pair.public, &sha256(b"other"), &sig),
            RvError::SignatureInvalid,
        );

        // CKM_ECDSA_SHA256 hashes inside; its signature is one over the same digest.
        let sig2 = s
            .sign(&Mechanism::EcdsaSha256, pair.private, msg)
            .expect("C_Sign ECDSA_SHA256");
        assert_eq!(sig2.len(), 64);
        s.verify(&Mechanism::EcdsaSha256, pair.public, msg, &sig2)
            .expect("C_Verify ECDSA_SHA256");
        s.verify(&Mechanism::Ecdsa, pair.public, &digest, &sig2)
            .expect("ECDSA_SHA256 signature verifies as ECDSA over SHA-256");
        assert_ckr(
            s.verify(&Mechanism::EcdsaSha256, pair.public, b"tampered", &sig2),
            RvError::SignatureInvalid,
        );
        // ECDSA is randomized (or at least never reuses a nonce for a different message).
        assert_ne!(
            sig,
            s.sign(&Mechanism::Ecdsa, pair.private, &sha256(b"x"))
                .unwrap()
        );
    });
}

#[test]
fn rsa_2048_3072_generate_sign_verify() {
    isolated("rsa_2048_3072_generate_sign_verify", |_cluster, token| {
        let s = token.user_session();
        for bits in [2048u64, 3072] {
            let label = format!("rsa{bits}");
            let pair = rsa_pair(&s, bits, false, &label);
            let modulus = attr_bytes(&s, pair.public, AttributeType::Modulus);
            assert_eq!(modulus.len() as u64 * 8, bits);
            assert!(modulus[0] & 0x80 != 0, "full-length modulus");
            assert_eq!(
                attr_bytes(&s, pair.public, AttributeType::PublicExponent),
                vec![1, 0, 1]
            );
            let attrs = s
                .get_attributes(
                    pair.public,
                    &[AttributeType::ModulusBits, AttributeType::KeyType],
                )
                .expect("attributes");
            assert_eq!(
                attrs,
                vec![
                    Attribute::ModulusBits(bits.into()),
                    Attribute::KeyType(KeyType::RSA)
                ]
            );

            let msg = format!("message for {label}");
            let msg = msg.as_bytes();
            let info = sha256_digest_info(msg);
            let sig = s
                .sign(&Mechanism::RsaPkcs, pair.private, &info)
                .expect("RSA_PKCS");
            assert_eq!(sig.len() as u64 * 8, bits);
            s.verify(&Mechanism::RsaPkcs, pair.public, &info, &sig)
                .expect("verify RSA_PKCS");
            let sig2 = s
                .sign(&Mechanism::Sha256RsaPkcs, pair.private, msg)
                .expect("SHA256_RSA_PKCS");
            // PKCS#1 v1.5 is deterministic: hashing inside or outside gives the same bytes.
            assert_eq!(sig, sig2);
            s.verify(&Mechanism::Sha256RsaPkcs, pair.public, msg, &sig2)
                .expect("verify SHA256_RSA_PKCS");
            let mut bad = sig.clone();
            bad[5] ^= 0x40;
            assert_ckr(
                s.verify(&Mechanism::RsaPkcs, pair.public, &info, &bad),
                RvError::SignatureInvalid,
            );
            assert_ckr(
                s.verify(&Mechanism::Sha256RsaPkcs, pair.public, b"other", &sig2),
                RvError::SignatureInvalid,
            );

            let pss = Mechanism::Sha256RsaPkcsPss(pss_sha256());
            let p1 = s
                .sign(&pss, pair.private, msg)
                .expect("SHA256_RSA_PKCS_PSS");
            let p2 = s
                .sign(&pss, pair.private, msg)
                .expect("SHA256_RSA_PKCS_PSS");
            assert_eq!(p1.len() as u64 * 8, bits);
            assert_ne!(p1, p2, "PSS signatures carry a random salt");
            s.verify(&pss, pair.public, msg, &p1).expect("verify PSS");
            s.verify(&pss, pair.public, msg, &p2).expect("verify PSS");
            let mut bad = p1.clone();
            bad[20] ^= 0x01;
            assert_ckr(
                s.verify(&pss, pair.public, msg, &bad),
                RvError::SignatureInvalid,
            );
        }
    });
}

#[test]
fn rsa_4096_generate_sign_verify() {
    isolated("rsa_4096_generate_sign_verify", |_cluster, token| {
        let s = token.user_session();
        // The one RSA-4096 generation of the suite: it is slow.
        let pair = rsa_pair(&s, 4096, false, "rsa4096");
        assert_eq!(
            attr_bytes(&s, pair.public, AttributeType::Modulus).len(),
            512
        );
        let sig = s
            .sign(&Mechanism::Sha256RsaPkcs, pair.private, b"big key")
            .expect("sign");
        assert_eq!(sig.len(), 512);
        s.verify(&Mechanism::Sha256RsaPkcs, pair.public, b"big key", &sig)
            .expect("verify");
        let pss = Mechanism::Sha256RsaPkcsPss(pss_sha256());
        let p = s.sign(&pss, pair.private, b"big key").expect("PSS sign");
        s.verify(&pss, pair.public, b"big key", &p)
            .expect("PSS verify");
    });
}

#[test]
fn aes_gcm_generate_encrypt_decrypt() {
    isolated("aes_gcm_generate_encrypt_decrypt", |_cluster, token| {
        let s = token.user_session();
        let plaintext = b"attack at dawn, bring snacks".to_vec();
        let aad = b"header v1".to_vec();
        let mut other_key = None;
        for len in [16u64, 32] {
            let key = aes_key(&s, len, &format!("aes{len}"), &[Attribute::Sensitive(true)]);
            let attrs = s
                .get_attributes(
                    key,
                    &[
                        AttributeType::Class,
                        AttributeType::KeyType,
                        AttributeType::ValueLen,
                    ],
                )
                .expect("attributes");
            assert_eq!(
                attrs,
                vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(len.into()),
                ]
            );
            assert_eq!(attr_info(&s, key, &[AttributeType::Value]), ["Sensitive"]);

            let mut iv = [7u8; 12];
            let ct = s
                .encrypt(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv, &aad, 128.into()).unwrap()),
                    key,
                    &plaintext,
                )
                .expect("C_Encrypt AES_GCM");
            assert_eq!(ct.len(), plaintext.len() + 16, "ciphertext || 16-byte tag");
            assert_ne!(&ct[..plaintext.len()], plaintext.as_slice());
            let mut iv = [7u8; 12];
            let pt = s
                .decrypt(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv, &aad, 128.into()).unwrap()),
                    key,
                    &ct,
                )
                .expect("C_Decrypt AES_GCM");
            assert_eq!(pt, plaintext);

            // Tampered ciphertext, tag or AAD, or another key: refused, nothing returned.
            for (what, data, aad_used) in [
                ("ciphertext", flip(&ct, 0), aad.clone()),
                ("tag", flip(&ct, ct.len() - 1), aad.clone()),
                ("aad", ct.clone(), b"header v2".to_vec()),
            ] {
                let mut iv = [7u8; 12];
                let r = s.decrypt(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv, &aad_used, 128.into()).unwrap()),
                    key,
                    &data,
                );
                assert!(r.is_err(), "tampered {what} decrypted");
                assert_ckr(r, RvError::EncryptedDataInvalid);
            }
            if let Some(other) = other_key {
                let mut iv = [7u8; 12];
                assert_ckr(
                    s.decrypt(
                        &Mechanism::AesGcm(GcmParams::new(&mut iv, &aad, 128.into()).unwrap()),
                        other,
                        &ct,
                    ),
                    RvError::EncryptedDataInvalid,
                );
            }
            other_key = Some(key);
        }
    });
}

fn flip(data: &[u8], at: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    out[at] ^= 0x80;
    out
}

#[test]
fn generate_random() {
    isolated("generate_random", |_cluster, token| {
        // No login needed for random bytes.
        let s = token.session();
        let a = s.generate_random_vec(32).expect("C_GenerateRandom");
        let b = s.generate_random_vec(32).expect("C_GenerateRandom");
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        let mut big = vec![0u8; 65536];
        s.generate_random_slice(&mut big).expect("64 KiB");
        // Each byte value appears in 64 KiB of random data (probability of failure ~2^-360).
        let mut seen = [false; 256];
        for b in &big {
            seen[usize::from(*b)] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "64 KiB of output misses byte values"
        );
    });
}

#[test]
fn find_get_attributes_destroy() {
    isolated("find_get_attributes_destroy", |_cluster, token| {
        let s = token.user_session();
        let pair = ec_pair(&s, true, "find-me", &[1, 2, 3]);
        let aes = aes_key(
            &s,
            32,
            "other",
            &[Attribute::Token(true), Attribute::Id(vec![9])],
        );

        let mut both = find(&s, &by_label("find-me", None));
        both.sort_by_key(|h| h.handle());
        let mut expected = vec![pair.public, pair.private];
        expected.sort_by_key(|h| h.handle());
        assert_eq!(both, expected);
        assert_eq!(
            find(&s, &by_label("find-me", Some(ObjectClass::PRIVATE_KEY))),
            vec![pair.private]
        );
        assert_eq!(
            find(&s, &by_label("find-me", Some(ObjectClass::PUBLIC_KEY))),
            vec![pair.public]
        );
        assert_eq!(find(&s, &[Attribute::Id(vec![1, 2, 3])]).len(), 2);
        assert_eq!(find(&s, &[Attribute::Id(vec![9])]), vec![aes]);
        assert_eq!(
            find(&s, &[Attribute::Class(ObjectClass::SECRET_KEY)]),
            vec![aes]
        );
        assert!(find(&s, &by_label("nope", None)).is_empty());
        assert!(find(&s, &[]).len() >= 3);

        // Size query (NULL buffer), sensitive value, absent attribute.
        assert_eq!(
            attr_info(
                &s,
                pair.public,
                &[
                    AttributeType::EcPoint,
                    AttributeType::Modulus,
                    AttributeType::Label
                ]
            ),
            ["Available(67)", "TypeInvalid", "Available(7)"]
        );
        assert_eq!(
            attr_info(&s, pair.private, &[AttributeType::Value]),
            ["Sensitive"]
        );
        // The others are still filled when one is absent or sensitive.
        assert_eq!(
            s.get_attributes(
                pair.public,
                &[
                    AttributeType::Class,
                    AttributeType::Modulus,
                    AttributeType::Label
                ]
            )
            .expect("partial"),
            vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(b"find-me".to_vec())
            ]
        );
        assert_eq!(
            s.get_attributes(
                pair.private,
                &[
                    AttributeType::Value,
                    AttributeType::KeyType,
                    AttributeType::Sign
                ]
            )
            .expect("partial"),
            vec![Attribute::KeyType(KeyType::EC), Attribute::Sign(true)]
        );

        // Destroy: gone from searches, its handle dead.
        s.destroy_object(pair.private).expect("C_DestroyObject");
        assert_eq!(find(&s, &by_label("find-me", None)), vec![pair.public]);
        assert_ckr(
            s.get_attributes(pair.private, &[AttributeType::Class]),
            RvError::ObjectHandleInvalid,
        );
        assert_ckr(
            s.sign(&Mechanism::Ecdsa, pair.private, &sha256(b"x")),
            RvError::KeyHandleInvalid,
        );
        assert_ckr(s.destroy_object(pair.private), RvError::ObjectHandleInvalid);
        s.destroy_object(aes).expect("destroy AES key");
        assert!(find(&s, &[Attribute::Id(vec![9])]).is_empty());
    });
}
