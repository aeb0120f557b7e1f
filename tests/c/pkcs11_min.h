/*
 * The few PKCS#11 types and constants every probe uses (values from the PKCS#11 2.40 headers),
 * so the probes build without any development package. Each probe declares the rest it needs.
 */
#ifndef HSM_TESTS_PKCS11_MIN_H
#define HSM_TESTS_PKCS11_MIN_H

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef unsigned char CK_BBOOL;

typedef struct { unsigned char major, minor; } CK_VERSION;
typedef struct { CK_ULONG type; void *pValue; CK_ULONG ulValueLen; } CK_ATTRIBUTE;
typedef struct { CK_ULONG mechanism; void *pParameter; CK_ULONG ulParameterLen; } CK_MECHANISM;

#define CK_UNAVAILABLE_INFORMATION (~0UL)
#define CKR_OK 0x0UL
#define CKF_RW_SESSION 2UL
#define CKF_SERIAL_SESSION 4UL
#define CKU_USER 1UL
#define CKA_CLASS 0x0UL
#define CKA_LABEL 0x3UL
#define CKM_ECDSA 0x1041UL

#endif
