//! The few DER encodings PKCS#11 attributes and key transport need: `RSAPublicKey`,
//! `RSAPrivateKey` (to read CRT components back out of PKCS#8), `SubjectPublicKeyInfo`
//! (`CKA_PUBLIC_KEY_INFO`), the PKCS#8 header (to tell which algorithm a private key is for),
//! RFC 5915 `ECPrivateKey` (to import an EC scalar), `OCTET STRING` for `CKA_EC_POINT`, and the
//! named-curve OIDs of `CKA_EC_PARAMS`. Hand-written because they are small and fixed; the
//! parsers are strict, bounded, and never panic on any input (a property test holds that).
//!
//! Secret-bearing encodings (private keys) are built in `Zeroizing` buffers only.

use zeroize::Zeroizing;

/// `CKA_EC_PARAMS` of P-256: the OID 1.2.840.10045.3.1.7 (prime256v1).
pub const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `CKA_EC_PARAMS` of P-384: the OID 1.3.132.0.34 (secp384r1).
pub const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// `CKA_EC_PARAMS` of P-521: the OID 1.3.132.0.35 (secp521r1).
pub const P521_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
/// `CKA_EC_PARAMS` of secp256k1: the OID 1.3.132.0.10.
pub const SECP256K1_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
/// `CKA_EC_PARAMS` of Ed25519 as we emit it: the OID 1.3.101.112 (id-Ed25519, RFC 8410), the
/// form PKCS#11 3.1 names and OpenSSL's pkcs11-provider reads.
pub const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// Body of the OID rsaEncryption (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// Body of the OID id-ecPublicKey (1.2.840.10045.2.1).
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// Body of the OID id-Ed25519 (1.3.101.112).
const ID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_SEQUENCE: u8 = 0x30;

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Appends one TLV to `out` (which may be a zeroizing buffer: nothing is copied elsewhere).
fn push_tlv(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    push_len(out, body.len());
    out.extend_from_slice(body);
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    push_tlv(&mut out, tag, body);
    out
}

/// Wraps bytes in a DER `OCTET STRING`.
pub fn octet_string(body: &[u8]) -> Vec<u8> {
    tlv(TAG_OCTET_STRING, body)
}

/// Appends a non-negative `INTEGER` from big-endian bytes (leading zeros dropped, a zero added
/// where the top bit is set).
fn push_unsigned_integer(out: &mut Vec<u8>, be: &[u8]) {
    let skip = be.iter().take_while(|b| **b == 0).count();
    let trimmed = &be[skip.min(be.len().saturating_sub(1))..];
    let pad = trimmed.first().is_some_and(|b| b & 0x80 != 0);
    out.push(TAG_INTEGER);
    push_len(
        out,
        trimmed.len() + usize::from(pad) + usize::from(trimmed.is_empty()),
    );
    if pad || trimmed.is_empty() {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
}

/// Encodes `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
pub fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(modulus.len() + exponent.len() + 12);
    push_unsigned_integer(&mut body, modulus);
    push_unsigned_integer(&mut body, exponent);
    tlv(TAG_SEQUENCE, &body)
}

/// Reads one TLV of the expected tag; returns its body and the rest. Lengths are definite,
/// at most four length bytes.
pub(crate) fn read_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for b in &rest[..n] {
            len = (len << 8) | *b as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((&rest[..len], &rest[len..]))
}

/// Reads one TLV whatever its tag; returns (tag, whole TLV, rest).
fn read_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let (body, rest) = read_tlv(input, tag)?;
    let whole = &input[..input.len() - rest.len()];
    debug_assert!(whole.ends_with(body));
    Some((tag, whole, rest))
}

fn strip_leading_zeros(v: &[u8]) -> &[u8] {
    let skip = v.iter().take_while(|b| **b == 0).count();
    &v[skip..]
}

