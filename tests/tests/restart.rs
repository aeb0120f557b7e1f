//! Persistence: token objects survive a daemon restart (and unseal); session objects live only
//! as long as the session that made them.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use hsm_tests::keys::{aes_key, by_label, ec_pair, find, sha256};
use hsm_tests::{assert_ckr, isolated};

#[test]
fn token_objects_survive_restart_session_objects_do_not() {
    isolated(
        "token_objects_survive_restart_session_objects_do_not",
        |cluster, token| {
            let a = token.user_session();
            let persistent = ec_pair(&a, true, "persist", b"p1");
            let aes = aes_key(&a, 32, "persist-aes", &[Attribute::Token(true)]);
            let digest = sha256(b"before restart");
            let sig = a
                .sign(&Mechanism::Ecdsa, persistent.private, &digest)
                .expect("sign");
            let mut iv = [9u8; 12];
            let ct = a
                .encrypt(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap()),
                    aes,
                    b"kept secret",
                )
                .expect("encrypt");

            // A session object lives while its session does, visible to the application's
            // other sessions.
            let b = token.session();
            let ephemeral = ec_pair(&b, false, "ephemeral", b"e1");
            assert_eq!(find(&b, &by_label("ephemeral", None)).len(), 2);
            assert_eq!(find(&a, &by_label("ephemeral", None)).len(), 2);
            b.sign(&Mechanism::Ecdsa, ephemeral.private, &digest)
                .expect("session key signs");
            b.close().expect("C_CloseSession");
            assert!(
                find(&a, &by_label("ephemeral", None)).is_empty(),
                "session objects must die with their session"
            );
            assert_ckr(
                a.get_attributes(ephemeral.public, &[AttributeType::Class]),
                RvError::ObjectHandleInvalid,
            );
            let c = token.session();
            assert!(find(&c, &by_label("ephemeral", None)).is_empty());
            drop(c);
            drop(a);

            cluster.restart_sealed();
            cluster.unseal();

            let s = token.user_session();
            let private = find(&s, &by_label("persist", Some(ObjectClass::PRIVATE_KEY)));
            let public = find(&s, &by_label("persist", Some(ObjectClass::PUBLIC_KEY)));
            assert_eq!((private.len(), public.len()), (1, 1));
            s.verify(&Mechanism::Ecdsa, public[0], &digest, &sig)
                .expect("signature from before the restart verifies");
            let new_sig = s
                .sign(&Mechanism::Ecdsa, private[0], &digest)
                .expect("the restored private key signs");
            s.verify(&Mechanism::Ecdsa, public[0], &digest, &new_sig)
                .expect("and its signature verifies");
            let aes = find(&s, &by_label("persist-aes", None));
            assert_eq!(aes.len(), 1);
            let mut iv = [9u8; 12];
            let pt = s
                .decrypt(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap()),
                    aes[0],
                    &ct,
                )
                .expect("decrypt after restart");
            assert_eq!(pt, b"kept secret");
            assert!(find(&s, &by_label("ephemeral", None)).is_empty());
        },
    );
}
