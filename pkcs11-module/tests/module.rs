//! The module's C functions called in-process through its function list.
//!
//! Part one needs nothing but the library: function tables, argument checks, the
//! not-initialized rule, configuration errors, and everything answered locally (slots,
//! sessions, login state, operation state) against a configuration whose node is unreachable.
//!
//! Part two runs when `HSM_PKCS11_CONF` and `HSM_PIN` name a running cluster (as
//! `source hsm-dev/env` sets them): keys, signatures, AES-GCM, the size-query protocol,
//! partial attribute fills, searches, random, sixteen threads at once.
//!
//! One test function: the module's state is process-global.
#![allow(unsafe_code)]

use cryptoki_sys as ck;
use std::ffi::c_void;
use std::ptr::{null, null_mut};

fn functions() -> &'static ck::CK_FUNCTION_LIST {
    let mut list: *mut ck::CK_FUNCTION_LIST = null_mut();
    // SAFETY: a valid out-pointer.
    let rv = unsafe { hsm_pkcs11::ffi::general::C_GetFunctionList(&mut list) };
    assert_eq!(rv, ck::CKR_OK);
    // SAFETY: the module returns a pointer to its immutable static list.
    unsafe { &*list }
}

/// Calls a function of the 2.40 list.
macro_rules! p11 {
    ($name:ident($($arg:expr),* $(,)?)) => {{
        let f = functions().$name.expect(stringify!($name));
        // SAFETY: every argument is a valid pointer to live test data, or NULL where the
        // test checks the module's NULL handling.
        unsafe { f($($arg),*) }
    }};
}

