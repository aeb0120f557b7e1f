//! The C ABI: every exported PKCS#11 function, made by one macro, and the immutable function
//! tables. This layer only checks and converts arguments and hands over to
//! [`crate::token`]; no PKCS#11 logic lives here.
//!
//! Each exported function: `#[unsafe(no_mangle)] pub unsafe extern "C"`, a trace span,
//! `catch_unwind` (a panic becomes `CKR_GENERAL_ERROR` and never crosses into C), and one
//! `Result<(), Error> -> CK_RV` conversion. Raw pointers become references and slices only
//! in the helpers below, after their NULL and length checks.

/// Defines exported PKCS#11 functions whose bodies return `Result<()>`.
macro_rules! cryptoki_fn {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block
    )*) => {$(
        $(#[doc = $doc])*
        ///
        /// # Safety
        ///
        /// Pointer arguments must be NULL or valid as the PKCS#11 specification describes
        /// for this function (buffers at least as long as the lengths given with them).
        #[unsafe(no_mangle)]
        #[allow(non_snake_case)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> cryptoki_sys::CK_RV {
            $crate::ffi::guard(stringify!($name), || -> $crate::error::Result<()> { $body })
        }
    )*};
}

pub mod convert;
pub mod crypto;
pub mod general;
pub mod lists;
pub mod object;
pub mod session;
pub mod slot;
pub mod unsupported;

use crate::error::{Error, Result};
use cryptoki_sys as ck;
use hsm_proto::ErrorCode;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use zeroize::Zeroizing;

/// Runs a function body: catches panics, converts the result, logs failures (at debug;
/// `CKR_DEVICE_ERROR` at warn).
pub(crate) fn guard(name: &'static str, body: impl FnOnce() -> Result<()>) -> ck::CK_RV {
    crate::log::check_thread_teardown();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _span = tracing::trace_span!("pkcs11", function = name).entered();
        body()
    }));
    // Logging the outcome may itself fail at process exit (see `check_thread_teardown`):
    // it stays inside `catch_unwind` so nothing ever unwinds into C.
    let (rv, log, panicked): (ck::CK_RV, Option<String>, bool) = match outcome {
        Ok(Ok(())) => (ck::CKR_OK, None, false),
        Ok(Err(e)) => {
            let message = format!("{name}: {e}");
            (e.into(), Some(message), false)
        }
        Err(_) => (
            ck::CKR_GENERAL_ERROR,
            Some(format!("{name}: panic caught at the C boundary")),
            true,
        ),
    };
    if let Some(message) = log {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            if panicked {
                tracing::error!("{message}");
            } else if rv == ck::CKR_DEVICE_ERROR {
                // The cluster could not serve (no quorum, no node reachable): say so at the
                // default log level, with the node's reason.
                tracing::warn!("{message}");
            } else {
                tracing::debug!("{message}");
            }
        }));
    }
    rv
}

fn bad() -> Error {
    Error::Code(ErrorCode::ArgumentsBad)
}

/// A length from C as a `usize` that a slice can have.
fn length(len: ck::CK_ULONG, elem: usize) -> Result<usize> {
    let len = usize::try_from(len).map_err(|_| bad())?;
    if len.saturating_mul(elem.max(1)) > isize::MAX as usize {
        return Err(bad());
    }
    Ok(len)
}

/// A reference from a pointer the caller must provide.
///
/// # Safety
/// `ptr` is NULL or points to a valid, aligned `T` not otherwise referenced during the call.
pub(crate) unsafe fn out<'a, T>(ptr: *mut T) -> Result<&'a mut T> {
    // SAFETY: the caller's contract; `as_mut` handles NULL.
    unsafe { ptr.as_mut() }.ok_or_else(bad)
}

/// An array the caller passes in; NULL is allowed for an empty array.
///
/// # Safety
/// `ptr` is NULL or points to `count` valid `T`s.
pub(crate) unsafe fn array<'a, T>(ptr: *const T, count: ck::CK_ULONG) -> Result<&'a [T]> {
    let count = length(count, size_of::<T>())?;
    if ptr.is_null() {
        return if count == 0 { Ok(&[]) } else { Err(bad()) };
    }
    // SAFETY: non-NULL, and the caller promises `count` elements; the length fits isize.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
}

/// An array the caller lets us write; NULL is allowed for an empty array.
///
/// # Safety
/// `ptr` is NULL or points to `count` valid `T`s not otherwise referenced during the call.
pub(crate) unsafe fn array_mut<'a, T>(ptr: *mut T, count: ck::CK_ULONG) -> Result<&'a mut [T]> {
    let count = length(count, size_of::<T>())?;
    if ptr.is_null() {
        return if count == 0 { Ok(&mut []) } else { Err(bad()) };
    }
    // SAFETY: non-NULL, and the caller promises `count` writable elements; the length
    // fits isize.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, count) })
}

/// Input bytes: borrowed from the caller, or copied when they overlap the output buffer (an
/// in-place encrypt), so that no `&[u8]` and `&mut [u8]` ever alias.
pub(crate) enum Input<'a> {
    Borrowed(&'a [u8]),
    Copied(Zeroizing<Vec<u8>>),
}

