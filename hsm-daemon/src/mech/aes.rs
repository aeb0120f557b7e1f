//! AES: `CKM_AES_ECB`, `CKM_AES_CBC`, `CKM_AES_CBC_PAD`, `CKM_AES_CTR` (streamed block-wise),
//! `CKM_AES_GCM` (buffered: a decryption releases nothing before the tag verifies),
//! `CKM_AES_CMAC` (streamed), and the key wraps `CKM_AES_KEY_WRAP` (RFC 3394) and
//! `CKM_AES_KEY_WRAP_PAD` / `CKM_AES_KEY_WRAP_KWP` (both RFC 5649).
//!
//! Limits that come from aws-lc-rs, documented rather than worked around with our own
//! cryptography:
//! - GCM: 96-bit IVs and 128-bit tags only (`MechanismParamInvalid` otherwise).
//! - Key wrap: 128- and 256-bit KEKs only (aws-lc-rs exposes no AES-192 KW); only the default
//!   integrity check values (RFC 3394 `A6A6A6A6A6A6A6A6`, RFC 5649 `A65959A6`) as IV.
//! - `CKM_AES_KEY_WRAP_PAD` means RFC 5649 here, as in SoftHSMv2 and AWS CloudHSM, not the
//!   "RFC 3394 over PKCS#7 padding" that PKCS#11 3.0 moved to its historical mechanisms.
//!
//! CTR follows `CK_AES_CTR_PARAMS`: the low `ulCounterBits` (1 to 128) of the counter block
//! count, big-endian; the rest is fixed. Input that would make the counter wrap is
//! `DataLenRange`, before any of it is processed.

use super::{
    Collected, KeyRef, MAX_BUFFERED, Mech, Operation, Registry, Started, decrypt_failed,
    expect_no_signature, expect_signature, failed, key_type_inconsistent, no_params, param_invalid,
    random, signature_invalid, unwrap_failed,
};
use crate::error::Error;
use crate::keys::{AesCipher, SecretKey};
use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};
use aws_lc_rs::cipher::{DecryptionContext, EncryptionContext};
use aws_lc_rs::cmac;
use aws_lc_rs::key_wrap::{self, AesKek, KeyWrap, KeyWrapPadded};
use cryptoki_sys as ck;
use hsm_proto::{ErrorCode, Mechanism, MechanismParams};
use std::sync::Arc;
use subtle::{ConstantTimeEq, ConstantTimeGreater};
use zeroize::{Zeroize, Zeroizing};

const BLOCK: usize = 16;
const TAG_LEN: usize = 16;
const KW_DEFAULT_IV: [u8; 8] = [0xa6; 8];
const KWP_DEFAULT_IV: [u8; 4] = [0xa6, 0x59, 0x59, 0xa6];

/// An AES key held by a running operation.
struct AesRef(Arc<SecretKey>);

impl AesRef {
    fn from(mech: &Mechanism, key: &KeyRef) -> Result<AesRef, Error> {
        match key {
            KeyRef::Secret(k) if matches!(k.as_ref(), SecretKey::Aes { .. }) => {
                Ok(AesRef(k.clone()))
            }
            _ => Err(key_type_inconsistent(mech, "an AES key")),
        }
    }

    fn get(&self) -> Result<(&AesCipher, &[u8]), Error> {
        match self.0.as_ref() {
            SecretKey::Aes { cipher, bytes } => Ok((cipher, bytes)),
            _ => Err(failed("AES key access")),
        }
    }
}

/// Takes the whole blocks of `pending ++ data` to process now; keeps the rest (and, with
/// `hold_last`, the final whole block, which may carry padding) in `pending`.
fn take_blocks(
    pending: &mut Zeroizing<Vec<u8>>,
    data: &[u8],
    hold_last: bool,
) -> Zeroizing<Vec<u8>> {
    let total = pending.len() + data.len();
    let mut take = total / BLOCK * BLOCK;
    if hold_last && take == total && take > 0 {
        take -= BLOCK;
    }
    let from_pending = take.min(pending.len());
    let mut out = Zeroizing::new(Vec::with_capacity(take));
    out.extend_from_slice(&pending[..from_pending]);
    out.extend_from_slice(&data[..take - from_pending]);
    let mut rest = Zeroizing::new(Vec::with_capacity(2 * BLOCK));
    rest.extend_from_slice(&pending[from_pending..]);
    rest.extend_from_slice(&data[take - from_pending..]);
    *pending = rest;
    out
}

