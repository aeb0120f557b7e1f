//! The "limit" column: the same operation in-process with aws-lc-rs, no PKCS#11, no IPC. It is
//! the ceiling a module built on this library can approach on this machine.

use crate::error::OpError;
use crate::measure::{Runner, RunnerFactory};
use crate::ops::Op;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest::{Digest, SHA256, SHA384};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
    RSA_PKCS1_SHA256, RsaKeyPair,
};
use aws_lc_rs::{hmac, rand};
use std::sync::Arc;

/// What the limit column calls itself in the table header notes.
pub fn description() -> String {
    "aws-lc-rs (AWS-LC) in-process, no PKCS#11 layer".into()
}

fn crypto_err(what: &str) -> impl Fn(aws_lc_rs::error::Unspecified) -> OpError + '_ {
    move |_| OpError::failed(format!("aws-lc-rs {what} failed"))
}

fn random<const N: usize>() -> Result<[u8; N], OpError> {
    rand::generate(&SystemRandom::new())
        .map(|r| r.expose())
        .map_err(crypto_err("random"))
}

fn random_vec(len: usize) -> Result<Vec<u8>, OpError> {
    let mut v = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut v)
        .map_err(crypto_err("random"))?;
    Ok(v)
}

/// A runner made of a closure (the limit runners need no cleanup).
struct FnRunner<F: FnMut() -> Result<(), OpError>>(F);

impl<F: FnMut() -> Result<(), OpError>> Runner for FnRunner<F> {
    fn run(&mut self) -> Result<(), OpError> {
        (self.0)()
    }
}

fn boxed<F: FnMut() -> Result<(), OpError> + 'static>(f: F) -> Box<dyn Runner> {
    Box::new(FnRunner(f))
}

