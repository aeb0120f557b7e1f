//! The object model of the full token (issue 3) through the real module: data objects and
//! X.509 certificates, `C_CopyObject`, the `C_SetAttributeValue` rules, visibility of private
//! objects, token-set attributes, `CKA_UNIQUE_ID`, key check values, `CKA_PUBLIC_KEY_INFO`,
//! `CKA_ALLOWED_MECHANISMS`, usage flags and the template error codes. Each test runs in its
//! own process against its own cluster (see `isolated`).

mod token_util;

use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm_tests::keys::{P256_PARAMS, aes_key, attr_info, ec_pair, find, sha256};
use hsm_tests::token_probe::run_token_probe;
use hsm_tests::{assert_ckr, isolated};
use sha1::{Digest, Sha1};
use token_util::{
    aes_kcv, attr, bytes, der_tlv, flag, h, import_aes, import_secret, parse_octet_string, value_of,
};

fn label(l: &str) -> Attribute {
    Attribute::Label(l.as_bytes().to_vec())
}

/// A self-signed certificate and its DER subject, issuer and serial number (INTEGER TLV).
fn certificate() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["token-test.example".to_owned()])
        .expect("rcgen self-signed certificate");
    let der = ck.cert.der().to_vec();
    let (_, x509) = x509_parser::parse_x509_certificate(&der).expect("parse certificate");
    let subject = x509.tbs_certificate.subject.as_raw().to_vec();
    let issuer = x509.tbs_certificate.issuer.as_raw().to_vec();
    let serial = der_tlv(0x02, x509.tbs_certificate.raw_serial());
    (der, subject, issuer, serial)
}

