//! Helpers shared by the `token_*` end-to-end tests: importing keys with `C_CreateObject`,
//! reading attributes, the curves, mechanism lookups and independent AES/ECDH computations
//! to check the token against. Each test file uses a different subset.
#![allow(dead_code)]

use aes::cipher::{BlockEncrypt, KeyInit};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismInfo, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_tests::Token;

/// Bytes of a hex string (whitespace ignored).
///
/// # Panics
/// If it is not hex.
#[track_caller]
pub fn h(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).expect("hex test vector")
}

/// A DER length.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

/// A DER TLV.
pub fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(value.len(), &mut out);
    out.extend_from_slice(value);
    out
}

/// `value` as a DER OCTET STRING (the encoding of `CKA_EC_POINT`).
pub fn octet_string(value: &[u8]) -> Vec<u8> {
    der_tlv(0x04, value)
}

/// The content of a DER OCTET STRING.
///
/// # Panics
/// If `der` is not exactly one OCTET STRING.
#[track_caller]
pub fn parse_octet_string(der: &[u8]) -> Vec<u8> {
    assert!(
        der.len() >= 2 && der[0] == 0x04,
        "not an OCTET STRING: {der:02x?}"
    );
    let (len, start) = match der[1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(der[2]), 3),
        0x82 => (usize::from(der[2]) << 8 | usize::from(der[3]), 4),
        _ => panic!("unexpected DER length in {der:02x?}"),
    };
    assert_eq!(der.len(), start + len, "OCTET STRING length: {der:02x?}");
    der[start..].to_vec()
}

/// A curve the token serves for ECDSA/ECDH.
#[derive(Clone, Copy, Debug)]
pub struct Curve {
    /// Its name, for messages.
    pub name: &'static str,
    /// `CKA_EC_PARAMS`: the named-curve OID.
    pub params: &'static [u8],
    /// Bytes of a field element (and of a private scalar).
    pub field_len: usize,
}

/// P-256, P-384, P-521 and secp256k1.
pub const CURVES: [Curve; 4] = [
    Curve {
        name: "P-256",
        params: &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        field_len: 32,
    },
    Curve {
        name: "P-384",
        params: &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        field_len: 48,
    },
    Curve {
        name: "P-521",
        params: &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        field_len: 66,
    },
    Curve {
        name: "secp256k1",
        params: &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a],
        field_len: 32,
    },
];

/// `CKA_EC_PARAMS` of Ed25519: the OID 1.3.101.112 (RFC 8410).
pub const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// `CKA_EC_PARAMS` of Ed25519 as PKCS#11 3.0 also allows: the curve name as a PrintableString.
pub const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";

/// A template importing a secret key of `key_type` with `value` (a session object unless
/// `extra` says `CKA_TOKEN`; the token's defaults for everything `extra` does not give).
pub fn secret_template(key_type: KeyType, value: &[u8], extra: &[Attribute]) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Value(value.to_vec()),
    ];
    t.extend_from_slice(extra);
    t
}

/// Imports a secret key with `C_CreateObject`.
///
/// # Panics
/// If the import fails.
#[track_caller]
pub fn import_secret(
    s: &Session,
    key_type: KeyType,
    value: &[u8],
    extra: &[Attribute],
) -> ObjectHandle {
    s.create_object(&secret_template(key_type, value, extra))
        .unwrap_or_else(|e| panic!("C_CreateObject({key_type} secret key): {e}"))
}

/// Imports an AES key usable for encryption and decryption.
#[track_caller]
pub fn import_aes(s: &Session, value: &[u8], extra: &[Attribute]) -> ObjectHandle {
    let mut t = vec![Attribute::Encrypt(true), Attribute::Decrypt(true)];
    t.extend_from_slice(extra);
    import_secret(s, KeyType::AES, value, &t)
}

/// `CKA_VALUE` of an object.
///
/// # Panics
/// If it cannot be read.
#[track_caller]
pub fn value_of(s: &Session, object: ObjectHandle) -> Vec<u8> {
    match s.get_attributes(object, &[AttributeType::Value]) {
        Ok(a) => match a.as_slice() {
            [Attribute::Value(v)] => v.clone(),
            other => panic!("CKA_VALUE: unexpected {other:?}"),
        },
        Err(e) => panic!("C_GetAttributeValue(CKA_VALUE): {e}"),
    }
}

