/*
 * token_probe: PKCS#11 checks of the full token that the `cryptoki` crate cannot express:
 * the raw mechanism list (cryptoki drops mechanisms it has no name for, such as
 * CKM_SHA224_RSA_PKCS_PSS), mechanisms cryptoki cannot build, CK_ULONG attributes whose value
 * cryptoki cannot represent (CKA_KEY_GEN_MECHANISM = CK_UNAVAILABLE_INFORMATION), and the
 * variable-length output convention of multi-part calls (NULL size queries and
 * CKR_BUFFER_TOO_SMALL keep the operation active).
 *
 * Usage: token_probe <module.so> <user PIN> <command> [arguments]   ($HSM_PKCS11_CONF is read
 * by the module)
 *   mechanisms                         every mechanism with its CK_MECHANISM_INFO
 *   ulong-attr <label> <CKA hex>       a CK_ULONG attribute of the one object with that label
 *   object-size <label>                C_GetObjectSize of the one object with that label
 *   sign-pss <label> <CKM hex> <hash CKM hex> <CKG_MGF1 hex> <salt len> <data hex>
 *                                      a PSS signature by the private key with that label
 *   buffers                            size queries and CKR_BUFFER_TOO_SMALL in multi-part
 *                                      encrypt, decrypt, sign, digest and in C_WrapKey
 * Output: one "key value" line per observation; the Rust side (tests/src/token_probe.rs)
 * asserts on them. A setup step that fails prints "fatal <step> <rv>" and exits 2.
 *
 * Only the PKCS#11 types and constants used here are declared (values from the PKCS#11 2.40
 * headers), so the probe builds without any development package.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkcs11_min.h"

typedef struct { CK_ULONG ulMinKeySize, ulMaxKeySize, flags; } CK_MECHANISM_INFO;
typedef struct { CK_ULONG hashAlg, mgf, sLen; } CK_RSA_PKCS_PSS_PARAMS;

#define CKA_TOKEN 0x1UL
#define CKA_KEY_TYPE 0x100UL
#define CKA_SENSITIVE 0x103UL
#define CKA_ENCRYPT 0x104UL
#define CKA_DECRYPT 0x105UL
#define CKA_WRAP 0x106UL
#define CKA_SIGN 0x108UL
#define CKA_VERIFY 0x10AUL
#define CKA_VALUE_LEN 0x161UL
#define CKA_EXTRACTABLE 0x162UL
#define CKM_SHA256 0x250UL
#define CKM_SHA256_HMAC 0x251UL
#define CKM_GENERIC_SECRET_KEY_GEN 0x350UL
#define CKM_AES_KEY_GEN 0x1080UL
#define CKM_AES_ECB 0x1081UL
#define CKM_AES_CBC_PAD 0x1085UL
#define CKM_AES_KEY_WRAP 0x2109UL

typedef CK_RV (*fn_void)(void *);
typedef CK_RV (*fn_get_slot_list)(CK_BBOOL, CK_ULONG *, CK_ULONG *);
typedef CK_RV (*fn_get_mech_list)(CK_ULONG, CK_ULONG *, CK_ULONG *);
typedef CK_RV (*fn_get_mech_info)(CK_ULONG, CK_ULONG, CK_MECHANISM_INFO *);
typedef CK_RV (*fn_open_session)(CK_ULONG, CK_ULONG, void *, void *, CK_ULONG *);
typedef CK_RV (*fn_session)(CK_ULONG);
typedef CK_RV (*fn_login)(CK_ULONG, CK_ULONG, unsigned char *, CK_ULONG);
typedef CK_RV (*fn_object_size)(CK_ULONG, CK_ULONG, CK_ULONG *);
typedef CK_RV (*fn_get_attr)(CK_ULONG, CK_ULONG, CK_ATTRIBUTE *, CK_ULONG);
typedef CK_RV (*fn_find_init)(CK_ULONG, CK_ATTRIBUTE *, CK_ULONG);
typedef CK_RV (*fn_find)(CK_ULONG, CK_ULONG *, CK_ULONG, CK_ULONG *);
typedef CK_RV (*fn_op_init)(CK_ULONG, CK_MECHANISM *, CK_ULONG);
typedef CK_RV (*fn_digest_init)(CK_ULONG, CK_MECHANISM *);
typedef CK_RV (*fn_op)(CK_ULONG, unsigned char *, CK_ULONG, unsigned char *, CK_ULONG *);
typedef CK_RV (*fn_update)(CK_ULONG, unsigned char *, CK_ULONG);
typedef CK_RV (*fn_final)(CK_ULONG, unsigned char *, CK_ULONG *);
typedef CK_RV (*fn_gen_key)(CK_ULONG, CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, CK_ULONG *);
typedef CK_RV (*fn_wrap)(CK_ULONG, CK_MECHANISM *, CK_ULONG, CK_ULONG, unsigned char *,
                         CK_ULONG *);

/* CK_FUNCTION_LIST of PKCS#11 2.40, in the order of pkcs11f.h. */
typedef struct {
    CK_VERSION version;
    fn_void C_Initialize, C_Finalize, C_GetInfo;
    void *C_GetFunctionList;
    fn_get_slot_list C_GetSlotList;
    void *C_GetSlotInfo, *C_GetTokenInfo;
    fn_get_mech_list C_GetMechanismList;
    fn_get_mech_info C_GetMechanismInfo;
    void *C_InitToken, *C_InitPIN, *C_SetPIN;
    fn_open_session C_OpenSession;
    fn_session C_CloseSession;
    void *C_CloseAllSessions, *C_GetSessionInfo, *C_GetOperationState, *C_SetOperationState;
    fn_login C_Login;
    fn_session C_Logout;
    void *C_CreateObject, *C_CopyObject, *C_DestroyObject;
    fn_object_size C_GetObjectSize;
    fn_get_attr C_GetAttributeValue;
    void *C_SetAttributeValue;
    fn_find_init C_FindObjectsInit;
    fn_find C_FindObjects;
    fn_session C_FindObjectsFinal;
    fn_op_init C_EncryptInit;
    fn_op C_Encrypt, C_EncryptUpdate;
    fn_final C_EncryptFinal;
    fn_op_init C_DecryptInit;
    fn_op C_Decrypt, C_DecryptUpdate;
    fn_final C_DecryptFinal;
    fn_digest_init C_DigestInit;
    fn_op C_Digest;
    fn_update C_DigestUpdate;
    void *C_DigestKey;
    fn_final C_DigestFinal;
    fn_op_init C_SignInit;
    fn_op C_Sign;
    fn_update C_SignUpdate;
    fn_final C_SignFinal;
    void *C_SignRecoverInit, *C_SignRecover, *C_VerifyInit, *C_Verify, *C_VerifyUpdate;
    void *C_VerifyFinal, *C_VerifyRecoverInit, *C_VerifyRecover;
    void *C_DigestEncryptUpdate, *C_DecryptDigestUpdate, *C_SignEncryptUpdate;
    void *C_DecryptVerifyUpdate;
    fn_gen_key C_GenerateKey;
    void *C_GenerateKeyPair;
    fn_wrap C_WrapKey;
    void *C_UnwrapKey, *C_DeriveKey, *C_SeedRandom, *C_GenerateRandom;
    void *C_GetFunctionStatus, *C_CancelFunction, *C_WaitForSlotEvent;
} FUNCTION_LIST;