#[test]
fn data_objects_and_certificates() {
    isolated("data_objects_and_certificates", |cluster, token| {
        let s = token.user_session();

        // A data object: application, object id and value read back; found by class/label.
        let data = s
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(false),
                label("data-1"),
                Attribute::Application(b"token tests".to_vec()),
                Attribute::ObjectId(vec![0x06, 0x03, 0x2a, 0x03, 0x04]),
                Attribute::Value(b"opaque application data".to_vec()),
            ])
            .expect("C_CreateObject(CKO_DATA)");
        assert_eq!(value_of(&s, data), b"opaque application data");
        assert_eq!(bytes(&s, data, AttributeType::Application), b"token tests");
        assert_eq!(
            bytes(&s, data, AttributeType::ObjectId),
            [0x06, 0x03, 0x2a, 0x03, 0x04]
        );
        assert_eq!(
            find(&s, &[Attribute::Class(ObjectClass::DATA), label("data-1")]),
            vec![data]
        );
        // A data object's value may change (it is not key material).
        s.update_attributes(data, &[Attribute::Value(b"new data".to_vec())])
            .expect("C_SetAttributeValue(CKA_VALUE) of a data object");
        assert_eq!(value_of(&s, data), b"new data");

        // An X.509 certificate, paired with a key by CKA_ID as Java's KeyStore does.
        let (der, subject, issuer, serial) = certificate();
        let id = vec![0xc0, 0xff, 0xee];
        let cert = s
            .create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                label("cert-1"),
                Attribute::Id(id.clone()),
                Attribute::Subject(subject.clone()),
                Attribute::Issuer(issuer.clone()),
                Attribute::SerialNumber(serial.clone()),
                Attribute::Value(der.clone()),
            ])
            .expect("C_CreateObject(CKO_CERTIFICATE)");
        let key = ec_pair(&s, true, "cert-1-key", &id);
        assert_eq!(value_of(&s, cert), der);
        assert_eq!(bytes(&s, cert, AttributeType::Subject), subject);
        assert_eq!(bytes(&s, cert, AttributeType::Issuer), issuer);
        assert_eq!(bytes(&s, cert, AttributeType::SerialNumber), serial);
        assert_eq!(
            attr(&s, cert, AttributeType::CertificateType),
            Attribute::CertificateType(CertificateType::X_509)
        );
        // CKA_CHECK_VALUE of a certificate: the first 3 bytes of SHA-1 of its value.
        assert_eq!(
            bytes(&s, cert, AttributeType::CheckValue),
            Sha1::digest(&der)[..3].to_vec()
        );
        let mut by_id = find(&s, &[Attribute::Id(id.clone())]);
        by_id.sort_by_key(|o| o.handle());
        let mut expected = vec![cert, key.public, key.private];
        expected.sort_by_key(|o| o.handle());
        assert_eq!(by_id, expected, "certificate and key pair share CKA_ID");
        assert_eq!(
            find(
                &s,
                &[
                    Attribute::Class(ObjectClass::CERTIFICATE),
                    Attribute::Id(id.clone())
                ]
            ),
            vec![cert]
        );
        assert_eq!(
            find(
                &s,
                &[
                    Attribute::Class(ObjectClass::CERTIFICATE),
                    Attribute::CertificateType(CertificateType::X_509),
                    Attribute::Subject(subject.clone()),
                ]
            ),
            vec![cert]
        );
        // Certificates are public: visible without login (Java lists them before it logs in).
        s.logout().expect("C_Logout");
        assert_eq!(find(&s, &[label("cert-1")]), vec![cert]);
        let mut public_by_id = find(&s, &[Attribute::Id(id.clone())]);
        public_by_id.sort_by_key(|o| o.handle());
        let mut expected = vec![cert, key.public];
        expected.sort_by_key(|o| o.handle());
        assert_eq!(
            public_by_id, expected,
            "before login: certificate and public key"
        );
        token_util_login(&s, &token.user_pin);

        // C_GetObjectSize: at least the value's size; NULL and bogus handles refused.
        let p = run_token_probe(cluster, &token.user_pin, &["object-size", "data-1"]);
        p.assert_rv("rv", cryptoki_sys::CKR_OK);
        let size: u64 = p.get("size").parse().expect("object size");
        assert!(size >= 8, "C_GetObjectSize of a data object: {size}");
        p.assert_rv("null_rv", cryptoki_sys::CKR_ARGUMENTS_BAD);
        p.assert_rv("bogus_rv", cryptoki_sys::CKR_OBJECT_HANDLE_INVALID);
        let p = run_token_probe(cluster, &token.user_pin, &["object-size", "cert-1"]);
        p.assert_rv("rv", cryptoki_sys::CKR_OK);
        let size: u64 = p.get("size").parse().expect("object size");
        assert!(
            size >= der.len() as u64,
            "C_GetObjectSize {size} < certificate {}",
            der.len()
        );

        // Destroyed: gone.
        s.destroy_object(data).expect("C_DestroyObject(data)");
        assert!(find(&s, &[label("data-1")]).is_empty());
        s.destroy_object(cert)
            .expect("C_DestroyObject(certificate)");
        assert!(find(&s, &[label("cert-1")]).is_empty());
    });
}

fn token_util_login(s: &cryptoki::session::Session, pin: &str) {
    s.login(UserType::User, Some(&AuthPin::from(pin.to_owned())))
        .expect("C_Login(CKU_USER)");
}