fn iv16(mech: &Mechanism) -> Result<[u8; BLOCK], Error> {
    match &mech.params {
        MechanismParams::Bytes(iv) => iv
            .as_slice()
            .try_into()
            .map_err(|_| param_invalid("AES-CBC: the IV must be 16 bytes")),
        _ => Err(param_invalid("AES-CBC needs a 16-byte IV parameter")),
    }
}

// ----- ECB and CBC --------------------------------------------------------------------------

struct BlockOp {
    key: AesRef,
    encrypt: bool,
    /// CBC chaining value; `None` for ECB.
    iv: Option<[u8; BLOCK]>,
    pad: bool,
    pending: Zeroizing<Vec<u8>>,
}

impl BlockOp {
    fn process(&mut self, blocks: &mut [u8]) -> Result<(), Error> {
        if blocks.is_empty() {
            return Ok(());
        }
        let (cipher, bytes) = self.key.get()?;
        let crypt_failed = || failed("AES");
        match (self.iv.as_mut(), self.encrypt) {
            (None, true) => {
                cipher
                    .ecb_enc(bytes)?
                    .less_safe_encrypt(blocks, EncryptionContext::None)
                    .map_err(|_| crypt_failed())?;
            }
            (None, false) => {
                cipher
                    .ecb_dec(bytes)?
                    .decrypt(blocks, DecryptionContext::None)
                    .map_err(|_| crypt_failed())?;
            }
            (Some(iv), true) => {
                cipher
                    .cbc_enc(bytes)?
                    .less_safe_encrypt(blocks, EncryptionContext::Iv128((*iv).into()))
                    .map_err(|_| crypt_failed())?;
                iv.copy_from_slice(&blocks[blocks.len() - BLOCK..]);
            }
            (Some(iv), false) => {
                let mut next = [0u8; BLOCK];
                next.copy_from_slice(&blocks[blocks.len() - BLOCK..]);
                cipher
                    .cbc_dec(bytes)?
                    .decrypt(blocks, DecryptionContext::Iv128((*iv).into()))
                    .map_err(|_| crypt_failed())?;
                *iv = next;
            }
        }
        Ok(())
    }
}

/// Checks and strips PKCS#7 padding from the last block in constant time; `None` if invalid.
fn unpad(block: &[u8; BLOCK]) -> Option<usize> {
    let pad = block[BLOCK - 1];
    let mut ok = !pad.ct_eq(&0) & !pad.ct_gt(&(BLOCK as u8));
    for (i, b) in block.iter().enumerate() {
        // Byte i is padding when i >= BLOCK - pad.
        let in_pad = (i as u16 + u16::from(pad)).ct_gt(&(BLOCK as u16 - 1));
        ok &= b.ct_eq(&pad) | !in_pad;
    }
    bool::from(ok).then(|| BLOCK - pad as usize)
}

impl Operation for BlockOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let hold_last = self.pad && !self.encrypt;
        let mut blocks = take_blocks(&mut self.pending, data, hold_last);
        self.process(&mut blocks)?;
        Ok(blocks)
    }

    fn finish(mut self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        expect_no_signature(signature)?;
        match (self.pad, self.encrypt) {
            (false, _) => {
                if !self.pending.is_empty() {
                    return Err(Error::new(
                        if self.encrypt {
                            ErrorCode::DataLenRange
                        } else {
                            ErrorCode::EncryptedDataLenRange
                        },
                        "the input is not a whole number of 16-byte blocks",
                    ));
                }
                Ok(Zeroizing::new(Vec::new()))
            }
            (true, true) => {
                let pad = BLOCK - self.pending.len();
                let mut block = Zeroizing::new(Vec::with_capacity(BLOCK));
                block.extend_from_slice(&self.pending);
                block.resize(BLOCK, pad as u8);
                self.process(&mut block)?;
                Ok(block)
            }
            (true, false) => {
                if self.pending.len() != BLOCK {
                    return Err(Error::new(
                        ErrorCode::EncryptedDataLenRange,
                        "AES-CBC-PAD ciphertext is not a non-zero whole number of 16-byte blocks",
                    ));
                }
                let mut block = Zeroizing::new([0u8; BLOCK]);
                block.copy_from_slice(&self.pending);
                self.process(&mut block[..])?;
                let len = unpad(&block).ok_or_else(decrypt_failed)?;
                Ok(Zeroizing::new(block[..len].to_vec()))
            }
        }
    }
}

