//! `C_WrapKey`/`C_UnwrapKey` and `C_DeriveKey` through the real module: AES key wrap with
//! RFC 3394 and RFC 5649 vectors, RSA-OAEP and AES-GCM wrapping checked with the `rsa` and
//! `aes-gcm` crates, private keys wrapped and unwrapped, the refusals (non-extractable keys,
//! `CKA_WRAP_WITH_TRUSTED` without a trusted wrapping key), and ECDH1_DERIVE on every curve
//! with `CKD_NULL` and `CKD_SHA256_KDF` against RustCrypto's ECDH and an X9.63 KDF computed
//! here.

mod token_util;

use aes_gcm::aead::{Aead, KeyInit};
use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsm_tests::keys::{P256_PARAMS, find};
use hsm_tests::{assert_ckr, isolated, login_user};
use p256::pkcs8::DecodePrivateKey;
use rsa::rand_core::OsRng;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use token_util::{
    CURVES, Checks, aes_kcv, attr, bytes, curve_crate, flag, h, import_secret, octet_string,
    parse_octet_string, rsa_test_key, value_of, x963_sha256,
};

/// A wrapping key (KEK) imported with `value`.
fn kek(s: &Session, value: &[u8], extra: &[Attribute]) -> ObjectHandle {
    let mut t = vec![Attribute::Wrap(true), Attribute::Unwrap(true)];
    t.extend_from_slice(extra);
    import_secret(s, KeyType::AES, value, &t)
}

/// An extractable secret key to wrap.
fn target(s: &Session, key_type: KeyType, value: &[u8], extra: &[Attribute]) -> ObjectHandle {
    let mut t = vec![
        Attribute::Extractable(true),
        Attribute::Sensitive(true),
        Attribute::Encrypt(true),
    ];
    t.extend_from_slice(extra);
    import_secret(s, key_type, value, &t)
}

/// The template of an unwrapped secret key whose value the test reads back.
fn unwrap_template(key_type: KeyType) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Label(b"unwrapped".to_vec()),
    ]
}

/// (name, mechanism, KEK, key type, key data, wrapped).
type WrapCase = (
    &'static str,
    Mechanism<'static>,
    &'static str,
    KeyType,
    &'static str,
    &'static str,
);