#[test]
fn copy_object_rules() {
    isolated("copy_object_rules", |_cluster, token| {
        let s = token.user_session();
        let value = h("000102030405060708090a0b0c0d0e0f");
        let original = import_aes(
            &s,
            &value,
            &[
                Attribute::Token(true),
                label("copy-src"),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ],
        );
        // Token object -> session object with another label; the copy is a new object.
        let copy = s
            .copy_object(
                original,
                &[
                    Attribute::Token(false),
                    label("copy-dst"),
                    Attribute::Sensitive(true),
                ],
            )
            .expect("C_CopyObject");
        assert_ne!(copy, original);
        assert!(!flag(&s, copy, AttributeType::Token));
        assert!(flag(&s, copy, AttributeType::Sensitive));
        assert!(flag(&s, original, AttributeType::Token));
        assert!(!flag(&s, original, AttributeType::Sensitive));
        assert_eq!(bytes(&s, copy, AttributeType::Label), b"copy-dst");
        assert_eq!(
            bytes(&s, copy, AttributeType::CheckValue),
            aes_kcv(&value),
            "the copy holds the same key"
        );
        assert_ne!(
            bytes(&s, copy, AttributeType::UniqueId),
            bytes(&s, original, AttributeType::UniqueId)
        );
        assert_eq!(find(&s, &[label("copy-dst")]), vec![copy]);
        assert_eq!(find(&s, &[label("copy-src")]), vec![original]);
        // The copy holds the same key: same ciphertext for the same IV.
        let pt = b"copied key encrypts alike";
        let enc = |k: ObjectHandle| {
            let mut iv = [3u8; 12];
            s.encrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap()),
                k,
                pt,
            )
            .expect("AES-GCM with the copied key")
        };
        assert_eq!(enc(copy), enc(original));

        // A copy may not change what footnote 8/9 attributes do not allow.
        assert_ckr(
            s.copy_object(original, &[Attribute::Class(ObjectClass::DATA)]),
            RvError::AttributeReadOnly,
        );
        assert_ckr(
            s.copy_object(original, &[Attribute::KeyType(KeyType::GENERIC_SECRET)]),
            RvError::AttributeReadOnly,
        );
        // CKA_COPYABLE = FALSE: no copy at all.
        let locked = import_aes(&s, &value, &[Attribute::Copyable(false)]);
        assert_ckr(
            s.copy_object(locked, &[label("nope")]),
            RvError::ActionProhibited,
        );
        assert_ckr(s.copy_object(locked, &[]), RvError::ActionProhibited);
        assert!(find(&s, &[label("nope")]).is_empty());
        // Copying a data object.
        let data = s
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                label("data-src"),
                Attribute::Value(b"xyz".to_vec()),
            ])
            .expect("data object");
        let data_copy = s
            .copy_object(data, &[label("data-copy")])
            .expect("C_CopyObject(data)");
        assert_eq!(value_of(&s, data_copy), b"xyz");
    });
}

#[test]
fn set_attribute_value_rules() {
    isolated("set_attribute_value_rules", |_cluster, token| {
        let s = token.user_session();
        let value = h("2b7e151628aed2a6abf7158809cf4f3c");
        let key = import_aes(
            &s,
            &value,
            &[
                label("rules"),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ],
        );
        // Label and usage flags are modifiable.
        s.update_attributes(key, &[label("rules-2"), Attribute::Encrypt(false)])
            .expect("C_SetAttributeValue(label, encrypt)");
        assert_eq!(bytes(&s, key, AttributeType::Label), b"rules-2");
        assert!(!flag(&s, key, AttributeType::Encrypt));

        // CKA_SENSITIVE: FALSE -> TRUE only.
        s.update_attributes(key, &[Attribute::Sensitive(true)])
            .expect("CKA_SENSITIVE FALSE -> TRUE");
        assert!(flag(&s, key, AttributeType::Sensitive));
        assert_ckr(
            s.update_attributes(key, &[Attribute::Sensitive(false)]),
            RvError::AttributeReadOnly,
        );
        assert!(flag(&s, key, AttributeType::Sensitive));
        // Now the value is sensitive.
        assert_eq!(attr_info(&s, key, &[AttributeType::Value]), ["Sensitive"]);

        // CKA_EXTRACTABLE: TRUE -> FALSE only.
        s.update_attributes(key, &[Attribute::Extractable(false)])
            .expect("CKA_EXTRACTABLE TRUE -> FALSE");
        assert!(!flag(&s, key, AttributeType::Extractable));
        assert_ckr(
            s.update_attributes(key, &[Attribute::Extractable(true)]),
            RvError::AttributeReadOnly,
        );
        assert!(!flag(&s, key, AttributeType::Extractable));

        // Set by the token, or fixed at creation.
        for (what, a) in [
            ("CKA_LOCAL", Attribute::Local(true)),
            ("CKA_ALWAYS_SENSITIVE", Attribute::AlwaysSensitive(true)),
            ("CKA_NEVER_EXTRACTABLE", Attribute::NeverExtractable(true)),
            ("CKA_CLASS", Attribute::Class(ObjectClass::PRIVATE_KEY)),
            ("CKA_KEY_TYPE", Attribute::KeyType(KeyType::GENERIC_SECRET)),
            ("CKA_VALUE_LEN", Attribute::ValueLen(32.into())),
            ("CKA_UNIQUE_ID", Attribute::UniqueId(b"mine".to_vec())),
            ("CKA_CHECK_VALUE", Attribute::CheckValue(vec![1, 2, 3])),
            ("CKA_VALUE", Attribute::Value(vec![0; 16])),
        ] {
            let got = token_util::rv_of(s.update_attributes(key, &[a]));
            assert_eq!(
                got,
                Some(RvError::AttributeReadOnly),
                "C_SetAttributeValue({what})"
            );
        }
        assert_eq!(bytes(&s, key, AttributeType::CheckValue), aes_kcv(&value));

        // CKA_TRUSTED may be set only by the SO.
        assert_ckr(
            s.update_attributes(key, &[Attribute::Trusted(true)]),
            RvError::AttributeReadOnly,
        );
        assert!(!flag(&s, key, AttributeType::Trusted));
        // CKA_WRAP_WITH_TRUSTED: FALSE -> TRUE only.
        s.update_attributes(key, &[Attribute::WrapWithTrusted(true)])
            .expect("CKA_WRAP_WITH_TRUSTED FALSE -> TRUE");
        assert_ckr(
            s.update_attributes(key, &[Attribute::WrapWithTrusted(false)]),
            RvError::AttributeReadOnly,
        );

        // An attribute the object cannot have.
        assert_ckr(
            s.update_attributes(key, &[Attribute::Modulus(vec![1, 2, 3])]),
            RvError::AttributeTypeInvalid,
        );

        // CKA_MODIFIABLE = FALSE: nothing changes, not even the label.
        let frozen = import_aes(&s, &value, &[label("frozen"), Attribute::Modifiable(false)]);
        assert_ckr(
            s.update_attributes(frozen, &[label("thawed")]),
            RvError::ActionProhibited,
        );
        assert_eq!(bytes(&s, frozen, AttributeType::Label), b"frozen");
        // A copy may be made unmodifiable; then it is frozen too.
        let other = import_aes(&s, &value, &[label("other")]);
        let frozen_copy = s
            .copy_object(other, &[Attribute::Modifiable(false)])
            .expect("C_CopyObject with CKA_MODIFIABLE = FALSE");
        assert!(!flag(&s, frozen_copy, AttributeType::Modifiable));
        assert_ckr(
            s.update_attributes(frozen_copy, &[label("thawed")]),
            RvError::ActionProhibited,
        );
        s.update_attributes(other, &[label("still-modifiable")])
            .expect("the original stays modifiable");
    });
}

