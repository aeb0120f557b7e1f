//! AES mechanisms through the real module with published vectors: NIST SP 800-38A (ECB, CBC,
//! CTR), the GCM specification's test cases (McGrew & Viega, as used in NIST CAVP), SP 800-38B
//! (CMAC); CBC-PAD, CTR with partial blocks and GCM with random inputs against the RustCrypto
//! `aes`/`aes-gcm` crates; the token-generated GCM IV. Keys are imported with
//! `C_CreateObject`.

mod token_util;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectHandle};
use cryptoki::session::Session;
use hsm_tests::{assert_ckr, isolated};
use token_util::{Aes, Checks, aes_ctr, bytes, ctr_params, h, import_aes, import_secret, pkcs7};

/// SP 800-38A F.1-F.5 plaintext (four blocks).
const PT: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
                  30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710";
const K128: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const K192: &str = "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b";
const K256: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
const CBC_IV: &str = "000102030405060708090a0b0c0d0e0f";
const CTR_BLOCK: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/// (mode, key, ciphertext) from SP 800-38A appendix F.
const SP800_38A: &[(&str, &str, &str)] = &[
    (
        "ECB",
        K128,
        "3ad77bb40d7a3660a89ecaf32466ef97 f5d3d58503b9699de785895a96fdbaaf
         43b1cd7f598ece23881b00e3ed030688 7b0c785e27e8ad3f8223207104725dd4",
    ),
    (
        "ECB",
        K192,
        "bd334f1d6e45f25ff712a214571fa5cc 974104846d0ad3ad7734ecb3ecee4eef
         ef7afd2270e2e60adce0ba2face6444e 9a4b41ba738d6c72fb16691603c18e0e",
    ),
    (
        "ECB",
        K256,
        "f3eed1bdb5d2a03c064b5a7e3db181f8 591ccb10d410ed26dc5ba74a31362870
         b6ed21b99ca6f4f9f153e7b1beafed1d 23304b7a39f9f3ff067d8d8f9e24ecc7",
    ),
    (
        "CBC",
        K128,
        "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2
         73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7",
    ),
    (
        "CBC",
        K192,
        "4f021db243bc633d7178183a9fa071e8 b4d9ada9ad7dedf4e5e738763f69145a
         571b242012fb7ae07fa9baac3df102e0 08b0e27988598881d920a9e64f5615cd",
    ),
    (
        "CBC",
        K256,
        "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d
         39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b",
    ),
    (
        "CTR",
        K128,
        "874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff
         5ae4df3edbd5d35e5b4f09020db03eab 1e031dda2fbe03d1792170a0f3009cee",
    ),
    (
        "CTR",
        K192,
        "1abc932417521ca24f2b0459fe7e6e0b 090339ec0aa6faefd5ccc2c6f4ce8e94
         1e36b26bd1ebc670d1bd1d665620abf7 4f78a7f6d29809585a97daec58c6b050",
    ),
    (
        "CTR",
        K256,
        "601ec313775789a5b7a7f504bbf3d228 f443e3ca4d62b59aca84e990cacaf5c5
         2b0930daa23de94ce87017ba2d84988d dfc9c58db67aada613c2dd08457941a6",
    ),
];

fn block(hex: &str) -> [u8; 16] {
    h(hex).try_into().expect("16 bytes")
}

fn encrypt(s: &Session, mode: &str, key: ObjectHandle, data: &[u8]) -> Vec<u8> {
    let ctr = ctr_params(128, block(CTR_BLOCK));
    let mech = match mode {
        "ECB" => Mechanism::AesEcb,
        "CBC" => Mechanism::AesCbc(block(CBC_IV)),
        "CBC_PAD" => Mechanism::AesCbcPad(block(CBC_IV)),
        "CTR" => aes_ctr(&ctr),
        _ => unreachable!(),
    };
    s.encrypt(&mech, key, data)
        .unwrap_or_else(|e| panic!("C_Encrypt(CKM_AES_{mode}): {e}"))
}

