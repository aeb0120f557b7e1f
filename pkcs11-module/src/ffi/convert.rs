//! Raw `CK_ATTRIBUTE` arrays and `CK_MECHANISM`s to and from the typed wire forms.

use super::{array, array_mut};
use crate::error::{Error, Result};
use cryptoki_sys as ck;
use hsm_proto::attr::Attribute;
use hsm_proto::mechlist;
use hsm_proto::{AttrOutcome, ErrorCode, Mechanism, MechanismParams};

/// `CK_UNAVAILABLE_INFORMATION`.
use crate::token::slot::UNAVAILABLE;

/// The longest IV or AAD accepted in mechanism parameters (the AAD travels in one frame).
const MAX_PARAM_BYTES: usize = 1 << 20;

/// `CK_GCM_PARAMS` as some applications built against the v2.40 documentation lay it out,
/// without `ulIvBits`. Accepted by its size, which differs from the header's.
#[repr(C)]
#[derive(Clone, Copy)]
struct GcmParamsNoIvBits {
    p_iv: *mut ck::CK_BYTE,
    ul_iv_len: ck::CK_ULONG,
    p_aad: *mut ck::CK_BYTE,
    ul_aad_len: ck::CK_ULONG,
    ul_tag_bits: ck::CK_ULONG,
}

/// Reads the bytes of one attribute value.
///
/// # Safety
/// `a.pValue` is NULL or points to `a.ulValueLen` readable bytes.
unsafe fn value_bytes<'a>(a: &ck::CK_ATTRIBUTE) -> Result<&'a [u8]> {
    // SAFETY: the caller's contract.
    unsafe { array(a.pValue as *const u8, a.ulValueLen) }
}

/// Parses a template for object creation.
///
/// # Errors
/// `ArgumentsBad` for a NULL array or value with a nonzero length; `AttributeTypeInvalid` for
/// a type we do not know; `AttributeValueInvalid` for a value of the wrong size.
///
/// # Safety
/// `ptr` is NULL or points to `count` attributes whose values are valid as described.
pub unsafe fn template(
    ptr: *const ck::CK_ATTRIBUTE,
    count: ck::CK_ULONG,
) -> Result<Vec<Attribute>> {
    // SAFETY: the caller's contract.
    let raw = unsafe { array(ptr, count) }?;
    raw.iter()
        .map(|a| {
            // SAFETY: the caller's contract for each attribute.
            let bytes = unsafe { value_bytes(a) }?;
            Attribute::from_raw(a.type_ as u64, bytes).map_err(Error::Code)
        })
        .collect()
}