#[test]
fn private_objects_invisible_before_login_and_destroyable() {
    isolated(
        "private_objects_invisible_before_login_and_destroyable",
        |_cluster, token| {
            let s = token.user_session();
            let data = |l: &str, private: bool| {
                s.create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Private(private),
                    label(l),
                    Attribute::Value(l.as_bytes().to_vec()),
                ])
                .expect("C_CreateObject(CKO_DATA)")
            };
            let private = data("vis-private", true);
            let public = data("vis-public", false);
            let key = aes_key(
                &s,
                32,
                "vis-key",
                &[Attribute::Token(true), Attribute::Private(true)],
            );
            assert!(flag(&s, private, AttributeType::Private));
            assert!(!flag(&s, public, AttributeType::Private));

            s.logout().expect("C_Logout");
            let public_session = token.session();
            for sess in [&s, &public_session] {
                assert!(find(sess, &[label("vis-private")]).is_empty());
                assert!(find(sess, &[label("vis-key")]).is_empty());
                assert_eq!(find(sess, &[label("vis-public")]), vec![public]);
                assert!(
                    !find(sess, &[Attribute::Class(ObjectClass::DATA)]).contains(&private),
                    "a private object is listed before login"
                );
                assert_ckr(
                    sess.get_attributes(private, &[AttributeType::Value]),
                    RvError::ObjectHandleInvalid,
                );
            }
            assert_eq!(value_of(&public_session, public), b"vis-public");
            token_util_login(&s, &token.user_pin);
            assert_eq!(find(&s, &[label("vis-private")]), vec![private]);
            assert_eq!(find(&s, &[label("vis-key")]), vec![key]);

            // CKA_DESTROYABLE = FALSE.
            let keep = s
                .create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Destroyable(false),
                    label("keep"),
                ])
                .expect("C_CreateObject(destroyable=false)");
            assert!(!flag(&s, keep, AttributeType::Destroyable));
            assert_ckr(s.destroy_object(keep), RvError::ActionProhibited);
            assert_eq!(find(&s, &[label("keep")]), vec![keep]);
            s.destroy_object(private).expect("destroy");
            assert!(find(&s, &[label("vis-private")]).is_empty());
        },
    );
}

