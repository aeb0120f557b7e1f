//! The few aws-lc operations that aws-lc-rs's safe API does not expose, behind safe functions.
//!
//! aws-lc-rs signs RSA only with SHA-256/384/512 (its signature-encoding constructor is
//! crate-private), yet PKCS#11 applications sign SHA-1 and SHA-224 hashes and hand
//! `CKM_RSA_PKCS` arbitrary `DigestInfo`s (`pkcs11-tool --test`, TLS stacks, Java's
//! NONEwithRSA). aws-lc itself does all of it, constant-time and blinded, with the same keys:
//! this crate calls it through `aws-lc-sys`, which aws-lc-rs already links.
//!
//! This is the second FFI layer of the workspace (after the PKCS#11 shim): every `unsafe`
//! block says why it is sound, and nothing unsafe leaves this file. Keys come in as DER
//! (PKCS#8 private, PKCS#1 `RSAPublicKey` public) and are parsed per call: these are legacy
//! paths, not the hot path.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use aws_lc_sys as ffi;
use std::fmt;

/// An aws-lc call failed (bad key encoding, input too long, bad signature). Deliberately
/// without detail: a failed verification or signing says only that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("aws-lc operation failed")
    }
}

impl std::error::Error for Failed {}

/// The legacy hashes this crate signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-1.
    Sha1,
    /// SHA-224.
    Sha224,
}

impl Hash {
    fn md(self) -> *const ffi::EVP_MD {
        // SAFETY: EVP_sha1/EVP_sha224 take no argument and return pointers to static,
        // immutable method tables that live for the whole process.
        unsafe {
            match self {
                Hash::Sha1 => ffi::EVP_sha1(),
                Hash::Sha224 => ffi::EVP_sha224(),
            }
        }
    }
}

/// An owned `RSA*`, freed on drop.
struct Rsa(*mut ffi::RSA);

impl Drop for Rsa {
    fn drop(&mut self) {
        // SAFETY: the pointer came from aws-lc (non-NULL, checked at construction), we hold
        // the only reference, and it is freed exactly once here.
        unsafe { ffi::RSA_free(self.0) }
    }
}

impl Rsa {
    /// Parses a PKCS#8 RSA private key.
    fn private_from_pkcs8(der: &[u8]) -> Result<Rsa, Failed> {
        let mut cbs = ffi::CBS {
            data: std::ptr::null(),
            len: 0,
        };
        // SAFETY: `cbs` is a valid CBS to initialize; `der` is a live slice of `der.len()`
        // bytes that outlives every use of `cbs` (this function).
        unsafe { ffi::CBS_init(&mut cbs, der.as_ptr(), der.len()) };
        // SAFETY: `cbs` points into `der` as initialized above; aws-lc only reads it.
        let pkey = unsafe { ffi::EVP_parse_private_key(&mut cbs) };
        if pkey.is_null() {
            return Err(Failed);
        }
        // SAFETY: `pkey` is a valid EVP_PKEY (non-NULL above); get1 returns a new reference
        // (or NULL for a non-RSA key), independent of `pkey`, which we free right after.
        let rsa = unsafe { ffi::EVP_PKEY_get1_RSA(pkey) };
        // SAFETY: `pkey` is ours and no longer used.
        unsafe { ffi::EVP_PKEY_free(pkey) };
        if rsa.is_null() {
            Err(Failed)
        } else {
            Ok(Rsa(rsa))
        }
    }

    /// Parses a DER `RSAPublicKey`.
    fn public_from_der(der: &[u8]) -> Result<Rsa, Failed> {
        // SAFETY: `der` is a live slice of `der.len()` bytes; aws-lc copies what it keeps.
        let rsa = unsafe { ffi::RSA_public_key_from_bytes(der.as_ptr(), der.len()) };
        if rsa.is_null() {
            Err(Failed)
        } else {
            Ok(Rsa(rsa))
        }
    }

    fn size(&self) -> usize {
        // SAFETY: `self.0` is a valid RSA for the life of `self`.
        unsafe { ffi::RSA_size(self.0) as usize }
    }
}