struct Ecb;
struct Cbc {
    pad: bool,
}

fn block_op(
    mech: &Mechanism,
    key: &KeyRef,
    encrypt: bool,
    iv: Option<[u8; BLOCK]>,
    pad: bool,
) -> Result<Started, Error> {
    Started::op(BlockOp {
        key: AesRef::from(mech, key)?,
        encrypt,
        iv,
        pad,
        pending: Zeroizing::new(Vec::new()),
    })
}

impl Mech for Ecb {
    fn encrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        no_params(mech)?;
        block_op(mech, key, true, None, false)
    }
    fn decrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        no_params(mech)?;
        block_op(mech, key, false, None, false)
    }
}

impl Mech for Cbc {
    fn encrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        block_op(mech, key, true, Some(iv16(mech)?), self.pad)
    }
    fn decrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        block_op(mech, key, false, Some(iv16(mech)?), self.pad)
    }
}

// ----- CTR ----------------------------------------------------------------------------------

struct CtrOp {
    key: AesRef,
    /// The next counter block.
    counter: u128,
    mask: u128,
    /// Blocks the counter may still produce before wrapping; `None` means 2^128.
    blocks_left: Option<u128>,
    /// Unused keystream of the last block, at its end.
    keystream: Zeroizing<[u8; BLOCK]>,
    keystream_used: usize,
}

/// Keystream generated per batch (bounds the temporary buffer for big inputs).
const CTR_BATCH_BLOCKS: usize = 4096;

impl CtrOp {
    fn new(mech: &Mechanism, key: &KeyRef) -> Result<CtrOp, Error> {
        let MechanismParams::AesCtr {
            counter_bits,
            block,
        } = &mech.params
        else {
            return Err(param_invalid("AES-CTR needs CK_AES_CTR_PARAMS"));
        };
        if !(1..=128).contains(counter_bits) {
            return Err(param_invalid("AES-CTR: ulCounterBits must be 1 to 128"));
        }
        let block: [u8; BLOCK] = block
            .as_slice()
            .try_into()
            .map_err(|_| param_invalid("AES-CTR: the counter block must be 16 bytes"))?;
        let counter = u128::from_be_bytes(block);
        let mask = if *counter_bits == 128 {
            u128::MAX
        } else {
            (1u128 << counter_bits) - 1
        };
        Ok(CtrOp {
            key: AesRef::from(mech, key)?,
            counter,
            mask,
            blocks_left: (mask - (counter & mask)).checked_add(1),
            keystream: Zeroizing::new([0u8; BLOCK]),
            keystream_used: BLOCK,
        })
    }
}

/// Returns the counter block and steps it: only the bits under `mask` count (and wrap, which
/// the caller has ruled out).
fn next_counter(counter: &mut u128, mask: u128) -> [u8; BLOCK] {
    let current = *counter;
    *counter = (current & !mask) | (current.wrapping_add(1) & mask);
    current.to_be_bytes()
}

