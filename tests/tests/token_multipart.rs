//! Multi-part operations through the real module: `*Update` + `*Final` of sign, verify, digest,
//! encrypt and decrypt give what the single-part call gives (and what an independent
//! implementation computes), and 16 MiB stream through `C_EncryptUpdate`/`C_DecryptUpdate`
//! for AES-CTR and AES-CBC.

mod token_util;

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hmac::{Hmac, Mac};
use hsm_tests::keys::ec_pair;
use hsm_tests::{assert_ckr, isolated};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use sha2::{Digest, Sha256, Sha384};
use token_util::{
    Aes, CURVES, Checks, aes_ctr, bytes, ctr_params, curve_crate, import_aes, import_secret,
    parse_octet_string, rsa_test_key,
};

/// Splits `data` at uneven points (including an empty part).
fn parts(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for n in [1usize, 0, 7, 16, 33, 5] {
        let n = n.min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out.push(rest);
    out
}

fn sign_parts(s: &Session, mech: &Mechanism, key: ObjectHandle, data: &[u8]) -> Vec<u8> {
    s.sign_init(mech, key).expect("C_SignInit");
    for p in parts(data) {
        s.sign_update(p).expect("C_SignUpdate");
    }
    s.sign_final().expect("C_SignFinal")
}

fn verify_parts(
    s: &Session,
    mech: &Mechanism,
    key: ObjectHandle,
    data: &[u8],
    sig: &[u8],
) -> cryptoki::error::Result<()> {
    s.verify_init(mech, key)?;
    for p in parts(data) {
        s.verify_update(p)?;
    }
    s.verify_final(sig)
}

fn encrypt_parts(s: &Session, mech: &Mechanism, key: ObjectHandle, data: &[u8]) -> Vec<u8> {
    s.encrypt_init(mech, key).expect("C_EncryptInit");
    let mut out = Vec::new();
    for p in parts(data) {
        out.extend(s.encrypt_update(p).expect("C_EncryptUpdate"));
    }
    out.extend(s.encrypt_final().expect("C_EncryptFinal"));
    out
}

fn decrypt_parts(s: &Session, mech: &Mechanism, key: ObjectHandle, data: &[u8]) -> Vec<u8> {
    s.decrypt_init(mech, key).expect("C_DecryptInit");
    let mut out = Vec::new();
    for p in parts(data) {
        out.extend(s.decrypt_update(p).expect("C_DecryptUpdate"));
    }
    out.extend(s.decrypt_final().expect("C_DecryptFinal"));
    out
}

#[test]
fn multipart_sign_verify_digest_equal_single_part() {
    isolated(
        "multipart_sign_verify_digest_equal_single_part",
        |_cluster, token| {
            let s = token.user_session();
            let data: Vec<u8> = (0..300u32).map(|i| (i * 31 % 251) as u8).collect();
            let mut checks = Checks::new();
            checks.run("CKM_SHA256_HMAC", || {
                let value = [0x33u8; 32];
                let k = import_secret(
                    &s,
                    KeyType::GENERIC_SECRET,
                    &value,
                    &[Attribute::Sign(true), Attribute::Verify(true)],
                );
                let multi = sign_parts(&s, &Mechanism::Sha256Hmac, k, &data);
                let single = s.sign(&Mechanism::Sha256Hmac, k, &data).expect("C_Sign");
                let mut mac = Hmac::<Sha256>::new_from_slice(&value).expect("key");
                mac.update(&data);
                assert_eq!(multi, single);
                assert_eq!(multi, mac.finalize().into_bytes().to_vec());
                verify_parts(&s, &Mechanism::Sha256Hmac, k, &data, &multi)
                    .expect("multi-part verify");
                let mut bad = multi.clone();
                bad[0] ^= 1;
                assert_ckr(
                    verify_parts(&s, &Mechanism::Sha256Hmac, k, &data, &bad),
                    RvError::SignatureInvalid,
                );
            });
            checks.run("CKM_AES_CMAC", || {
                let k = import_secret(
                    &s,
                    KeyType::AES,
                    &[0x44; 16],
                    &[Attribute::Sign(true), Attribute::Verify(true)],
                );
                let multi = sign_parts(&s, &Mechanism::AesCMac, k, &data);
                assert_eq!(
                    multi,
                    s.sign(&Mechanism::AesCMac, k, &data).expect("C_Sign")
                );
                verify_parts(&s, &Mechanism::AesCMac, k, &data, &multi).expect("verify");
            });
            checks.run("CKM_SHA256_RSA_PKCS and CKM_SHA384_RSA_PKCS_PSS", || {
                let key = rsa_test_key();
                let primes = key.primes();
                let private = s
                    .create_object(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::KeyType(KeyType::RSA),
                        Attribute::Modulus(key.n().to_bytes_be()),
                        Attribute::PublicExponent(key.e().to_bytes_be()),
                        Attribute::PrivateExponent(key.d().to_bytes_be()),
                        Attribute::Prime1(primes[0].to_bytes_be()),
                        Attribute::Prime2(primes[1].to_bytes_be()),
                        Attribute::Exponent1(key.dp().expect("dp").to_bytes_be()),
                        Attribute::Exponent2(key.dq().expect("dq").to_bytes_be()),
                        Attribute::Coefficient(key.crt_coefficient().expect("qinv").to_bytes_be()),
                        Attribute::Sign(true),
                    ])
                    .expect("import RSA key");
                let multi = sign_parts(&s, &Mechanism::Sha256RsaPkcs, private, &data);
                let single = s
                    .sign(&Mechanism::Sha256RsaPkcs, private, &data)
                    .expect("C_Sign");
                assert_eq!(multi, single, "PKCS#1 v1.5 is deterministic");
                let pss = Mechanism::Sha384RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA384,
                    mgf: PkcsMgfType::MGF1_SHA384,
                    s_len: 48.into(),
                });
                let sig = sign_parts(&s, &pss, private, &data);
                key.to_public_key()
                    .verify(rsa::Pss::new::<Sha384>(), &Sha384::digest(&data), &sig)
                    .expect("the rsa crate verifies the multi-part PSS signature");
            });
            checks.run("CKM_ECDSA_SHA256", || {
                let pair = ec_pair(&s, false, "multi", b"m");
                let point = parse_octet_string(&bytes(&s, pair.public, AttributeType::EcPoint));
                let sig = sign_parts(&s, &Mechanism::EcdsaSha256, pair.private, &data);
                (curve_crate(&CURVES[0]).verify_prehash)(&point, &Sha256::digest(&data), &sig)
                    .expect("p256 verifies the multi-part signature");
                let single = s
                    .sign(&Mechanism::EcdsaSha256, pair.private, &data)
                    .expect("C_Sign");
                verify_parts(&s, &Mechanism::EcdsaSha256, pair.public, &data, &single)
                    .expect("multi-part verify of a single-part signature");
                assert_ckr(
                    verify_parts(
                        &s,
                        &Mechanism::EcdsaSha256,
                        pair.public,
                        &data[1..],
                        &single,
                    ),
                    RvError::SignatureInvalid,
                );
            });
            checks.run("CKM_SHA256 and CKM_SHA384 digests", || {
                for (mech, expected) in [
                    (Mechanism::Sha256, Sha256::digest(&data).to_vec()),
                    (Mechanism::Sha384, Sha384::digest(&data).to_vec()),
                ] {
                    s.digest_init(&mech).expect("C_DigestInit");
                    for p in parts(&data) {
                        s.digest_update(p).expect("C_DigestUpdate");
                    }
                    let multi = s.digest_final().expect("C_DigestFinal");
                    assert_eq!(multi, expected);
                    assert_eq!(s.digest(&mech, &data).expect("C_Digest"), expected);
                }
            });
            checks.finish();
        },
    );
}