/// `RSASSA-PKCS1-v1_5` signature over `input` as given (what `CKM_RSA_PKCS` signs: normally
/// a DER `DigestInfo`), at most the modulus length less 11 bytes.
///
/// # Errors
/// [`Failed`] for a bad key or an input that does not fit.
pub fn rsa_pkcs1_sign_raw(pkcs8: &[u8], input: &[u8]) -> Result<Vec<u8>, Failed> {
    let rsa = Rsa::private_from_pkcs8(pkcs8)?;
    let mut out = vec![0u8; rsa.size()];
    let mut out_len = 0usize;
    // SAFETY: `rsa` is a valid private key; `out` has `out.len()` writable bytes and aws-lc
    // writes at most `max_out` of them; `input` is a live slice of `input.len()` bytes.
    let ok = unsafe {
        ffi::RSA_sign_raw(
            rsa.0,
            &mut out_len,
            out.as_mut_ptr(),
            out.len(),
            input.as_ptr(),
            input.len(),
            ffi::RSA_PKCS1_PADDING,
        )
    };
    if ok != 1 {
        return Err(Failed);
    }
    out.truncate(out_len);
    Ok(out)
}

/// Opens a `RSASSA-PKCS1-v1_5` signature with the public key and returns what was signed
/// (normally a `DigestInfo`), for the caller to compare.
///
/// # Errors
/// [`Failed`] for a bad key or a signature that does not open.
pub fn rsa_pkcs1_recover(public_der: &[u8], signature: &[u8]) -> Result<Vec<u8>, Failed> {
    let rsa = Rsa::public_from_der(public_der)?;
    let mut out = vec![0u8; rsa.size()];
    let mut out_len = 0usize;
    // SAFETY: `rsa` is a valid public key; `out` has `out.len()` writable bytes and aws-lc
    // writes at most `max_out`; `signature` is a live slice.
    let ok = unsafe {
        ffi::RSA_verify_raw(
            rsa.0,
            &mut out_len,
            out.as_mut_ptr(),
            out.len(),
            signature.as_ptr(),
            signature.len(),
            ffi::RSA_PKCS1_PADDING,
        )
    };
    if ok != 1 {
        return Err(Failed);
    }
    out.truncate(out_len);
    Ok(out)
}

/// `RSASSA-PSS` signature over a digest made with `hash`, MGF1 with the same hash.
///
/// # Errors
/// [`Failed`] for a bad key, digest length or salt length.
pub fn rsa_pss_sign(
    pkcs8: &[u8],
    hash: Hash,
    digest: &[u8],
    salt_len: usize,
) -> Result<Vec<u8>, Failed> {
    let salt = i32::try_from(salt_len).map_err(|_| Failed)?;
    let rsa = Rsa::private_from_pkcs8(pkcs8)?;
    let mut out = vec![0u8; rsa.size()];
    let mut out_len = 0usize;
    // SAFETY: `rsa` is a valid private key; `out` has `out.len()` writable bytes (at most
    // `max_out` written); `digest` is a live slice; the EVP_MDs are static tables.
    let ok = unsafe {
        ffi::RSA_sign_pss_mgf1(
            rsa.0,
            &mut out_len,
            out.as_mut_ptr(),
            out.len(),
            digest.as_ptr(),
            digest.len(),
            hash.md(),
            hash.md(),
            salt,
        )
    };
    if ok != 1 {
        return Err(Failed);
    }
    out.truncate(out_len);
    Ok(out)
}

/// Verifies an `RSASSA-PSS` signature over a digest made with `hash`, MGF1 with the same hash.
///
/// # Errors
/// [`Failed`] if it does not verify.
pub fn rsa_pss_verify(
    public_der: &[u8],
    hash: Hash,
    digest: &[u8],
    signature: &[u8],
    salt_len: usize,
) -> Result<(), Failed> {
    let salt = i32::try_from(salt_len).map_err(|_| Failed)?;
    let rsa = Rsa::public_from_der(public_der)?;
    // SAFETY: `rsa` is a valid public key; `digest` and `signature` are live slices of the
    // given lengths; the EVP_MDs are static tables.
    let ok = unsafe {
        ffi::RSA_verify_pss_mgf1(
            rsa.0,
            digest.as_ptr(),
            digest.len(),
            hash.md(),
            hash.md(),
            salt,
            signature.as_ptr(),
            signature.len(),
        )
    };
    if ok == 1 { Ok(()) } else { Err(Failed) }
}