typedef CK_RV (*fn_get_function_list)(FUNCTION_LIST **);

static FUNCTION_LIST *f;
static CK_ULONG slot;

static void out_rv(const char *key, CK_RV rv) { printf("%s 0x%lx\n", key, rv); }
static void out_len(const char *key, CK_ULONG len) {
    if (len == CK_UNAVAILABLE_INFORMATION)
        printf("%s unavailable\n", key);
    else
        printf("%s %lu\n", key, len);
}
static void out_hex(const char *key, const unsigned char *p, CK_ULONG n) {
    printf("%s ", key);
    for (CK_ULONG i = 0; i < n; i++) printf("%02x", p[i]);
    printf("\n");
}
static void fatal(const char *step, CK_RV rv) {
    printf("fatal %s 0x%lx\n", step, rv);
    fflush(stdout);
    exit(2);
}
static CK_ULONG parse_hex_ulong(const char *s) { return strtoul(s, NULL, 16); }

/* Decodes a hex string into a malloc'ed buffer. */
static unsigned char *parse_hex_bytes(const char *s, CK_ULONG *len) {
    size_t n = strlen(s) / 2;
    unsigned char *p = malloc(n ? n : 1);
    if (!p) fatal("malloc", 0);
    for (size_t i = 0; i < n; i++) {
        unsigned int b = 0;
        if (sscanf(s + 2 * i, "%2x", &b) != 1) fatal("hex", 0);
        p[i] = (unsigned char)b;
    }
    *len = n;
    return p;
}

