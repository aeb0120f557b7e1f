//! Users through PKCS#11: `C_InitPIN` in an SO session creates (or resets) the crypto user
//! named in the PIN, who can then log in and use keys; `C_SetPIN` changes the logged-in
//! user's password (the old one stops working). `C_InitPIN` is an admin request: it needs the
//! admin certificate (the module loaded with `admin.toml`) as well as the SO login.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsm_tests::keys::{aes_key, by_label, find};
use hsm_tests::{assert_ckr, isolated, isolated_as_admin};
use std::time::{Duration, Instant};

fn pin(p: &str) -> AuthPin {
    AuthPin::from(p.to_owned())
}

fn login(s: &Session, user: UserType, p: &str) -> cryptoki::error::Result<()> {
    s.login(user, Some(&pin(p)))
}

#[test]
fn init_pin_creates_a_user_and_set_pin_changes_the_password() {
    isolated_as_admin(
        "init_pin_creates_a_user_and_set_pin_changes_the_password",
        |cluster, token| {
            let s = token.session();
            // C_InitPIN needs an SO session.
            assert_ckr(
                s.init_pin(&pin("bob:first-password")),
                RvError::UserNotLoggedIn,
            );
            login(&s, UserType::User, &token.user_pin).expect("C_Login(alice)");
            assert_ckr(
                s.init_pin(&pin("bob:first-password")),
                RvError::UserNotLoggedIn,
            );
            s.logout().expect("C_Logout");
            assert_ckr(
                login(&s, UserType::User, "bob:first-password"),
                RvError::PinIncorrect,
            );

            login(&s, UserType::So, &cluster.so_pin).expect("C_Login(CKU_SO)");
            s.init_pin(&pin("bob:first-password"))
                .expect("C_InitPIN creates bob");
            // The PIN must name the user.
            assert_ckr(s.init_pin(&pin("no-colon")), RvError::PinInvalid);
            s.logout().expect("C_Logout");

            // Bob logs in and uses keys of his own, which alice does not see.
            login(&s, UserType::User, "bob:first-password").expect("C_Login(bob)");
            let key = aes_key(
                &s,
                32,
                "bobs-key",
                &[Attribute::Token(true), Attribute::Private(true)],
            );
            s.encrypt(&Mechanism::AesEcb, key, &[0; 16])
                .expect("bob encrypts");

            // C_SetPIN: wrong old PIN refused, then the change.
            assert_ckr(
                s.set_pin(&pin("not-the-password"), &pin("second-password")),
                RvError::PinIncorrect,
            );
            s.set_pin(&pin("first-password"), &pin("second-password"))
                .expect("C_SetPIN");
            s.logout().expect("C_Logout");
            assert_ckr(
                login(&s, UserType::User, "bob:first-password"),
                RvError::PinIncorrect,
            );
            login(&s, UserType::User, "bob:second-password").expect("the new password works");
            assert_eq!(find(&s, &by_label("bobs-key", None)), vec![key]);
            // The name:password form works for C_SetPIN too.
            s.set_pin(&pin("bob:second-password"), &pin("bob:third-password"))
                .expect("C_SetPIN with name:password PINs");
            s.logout().expect("C_Logout");
            login(&s, UserType::User, "bob:third-password").expect("the third password works");
            s.logout().expect("C_Logout");

            login(&s, UserType::User, &token.user_pin).expect("C_Login(alice)");
            assert!(
                find(&s, &by_label("bobs-key", None)).is_empty(),
                "alice sees bob's private key"
            );
            s.logout().expect("C_Logout");

            // C_InitPIN on an existing crypto user resets the password.
            login(&s, UserType::So, &cluster.so_pin).expect("C_Login(CKU_SO)");
            s.init_pin(&pin("bob:reset-password"))
                .expect("C_InitPIN resets bob");
            // An admin is not a crypto user: C_InitPIN may not reset it.
            let admin = cluster.so_pin.split_once(':').expect("name:password").0;
            assert!(
                s.init_pin(&pin(&format!("{admin}:hijacked-password")))
                    .is_err(),
                "C_InitPIN changed the admin's password"
            );
            s.logout().expect("C_Logout");
            assert_ckr(
                login(&s, UserType::User, "bob:third-password"),
                RvError::PinIncorrect,
            );
            login(&s, UserType::User, "bob:reset-password").expect("the reset password works");
            s.logout().expect("C_Logout");
            login(&s, UserType::So, &cluster.so_pin).expect("the admin's password is intact");
        },
    );
}

#[test]
fn init_pin_through_the_application_certificate_is_refused() {
    isolated(
        "init_pin_through_the_application_certificate_is_refused",
        |cluster, token| {
            let s = token.session();
            // The admin's password is not enough: the module holds an application certificate.
            login(&s, UserType::So, &cluster.so_pin).expect("C_Login(CKU_SO)");
            assert_ckr(
                s.init_pin(&pin("bob:first-password")),
                RvError::UserNotLoggedIn,
            );
            s.logout().expect("C_Logout");
            assert_ckr(
                login(&s, UserType::User, "bob:first-password"),
                RvError::PinIncorrect,
            );
            // The module's log says why.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let log = std::fs::read_to_string(cluster.module_log_path()).unwrap_or_default();
                if log.contains("admin requests need an admin certificate (admin.toml)") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the module log does not say why C_InitPIN was refused:\n{log}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        },
    );
}