#[test]
fn token_set_attributes_after_generate_and_import() {
    isolated(
        "token_set_attributes_after_generate_and_import",
        |cluster, token| {
            let s = token.user_session();
            let check = |o: ObjectHandle, local: bool, always_sens: bool, never_ext: bool| {
                assert_eq!(flag(&s, o, AttributeType::Local), local, "CKA_LOCAL");
                assert_eq!(
                    flag(&s, o, AttributeType::AlwaysSensitive),
                    always_sens,
                    "CKA_ALWAYS_SENSITIVE"
                );
                assert_eq!(
                    flag(&s, o, AttributeType::NeverExtractable),
                    never_ext,
                    "CKA_NEVER_EXTRACTABLE"
                );
            };
            let kgm = |o: ObjectHandle| attr(&s, o, AttributeType::KeyGenMechanism);

            // Generated, sensitive, not extractable.
            let gen_locked = aes_key(
                &s,
                32,
                "gen-locked",
                &[Attribute::Sensitive(true), Attribute::Extractable(false)],
            );
            check(gen_locked, true, true, true);
            assert_eq!(
                kgm(gen_locked),
                Attribute::KeyGenMechanism(MechanismType::AES_KEY_GEN)
            );
            // Generated, neither: later changes do not make it "always" anything.
            let gen_open = aes_key(
                &s,
                16,
                "gen-open",
                &[Attribute::Sensitive(false), Attribute::Extractable(true)],
            );
            check(gen_open, true, false, false);
            s.update_attributes(
                gen_open,
                &[Attribute::Sensitive(true), Attribute::Extractable(false)],
            )
            .expect("tighten");
            check(gen_open, true, false, false);

            // Key pair: both halves are local, with the generation mechanism.
            let pair = ec_pair(&s, false, "gen-pair", b"gp");
            for o in [pair.public, pair.private] {
                assert!(flag(&s, o, AttributeType::Local));
                assert_eq!(
                    kgm(o),
                    Attribute::KeyGenMechanism(MechanismType::ECC_KEY_PAIR_GEN)
                );
            }
            assert!(flag(&s, pair.private, AttributeType::AlwaysSensitive));
            assert!(flag(&s, pair.private, AttributeType::NeverExtractable));

            // Imported: not local, never "always sensitive" / "never extractable", and no
            // generation mechanism (CK_UNAVAILABLE_INFORMATION, which cryptoki cannot show).
            let imported = import_aes(
                &s,
                &h("000102030405060708090a0b0c0d0e0f"),
                &[
                    Attribute::Token(true),
                    label("imported-kgm"),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                ],
            );
            check(imported, false, false, false);
            let p = run_token_probe(
                cluster,
                &token.user_pin,
                &[
                    "ulong-attr",
                    "imported-kgm",
                    &format!("{:x}", cryptoki_sys::CKA_KEY_GEN_MECHANISM),
                ],
            );
            p.assert_rv("rv", cryptoki_sys::CKR_OK);
            p.assert_value("value", "unavailable");

            // None of them may be given in a template.
            for (what, a) in [
                ("CKA_LOCAL", Attribute::Local(true)),
                ("CKA_ALWAYS_SENSITIVE", Attribute::AlwaysSensitive(true)),
                ("CKA_NEVER_EXTRACTABLE", Attribute::NeverExtractable(true)),
                (
                    "CKA_KEY_GEN_MECHANISM",
                    Attribute::KeyGenMechanism(MechanismType::AES_KEY_GEN),
                ),
            ] {
                let got = token_util::rv_of(s.create_object(&token_util::secret_template(
                    KeyType::AES,
                    &[7; 16],
                    std::slice::from_ref(&a),
                )));
                assert_eq!(
                    got,
                    Some(RvError::AttributeReadOnly),
                    "C_CreateObject with {what}"
                );
                let got = token_util::rv_of(
                    s.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(16.into()), a]),
                );
                assert_eq!(
                    got,
                    Some(RvError::AttributeReadOnly),
                    "C_GenerateKey with {what}"
                );
            }
        },
    );
}