fn decrypt(s: &Session, mode: &str, key: ObjectHandle, data: &[u8]) -> Vec<u8> {
    let ctr = ctr_params(128, block(CTR_BLOCK));
    let mech = match mode {
        "ECB" => Mechanism::AesEcb,
        "CBC" => Mechanism::AesCbc(block(CBC_IV)),
        "CBC_PAD" => Mechanism::AesCbcPad(block(CBC_IV)),
        "CTR" => aes_ctr(&ctr),
        _ => unreachable!(),
    };
    s.decrypt(&mech, key, data)
        .unwrap_or_else(|e| panic!("C_Decrypt(CKM_AES_{mode}): {e}"))
}

#[test]
fn aes_ecb_cbc_ctr_nist_sp800_38a_vectors() {
    isolated(
        "aes_ecb_cbc_ctr_nist_sp800_38a_vectors",
        |_cluster, token| {
            let s = token.user_session();
            let pt = h(PT);
            let mut checks = Checks::new();
            for (mode, key, ct) in SP800_38A {
                let key = h(key);
                let ct = h(ct);
                let name = format!("CKM_AES_{mode} AES-{}", key.len() * 8);
                checks.run(&name, || {
                    let k = import_aes(&s, &key, &[]);
                    assert_eq!(encrypt(&s, mode, k, &pt), ct, "encrypt");
                    assert_eq!(decrypt(&s, mode, k, &ct), pt, "decrypt");
                    // One block at a time gives the same blocks for ECB (no chaining).
                    if *mode == "ECB" {
                        assert_eq!(encrypt(&s, mode, k, &pt[16..32]), ct[16..32]);
                    }
                });
            }
            checks.finish();
        },
    );
}

#[test]
fn aes_cbc_pad_and_ctr_match_independent_computation() {
    isolated(
        "aes_cbc_pad_and_ctr_match_independent_computation",
        |_cluster, token| {
            let s = token.user_session();
            let mut checks = Checks::new();
            for key in [h(K128), h(K192), h(K256)] {
                let k = import_aes(&s, &key, &[]);
                let aes = Aes::new(&key);
                for len in [0usize, 1, 15, 16, 17, 33, 100] {
                    let pt: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                    checks.run(
                        &format!("CKM_AES_CBC_PAD AES-{} {len} bytes", key.len() * 8),
                        || {
                            let ct = encrypt(&s, "CBC_PAD", k, &pt);
                            assert_eq!(ct, aes.cbc(&block(CBC_IV), &pkcs7(&pt)));
                            assert_eq!(decrypt(&s, "CBC_PAD", k, &ct), pt);
                        },
                    );
                    checks.run(
                        &format!("CKM_AES_CTR AES-{} {len} bytes", key.len() * 8),
                        || {
                            let ct = encrypt(&s, "CTR", k, &pt);
                            assert_eq!(ct, aes.ctr(&block(CTR_BLOCK), &pt));
                            assert_eq!(decrypt(&s, "CTR", k, &ct), pt);
                        },
                    );
                }
            }
            let k = import_aes(&s, &h(K128), &[]);
            checks.run("CKM_AES_CBC_PAD bad padding", || {
                // A CBC encryption of a block whose last byte is not valid padding.
                let bad = Aes::new(&h(K128)).cbc(&block(CBC_IV), &[0x11; 16]);
                assert_ckr(
                    s.decrypt(&Mechanism::AesCbcPad(block(CBC_IV)), k, &bad),
                    RvError::EncryptedDataInvalid,
                );
                assert_ckr(
                    s.decrypt(&Mechanism::AesCbcPad(block(CBC_IV)), k, &[0; 15]),
                    RvError::EncryptedDataLenRange,
                );
            });
            checks.run("CKM_AES_CBC and CKM_AES_ECB need whole blocks", || {
                assert_ckr(
                    s.encrypt(&Mechanism::AesCbc(block(CBC_IV)), k, &[0; 15]),
                    RvError::DataLenRange,
                );
                assert_ckr(
                    s.encrypt(&Mechanism::AesEcb, k, &[0; 17]),
                    RvError::DataLenRange,
                );
                assert_ckr(
                    s.decrypt(&Mechanism::AesCbc(block(CBC_IV)), k, &[0; 15]),
                    RvError::EncryptedDataLenRange,
                );
                assert_ckr(
                    s.decrypt(&Mechanism::AesEcb, k, &[0; 31]),
                    RvError::EncryptedDataLenRange,
                );
            });
            checks.finish();
        },
    );
}