/* Opens a read/write session logged in as the user. */
static CK_ULONG user_session(const char *pin) {
    CK_ULONG s = 0;
    CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
    if (rv != CKR_OK) fatal("C_OpenSession", rv);
    if ((rv = f->C_Login(s, CKU_USER, (unsigned char *)pin, strlen(pin))) != CKR_OK)
        fatal("C_Login", rv);
    return s;
}

/* The one object labelled `label` (of class `class`, unless it is CK_UNAVAILABLE_INFORMATION). */
static CK_ULONG find_by_label(CK_ULONG s, const char *label, CK_ULONG class) {
    CK_ATTRIBUTE t[] = {
        {CKA_LABEL, (void *)label, strlen(label)},
        {CKA_CLASS, &class, sizeof class},
    };
    CK_RV rv = f->C_FindObjectsInit(s, t, class == CK_UNAVAILABLE_INFORMATION ? 1 : 2);
    if (rv != CKR_OK) fatal("C_FindObjectsInit", rv);
    CK_ULONG found[2], count = 0;
    if ((rv = f->C_FindObjects(s, found, 2, &count)) != CKR_OK) fatal("C_FindObjects", rv);
    f->C_FindObjectsFinal(s);
    if (count != 1) fatal("find_by_label_count", count);
    return found[0];
}

static int cmd_mechanisms(void) {
    CK_ULONG count = 0;
    CK_RV rv = f->C_GetMechanismList(slot, NULL, &count);
    if (rv != CKR_OK) fatal("C_GetMechanismList size", rv);
    CK_ULONG *list = malloc((count ? count : 1) * sizeof *list);
    if (!list) fatal("malloc", 0);
    /* One too few: CKR_BUFFER_TOO_SMALL and the count needed. */
    if (count > 0) {
        CK_ULONG short_count = count - 1;
        out_rv("list_too_small_rv", f->C_GetMechanismList(slot, list, &short_count));
        out_len("list_too_small_count", short_count);
    }
    if ((rv = f->C_GetMechanismList(slot, list, &count)) != CKR_OK)
        fatal("C_GetMechanismList", rv);
    printf("mech_count %lu\n", count);
    for (CK_ULONG i = 0; i < count; i++) {
        CK_MECHANISM_INFO info;
        memset(&info, 0, sizeof info);
        rv = f->C_GetMechanismInfo(slot, list[i], &info);
        printf("mech 0x%lx 0x%lx %lu %lu 0x%lx\n", list[i], rv, info.ulMinKeySize,
               info.ulMaxKeySize, info.flags);
    }
    free(list);
    return 0;
}

static int cmd_ulong_attr(const char *pin, const char *label, const char *type) {
    CK_ULONG s = user_session(pin);
    CK_ULONG obj = find_by_label(s, label, CK_UNAVAILABLE_INFORMATION);
    CK_ULONG value = 0x5a5a5a5aUL;
    CK_ATTRIBUTE a = {parse_hex_ulong(type), &value, sizeof value};
    out_rv("rv", f->C_GetAttributeValue(s, obj, &a, 1));
    out_len("len", a.ulValueLen);
    out_len("value", value);
    return 0;
}

