/*
 * fork_probe: what a pre-forking server (nginx, Apache) does to a PKCS#11 module. The parent
 * initializes, logs in and signs; then it forks WORKERS children. Each child first calls the
 * module with the parent's session (it must get CKR_CRYPTOKI_NOT_INITIALIZED: the parent's
 * state is not the child's), then initializes on its own, logs in and signs ROUNDS times with
 * its own connections. The parent keeps signing while the children run, and after.
 *
 * Usage: fork_probe <module.so> <user PIN> <key label> <workers> <rounds>
 * (the module reads $HSM_PKCS11_CONF). Output: "key value" lines; exit 0 when every step
 * answered as expected, else the step's name and code are printed and the exit status says
 * which side failed (2 parent setup, 3 a child, 4 the parent after the fork).
 *
 * Only the PKCS#11 types and constants used are declared (values from the 2.40 headers).
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pkcs11_min.h"

#define CKR_CRYPTOKI_NOT_INITIALIZED 0x190UL
#define CKR_USER_ALREADY_LOGGED_IN 0x100UL
#define CKO_PRIVATE_KEY 3UL

typedef CK_RV (*fn_void)(void *);
typedef CK_RV (*fn_get_slot_list)(CK_BBOOL, CK_ULONG *, CK_ULONG *);
typedef CK_RV (*fn_open_session)(CK_ULONG, CK_ULONG, void *, void *, CK_ULONG *);
typedef CK_RV (*fn_session)(CK_ULONG);
typedef CK_RV (*fn_login)(CK_ULONG, CK_ULONG, unsigned char *, CK_ULONG);
typedef CK_RV (*fn_find_init)(CK_ULONG, CK_ATTRIBUTE *, CK_ULONG);
typedef CK_RV (*fn_find)(CK_ULONG, CK_ULONG *, CK_ULONG, CK_ULONG *);
typedef CK_RV (*fn_op_init)(CK_ULONG, CK_MECHANISM *, CK_ULONG);
typedef CK_RV (*fn_op)(CK_ULONG, unsigned char *, CK_ULONG, unsigned char *, CK_ULONG *);

/* CK_FUNCTION_LIST of PKCS#11 2.40 up to C_Sign, in the order of pkcs11f.h. */
typedef struct {
    CK_VERSION version;
    fn_void C_Initialize, C_Finalize;
    void *C_GetInfo, *C_GetFunctionList;
    fn_get_slot_list C_GetSlotList;
    void *C_GetSlotInfo, *C_GetTokenInfo, *C_GetMechanismList, *C_GetMechanismInfo;
    void *C_InitToken, *C_InitPIN, *C_SetPIN;
    fn_open_session C_OpenSession;
    fn_session C_CloseSession;
    void *C_CloseAllSessions, *C_GetSessionInfo, *C_GetOperationState, *C_SetOperationState;
    fn_login C_Login;
    void *C_Logout, *C_CreateObject, *C_CopyObject, *C_DestroyObject, *C_GetObjectSize;
    void *C_GetAttributeValue, *C_SetAttributeValue;
    fn_find_init C_FindObjectsInit;
    fn_find C_FindObjects;
    fn_session C_FindObjectsFinal;
    void *C_EncryptInit, *C_Encrypt, *C_EncryptUpdate, *C_EncryptFinal;
    void *C_DecryptInit, *C_Decrypt, *C_DecryptUpdate, *C_DecryptFinal;
    void *C_DigestInit, *C_Digest, *C_DigestUpdate, *C_DigestKey, *C_DigestFinal;
    fn_op_init C_SignInit;
    fn_op C_Sign;
} FUNCTION_LIST;

typedef CK_RV (*fn_get_function_list)(FUNCTION_LIST **);

static FUNCTION_LIST *f;
static const char *pin, *label;

static int fail(const char *who, const char *step, CK_RV rv, int code) {
    printf("%s_failed %s 0x%lx\n", who, step, rv);
    fflush(stdout);
    return code;
}