#[test]
fn unique_ids_are_present_distinct_and_read_only() {
    isolated(
        "unique_ids_are_present_distinct_and_read_only",
        |_cluster, token| {
            let s = token.user_session();
            let pair = ec_pair(&s, true, "uid", b"uid");
            let objects = [
                pair.public,
                pair.private,
                aes_key(&s, 16, "uid-aes", &[]),
                import_aes(&s, &[1; 32], &[]),
                s.create_object(&[Attribute::Class(ObjectClass::DATA), label("uid-data")])
                    .expect("data"),
            ];
            let mut ids: Vec<Vec<u8>> = objects
                .iter()
                .map(|o| bytes(&s, *o, AttributeType::UniqueId))
                .collect();
            assert!(ids.iter().all(|id| !id.is_empty()), "{ids:?}");
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), objects.len(), "CKA_UNIQUE_ID values repeat");
            // Stable: read twice, same value; searchable.
            let uid = bytes(&s, pair.private, AttributeType::UniqueId);
            assert_eq!(bytes(&s, pair.private, AttributeType::UniqueId), uid);
            assert_eq!(
                find(&s, &[Attribute::UniqueId(uid.clone())]),
                vec![pair.private]
            );
            assert_ckr(
                s.update_attributes(pair.private, &[Attribute::UniqueId(b"x".to_vec())]),
                RvError::AttributeReadOnly,
            );
            assert_ckr(
                s.create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::UniqueId(b"chosen".to_vec()),
                ]),
                RvError::AttributeReadOnly,
            );
        },
    );
}

#[test]
fn aes_check_values_match_an_independent_computation() {
    isolated(
        "aes_check_values_match_an_independent_computation",
        |_cluster, token| {
            let s = token.user_session();
            for value in [
                h("2b7e151628aed2a6abf7158809cf4f3c"),
                h("8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b"),
                h("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"),
            ] {
                let key = import_aes(&s, &value, &[Attribute::Sensitive(true)]);
                assert_eq!(
                    bytes(&s, key, AttributeType::CheckValue),
                    aes_kcv(&value),
                    "KCV of an imported AES-{} key",
                    value.len() * 8
                );
            }
            // Generated keys carry a KCV of their (here readable) value.
            for len in [16u64, 24, 32] {
                let key = aes_key(
                    &s,
                    len,
                    "kcv-gen",
                    &[Attribute::Sensitive(false), Attribute::Extractable(true)],
                );
                let value = value_of(&s, key);
                assert_eq!(value.len() as u64, len);
                assert_eq!(
                    bytes(&s, key, AttributeType::CheckValue),
                    aes_kcv(&value),
                    "KCV of a generated AES-{} key",
                    len * 8
                );
                // A sensitive key still shows its KCV (it reveals nothing usable).
                let sensitive = aes_key(&s, len, "kcv-sensitive", &[Attribute::Sensitive(true)]);
                assert_eq!(bytes(&s, sensitive, AttributeType::CheckValue).len(), 3);
            }
        },
    );
}