/// One attribute of an object.
///
/// # Panics
/// If it cannot be read.
#[track_caller]
pub fn attr(s: &Session, object: ObjectHandle, ty: AttributeType) -> Attribute {
    match s.get_attributes(object, &[ty]) {
        Ok(mut a) if a.len() == 1 => a.remove(0),
        Ok(a) => panic!("{ty}: unexpected {a:?}"),
        Err(e) => panic!("C_GetAttributeValue({ty}): {e}"),
    }
}

/// A boolean attribute of an object.
///
/// # Panics
/// If it cannot be read or is not boolean.
#[track_caller]
pub fn flag(s: &Session, object: ObjectHandle, ty: AttributeType) -> bool {
    match attr(s, object, ty) {
        Attribute::Sensitive(b)
        | Attribute::Extractable(b)
        | Attribute::Local(b)
        | Attribute::AlwaysSensitive(b)
        | Attribute::NeverExtractable(b)
        | Attribute::Modifiable(b)
        | Attribute::Copyable(b)
        | Attribute::Destroyable(b)
        | Attribute::Private(b)
        | Attribute::Token(b)
        | Attribute::Trusted(b)
        | Attribute::WrapWithTrusted(b)
        | Attribute::Encrypt(b)
        | Attribute::Decrypt(b)
        | Attribute::Sign(b)
        | Attribute::Verify(b)
        | Attribute::Wrap(b)
        | Attribute::Unwrap(b)
        | Attribute::Derive(b) => b,
        other => panic!("{ty} is not boolean: {other:?}"),
    }
}

/// A byte-string attribute of an object.
///
/// # Panics
/// If it cannot be read or is not a byte string.
#[track_caller]
pub fn bytes(s: &Session, object: ObjectHandle, ty: AttributeType) -> Vec<u8> {
    match attr(s, object, ty) {
        Attribute::Value(v)
        | Attribute::Label(v)
        | Attribute::Id(v)
        | Attribute::CheckValue(v)
        | Attribute::UniqueId(v)
        | Attribute::PublicKeyInfo(v)
        | Attribute::EcPoint(v)
        | Attribute::EcParams(v)
        | Attribute::Modulus(v)
        | Attribute::PublicExponent(v)
        | Attribute::Subject(v)
        | Attribute::Issuer(v)
        | Attribute::SerialNumber(v)
        | Attribute::Application(v)
        | Attribute::ObjectId(v) => v,
        other => panic!("{ty} is not a byte string: {other:?}"),
    }
}

/// The return code of a call that must fail, or `None` if it succeeded.
pub fn rv_of<T>(r: cryptoki::error::Result<T>) -> Option<RvError> {
    match r {
        Err(Error::Pkcs11(rv, _)) => Some(rv),
        Err(other) => panic!("expected a CKR_* result, got a wrapper error: {other}"),
        Ok(_) => None,
    }
}

/// Asserts that a call fails with one of `codes` (where the spec allows more than one).
///
/// # Panics
/// If it succeeds or fails otherwise.
#[track_caller]
pub fn assert_one_of<T: std::fmt::Debug>(r: cryptoki::error::Result<T>, codes: &[RvError]) {
    let got = hsm_tests::ckr(r);
    assert!(
        codes.contains(&got),
        "expected one of {codes:?}, got {got:?}"
    );
}

/// `C_GetMechanismInfo`, or `None` for `CKR_MECHANISM_INVALID` (not offered).
///
/// # Panics
/// On any other error.
#[track_caller]
pub fn mech_info(token: &Token, mech: MechanismType) -> Option<MechanismInfo> {
    match token.ctx.get_mechanism_info(token.slot, mech) {
        Ok(i) => Some(i),
        Err(Error::Pkcs11(RvError::MechanismInvalid, _)) => None,
        Err(e) => panic!("C_GetMechanismInfo({mech}): {e}"),
    }
}

/// `CK_AES_CTR_PARAMS` (cryptoki has no `CKM_AES_CTR` variant).
pub fn ctr_params(counter_bits: u64, block: [u8; 16]) -> cryptoki_sys::CK_AES_CTR_PARAMS {
    cryptoki_sys::CK_AES_CTR_PARAMS {
        ulCounterBits: counter_bits as cryptoki_sys::CK_ULONG,
        cb: block,
    }
}

/// `CKM_AES_CTR` with its parameter.
pub fn aes_ctr(params: &cryptoki_sys::CK_AES_CTR_PARAMS) -> Mechanism<'_> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new(
        MechanismType::AES_CTR,
        Some(params),
    ))
}

/// A mechanism with an arbitrary parameter (for malformed-parameter tests).
pub fn with_param<T>(kind: MechanismType, param: &T) -> Mechanism<'_> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new(kind, Some(param)))
}