/// Parses a search template: `None` if it names an attribute type we do not know (no object
/// can match it).
///
/// # Errors
/// As [`template`], except for unknown types.
///
/// # Safety
/// As [`template`].
pub unsafe fn search_template(
    ptr: *const ck::CK_ATTRIBUTE,
    count: ck::CK_ULONG,
) -> Result<Option<Vec<Attribute>>> {
    // SAFETY: the caller's contract.
    match unsafe { template(ptr, count) } {
        Ok(t) => Ok(Some(t)),
        Err(Error::Code(ErrorCode::AttributeTypeInvalid)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The attribute types a `C_GetAttributeValue` template asks for.
///
/// # Safety
/// `ptr` is NULL or points to `count` attributes.
pub unsafe fn requested_types(
    ptr: *const ck::CK_ATTRIBUTE,
    count: ck::CK_ULONG,
) -> Result<Vec<u64>> {
    // SAFETY: the caller's contract.
    let raw = unsafe { array(ptr, count) }?;
    Ok(raw.iter().map(|a| a.type_ as u64).collect())
}

/// Fills a `C_GetAttributeValue` template with the spec's exact semantics: every attribute
/// is processed; the first problem (too small, sensitive, invalid) is the overall result.
///
/// # Safety
/// `ptr` points to `count` attributes whose non-NULL `pValue`s have `ulValueLen` writable
/// bytes, and `outcomes` has `count` elements.
pub unsafe fn fill_template(
    ptr: *mut ck::CK_ATTRIBUTE,
    count: ck::CK_ULONG,
    outcomes: &[AttrOutcome],
) -> Result<()> {
    // SAFETY: the caller's contract.
    let raw = unsafe { array_mut(ptr, count) }?;
    let mut verdict: Option<ErrorCode> = None;
    for (a, outcome) in raw.iter_mut().zip(outcomes) {
        let problem = match outcome {
            AttrOutcome::Value(value) => {
                let bytes = value.to_raw();
                if a.pValue.is_null() {
                    a.ulValueLen = bytes.len() as ck::CK_ULONG;
                    None
                } else if (a.ulValueLen as u128) >= bytes.len() as u128 {
                    // SAFETY: pValue is non-NULL with ulValueLen >= bytes.len() writable
                    // bytes (the caller's contract); it cannot overlap our `bytes`.
                    let dst =
                        unsafe { array_mut(a.pValue as *mut u8, bytes.len() as ck::CK_ULONG) }?;
                    dst.copy_from_slice(&bytes);
                    a.ulValueLen = bytes.len() as ck::CK_ULONG;
                    None
                } else {
                    a.ulValueLen = UNAVAILABLE;
                    Some(ErrorCode::BufferTooSmall)
                }
            }
            AttrOutcome::Sensitive => {
                a.ulValueLen = UNAVAILABLE;
                Some(ErrorCode::AttributeSensitive)
            }
            AttrOutcome::Invalid => {
                a.ulValueLen = UNAVAILABLE;
                Some(ErrorCode::AttributeTypeInvalid)
            }
        };
        if verdict.is_none() {
            verdict = problem;
        }
    }
    match verdict {
        None => Ok(()),
        Some(code) => Err(Error::Code(code)),
    }
}

/// Reads a parameter structure of exactly `size_of::<T>()` bytes.
///
/// # Safety
/// `m.pParameter` is NULL or points to `m.ulParameterLen` readable bytes.
unsafe fn param<T: Copy>(m: &ck::CK_MECHANISM) -> Option<T> {
    if m.pParameter.is_null() || m.ulParameterLen as u128 != size_of::<T>() as u128 {
        return None;
    }
    // SAFETY: non-NULL and exactly size_of::<T>() readable bytes (the caller's contract);
    // `read_unaligned` because C only promises a `void *`. T is plain old data.
    Some(unsafe { std::ptr::read_unaligned(m.pParameter as *const T) })
}

/// Copies a byte string out of a parameter structure.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes.
unsafe fn param_bytes(ptr: *const u8, len: ck::CK_ULONG) -> Result<Vec<u8>> {
    if len as u128 > MAX_PARAM_BYTES as u128 {
        return Err(ErrorCode::MechanismParamInvalid.into());
    }
    // SAFETY: the caller's contract.
    unsafe { array(ptr, len) }
        .map(<[u8]>::to_vec)
        .map_err(|_| ErrorCode::MechanismParamInvalid.into())
}

fn param_invalid() -> Error {
    Error::Code(ErrorCode::MechanismParamInvalid)
}

/// Parses a `CK_MECHANISM`. Parameters are read only for mechanisms we serve: an unknown
/// mechanism comes back without them, for the token to refuse as `CKR_MECHANISM_INVALID`.
/// Parameter structures the spec defines are parsed with their exact size; any other
/// parameter is passed on as bytes for the node to judge.
///
/// # Errors
/// `ArgumentsBad` for NULL; `MechanismParamInvalid` for a parameter of the wrong size or a
/// NULL one where one is required.
///
/// # Safety
/// `ptr` is NULL or points to a `CK_MECHANISM` whose parameter is valid as described.
pub unsafe fn mechanism(ptr: *const ck::CK_MECHANISM) -> Result<Mechanism> {
    // SAFETY: the caller's contract; `as_ref` handles NULL.
    let m = unsafe { ptr.as_ref() }.ok_or(Error::Code(ErrorCode::ArgumentsBad))?;
    let kind = m.mechanism as u64;
    if mechlist::info(kind).is_none() {
        return Ok(Mechanism::plain(kind));
    }
    // SAFETY: the caller's contract.
    let params = unsafe { params(m) }?;
    Ok(Mechanism { kind, params })
}

/// Where a `CKM_AES_GCM` mechanism's IV lives in the caller's memory, for the token-generated
/// IV convention: `C_EncryptInit` writes the IV it obtained from the node there.
///
/// # Safety
/// As [`mechanism`]: `ptr` points to a valid `CK_MECHANISM` whose parameter is what its
/// length says.
pub unsafe fn gcm_iv_slot(ptr: *const ck::CK_MECHANISM) -> Option<(*mut u8, usize)> {
    // SAFETY: the caller's contract; checked non-NULL by `as_ref`.
    let m = unsafe { ptr.as_ref() }?;
    if m.mechanism != ck::CKM_AES_GCM {
        return None;
    }
    // SAFETY: the caller's contract for the parameter; `param` checks the size.
    let full = unsafe { param::<ck::CK_GCM_PARAMS>(m) };
    // SAFETY: as above.
    let short = unsafe { param::<GcmParamsNoIvBits>(m) };
    let (iv, len) = match (full, short) {
        (Some(p), _) => (p.pIv, p.ulIvLen),
        (None, Some(p)) => (p.p_iv, p.ul_iv_len),
        (None, None) => return None,
    };
    (!iv.is_null()).then_some((iv, len as usize))
}

/// The parameter of a served mechanism.
///
/// # Safety
/// As [`mechanism`].
unsafe fn params(m: &ck::CK_MECHANISM) -> Result<MechanismParams> {
    let absent = m.pParameter.is_null() || m.ulParameterLen == 0;
    Ok(match m.mechanism {
        ck::CKM_AES_GCM => {
            // SAFETY: the caller's contract for the parameter; `param` checks the size.
            let full = unsafe { param::<ck::CK_GCM_PARAMS>(m) };
            // SAFETY: as above; at most one of the two sizes can match.
            let short = unsafe { param::<GcmParamsNoIvBits>(m) };
            let (iv, iv_len, aad, aad_len, tag_bits) = match (full, short) {
                (Some(p), _) => (p.pIv, p.ulIvLen, p.pAAD, p.ulAADLen, p.ulTagBits),
                (None, Some(p)) => (p.p_iv, p.ul_iv_len, p.p_aad, p.ul_aad_len, p.ul_tag_bits),
                (None, None) => return Err(param_invalid()),
            };
            MechanismParams::Gcm {
                // SAFETY: the caller's contract: pIv/pAAD point to their lengths.
                iv: unsafe { param_bytes(iv, iv_len) }?,
                // SAFETY: as above.
                aad: unsafe { param_bytes(aad, aad_len) }?,
                tag_bits: tag_bits as u64,
            }
        }
        ck::CKM_RSA_PKCS_PSS
        | ck::CKM_SHA1_RSA_PKCS_PSS
        | ck::CKM_SHA224_RSA_PKCS_PSS
        | ck::CKM_SHA256_RSA_PKCS_PSS
        | ck::CKM_SHA384_RSA_PKCS_PSS
        | ck::CKM_SHA512_RSA_PKCS_PSS
        | ck::CKM_SHA3_224_RSA_PKCS_PSS
        | ck::CKM_SHA3_256_RSA_PKCS_PSS
        | ck::CKM_SHA3_384_RSA_PKCS_PSS
        | ck::CKM_SHA3_512_RSA_PKCS_PSS => {
            // SAFETY: the caller's contract for the parameter.
            let p = unsafe { param::<ck::CK_RSA_PKCS_PSS_PARAMS>(m) }.ok_or_else(param_invalid)?;
            MechanismParams::Pss {
                hash: p.hashAlg as u64,
                mgf: p.mgf as u64,
                salt_len: p.sLen as u64,
            }
        }
        ck::CKM_RSA_PKCS_OAEP => {
            // SAFETY: the caller's contract for the parameter.
            let p = unsafe { param::<ck::CK_RSA_PKCS_OAEP_PARAMS>(m) }.ok_or_else(param_invalid)?;
            let label = match p.source {
                ck::CKZ_DATA_SPECIFIED => {
                    // SAFETY: the caller's contract: pSourceData points to its length.
                    unsafe { param_bytes(p.pSourceData as *const u8, p.ulSourceDataLen) }?
                }
                0 => Vec::new(),
                _ => return Err(param_invalid()),
            };
            MechanismParams::Oaep {
                hash: p.hashAlg as u64,
                mgf: p.mgf as u64,
                label,
            }
        }
        ck::CKM_AES_CTR => {
            // SAFETY: the caller's contract for the parameter.
            let p = unsafe { param::<ck::CK_AES_CTR_PARAMS>(m) }.ok_or_else(param_invalid)?;
            MechanismParams::AesCtr {
                counter_bits: p.ulCounterBits as u64,
                block: p.cb.to_vec(),
            }
        }
        ck::CKM_ECDH1_DERIVE | ck::CKM_ECDH1_COFACTOR_DERIVE => {
            // SAFETY: the caller's contract for the parameter.
            let p = unsafe { param::<ck::CK_ECDH1_DERIVE_PARAMS>(m) }.ok_or_else(param_invalid)?;
            MechanismParams::Ecdh1Derive {
                kdf: p.kdf as u64,
                // SAFETY: the caller's contract: the pointers point to their lengths.
                shared_data: unsafe { param_bytes(p.pSharedData, p.ulSharedDataLen) }?,
                // SAFETY: as above.
                public_data: unsafe { param_bytes(p.pPublicData, p.ulPublicDataLen) }?,
            }
        }
        ck::CKM_EDDSA if !absent => {
            // SAFETY: the caller's contract for the parameter.
            let p = unsafe { param::<ck::CK_EDDSA_PARAMS>(m) }.ok_or_else(param_invalid)?;
            MechanismParams::Eddsa {
                prehash: p.phFlag != 0,
                // SAFETY: the caller's contract: pContextData points to its length.
                context: unsafe { param_bytes(p.pContextData, p.ulContextDataLen) }?,
            }
        }
        _ if absent => MechanismParams::None,
        // SAFETY: the caller's contract: pParameter points to ulParameterLen bytes.
        _ => MechanismParams::Bytes(unsafe {
            param_bytes(m.pParameter as *const u8, m.ulParameterLen)
        }?),
    })
}

/// A `CK_MECHANISM` with a parameter, for tests.
#[cfg(test)]
fn raw_mechanism<T>(
    kind: ck::CK_MECHANISM_TYPE,
    param: Option<&T>,
    len: usize,
) -> ck::CK_MECHANISM {
    ck::CK_MECHANISM {
        mechanism: kind,
        pParameter: param.map_or(std::ptr::null_mut(), |p| {
            p as *const T as *mut std::ffi::c_void
        }),
        ulParameterLen: len as ck::CK_ULONG,
    }
}

#[cfg(test)]
mod tests;