impl Operation for CtrOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let from_leftover = (BLOCK - self.keystream_used).min(data.len());
        let blocks_needed = (data.len() - from_leftover).div_ceil(BLOCK) as u128;
        if self.blocks_left.is_some_and(|left| blocks_needed > left) {
            return Err(Error::new(
                ErrorCode::DataLenRange,
                "AES-CTR: the counter would wrap",
            ));
        }
        if let Some(left) = self.blocks_left.as_mut() {
            *left -= blocks_needed;
        }
        let mut out = Zeroizing::new(data.to_vec());
        for (o, k) in out[..from_leftover]
            .iter_mut()
            .zip(&self.keystream[self.keystream_used..])
        {
            *o ^= k;
        }
        self.keystream_used += from_leftover;
        let (cipher, bytes) = self.key.get()?;
        let ecb = cipher.ecb_enc(bytes)?;
        let mut ks = Zeroizing::new(Vec::with_capacity(CTR_BATCH_BLOCKS * BLOCK));
        for chunk in out[from_leftover..].chunks_mut(CTR_BATCH_BLOCKS * BLOCK) {
            ks.clear();
            for _ in 0..chunk.len().div_ceil(BLOCK) {
                let c = next_counter(&mut self.counter, self.mask);
                ks.extend_from_slice(&c);
            }
            ecb.less_safe_encrypt(&mut ks, EncryptionContext::None)
                .map_err(|_| failed("AES-CTR"))?;
            for (o, k) in chunk.iter_mut().zip(ks.iter()) {
                *o ^= k;
            }
            let used = chunk.len() % BLOCK;
            if used != 0 {
                self.keystream.copy_from_slice(&ks[ks.len() - BLOCK..]);
                self.keystream_used = used;
            } else {
                self.keystream_used = BLOCK;
            }
        }
        Ok(out)
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        expect_no_signature(signature)?;
        Ok(Zeroizing::new(Vec::new()))
    }
}

struct Ctr;

impl Mech for Ctr {
    fn encrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        Started::op(CtrOp::new(mech, key)?)
    }
    fn decrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        Started::op(CtrOp::new(mech, key)?)
    }
}

// ----- GCM ----------------------------------------------------------------------------------

enum GcmIv {
    Given([u8; NONCE_LEN]),
    Generate,
}

fn gcm_params(mech: &Mechanism) -> Result<(GcmIv, &[u8]), Error> {
    let (iv, aad, tag_bits) = match &mech.params {
        MechanismParams::Gcm { iv, aad, tag_bits } => {
            let iv: [u8; NONCE_LEN] = iv
                .as_slice()
                .try_into()
                .map_err(|_| param_invalid("AES-GCM: the IV must be 12 bytes"))?;
            (GcmIv::Given(iv), aad, *tag_bits)
        }
        MechanismParams::GcmGeneratedIv {
            iv_len,
            aad,
            tag_bits,
        } => {
            if *iv_len != NONCE_LEN as u64 {
                return Err(param_invalid("AES-GCM: the token generates 12-byte IVs"));
            }
            (GcmIv::Generate, aad, *tag_bits)
        }
        _ => return Err(param_invalid("AES-GCM needs CK_GCM_PARAMS")),
    };
    if tag_bits != 128 {
        return Err(param_invalid("AES-GCM: only 128-bit tags are supported"));
    }
    Ok((iv, aad))
}

struct GcmOp {
    key: AesRef,
    encrypt: bool,
    iv: [u8; NONCE_LEN],
    aad: Vec<u8>,
    input: Collected,
}

fn gcm_seal(key: &AesRef, iv: [u8; NONCE_LEN], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, Error> {
    let (cipher, bytes) = key.get()?;
    let mut out = Vec::with_capacity(data.len() + TAG_LEN);
    out.extend_from_slice(data);
    let tag = cipher
        .gcm(bytes)?
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut out)
        .map_err(|_| failed("AES-GCM encryption"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens `ciphertext || tag`; `None` if it does not authenticate (or is shorter than a tag).
fn gcm_open(
    key: &AesRef,
    iv: [u8; NONCE_LEN],
    aad: &[u8],
    data: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    let (cipher, bytes) = key.get()?;
    if data.len() < TAG_LEN {
        return Ok(None);
    }
    let (ct, tag) = data.split_at(data.len() - TAG_LEN);
    let mut buf = Zeroizing::new(ct.to_vec());
    let opened = cipher
        .gcm(bytes)?
        .open_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(aad),
            tag,
            &mut buf,
        )
        .is_ok();
    if !opened {
        buf.zeroize();
        return Ok(None);
    }
    Ok(Some(buf))
}

impl Operation for GcmOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.input.push(data)?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        expect_no_signature(signature)?;
        if self.encrypt {
            return gcm_seal(&self.key, self.iv, &self.aad, &self.input.data).map(Zeroizing::new);
        }
        if self.input.data.len() < TAG_LEN {
            return Err(Error::new(
                ErrorCode::EncryptedDataLenRange,
                "AES-GCM ciphertext is shorter than its tag",
            ));
        }
        gcm_open(&self.key, self.iv, &self.aad, &self.input.data)?.ok_or_else(decrypt_failed)
    }
}