/// AES of any key size, from the `aes` crate (the independent implementation).
pub enum Aes {
    /// AES-128.
    A128(aes::Aes128),
    /// AES-192.
    A192(aes::Aes192),
    /// AES-256.
    A256(aes::Aes256),
}

impl Aes {
    /// The cipher for a 16, 24 or 32-byte key.
    ///
    /// # Panics
    /// For any other length.
    pub fn new(key: &[u8]) -> Aes {
        match key.len() {
            16 => Aes::A128(aes::Aes128::new_from_slice(key).expect("AES-128 key")),
            24 => Aes::A192(aes::Aes192::new_from_slice(key).expect("AES-192 key")),
            32 => Aes::A256(aes::Aes256::new_from_slice(key).expect("AES-256 key")),
            n => panic!("no AES key of {n} bytes"),
        }
    }

    /// Encrypts one block in place.
    pub fn block(&self, b: &mut [u8; 16]) {
        let mut block = aes::Block::from(*b);
        match self {
            Aes::A128(c) => c.encrypt_block(&mut block),
            Aes::A192(c) => c.encrypt_block(&mut block),
            Aes::A256(c) => c.encrypt_block(&mut block),
        }
        b.copy_from_slice(&block);
    }

    /// CBC encryption without padding (`data` is whole blocks).
    pub fn cbc(&self, iv: &[u8; 16], data: &[u8]) -> Vec<u8> {
        assert_eq!(data.len() % 16, 0, "CBC needs whole blocks");
        let mut prev = *iv;
        let mut out = Vec::with_capacity(data.len());
        for chunk in data.chunks_exact(16) {
            for (p, c) in prev.iter_mut().zip(chunk) {
                *p ^= c;
            }
            self.block(&mut prev);
            out.extend_from_slice(&prev);
        }
        out
    }

    /// CTR with a 128-bit big-endian counter starting at `block`.
    pub fn ctr(&self, block: &[u8; 16], data: &[u8]) -> Vec<u8> {
        let mut counter = u128::from_be_bytes(*block);
        let mut out = Vec::with_capacity(data.len());
        for chunk in data.chunks(16) {
            let mut ks = counter.to_be_bytes();
            self.block(&mut ks);
            out.extend(chunk.iter().zip(ks).map(|(d, k)| d ^ k));
            counter = counter.wrapping_add(1);
        }
        out
    }
}

/// PKCS#7 padding to whole AES blocks.
pub fn pkcs7(data: &[u8]) -> Vec<u8> {
    let pad = 16 - data.len() % 16;
    let mut out = data.to_vec();
    out.extend(std::iter::repeat_n(pad as u8, pad));
    out
}

/// The key check value of an AES key: the first 3 bytes of AES-ECB(key, 0^16).
pub fn aes_kcv(key: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 16];
    Aes::new(key).block(&mut block);
    block[..3].to_vec()
}