#[test]
fn aes_key_wrap_rfc3394_and_rfc5649_vectors() {
    isolated(
        "aes_key_wrap_rfc3394_and_rfc5649_vectors",
        |_cluster, token| {
            let s = token.user_session();
            let mut checks = Checks::new();
            // (name, mechanism, KEK, key type, key data, wrapped)
            let cases: &[WrapCase] = &[
                (
                    "CKM_AES_KEY_WRAP RFC 3394 4.1 (128-bit KEK, 128-bit key)",
                    Mechanism::AesKeyWrap,
                    "000102030405060708090A0B0C0D0E0F",
                    KeyType::AES,
                    "00112233445566778899AABBCCDDEEFF",
                    "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
                ),
                (
                    "CKM_AES_KEY_WRAP RFC 3394 4.6 (256-bit KEK, 256-bit key)",
                    Mechanism::AesKeyWrap,
                    "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                    KeyType::AES,
                    "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
                    "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326
                     CBC7F0E71A99F43BFB988B9B7A02DD21",
                ),
                (
                    "CKM_AES_KEY_WRAP_PAD RFC 5649 (20-byte key)",
                    Mechanism::AesKeyWrapPad,
                    "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8",
                    KeyType::GENERIC_SECRET,
                    "c37b7e6492584340bed12207808941155068f738",
                    "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
                ),
                (
                    "CKM_AES_KEY_WRAP_PAD RFC 5649 (7-byte key)",
                    Mechanism::AesKeyWrapPad,
                    "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8",
                    KeyType::GENERIC_SECRET,
                    "466f7250617369",
                    "afbeb0f07dfbf5419200f2ccb50bb24f",
                ),
            ];
            for (name, mech, kek_value, key_type, key_value, wrapped) in cases {
                checks.run(name, || {
                    let kek = kek(&s, &h(kek_value), &[]);
                    let key = target(&s, *key_type, &h(key_value), &[]);
                    let got = s.wrap_key(mech, kek, key).expect("C_WrapKey");
                    assert_eq!(got, h(wrapped), "wrapped bytes");
                    let back = s
                        .unwrap_key(mech, kek, &got, &unwrap_template(*key_type))
                        .expect("C_UnwrapKey");
                    assert_eq!(value_of(&s, back), h(key_value), "unwrapped value");
                    assert_eq!(
                        attr(&s, back, AttributeType::KeyType),
                        Attribute::KeyType(*key_type)
                    );
                    // An unwrapped key was not made here, nor always sensitive.
                    assert!(!flag(&s, back, AttributeType::Local), "CKA_LOCAL");
                    assert!(!flag(&s, back, AttributeType::NeverExtractable));
                    assert!(!flag(&s, back, AttributeType::AlwaysSensitive));
                    let mut bad = got.clone();
                    bad[3] ^= 1;
                    assert_ckr(
                        s.unwrap_key(mech, kek, &bad, &unwrap_template(*key_type)),
                        RvError::WrappedKeyInvalid,
                    );
                });
            }
            // RFC 5649's vectors use an AES-192 KEK; with AES-128/256 KEKs and odd key lengths,
            // the aes-kw crate is the reference.
            for (kek_len, key_len) in [(16usize, 1usize), (16, 20), (32, 7), (32, 33), (32, 64)] {
                checks.run(
                    &format!(
                        "CKM_AES_KEY_WRAP_PAD AES-{} KEK, {key_len}-byte key",
                        kek_len * 8
                    ),
                    || {
                        let kek_value: Vec<u8> = (0..kek_len as u8).collect();
                        let key_value: Vec<u8> = (0..key_len).map(|i| (i * 3 + 1) as u8).collect();
                        let kek = kek(&s, &kek_value, &[]);
                        let key = target(&s, KeyType::GENERIC_SECRET, &key_value, &[]);
                        let got = s
                            .wrap_key(&Mechanism::AesKeyWrapPad, kek, key)
                            .expect("C_WrapKey");
                        let expected = match kek_len {
                            16 => aes_kw::KekAes128::try_from(kek_value.as_slice())
                                .expect("KEK")
                                .wrap_with_padding_vec(&key_value),
                            _ => aes_kw::KekAes256::try_from(kek_value.as_slice())
                                .expect("KEK")
                                .wrap_with_padding_vec(&key_value),
                        }
                        .expect("aes-kw wraps");
                        assert_eq!(got, expected, "wrapped bytes equal the aes-kw crate's");
                        let back = s
                            .unwrap_key(
                                &Mechanism::AesKeyWrapPad,
                                kek,
                                &got,
                                &unwrap_template(KeyType::GENERIC_SECRET),
                            )
                            .expect("C_UnwrapKey");
                        assert_eq!(value_of(&s, back), key_value);
                    },
                );
            }
            checks.run("CKM_AES_KEY_WRAP of a bad length", || {
                let kek = kek(&s, &[1; 16], &[]);
                assert_ckr(
                    s.unwrap_key(
                        &Mechanism::AesKeyWrap,
                        kek,
                        &[0; 20],
                        &unwrap_template(KeyType::AES),
                    ),
                    RvError::WrappedKeyLenRange,
                );
            });
            checks.run("unwrapped AES key keeps its KCV", || {
                let kek = kek(&s, &[2; 32], &[]);
                let value = h("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
                let key = target(&s, KeyType::AES, &value, &[]);
                let wrapped = s
                    .wrap_key(&Mechanism::AesKeyWrapPad, kek, key)
                    .expect("C_WrapKey");
                let back = s
                    .unwrap_key(
                        &Mechanism::AesKeyWrapPad,
                        kek,
                        &wrapped,
                        &[
                            Attribute::Class(ObjectClass::SECRET_KEY),
                            Attribute::KeyType(KeyType::AES),
                            Attribute::Encrypt(true),
                        ],
                    )
                    .expect("C_UnwrapKey into a sensitive key");
                assert_eq!(bytes(&s, back, AttributeType::CheckValue), aes_kcv(&value));
                assert_eq!(
                    s.encrypt(&Mechanism::AesEcb, back, &[0; 16]).expect("ECB"),
                    s.encrypt(&Mechanism::AesEcb, key, &[0; 16]).expect("ECB"),
                );
            });
            checks.finish();
        },
    );
}

fn oaep_sha256() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    ))
}

