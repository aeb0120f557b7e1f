//! Error paths through the module: each must give the spec's return code, never a crash or a
//! generic failure.

use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm_tests::keys::{aes_key, by_label, ec_pair, find, rsa_pair, sha256};
use hsm_tests::{assert_ckr, isolated, login_user};

#[test]
fn wrong_pin_and_no_login() {
    isolated("wrong_pin_and_no_login", |_cluster, token| {
        let s = token.session();
        let user = token.user_pin.split_once(':').unwrap().0.to_owned();
        for pin in [
            format!("{user}:wrong-password"),
            "nobody:whatever".to_owned(),
        ] {
            assert_ckr(
                s.login(UserType::User, Some(&AuthPin::from(pin))),
                RvError::PinIncorrect,
            );
        }
        // Still logged out: key generation and private-key use need a login.
        assert_ckr(
            s.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[Attribute::EcParams(hsm_tests::keys::P256_PARAMS.to_vec())],
                &[Attribute::Sign(true)],
            ),
            RvError::UserNotLoggedIn,
        );
        assert_ckr(
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[Attribute::ValueLen(32.into()), Attribute::Encrypt(true)],
            ),
            RvError::UserNotLoggedIn,
        );

        // A key made while logged in cannot be used after logout.
        login_user(&s, &token.user_pin);
        let pair = ec_pair(&s, false, "k", b"k");
        let aes = aes_key(&s, 16, "a", &[]);
        s.logout().expect("C_Logout");
        assert_ckr(
            s.sign(&Mechanism::Ecdsa, pair.private, &sha256(b"m")),
            RvError::UserNotLoggedIn,
        );
        let mut iv = [0u8; 12];
        assert_ckr(
            s.encrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap()),
                aes,
                b"data",
            ),
            RvError::UserNotLoggedIn,
        );
        // And after logging in again, it works.
        login_user(&s, &token.user_pin);
        s.sign(&Mechanism::Ecdsa, pair.private, &sha256(b"m"))
            .expect("sign after login");
    });
}

#[test]
fn bad_handles_and_operation_state() {
    isolated("bad_handles_and_operation_state", |_cluster, token| {
        let s = token.user_session();
        let pair = ec_pair(&s, false, "k", b"k");
        let digest = sha256(b"m");

        let aes = aes_key(&s, 16, "a", &[]);

        // An operation already initialized cannot be initialized again.
        s.sign_init(&Mechanism::Ecdsa, pair.private)
            .expect("C_SignInit");
        assert_ckr(
            s.sign_init(&Mechanism::Ecdsa, pair.private),
            RvError::OperationActive,
        );
        // `sign` starts with C_SignInit, which must fail the same way.
        assert_ckr(
            s.sign(&Mechanism::Ecdsa, pair.private, &digest),
            RvError::OperationActive,
        );
        let t = token.session();
        let mut iv = [1u8; 12];
        let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap());
        t.encrypt_init(&gcm, aes).expect("C_EncryptInit");
        assert_ckr(t.encrypt_init(&gcm, aes), RvError::OperationActive);

        // Another session is not affected by this one's active operations.
        let other = token.session();
        let doomed = ec_pair(&other, false, "doomed", b"d");
        other
            .sign(&Mechanism::Ecdsa, doomed.private, &digest)
            .expect("sign in another session");

        // A destroyed key's handle.
        other.destroy_object(doomed.private).expect("destroy");
        assert_ckr(
            other.sign(&Mechanism::Ecdsa, doomed.private, &digest),
            RvError::KeyHandleInvalid,
        );
        assert_ckr(
            other.verify(&Mechanism::Ecdsa, doomed.private, &digest, &[0; 64]),
            RvError::KeyHandleInvalid,
        );
        assert_ckr(
            other.get_attributes(doomed.private, &[AttributeType::Class]),
            RvError::ObjectHandleInvalid,
        );
        assert_ckr(
            other.destroy_object(doomed.private),
            RvError::ObjectHandleInvalid,
        );
    });
}

#[test]
fn unsupported_mechanisms() {
    isolated("unsupported_mechanisms", |_cluster, token| {
        let s = token.user_session();
        let rsa = rsa_pair(&s, 2048, false, "rsa");
        let aes = aes_key(&s, 32, "aes", &[]);
        // Raw RSA (no padding) is never offered, for signing or encryption; DES3-ECB is not
        // a mechanism we serve.
        assert_ckr(
            s.sign(&Mechanism::RsaX509, rsa.private, b"data"),
            RvError::MechanismInvalid,
        );
        assert_ckr(
            s.encrypt(&Mechanism::RsaX509, rsa.public, b"data"),
            RvError::MechanismInvalid,
        );
        assert_ckr(
            s.encrypt(&Mechanism::Des3Ecb, aes, b"data"),
            RvError::MechanismInvalid,
        );
        assert_ckr(
            s.generate_key(
                &Mechanism::Des3KeyGen,
                &[Attribute::Token(false), Attribute::Encrypt(true)],
            ),
            RvError::MechanismInvalid,
        );
        assert_ckr(
            token
                .ctx
                .get_mechanism_info(token.slot, MechanismType::RSA_X_509),
            RvError::MechanismInvalid,
        );
        // A listed mechanism with the wrong key type is a different error.
        let r = s.sign(&Mechanism::Ecdsa, rsa.private, &sha256(b"x"));
        assert_ckr(r, RvError::KeyTypeInconsistent);
    });
}

#[test]
fn sealed_node_gives_device_error_until_unsealed() {
    isolated(
        "sealed_node_gives_device_error_until_unsealed",
        |cluster, token| {
            let s = token.user_session();
            let pair = ec_pair(&s, true, "before-restart", b"br");
            let digest = sha256(b"m");
            let sig = s
                .sign(&Mechanism::Ecdsa, pair.private, &digest)
                .expect("sign");
            drop(s);

            cluster.restart_sealed();
            let status = cluster.hsmctl(&["status", "--dir", &cluster.dir.to_string_lossy()], &[]);
            assert!(String::from_utf8_lossy(&status.stdout).contains("SEALED"));

            // Sealed: a crypto call through the module is CKR_DEVICE_ERROR.
            let random = token
                .ctx
                .open_ro_session(token.slot)
                .and_then(|s| s.generate_random_vec(16));
            assert_ckr(random, RvError::DeviceError);
            let login = token.ctx.open_rw_session(token.slot).and_then(|s| {
                s.login(UserType::User, Some(&AuthPin::from(token.user_pin.clone())))
            });
            assert_ckr(login, RvError::DeviceError);

            // Unsealed again: everything works, the token key is back.
            cluster.unseal();
            let s = token.user_session();
            assert_eq!(s.generate_random_vec(16).expect("random").len(), 16);
            let found = find(
                &s,
                &by_label("before-restart", Some(ObjectClass::PUBLIC_KEY)),
            );
            assert_eq!(found.len(), 1);
            s.verify(&Mechanism::Ecdsa, found[0], &digest, &sig)
                .expect("old signature verifies with the key found after unseal");
        },
    );
}
