//! Signing, verification, encryption, decryption and random numbers.

use super::convert::mechanism;
use super::{array, array_mut, input, out, output, set_length};
use crate::token::{self, crypto::Kind};
use cryptoki_sys as ck;

/// `*Init` for every kind. A NULL mechanism cancels the active operation of that kind
/// (PKCS#11 3.0 semantics, harmless for 2.40 callers).
///
/// # Safety
/// `mech` is NULL or a valid `CK_MECHANISM`.
unsafe fn init(
    session: ck::CK_SESSION_HANDLE,
    kind: Kind,
    mech: *const ck::CK_MECHANISM,
    key: Option<ck::CK_OBJECT_HANDLE>,
) -> crate::error::Result<()> {
    let token = token::current()?;
    if mech.is_null() {
        return token.operation_cancel(session, kind);
    }
    // SAFETY: the caller's contract.
    let mut mechanism = unsafe { mechanism(mech) }?;
    if kind == Kind::Encrypt {
        // SAFETY: the caller's contract, as for `mechanism`.
        if let Some((slot, len)) = unsafe { super::convert::gcm_iv_slot(mech) } {
            token_generated_gcm_iv(&token, session, &mut mechanism, slot, len)?;
        }
    }
    token.operation_init(session, kind, mechanism, key)
}

/// The token-generated GCM IV (the CloudHSM convention, so applications written for it work
/// unchanged): an encryption whose 12-byte IV is all zeros gets an IV from the node's random
/// generator, written back into the caller's `pIv` before `C_EncryptInit` returns, so the
/// caller never picks (and never reuses) an IV. Any other IV is used as given.
fn token_generated_gcm_iv(
    token: &token::Token,
    session: ck::CK_SESSION_HANDLE,
    mechanism: &mut hsm_proto::Mechanism,
    slot: *mut u8,
    len: usize,
) -> crate::error::Result<()> {
    let hsm_proto::MechanismParams::Gcm { iv, .. } = &mut mechanism.params else {
        return Ok(());
    };
    if iv.len() != 12 || len != 12 || iv.iter().any(|b| *b != 0) {
        return Ok(());
    }
    let mut fresh = [0u8; 12];
    token.generate_random(session, &mut fresh)?;
    // SAFETY: `slot` is the caller's non-NULL pIv of `len` (= 12) bytes, which the convention
    // requires to be writable; it was readable a moment ago as the IV we just parsed.
    unsafe { std::ptr::copy_nonoverlapping(fresh.as_ptr(), slot, 12) };
    iv.copy_from_slice(&fresh);
    Ok(())
}

/// Single-part sign, encrypt or decrypt with the size-query protocol.
///
/// # Safety
/// `data` points to `data_len` bytes; `out_len` is NULL or valid; `out_buf` is NULL or
/// points to `*out_len` writable bytes.
unsafe fn single(
    session: ck::CK_SESSION_HANDLE,
    kind: Kind,
    data: *const u8,
    data_len: ck::CK_ULONG,
    out_buf: *mut u8,
    out_len: *mut ck::CK_ULONG,
) -> crate::error::Result<()> {
    let token = token::current()?;
    // SAFETY: the caller's contract.
    let len = unsafe { out(out_len) }?;
    // SAFETY: the caller's contract; copied if it overlaps the output.
    let data = unsafe { input(data, data_len, out_buf, *len) }?;
    // SAFETY: the caller's contract.
    let buf = unsafe { output(out_buf, *len) }?;
    let result = token.operation_single(session, kind, &data, buf);
    set_length(len, result)
}

/// `*Update` for every kind (encrypt and decrypt produce no output until `*Final`).
///
/// # Safety
/// `part` points to `part_len` bytes.
unsafe fn update(
    session: ck::CK_SESSION_HANDLE,
    kind: Kind,
    part: *const u8,
    part_len: ck::CK_ULONG,
) -> crate::error::Result<()> {
    let token = token::current()?;
    // SAFETY: the caller's contract.
    let part = unsafe { array(part, part_len) }?;
    token.operation_update(session, kind, part)
}

/// `*Final` for sign, encrypt and decrypt.
///
/// # Safety
/// `out_len` is NULL or valid; `out_buf` is NULL or points to `*out_len` writable bytes.
unsafe fn finish(
    session: ck::CK_SESSION_HANDLE,
    kind: Kind,
    out_buf: *mut u8,
    out_len: *mut ck::CK_ULONG,
) -> crate::error::Result<()> {
    let token = token::current()?;
    // SAFETY: the caller's contract.
    let len = unsafe { out(out_len) }?;
    // SAFETY: the caller's contract.
    let buf = unsafe { output(out_buf, *len) }?;
    let result = token.operation_final(session, kind, buf);
    set_length(len, result)
}