#[test]
fn rsa_oaep_and_aes_gcm_wrapping_checked_with_the_crates() {
    isolated(
        "rsa_oaep_and_aes_gcm_wrapping_checked_with_the_crates",
        |_cluster, token| {
            let s = token.user_session();
            let mut checks = Checks::new();
            let value = h("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
            checks.run("CKM_RSA_PKCS_OAEP wrap and unwrap", || {
                let key = rsa_test_key();
                let public = key.to_public_key();
                let n = public.n().to_bytes_be();
                let e = public.e().to_bytes_be();
                let wrapping = s
                    .create_object(&[
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                        Attribute::KeyType(KeyType::RSA),
                        Attribute::Modulus(n.clone()),
                        Attribute::PublicExponent(e.clone()),
                        Attribute::Wrap(true),
                    ])
                    .expect("RSA public wrapping key");
                let primes = key.primes();
                let unwrapping = s
                    .create_object(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::KeyType(KeyType::RSA),
                        Attribute::Modulus(n),
                        Attribute::PublicExponent(e),
                        Attribute::PrivateExponent(key.d().to_bytes_be()),
                        Attribute::Prime1(primes[0].to_bytes_be()),
                        Attribute::Prime2(primes[1].to_bytes_be()),
                        Attribute::Exponent1(key.dp().expect("dp").to_bytes_be()),
                        Attribute::Exponent2(key.dq().expect("dq").to_bytes_be()),
                        Attribute::Coefficient(key.crt_coefficient().expect("qinv").to_bytes_be()),
                        Attribute::Unwrap(true),
                    ])
                    .expect("RSA private unwrapping key");
                let aes = target(&s, KeyType::AES, &value, &[]);
                let wrapped = s
                    .wrap_key(&oaep_sha256(), wrapping, aes)
                    .expect("C_WrapKey(RSA-OAEP)");
                assert_eq!(wrapped.len(), 256);
                assert_eq!(
                    key.decrypt(rsa::Oaep::new::<sha2::Sha256>(), &wrapped)
                        .expect("the rsa crate unwraps"),
                    value
                );
                // The other way: the crate wraps, the HSM unwraps.
                let theirs = public
                    .encrypt(&mut OsRng, rsa::Oaep::new::<sha2::Sha256>(), &value)
                    .expect("rsa crate OAEP");
                let back = s
                    .unwrap_key(
                        &oaep_sha256(),
                        unwrapping,
                        &theirs,
                        &unwrap_template(KeyType::AES),
                    )
                    .expect("C_UnwrapKey(RSA-OAEP)");
                assert_eq!(value_of(&s, back), value);
            });
            checks.run("CKM_AES_GCM wrap and unwrap", || {
                let kek_value = [0x42u8; 32];
                let kek = kek(&s, &kek_value, &[]);
                let aes = target(&s, KeyType::AES, &value, &[]);
                let iv = [0x24u8; 12];
                let mut iv_buf = iv;
                let wrapped = s
                    .wrap_key(
                        &Mechanism::AesGcm(
                            GcmParams::new(&mut iv_buf, b"wrap", 128.into()).expect("params"),
                        ),
                        kek,
                        aes,
                    )
                    .expect("C_WrapKey(AES-GCM)");
                let cipher = aes_gcm::Aes256Gcm::new_from_slice(&kek_value).expect("key");
                let opened = cipher
                    .decrypt(
                        &iv.into(),
                        aes_gcm::aead::Payload {
                            msg: &wrapped,
                            aad: b"wrap",
                        },
                    )
                    .expect("aes-gcm opens the wrapped key");
                assert_eq!(opened, value);
                let mut iv_buf = iv;
                let back = s
                    .unwrap_key(
                        &Mechanism::AesGcm(
                            GcmParams::new(&mut iv_buf, b"wrap", 128.into()).expect("params"),
                        ),
                        kek,
                        &wrapped,
                        &unwrap_template(KeyType::AES),
                    )
                    .expect("C_UnwrapKey(AES-GCM)");
                assert_eq!(value_of(&s, back), value);
            });
            checks.finish();
        },
    );
}