/// Decodes `RSAPublicKey` into (modulus, exponent), big-endian without leading zeros.
pub fn parse_rsa_public_key(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (seq, rest) = read_tlv(der, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (n, seq) = read_tlv(seq, TAG_INTEGER)?;
    let (e, seq) = read_tlv(seq, TAG_INTEGER)?;
    if !seq.is_empty() {
        return None;
    }
    Some((
        strip_leading_zeros(n).to_vec(),
        strip_leading_zeros(e).to_vec(),
    ))
}

/// The uncompressed point inside `CKA_EC_POINT`. Accepts the DER `OCTET STRING` the spec
/// prescribes and, because some clients send it (pkcs11-provider #478, #766), the raw point.
pub fn ec_point_from_attribute(value: &[u8], point_len: usize) -> Option<Vec<u8>> {
    if value.len() == point_len && value.first() == Some(&0x04) {
        return Some(value.to_vec());
    }
    let (body, rest) = read_tlv(value, TAG_OCTET_STRING)?;
    (rest.is_empty() && body.len() == point_len && body.first() == Some(&0x04))
        .then(|| body.to_vec())
}

/// An Ed25519 public key (32 bytes) from `CKA_EC_POINT`: the DER `OCTET STRING` or raw bytes.
pub fn ed25519_point_from_attribute(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() == 32 {
        return Some(value.to_vec());
    }
    let (body, rest) = read_tlv(value, TAG_OCTET_STRING)?;
    (rest.is_empty() && body.len() == 32).then(|| body.to_vec())
}

/// The body of a DER `PrintableString`, if `value` is exactly one.
pub fn printable_string(value: &[u8]) -> Option<&[u8]> {
    let (body, rest) = read_tlv(value, TAG_PRINTABLE_STRING)?;
    rest.is_empty().then_some(body)
}

/// The algorithm a `SubjectPublicKeyInfo` or PKCS#8 key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm<'a> {
    /// rsaEncryption.
    Rsa,
    /// id-ecPublicKey with these parameters (the whole TLV: a named-curve OID normally).
    Ec(&'a [u8]),
    /// id-Ed25519.
    Ed25519,
}

fn parse_algorithm_identifier(input: &[u8]) -> Option<KeyAlgorithm<'_>> {
    let (body, rest) = read_tlv(input, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (oid, params) = read_tlv(body, TAG_OID)?;
    match oid {
        RSA_ENCRYPTION => {
            // NULL parameters, or (tolerated, as OpenSSL does) none.
            if params.is_empty() || params == [TAG_NULL, 0] {
                Some(KeyAlgorithm::Rsa)
            } else {
                None
            }
        }
        EC_PUBLIC_KEY => {
            let (_, whole, rest) = read_any(params)?;
            rest.is_empty().then_some(KeyAlgorithm::Ec(whole))
        }
        // RFC 8410: the parameters MUST be absent.
        ID_ED25519 if params.is_empty() => Some(KeyAlgorithm::Ed25519),
        _ => None,
    }
}

/// The header of a PKCS#8 `PrivateKeyInfo` (v1) or `OneAsymmetricKey` (v2): which algorithm
/// the key is for. The key itself is left to aws-lc to parse and validate.
pub fn pkcs8_algorithm(der: &[u8]) -> Option<KeyAlgorithm<'_>> {
    let (body, rest) = read_tlv(der, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let (version, body) = read_tlv(body, TAG_INTEGER)?;
    if version != [0] && version != [1] {
        return None;
    }
    let (_, alg, _) = read_any(body)?;
    parse_algorithm_identifier(alg)
}

/// The eight integers of a PKCS#1 `RSAPrivateKey`, borrowed from the decoding buffer,
/// big-endian without leading zeros.
#[derive(Clone, Copy)]
pub struct RsaPrivateParts<'a> {
    /// n.
    pub modulus: &'a [u8],
    /// e.
    pub public_exponent: &'a [u8],
    /// d.
    pub private_exponent: &'a [u8],
    /// p.
    pub prime1: &'a [u8],
    /// q.
    pub prime2: &'a [u8],
    /// d mod (p-1).
    pub exponent1: &'a [u8],
    /// d mod (q-1).
    pub exponent2: &'a [u8],
    /// q^-1 mod p.
    pub coefficient: &'a [u8],
}

impl std::fmt::Debug for RsaPrivateParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RsaPrivateParts({} bit modulus, [REDACTED])",
            self.modulus.len() * 8
        )
    }
}

/// The `privateKey` field of a PKCS#8 key (the algorithm-specific encoding), borrowed.
fn pkcs8_private_key(pkcs8: &[u8]) -> Option<&[u8]> {
    let (body, _) = read_tlv(pkcs8, TAG_SEQUENCE)?;
    let (_, body) = read_tlv(body, TAG_INTEGER)?;
    let (_, _, body) = read_any(body)?;
    let (private_key, _) = read_tlv(body, TAG_OCTET_STRING)?;
    Some(private_key)
}

/// The 32-byte seed of an Ed25519 PKCS#8 key (RFC 8410: `CurvePrivateKey ::= OCTET STRING`
/// inside the `privateKey` octets), borrowed.
pub fn ed25519_seed(pkcs8: &[u8]) -> Option<&[u8]> {
    if pkcs8_algorithm(pkcs8)? != KeyAlgorithm::Ed25519 {
        return None;
    }
    let (seed, rest) = read_tlv(pkcs8_private_key(pkcs8)?, TAG_OCTET_STRING)?;
    (rest.is_empty() && seed.len() == 32).then_some(seed)
}

/// Reads the CRT components out of an RSA PKCS#8 `PrivateKeyInfo` (two-prime keys only).
pub fn rsa_private_parts(pkcs8: &[u8]) -> Option<RsaPrivateParts<'_>> {
    if pkcs8_algorithm(pkcs8)? != KeyAlgorithm::Rsa {
        return None;
    }
    let (seq, rest) = read_tlv(pkcs8_private_key(pkcs8)?, TAG_SEQUENCE)?;
    if !rest.is_empty() {
        return None;
    }
    let mut ints = [&[][..]; 9];
    let mut cursor = seq;
    for slot in &mut ints {
        let (value, next) = read_tlv(cursor, TAG_INTEGER)?;
        *slot = strip_leading_zeros(value);
        cursor = next;
    }
    // version 0 = two primes; multi-prime keys (version 1) are not ours.
    if !cursor.is_empty() || !ints[0].is_empty() {
        return None;
    }
    Some(RsaPrivateParts {
        modulus: ints[1],
        public_exponent: ints[2],
        private_exponent: ints[3],
        prime1: ints[4],
        prime2: ints[5],
        exponent1: ints[6],
        exponent2: ints[7],
        coefficient: ints[8],
    })
}

