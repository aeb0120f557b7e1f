//! Published vectors for the deterministic mechanisms: FIPS 180 (SHA), RFC 2202 and RFC 4231
//! (HMAC), NIST SP 800-38A (AES ECB/CBC/CTR), the GCM specification (McGrew & Viega),
//! RFC 4493 (CMAC), RFC 3394 (key wrap), NIST CAVP ANSI X9.63 (KDF), RFC 8032 (Ed25519).
//! Multi-part runs split the input at awkward places; the result must not change.

use super::*;
use OperationKind::{Decrypt, Digest, Encrypt, Sign};

const CHUNKS: [usize; 5] = [0, 1, 7, 16, 33];

#[test]
fn sha_fips180() {
    let cases: [(ck::CK_MECHANISM_TYPE, &[u8], &str); 9] = [
        (
            ck::CKM_SHA_1,
            b"abc",
            "a9993e364706816aba3e25717850c26c9cd0d89d",
        ),
        (
            ck::CKM_SHA_1,
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
        ),
        (
            ck::CKM_SHA224,
            b"abc",
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
        ),
        (
            ck::CKM_SHA256,
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            ck::CKM_SHA256,
            b"",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            ck::CKM_SHA256,
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
        (
            ck::CKM_SHA384,
            b"abc",
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
             8086072ba1e7cc2358baeca134c825a7",
        ),
        (
            ck::CKM_SHA512,
            b"abc",
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
        (
            ck::CKM_SHA512,
            b"",
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
             47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        ),
    ];
    for (kind, msg, want) in cases {
        for chunk in CHUNKS {
            let got = run_chunked(Digest, &KeyRef::None, &plain(kind), msg, chunk, None).unwrap();
            assert_eq!(hex::encode(got), want, "{kind:#x} chunk {chunk}");
        }
    }
    // A million 'a', streamed in 1000-byte updates.
    let million = vec![b'a'; 1_000_000];
    let got = run_chunked(
        Digest,
        &KeyRef::None,
        &plain(ck::CKM_SHA256),
        &million,
        1000,
        None,
    );
    assert_eq!(
        hex::encode(got.unwrap()),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
    assert_eq!(
        code(start(
            Digest,
            KeyRef::None,
            &mech(ck::CKM_SHA256, MechanismParams::Bytes(vec![1]))
        )),
        ErrorCode::MechanismParamInvalid
    );
}

#[test]
fn hmac_rfc4231_and_rfc2202() {
    let key1 = vec![0x0b; 20];
    let key6 = vec![0xaa; 131];
    let cases: [(ck::CK_MECHANISM_TYPE, &[u8], &[u8], &str); 11] = [
        (
            ck::CKM_SHA_1_HMAC,
            &key1,
            b"Hi There",
            "b617318655057264e28bc0b6fb378c8ef146be00",
        ),
        (
            ck::CKM_SHA_1_HMAC,
            b"Jefe",
            b"what do ya want for nothing?",
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
        ),
        (
            ck::CKM_SHA224_HMAC,
            &key1,
            b"Hi There",
            "896fb1128abbdf196832107cd49df33f47b4b1169912ba4f53684b22",
        ),
        (
            ck::CKM_SHA256_HMAC,
            &key1,
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            ck::CKM_SHA384_HMAC,
            &key1,
            b"Hi There",
            "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c\
             faea9ea9076ede7f4af152e8b2fa9cb6",
        ),
        (
            ck::CKM_SHA512_HMAC,
            &key1,
            b"Hi There",
            "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde\
             daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
        ),
        (
            ck::CKM_SHA224_HMAC,
            b"Jefe",
            b"what do ya want for nothing?",
            "a30e01098bc6dbbf45690f3a7e9e6d0f8bbea2a39e6148008fd05e44",
        ),
        (
            ck::CKM_SHA256_HMAC,
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            ck::CKM_SHA384_HMAC,
            b"Jefe",
            b"what do ya want for nothing?",
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
             8e2240ca5e69e2c78b3239ecfab21649",
        ),
        (
            ck::CKM_SHA512_HMAC,
            b"Jefe",
            b"what do ya want for nothing?",
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
             9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        ),
        (
            ck::CKM_SHA256_HMAC,
            &key6,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
    ];
    for (kind, key, msg, want) in cases {
        let key = generic(key);
        for chunk in CHUNKS {
            let got = run_chunked(Sign, &key, &plain(kind), msg, chunk, None).unwrap();
            assert_eq!(hex::encode(&got), want, "{kind:#x}");
        }
        let tag = hex(want);
        verify(&key, &plain(kind), msg, &tag).unwrap();
        let mut bad = tag.clone();
        bad[0] ^= 1;
        assert_eq!(
            code(verify(&key, &plain(kind), msg, &bad)),
            ErrorCode::SignatureInvalid
        );
        assert_eq!(
            code(verify(&key, &plain(kind), msg, &tag[1..])),
            ErrorCode::SignatureLenRange
        );
    }
}

const SP800_38A_PLAIN: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51\
                               30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710";
const K128: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const K192: &str = "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b";
const K256: &str = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";

fn both_ways(key: &KeyRef, m: &Mechanism, plain_hex: &str, cipher_hex: &str) {
    let p = hex(plain_hex);
    let c = hex(cipher_hex);
    for chunk in CHUNKS {
        assert_eq!(
            run_chunked(Encrypt, key, m, &p, chunk, None).unwrap(),
            c,
            "{:#x} encrypt, chunk {chunk}",
            m.kind
        );
        assert_eq!(
            run_chunked(Decrypt, key, m, &c, chunk, None).unwrap(),
            p,
            "{:#x} decrypt, chunk {chunk}",
            m.kind
        );
    }
}

#[test]
fn aes_sp800_38a() {
    let ecb = [
        (
            K128,
            "3ad77bb40d7a3660a89ecaf32466ef97f5d3d58503b9699de785895a96fdbaaf\
             43b1cd7f598ece23881b00e3ed0306887b0c785e27e8ad3f8223207104725dd4",
        ),
        (
            K192,
            "bd334f1d6e45f25ff712a214571fa5cc974104846d0ad3ad7734ecb3ecee4eef\
             ef7afd2270e2e60adce0ba2face6444e9a4b41ba738d6c72fb16691603c18e0e",
        ),
        (
            K256,
            "f3eed1bdb5d2a03c064b5a7e3db181f8591ccb10d410ed26dc5ba74a31362870\
             b6ed21b99ca6f4f9f153e7b1beafed1d23304b7a39f9f3ff067d8d8f9e24ecc7",
        ),
    ];
    for (k, c) in ecb {
        both_ways(&aes(&hex(k)), &plain(ck::CKM_AES_ECB), SP800_38A_PLAIN, c);
    }
    let iv = hex("000102030405060708090a0b0c0d0e0f");
    let cbc = [
        (
            K128,
            "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2\
             73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7",
        ),
        (
            K192,
            "4f021db243bc633d7178183a9fa071e8b4d9ada9ad7dedf4e5e738763f69145a\
             571b242012fb7ae07fa9baac3df102e008b0e27988598881d920a9e64f5615cd",
        ),
        (
            K256,
            "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d\
             39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
        ),
    ];
    for (k, c) in cbc {
        let m = mech(ck::CKM_AES_CBC, MechanismParams::Bytes(iv.clone()));
        both_ways(&aes(&hex(k)), &m, SP800_38A_PLAIN, c);
        // CBC-PAD: the same blocks, then one block of padding.
        let m = mech(ck::CKM_AES_CBC_PAD, MechanismParams::Bytes(iv.clone()));
        let key = aes(&hex(k));
        let out = run(Encrypt, &key, &m, &hex(SP800_38A_PLAIN)).unwrap();
        assert_eq!(out.len(), 80);
        assert_eq!(out[..64], hex(c)[..]);
        for chunk in CHUNKS {
            let back = run_chunked(Decrypt, &key, &m, &out, chunk, None).unwrap();
            assert_eq!(back, hex(SP800_38A_PLAIN));
        }
    }
    let ctr = [
        (
            K128,
            "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff\
             5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee",
        ),
        (
            K192,
            "1abc932417521ca24f2b0459fe7e6e0b090339ec0aa6faefd5ccc2c6f4ce8e94\
             1e36b26bd1ebc670d1bd1d665620abf74f78a7f6d29809585a97daec58c6b050",
        ),
        (
            K256,
            "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5\
             2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6",
        ),
    ];
    for (k, c) in ctr {
        for bits in [32, 64, 128] {
            let m = mech(
                ck::CKM_AES_CTR,
                MechanismParams::AesCtr {
                    counter_bits: bits,
                    block: hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"),
                },
            );
            both_ways(&aes(&hex(k)), &m, SP800_38A_PLAIN, c);
            // A prefix is a prefix of the stream.
            let key = aes(&hex(k));
            let part = run(Encrypt, &key, &m, &hex(SP800_38A_PLAIN)[..21]).unwrap();
            assert_eq!(part, hex(c)[..21]);
        }
    }
}

#[test]
fn aes_gcm_spec_vectors() {
    // (key, iv, plaintext, aad, ciphertext, tag): test cases 3, 4, 16 of the GCM specification.
    let p = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    let aad = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
    let cases = [
        (
            "feffe9928665731c6d6a8f9467308308",
            p.to_string(),
            "",
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
             21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
            "4d5c2af327cd64a62cf35abd2ba6fab4",
        ),
        (
            "feffe9928665731c6d6a8f9467308308",
            p[..120].to_string(),
            aad,
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
             21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
            "5bc94fbc3221a5db94fae95ae7121a47",
        ),
        (
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            p[..120].to_string(),
            aad,
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for (k, p, a, c, t) in cases {
        let m = mech(
            ck::CKM_AES_GCM,
            MechanismParams::Gcm {
                iv: hex("cafebabefacedbaddecaf888"),
                aad: hex(a),
                tag_bits: 128,
            },
        );
        both_ways(&aes(&hex(k)), &m, &p, &format!("{c}{t}"));
    }
}

#[test]
fn aes_cmac_rfc4493() {
    let key = aes(&hex(K128));
    let m = plain(ck::CKM_AES_CMAC);
    let msg = hex(SP800_38A_PLAIN);
    for (len, want) in [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ] {
        for chunk in CHUNKS {
            let tag = run_chunked(Sign, &key, &m, &msg[..len], chunk, None).unwrap();
            assert_eq!(hex::encode(tag), want);
        }
        verify(&key, &m, &msg[..len], &hex(want)).unwrap();
        assert_eq!(
            code(verify(
                &key,
                &m,
                &[&msg[..len], &[0u8][..]].concat(),
                &hex(want)
            )),
            ErrorCode::SignatureInvalid
        );
        assert_eq!(
            code(verify(&key, &m, &msg[..len], &hex(want)[..15])),
            ErrorCode::SignatureLenRange
        );
    }
}

#[test]
fn aes_key_wrap_rfc3394() {
    let kek128 = aes(&hex("000102030405060708090a0b0c0d0e0f"));
    let kek256 = aes(&hex(
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    ));
    let m = plain(ck::CKM_AES_KEY_WRAP);
    let cases = [
        (
            &kek128,
            "00112233445566778899aabbccddeeff",
            "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5",
        ),
        (
            &kek256,
            "00112233445566778899aabbccddeeff",
            "64e8c3f9ce0f5ba263e9777905818a2a93c8191e7d6e8ae7",
        ),
        (
            &kek256,
            "00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f",
            "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43b\
             fb988b9b7a02dd21",
        ),
    ];
    for (kek, p, c) in cases {
        assert_eq!(wrap(&m, kek, &hex(p)).unwrap(), hex(c));
        assert_eq!(unwrap(&m, kek, &hex(c)).unwrap().to_vec(), hex(p));
        both_ways(kek, &m, p, c);
        let mut bad = hex(c);
        bad[3] ^= 1;
        assert_eq!(code(unwrap(&m, kek, &bad)), ErrorCode::WrappedKeyInvalid);
        assert_eq!(
            code(run(Decrypt, kek, &m, &bad)),
            ErrorCode::EncryptedDataInvalid
        );
    }
    // The default IV may be given explicitly; another IV is refused.
    let explicit = mech(ck::CKM_AES_KEY_WRAP, MechanismParams::Bytes(vec![0xa6; 8]));
    assert_eq!(
        wrap(&explicit, &kek128, &hex("00112233445566778899aabbccddeeff")).unwrap(),
        hex("1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5")
    );
    let other = mech(ck::CKM_AES_KEY_WRAP, MechanismParams::Bytes(vec![0; 8]));
    assert_eq!(
        code(wrap(&other, &kek128, &[0; 16])),
        ErrorCode::MechanismParamInvalid
    );
    // Lengths KW cannot carry.
    assert_eq!(
        code(wrap(&m, &kek128, &[0; 12])),
        ErrorCode::KeyNotWrappable
    );
    assert_eq!(
        code(run(Encrypt, &kek128, &m, &[0; 8])),
        ErrorCode::DataLenRange
    );
    assert_eq!(
        code(run(Decrypt, &kek128, &m, &[0; 20])),
        ErrorCode::EncryptedDataLenRange
    );
    // AES-192 KEKs (through aws-lc's C API): RFC 3394 4.2.
    let kek192 = aes(&hex("000102030405060708090A0B0C0D0E0F1011121314151617"));
    let w = wrap(&m, &kek192, &hex("00112233445566778899AABBCCDDEEFF")).unwrap();
    assert_eq!(w, hex("96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D"));
    assert_eq!(
        unwrap(&m, &kek192, &w).unwrap().as_slice(),
        hex("00112233445566778899AABBCCDDEEFF")
    );
}

#[test]
fn x963_kdf_nist_cavp() {
    use aws_lc_rs::digest::SHA256;
    let cases = [
        (
            "96c05619d56c328ab95fe84b18264b08725b85e33fd34f08",
            "",
            "443024c3dae66b95e6f5670601558f71",
        ),
        (
            "96f600b73ad6ac5629577eced51743dd2c24c21b1ac83ee4",
            "",
            "b6295162a7804f5667ba9070f82fa522",
        ),
        (
            "22518b10e70f2a3f243810ae3254139efbee04aa57c7af7d",
            "75eef81aa3041e33b80971203d2c0c52",
            "c498af77161cc59f2962b9a713e2b215152d139766ce34a776df11866a69bf2e\
             52a13d9c7c6fc878c50c5ea0bc7b00e0da2447cfd874f6cf92f30d0097111485\
             500c90c3af8b487872d04685d14c8d1dc8d7fa08beb0ce0ababc11f0bd496269\
             142d43525a78e5bc79a17f59676a5706dc54d54d4d1f0bd7e386128ec26afc21",
        ),
    ];
    for (z, info, want) in cases {
        let want = hex(want);
        let got = ec::x963_kdf_for_tests(&SHA256, &hex(z), &hex(info), want.len());
        assert_eq!(got.to_vec(), want);
        // What derive returns is longer; a prefix of it is the shorter output.
        let long = ec::x963_kdf_for_tests(&SHA256, &hex(z), &hex(info), KDF_OUTPUT_LEN);
        assert_eq!(long[..want.len()], want[..]);
    }
}

#[test]
fn ed25519_rfc8032() {
    let cases = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];
    let m = plain(ck::CKM_EDDSA);
    for (seed, msg, sig) in cases {
        let pair = keys::import_ed25519_private(&hex(seed)).unwrap();
        let pk = public(&pair.public);
        let sk = secret(pair.private);
        for chunk in [0, 1] {
            let got = run_chunked(Sign, &sk, &m, &hex(msg), chunk, None).unwrap();
            assert_eq!(hex::encode(got), sig);
        }
        verify(&pk, &m, &hex(msg), &hex(sig)).unwrap();
        let mut bad = hex(sig);
        bad[10] ^= 4;
        assert_eq!(
            code(verify(&pk, &m, &hex(msg), &bad)),
            ErrorCode::SignatureInvalid
        );
        assert_eq!(
            code(verify(&pk, &m, &hex(msg), &bad[1..])),
            ErrorCode::SignatureLenRange
        );
    }
}