#[test]
fn private_keys_wrapped_and_unwrapped() {
    isolated("private_keys_wrapped_and_unwrapped", |_cluster, token| {
        let s = token.user_session();
        let mut checks = Checks::new();
        let kek_value = [0x17u8; 32];
        let kek = kek(&s, &kek_value, &[]);
        checks.run("EC P-256 private key: AES-KWP and AES-GCM", || {
            let (public, private) = s
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[Attribute::EcParams(P256_PARAMS.to_vec())],
                    &[
                        Attribute::Sign(true),
                        Attribute::Extractable(true),
                        Attribute::Sensitive(true),
                    ],
                )
                .expect("extractable EC pair");
            let point = parse_octet_string(&bytes(&s, public, AttributeType::EcPoint));
            let wrapped = s
                .wrap_key(&Mechanism::AesKeyWrapPad, kek, private)
                .expect("C_WrapKey(AES-KWP, EC private key)");
            let back = s
                .unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    kek,
                    &wrapped,
                    &[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::KeyType(KeyType::EC),
                        Attribute::Sign(true),
                    ],
                )
                .expect("C_UnwrapKey(AES-KWP, EC private key)");
            assert_eq!(bytes(&s, back, AttributeType::EcParams), P256_PARAMS);
            let digest = hsm_tests::keys::sha256(b"unwrapped EC key");
            let sig = s
                .sign(&Mechanism::Ecdsa, back, &digest)
                .expect("sign with the unwrapped key");
            (curve_crate(&CURVES[0]).verify_prehash)(&point, &digest, &sig)
                .expect("the original public key verifies");
            // With AES-GCM, the crate opens it: a PKCS#8 PrivateKeyInfo of the same key.
            let iv = [9u8; 12];
            let mut iv_buf = iv;
            let wrapped = s
                .wrap_key(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv_buf, &[], 128.into()).unwrap()),
                    kek,
                    private,
                )
                .expect("C_WrapKey(AES-GCM, EC private key)");
            let pkcs8 = aes_gcm::Aes256Gcm::new_from_slice(&kek_value)
                .expect("key")
                .decrypt(&iv.into(), wrapped.as_slice())
                .expect("aes-gcm opens it");
            let secret = p256::SecretKey::from_pkcs8_der(&pkcs8).expect("PKCS#8 P-256 key");
            assert_eq!(
                p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &secret.public_key(),
                    false
                )
                .as_bytes(),
                point.as_slice()
            );
        });
        checks.run("RSA private key: AES-KWP", || {
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
                    Attribute::Extractable(true),
                ])
                .expect("import extractable RSA key");
            let wrapped = s
                .wrap_key(&Mechanism::AesKeyWrapPad, kek, private)
                .expect("C_WrapKey(AES-KWP, RSA private key)");
            let back = s
                .unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    kek,
                    &wrapped,
                    &[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::KeyType(KeyType::RSA),
                        Attribute::Sign(true),
                    ],
                )
                .expect("C_UnwrapKey(AES-KWP, RSA private key)");
            assert_eq!(
                bytes(&s, back, AttributeType::Modulus),
                key.n().to_bytes_be()
            );
            let msg = b"unwrapped RSA key";
            let digest = hsm_tests::keys::sha256(msg);
            let expected = key
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
                .expect("crate signs");
            assert_eq!(
                s.sign(&Mechanism::Sha256RsaPkcs, back, msg).expect("sign"),
                expected
            );
        });
        checks.finish();
    });
}