/// GCM test cases 3, 4 and 16 of McGrew & Viega (the vectors of NIST's GCM validation).
const GCM: &[(&str, &str, &str, &str, &str, &str)] = &[
    // (name, key, iv, aad, plaintext, ciphertext || tag)
    (
        "test case 3 (AES-128, no AAD)",
        "feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e
         21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985
         4d5c2af327cd64a62cf35abd2ba6fab4",
    ),
    (
        "test case 4 (AES-128, AAD)",
        "feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e
         21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091
         5bc94fbc3221a5db94fae95ae7121a47",
    ),
    (
        "test case 16 (AES-256, AAD)",
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662
         76fc6ece0f4e1768cddf8853bb2d551b",
    ),
];

fn nonce(iv: &[u8]) -> aes_gcm::Nonce<aes_gcm::aead::consts::U12> {
    <[u8; 12]>::try_from(iv).expect("12-byte IV").into()
}

fn gcm_encrypt(
    s: &Session,
    key: ObjectHandle,
    iv: &mut [u8],
    aad: &[u8],
    pt: &[u8],
) -> cryptoki::error::Result<Vec<u8>> {
    let params = GcmParams::new(iv, aad, 128.into()).expect("GCM parameters");
    s.encrypt(&Mechanism::AesGcm(params), key, pt)
}

fn gcm_decrypt(
    s: &Session,
    key: ObjectHandle,
    iv: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> cryptoki::error::Result<Vec<u8>> {
    let mut iv = iv.to_vec();
    let params = GcmParams::new(&mut iv, aad, 128.into()).expect("GCM parameters");
    s.decrypt(&Mechanism::AesGcm(params), key, ct)
}

#[test]
fn aes_gcm_vectors_tags_and_independent_check() {
    isolated(
        "aes_gcm_vectors_tags_and_independent_check",
        |_cluster, token| {
            let s = token.user_session();
            let mut checks = Checks::new();
            for (name, key, iv, aad, pt, ct) in GCM {
                checks.run(&format!("CKM_AES_GCM {name}"), || {
                    let (key, iv, aad, pt, ct) = (h(key), h(iv), h(aad), h(pt), h(ct));
                    let k = import_aes(&s, &key, &[]);
                    let mut iv_buf = iv.clone();
                    assert_eq!(
                        gcm_encrypt(&s, k, &mut iv_buf, &aad, &pt).expect("C_Encrypt"),
                        ct
                    );
                    assert_eq!(iv_buf, iv, "a caller-supplied IV is left as it was");
                    assert_eq!(gcm_decrypt(&s, k, &iv, &aad, &ct).expect("C_Decrypt"), pt);
                    for at in [0, pt.len(), ct.len() - 1] {
                        let mut bad = ct.clone();
                        bad[at] ^= 1;
                        assert_ckr(
                            gcm_decrypt(&s, k, &iv, &aad, &bad),
                            RvError::EncryptedDataInvalid,
                        );
                    }
                    assert_ckr(
                        gcm_decrypt(&s, k, &iv, b"other aad", &ct),
                        RvError::EncryptedDataInvalid,
                    );
                    // Shorter than a tag.
                    assert!(gcm_decrypt(&s, k, &iv, &aad, &ct[..15]).is_err());
                });
            }
            // AES-192 with random key, IV, AAD and message, checked with aes-gcm.
            checks.run("CKM_AES_GCM AES-192 against aes-gcm", || {
                let key = s.generate_random_vec(24).expect("random");
                let mut iv = s.generate_random_vec(12).expect("random");
                let aad = s.generate_random_vec(37).expect("random");
                let pt = s.generate_random_vec(1000).expect("random");
                let k = import_aes(&s, &key, &[]);
                let ct = gcm_encrypt(&s, k, &mut iv, &aad, &pt).expect("C_Encrypt");
                let cipher =
                    aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(
                        &key,
                    )
                    .expect("key");
                let expected = cipher
                    .encrypt(
                        &nonce(&iv),
                        Payload {
                            msg: &pt,
                            aad: &aad,
                        },
                    )
                    .expect("aes-gcm");
                assert_eq!(ct, expected);
            });
            checks.finish();
        },
    );
}

#[test]
fn aes_gcm_token_generated_iv() {
    isolated("aes_gcm_token_generated_iv", |_cluster, token| {
        let s = token.user_session();
        let key = s.generate_random_vec(32).expect("random");
        let k = import_aes(&s, &key, &[]);
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).expect("key");
        let pt = b"the token picks the IV";
        let aad = b"hdr";
        // An all-zero IV asks the token for one (the convention of hsm_proto::mech); it is
        // written back into the caller's buffer.
        let mut ivs = Vec::new();
        for _ in 0..2 {
            let mut iv = [0u8; 12];
            let ct = gcm_encrypt(&s, k, &mut iv, aad, pt).expect("C_Encrypt with a zero IV");
            assert_ne!(iv, [0u8; 12], "the token did not return the IV it chose");
            let expected = cipher
                .encrypt(&nonce(&iv), Payload { msg: pt, aad })
                .expect("aes-gcm");
            assert_eq!(ct, expected, "the ciphertext is under the returned IV");
            assert_eq!(gcm_decrypt(&s, k, &iv, aad, &ct).expect("decrypt"), pt);
            ivs.push(iv);
        }
        assert_ne!(ivs[0], ivs[1], "the token reused an IV");
    });
}