/// An expanded AES key schedule, wiped on drop (it is key material).
struct AesKey(ffi::AES_KEY);

impl AesKey {
    fn new(key: &[u8], decrypt: bool) -> Result<AesKey, Failed> {
        if !matches!(key.len(), 16 | 24 | 32) {
            return Err(Failed);
        }
        let mut schedule = AesKey(ffi::AES_KEY {
            rd_key: [0; 60],
            rounds: 0,
        });
        let bits = (key.len() * 8) as std::os::raw::c_uint;
        // SAFETY: `key` holds `bits / 8` readable bytes (checked above); `schedule.0` is a
        // valid, writable AES_KEY that aws-lc fills in.
        let rc = unsafe {
            if decrypt {
                ffi::AES_set_decrypt_key(key.as_ptr(), bits, &mut schedule.0)
            } else {
                ffi::AES_set_encrypt_key(key.as_ptr(), bits, &mut schedule.0)
            }
        };
        if rc == 0 { Ok(schedule) } else { Err(Failed) }
    }
}

impl Drop for AesKey {
    fn drop(&mut self) {
        for word in self.0.rd_key.iter_mut() {
            // SAFETY: `word` is a valid, aligned u32 of this struct; the volatile write keeps
            // the compiler from eliding the wipe of key material about to be freed.
            unsafe { std::ptr::write_volatile(word, 0) };
        }
    }
}

/// AES key wrap (RFC 3394, `padded = false`) or key wrap with padding (RFC 5649) under a
/// key-encryption key of any AES size, 192 bits included (aws-lc-rs takes 128 and 256 only).
///
/// # Errors
/// [`Failed`] for a bad key-encryption key or an input the scheme cannot wrap.
pub fn aes_key_wrap(kek: &[u8], padded: bool, input: &[u8]) -> Result<Vec<u8>, Failed> {
    let key = AesKey::new(kek, false)?;
    let mut out = vec![0u8; input.len() + 16];
    let len = if padded {
        let mut out_len = 0usize;
        // SAFETY: `key.0` is an initialized schedule; `out` has `out.len()` writable bytes
        // (the padded output is at most input + 15); `input` is a live slice.
        let ok = unsafe {
            ffi::AES_wrap_key_padded(
                &key.0,
                out.as_mut_ptr(),
                &mut out_len,
                out.len(),
                input.as_ptr(),
                input.len(),
            )
        };
        if ok != 1 {
            return Err(Failed);
        }
        out_len
    } else {
        // SAFETY: as above; RFC 3394 output is input + 8 bytes; a NULL IV selects the default.
        let n = unsafe {
            ffi::AES_wrap_key(
                &key.0,
                std::ptr::null(),
                out.as_mut_ptr(),
                input.as_ptr(),
                input.len(),
            )
        };
        usize::try_from(n).map_err(|_| Failed)?
    };
    out.truncate(len);
    Ok(out)
}

/// The inverse of [`aes_key_wrap`]. Failure is opaque (bad integrity check, padding or length).
///
/// # Errors
/// [`Failed`] if the input does not unwrap.
pub fn aes_key_unwrap(kek: &[u8], padded: bool, input: &[u8]) -> Result<Vec<u8>, Failed> {
    let key = AesKey::new(kek, true)?;
    let mut out = vec![0u8; input.len()];
    let len = if padded {
        let mut out_len = 0usize;
        // SAFETY: `key.0` is an initialized decryption schedule; `out` has `out.len()`
        // writable bytes (the output is shorter than the input); `input` is a live slice.
        let ok = unsafe {
            ffi::AES_unwrap_key_padded(
                &key.0,
                out.as_mut_ptr(),
                &mut out_len,
                out.len(),
                input.as_ptr(),
                input.len(),
            )
        };
        if ok != 1 {
            return Err(Failed);
        }
        out_len
    } else {
        if input.len() < 24 {
            return Err(Failed);
        }
        // SAFETY: as above; the output is input - 8 bytes; NULL selects the default IV.
        let n = unsafe {
            ffi::AES_unwrap_key(
                &key.0,
                std::ptr::null(),
                out.as_mut_ptr(),
                input.as_ptr(),
                input.len(),
            )
        };
        usize::try_from(n).map_err(|_| Failed)?
    };
    out.truncate(len);
    Ok(out)
}