static int cmd_object_size(const char *pin, const char *label) {
    CK_ULONG s = user_session(pin);
    CK_ULONG obj = find_by_label(s, label, CK_UNAVAILABLE_INFORMATION);
    CK_ULONG size = 0x5a5a5a5aUL;
    out_rv("rv", f->C_GetObjectSize(s, obj, &size));
    out_len("size", size);
    out_rv("null_rv", f->C_GetObjectSize(s, obj, NULL));
    out_rv("bogus_rv", f->C_GetObjectSize(s, 0x7ead0bb1UL, &size));
    return 0;
}

static int cmd_sign_pss(const char *pin, char **args) {
    CK_ULONG s = user_session(pin);
    CK_ULONG key = find_by_label(s, args[0], 3UL /* CKO_PRIVATE_KEY */);
    CK_RSA_PKCS_PSS_PARAMS params = {parse_hex_ulong(args[2]), parse_hex_ulong(args[3]),
                                     strtoul(args[4], NULL, 10)};
    CK_MECHANISM m = {parse_hex_ulong(args[1]), &params, sizeof params};
    CK_ULONG data_len = 0;
    unsigned char *data = parse_hex_bytes(args[5], &data_len);
    CK_RV rv = f->C_SignInit(s, &m, key);
    out_rv("init_rv", rv);
    if (rv == CKR_OK) {
        unsigned char sig[1024];
        CK_ULONG sig_len = sizeof sig;
        rv = f->C_Sign(s, data, data_len, sig, &sig_len);
        out_rv("rv", rv);
        if (rv == CKR_OK) out_hex("sig", sig, sig_len);
    }
    free(data);
    return 0;
}

/* A session secret key made by C_GenerateKey. */
static CK_ULONG gen_secret(CK_ULONG s, CK_ULONG mech, CK_ULONG len, CK_ULONG usage1,
                           CK_ULONG usage2, CK_BBOOL extractable) {
    CK_BBOOL yes = 1, no = 0;
    CK_ATTRIBUTE t[] = {
        {CKA_VALUE_LEN, &len, sizeof len},
        {usage1, &yes, 1},
        {usage2, &yes, 1},
        {CKA_EXTRACTABLE, extractable ? &yes : &no, 1},
        {CKA_SENSITIVE, extractable ? &no : &yes, 1},
    };
    CK_MECHANISM m = {mech, NULL, 0};
    CK_ULONG key = 0;
    CK_RV rv = f->C_GenerateKey(s, &m, t, 5, &key);
    if (rv != CKR_OK) fatal("C_GenerateKey", rv);
    return key;
}