/// The ANSI X9.63 KDF with SHA-256: `SHA-256(Z || counter || shared)` for counter = 1, 2, …
pub fn x963_sha256(z: &[u8], shared: &[u8], len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    let mut counter = 1u32;
    while out.len() < len {
        let mut hasher = Sha256::new();
        hasher.update(z);
        hasher.update(counter.to_be_bytes());
        hasher.update(shared);
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A fixed RSA-2048 key for the tests (made with `openssl genpkey` for this suite; never used
/// for anything else). Importing it is much faster than generating, and its signatures are
/// deterministic for PKCS#1 v1.5.
pub const RSA_2048_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC4gREzSUzw9Ljq\n\
2mDbWAVlkLBS9FjCY9m9B5r6ApNKg3rskAiVS8Lkv02L+SwTGkpBmDL/s4tH4yQ1\n\
K8eH5PS2HVQKTTbpQWtqGgE+Y28gnOEjMIMS231HtJWNPo8EfloKMMywYuo33GMW\n\
pAGCe41WA3gpWYTl5A1TZ8aKHDotMdGkSHIlHibr8wOVATPtN+WNGbw18ptNngBl\n\
d1ylD+aIWA/R3WTBXe3+4MZuNz5tfhBebFcLwHQV/c4xiFn5IGuyabF/sS9ClUe+\n\
tJV2y1ysMafLxby9ojK893Qe+6c+lYV5YZcnNbh7AHEPwrqRpCXIIesd+NWrayQo\n\
Me2NsXdVAgMBAAECggEAD5GEfAlhXqunttl6dse0nN9aoYVQwAZg5xxvLU1uVElH\n\
5BI7Ry2/YkHqLzd1Sp9bSLGpC/6AcC5wbbQmAAeHxp4u6zecvI3ynF9ZX4RQajYS\n\
oT+Er+Cpb5WDUQnIU569xkJb4z5VeSU1j0GDhxkZ0fo093hASI23uiP1ks3S8uEu\n\
lF1DYzEjj0RExgE8Y3+J6+DdM/ivTb6FZuGAzHVDwXdo0AnhA5AP8AqCUzrddRkt\n\
QN9oRiCtpGtqsjPVRN80vTIRFmhgc4UEK+yn0+CnU1I0Zpm5y7cx/RNmP4NTGcVl\n\
XdltpbM1c6LTEN1UY7RDAjwc+H4o1Fsa5OD+YVX7wQKBgQDiRiyQ7c2+nUFgp2pQ\n\
+gRQqxZh4fraGQQ7iHITM4pCdLnkfhHGqeVK1P1185Hn8hrV3i1OFMvseRIG2EWX\n\
GrYnKGT37bo0cfA8ib0Bit6S1L4P5sAsPH4Qox/dfwdT08m4UFXPVFZp1BTxiBSB\n\
7cv2+SJrwHnHB7g3jQcmAhH8bQKBgQDQviC0qUNRa379duTTXJFOLJnY8mMwGn/i\n\
bQrbXFEig97ftc/T6PF8LiBPwB9tQoKxAjTMKEJntmz6GnaKi0BAcl8rDvsDhdwl\n\
jOKqNclFuQM0+cFPcUNZLVBCVFTdUcZg9l1fPfRdDmsMjX7CXCcgKDLrYolF463G\n\
LwgvyChFiQKBgEK0XT78W8LtqPBNalIk4lDFnvuMGt9gsJa8SqTOdNvSfVqWr7bZ\n\
Lvc4gt/axhCSlsalkMWL6/HyXxYVe65n+XrhtaJBOrtrO18dW9KwlZzDiqQ1akGg\n\
M6nD7QjnAcn8jWMAi8trGW5pTyNE8oa7C33rQ/Jv83ZxGCWINatGwPahAoGAI4u8\n\
1gbcx8ieX1sXrEZfGAjQSfk8mrxoeo5HAwO9bTs3gLDdKyDHvnW8WthEgb6JssrF\n\
Yt6YMEEIXa6T8RO1ZUQUoKh0Zi0tR9et4X43QAA5Y5QELxsCdPUabbEeonGCbpCF\n\
ZeqO6inCYOjXZRF8OCWgRiUJazVSKiVoJ3rWIMECgYEAutyTbd2Fc5k9UElO4hdF\n\
wjXEBnP4tSIhEj4iTXYJQlOnMX5RYxWtNt9fUuFUY6I1XEyV1GhBFpLcGVigSOzc\n\
+PteWA9k0sAmrSb3LvBiwanIr5kMHlmTOA2PvR1Y/MaIujpa9VonBvrJd+ngOjDd\n\
1VpHFca02wg1HOHxbwsyoNg=\n\
-----END PRIVATE KEY-----\n";

/// [`RSA_2048_PEM`] parsed by the `rsa` crate, with its CRT values.
///
/// # Panics
/// If the constant does not parse.
pub fn rsa_test_key() -> rsa::RsaPrivateKey {
    use rsa::pkcs8::DecodePrivateKey;
    let mut key = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_2048_PEM).expect("test RSA key");
    key.precompute().expect("CRT values");
    key
}

/// Runs named checks and collects the failures, so one test reports every failing
/// mechanism (by name) instead of stopping at the first.
#[derive(Debug, Default)]
pub struct Checks {
    failures: Vec<String>,
    passed: usize,
}

impl Checks {
    /// No checks yet.
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Runs one check; a panic inside is recorded under `name`.
    pub fn run(&mut self, name: &str, check: impl FnOnce()) {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
            Ok(()) => self.passed += 1,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "(no message)".to_owned());
                self.failures.push(format!("{name}: {msg}"));
            }
        }
    }

    /// Fails with every recorded failure.
    ///
    /// # Panics
    /// If any check failed.
    #[track_caller]
    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} checks failed:\n  {}",
            self.failures.len(),
            self.failures.len() + self.passed,
            self.failures.join("\n  ")
        );
    }
}

/// The mechanisms the token lists, from the raw C ABI (cryptoki drops some), by `CKM_*`.
pub fn offered(
    cluster: &hsm_tests::Cluster,
    pin: &str,
) -> std::collections::BTreeMap<u64, hsm_tests::token_probe::RawMechanism> {
    hsm_tests::token_probe::run_token_probe(cluster, pin, &["mechanisms"])
        .mechanisms()
        .into_iter()
        .map(|m| (m.kind, m))
        .collect()
}