impl Deref for Input<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Input::Borrowed(b) => b,
            Input::Copied(c) => c,
        }
    }
}

/// Input bytes that may share memory with an output buffer of `out_len` bytes at `out`.
///
/// # Safety
/// As [`array`] for `ptr`/`len`.
pub(crate) unsafe fn input<'a>(
    ptr: *const u8,
    len: ck::CK_ULONG,
    out: *const u8,
    out_len: ck::CK_ULONG,
) -> Result<Input<'a>> {
    // SAFETY: the caller's contract.
    let data = unsafe { array(ptr, len) }?;
    let overlaps = !out.is_null() && !data.is_empty() && {
        let (a, b) = (data.as_ptr() as usize, out as usize);
        let out_len = usize::try_from(out_len).unwrap_or(usize::MAX);
        a < b.saturating_add(out_len) && b < a.saturating_add(data.len())
    };
    Ok(if overlaps {
        Input::Copied(Zeroizing::new(data.to_vec()))
    } else {
        Input::Borrowed(data)
    })
}

/// The output buffer of a size-query function: `None` when `ptr` is NULL (a length query).
///
/// # Safety
/// `ptr` is NULL or points to `len` writable bytes not otherwise referenced during the call.
pub(crate) unsafe fn output<'a>(ptr: *mut u8, len: ck::CK_ULONG) -> Result<Option<&'a mut [u8]>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract; non-NULL.
    unsafe { array_mut(ptr, len) }.map(Some)
}

/// Stores an output length: the length written, or the length needed when the buffer was
/// too small.
pub(crate) fn set_length(len: &mut ck::CK_ULONG, result: Result<usize>) -> Result<()> {
    match result {
        Ok(n) => {
            *len = n as ck::CK_ULONG;
            Ok(())
        }
        Err(Error::BufferTooSmall(n)) => {
            *len = n as ck::CK_ULONG;
            Err(Error::BufferTooSmall(n))
        }
        Err(e) => Err(e),
    }
}

/// Writes a list with the PKCS#11 size-query protocol: NULL `list` asks for the count; a
/// short list gets `CKR_BUFFER_TOO_SMALL` and the count.
///
/// # Safety
/// `count` is NULL or valid; `list` is NULL or points to `*count` writable `T`s.
pub(crate) unsafe fn write_list<T>(
    items: impl ExactSizeIterator<Item = T>,
    list: *mut T,
    count: *mut ck::CK_ULONG,
) -> Result<()> {
    // SAFETY: the caller's contract.
    let count = unsafe { out(count) }?;
    let n = items.len();
    if list.is_null() {
        *count = n as ck::CK_ULONG;
        return Ok(());
    }
    if (*count as u128) < n as u128 {
        *count = n as ck::CK_ULONG;
        return Err(Error::BufferTooSmall(n));
    }
    // SAFETY: the caller promises `*count >= n` writable elements.
    let dst = unsafe { array_mut(list, n as ck::CK_ULONG) }?;
    for (d, s) in dst.iter_mut().zip(items) {
        *d = s;
    }
    *count = n as ck::CK_ULONG;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_arrays_are_empty_only_with_zero_length() {
        // SAFETY: NULL pointers are never dereferenced.
        unsafe {
            assert!(array::<u8>(std::ptr::null(), 0).unwrap().is_empty());
            assert!(array::<u8>(std::ptr::null(), 1).is_err());
            assert!(output(std::ptr::null_mut(), 5).unwrap().is_none());
            assert!(out::<u64>(std::ptr::null_mut()).is_err());
        }
    }

    #[test]
    fn overlapping_input_is_copied() {
        let mut buf = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let p = buf.as_mut_ptr();
        // SAFETY: both ranges are inside `buf`.
        unsafe {
            let i = input(p, 8, p.add(4), 8).unwrap();
            assert!(matches!(i, Input::Copied(_)));
            assert_eq!(&*i, &[1, 2, 3, 4, 5, 6, 7, 8]);
            let i = input(p, 4, p.add(4), 4).unwrap();
            assert!(matches!(i, Input::Borrowed(_)));
        }
    }

    #[test]
    fn lists_follow_the_size_query_protocol() {
        let mut count: ck::CK_ULONG = 0;
        // SAFETY: `count` and `list` are valid locals; the list has room for `count`.
        unsafe {
            write_list([5u64, 6].into_iter(), std::ptr::null_mut(), &mut count).unwrap();
            assert_eq!(count, 2);
            let mut list = [0u64; 2];
            count = 1;
            assert!(matches!(
                write_list([5u64, 6].into_iter(), list.as_mut_ptr(), &mut count),
                Err(Error::BufferTooSmall(2))
            ));
            assert_eq!(count, 2);
            write_list([5u64, 6].into_iter(), list.as_mut_ptr(), &mut count).unwrap();
            assert_eq!(list, [5, 6]);
        }
    }
}