#[test]
fn wrap_refusals_and_wrap_with_trusted() {
    isolated("wrap_refusals_and_wrap_with_trusted", |cluster, token| {
        let s = token.user_session();
        let kek_h = kek(&s, &[3; 32], &[]);
        // Not extractable.
        let locked = import_secret(&s, KeyType::AES, &[4; 16], &[Attribute::Extractable(false)]);
        assert_ckr(
            s.wrap_key(&Mechanism::AesKeyWrap, kek_h, locked),
            RvError::KeyUnextractable,
        );
        let generated = hsm_tests::keys::aes_key(&s, 32, "gen", &[Attribute::Extractable(false)]);
        assert_ckr(
            s.wrap_key(&Mechanism::AesKeyWrap, kek_h, generated),
            RvError::KeyUnextractable,
        );
        // A wrapping key without CKA_WRAP / CKA_UNWRAP.
        let plain = import_secret(&s, KeyType::AES, &[5; 32], &[]);
        let key = target(&s, KeyType::AES, &[6; 16], &[]);
        assert_ckr(
            s.wrap_key(&Mechanism::AesKeyWrap, plain, key),
            RvError::KeyFunctionNotPermitted,
        );
        let wrapped = s
            .wrap_key(&Mechanism::AesKeyWrap, kek_h, key)
            .expect("C_WrapKey");
        assert_ckr(
            s.unwrap_key(
                &Mechanism::AesKeyWrap,
                plain,
                &wrapped,
                &unwrap_template(KeyType::AES),
            ),
            RvError::KeyFunctionNotPermitted,
        );
        // A mechanism that does not wrap.
        assert_ckr(
            s.wrap_key(&Mechanism::AesEcb, kek_h, key),
            RvError::MechanismInvalid,
        );

        // CKA_WRAP_WITH_TRUSTED: only a wrapping key with CKA_TRUSTED, which only the SO sets.
        let trusted_kek = kek(
            &s,
            &[7; 32],
            &[
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Label(b"to-be-trusted".to_vec()),
            ],
        );
        let guarded = target(
            &s,
            KeyType::AES,
            &[8; 16],
            &[Attribute::WrapWithTrusted(true)],
        );
        assert!(flag(&s, guarded, AttributeType::WrapWithTrusted));
        assert_ckr(
            s.wrap_key(&Mechanism::AesKeyWrap, kek_h, guarded),
            RvError::KeyNotWrappable,
        );
        assert_ckr(
            s.wrap_key(&Mechanism::AesKeyWrap, trusted_kek, guarded),
            RvError::KeyNotWrappable,
        );
        assert_ckr(
            s.update_attributes(trusted_kek, &[Attribute::Trusted(true)]),
            RvError::AttributeReadOnly,
        );
        s.logout().expect("C_Logout");
        s.login(UserType::So, Some(&AuthPin::from(cluster.so_pin.clone())))
            .expect("C_Login(CKU_SO)");
        let found = find(&s, &[Attribute::Label(b"to-be-trusted".to_vec())]);
        assert_eq!(
            found,
            vec![trusted_kek],
            "the SO sees the public wrapping key"
        );
        s.update_attributes(trusted_kek, &[Attribute::Trusted(true)])
            .expect("C_SetAttributeValue(CKA_TRUSTED) by the SO");
        s.logout().expect("C_Logout");
        login_user(&s, &token.user_pin);
        assert!(flag(&s, trusted_kek, AttributeType::Trusted));
        // The guarded key may be a session object of before the logout, or not: make one now.
        let guarded = target(
            &s,
            KeyType::AES,
            &[8; 16],
            &[Attribute::WrapWithTrusted(true)],
        );
        let wrapped = s
            .wrap_key(&Mechanism::AesKeyWrap, trusted_kek, guarded)
            .expect("C_WrapKey with a trusted wrapping key");
        let back = s
            .unwrap_key(
                &Mechanism::AesKeyWrap,
                trusted_kek,
                &wrapped,
                &unwrap_template(KeyType::AES),
            )
            .expect("C_UnwrapKey");
        assert_eq!(value_of(&s, back), [8; 16]);
        assert_ckr(
            s.wrap_key(&Mechanism::AesKeyWrap, kek_h, guarded),
            RvError::KeyNotWrappable,
        );
    });
}