/// An owned `EC_KEY*`, freed on drop (it holds a private scalar, which aws-lc wipes).
struct EcKey(*mut ffi::EC_KEY);

impl Drop for EcKey {
    fn drop(&mut self) {
        // SAFETY: non-NULL (checked at construction), owned here, freed exactly once.
        unsafe { ffi::EC_KEY_free(self.0) }
    }
}

/// An owned `EC_POINT*`, freed on drop.
struct EcPoint(*mut ffi::EC_POINT);

impl Drop for EcPoint {
    fn drop(&mut self) {
        // SAFETY: non-NULL (checked at construction), owned here, freed exactly once.
        unsafe { ffi::EC_POINT_free(self.0) }
    }
}

/// An owned `BIGNUM*` holding a secret, cleared and freed on drop.
struct SecretBn(*mut ffi::BIGNUM);

impl Drop for SecretBn {
    fn drop(&mut self) {
        // SAFETY: non-NULL (checked at construction), owned here, freed exactly once.
        unsafe { ffi::BN_clear_free(self.0) }
    }
}

/// ECDH on secp256k1 (aws-lc-rs's agreement API has the P curves only): the x-coordinate of
/// `scalar · peer`, 32 bytes. The peer point (SEC 1, compressed or not) must be on the curve.
///
/// # Errors
/// [`Failed`] for a bad scalar or a point not on the curve.
pub fn ecdh_secp256k1(scalar: &[u8], peer_point: &[u8]) -> Result<Vec<u8>, Failed> {
    // SAFETY: a plain constructor; NULL is handled below.
    let key = unsafe { ffi::EC_KEY_new_by_curve_name(ffi::NID_secp256k1) };
    if key.is_null() {
        return Err(Failed);
    }
    let key = EcKey(key);
    // SAFETY: `scalar` is a live slice of `scalar.len()` bytes; a NULL `ret` asks for a new BIGNUM.
    let bn = unsafe { ffi::BN_bin2bn(scalar.as_ptr(), scalar.len(), std::ptr::null_mut()) };
    if bn.is_null() {
        return Err(Failed);
    }
    let bn = SecretBn(bn);
    // SAFETY: `key.0` and `bn.0` are valid; aws-lc copies the scalar (and checks its range).
    if unsafe { ffi::EC_KEY_set_private_key(key.0, bn.0) } != 1 {
        return Err(Failed);
    }
    // SAFETY: `key.0` is a valid EC_KEY with a group; the group lives as long as the key.
    let group = unsafe { ffi::EC_KEY_get0_group(key.0) };
    // SAFETY: `group` is valid (above); NULL is handled below.
    let point = unsafe { ffi::EC_POINT_new(group) };
    if point.is_null() {
        return Err(Failed);
    }
    let point = EcPoint(point);
    // SAFETY: `group` and `point.0` are valid; `peer_point` is a live slice; a NULL BN_CTX is
    // allowed. aws-lc refuses an encoding that is not a point on the curve.
    let ok = unsafe {
        ffi::EC_POINT_oct2point(
            group,
            point.0,
            peer_point.as_ptr(),
            peer_point.len(),
            std::ptr::null_mut(),
        )
    };
    if ok != 1 {
        return Err(Failed);
    }
    let mut out = vec![0u8; 32];
    // SAFETY: `out` has 32 writable bytes; `point.0` and `key.0` are valid and of the same
    // group; no KDF (NULL) writes the raw x-coordinate.
    let n =
        unsafe { ffi::ECDH_compute_key(out.as_mut_ptr().cast(), out.len(), point.0, key.0, None) };
    if n != 32 {
        return Err(Failed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
