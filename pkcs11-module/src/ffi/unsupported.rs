//! Functions this module does not offer (yet): each checks that the module is initialized
//! and answers `CKR_FUNCTION_NOT_SUPPORTED` (the two legacy parallel-function calls answer
//! `CKR_FUNCTION_NOT_PARALLEL`, as the spec requires).

use crate::error::{Error, Result};
use crate::token;
use cryptoki_sys as ck;
use hsm_proto::ErrorCode;
use std::ffi::c_void;

fn not_supported() -> Result<()> {
    token::current()?;
    Err(ErrorCode::FunctionNotSupported.into())
}

type Session = ck::CK_SESSION_HANDLE;
type Bytes = *mut ck::CK_BYTE;
type Len = ck::CK_ULONG;
type LenOut = *mut ck::CK_ULONG;
type Mech = *mut ck::CK_MECHANISM;
type Object = ck::CK_OBJECT_HANDLE;

cryptoki_fn! {
    /// Token initialization is done with `hsmctl`.
    fn C_InitToken(_slot: ck::CK_SLOT_ID, _pin: *mut ck::CK_UTF8CHAR, _len: Len, _label: *mut ck::CK_UTF8CHAR) {
        not_supported()
    }
    /// Not supported.
    fn C_GetOperationState(_s: Session, _state: Bytes, _len: LenOut) { not_supported() }
    /// Not supported.
    fn C_SetOperationState(_s: Session, _state: Bytes, _len: Len, _enc: Object, _auth: Object) {
        not_supported()
    }
    /// Not supported.
    fn C_SignRecoverInit(_s: Session, _m: Mech, _k: Object) { not_supported() }
    /// Not supported.
    fn C_SignRecover(_s: Session, _d: Bytes, _l: Len, _o: Bytes, _ol: LenOut) { not_supported() }
    /// Not supported.
    fn C_VerifyRecoverInit(_s: Session, _m: Mech, _k: Object) { not_supported() }
    /// Not supported.
    fn C_VerifyRecover(_s: Session, _d: Bytes, _l: Len, _o: Bytes, _ol: LenOut) { not_supported() }
    /// Not supported.
    fn C_DigestEncryptUpdate(_s: Session, _d: Bytes, _l: Len, _o: Bytes, _ol: LenOut) { not_supported() }
    /// Not supported.
    fn C_DecryptDigestUpdate(_s: Session, _d: Bytes, _l: Len, _o: Bytes, _ol: LenOut) { not_supported() }
    /// Not supported.
    fn C_SignEncryptUpdate(_s: Session, _d: Bytes, _l: Len, _o: Bytes, _ol: LenOut) { not_supported() }
    /// Not supported.
    fn C_DecryptVerifyUpdate(_s: Session, _d: Bytes, _l: Len, _o: Bytes, _ol: LenOut) { not_supported() }
    /// Legacy: always `CKR_FUNCTION_NOT_PARALLEL`.
    fn C_GetFunctionStatus(_s: Session) {
        token::current()?;
        Err(Error::FunctionNotParallel)
    }
    /// Legacy: always `CKR_FUNCTION_NOT_PARALLEL`.
    fn C_CancelFunction(_s: Session) {
        token::current()?;
        Err(Error::FunctionNotParallel)
    }

    /// PKCS#11 3.0; not supported.
    fn C_LoginUser(_s: Session, _u: ck::CK_USER_TYPE, _pin: *mut ck::CK_UTF8CHAR, _pl: Len, _user: *mut ck::CK_UTF8CHAR, _ul: Len) {
        not_supported()
    }
    /// PKCS#11 3.0; not supported.
    fn C_SessionCancel(_s: Session, _flags: ck::CK_FLAGS) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_MessageEncryptInit(_s: Session, _m: Mech, _k: Object) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_EncryptMessage(_s: Session, _p: *mut c_void, _pl: Len, _a: Bytes, _al: Len, _d: Bytes, _dl: Len, _o: Bytes, _ol: LenOut) {
        not_supported()
    }
    /// PKCS#11 3.0; not supported.
    fn C_EncryptMessageBegin(_s: Session, _p: *mut c_void, _pl: Len, _a: Bytes, _al: Len) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_EncryptMessageNext(_s: Session, _p: *mut c_void, _pl: Len, _d: Bytes, _dl: Len, _o: Bytes, _ol: LenOut, _f: ck::CK_FLAGS) {
        not_supported()
    }
    /// PKCS#11 3.0; not supported.
    fn C_MessageEncryptFinal(_s: Session) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_MessageDecryptInit(_s: Session, _m: Mech, _k: Object) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_DecryptMessage(_s: Session, _p: *mut c_void, _pl: Len, _a: Bytes, _al: Len, _d: Bytes, _dl: Len, _o: Bytes, _ol: LenOut) {
        not_supported()
    }
    /// PKCS#11 3.0; not supported.
    fn C_DecryptMessageBegin(_s: Session, _p: *mut c_void, _pl: Len, _a: Bytes, _al: Len) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_DecryptMessageNext(_s: Session, _p: *mut c_void, _pl: Len, _d: Bytes, _dl: Len, _o: Bytes, _ol: LenOut, _f: ck::CK_FLAGS) {
        not_supported()
    }
    /// PKCS#11 3.0; not supported.
    fn C_MessageDecryptFinal(_s: Session) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_MessageSignInit(_s: Session, _m: Mech, _k: Object) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_SignMessage(_s: Session, _p: *mut c_void, _pl: Len, _d: Bytes, _dl: Len, _o: Bytes, _ol: LenOut) {
        not_supported()
    }
    /// PKCS#11 3.0; not supported.
    fn C_SignMessageBegin(_s: Session, _p: *mut c_void, _pl: Len) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_SignMessageNext(_s: Session, _p: *mut c_void, _pl: Len, _d: Bytes, _dl: Len, _o: Bytes, _ol: LenOut) {
        not_supported()
    }
    /// PKCS#11 3.0; not supported.
    fn C_MessageSignFinal(_s: Session) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_MessageVerifyInit(_s: Session, _m: Mech, _k: Object) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_VerifyMessage(_s: Session, _p: *mut c_void, _pl: Len, _d: Bytes, _dl: Len, _sig: Bytes, _sl: Len) {
        not_supported()
    }
    /// PKCS#11 3.0; not supported.
    fn C_VerifyMessageBegin(_s: Session, _p: *mut c_void, _pl: Len) { not_supported() }
    /// PKCS#11 3.0; not supported.
    fn C_VerifyMessageNext(_s: Session, _p: *mut c_void, _pl: Len, _d: Bytes, _dl: Len, _sig: Bytes, _sl: Len) {
        not_supported()
    }
    /// PKCS#11 3.0; not supported.
    fn C_MessageVerifyFinal(_s: Session) { not_supported() }
}
