//! The PKCS#11 module loaded through `cryptoki`, and helpers to assert on return codes.

use crate::build::artifacts;
use crate::cluster::Cluster;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::fmt::Debug;

/// The loaded and initialized module, and its slot.
#[derive(Debug)]
pub struct Token {
    /// The library context.
    pub ctx: Pkcs11,
    /// The (first) slot with a token.
    pub slot: Slot,
    /// `alice:password`.
    pub user_pin: String,
}

impl Token {
    /// Loads `libhsm_pkcs11.so` and calls `C_Initialize` (the module reads `$HSM_PKCS11_CONF`,
    /// which [`crate::isolated`] set for this process).
    ///
    /// # Panics
    /// If the configuration variable is not this cluster's, or loading fails.
    pub fn load(cluster: &Cluster) -> Token {
        let conf = std::env::var_os(hsm_proto::config::MODULE_CONFIG_ENV)
            .expect("HSM_PKCS11_CONF must be set (use hsm_tests::isolated)");
        let conf = std::path::Path::new(&conf);
        assert!(
            conf == cluster.module_config() || conf == cluster.admin_config(),
            "HSM_PKCS11_CONF points at another cluster"
        );
        Token::load_with_pin(&cluster.user_pin)
    }

    /// Loads the module for whatever `$HSM_PKCS11_CONF` names, with a user PIN.
    ///
    /// # Panics
    /// If loading or initializing fails.
    pub fn load_with_pin(user_pin: &str) -> Token {
        let ctx = Pkcs11::new(&artifacts().module).expect("load libhsm_pkcs11.so");
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        let slots = ctx.get_slots_with_token().expect("C_GetSlotList");
        assert!(!slots.is_empty(), "no slot with a token");
        Token {
            ctx,
            slot: slots[0],
            user_pin: user_pin.to_owned(),
        }
    }

    /// A new read-write session, not logged in.
    pub fn session(&self) -> Session {
        self.ctx.open_rw_session(self.slot).expect("C_OpenSession")
    }

    /// A new read-write session after logging in as the crypto user.
    pub fn user_session(&self) -> Session {
        let session = self.session();
        login_user(&session, &self.user_pin);
        session
    }
}

/// Logs a session in as a crypto user (`CKU_USER`).
///
/// # Panics
/// If login fails.
pub fn login_user(session: &Session, pin: &str) {
    session
        .login(UserType::User, Some(&AuthPin::from(pin.to_owned())))
        .expect("C_Login(CKU_USER)");
}

/// The PKCS#11 return code of a call that must fail.
///
/// # Panics
/// If the call succeeded or failed outside the module.
#[track_caller]
pub fn ckr<T: Debug>(result: cryptoki::error::Result<T>) -> RvError {
    match result {
        Err(Error::Pkcs11(rv, _)) => rv,
        Err(other) => panic!("expected a CKR_* error, got a wrapper error: {other}"),
        Ok(v) => panic!("expected a CKR_* error, got success: {v:?}"),
    }
}

/// Asserts that a call fails with exactly `expected`.
#[track_caller]
pub fn assert_ckr<T: Debug>(result: cryptoki::error::Result<T>, expected: RvError) {
    let got = ckr(result);
    assert_eq!(
        got, expected,
        "expected {expected:?} ({expected}), got {got:?} ({got})"
    );
}