#[test]
fn public_key_info_is_the_spki_of_the_key() {
    isolated(
        "public_key_info_is_the_spki_of_the_key",
        |_cluster, token| {
            use p256::pkcs8::DecodePublicKey;
            let s = token.user_session();
            let pair = ec_pair(&s, false, "spki", b"spki");
            let point = parse_octet_string(&bytes(&s, pair.public, AttributeType::EcPoint));
            for o in [pair.public, pair.private] {
                let spki = bytes(&s, o, AttributeType::PublicKeyInfo);
                let key = p256::PublicKey::from_public_key_der(&spki)
                    .unwrap_or_else(|e| panic!("CKA_PUBLIC_KEY_INFO is not a P-256 SPKI: {e}"));
                assert_eq!(
                    key.to_sec1_bytes().to_vec(),
                    point,
                    "CKA_PUBLIC_KEY_INFO holds the key's point"
                );
            }
            // An imported RSA public key.
            use rsa::traits::PublicKeyParts;
            let private = token_util::rsa_test_key();
            let public = private.to_public_key();
            let imported = s
                .create_object(&hsm_tests::keys::rsa_public_import(
                    &public.n().to_bytes_be(),
                    &public.e().to_bytes_be(),
                    "spki-rsa",
                ))
                .expect("import RSA public key");
            let spki = bytes(&s, imported, AttributeType::PublicKeyInfo);
            let parsed = rsa::RsaPublicKey::from_public_key_der(&spki)
                .unwrap_or_else(|e| panic!("CKA_PUBLIC_KEY_INFO is not an RSA SPKI: {e}"));
            assert_eq!(parsed, public);
            // An Ed25519 pair.
            let (public, private) = s
                .generate_key_pair(
                    &Mechanism::EccEdwardsKeyPairGen,
                    &[
                        Attribute::EcParams(token_util::ED25519_OID.to_vec()),
                        Attribute::Verify(true),
                    ],
                    &[Attribute::Sign(true)],
                )
                .expect("C_GenerateKeyPair(Ed25519)");
            let point = parse_octet_string(&bytes(&s, public, AttributeType::EcPoint));
            for o in [public, private] {
                let spki = bytes(&s, o, AttributeType::PublicKeyInfo);
                let key = ed25519_dalek::VerifyingKey::from_public_key_der(&spki)
                    .unwrap_or_else(|e| panic!("CKA_PUBLIC_KEY_INFO is not an Ed25519 SPKI: {e}"));
                assert_eq!(key.as_bytes().to_vec(), point);
            }
        },
    );
}

#[test]
fn allowed_mechanisms_and_usage_flags_are_enforced() {
    isolated(
        "allowed_mechanisms_and_usage_flags_are_enforced",
        |_cluster, token| {
            let s = token.user_session();
            let value = [9u8; 32];
            let gcm_only = import_aes(
                &s,
                &value,
                &[Attribute::AllowedMechanisms(vec![MechanismType::AES_GCM])],
            );
            assert_eq!(
                attr(&s, gcm_only, AttributeType::AllowedMechanisms),
                Attribute::AllowedMechanisms(vec![MechanismType::AES_GCM])
            );
            let mut iv = [1u8; 12];
            s.encrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, &[], 128.into()).unwrap()),
                gcm_only,
                b"allowed",
            )
            .expect("the allowed mechanism works");
            assert_ckr(
                s.encrypt(&Mechanism::AesCbcPad([0; 16]), gcm_only, b"not allowed"),
                RvError::MechanismInvalid,
            );
            assert_ckr(
                s.encrypt(&Mechanism::AesEcb, gcm_only, &[0; 16]),
                RvError::MechanismInvalid,
            );
            // CKA_ALLOWED_MECHANISMS cannot be widened afterwards.
            assert!(
                s.update_attributes(
                    gcm_only,
                    &[Attribute::AllowedMechanisms(vec![
                        MechanismType::AES_GCM,
                        MechanismType::AES_ECB
                    ])]
                )
                .is_err(),
                "CKA_ALLOWED_MECHANISMS changed after creation"
            );
            // Also on an EC key: CKM_ECDSA only, not CKM_ECDSA_SHA256.
            let (_, ecdsa_only) = s
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[Attribute::EcParams(P256_PARAMS.to_vec())],
                    &[
                        Attribute::Sign(true),
                        Attribute::AllowedMechanisms(vec![MechanismType::ECDSA]),
                    ],
                )
                .expect("EC pair with CKA_ALLOWED_MECHANISMS");
            s.sign(&Mechanism::Ecdsa, ecdsa_only, &sha256(b"m"))
                .expect("CKM_ECDSA is allowed");
            assert_ckr(
                s.sign(&Mechanism::EcdsaSha256, ecdsa_only, b"m"),
                RvError::MechanismInvalid,
            );

            // Usage flags.
            let no_encrypt = import_secret(
                &s,
                KeyType::AES,
                &value,
                &[Attribute::Encrypt(false), Attribute::Decrypt(true)],
            );
            assert_ckr(
                s.encrypt(&Mechanism::AesEcb, no_encrypt, &[0; 16]),
                RvError::KeyFunctionNotPermitted,
            );
            s.decrypt(&Mechanism::AesEcb, no_encrypt, &[0; 16])
                .expect("decrypt is permitted");
            let no_decrypt = import_secret(
                &s,
                KeyType::AES,
                &value,
                &[Attribute::Encrypt(true), Attribute::Decrypt(false)],
            );
            assert_ckr(
                s.decrypt(&Mechanism::AesEcb, no_decrypt, &[0; 16]),
                RvError::KeyFunctionNotPermitted,
            );
            // A key whose CKA_ENCRYPT was switched off afterwards.
            let switched = import_aes(&s, &value, &[]);
            s.encrypt(&Mechanism::AesEcb, switched, &[0; 16])
                .expect("encrypt before");
            s.update_attributes(switched, &[Attribute::Encrypt(false)])
                .expect("switch off CKA_ENCRYPT");
            assert_ckr(
                s.encrypt(&Mechanism::AesEcb, switched, &[0; 16]),
                RvError::KeyFunctionNotPermitted,
            );
            // Sign/verify flags of an EC pair.
            let (public, private) = s
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &[
                        Attribute::EcParams(P256_PARAMS.to_vec()),
                        Attribute::Verify(false),
                    ],
                    &[Attribute::Sign(false)],
                )
                .expect("EC pair without usages");
            let digest = sha256(b"usage");
            assert_ckr(
                s.sign(&Mechanism::Ecdsa, private, &digest),
                RvError::KeyFunctionNotPermitted,
            );
            assert_ckr(
                s.verify(&Mechanism::Ecdsa, public, &digest, &[0; 64]),
                RvError::KeyFunctionNotPermitted,
            );
            // HMAC key without CKA_SIGN.
            let mac = import_secret(
                &s,
                KeyType::GENERIC_SECRET,
                &[5; 32],
                &[Attribute::Sign(false), Attribute::Verify(true)],
            );
            assert_ckr(
                s.sign(&Mechanism::Sha256Hmac, mac, b"data"),
                RvError::KeyFunctionNotPermitted,
            );
        },
    );
}