#[test]
fn multipart_encrypt_decrypt_equal_single_part() {
    isolated(
        "multipart_encrypt_decrypt_equal_single_part",
        |_cluster, token| {
            let s = token.user_session();
            let key = [0x5au8; 32];
            let k = import_aes(&s, &key, &[]);
            let aes = Aes::new(&key);
            let iv = [0x0fu8; 16];
            let blocks: Vec<u8> = (0..96u32).map(|i| (i * 13 % 256) as u8).collect();
            let odd: Vec<u8> = (0..101u32).map(|i| (i * 17 % 256) as u8).collect();
            let ctr = ctr_params(128, iv);
            let mut checks = Checks::new();
            let cases: Vec<(&str, Mechanism, &[u8], Vec<u8>)> = vec![
                ("CKM_AES_ECB", Mechanism::AesEcb, &blocks, {
                    let mut out = Vec::new();
                    for c in blocks.chunks(16) {
                        let mut b: [u8; 16] = c.try_into().unwrap();
                        aes.block(&mut b);
                        out.extend_from_slice(&b);
                    }
                    out
                }),
                (
                    "CKM_AES_CBC",
                    Mechanism::AesCbc(iv),
                    &blocks,
                    aes.cbc(&iv, &blocks),
                ),
                (
                    "CKM_AES_CBC_PAD",
                    Mechanism::AesCbcPad(iv),
                    &odd,
                    aes.cbc(&iv, &token_util::pkcs7(&odd)),
                ),
                ("CKM_AES_CTR", aes_ctr(&ctr), &odd, aes.ctr(&iv, &odd)),
            ];
            for (name, mech, pt, expected) in &cases {
                checks.run(name, || {
                    let multi = encrypt_parts(&s, mech, k, pt);
                    assert_eq!(
                        hex::encode(&multi),
                        hex::encode(expected),
                        "multi-part ciphertext ({} bytes for {} bytes of input)",
                        multi.len(),
                        pt.len()
                    );
                    assert_eq!(
                        hex::encode(s.encrypt(mech, k, pt).expect("C_Encrypt")),
                        hex::encode(expected),
                        "single-part ciphertext"
                    );
                    assert_eq!(
                        hex::encode(decrypt_parts(&s, mech, k, expected)),
                        hex::encode(pt),
                        "multi-part decryption"
                    );
                });
            }
            checks.run("CKM_AES_GCM", || {
                let mut ivs = [[0x21u8; 12]; 3];
                let [iv1, iv2, iv3] = &mut ivs;
                let m1 =
                    Mechanism::AesGcm(GcmParams::new(iv1, b"aad", 128.into()).expect("params"));
                let m2 =
                    Mechanism::AesGcm(GcmParams::new(iv2, b"aad", 128.into()).expect("params"));
                let m3 =
                    Mechanism::AesGcm(GcmParams::new(iv3, b"aad", 128.into()).expect("params"));
                let multi = encrypt_parts(&s, &m1, k, &odd);
                let single = s.encrypt(&m2, k, &odd).expect("C_Encrypt");
                assert_eq!(
                    hex::encode(&multi),
                    hex::encode(&single),
                    "multi-part ciphertext ({} bytes for {} bytes of input)",
                    multi.len(),
                    odd.len()
                );
                assert_eq!(
                    hex::encode(decrypt_parts(&s, &m3, k, &single)),
                    hex::encode(&odd)
                );
            });
            checks.finish();
        },
    );
}

