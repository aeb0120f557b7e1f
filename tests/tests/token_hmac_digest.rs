//! HMAC (RFC 2202, RFC 4231), digests (FIPS 180 "abc"), `C_DigestKey`, generic secret
//! generation and `C_SeedRandom` through the real module.

mod token_util;

use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType};
use hmac::{Hmac, Mac};
use hsm_tests::keys::ec_pair;
use hsm_tests::{assert_ckr, isolated};
use sha2::{Digest, Sha256};
use token_util::{Checks, attr, flag, h, import_secret, rv_of, value_of};

fn hmac_key(s: &cryptoki::session::Session, value: &[u8]) -> cryptoki::object::ObjectHandle {
    import_secret(
        s,
        KeyType::GENERIC_SECRET,
        value,
        &[Attribute::Sign(true), Attribute::Verify(true)],
    )
}

/// The key of RFC 2202 / RFC 4231 test case 1.
const TC1_KEY: [u8; 20] = [0x0b; 20];

/// (name, mechanism, key, data, MAC).
type HmacCase = (
    &'static str,
    Mechanism<'static>,
    &'static [u8],
    &'static [u8],
    &'static str,
);

#[test]
fn hmac_rfc_4231_and_2202_vectors() {
    isolated("hmac_rfc_4231_and_2202_vectors", |_cluster, token| {
        let s = token.user_session();
        let cases: &[HmacCase] = &[
            (
                "CKM_SHA_1_HMAC RFC 2202 test 1",
                Mechanism::Sha1Hmac,
                &TC1_KEY,
                b"Hi There",
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                "CKM_SHA_1_HMAC RFC 2202 test 2",
                Mechanism::Sha1Hmac,
                b"Jefe",
                b"what do ya want for nothing?",
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                "CKM_SHA224_HMAC RFC 4231 test 1",
                Mechanism::Sha224Hmac,
                &TC1_KEY,
                b"Hi There",
                "896fb1128abbdf196832107cd49df33f47b4b1169912ba4f53684b22",
            ),
            (
                "CKM_SHA256_HMAC RFC 4231 test 1",
                Mechanism::Sha256Hmac,
                &TC1_KEY,
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                "CKM_SHA256_HMAC RFC 4231 test 2",
                Mechanism::Sha256Hmac,
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                "CKM_SHA384_HMAC RFC 4231 test 1",
                Mechanism::Sha384Hmac,
                &TC1_KEY,
                b"Hi There",
                "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c
                 faea9ea9076ede7f4af152e8b2fa9cb6",
            ),
            (
                "CKM_SHA512_HMAC RFC 4231 test 1",
                Mechanism::Sha512Hmac,
                &TC1_KEY,
                b"Hi There",
                "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde
                 daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
            ),
        ];
        let mut checks = Checks::new();
        for (name, mech, key, data, mac) in cases {
            checks.run(name, || {
                let k = hmac_key(&s, key);
                let mac = h(mac);
                assert_eq!(s.sign(mech, k, data).expect("C_Sign"), mac);
                s.verify(mech, k, data, &mac).expect("C_Verify");
                let mut bad = mac.clone();
                bad[3] ^= 0x10;
                assert_ckr(s.verify(mech, k, data, &bad), RvError::SignatureInvalid);
                assert_ckr(
                    s.verify(mech, k, b"other data", &mac),
                    RvError::SignatureInvalid,
                );
                // A MAC of the wrong length is refused (either code is the spec's).
                let short = rv_of(s.verify(mech, k, data, &mac[..mac.len() - 1]));
                assert!(
                    matches!(
                        short,
                        Some(RvError::SignatureLenRange | RvError::SignatureInvalid)
                    ),
                    "truncated MAC: {short:?}"
                );
            });
        }
        checks.finish();
    });
}

