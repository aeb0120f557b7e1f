//! The raw C ABI, as a C application sees it (`tests/c/raw_abi_probe.c`): NULL-buffer size
//! queries, CKR_BUFFER_TOO_SMALL, CK_UNAVAILABLE_INFORMATION in partially filled templates,
//! operation state, bogus handles and NULL arguments.

use cryptoki_sys::*;
use hsm_tests::Cluster;
use hsm_tests::probe::run_probe;

#[test]
fn raw_abi_buffers_templates_state_and_handles() {
    let cluster = Cluster::start();
    let p = run_probe(&cluster);
    eprintln!("probe output:\n{}", p.raw);
    assert_eq!(p.get("done"), "1", "{}", p.raw);

    // NULL arguments.
    assert_ne!(
        p.rv("null_get_info"),
        CKR_OK,
        "C_GetInfo(NULL) before C_Initialize"
    );
    p.assert_rv("null_get_info_initialized", CKR_ARGUMENTS_BAD);
    p.assert_rv("null_slot_count", CKR_ARGUMENTS_BAD);
    p.assert_rv("null_session_info", CKR_ARGUMENTS_BAD);
    p.assert_rv("null_random", CKR_ARGUMENTS_BAD);

    // Bogus and closed session handles.
    p.assert_rv("bad_session_info", CKR_SESSION_HANDLE_INVALID);
    p.assert_rv("bad_session_close", CKR_SESSION_HANDLE_INVALID);
    p.assert_rv("closed_session_info", CKR_SESSION_HANDLE_INVALID);
    p.assert_rv("open_a_info", CKR_OK);
    p.assert_rv("close_all_rv", CKR_OK);
    p.assert_rv("close_all_a_info", CKR_SESSION_HANDLE_INVALID);
    p.assert_rv("close_all_b_info", CKR_SESSION_HANDLE_INVALID);
    p.assert_rv("close_all_bad_slot", CKR_SLOT_ID_INVALID);

    // GetAttributeValue: size query, too small, exact.
    p.assert_rv("attr_size_query_rv", CKR_OK);
    p.assert_value("attr_size_query_len", "67");
    p.assert_rv("attr_too_small_rv", CKR_BUFFER_TOO_SMALL);
    p.assert_value("attr_too_small_len", "unavailable");
    p.assert_rv("attr_fits_rv", CKR_OK);
    p.assert_value("attr_fits_len", "67");
    p.assert_value("attr_fits_first_bytes", "0441");

    // A partially fillable template: the absent one marked, the others filled.
    p.assert_rv("mixed_rv", CKR_ATTRIBUTE_TYPE_INVALID);
    p.assert_value("mixed_class_len", "8");
    p.assert_value("mixed_class_value", &CKO_PUBLIC_KEY.to_string());
    p.assert_value("mixed_modulus_len", "unavailable");
    p.assert_value("mixed_label_len", "5");
    p.assert_value("mixed_label_value", "probe");
    // A sensitive value: marked, the others filled.
    p.assert_rv("sensitive_rv", CKR_ATTRIBUTE_SENSITIVE);
    p.assert_value("sensitive_value_len", "unavailable");
    p.assert_value("sensitive_key_type", &CKK_EC.to_string());
    p.assert_rv("unknown_type_rv", CKR_ATTRIBUTE_TYPE_INVALID);
    p.assert_value("unknown_type_len", "unavailable");

    // Operations never initialized.
    p.assert_rv("sign_not_initialized", CKR_OPERATION_NOT_INITIALIZED);
    p.assert_rv("verify_not_initialized", CKR_OPERATION_NOT_INITIALIZED);
    p.assert_rv("encrypt_not_initialized", CKR_OPERATION_NOT_INITIALIZED);
    p.assert_rv("decrypt_not_initialized", CKR_OPERATION_NOT_INITIALIZED);

    // Sign: active twice, size query, too small (the operation stays), done, finished.
    p.assert_rv("sign_init_rv", CKR_OK);
    p.assert_rv("sign_init_again_rv", CKR_OPERATION_ACTIVE);
    p.assert_rv("sign_size_query_rv", CKR_OK);
    p.assert_value("sign_size_query_len", "64");
    p.assert_rv("sign_too_small_rv", CKR_BUFFER_TOO_SMALL);
    p.assert_value("sign_too_small_len", "64");
    p.assert_rv("sign_rv", CKR_OK);
    p.assert_value("sign_len", "64");
    p.assert_rv("sign_after_done", CKR_OPERATION_NOT_INITIALIZED);
    p.assert_rv("verify_init_rv", CKR_OK);
    p.assert_rv("verify_rv", CKR_OK);
    p.assert_rv("verify_tampered_init_rv", CKR_OK);
    p.assert_rv("verify_tampered_rv", CKR_SIGNATURE_INVALID);

    // Object handles that never existed, or no longer do.
    p.assert_rv("bogus_sign_init", CKR_KEY_HANDLE_INVALID);
    p.assert_rv("bogus_get_attr", CKR_OBJECT_HANDLE_INVALID);
    p.assert_rv("bogus_destroy", CKR_OBJECT_HANDLE_INVALID);
    p.assert_rv("random_rv", CKR_OK);
    p.assert_rv("destroy_rv", CKR_OK);
    p.assert_rv("destroyed_sign_init", CKR_KEY_HANDLE_INVALID);

    p.assert_rv("logout_rv", CKR_OK);
    p.assert_rv("close_rv", CKR_OK);
    p.assert_rv("finalize_rv", CKR_OK);
    p.assert_rv("after_finalize_slot_list", CKR_CRYPTOKI_NOT_INITIALIZED);
}