#[test]
fn template_errors_get_the_spec_codes() {
    isolated("template_errors_get_the_spec_codes", |_cluster, token| {
        let s = token.user_session();
        // Incomplete.
        assert_ckr(
            s.generate_key(&Mechanism::AesKeyGen, &[label("no-len")]),
            RvError::TemplateIncomplete,
        );
        assert_ckr(
            s.create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
            ]),
            RvError::TemplateIncomplete,
        );
        assert_ckr(
            s.create_object(&[
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(vec![0; 16]),
            ]),
            RvError::TemplateIncomplete,
        );
        assert_ckr(
            s.create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                label("cert without value"),
            ]),
            RvError::TemplateIncomplete,
        );
        assert_ckr(
            s.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[Attribute::Verify(true)],
                &[Attribute::Sign(true)],
            ),
            RvError::TemplateIncomplete,
        );
        // Inconsistent: the template contradicts the mechanism or itself.
        assert_ckr(
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::ValueLen(16.into()),
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                ],
            ),
            RvError::TemplateInconsistent,
        );
        assert_ckr(
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::ValueLen(16.into()),
                    Attribute::KeyType(KeyType::RSA),
                ],
            ),
            RvError::TemplateInconsistent,
        );
        assert_ckr(
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::ValueLen(16.into()),
                    Attribute::Value(vec![0; 16]),
                ],
            ),
            RvError::TemplateInconsistent,
        );
        assert_ckr(
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::ValueLen(16.into()),
                    Attribute::Sign(true),
                    Attribute::Sign(false),
                ],
            ),
            RvError::TemplateInconsistent,
        );
        // Invalid values.
        token_util::assert_one_of(
            s.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(17.into())]),
            &[RvError::AttributeValueInvalid, RvError::KeySizeRange],
        );
        assert_ckr(
            s.create_object(&token_util::secret_template(KeyType::AES, &[0; 17], &[])),
            RvError::AttributeValueInvalid,
        );
        assert_ckr(
            s.create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(P256_PARAMS.to_vec()),
                // Not a point on P-256.
                Attribute::EcPoint(token_util::octet_string(&[4; 65])),
            ]),
            RvError::AttributeValueInvalid,
        );
        // Nothing half-made was left behind.
        assert!(find(&s, &[label("no-len")]).is_empty());
        assert!(find(&s, &[label("cert without value")]).is_empty());
    });
}