#[test]
fn generic_secret_generation_and_hmac_against_the_hmac_crate() {
    isolated(
        "generic_secret_generation_and_hmac_against_the_hmac_crate",
        |_cluster, token| {
            let s = token.user_session();
            let k = s
                .generate_key(
                    &Mechanism::GenericSecretKeyGen,
                    &[
                        Attribute::ValueLen(32.into()),
                        Attribute::Sign(true),
                        Attribute::Verify(true),
                        Attribute::Sensitive(false),
                        Attribute::Extractable(true),
                    ],
                )
                .expect("C_GenerateKey(CKM_GENERIC_SECRET_KEY_GEN)");
            assert_eq!(
                attr(&s, k, AttributeType::KeyType),
                Attribute::KeyType(KeyType::GENERIC_SECRET)
            );
            assert_eq!(
                attr(&s, k, AttributeType::KeyGenMechanism),
                Attribute::KeyGenMechanism(MechanismType::GENERIC_SECRET_KEY_GEN)
            );
            assert!(flag(&s, k, AttributeType::Local));
            let value = value_of(&s, k);
            assert_eq!(value.len(), 32);
            let data = b"generated HMAC key";
            let mut mac = Hmac::<Sha256>::new_from_slice(&value).expect("key");
            mac.update(data);
            assert_eq!(
                s.sign(&Mechanism::Sha256Hmac, k, data).expect("C_Sign"),
                mac.finalize().into_bytes().to_vec()
            );
            // Without CKA_VALUE_LEN: incomplete.
            assert_ckr(
                s.generate_key(&Mechanism::GenericSecretKeyGen, &[Attribute::Sign(true)]),
                RvError::TemplateIncomplete,
            );
            // An HMAC key cannot do AES and an AES key cannot do HMAC.
            assert_ckr(
                s.encrypt(&Mechanism::AesEcb, k, &[0; 16]),
                RvError::KeyTypeInconsistent,
            );
            let aes = import_secret(
                &s,
                KeyType::AES,
                &[1; 16],
                &[Attribute::Sign(true), Attribute::Encrypt(true)],
            );
            assert_ckr(
                s.sign(&Mechanism::Sha256Hmac, aes, data),
                RvError::KeyTypeInconsistent,
            );
        },
    );
}

#[test]
fn digests_fips_180_vectors_and_digest_key() {
    isolated(
        "digests_fips_180_vectors_and_digest_key",
        |_cluster, token| {
            // Digests need no login.
            let s = token.session();
            let cases: &[(&str, Mechanism<'static>, &str)] = &[
                (
                    "CKM_SHA_1",
                    Mechanism::Sha1,
                    "a9993e364706816aba3e25717850c26c9cd0d89d",
                ),
                (
                    "CKM_SHA224",
                    Mechanism::Sha224,
                    "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
                ),
                (
                    "CKM_SHA256",
                    Mechanism::Sha256,
                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                ),
                (
                    "CKM_SHA384",
                    Mechanism::Sha384,
                    "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed
                     8086072ba1e7cc2358baeca134c825a7",
                ),
                (
                    "CKM_SHA512",
                    Mechanism::Sha512,
                    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a
                     2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
                ),
            ];
            let mut checks = Checks::new();
            for (name, mech, digest) in cases {
                checks.run(&format!("{name} \"abc\""), || {
                    assert_eq!(s.digest(mech, b"abc").expect("C_Digest"), h(digest));
                });
            }
            checks.run("CKM_SHA256 of nothing", || {
                assert_eq!(
                    s.digest(&Mechanism::Sha256, b"").expect("C_Digest"),
                    Sha256::digest(b"").to_vec()
                );
            });

            // C_DigestKey: the key's value is digested between the other parts.
            let user = token.user_session();
            let value = h("00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0");
            let key = import_secret(&user, KeyType::GENERIC_SECRET, &value, &[]);
            checks.run("C_DigestKey (CKM_SHA256)", || {
                user.digest_init(&Mechanism::Sha256).expect("C_DigestInit");
                user.digest_update(b"before ").expect("C_DigestUpdate");
                user.digest_key(key).expect("C_DigestKey");
                user.digest_update(b" after").expect("C_DigestUpdate");
                let got = user.digest_final().expect("C_DigestFinal");
                let mut expected = Sha256::new();
                expected.update(b"before ");
                expected.update(&value);
                expected.update(b" after");
                assert_eq!(got, expected.finalize().to_vec());
            });
            checks.run("C_DigestKey of a sensitive AES key", || {
                let aes = import_secret(
                    &user,
                    KeyType::AES,
                    &value[..16],
                    &[Attribute::Sensitive(true)],
                );
                user.digest_init(&Mechanism::Sha256).expect("C_DigestInit");
                user.digest_key(aes).expect("C_DigestKey");
                assert_eq!(
                    user.digest_final().expect("C_DigestFinal"),
                    Sha256::digest(&value[..16]).to_vec()
                );
            });
            checks.run("C_DigestKey of a private key", || {
                let pair = ec_pair(&user, false, "indigestible", b"i");
                user.digest_init(&Mechanism::Sha256).expect("C_DigestInit");
                assert_ckr(user.digest_key(pair.private), RvError::KeyIndigestible);
            });
            checks.finish();
        },
    );
}

#[test]
fn seed_random_is_accepted() {
    isolated("seed_random_is_accepted", |_cluster, token| {
        let s = token.session();
        s.seed_random(b"some extra entropy from the application")
            .expect("C_SeedRandom");
        let a = s.generate_random_vec(32).expect("C_GenerateRandom");
        let b = s.generate_random_vec(32).expect("C_GenerateRandom");
        assert_ne!(a, b);
    });
}