/* Opens a logged-in session and finds the key; 0 or the failing rv (step in *step). */
static CK_RV open_and_find(CK_ULONG *session, CK_ULONG *key, const char **step) {
    CK_ULONG slots[4], count = 4;
    CK_RV rv;
    *step = "C_GetSlotList";
    if ((rv = f->C_GetSlotList(1, slots, &count)) != CKR_OK) return rv;
    if (count == 0) return 0xffffUL;
    *step = "C_OpenSession";
    if ((rv = f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                               session)) != CKR_OK)
        return rv;
    *step = "C_Login";
    rv = f->C_Login(*session, CKU_USER, (unsigned char *)pin, (CK_ULONG)strlen(pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) return rv;
    CK_ULONG class = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE template[2] = {
        {CKA_CLASS, &class, sizeof class},
        {CKA_LABEL, (void *)label, (CK_ULONG)strlen(label)},
    };
    *step = "C_FindObjectsInit";
    if ((rv = f->C_FindObjectsInit(*session, template, 2)) != CKR_OK) return rv;
    CK_ULONG found = 0;
    *step = "C_FindObjects";
    rv = f->C_FindObjects(*session, key, 1, &found);
    f->C_FindObjectsFinal(*session);
    if (rv != CKR_OK) return rv;
    return found == 1 ? CKR_OK : 0xfffeUL;
}

/* One ECDSA signature over a fixed digest; 0 or the failing rv. */
static CK_RV sign_once(CK_ULONG session, CK_ULONG key, const char **step) {
    unsigned char digest[32], sig[132];
    CK_ULONG sig_len = sizeof sig;
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    CK_RV rv;
    memset(digest, 0x5a, sizeof digest);
    *step = "C_SignInit";
    if ((rv = f->C_SignInit(session, &mech, key)) != CKR_OK) return rv;
    *step = "C_Sign";
    if ((rv = f->C_Sign(session, digest, sizeof digest, sig, &sig_len)) != CKR_OK) return rv;
    return sig_len == 64 ? CKR_OK : 0xfffdUL;
}

static int child(CK_ULONG parent_session, CK_ULONG parent_key, int rounds) {
    const char *step;
    /* The parent's state must not be usable here. */
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    CK_RV rv = f->C_SignInit(parent_session, &mech, parent_key);
    if (rv != CKR_CRYPTOKI_NOT_INITIALIZED) return fail("child", "inherited_C_SignInit", rv, 3);
    if ((rv = f->C_Initialize(NULL)) != CKR_OK) return fail("child", "C_Initialize", rv, 3);
    CK_ULONG session, key;
    if ((rv = open_and_find(&session, &key, &step)) != CKR_OK) return fail("child", step, rv, 3);
    for (int i = 0; i < rounds; i++)
        if ((rv = sign_once(session, key, &step)) != CKR_OK) return fail("child", step, rv, 3);
    if ((rv = f->C_Finalize(NULL)) != CKR_OK) return fail("child", "C_Finalize", rv, 3);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s <module.so> <PIN> <key label> <workers> <rounds>\n", argv[0]);
        return 64;
    }
    pin = argv[2];
    label = argv[3];
    int workers = atoi(argv[4]), rounds = atoi(argv[5]);
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("parent_failed dlopen %s\n", dlerror());
        return 2;
    }
    fn_get_function_list get_list = (fn_get_function_list)dlsym(lib, "C_GetFunctionList");
    if (!get_list || get_list(&f) != CKR_OK || !f) return fail("parent", "C_GetFunctionList", 0, 2);
    const char *step;
    CK_RV rv;
    if ((rv = f->C_Initialize(NULL)) != CKR_OK) return fail("parent", "C_Initialize", rv, 2);
    CK_ULONG session, key;
    if ((rv = open_and_find(&session, &key, &step)) != CKR_OK) return fail("parent", step, rv, 2);
    if ((rv = sign_once(session, key, &step)) != CKR_OK) return fail("parent", step, rv, 2);

    pid_t pids[64];
    if (workers > 64) workers = 64;
    fflush(stdout);
    for (int w = 0; w < workers; w++) {
        pids[w] = fork();
        if (pids[w] < 0) return fail("parent", "fork", 0, 2);
        if (pids[w] == 0) {
            int code = child(session, key, rounds);
            if (code == 0) printf("child_ok %d\n", w);
            fflush(stdout);
            _exit(code);
        }
    }
    int parent_signed = 0;
    for (int i = 0; i < rounds; i++) {
        if ((rv = sign_once(session, key, &step)) != CKR_OK) return fail("parent", step, rv, 4);
        parent_signed++;
    }
    int children_ok = 0;
    for (int w = 0; w < workers; w++) {
        int status = 0;
        if (waitpid(pids[w], &status, 0) == pids[w] && WIFEXITED(status) &&
            WEXITSTATUS(status) == 0)
            children_ok++;
    }
    if ((rv = sign_once(session, key, &step)) != CKR_OK) return fail("parent", step, rv, 4);
    printf("parent_signed %d\n", parent_signed + 1);
    printf("children_ok %d\n", children_ok);
    if ((rv = f->C_Finalize(NULL)) != CKR_OK) return fail("parent", "C_Finalize", rv, 4);
    return children_ok == workers ? 0 : 3;
}
