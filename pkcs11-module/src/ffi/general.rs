//! General-purpose functions and the function-list entry points.

use super::lists::{FUNCTION_LIST, INTERFACES};
use super::{bad, out, write_list};
use crate::error::Error;
use crate::token;
use cryptoki_sys as ck;
use std::ffi::{CStr, c_char, c_void};

cryptoki_fn! {
    /// Initializes the module. Reads `$HSM_PKCS11_CONF` (default `/etc/hsm/pkcs11.toml`).
    fn C_Initialize(init_args: *mut c_void) {
        if !init_args.is_null() {
            // SAFETY: a non-NULL argument points to a CK_C_INITIALIZE_ARGS (spec); read
            // unaligned because C only promises a `void *`.
            let args = unsafe {
                std::ptr::read_unaligned(init_args as *const ck::CK_C_INITIALIZE_ARGS)
            };
            if !args.pReserved.is_null() {
                return Err(bad());
            }
            let given = [
                args.CreateMutex.is_some(),
                args.DestroyMutex.is_some(),
                args.LockMutex.is_some(),
                args.UnlockMutex.is_some(),
            ];
            let all = given.iter().all(|g| *g);
            if !all && given.iter().any(|g| *g) {
                return Err(bad());
            }
            // We always use OS locking; an application that offers only its own mutexes
            // and not CKF_OS_LOCKING_OK forbids that.
            if all && args.flags & ck::CKF_OS_LOCKING_OK == 0 {
                return Err(Error::CantLock);
            }
            if args.flags & ck::CKF_LIBRARY_CANT_CREATE_OS_THREADS != 0 {
                return Err(Error::NeedToCreateThreads);
            }
        }
        token::initialize()
    }

    /// Finalizes the module: closes the connection and stops the runtime.
    fn C_Finalize(reserved: *mut c_void) {
        if !reserved.is_null() {
            token::current()?;
            return Err(bad());
        }
        token::finalize()
    }

    /// Library information.
    fn C_GetInfo(info: *mut ck::CK_INFO) {
        let token = token::current()?;
        // SAFETY: the caller passes a CK_INFO to fill.
        *unsafe { out(info) }? = token.info();
        Ok(())
    }

    /// The PKCS#11 2.40 function list (callable before `C_Initialize`).
    fn C_GetFunctionList(list: *mut *mut ck::CK_FUNCTION_LIST) {
        // SAFETY: the caller passes a pointer to fill.
        let list = unsafe { out(list) }?;
        // The application only reads through this pointer (the spec's type is not const).
        *list = (&raw const FUNCTION_LIST).cast_mut();
        Ok(())
    }

    /// The interfaces offered: "PKCS 11" 3.0 and 2.40 (callable before `C_Initialize`).
    fn C_GetInterfaceList(list: *mut ck::CK_INTERFACE, count: *mut ck::CK_ULONG) {
        let interfaces = INTERFACES.0.iter().copied();
        // SAFETY: the caller passes a count and a list of that many interfaces, or NULL.
        unsafe { write_list(interfaces, list, count) }
    }

    /// One interface by name, version and flags; NULL name and version give the 3.0 one.
    fn C_GetInterface(
        name: *mut ck::CK_UTF8CHAR,
        version: *mut ck::CK_VERSION,
        interface: *mut *mut ck::CK_INTERFACE,
        flags: ck::CK_FLAGS,
    ) {
        // SAFETY: the caller passes a pointer to fill.
        let interface = unsafe { out(interface) }?;
        let name = if name.is_null() {
            None
        } else {
            // SAFETY: a non-NULL name is a NUL-terminated string (spec).
            Some(unsafe { CStr::from_ptr(name as *const c_char) })
        };
        // SAFETY: `version` is NULL or points to a CK_VERSION.
        let version = unsafe { version.as_ref() };
        let found = INTERFACES.0.iter().zip(INTERFACES.1.iter()).find(|(i, v)| {
            // SAFETY: every interface name is one of our NUL-terminated statics.
            let own_name = unsafe { CStr::from_ptr(i.pInterfaceName as *const c_char) };
            name.is_none_or(|n| n == own_name)
                && version.is_none_or(|w| w.major == v.major && w.minor == v.minor)
                && i.flags & flags == flags
        });
        match found {
            Some((i, _)) => {
                // Only read by the application, as for C_GetFunctionList.
                *interface = (i as *const ck::CK_INTERFACE).cast_mut();
                Ok(())
            }
            None => Err(bad()),
        }
    }
}
