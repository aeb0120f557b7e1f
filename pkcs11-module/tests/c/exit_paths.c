/*
 * How applications leave: the module must neither hang nor crash.
 *
 *   exit_paths <module.so> <mode>
 *     no-finalize      threads sign while main() returns without C_Finalize
 *     atexit-finalize  C_Finalize runs from an atexit handler while threads still sign
 *     finalize-dlclose C_Finalize, dlclose, then exit
 *
 * Needs HSM_PKCS11_CONF and HSM_PIN (source hsm-dev/env). Run by run-exit-paths.sh.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;
static CK_OBJECT_HANDLE key;

static void check(CK_RV rv, const char *what) {
	if (rv != CKR_OK) {
		fprintf(stderr, "%s: 0x%lx\n", what, rv);
		exit(2);
	}
}

static void *signer(void *arg) {
	(void)arg;
	CK_SESSION_HANDLE s;
	if (f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
		return NULL;
	CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
	unsigned char digest[32] = {1}, sig[64];
	for (;;) {
		CK_ULONG len = sizeof sig;
		/* Errors are expected once the module is finalized under us. */
		if (f->C_SignInit(s, &m, key) != CKR_OK)
			continue;
		f->C_Sign(s, digest, sizeof digest, sig, &len);
	}
	return NULL;
}

static void finalize_at_exit(void) {
	CK_RV rv = f->C_Finalize(NULL);
	fprintf(stderr, "C_Finalize from atexit: 0x%lx\n", rv);
}

int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (!lib) {
		fprintf(stderr, "%s\n", dlerror());
		return 2;
	}
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	check(get(&f), "C_GetFunctionList");
	check(f->C_Initialize(NULL), "C_Initialize");
	CK_SESSION_HANDLE s;
	check(f->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s), "C_OpenSession");
	const char *pin = getenv("HSM_PIN");
	check(f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)), "C_Login");
	CK_BYTE params[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
	CK_BBOOL yes = CK_TRUE;
	CK_ATTRIBUTE pub[] = {{CKA_EC_PARAMS, params, sizeof params}, {CKA_VERIFY, &yes, 1}};
	CK_ATTRIBUTE priv[] = {{CKA_SIGN, &yes, 1}};
	CK_MECHANISM gen = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	CK_OBJECT_HANDLE pubkey;
	check(f->C_GenerateKeyPair(s, &gen, pub, 2, priv, 1, &pubkey, &key), "C_GenerateKeyPair");

	if (strcmp(argv[2], "finalize-dlclose") == 0) {
		check(f->C_Finalize(NULL), "C_Finalize");
		dlclose(lib);
		return 0;
	}
	if (strcmp(argv[2], "atexit-finalize") == 0)
		atexit(finalize_at_exit);
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, signer, NULL);
	usleep(300 * 1000);
	return 0; /* exit() with the signers still running */
}
