/*
 * raw_abi_probe: drives the PKCS#11 module through its raw C ABI, the way a C application
 * does, to check what a safe Rust wrapper hides: NULL-buffer size queries, CKR_BUFFER_TOO_SMALL,
 * CK_UNAVAILABLE_INFORMATION in partially filled templates, operation state errors, bogus
 * handles and NULL arguments.
 *
 * Usage: raw_abi_probe <module.so> <user PIN>   (the module reads $HSM_PKCS11_CONF)
 * Output: one "key value" line per observation; the Rust test (tests/tests/raw_abi.rs)
 * asserts on them. A setup step that fails prints "fatal <step> <rv>" and exits 2.
 *
 * Only the handful of PKCS#11 types and constants used here are declared (values from the
 * PKCS#11 2.40 headers), so the probe builds without any development package.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkcs11_min.h"

#define CKA_VALUE 0x11UL
#define CKA_KEY_TYPE 0x100UL
#define CKA_SENSITIVE 0x103UL
#define CKA_SIGN 0x108UL
#define CKA_VERIFY 0x10AUL
#define CKA_MODULUS 0x120UL
#define CKA_EC_PARAMS 0x180UL
#define CKA_EC_POINT 0x181UL
#define CKM_EC_KEY_PAIR_GEN 0x1040UL
#define CKM_AES_GCM 0x1087UL
#define BOGUS_HANDLE 0x7ead0bb1UL

typedef CK_RV (*fn_void)(void *);
typedef CK_RV (*fn_get_slot_list)(CK_BBOOL, CK_ULONG *, CK_ULONG *);
typedef CK_RV (*fn_open_session)(CK_ULONG, CK_ULONG, void *, void *, CK_ULONG *);
typedef CK_RV (*fn_session)(CK_ULONG);
typedef CK_RV (*fn_slot)(CK_ULONG);
typedef CK_RV (*fn_session_info)(CK_ULONG, void *);
typedef CK_RV (*fn_login)(CK_ULONG, CK_ULONG, unsigned char *, CK_ULONG);
typedef CK_RV (*fn_obj)(CK_ULONG, CK_ULONG);
typedef CK_RV (*fn_get_attr)(CK_ULONG, CK_ULONG, CK_ATTRIBUTE *, CK_ULONG);
typedef CK_RV (*fn_op_init)(CK_ULONG, CK_MECHANISM *, CK_ULONG);
typedef CK_RV (*fn_op)(CK_ULONG, unsigned char *, CK_ULONG, unsigned char *, CK_ULONG *);
typedef CK_RV (*fn_verify)(CK_ULONG, unsigned char *, CK_ULONG, unsigned char *, CK_ULONG);
typedef CK_RV (*fn_gen_pair)(CK_ULONG, CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, CK_ATTRIBUTE *,
                             CK_ULONG, CK_ULONG *, CK_ULONG *);
typedef CK_RV (*fn_random)(CK_ULONG, unsigned char *, CK_ULONG);

/* CK_FUNCTION_LIST of PKCS#11 2.40, in the order of pkcs11f.h. */
typedef struct {
    CK_VERSION version;
    fn_void C_Initialize, C_Finalize, C_GetInfo;
    void *C_GetFunctionList;
    fn_get_slot_list C_GetSlotList;
    void *C_GetSlotInfo, *C_GetTokenInfo, *C_GetMechanismList, *C_GetMechanismInfo;
    void *C_InitToken, *C_InitPIN, *C_SetPIN;
    fn_open_session C_OpenSession;
    fn_session C_CloseSession;
    fn_slot C_CloseAllSessions;
    fn_session_info C_GetSessionInfo;
    void *C_GetOperationState, *C_SetOperationState;
    fn_login C_Login;
    fn_session C_Logout;
    void *C_CreateObject, *C_CopyObject;
    fn_obj C_DestroyObject;
    void *C_GetObjectSize;
    fn_get_attr C_GetAttributeValue;
    void *C_SetAttributeValue, *C_FindObjectsInit, *C_FindObjects, *C_FindObjectsFinal;
    void *C_EncryptInit;
    fn_op C_Encrypt;
    void *C_EncryptUpdate, *C_EncryptFinal, *C_DecryptInit;
    fn_op C_Decrypt;
    void *C_DecryptUpdate, *C_DecryptFinal, *C_DigestInit, *C_Digest, *C_DigestUpdate;
    void *C_DigestKey, *C_DigestFinal;
    fn_op_init C_SignInit;
    fn_op C_Sign;
    void *C_SignUpdate, *C_SignFinal, *C_SignRecoverInit, *C_SignRecover;
    fn_op_init C_VerifyInit;
    fn_verify C_Verify;
    void *C_VerifyUpdate, *C_VerifyFinal, *C_VerifyRecoverInit, *C_VerifyRecover;
    void *C_DigestEncryptUpdate, *C_DecryptDigestUpdate, *C_SignEncryptUpdate;
    void *C_DecryptVerifyUpdate, *C_GenerateKey;
    fn_gen_pair C_GenerateKeyPair;
    void *C_WrapKey, *C_UnwrapKey, *C_DeriveKey, *C_SeedRandom;
    fn_random C_GenerateRandom;
    void *C_GetFunctionStatus, *C_CancelFunction, *C_WaitForSlotEvent;
} FUNCTION_LIST;