/// Whether `kind` is listed with all of `flags`.
pub fn offers(
    list: &std::collections::BTreeMap<u64, hsm_tests::token_probe::RawMechanism>,
    kind: cryptoki_sys::CK_MECHANISM_TYPE,
    flags: cryptoki_sys::CK_FLAGS,
) -> bool {
    list.get(&(kind as u64))
        .is_some_and(|m| m.flags & flags as u64 == flags as u64)
}

/// Verifies `r || s` over a prehashed digest with an uncompressed point.
pub type VerifyPrehash = fn(&[u8], &[u8], &[u8]) -> Result<(), String>;

/// What the tests need from an independent implementation of a curve (RustCrypto).
#[derive(Clone, Copy)]
pub struct CurveCrate {
    /// A random key: (private scalar, uncompressed public point).
    pub random: fn() -> (Vec<u8>, Vec<u8>),
    /// The uncompressed public point of a private scalar.
    pub public_of: fn(&[u8]) -> Vec<u8>,
    /// ECDSA over a prehashed digest: `r || s`.
    pub sign_prehash: fn(&[u8], &[u8]) -> Vec<u8>,
    /// Verifies `r || s` over a prehashed digest with an uncompressed point.
    pub verify_prehash: VerifyPrehash,
    /// ECDH: the x-coordinate of scalar * point.
    pub ecdh: fn(&[u8], &[u8]) -> Vec<u8>,
}

impl std::fmt::Debug for CurveCrate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurveCrate")
    }
}

macro_rules! curve_crate {
    ($m:ident) => {
        CurveCrate {
            random: || {
                use $m::elliptic_curve::sec1::ToEncodedPoint;
                // Through SecretKey: p521 0.13's SigningKey has no usable verifying_key().
                let sk = $m::SecretKey::random(&mut rsa::rand_core::OsRng);
                let point = sk.public_key().to_encoded_point(false);
                (sk.to_bytes().to_vec(), point.as_bytes().to_vec())
            },
            public_of: |scalar| {
                use $m::elliptic_curve::sec1::ToEncodedPoint;
                let sk = $m::SecretKey::from_slice(scalar).expect("scalar");
                sk.public_key().to_encoded_point(false).as_bytes().to_vec()
            },
            sign_prehash: |scalar, digest| {
                use $m::ecdsa::signature::hazmat::PrehashSigner;
                let sk = $m::ecdsa::SigningKey::from_slice(scalar).expect("scalar");
                let sig: $m::ecdsa::Signature = sk.sign_prehash(digest).expect("sign");
                sig.to_bytes().to_vec()
            },
            verify_prehash: |point, digest, sig| {
                use $m::ecdsa::signature::hazmat::PrehashVerifier;
                let vk = $m::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map_err(|e| format!("point: {e}"))?;
                let sig = $m::ecdsa::Signature::from_slice(sig)
                    .map_err(|e| format!("signature encoding: {e}"))?;
                // k256 accepts only low-S signatures (a Bitcoin rule, not ECDSA's): both are
                // valid, so compare in the normalized form.
                let sig = sig.normalize_s().unwrap_or(sig);
                vk.verify_prehash(digest, &sig)
                    .map_err(|e| format!("signature does not verify: {e}"))
            },
            ecdh: |scalar, point| {
                let sk = $m::SecretKey::from_slice(scalar).expect("scalar");
                let pk = $m::PublicKey::from_sec1_bytes(point).expect("point");
                $m::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine())
                    .raw_secret_bytes()
                    .to_vec()
            },
        }
    };
}

/// The RustCrypto implementation of a curve of [`CURVES`], by name.
///
/// # Panics
/// For a curve not in [`CURVES`].
pub fn curve_crate(curve: &Curve) -> CurveCrate {
    match curve.name {
        "P-256" => curve_crate!(p256),
        "P-384" => curve_crate!(p384),
        "P-521" => curve_crate!(p521),
        "secp256k1" => curve_crate!(k256),
        other => panic!("no crate for {other}"),
    }
}

/// A digest as ECDSA uses it (SEC 1: a digest shorter than the order is taken whole),
/// left-padded so the crates accept it for any curve.
pub fn ecdsa_prehash(digest: &[u8], field_len: usize) -> Vec<u8> {
    if digest.len() >= field_len {
        return digest.to_vec();
    }
    let mut out = vec![0u8; field_len - digest.len()];
    out.extend_from_slice(digest);
    out
}