/// Encrypt/decrypt update: accumulate, output nothing.
///
/// # Safety
/// As [`update`]; `out_len` is NULL or valid.
unsafe fn cipher_update(
    session: ck::CK_SESSION_HANDLE,
    kind: Kind,
    part: *const u8,
    part_len: ck::CK_ULONG,
    out_buf: *const u8,
    out_len: *mut ck::CK_ULONG,
) -> crate::error::Result<()> {
    token::current()?;
    if out_len.is_null() {
        return Err(super::bad());
    }
    // A NULL output buffer asks how much output this part would give: the part is not
    // consumed (the caller sends it again with a buffer). Updates give no output here (it
    // comes at *Final), so the answer is 0 either way.
    if !out_buf.is_null() {
        // SAFETY: the caller's contract.
        unsafe { update(session, kind, part, part_len) }?;
    }
    // SAFETY: non-NULL (checked above), the caller's contract.
    *unsafe { out(out_len) }? = 0;
    Ok(())
}

cryptoki_fn! {
    /// Starts a signature.
    fn C_SignInit(
        session: ck::CK_SESSION_HANDLE,
        mech: *mut ck::CK_MECHANISM,
        key: ck::CK_OBJECT_HANDLE,
    ) {
        // SAFETY: the caller passes a mechanism.
        unsafe { init(session, Kind::Sign, mech, Some(key)) }
    }

    /// Signs in one part.
    fn C_Sign(
        session: ck::CK_SESSION_HANDLE,
        data: *mut ck::CK_BYTE,
        data_len: ck::CK_ULONG,
        signature: *mut ck::CK_BYTE,
        signature_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes its buffers with their lengths.
        unsafe { single(session, Kind::Sign, data, data_len, signature, signature_len) }
    }

    /// Adds data to a multi-part signature.
    fn C_SignUpdate(session: ck::CK_SESSION_HANDLE, part: *mut ck::CK_BYTE, part_len: ck::CK_ULONG) {
        // SAFETY: the caller passes `part_len` bytes.
        unsafe { update(session, Kind::Sign, part, part_len) }
    }

    /// Finishes a multi-part signature.
    fn C_SignFinal(
        session: ck::CK_SESSION_HANDLE,
        signature: *mut ck::CK_BYTE,
        signature_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes its buffer with its length.
        unsafe { finish(session, Kind::Sign, signature, signature_len) }
    }

    /// Starts a verification.
    fn C_VerifyInit(
        session: ck::CK_SESSION_HANDLE,
        mech: *mut ck::CK_MECHANISM,
        key: ck::CK_OBJECT_HANDLE,
    ) {
        // SAFETY: the caller passes a mechanism.
        unsafe { init(session, Kind::Verify, mech, Some(key)) }
    }

    /// Verifies in one part.
    fn C_Verify(
        session: ck::CK_SESSION_HANDLE,
        data: *mut ck::CK_BYTE,
        data_len: ck::CK_ULONG,
        signature: *mut ck::CK_BYTE,
        signature_len: ck::CK_ULONG,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes `data_len` bytes.
        let data = unsafe { array(data, data_len) }?;
        // SAFETY: the caller passes `signature_len` bytes.
        let signature = unsafe { array(signature, signature_len) }?;
        token.verify(session, data, signature)
    }

    /// Adds data to a multi-part verification.
    fn C_VerifyUpdate(session: ck::CK_SESSION_HANDLE, part: *mut ck::CK_BYTE, part_len: ck::CK_ULONG) {
        // SAFETY: the caller passes `part_len` bytes.
        unsafe { update(session, Kind::Verify, part, part_len) }
    }

    /// Finishes a multi-part verification.
    fn C_VerifyFinal(
        session: ck::CK_SESSION_HANDLE,
        signature: *mut ck::CK_BYTE,
        signature_len: ck::CK_ULONG,
    ) {
        let token = token::current()?;
        // SAFETY: the caller passes `signature_len` bytes.
        let signature = unsafe { array(signature, signature_len) }?;
        token.verify_final(session, signature)
    }

    /// Starts an encryption.
    fn C_EncryptInit(
        session: ck::CK_SESSION_HANDLE,
        mech: *mut ck::CK_MECHANISM,
        key: ck::CK_OBJECT_HANDLE,
    ) {
        // SAFETY: the caller passes a mechanism.
        unsafe { init(session, Kind::Encrypt, mech, Some(key)) }
    }

    /// Encrypts in one part (in place is allowed).
    fn C_Encrypt(
        session: ck::CK_SESSION_HANDLE,
        data: *mut ck::CK_BYTE,
        data_len: ck::CK_ULONG,
        encrypted: *mut ck::CK_BYTE,
        encrypted_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes its buffers with their lengths.
        unsafe { single(session, Kind::Encrypt, data, data_len, encrypted, encrypted_len) }
    }

    /// Adds data to a multi-part encryption; the ciphertext comes at `C_EncryptFinal`.
    fn C_EncryptUpdate(
        session: ck::CK_SESSION_HANDLE,
        part: *mut ck::CK_BYTE,
        part_len: ck::CK_ULONG,
        encrypted_part: *mut ck::CK_BYTE,
        encrypted_part_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes `part_len` bytes and a length to fill.
        unsafe { cipher_update(session, Kind::Encrypt, part, part_len, encrypted_part, encrypted_part_len) }
    }

    /// Finishes a multi-part encryption: the whole ciphertext and tag.
    fn C_EncryptFinal(
        session: ck::CK_SESSION_HANDLE,
        last: *mut ck::CK_BYTE,
        last_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes its buffer with its length.
        unsafe { finish(session, Kind::Encrypt, last, last_len) }
    }

    /// Starts a decryption.
    fn C_DecryptInit(
        session: ck::CK_SESSION_HANDLE,
        mech: *mut ck::CK_MECHANISM,
        key: ck::CK_OBJECT_HANDLE,
    ) {
        // SAFETY: the caller passes a mechanism.
        unsafe { init(session, Kind::Decrypt, mech, Some(key)) }
    }

    /// Decrypts in one part (in place is allowed).
    fn C_Decrypt(
        session: ck::CK_SESSION_HANDLE,
        encrypted: *mut ck::CK_BYTE,
        encrypted_len: ck::CK_ULONG,
        data: *mut ck::CK_BYTE,
        data_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes its buffers with their lengths.
        unsafe { single(session, Kind::Decrypt, encrypted, encrypted_len, data, data_len) }
    }

    /// Adds ciphertext to a multi-part decryption; the plaintext comes at `C_DecryptFinal`
    /// (after the tag is checked).
    fn C_DecryptUpdate(
        session: ck::CK_SESSION_HANDLE,
        part: *mut ck::CK_BYTE,
        part_len: ck::CK_ULONG,
        data: *mut ck::CK_BYTE,
        data_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes `part_len` bytes and a length to fill.
        unsafe { cipher_update(session, Kind::Decrypt, part, part_len, data, data_len) }
    }

    /// Finishes a multi-part decryption: the whole plaintext.
    fn C_DecryptFinal(
        session: ck::CK_SESSION_HANDLE,
        last: *mut ck::CK_BYTE,
        last_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes its buffer with its length.
        unsafe { finish(session, Kind::Decrypt, last, last_len) }
    }

    /// Random bytes from the cluster.
    fn C_GenerateRandom(session: ck::CK_SESSION_HANDLE, data: *mut ck::CK_BYTE, len: ck::CK_ULONG) {
        let token = token::current()?;
        // SAFETY: the caller passes `len` writable bytes.
        let data = unsafe { array_mut(data, len) }?;
        token.generate_random(session, data)
    }

    /// Seeding is not supported: the cluster's generator takes no outside seed.
    fn C_SeedRandom(session: ck::CK_SESSION_HANDLE, seed: *mut ck::CK_BYTE, len: ck::CK_ULONG) {
        let token = token::current()?;
        if seed.is_null() && len != 0 {
            return Err(super::bad());
        }
        token.seed_random(session)
    }

    /// Starts a digest.
    fn C_DigestInit(session: ck::CK_SESSION_HANDLE, mech: *mut ck::CK_MECHANISM) {
        // SAFETY: the caller passes a mechanism.
        unsafe { init(session, Kind::Digest, mech, None) }
    }

    /// Digests in one part.
    fn C_Digest(
        session: ck::CK_SESSION_HANDLE,
        data: *mut ck::CK_BYTE,
        data_len: ck::CK_ULONG,
        digest: *mut ck::CK_BYTE,
        digest_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes its buffers with their lengths.
        unsafe { single(session, Kind::Digest, data, data_len, digest, digest_len) }
    }

    /// Adds data to a multi-part digest.
    fn C_DigestUpdate(session: ck::CK_SESSION_HANDLE, part: *mut ck::CK_BYTE, part_len: ck::CK_ULONG) {
        // SAFETY: the caller passes `part_len` bytes.
        unsafe { update(session, Kind::Digest, part, part_len) }
    }

    /// Adds a secret key's value to a multi-part digest.
    fn C_DigestKey(session: ck::CK_SESSION_HANDLE, key: ck::CK_OBJECT_HANDLE) {
        token::current()?.digest_key(session, key)
    }

    /// Finishes a multi-part digest.
    fn C_DigestFinal(
        session: ck::CK_SESSION_HANDLE,
        digest: *mut ck::CK_BYTE,
        digest_len: *mut ck::CK_ULONG,
    ) {
        // SAFETY: the caller passes its buffer with its length.
        unsafe { finish(session, Kind::Digest, digest, digest_len) }
    }
}
