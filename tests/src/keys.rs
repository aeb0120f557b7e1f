//! Key generation and attribute helpers shared by the tests.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::{Digest, Sha256};

/// `CKA_EC_PARAMS` of P-256: the DER of OID 1.2.840.10045.3.1.7.
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The DER prefix of a SHA-256 `DigestInfo` (RFC 8017, section 9.2, note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// A key pair's handles.
#[derive(Clone, Copy, Debug)]
pub struct KeyPair {
    /// The public key.
    pub public: ObjectHandle,
    /// The private key.
    pub private: ObjectHandle,
}

/// Common key attributes: token or session object, label and id.
fn naming(token: bool, label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(token),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// Generates an EC P-256 key pair (sign/verify).
///
/// # Panics
/// If generation fails.
#[track_caller]
pub fn ec_pair(session: &Session, token: bool, label: &str, id: &[u8]) -> KeyPair {
    let mut public = naming(token, label, id);
    public.extend([
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Verify(true),
    ]);
    let mut private = naming(token, label, id);
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
    ]);
    let (public, private) = session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .expect("C_GenerateKeyPair(CKM_EC_KEY_PAIR_GEN)");
    KeyPair { public, private }
}

/// Generates an RSA key pair (e = 65537, sign/verify).
///
/// # Panics
/// If generation fails.
#[track_caller]
pub fn rsa_pair(session: &Session, bits: u64, token: bool, label: &str) -> KeyPair {
    let mut public = naming(token, label, label.as_bytes());
    public.extend([
        Attribute::ModulusBits(bits.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
        Attribute::Verify(true),
    ]);
    let mut private = naming(token, label, label.as_bytes());
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
    ]);
    let (public, private) = session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .expect("C_GenerateKeyPair(CKM_RSA_PKCS_KEY_PAIR_GEN)");
    KeyPair { public, private }
}

/// Generates an AES key of `len` bytes (encrypt/decrypt) with extra attributes.
///
/// # Panics
/// If generation fails.
#[track_caller]
pub fn aes_key(session: &Session, len: u64, label: &str, extra: &[Attribute]) -> ObjectHandle {
    let mut template = vec![
        Attribute::ValueLen(len.into()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    template.extend_from_slice(extra);
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .expect("C_GenerateKey(CKM_AES_KEY_GEN)")
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// The PKCS#1 v1.5 `DigestInfo` of SHA-256(`data`), the input of `CKM_RSA_PKCS` signing.
pub fn sha256_digest_info(data: &[u8]) -> Vec<u8> {
    let mut out = SHA256_DIGEST_INFO_PREFIX.to_vec();
    out.extend_from_slice(&sha256(data));
    out
}

/// The uncompressed point inside a `CKA_EC_POINT` value (a DER OCTET STRING).
///
/// # Panics
/// If the value is not a 65-byte uncompressed point wrapped in an OCTET STRING.
#[track_caller]
pub fn unwrap_ec_point(der: &[u8]) -> Vec<u8> {
    assert_eq!(
        der.len(),
        67,
        "CKA_EC_POINT of P-256 is 67 bytes: {der:02x?}"
    );
    assert_eq!(
        &der[..3],
        &[0x04, 0x41, 0x04],
        "DER OCTET STRING of an uncompressed point"
    );
    der[2..].to_vec()
}

/// Wraps an uncompressed point as `CKA_EC_POINT` (DER OCTET STRING).
pub fn wrap_ec_point(point: &[u8]) -> Vec<u8> {
    let len = u8::try_from(point.len()).expect("short point");
    let mut out = vec![0x04, len];
    out.extend_from_slice(point);
    out
}

/// One attribute's bytes, read through `C_GetAttributeValue`.
///
/// # Panics
/// If the attribute cannot be read.
#[track_caller]
pub fn attr_bytes(session: &Session, object: ObjectHandle, ty: AttributeType) -> Vec<u8> {
    let attrs = session
        .get_attributes(object, &[ty])
        .unwrap_or_else(|e| panic!("C_GetAttributeValue({ty}): {e}"));
    match attrs.as_slice() {
        [
            Attribute::EcPoint(v)
            | Attribute::EcParams(v)
            | Attribute::Modulus(v)
            | Attribute::PublicExponent(v)
            | Attribute::Value(v)
            | Attribute::Label(v)
            | Attribute::Id(v),
        ] => v.clone(),
        other => panic!("unexpected attributes for {ty}: {other:?}"),
    }
}

/// The objects matching a template.
///
/// # Panics
/// If the search fails.
#[track_caller]
pub fn find(session: &Session, template: &[Attribute]) -> Vec<ObjectHandle> {
    session.find_objects(template).expect("C_FindObjects")
}

/// A template matching a label (and optionally a class).
pub fn by_label(label: &str, class: Option<ObjectClass>) -> Vec<Attribute> {
    let mut t = vec![Attribute::Label(label.as_bytes().to_vec())];
    if let Some(class) = class {
        t.push(Attribute::Class(class));
    }
    t
}

/// The template importing a P-256 public key for verification.
pub fn ec_public_import(point: &[u8], label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(false),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::EcPoint(wrap_ec_point(point)),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// The template importing an RSA public key for verification.
pub fn rsa_public_import(modulus: &[u8], exponent: &[u8], label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Modulus(modulus.to_vec()),
        Attribute::PublicExponent(exponent.to_vec()),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// `C_GetAttributeValue` size queries (NULL buffers), as `Debug` strings of
/// `AttributeInfo` (`"Available(67)"`, `"Sensitive"`, `"TypeInvalid"`) so they compare.
///
/// # Panics
/// If the call fails outright.
#[track_caller]
pub fn attr_info(session: &Session, object: ObjectHandle, types: &[AttributeType]) -> Vec<String> {
    session
        .get_attribute_info(object, types)
        .expect("C_GetAttributeValue size query")
        .iter()
        .map(|i| format!("{i:?}"))
        .collect()
}