fn mech(kind: ck::CK_MECHANISM_TYPE) -> ck::CK_MECHANISM {
    ck::CK_MECHANISM {
        mechanism: kind,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

fn attr<T>(type_: ck::CK_ATTRIBUTE_TYPE, value: &T) -> ck::CK_ATTRIBUTE {
    ck::CK_ATTRIBUTE {
        type_,
        pValue: value as *const T as *mut c_void,
        ulValueLen: size_of::<T>() as ck::CK_ULONG,
    }
}

fn bytes_attr(type_: ck::CK_ATTRIBUTE_TYPE, value: &[u8]) -> ck::CK_ATTRIBUTE {
    ck::CK_ATTRIBUTE {
        type_,
        pValue: value.as_ptr() as *mut c_void,
        ulValueLen: value.len() as ck::CK_ULONG,
    }
}

fn set_conf(path: &std::path::Path) {
    // SAFETY: this test is the only thread of the process touching the environment.
    unsafe { std::env::set_var("HSM_PKCS11_CONF", path) };
}

#[test]
fn module() {
    let cluster = match (
        std::env::var_os("HSM_PKCS11_CONF"),
        std::env::var("HSM_PIN"),
    ) {
        (Some(conf), Ok(pin)) => Some((conf, pin)),
        _ => None,
    };
    tables();
    without_cluster();
    match cluster {
        Some((conf, pin)) => {
            set_conf(std::path::Path::new(&conf));
            with_cluster(&pin);
        }
        None => eprintln!("HSM_PKCS11_CONF/HSM_PIN not set: cluster part skipped"),
    }
}

fn tables() {
    let f = functions();
    assert_eq!((f.version.major, f.version.minor), (2, 40));
    // All 68 entries are set (the struct is 68 function pointers after the version).
    let entries: [Option<unsafe extern "C" fn()>; 68] =
        // SAFETY: CK_FUNCTION_LIST is a version followed by 68 nullable function pointers;
        // Option<fn> has the size of a pointer.
        unsafe { std::ptr::read((f as *const ck::CK_FUNCTION_LIST as *const u8).add(8).cast()) };
    assert!(entries.iter().all(Option::is_some));

    let mut count: ck::CK_ULONG = 0;
    // SAFETY: valid out-pointers.
    let rv = unsafe { hsm_pkcs11::ffi::general::C_GetInterfaceList(null_mut(), &mut count) };
    assert_eq!((rv, count), (ck::CKR_OK, 2));
    let mut list = [ck::CK_INTERFACE::default(); 2];
    // SAFETY: room for `count` interfaces.
    let rv = unsafe { hsm_pkcs11::ffi::general::C_GetInterfaceList(list.as_mut_ptr(), &mut count) };
    assert_eq!(rv, ck::CKR_OK);
    for i in &list {
        // SAFETY: the module's static, NUL-terminated name.
        let name = unsafe { std::ffi::CStr::from_ptr(i.pInterfaceName as *const _) };
        assert_eq!(name.to_str().unwrap(), "PKCS 11");
    }

    let get = |name: *const u8, version: Option<ck::CK_VERSION>, flags| {
        let mut version = version;
        let vp = version
            .as_mut()
            .map_or(null_mut(), |v| v as *mut ck::CK_VERSION);
        let mut iface: *mut ck::CK_INTERFACE = null_mut();
        // SAFETY: valid pointers or NULL.
        let rv = unsafe {
            hsm_pkcs11::ffi::general::C_GetInterface(name as *mut u8, vp, &mut iface, flags)
        };
        (rv, iface)
    };
    let (rv, iface) = get(null(), None, 0);
    assert_eq!(rv, ck::CKR_OK);
    // SAFETY: the module's static interface and 3.0 list.
    let v3 = unsafe { &*((*iface).pFunctionList as *const ck::CK_FUNCTION_LIST_3_0) };
    assert_eq!((v3.version.major, v3.version.minor), (3, 0));
    assert!(v3.C_LoginUser.is_some() && v3.C_MessageVerifyFinal.is_some());
    let v240 = Some(ck::CK_VERSION {
        major: 2,
        minor: 40,
    });
    let (rv, iface) = get(c"PKCS 11".as_ptr().cast(), v240, 0);
    assert_eq!(rv, ck::CKR_OK);
    // SAFETY: as above.
    let list = unsafe { &*((*iface).pFunctionList as *const ck::CK_FUNCTION_LIST) };
    assert_eq!((list.version.major, list.version.minor), (2, 40));
    assert_eq!(
        get(c"other".as_ptr().cast(), None, 0).0,
        ck::CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        get(null(), None, ck::CKF_INTERFACE_FORK_SAFE).0,
        ck::CKR_ARGUMENTS_BAD
    );
}

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("ca.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("app.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("app.key"), certified.signing_key.serialize_pem()).unwrap();
    let conf = dir.join("pkcs11.toml");
    std::fs::write(
        &conf,
        format!(
            "nodes = [\"127.0.0.1:1\"]\nca_cert = \"{0}/ca.pem\"\nclient_cert = \"{0}/app.pem\"\n\
             client_key = \"{0}/app.key\"\nrequest_timeout_ms = 2000\nfailover_timeout_ms = 2000\n{extra}",
            dir.display()
        ),
    )
    .unwrap();
    conf
}

fn without_cluster() {
    let dir = std::env::temp_dir().join(format!("hsm-pkcs11-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Nothing works before C_Initialize.
    let mut info = ck::CK_INFO::default();
    assert_eq!(p11!(C_GetInfo(&mut info)), ck::CKR_CRYPTOKI_NOT_INITIALIZED);
    let mut session: ck::CK_SESSION_HANDLE = 0;
    assert_eq!(
        p11!(C_OpenSession(
            0,
            ck::CKF_SERIAL_SESSION,
            null_mut(),
            None,
            &mut session
        )),
        ck::CKR_CRYPTOKI_NOT_INITIALIZED
    );
    assert_eq!(
        p11!(C_Finalize(null_mut())),
        ck::CKR_CRYPTOKI_NOT_INITIALIZED
    );
    assert_eq!(
        p11!(C_DigestInit(1, null_mut())),
        ck::CKR_CRYPTOKI_NOT_INITIALIZED
    );

    // Missing configuration.
    set_conf(&dir.join("missing.toml"));
    assert_eq!(p11!(C_Initialize(null_mut())), ck::CKR_GENERAL_ERROR);

    // Bad initialize arguments.
    let conf = write_config(&dir, "token_label = \"test token\"\n");
    set_conf(&conf);
    let mut args = ck::CK_C_INITIALIZE_ARGS {
        pReserved: std::ptr::dangling_mut::<c_void>(),
        ..Default::default()
    };
    let init = |args: &mut ck::CK_C_INITIALIZE_ARGS| {
        p11!(C_Initialize(
            args as *mut ck::CK_C_INITIALIZE_ARGS as *mut c_void
        ))
    };
    assert_eq!(init(&mut args), ck::CKR_ARGUMENTS_BAD);
    unsafe extern "C" fn create(_: *mut *mut c_void) -> ck::CK_RV {
        ck::CKR_OK
    }
    unsafe extern "C" fn other(_: *mut c_void) -> ck::CK_RV {
        ck::CKR_OK
    }
    args.pReserved = null_mut();
    args.CreateMutex = Some(create);
    assert_eq!(init(&mut args), ck::CKR_ARGUMENTS_BAD);
    args.DestroyMutex = Some(other);
    args.LockMutex = Some(other);
    args.UnlockMutex = Some(other);
    assert_eq!(init(&mut args), ck::CKR_CANT_LOCK);
    args.flags = ck::CKF_OS_LOCKING_OK;
    assert_eq!(init(&mut args), ck::CKR_OK);
    assert_eq!(
        p11!(C_Initialize(null_mut())),
        ck::CKR_CRYPTOKI_ALREADY_INITIALIZED
    );

    // Information, answered locally.
    assert_eq!(p11!(C_GetInfo(&mut info)), ck::CKR_OK);
    assert_eq!(
        (info.cryptokiVersion.major, info.cryptokiVersion.minor),
        (2, 40)
    );
    assert!(info.manufacturerID.iter().all(|b| *b != 0));
    let mut count: ck::CK_ULONG = 0;
    assert_eq!(
        p11!(C_GetSlotList(ck::CK_TRUE, null_mut(), &mut count)),
        ck::CKR_OK
    );
    assert_eq!(count, 1);
    let mut slots = [99 as ck::CK_SLOT_ID; 2];
    count = 0;
    assert_eq!(
        p11!(C_GetSlotList(ck::CK_FALSE, slots.as_mut_ptr(), &mut count)),
        ck::CKR_BUFFER_TOO_SMALL
    );
    count = 2;
    assert_eq!(
        p11!(C_GetSlotList(ck::CK_FALSE, slots.as_mut_ptr(), &mut count)),
        ck::CKR_OK
    );
    assert_eq!((count, slots[0]), (1, 0));
    let mut token = ck::CK_TOKEN_INFO::default();
    assert_eq!(p11!(C_GetTokenInfo(0, &mut token)), ck::CKR_OK);
    assert_eq!(&token.label[..12], b"test token  ");
    assert_eq!(token.ulMaxSessionCount, ck::CK_EFFECTIVELY_INFINITE);
    assert_eq!(p11!(C_GetTokenInfo(3, &mut token)), ck::CKR_SLOT_ID_INVALID);
    let mut mi = ck::CK_MECHANISM_INFO::default();
    assert_eq!(
        p11!(C_GetMechanismInfo(0, ck::CKM_ECDSA, &mut mi)),
        ck::CKR_OK
    );
    assert!(mi.flags & ck::CKF_SIGN != 0);
    assert_eq!(
        p11!(C_GetMechanismInfo(0, ck::CKM_DES_CBC, &mut mi)),
        ck::CKR_MECHANISM_INVALID
    );
    count = 0;
    assert_eq!(
        p11!(C_GetMechanismList(0, null_mut(), &mut count)),
        ck::CKR_OK
    );
    assert_eq!(count as usize, hsm_proto::mechlist::MECHANISMS.len());

    // Sessions, login state and operation state, answered locally.
    assert_eq!(
        p11!(C_OpenSession(
            0,
            ck::CKF_RW_SESSION,
            null_mut(),
            None,
            &mut session
        )),
        ck::CKR_SESSION_PARALLEL_NOT_SUPPORTED
    );
    assert_eq!(
        p11!(C_OpenSession(
            0,
            ck::CKF_SERIAL_SESSION,
            null_mut(),
            None,
            &mut session
        )),
        ck::CKR_OK
    );
    let mut si = ck::CK_SESSION_INFO::default();
    assert_eq!(p11!(C_GetSessionInfo(session, &mut si)), ck::CKR_OK);
    assert_eq!(si.state, ck::CKS_RO_PUBLIC_SESSION);
    assert_eq!(
        p11!(C_GetSessionInfo(session + 100, &mut si)),
        ck::CKR_SESSION_HANDLE_INVALID
    );
    let pin = b"alice:pw";
    let nopin = b"alice";
    assert_eq!(
        p11!(C_Login(session, ck::CKU_USER, null_mut(), 3)),
        ck::CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        p11!(C_Login(session, ck::CKU_USER, nopin.as_ptr() as *mut u8, 5)),
        ck::CKR_PIN_INCORRECT
    );
    assert_eq!(
        p11!(C_Login(
            session,
            ck::CKU_CONTEXT_SPECIFIC,
            pin.as_ptr() as *mut u8,
            8
        )),
        ck::CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        p11!(C_Login(session, 77, pin.as_ptr() as *mut u8, 8)),
        ck::CKR_USER_TYPE_INVALID
    );
    assert_eq!(
        p11!(C_Login(session, ck::CKU_SO, pin.as_ptr() as *mut u8, 8)),
        ck::CKR_SESSION_READ_ONLY_EXISTS
    );
    // The node is unreachable.
    assert_eq!(
        p11!(C_Login(session, ck::CKU_USER, pin.as_ptr() as *mut u8, 8)),
        ck::CKR_DEVICE_ERROR
    );
    assert_eq!(p11!(C_Logout(session)), ck::CKR_USER_NOT_LOGGED_IN);
    let mut found: ck::CK_ULONG = 0;
    let mut objects = [0 as ck::CK_OBJECT_HANDLE; 4];
    assert_eq!(
        p11!(C_FindObjects(session, objects.as_mut_ptr(), 4, &mut found)),
        ck::CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        p11!(C_FindObjectsFinal(session)),
        ck::CKR_OPERATION_NOT_INITIALIZED
    );
    // A template naming an unknown attribute matches nothing, without asking the node.
    let vendor = 1u8;
    let mut template = [attr(ck::CKA_VENDOR_DEFINED | 5, &vendor)];
    assert_eq!(
        p11!(C_FindObjectsInit(session, template.as_mut_ptr(), 1)),
        ck::CKR_OK
    );
    assert_eq!(
        p11!(C_FindObjectsInit(session, template.as_mut_ptr(), 1)),
        ck::CKR_OPERATION_ACTIVE
    );
    assert_eq!(
        p11!(C_FindObjects(session, objects.as_mut_ptr(), 4, &mut found)),
        ck::CKR_OK
    );
    assert_eq!(found, 0);
    assert_eq!(p11!(C_FindObjectsFinal(session)), ck::CKR_OK);
    let mut m = mech(ck::CKM_DES_CBC);
    assert_eq!(
        p11!(C_SignInit(session, &mut m, 1)),
        ck::CKR_MECHANISM_INVALID
    );
    let mut m = mech(ck::CKM_ECDSA);
    assert_eq!(
        p11!(C_SignInit(session, &mut m, 12345)),
        ck::CKR_KEY_HANDLE_INVALID
    );
    let mut m = mech(ck::CKM_AES_GCM);
    assert_eq!(
        p11!(C_EncryptInit(session, &mut m, 1)),
        ck::CKR_MECHANISM_PARAM_INVALID
    );
    let mut sig = [0u8; 64];
    let mut sig_len: ck::CK_ULONG = 64;
    let mut data = [1u8; 32];
    assert_eq!(
        p11!(C_Sign(
            session,
            data.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            &mut sig_len
        )),
        ck::CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(
        p11!(C_Sign(
            session,
            data.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            null_mut()
        )),
        ck::CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        p11!(C_SeedRandom(session, data.as_mut_ptr(), 32)),
        ck::CKR_OK
    );
    assert_eq!(
        p11!(C_GenerateRandom(session, data.as_mut_ptr(), 32)),
        ck::CKR_DEVICE_ERROR
    );
    let mut m = mech(ck::CKM_ECDSA);
    assert_eq!(
        p11!(C_DigestInit(session, &mut m)),
        ck::CKR_MECHANISM_INVALID
    );
    assert_eq!(
        p11!(C_SignRecoverInit(session, &mut m, 1)),
        ck::CKR_FUNCTION_NOT_SUPPORTED
    );
    assert_eq!(
        p11!(C_GetFunctionStatus(session)),
        ck::CKR_FUNCTION_NOT_PARALLEL
    );
    assert_eq!(p11!(C_CloseSession(session)), ck::CKR_OK);
    assert_eq!(
        p11!(C_CloseSession(session)),
        ck::CKR_SESSION_HANDLE_INVALID
    );

    // Finalize, and initialize again.
    assert_eq!(
        p11!(C_Finalize(std::ptr::dangling_mut::<c_void>())),
        ck::CKR_ARGUMENTS_BAD
    );
    assert_eq!(p11!(C_Finalize(null_mut())), ck::CKR_OK);
    assert_eq!(
        p11!(C_Finalize(null_mut())),
        ck::CKR_CRYPTOKI_NOT_INITIALIZED
    );

    // Several threads initialize at once: exactly one wins.
    let results: Vec<ck::CK_RV> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| p11!(C_Initialize(null_mut()))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| **r == ck::CKR_OK).count(), 1);
    assert!(
        results
            .iter()
            .all(|r| *r == ck::CKR_OK || *r == ck::CKR_CRYPTOKI_ALREADY_INITIALIZED)
    );
    assert_eq!(p11!(C_Finalize(null_mut())), ck::CKR_OK);
    let _ = std::fs::remove_dir_all(&dir);
}

fn open_logged_in(pin: &str) -> ck::CK_SESSION_HANDLE {
    let mut session: ck::CK_SESSION_HANDLE = 0;
    let flags = ck::CKF_SERIAL_SESSION | ck::CKF_RW_SESSION;
    assert_eq!(
        p11!(C_OpenSession(0, flags, null_mut(), None, &mut session)),
        ck::CKR_OK
    );
    let rv = p11!(C_Login(
        session,
        ck::CKU_USER,
        pin.as_ptr() as *mut u8,
        pin.len() as ck::CK_ULONG
    ));
    assert!(
        rv == ck::CKR_OK || rv == ck::CKR_USER_ALREADY_LOGGED_IN,
        "login: {rv:#x}"
    );
    session
}

fn ec_key_pair(session: ck::CK_SESSION_HANDLE) -> (ck::CK_OBJECT_HANDLE, ck::CK_OBJECT_HANDLE) {
    // The DER OID of P-256.
    let params: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let yes = ck::CK_TRUE;
    let mut public = [
        bytes_attr(ck::CKA_EC_PARAMS, params),
        attr(ck::CKA_VERIFY, &yes),
    ];
    let mut private = [
        attr(ck::CKA_SIGN, &yes),
        bytes_attr(ck::CKA_ID, b"mod-test"),
    ];
    let (mut pubk, mut privk) = (0, 0);
    let mut m = mech(ck::CKM_EC_KEY_PAIR_GEN);
    assert_eq!(
        p11!(C_GenerateKeyPair(
            session,
            &mut m,
            public.as_mut_ptr(),
            2,
            private.as_mut_ptr(),
            2,
            &mut pubk,
            &mut privk
        )),
        ck::CKR_OK
    );
    assert!(pubk != 0 && privk != 0 && pubk != privk);
    (pubk, privk)
}

fn login(session: ck::CK_SESSION_HANDLE, user: ck::CK_USER_TYPE, pin: &str) -> ck::CK_RV {
    p11!(C_Login(
        session,
        user,
        pin.as_ptr() as *mut u8,
        pin.len() as ck::CK_ULONG
    ))
}

/// C_InitPIN as the SO, then C_SetPIN as the new user.
fn pins(so_pin: &str) {
    let mut session: ck::CK_SESSION_HANDLE = 0;
    let flags = ck::CKF_SERIAL_SESSION | ck::CKF_RW_SESSION;
    assert_eq!(
        p11!(C_OpenSession(0, flags, null_mut(), None, &mut session)),
        ck::CKR_OK
    );
    let name = format!("pintest{}", std::process::id());
    let first = format!("{name}:first-password");
    assert_eq!(
        p11!(C_InitPIN(
            session,
            first.as_ptr() as *mut u8,
            first.len() as ck::CK_ULONG
        )),
        ck::CKR_USER_NOT_LOGGED_IN
    );
    assert_eq!(login(session, ck::CKU_SO, so_pin), ck::CKR_OK);
    let mut si = ck::CK_SESSION_INFO::default();
    assert_eq!(p11!(C_GetSessionInfo(session, &mut si)), ck::CKR_OK);
    assert_eq!(si.state, ck::CKS_RW_SO_FUNCTIONS);
    assert_eq!(
        p11!(C_InitPIN(
            session,
            first.as_ptr() as *mut u8,
            first.len() as ck::CK_ULONG
        )),
        ck::CKR_OK
    );
    assert_eq!(p11!(C_Logout(session)), ck::CKR_OK);
    assert_eq!(login(session, ck::CKU_USER, &first), ck::CKR_OK);
    let (old, new) = ("first-password", format!("{name}:second-password"));
    assert_eq!(
        p11!(C_SetPIN(
            session,
            old.as_ptr() as *mut u8,
            old.len() as ck::CK_ULONG,
            new.as_ptr() as *mut u8,
            new.len() as ck::CK_ULONG
        )),
        ck::CKR_OK
    );
    assert_eq!(p11!(C_Logout(session)), ck::CKR_OK);
    assert_eq!(login(session, ck::CKU_USER, &first), ck::CKR_PIN_INCORRECT);
    assert_eq!(login(session, ck::CKU_USER, &new), ck::CKR_OK);
    assert_eq!(p11!(C_CloseSession(session)), ck::CKR_OK);
}

fn with_cluster(pin: &str) {
    assert_eq!(p11!(C_Initialize(null_mut())), ck::CKR_OK);
    match std::env::var("HSM_SO_PIN") {
        Ok(so_pin) => pins(&so_pin),
        Err(_) => eprintln!("HSM_SO_PIN not set: PIN part skipped"),
    }
    let session = open_logged_in(pin);
    let pin_bytes = pin.as_bytes();
    assert_eq!(
        p11!(C_Login(
            session,
            ck::CKU_USER,
            pin_bytes.as_ptr() as *mut u8,
            pin_bytes.len() as ck::CK_ULONG
        )),
        ck::CKR_USER_ALREADY_LOGGED_IN
    );
    let mut si = ck::CK_SESSION_INFO::default();
    assert_eq!(p11!(C_GetSessionInfo(session, &mut si)), ck::CKR_OK);
    assert_eq!(si.state, ck::CKS_RW_USER_FUNCTIONS);

    let (pubk, privk) = ec_key_pair(session);

    // Sign with the size-query protocol.
    let mut digest = [7u8; 32];
    let mut m = mech(ck::CKM_ECDSA);
    assert_eq!(p11!(C_SignInit(session, &mut m, privk)), ck::CKR_OK);
    assert_eq!(
        p11!(C_SignInit(session, &mut m, privk)),
        ck::CKR_OPERATION_ACTIVE
    );
    let mut len: ck::CK_ULONG = 0;
    assert_eq!(
        p11!(C_Sign(
            session,
            digest.as_mut_ptr(),
            32,
            null_mut(),
            &mut len
        )),
        ck::CKR_OK
    );
    assert_eq!(len, 64);
    let mut sig = [0u8; 64];
    let mut small: ck::CK_ULONG = 10;
    assert_eq!(
        p11!(C_Sign(
            session,
            digest.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            &mut small
        )),
        ck::CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(small, 64);
    assert_eq!(
        p11!(C_Sign(
            session,
            digest.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            &mut len
        )),
        ck::CKR_OK
    );
    assert_eq!(
        p11!(C_Sign(
            session,
            digest.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            &mut len
        )),
        ck::CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(p11!(C_VerifyInit(session, &mut m, pubk)), ck::CKR_OK);
    assert_eq!(
        p11!(C_Verify(
            session,
            digest.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            64
        )),
        ck::CKR_OK
    );
    sig[5] ^= 1;
    assert_eq!(p11!(C_VerifyInit(session, &mut m, pubk)), ck::CKR_OK);
    assert_eq!(
        p11!(C_Verify(
            session,
            digest.as_mut_ptr(),
            32,
            sig.as_mut_ptr(),
            64
        )),
        ck::CKR_SIGNATURE_INVALID
    );
    // Key checks at Init.
    assert_eq!(
        p11!(C_SignInit(session, &mut m, pubk)),
        ck::CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    let mut rsa = mech(ck::CKM_SHA256_RSA_PKCS);
    assert_eq!(
        p11!(C_SignInit(session, &mut rsa, privk)),
        ck::CKR_KEY_TYPE_INCONSISTENT
    );
    // CKM_ECDSA is single-part only.
    assert_eq!(p11!(C_SignInit(session, &mut m, privk)), ck::CKR_OK);
    assert_eq!(
        p11!(C_SignUpdate(session, digest.as_mut_ptr(), 32)),
        ck::CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(p11!(C_SignInit(session, &mut m, privk)), ck::CKR_OK);
    // A NULL mechanism cancels (PKCS#11 3.0).
    assert_eq!(p11!(C_SignInit(session, null_mut(), 0)), ck::CKR_OK);

    // Multi-part ECDSA-SHA256, verified single-part.
    let mut m = mech(ck::CKM_ECDSA_SHA256);
    let mut msg = *b"hello multi-part world";
    assert_eq!(p11!(C_SignInit(session, &mut m, privk)), ck::CKR_OK);
    assert_eq!(p11!(C_SignUpdate(session, msg.as_mut_ptr(), 5)), ck::CKR_OK);
    assert_eq!(
        p11!(C_SignUpdate(session, msg.as_mut_ptr().wrapping_add(5), 17)),
        ck::CKR_OK
    );
    let mut len: ck::CK_ULONG = 64;
    assert_eq!(
        p11!(C_SignFinal(session, sig.as_mut_ptr(), &mut len)),
        ck::CKR_OK
    );
    assert_eq!(p11!(C_VerifyInit(session, &mut m, pubk)), ck::CKR_OK);
    assert_eq!(
        p11!(C_Verify(
            session,
            msg.as_mut_ptr(),
            22,
            sig.as_mut_ptr(),
            len
        )),
        ck::CKR_OK
    );

    // Attributes: partial fill.
    let mut point = [0u8; 2];
    let mut id = [0u8; 16];
    let mut tmpl = [
        ck::CK_ATTRIBUTE {
            type_: ck::CKA_ID,
            pValue: id.as_mut_ptr() as *mut c_void,
            ulValueLen: 16,
        },
        ck::CK_ATTRIBUTE {
            type_: ck::CKA_VALUE,
            pValue: null_mut(),
            ulValueLen: 0,
        },
        ck::CK_ATTRIBUTE {
            type_: ck::CKA_VENDOR_DEFINED | 9,
            pValue: null_mut(),
            ulValueLen: 0,
        },
    ];
    let rv = p11!(C_GetAttributeValue(session, privk, tmpl.as_mut_ptr(), 3));
    assert!(
        rv == ck::CKR_ATTRIBUTE_SENSITIVE || rv == ck::CKR_ATTRIBUTE_TYPE_INVALID,
        "{rv:#x}"
    );
    assert_eq!(tmpl[0].ulValueLen, 8);
    assert_eq!(&id[..8], b"mod-test");
    assert_eq!(tmpl[1].ulValueLen, !0);
    assert_eq!(tmpl[2].ulValueLen, !0);
    let mut tmpl = [ck::CK_ATTRIBUTE {
        type_: ck::CKA_EC_POINT,
        pValue: point.as_mut_ptr() as *mut c_void,
        ulValueLen: 2,
    }];
    assert_eq!(
        p11!(C_GetAttributeValue(session, pubk, tmpl.as_mut_ptr(), 1)),
        ck::CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(
        p11!(C_GetAttributeValue(session, 999_999, tmpl.as_mut_ptr(), 1)),
        ck::CKR_OBJECT_HANDLE_INVALID
    );

    // Change, copy, size.
    let mut tmpl = [bytes_attr(ck::CKA_LABEL, b"renamed")];
    assert_eq!(
        p11!(C_SetAttributeValue(session, pubk, tmpl.as_mut_ptr(), 1)),
        ck::CKR_OK
    );
    let mut label = [0u8; 16];
    let mut tmpl = [ck::CK_ATTRIBUTE {
        type_: ck::CKA_LABEL,
        pValue: label.as_mut_ptr() as *mut c_void,
        ulValueLen: 16,
    }];
    assert_eq!(
        p11!(C_GetAttributeValue(session, pubk, tmpl.as_mut_ptr(), 1)),
        ck::CKR_OK
    );
    assert_eq!(&label[..tmpl[0].ulValueLen as usize], b"renamed");
    let mut tmpl = [bytes_attr(ck::CKA_LABEL, b"copy")];
    let mut copy = 0;
    assert_eq!(
        p11!(C_CopyObject(session, pubk, tmpl.as_mut_ptr(), 1, &mut copy)),
        ck::CKR_OK
    );
    assert!(copy != 0 && copy != pubk);
    let mut size: ck::CK_ULONG = 0;
    assert_eq!(p11!(C_GetObjectSize(session, copy, &mut size)), ck::CKR_OK);
    assert!(size > 0);
    assert_eq!(p11!(C_DestroyObject(session, copy)), ck::CKR_OK);

    // Multi-part input up to one request's size goes in one request; beyond, the node
    // streams it (OperationUpdate) if it supports that.
    let mut m = mech(ck::CKM_ECDSA_SHA256);
    for total in [3usize << 20, 6 << 20] {
        let mut big = vec![0x5au8; total];
        assert_eq!(p11!(C_SignInit(session, &mut m, privk)), ck::CKR_OK);
        let mut rv = ck::CKR_OK;
        for chunk in big.chunks_mut(1 << 20) {
            rv = p11!(C_SignUpdate(
                session,
                chunk.as_mut_ptr(),
                chunk.len() as ck::CK_ULONG
            ));
            if rv != ck::CKR_OK {
                break;
            }
        }
        if rv == ck::CKR_FUNCTION_NOT_SUPPORTED && total > 4 << 20 {
            eprintln!("the node does not stream multi-part operations yet");
            continue;
        }
        assert_eq!(rv, ck::CKR_OK, "{total}");
        let mut len: ck::CK_ULONG = 64;
        assert_eq!(
            p11!(C_SignFinal(session, sig.as_mut_ptr(), &mut len)),
            ck::CKR_OK
        );
        assert_eq!(p11!(C_VerifyInit(session, &mut m, pubk)), ck::CKR_OK);
        assert_eq!(
            p11!(C_Verify(
                session,
                big.as_mut_ptr(),
                total as ck::CK_ULONG,
                sig.as_mut_ptr(),
                len
            )),
            ck::CKR_OK,
            "{total}"
        );
    }

    // Search by id.
    let mut tmpl = [bytes_attr(ck::CKA_ID, b"mod-test")];
    assert_eq!(
        p11!(C_FindObjectsInit(session, tmpl.as_mut_ptr(), 1)),
        ck::CKR_OK
    );
    let mut objects = [0 as ck::CK_OBJECT_HANDLE; 8];
    let mut found: ck::CK_ULONG = 0;
    assert_eq!(
        p11!(C_FindObjects(session, objects.as_mut_ptr(), 8, &mut found)),
        ck::CKR_OK
    );
    assert_eq!(p11!(C_FindObjectsFinal(session)), ck::CKR_OK);
    assert!(objects[..found as usize].contains(&privk), "{found}");

    // AES-GCM, single- and multi-part, in place.
    let yes = ck::CK_TRUE;
    let len32: ck::CK_ULONG = 32;
    let mut tmpl = [
        attr(ck::CKA_VALUE_LEN, &len32),
        attr(ck::CKA_ENCRYPT, &yes),
        attr(ck::CKA_DECRYPT, &yes),
    ];
    let mut aes = 0;
    let mut m = mech(ck::CKM_AES_KEY_GEN);
    assert_eq!(
        p11!(C_GenerateKey(
            session,
            &mut m,
            tmpl.as_mut_ptr(),
            3,
            &mut aes
        )),
        ck::CKR_OK
    );
    let iv = [3u8; 12];
    let aad = *b"header";
    let gcm = ck::CK_GCM_PARAMS {
        pIv: iv.as_ptr() as *mut u8,
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: aad.as_ptr() as *mut u8,
        ulAADLen: 6,
        ulTagBits: 128,
    };
    let mut m = ck::CK_MECHANISM {
        mechanism: ck::CKM_AES_GCM,
        pParameter: &gcm as *const ck::CK_GCM_PARAMS as *mut c_void,
        ulParameterLen: size_of::<ck::CK_GCM_PARAMS>() as ck::CK_ULONG,
    };
    let plain = *b"attack at dawn!!";
    let mut buf = [0u8; 64];
    buf[..16].copy_from_slice(&plain);
    assert_eq!(p11!(C_EncryptInit(session, &mut m, aes)), ck::CKR_OK);
    let mut len: ck::CK_ULONG = 64;
    // In place: input and output share the buffer.
    assert_eq!(
        p11!(C_Encrypt(
            session,
            buf.as_mut_ptr(),
            16,
            buf.as_mut_ptr(),
            &mut len
        )),
        ck::CKR_OK
    );
    assert_eq!(len, 32);
    let ciphertext = buf[..32].to_vec();
    assert_eq!(p11!(C_DecryptInit(session, &mut m, aes)), ck::CKR_OK);
    let mut out = [0u8; 64];
    let mut out_len: ck::CK_ULONG = 64;
    assert_eq!(
        p11!(C_Decrypt(
            session,
            buf.as_mut_ptr(),
            32,
            out.as_mut_ptr(),
            &mut out_len
        )),
        ck::CKR_OK
    );
    assert_eq!(&out[..out_len as usize], &plain);

    // Token-generated IV: an all-zero IV comes back filled by C_EncryptInit, and decrypting
    // with the IV written there works.
    let mut zero_iv = [0u8; 12];
    let gen_gcm = ck::CK_GCM_PARAMS {
        pIv: zero_iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: aad.as_ptr() as *mut u8,
        ulAADLen: 6,
        ulTagBits: 128,
    };
    let mut gm = ck::CK_MECHANISM {
        mechanism: ck::CKM_AES_GCM,
        pParameter: &gen_gcm as *const ck::CK_GCM_PARAMS as *mut c_void,
        ulParameterLen: size_of::<ck::CK_GCM_PARAMS>() as ck::CK_ULONG,
    };
    assert_eq!(p11!(C_EncryptInit(session, &mut gm, aes)), ck::CKR_OK);
    // SAFETY: the module wrote through pIv; read the buffer back through the same pointer.
    let written = unsafe { std::ptr::read_volatile(gen_gcm.pIv as *const [u8; 12]) };
    assert_ne!(
        written, [0u8; 12],
        "C_EncryptInit must fill an all-zero GCM IV"
    );
    let mut gen_ct = [0u8; 64];
    let mut gen_len: ck::CK_ULONG = 64;
    let mut pt = plain;
    assert_eq!(
        p11!(C_Encrypt(
            session,
            pt.as_mut_ptr(),
            16,
            gen_ct.as_mut_ptr(),
            &mut gen_len
        )),
        ck::CKR_OK
    );
    assert_eq!(p11!(C_DecryptInit(session, &mut gm, aes)), ck::CKR_OK);
    let mut gen_out = [0u8; 64];
    let mut gen_out_len: ck::CK_ULONG = 64;
    assert_eq!(
        p11!(C_Decrypt(
            session,
            gen_ct.as_mut_ptr(),
            gen_len,
            gen_out.as_mut_ptr(),
            &mut gen_out_len
        )),
        ck::CKR_OK
    );
    assert_eq!(&gen_out[..gen_out_len as usize], &plain);
    // Multi-part decrypt of the same ciphertext.
    assert_eq!(p11!(C_DecryptInit(session, &mut m, aes)), ck::CKR_OK);
    let mut part_len: ck::CK_ULONG = 64;
    let mut ct = ciphertext.clone();
    assert_eq!(
        p11!(C_DecryptUpdate(
            session,
            ct.as_mut_ptr(),
            10,
            out.as_mut_ptr(),
            &mut part_len
        )),
        ck::CKR_OK
    );
    assert_eq!(part_len, 0);
    part_len = 64;
    assert_eq!(
        p11!(C_DecryptUpdate(
            session,
            ct.as_mut_ptr().wrapping_add(10),
            22,
            out.as_mut_ptr(),
            &mut part_len
        )),
        ck::CKR_OK
    );
    let mut last_len: ck::CK_ULONG = 0;
    assert_eq!(
        p11!(C_DecryptFinal(session, null_mut(), &mut last_len)),
        ck::CKR_OK
    );
    assert_eq!(last_len, 16);
    assert_eq!(
        p11!(C_DecryptFinal(session, out.as_mut_ptr(), &mut last_len)),
        ck::CKR_OK
    );
    assert_eq!(&out[..16], &plain);
    // A wrong tag.
    ct[31] ^= 1;
    assert_eq!(p11!(C_DecryptInit(session, &mut m, aes)), ck::CKR_OK);
    out_len = 64;
    let rv = p11!(C_Decrypt(
        session,
        ct.as_mut_ptr(),
        32,
        out.as_mut_ptr(),
        &mut out_len
    ));
    assert_eq!(rv, ck::CKR_ENCRYPTED_DATA_INVALID);

    // Random, in more than one chunk.
    let mut random = vec![0u8; (1 << 20) + 100];
    assert_eq!(
        p11!(C_GenerateRandom(
            session,
            random.as_mut_ptr(),
            random.len() as ck::CK_ULONG
        )),
        ck::CKR_OK
    );
    assert!(random[(1 << 20)..].iter().any(|b| *b != 0));

    // Sixteen threads, one session each, signing at once on the one connection.
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(move || {
                let mut session: ck::CK_SESSION_HANDLE = 0;
                assert_eq!(
                    p11!(C_OpenSession(
                        0,
                        ck::CKF_SERIAL_SESSION,
                        null_mut(),
                        None,
                        &mut session
                    )),
                    ck::CKR_OK
                );
                let mut m = mech(ck::CKM_ECDSA);
                let mut digest = [9u8; 32];
                let mut sig = [0u8; 64];
                for _ in 0..50 {
                    let mut len: ck::CK_ULONG = 64;
                    assert_eq!(p11!(C_SignInit(session, &mut m, privk)), ck::CKR_OK);
                    assert_eq!(
                        p11!(C_Sign(
                            session,
                            digest.as_mut_ptr(),
                            32,
                            sig.as_mut_ptr(),
                            &mut len
                        )),
                        ck::CKR_OK
                    );
                }
                assert_eq!(p11!(C_CloseSession(session)), ck::CKR_OK);
            });
        }
    });

    // Destroy, then the handle is gone.
    assert_eq!(p11!(C_DestroyObject(session, pubk)), ck::CKR_OK);
    assert_eq!(
        p11!(C_DestroyObject(session, pubk)),
        ck::CKR_OBJECT_HANDLE_INVALID
    );
    // Closing the session drops its session objects.
    assert_eq!(p11!(C_CloseSession(session)), ck::CKR_OK);
    let session = open_logged_in(pin);
    let mut m = mech(ck::CKM_ECDSA);
    assert_eq!(
        p11!(C_SignInit(session, &mut m, privk)),
        ck::CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(p11!(C_CloseAllSessions(0)), ck::CKR_OK);
    assert_eq!(p11!(C_Finalize(null_mut())), ck::CKR_OK);
}