/// Prepares `op` (keys are made here, unmeasured) and returns the per-thread runner factory.
///
/// # Errors
/// `unsupported` for operations without an in-process equivalent (token object creation and
/// search), `failed` if key generation fails.
pub fn prepare(op: Op) -> Result<Box<RunnerFactory<'static>>, OpError> {
    let data: [u8; 32] = random()?;
    Ok(match op {
        Op::Rsa2048Sign | Op::Rsa3072Sign => {
            let size = if op == Op::Rsa2048Sign {
                KeySize::Rsa2048
            } else {
                KeySize::Rsa3072
            };
            let key = Arc::new(RsaKeyPair::generate(size).map_err(crypto_err("RSA keygen"))?);
            Box::new(move |_| {
                let key = Arc::clone(&key);
                let rng = SystemRandom::new();
                Ok(boxed(move || {
                    let mut sig = vec![0u8; key.public_modulus_len()];
                    key.sign(&RSA_PKCS1_SHA256, &rng, &data, &mut sig)
                        .map_err(crypto_err("RSA sign"))
                }))
            })
        }
        Op::Rsa2048Verify => {
            let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(crypto_err("RSA keygen"))?;
            let mut sig = vec![0u8; key.public_modulus_len()];
            key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), &data, &mut sig)
                .map_err(crypto_err("RSA sign"))?;
            let public = Arc::new(
                ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref())
                    .map_err(|_| OpError::failed("aws-lc-rs RSA public key rejected"))?,
            );
            let sig = Arc::new(sig);
            Box::new(move |_| {
                let (public, sig) = (Arc::clone(&public), Arc::clone(&sig));
                Ok(boxed(move || {
                    public
                        .verify_sig(&data, &sig)
                        .map_err(crypto_err("RSA verify"))
                }))
            })
        }
        Op::P256Sign | Op::P384Sign => {
            let (alg, digest_alg, len) = if op == Op::P256Sign {
                (&ECDSA_P256_SHA256_FIXED_SIGNING, &SHA256, 32)
            } else {
                (&ECDSA_P384_SHA384_FIXED_SIGNING, &SHA384, 48)
            };
            let key = Arc::new(EcdsaKeyPair::generate(alg).map_err(crypto_err("EC keygen"))?);
            let digest = Digest::import_less_safe(&random_vec(len)?, digest_alg)
                .map_err(crypto_err("digest import"))?;
            Box::new(move |_| {
                let key = Arc::clone(&key);
                Ok(boxed(move || {
                    key.sign_digest(&digest)
                        .map(drop)
                        .map_err(crypto_err("ECDSA sign"))
                }))
            })
        }
        Op::P256Verify => {
            let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(crypto_err("EC keygen"))?;
            let digest =
                Digest::import_less_safe(&data, &SHA256).map_err(crypto_err("digest import"))?;
            let sig = key.sign_digest(&digest).map_err(crypto_err("ECDSA sign"))?;
            let sig = Arc::new(sig.as_ref().to_vec());
            let public = Arc::new(
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key().as_ref())
                    .map_err(|_| OpError::failed("aws-lc-rs EC public key rejected"))?,
            );
            Box::new(move |_| {
                let (public, sig, digest) = (Arc::clone(&public), Arc::clone(&sig), digest);
                Ok(boxed(move || {
                    public
                        .verify_digest_sig(&digest, &sig)
                        .map_err(crypto_err("ECDSA verify"))
                }))
            })
        }
        Op::Ed25519Sign => {
            let key = Arc::new(Ed25519KeyPair::generate().map_err(crypto_err("Ed25519 keygen"))?);
            Box::new(move |_| {
                let key = Arc::clone(&key);
                Ok(boxed(move || {
                    std::hint::black_box(key.sign(&data));
                    Ok(())
                }))
            })
        }
        Op::AesGcm1K | Op::AesGcm1M => {
            let len = if op == Op::AesGcm1K { 1 << 10 } else { 1 << 20 };
            let key_bytes: [u8; 32] = random()?;
            let key = Arc::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &key_bytes).map_err(crypto_err("AES key"))?,
            ));
            let plaintext = Arc::new(random_vec(len)?);
            Box::new(move |thread| {
                let (key, plaintext) = (Arc::clone(&key), Arc::clone(&plaintext));
                let mut counter = 0u64;
                let thread = u32::try_from(thread).unwrap_or(u32::MAX);
                Ok(boxed(move || {
                    counter += 1;
                    let nonce = Nonce::assume_unique_for_key(iv(thread, counter));
                    // A fresh output buffer per call, as C_Encrypt fills the caller's buffer.
                    let mut buf = Vec::with_capacity(plaintext.len() + 16);
                    buf.extend_from_slice(&plaintext);
                    key.seal_in_place_append_tag(nonce, Aad::empty(), &mut buf)
                        .map_err(crypto_err("AES-GCM seal"))
                }))
            })
        }
        Op::Hmac1K => {
            let key_bytes: [u8; 32] = random()?;
            let key = Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &key_bytes));
            let message = Arc::new(random_vec(1 << 10)?);
            Box::new(move |_| {
                let (key, message) = (Arc::clone(&key), Arc::clone(&message));
                Ok(boxed(move || {
                    std::hint::black_box(hmac::sign(&key, &message));
                    Ok(())
                }))
            })
        }
        Op::Rsa2048Gen => Box::new(|_| {
            Ok(boxed(|| {
                RsaKeyPair::generate(KeySize::Rsa2048)
                    .map(drop)
                    .map_err(crypto_err("RSA keygen"))
            }))
        }),
        Op::P256Gen => Box::new(|_| {
            Ok(boxed(|| {
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map(drop)
                    .map_err(crypto_err("EC keygen"))
            }))
        }),
        Op::AesCreate | Op::Find(_) => {
            return Err(OpError::unsupported(
                "no in-process equivalent (token objects)",
            ));
        }
    })
}

/// A 12-byte GCM IV unique per (thread, counter): the IV must never repeat under one key.
pub fn iv(thread: u32, counter: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..4].copy_from_slice(&thread.to_be_bytes());
    iv[4..].copy_from_slice(&counter.to_be_bytes());
    iv
}