#[test]
fn ecdh1_derive_every_curve_null_and_sha256_kdf() {
    isolated(
        "ecdh1_derive_every_curve_null_and_sha256_kdf",
        |_cluster, token| {
            let s = token.user_session();
            let mut checks = Checks::new();
            let secret_template = |key_type: KeyType, len: usize| {
                vec![
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(key_type),
                    Attribute::ValueLen((len as u64).into()),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                    Attribute::Encrypt(true),
                ]
            };
            for curve in &CURVES {
                let lib = curve_crate(curve);
                checks.run(&format!("CKM_ECDH1_DERIVE {}", curve.name), || {
                    let (public, private) = s
                        .generate_key_pair(
                            &Mechanism::EccKeyPairGen,
                            &[Attribute::EcParams(curve.params.to_vec())],
                            &[Attribute::Derive(true)],
                        )
                        .expect("C_GenerateKeyPair with CKA_DERIVE");
                    let point = parse_octet_string(&bytes(&s, public, AttributeType::EcPoint));
                    let (their_scalar, their_point) = (lib.random)();
                    let z = (lib.ecdh)(&their_scalar, &point);
                    assert_eq!(z.len(), curve.field_len);

                    // CKD_NULL: the x-coordinate itself, with the peer point raw or DER.
                    for (form, public_data) in [
                        ("raw point", their_point.clone()),
                        ("DER OCTET STRING", octet_string(&their_point)),
                    ] {
                        let params = Ecdh1DeriveParams::new(EcKdf::null(), &public_data);
                        let derived = s
                            .derive_key(
                                &Mechanism::Ecdh1Derive(params),
                                private,
                                &secret_template(KeyType::GENERIC_SECRET, curve.field_len),
                            )
                            .unwrap_or_else(|e| panic!("C_DeriveKey(CKD_NULL, {form}): {e}"));
                        assert_eq!(value_of(&s, derived), z, "CKD_NULL with a {form}");
                        assert!(!flag(&s, derived, AttributeType::Local));
                    }

                    // CKD_SHA256_KDF with shared data: 32 bytes of a generic secret, and an
                    // AES-128 key that must equal the first 16 bytes of the same KDF output.
                    let shared = b"ECDH shared info";
                    let params = Ecdh1DeriveParams::new(EcKdf::sha256(shared), &their_point);
                    let derived = s
                        .derive_key(
                            &Mechanism::Ecdh1Derive(params),
                            private,
                            &secret_template(KeyType::GENERIC_SECRET, 32),
                        )
                        .expect("C_DeriveKey(CKD_SHA256_KDF)");
                    assert_eq!(value_of(&s, derived), x963_sha256(&z, shared, 32));
                    let params = Ecdh1DeriveParams::new(EcKdf::sha256(shared), &their_point);
                    let aes = s
                        .derive_key(
                            &Mechanism::Ecdh1Derive(params),
                            private,
                            &secret_template(KeyType::AES, 16),
                        )
                        .expect("C_DeriveKey(CKD_SHA256_KDF) of an AES key");
                    let expected = x963_sha256(&z, shared, 16);
                    assert_eq!(value_of(&s, aes), expected);
                    assert_eq!(
                        bytes(&s, aes, AttributeType::CheckValue),
                        aes_kcv(&expected)
                    );
                });
            }
            checks.run("a base key without CKA_DERIVE", || {
                let (_, private) = s
                    .generate_key_pair(
                        &Mechanism::EccKeyPairGen,
                        &[Attribute::EcParams(P256_PARAMS.to_vec())],
                        &[Attribute::Derive(false), Attribute::Sign(true)],
                    )
                    .expect("pair");
                let (_, their_point) = (curve_crate(&CURVES[0]).random)();
                let params = Ecdh1DeriveParams::new(EcKdf::null(), &their_point);
                assert_ckr(
                    s.derive_key(
                        &Mechanism::Ecdh1Derive(params),
                        private,
                        &secret_template(KeyType::GENERIC_SECRET, 32),
                    ),
                    RvError::KeyFunctionNotPermitted,
                );
            });
            checks.run("a peer point not on the curve", || {
                let (_, private) = s
                    .generate_key_pair(
                        &Mechanism::EccKeyPairGen,
                        &[Attribute::EcParams(P256_PARAMS.to_vec())],
                        &[Attribute::Derive(true)],
                    )
                    .expect("pair");
                let bogus = [4u8; 65];
                let params = Ecdh1DeriveParams::new(EcKdf::null(), &bogus);
                let r = s.derive_key(
                    &Mechanism::Ecdh1Derive(params),
                    private,
                    &secret_template(KeyType::GENERIC_SECRET, 32),
                );
                assert!(
                    matches!(
                        token_util::rv_of(r),
                        Some(RvError::MechanismParamInvalid | RvError::DomainParamsInvalid)
                    ),
                    "a bad peer point must be refused as a bad parameter"
                );
            });
            checks.finish();
        },
    );
}