struct Gcm;

impl Mech for Gcm {
    fn encrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        let (iv, aad) = gcm_params(mech)?;
        let key = AesRef::from(mech, key)?;
        let (iv, generated) = match iv {
            GcmIv::Given(iv) => (iv, None),
            GcmIv::Generate => {
                let iv = random::<NONCE_LEN>()?;
                (iv, Some(iv.to_vec()))
            }
        };
        Ok(Started {
            op: Box::new(GcmOp {
                key,
                encrypt: true,
                iv,
                aad: aad.to_vec(),
                input: Collected::new(MAX_BUFFERED, ErrorCode::DataLenRange),
            }),
            generated_iv: generated,
        })
    }

    fn decrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        let (iv, aad) = gcm_params(mech)?;
        let GcmIv::Given(iv) = iv else {
            return Err(param_invalid(
                "AES-GCM decryption needs the IV the encryption used",
            ));
        };
        Started::op(GcmOp {
            key: AesRef::from(mech, key)?,
            encrypt: false,
            iv,
            aad: aad.to_vec(),
            input: Collected::new(MAX_BUFFERED + TAG_LEN, ErrorCode::EncryptedDataLenRange),
        })
    }

    fn wrap(&self, mech: &Mechanism, key: &KeyRef, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let (iv, aad) = gcm_params(mech)?;
        let key = AesRef::from(mech, key)?;
        match iv {
            GcmIv::Given(iv) => gcm_seal(&key, iv, aad, payload),
            GcmIv::Generate => {
                let iv = random::<NONCE_LEN>()?;
                let sealed = gcm_seal(&key, iv, aad, payload)?;
                let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
                out.extend_from_slice(&iv);
                out.extend_from_slice(&sealed);
                Ok(out)
            }
        }
    }

    fn unwrap(
        &self,
        mech: &Mechanism,
        key: &KeyRef,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let (iv, aad) = gcm_params(mech)?;
        let key = AesRef::from(mech, key)?;
        let (iv, sealed) = match iv {
            GcmIv::Given(iv) => (iv, wrapped),
            GcmIv::Generate => {
                if wrapped.len() < NONCE_LEN {
                    return Err(unwrap_failed());
                }
                let (iv, sealed) = wrapped.split_at(NONCE_LEN);
                let mut fixed = [0u8; NONCE_LEN];
                fixed.copy_from_slice(iv);
                (fixed, sealed)
            }
        };
        gcm_open(&key, iv, aad, sealed)?.ok_or_else(unwrap_failed)
    }
}

// ----- CMAC ---------------------------------------------------------------------------------

struct CmacOp {
    ctx: cmac::Context,
    verify: bool,
}

impl Operation for CmacOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.ctx.update(data).map_err(|_| failed("AES-CMAC"))?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        let tag = self.ctx.sign().map_err(|_| failed("AES-CMAC"))?;
        if !self.verify {
            expect_no_signature(signature)?;
            return Ok(Zeroizing::new(tag.as_ref().to_vec()));
        }
        let expected = expect_signature(signature)?;
        if expected.len() != BLOCK {
            return Err(Error::new(
                ErrorCode::SignatureLenRange,
                "AES-CMAC signatures are 16 bytes",
            ));
        }
        if bool::from(tag.as_ref().ct_eq(expected)) {
            Ok(Zeroizing::new(Vec::new()))
        } else {
            Err(signature_invalid())
        }
    }
}