/// SP 800-38B appendix D (CMAC-AES128 and CMAC-AES256).
const CMAC: &[(&str, usize, &str)] = &[
    (K128, 0, "bb1d6929e95937287fa37d129b756746"),
    (K128, 16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (K128, 40, "dfa66747de9ae63030ca32611497c827"),
    (K128, 64, "51f0bebf7e3b9d92fc49741779363cfe"),
    (K256, 0, "028962f61b7bf89efc6b551f4667d983"),
    (K256, 64, "e1992190549f6ed5696a2c056c315410"),
];

#[test]
fn aes_cmac_nist_sp800_38b_vectors() {
    isolated("aes_cmac_nist_sp800_38b_vectors", |_cluster, token| {
        let s = token.user_session();
        let pt = h(PT);
        let mut checks = Checks::new();
        for (key, len, mac) in CMAC {
            let key = h(key);
            checks.run(
                &format!("CKM_AES_CMAC AES-{} {len} bytes", key.len() * 8),
                || {
                    let k = import_secret(
                        &s,
                        KeyType::AES,
                        &key,
                        &[Attribute::Sign(true), Attribute::Verify(true)],
                    );
                    let mac = h(mac);
                    let got = s
                        .sign(&Mechanism::AesCMac, k, &pt[..*len])
                        .expect("C_Sign(CKM_AES_CMAC)");
                    assert_eq!(got, mac);
                    s.verify(&Mechanism::AesCMac, k, &pt[..*len], &mac)
                        .expect("C_Verify(CKM_AES_CMAC)");
                    let mut bad = mac.clone();
                    bad[0] ^= 1;
                    assert_ckr(
                        s.verify(&Mechanism::AesCMac, k, &pt[..*len], &bad),
                        RvError::SignatureInvalid,
                    );
                },
            );
        }
        checks.finish();
    });
}

#[test]
fn aes_key_generation_sizes() {
    isolated("aes_key_generation_sizes", |_cluster, token| {
        let s = token.user_session();
        for len in [16u64, 24, 32] {
            let k = s
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::ValueLen(len.into()),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                    ],
                )
                .unwrap_or_else(|e| panic!("C_GenerateKey(AES, {len}): {e}"));
            assert_eq!(
                token_util::attr(&s, k, AttributeType::ValueLen),
                Attribute::ValueLen(len.into())
            );
            assert_eq!(bytes(&s, k, AttributeType::CheckValue).len(), 3);
            let ct = s.encrypt(&Mechanism::AesEcb, k, &[0; 32]).expect("ECB");
            assert_eq!(ct.len(), 32);
            assert_eq!(ct[..16], ct[16..], "ECB of two equal blocks");
            assert_eq!(
                bytes(&s, k, AttributeType::CheckValue),
                ct[..3],
                "KCV = AES-ECB(key, 0^16)[..3]"
            );
        }
        for len in [0u64, 8, 31, 33, 64] {
            // The spec allows either code for a length AES does not have.
            token_util::assert_one_of(
                s.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(len.into())]),
                &[RvError::AttributeValueInvalid, RvError::KeySizeRange],
            );
        }
    });
}