static int cmd_buffers(const char *pin) {
    CK_ULONG s = user_session(pin);
    CK_ULONG aes = gen_secret(s, CKM_AES_KEY_GEN, 32, CKA_ENCRYPT, CKA_DECRYPT, 0);
    CK_ULONG hmac = gen_secret(s, CKM_GENERIC_SECRET_KEY_GEN, 32, CKA_SIGN, CKA_VERIFY, 0);
    CK_RV rv;
    unsigned char data[40], out[256], out2[256], small[4];
    for (unsigned i = 0; i < sizeof data; i++) data[i] = (unsigned char)i;
    CK_ULONG len;

    /* Multi-part AES-CBC-PAD encryption: 40 bytes in, 48 out over Update + Final. */
    unsigned char iv[16];
    memset(iv, 0x11, sizeof iv);
    CK_MECHANISM cbc = {CKM_AES_CBC_PAD, iv, sizeof iv};
    out_rv("enc_init_rv", f->C_EncryptInit(s, &cbc, aes));
    CK_ULONG total = 0;
    len = sizeof out;
    out_rv("enc_update_rv", f->C_EncryptUpdate(s, data, sizeof data, out, &len));
    if (len <= sizeof out) total = len;
    len = 0;
    out_rv("enc_final_query_rv", f->C_EncryptFinal(s, NULL, &len));
    out_len("enc_final_query_len", len + total);
    len = 0;
    out_rv("enc_final_zero_rv", f->C_EncryptFinal(s, small, &len));
    out_len("enc_final_zero_len", len + total);
    len = sizeof out - total;
    out_rv("enc_final_rv", f->C_EncryptFinal(s, out + total, &len));
    if (len <= sizeof out - total) total += len;
    out_len("enc_total_len", total);
    len = sizeof out2;
    out_rv("enc_final_again_rv", f->C_EncryptFinal(s, out2, &len));

    /* Single-part decryption of it: size query, too small (stays active), the real one. */
    out_rv("dec_init_rv", f->C_DecryptInit(s, &cbc, aes));
    len = 0;
    out_rv("dec_query_rv", f->C_Decrypt(s, out, total, NULL, &len));
    CK_ULONG query_len = len;
    printf("dec_query_len_ok %d\n", query_len >= sizeof data && query_len <= total);
    len = 3;
    out_rv("dec_too_small_rv", f->C_Decrypt(s, out, total, small, &len));
    len = sizeof out2;
    out_rv("dec_rv", f->C_Decrypt(s, out, total, out2, &len));
    out_len("dec_len", len);
    printf("dec_roundtrip %d\n", len == sizeof data && memcmp(out2, data, sizeof data) == 0);
    len = sizeof out2;
    out_rv("dec_again_rv", f->C_Decrypt(s, out, total, out2, &len));

    /* C_EncryptUpdate with a NULL output is a length query: it must not consume the input.
     * 16 bytes asked about, then the same 16 bytes encrypted: 16 bytes of output in all. */
    CK_MECHANISM ecb = {CKM_AES_ECB, NULL, 0};
    out_rv("ecb_init_rv", f->C_EncryptInit(s, &ecb, aes));
    len = 0;
    out_rv("ecb_update_query_rv", f->C_EncryptUpdate(s, data, 16, NULL, &len));
    total = 0;
    len = sizeof out;
    out_rv("ecb_update_rv", f->C_EncryptUpdate(s, data, 16, out, &len));
    if (len <= sizeof out) total = len;
    len = sizeof out - total;
    out_rv("ecb_final_rv", f->C_EncryptFinal(s, out + total, &len));
    if (len <= sizeof out - total) total += len;
    out_len("ecb_total_len", total);
    /* The same through C_Encrypt, to compare. */
    out_rv("ecb_single_init_rv", f->C_EncryptInit(s, &ecb, aes));
    len = sizeof out2;
    out_rv("ecb_single_rv", f->C_Encrypt(s, data, 16, out2, &len));
    printf("ecb_multi_equals_single %d\n", total == 16 && len == 16 && memcmp(out, out2, 16) == 0);

    /* Multi-part HMAC: C_SignFinal too small stays active, equals single-part. */
    CK_MECHANISM hm = {CKM_SHA256_HMAC, NULL, 0};
    out_rv("sign_init_rv", f->C_SignInit(s, &hm, hmac));
    out_rv("sign_update_rv", f->C_SignUpdate(s, data, 7));
    out_rv("sign_update2_rv", f->C_SignUpdate(s, data + 7, sizeof data - 7));
    len = 0;
    out_rv("sign_final_query_rv", f->C_SignFinal(s, NULL, &len));
    out_len("sign_final_query_len", len);
    len = sizeof small;
    out_rv("sign_final_too_small_rv", f->C_SignFinal(s, small, &len));
    out_len("sign_final_too_small_len", len);
    len = sizeof out;
    out_rv("sign_final_rv", f->C_SignFinal(s, out, &len));
    CK_ULONG mac_len = len;
    len = sizeof out;
    out_rv("sign_final_again_rv", f->C_SignFinal(s, out2, &len));
    out_rv("sign_single_init_rv", f->C_SignInit(s, &hm, hmac));
    len = sizeof out2;
    out_rv("sign_single_rv", f->C_Sign(s, data, sizeof data, out2, &len));
    printf("sign_multi_equals_single %d\n",
           mac_len == 32 && len == 32 && memcmp(out, out2, 32) == 0);

    /* Digest: single-part too small stays active; DigestFinal likewise. */
    CK_MECHANISM sha = {CKM_SHA256, NULL, 0};
    out_rv("digest_init_rv", f->C_DigestInit(s, &sha));
    len = 0;
    out_rv("digest_query_rv", f->C_Digest(s, data, sizeof data, NULL, &len));
    out_len("digest_query_len", len);
    len = sizeof small;
    out_rv("digest_too_small_rv", f->C_Digest(s, data, sizeof data, small, &len));
    out_len("digest_too_small_len", len);
    len = sizeof out;
    out_rv("digest_rv", f->C_Digest(s, data, sizeof data, out, &len));
    out_hex("digest", out, len == 32 ? 32 : 0);
    out_rv("digest_multi_init_rv", f->C_DigestInit(s, &sha));
    out_rv("digest_update_rv", f->C_DigestUpdate(s, data, sizeof data));
    len = sizeof small;
    out_rv("digest_final_too_small_rv", f->C_DigestFinal(s, small, &len));
    out_len("digest_final_too_small_len", len);
    len = sizeof out2;
    out_rv("digest_final_rv", f->C_DigestFinal(s, out2, &len));
    out_hex("digest_multi", out2, len == 32 ? 32 : 0);

    /* C_WrapKey: size query, too small, then the real thing (AES key wrap of a 16-byte key
     * is 24 bytes). */
    CK_ULONG kek = gen_secret(s, CKM_AES_KEY_GEN, 32, CKA_WRAP, CKA_ENCRYPT, 0);
    CK_ULONG target = gen_secret(s, CKM_AES_KEY_GEN, 16, CKA_ENCRYPT, CKA_DECRYPT, 1);
    CK_MECHANISM kw = {CKM_AES_KEY_WRAP, NULL, 0};
    len = 0;
    out_rv("wrap_query_rv", f->C_WrapKey(s, &kw, kek, target, NULL, &len));
    out_len("wrap_query_len", len);
    len = sizeof small;
    out_rv("wrap_too_small_rv", f->C_WrapKey(s, &kw, kek, target, small, &len));
    out_len("wrap_too_small_len", len);
    len = sizeof out;
    out_rv("wrap_rv", f->C_WrapKey(s, &kw, kek, target, out, &len));
    out_len("wrap_len", len);

    rv = f->C_CloseSession(s);
    out_rv("close_rv", rv);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s <module.so> <user PIN> <command> [arguments]\n", argv[0]);
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
    CK_RV rv = get_list(&f);
    if (rv != CKR_OK || !f) fatal("C_GetFunctionList", rv);
    if ((rv = f->C_Initialize(NULL)) != CKR_OK) fatal("C_Initialize", rv);
    CK_ULONG slots[8], count = 8;
    if ((rv = f->C_GetSlotList(1, slots, &count)) != CKR_OK || count == 0)
        fatal("C_GetSlotList", rv);
    slot = slots[0];

    const char *pin = argv[2], *cmd = argv[3];
    int status;
    if (strcmp(cmd, "mechanisms") == 0 && argc == 4) {
        status = cmd_mechanisms();
    } else if (strcmp(cmd, "ulong-attr") == 0 && argc == 6) {
        status = cmd_ulong_attr(pin, argv[4], argv[5]);
    } else if (strcmp(cmd, "object-size") == 0 && argc == 5) {
        status = cmd_object_size(pin, argv[4]);
    } else if (strcmp(cmd, "sign-pss") == 0 && argc == 10) {
        status = cmd_sign_pss(pin, argv + 4);
    } else if (strcmp(cmd, "buffers") == 0 && argc == 4) {
        status = cmd_buffers(pin);
    } else {
        fprintf(stderr, "unknown command or wrong arguments: %s\n", cmd);
        return 64;
    }
    out_rv("finalize_rv", f->C_Finalize(NULL));
    printf("done 1\n");
    fflush(stdout);
    return status;
}