struct Cmac;

impl Cmac {
    fn start(mech: &Mechanism, key: &KeyRef, verify: bool) -> Result<Started, Error> {
        no_params(mech)?;
        let key = AesRef::from(mech, key)?;
        let (cipher, bytes) = key.get()?;
        let ctx = cmac::Context::with_key(cipher.cmac(bytes)?);
        Started::op(CmacOp { ctx, verify })
    }
}

impl Mech for Cmac {
    fn sign(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        Cmac::start(mech, key, false)
    }
    fn verify(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        Cmac::start(mech, key, true)
    }
}

// ----- key wrap -----------------------------------------------------------------------------

/// `CKM_AES_KEY_WRAP` (`padded: false`) or RFC 5649 (`padded: true`).
#[derive(Clone, Copy)]
struct KeyWrapMech {
    padded: bool,
}

impl KeyWrapMech {
    fn kek(self, mech: &Mechanism, key: &KeyRef) -> Result<Kek, Error> {
        match &mech.params {
            MechanismParams::None => {}
            MechanismParams::Bytes(iv)
                if (!self.padded && iv.as_slice() == KW_DEFAULT_IV)
                    || (self.padded && iv.as_slice() == KWP_DEFAULT_IV) => {}
            _ => {
                return Err(param_invalid(
                    "AES key wrap: only the default initial value is supported",
                ));
            }
        }
        let key = AesRef::from(mech, key)?;
        let (_, bytes) = key.get()?;
        let cipher = match bytes.len() {
            16 => &key_wrap::AES_128,
            32 => &key_wrap::AES_256,
            // aws-lc-rs's key wrap takes no AES-192 key: aws-lc's C API does (hsm-awslc).
            24 => return Ok(Kek::Aes192(Zeroizing::new(bytes.to_vec()))),
            _ => {
                return Err(Error::new(
                    ErrorCode::KeySizeRange,
                    "AES key wrap needs an AES key",
                ));
            }
        };
        AesKek::new(cipher, bytes)
            .map(Kek::Lc)
            .map_err(|_| failed("AES key wrap setup"))
    }

    /// Checks the length first so that a refusal names the input, not the crypto.
    fn seal(self, kek: Kek, input: &[u8], code: ErrorCode) -> Result<Vec<u8>, Error> {
        let fits = if self.padded {
            !input.is_empty() && input.len() <= MAX_BUFFERED
        } else {
            input.len() >= 16 && input.len().is_multiple_of(8) && input.len() <= MAX_BUFFERED
        };
        if !fits {
            return Err(Error::new(
                code,
                if self.padded {
                    "AES key wrap with padding takes 1 byte or more"
                } else {
                    "AES key wrap takes a multiple of 8 bytes, at least 16"
                },
            ));
        }
        let kek = match kek {
            Kek::Lc(kek) => kek,
            Kek::Aes192(bytes) => {
                return hsm_awslc::aes_key_wrap(&bytes, self.padded, input)
                    .map_err(|_| failed("AES key wrap"));
            }
        };
        let mut out = vec![0u8; input.len() + 16];
        let len = if self.padded {
            kek.wrap_with_padding(input, &mut out)
        } else {
            kek.wrap(input, &mut out)
        }
        .map_err(|_| failed("AES key wrap"))?
        .len();
        out.truncate(len);
        Ok(out)
    }

    /// `None` if the input does not unwrap (any reason: length, integrity check, padding).
    fn open(self, kek: Kek, input: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let valid_len = if self.padded {
            input.len() >= 16 && input.len().is_multiple_of(8)
        } else {
            input.len() >= 24 && input.len().is_multiple_of(8)
        };
        if !valid_len {
            return None;
        }
        let kek = match kek {
            Kek::Lc(kek) => kek,
            Kek::Aes192(bytes) => {
                return hsm_awslc::aes_key_unwrap(&bytes, self.padded, input)
                    .ok()
                    .map(Zeroizing::new);
            }
        };
        let mut out = Zeroizing::new(vec![0u8; input.len()]);
        let len = if self.padded {
            kek.unwrap_with_padding(input, &mut out)
        } else {
            kek.unwrap(input, &mut out)
        }
        .ok()?
        .len();
        out.truncate(len);
        Some(out)
    }
}