typedef CK_RV (*fn_get_function_list)(FUNCTION_LIST **);

static void out_rv(const char *key, CK_RV rv) { printf("%s 0x%lx\n", key, rv); }
static void out_len(const char *key, CK_ULONG len) {
    if (len == CK_UNAVAILABLE_INFORMATION)
        printf("%s unavailable\n", key);
    else
        printf("%s %lu\n", key, len);
}
static void fatal(const char *step, CK_RV rv) {
    printf("fatal %s 0x%lx\n", step, rv);
    fflush(stdout);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <module.so> <user PIN>\n", argv[0]);
        return 64;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("fatal dlopen %s\n", dlerror());
        return 2;
    }
    fn_get_function_list get_list = (fn_get_function_list)dlsym(lib, "C_GetFunctionList");
    if (!get_list) {
        printf("fatal dlsym C_GetFunctionList\n");
        return 2;
    }
    FUNCTION_LIST *f = NULL;
    CK_RV rv = get_list(&f);
    if (rv != 0 || !f) fatal("C_GetFunctionList", rv);

    /* NULL arguments: CKR_ARGUMENTS_BAD, never a crash. */
    out_rv("null_get_info", f->C_GetInfo(NULL));
    if ((rv = f->C_Initialize(NULL)) != 0) fatal("C_Initialize", rv);
    out_rv("null_get_info_initialized", f->C_GetInfo(NULL));
    out_rv("null_slot_count", f->C_GetSlotList(1, NULL, NULL));

    CK_ULONG slots[8], count = 8;
    if ((rv = f->C_GetSlotList(1, slots, &count)) != 0 || count == 0) fatal("C_GetSlotList", rv);
    CK_ULONG slot = slots[0];

    unsigned char session_info[64];
    out_rv("bad_session_info", f->C_GetSessionInfo(BOGUS_HANDLE, session_info));
    out_rv("bad_session_close", f->C_CloseSession(BOGUS_HANDLE));

    CK_ULONG s = 0;
    if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s)) != 0)
        fatal("C_OpenSession", rv);
    out_rv("null_session_info", f->C_GetSessionInfo(s, NULL));
    if ((rv = f->C_Login(s, CKU_USER, (unsigned char *)argv[2], strlen(argv[2]))) != 0)
        fatal("C_Login", rv);

    /* A session EC P-256 key pair labelled "probe". */
    static unsigned char p256_oid[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    CK_BBOOL yes = 1;
    char label[] = "probe";
    CK_ATTRIBUTE pub_t[] = {
        {CKA_EC_PARAMS, p256_oid, sizeof p256_oid},
        {CKA_VERIFY, &yes, 1},
        {CKA_LABEL, label, 5},
    };
    CK_ATTRIBUTE priv_t[] = {
        {CKA_SIGN, &yes, 1},
        {CKA_SENSITIVE, &yes, 1},
        {CKA_LABEL, label, 5},
    };
    CK_MECHANISM gen = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_ULONG pub = 0, priv = 0;
    if ((rv = f->C_GenerateKeyPair(s, &gen, pub_t, 3, priv_t, 3, &pub, &priv)) != 0)
        fatal("C_GenerateKeyPair", rv);

    /* Size query: pValue NULL gives the length and CKR_OK. */
    CK_ATTRIBUTE q = {CKA_EC_POINT, NULL, 0};
    out_rv("attr_size_query_rv", f->C_GetAttributeValue(s, pub, &q, 1));
    out_len("attr_size_query_len", q.ulValueLen);

    /* Too small: CKR_BUFFER_TOO_SMALL and the length set to CK_UNAVAILABLE_INFORMATION. */
    unsigned char small[10];
    CK_ATTRIBUTE t = {CKA_EC_POINT, small, sizeof small};
    out_rv("attr_too_small_rv", f->C_GetAttributeValue(s, pub, &t, 1));
    out_len("attr_too_small_len", t.ulValueLen);

    /* Exact size works. */
    unsigned char point[256];
    CK_ATTRIBUTE e = {CKA_EC_POINT, point, sizeof point};
    out_rv("attr_fits_rv", f->C_GetAttributeValue(s, pub, &e, 1));
    out_len("attr_fits_len", e.ulValueLen);
    if (e.ulValueLen >= 2 && e.ulValueLen != CK_UNAVAILABLE_INFORMATION)
        printf("attr_fits_first_bytes %02x%02x\n", point[0], point[1]);

    /* A partially fillable template: the absent attribute is marked, the others are filled. */
    CK_ULONG class_v = 0xffff;
    unsigned char modulus[512];
    char label_v[32];
    CK_ATTRIBUTE mixed[] = {
        {CKA_CLASS, &class_v, sizeof class_v},
        {CKA_MODULUS, modulus, sizeof modulus},
        {CKA_LABEL, label_v, sizeof label_v},
    };
    out_rv("mixed_rv", f->C_GetAttributeValue(s, pub, mixed, 3));
    out_len("mixed_class_len", mixed[0].ulValueLen);
    printf("mixed_class_value %lu\n", class_v);
    out_len("mixed_modulus_len", mixed[1].ulValueLen);
    out_len("mixed_label_len", mixed[2].ulValueLen);
    if (mixed[2].ulValueLen <= sizeof label_v)
        printf("mixed_label_value %.*s\n", (int)mixed[2].ulValueLen, label_v);

    /* The private value is sensitive: marked, CKR_ATTRIBUTE_SENSITIVE, the others filled. */
    unsigned char value[128];
    CK_ULONG key_type = 0xffff;
    CK_ATTRIBUTE sens[] = {
        {CKA_VALUE, value, sizeof value},
        {CKA_KEY_TYPE, &key_type, sizeof key_type},
    };
    out_rv("sensitive_rv", f->C_GetAttributeValue(s, priv, sens, 2));
    out_len("sensitive_value_len", sens[0].ulValueLen);
    printf("sensitive_key_type %lu\n", key_type);

    /* An attribute type nobody knows. */
    CK_ATTRIBUTE unknown = {0x7fff0000UL, value, sizeof value};
    out_rv("unknown_type_rv", f->C_GetAttributeValue(s, pub, &unknown, 1));
    out_len("unknown_type_len", unknown.ulValueLen);

    /* Operations that were never initialized. */
    unsigned char digest[32];
    memset(digest, 0x5a, sizeof digest);
    unsigned char sig[256];
    CK_ULONG sig_len = sizeof sig;
    out_rv("sign_not_initialized", f->C_Sign(s, digest, sizeof digest, sig, &sig_len));
    out_rv("verify_not_initialized", f->C_Verify(s, digest, sizeof digest, sig, 64));
    CK_ULONG ct_len = sizeof sig;
    out_rv("encrypt_not_initialized", f->C_Encrypt(s, digest, sizeof digest, sig, &ct_len));
    ct_len = sizeof sig;
    out_rv("decrypt_not_initialized", f->C_Decrypt(s, digest, sizeof digest, sig, &ct_len));

    /* Sign: size query, too small (operation stays active), then the real thing. */
    CK_MECHANISM ecdsa = {CKM_ECDSA, NULL, 0};
    out_rv("sign_init_rv", f->C_SignInit(s, &ecdsa, priv));
    out_rv("sign_init_again_rv", f->C_SignInit(s, &ecdsa, priv));
    sig_len = 0;
    out_rv("sign_size_query_rv", f->C_Sign(s, digest, sizeof digest, NULL, &sig_len));
    out_len("sign_size_query_len", sig_len);
    sig_len = 10;
    out_rv("sign_too_small_rv", f->C_Sign(s, digest, sizeof digest, sig, &sig_len));
    out_len("sign_too_small_len", sig_len);
    sig_len = sizeof sig;
    out_rv("sign_rv", f->C_Sign(s, digest, sizeof digest, sig, &sig_len));
    out_len("sign_len", sig_len);
    CK_ULONG again_len = sizeof sig;
    out_rv("sign_after_done", f->C_Sign(s, digest, sizeof digest, sig, &again_len));

    out_rv("verify_init_rv", f->C_VerifyInit(s, &ecdsa, pub));
    out_rv("verify_rv", f->C_Verify(s, digest, sizeof digest, sig, sig_len));
    sig[0] ^= 1;
    out_rv("verify_tampered_init_rv", f->C_VerifyInit(s, &ecdsa, pub));
    out_rv("verify_tampered_rv", f->C_Verify(s, digest, sizeof digest, sig, sig_len));

    /* Bogus object handles. */
    out_rv("bogus_sign_init", f->C_SignInit(s, &ecdsa, BOGUS_HANDLE));
    CK_ATTRIBUTE c2 = {CKA_CLASS, &class_v, sizeof class_v};
    out_rv("bogus_get_attr", f->C_GetAttributeValue(s, BOGUS_HANDLE, &c2, 1));
    out_rv("bogus_destroy", f->C_DestroyObject(s, BOGUS_HANDLE));

    /* NULL output pointers. */
    out_rv("null_random", f->C_GenerateRandom(s, NULL, 16));
    unsigned char rnd[32];
    out_rv("random_rv", f->C_GenerateRandom(s, rnd, sizeof rnd));

    out_rv("destroy_rv", f->C_DestroyObject(s, priv));
    out_rv("destroyed_sign_init", f->C_SignInit(s, &ecdsa, priv));
    out_rv("logout_rv", f->C_Logout(s));
    out_rv("close_rv", f->C_CloseSession(s));
    out_rv("closed_session_info", f->C_GetSessionInfo(s, session_info));

    /* C_CloseAllSessions closes every session of the slot. */
    CK_ULONG a = 0, b = 0;
    if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &a)) != 0)
        fatal("C_OpenSession a", rv);
    if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &b)) != 0)
        fatal("C_OpenSession b", rv);
    out_rv("open_a_info", f->C_GetSessionInfo(a, session_info));
    out_rv("close_all_rv", f->C_CloseAllSessions(slot));
    out_rv("close_all_a_info", f->C_GetSessionInfo(a, session_info));
    out_rv("close_all_b_info", f->C_GetSessionInfo(b, session_info));
    out_rv("close_all_bad_slot", f->C_CloseAllSessions(0x7777UL));

    out_rv("finalize_rv", f->C_Finalize(NULL));
    out_rv("after_finalize_slot_list", f->C_GetSlotList(1, slots, &count));
    printf("done 1\n");
    return 0;
}