/// RFC 5915 `ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING, parameters [0]
/// curve OID }`, without the public key: aws-lc computes it, which is also the check that
/// the scalar is in range.
pub fn ec_private_key(scalar: &[u8], curve_oid: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(Vec::with_capacity(scalar.len() + curve_oid.len() + 8));
    push_tlv(&mut body, TAG_INTEGER, &[1]);
    push_tlv(&mut body, TAG_OCTET_STRING, scalar);
    push_tlv(&mut body, 0xa0, curve_oid);
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    push_tlv(&mut out, TAG_SEQUENCE, &body);
    out
}

/// `SubjectPublicKeyInfo` (RFC 5280) for `CKA_PUBLIC_KEY_INFO`.
pub fn subject_public_key_info(algorithm: KeyAlgorithm<'_>, key: &[u8]) -> Vec<u8> {
    let mut alg = Vec::with_capacity(24);
    match algorithm {
        KeyAlgorithm::Rsa => {
            push_tlv(&mut alg, TAG_OID, RSA_ENCRYPTION);
            push_tlv(&mut alg, TAG_NULL, &[]);
        }
        KeyAlgorithm::Ec(params) => {
            push_tlv(&mut alg, TAG_OID, EC_PUBLIC_KEY);
            alg.extend_from_slice(params);
        }
        KeyAlgorithm::Ed25519 => push_tlv(&mut alg, TAG_OID, ID_ED25519),
    }
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0);
    bits.extend_from_slice(key);
    let mut body = Vec::with_capacity(alg.len() + bits.len() + 12);
    push_tlv(&mut body, TAG_SEQUENCE, &alg);
    push_tlv(&mut body, TAG_BIT_STRING, &bits);
    tlv(TAG_SEQUENCE, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_public_key_round_trips() {
        let n = [0x80u8; 256];
        let der = rsa_public_key(&n, &[1, 0, 1]);
        let (n2, e2) = parse_rsa_public_key(&der).unwrap();
        assert_eq!(n2, n.to_vec());
        assert_eq!(e2, vec![1, 0, 1]);
    }

    #[test]
    fn integers_are_minimal() {
        assert_eq!(
            rsa_public_key(&[0, 0, 1], &[0x80]),
            [0x30, 0x07, 2, 1, 1, 2, 2, 0, 0x80]
        );
        assert_eq!(rsa_public_key(&[], &[0]), [0x30, 0x06, 2, 1, 0, 2, 1, 0]);
    }

    #[test]
    fn parsers_refuse_garbage_without_panicking() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x02, 0x02, 0x05],
            &[0x30, 0x03, 0x02, 0x01, 0x00],
        ] {
            assert!(parse_rsa_public_key(input).is_none());
            assert!(ec_point_from_attribute(input, 65).is_none());
            assert!(pkcs8_algorithm(input).is_none());
            assert!(rsa_private_parts(input).is_none());
            assert!(ed25519_seed(input).is_none());
            assert!(printable_string(input).is_none());
        }
    }

    #[test]
    fn ec_point_accepts_wrapped_and_raw() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[7; 64]);
        assert_eq!(
            ec_point_from_attribute(&octet_string(&point), 65),
            Some(point.clone())
        );
        assert_eq!(ec_point_from_attribute(&point, 65), Some(point));
        assert_eq!(ed25519_point_from_attribute(&[1; 32]), Some(vec![1; 32]));
        assert_eq!(
            ed25519_point_from_attribute(&octet_string(&[2; 32])),
            Some(vec![2; 32])
        );
        assert_eq!(ed25519_point_from_attribute(&[1; 33]), None);
    }

    #[test]
    fn printable_strings() {
        let mut v = vec![0x13, 12];
        v.extend_from_slice(b"edwards25519");
        assert_eq!(printable_string(&v), Some(&b"edwards25519"[..]));
        assert_eq!(printable_string(ED25519_OID), None);
    }

    #[test]
    fn spki_of_a_p256_key_has_the_standard_prefix() {
        // The fixed 26-byte prefix every P-256 SubjectPublicKeyInfo starts with.
        let prefix = [
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        let point = [4u8; 65];
        let spki = subject_public_key_info(KeyAlgorithm::Ec(P256_OID), &point);
        assert_eq!(&spki[..26], &prefix);
        assert_eq!(&spki[26..], &point);
        assert_eq!(
            parse_algorithm_identifier(&spki[2..23]),
            Some(KeyAlgorithm::Ec(P256_OID))
        );
    }
}