#[test]
fn sixteen_mib_stream_through_encrypt_update() {
    isolated(
        "sixteen_mib_stream_through_encrypt_update",
        |_cluster, token| {
            const MIB: usize = 1 << 20;
            let s = token.user_session();
            let key = [0x66u8; 16];
            let k = import_aes(&s, &key, &[]);
            let aes = Aes::new(&key);
            let iv = [0x99u8; 16];
            let data: Vec<u8> = (0..16 * MIB)
                .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
                .collect();
            let ctr = ctr_params(128, iv);
            let mut checks = Checks::new();
            for (name, mech, expected) in [
                ("CKM_AES_CTR", aes_ctr(&ctr), aes.ctr(&iv, &data)),
                ("CKM_AES_CBC", Mechanism::AesCbc(iv), aes.cbc(&iv, &data)),
            ] {
                checks.run(&format!("{name} 16 MiB"), || {
                    s.encrypt_init(&mech, k).expect("C_EncryptInit");
                    let mut out = Vec::with_capacity(data.len());
                    for chunk in data.chunks(MIB) {
                        out.extend(s.encrypt_update(chunk).expect("C_EncryptUpdate"));
                    }
                    out.extend(s.encrypt_final().expect("C_EncryptFinal"));
                    assert_eq!(out.len(), data.len(), "ciphertext length");
                    assert!(
                        out == expected,
                        "16 MiB ciphertext differs from the aes crate's"
                    );
                    s.decrypt_init(&mech, k).expect("C_DecryptInit");
                    let mut back = Vec::with_capacity(data.len());
                    // Uneven chunks on the way back.
                    for chunk in out.chunks(MIB + 5) {
                        back.extend(s.decrypt_update(chunk).expect("C_DecryptUpdate"));
                    }
                    back.extend(s.decrypt_final().expect("C_DecryptFinal"));
                    assert!(back == data, "16 MiB did not decrypt back");
                });
            }
            checks.finish();
        },
    );
}