/// A key-encryption key: aws-lc-rs's for AES-128/256, the raw key for AES-192 (aws-lc's C API).
enum Kek {
    Lc(AesKek),
    Aes192(Zeroizing<Vec<u8>>),
}

struct KeyWrapOp {
    mech: KeyWrapMech,
    kek: Option<Kek>,
    encrypt: bool,
    input: Collected,
}

impl Operation for KeyWrapOp {
    fn update(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.input.push(data)?;
        Ok(Zeroizing::new(Vec::new()))
    }

    fn finish(mut self: Box<Self>, signature: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Error> {
        expect_no_signature(signature)?;
        let kek = self.kek.take().ok_or_else(|| failed("AES key wrap"))?;
        if self.encrypt {
            return self
                .mech
                .seal(kek, &self.input.data, ErrorCode::DataLenRange)
                .map(Zeroizing::new);
        }
        let n = self.input.data.len();
        let min = if self.mech.padded { 16 } else { 24 };
        if n < min || !n.is_multiple_of(8) {
            return Err(Error::new(
                ErrorCode::EncryptedDataLenRange,
                "the AES key wrap ciphertext has an impossible length",
            ));
        }
        self.mech
            .open(kek, &self.input.data)
            .ok_or_else(decrypt_failed)
    }
}

impl Mech for KeyWrapMech {
    fn encrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        Started::op(KeyWrapOp {
            mech: *self,
            kek: Some(self.kek(mech, key)?),
            encrypt: true,
            input: Collected::new(MAX_BUFFERED, ErrorCode::DataLenRange),
        })
    }

    fn decrypt(&self, mech: &Mechanism, key: &KeyRef) -> Result<Started, Error> {
        Started::op(KeyWrapOp {
            mech: *self,
            kek: Some(self.kek(mech, key)?),
            encrypt: false,
            input: Collected::new(MAX_BUFFERED + 16, ErrorCode::EncryptedDataLenRange),
        })
    }

    fn wrap(&self, mech: &Mechanism, key: &KeyRef, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let kek = self.kek(mech, key)?;
        self.seal(kek, payload, ErrorCode::KeyNotWrappable)
    }

    fn unwrap(
        &self,
        mech: &Mechanism,
        key: &KeyRef,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let kek = self.kek(mech, key)?;
        // RFC 3394 output is n+1 >= 3 semiblocks, RFC 5649's at least 2: any other length
        // cannot be a wrapped key (a public property, so saying so is no oracle).
        let min = if self.padded { 16 } else { 24 };
        if wrapped.len() < min || !wrapped.len().is_multiple_of(8) {
            return Err(Error::new(
                ErrorCode::WrappedKeyLenRange,
                format!("an AES key-wrap blob is a multiple of 8 bytes, at least {min}"),
            ));
        }
        self.open(kek, wrapped).ok_or_else(unwrap_failed)
    }
}

pub(super) fn register(r: &mut Registry) {
    r.add(ck::CKM_AES_ECB, Ecb);
    r.add(ck::CKM_AES_CBC, Cbc { pad: false });
    r.add(ck::CKM_AES_CBC_PAD, Cbc { pad: true });
    r.add(ck::CKM_AES_CTR, Ctr);
    r.add(ck::CKM_AES_GCM, Gcm);
    r.add(ck::CKM_AES_CMAC, Cmac);
    r.add(ck::CKM_AES_KEY_WRAP, KeyWrapMech { padded: false });
    r.add(ck::CKM_AES_KEY_WRAP_PAD, KeyWrapMech { padded: true });
    r.add(ck::CKM_AES_KEY_WRAP_KWP, KeyWrapMech { padded: true });
}

#[cfg(test)]
pub(super) fn unpad_for_tests(block: &[u8; BLOCK]) -> Option<usize> {
    unpad(block)
}
