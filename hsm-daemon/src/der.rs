//! The few DER encodings PKCS#11 attributes need: `RSAPublicKey`, `OCTET STRING` for
//! `CKA_EC_POINT`, and the named-curve OID for `CKA_EC_PARAMS`. Hand-written because they are
//! tiny and fixed; the parsers are strict and never panic on any input.

/// `CKA_EC_PARAMS` of P-256: the OID 1.2.840.10045.3.1.7.
pub const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

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

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 6);
    out.push(tag);
    push_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// Wraps bytes in a DER `OCTET STRING`.
pub fn octet_string(body: &[u8]) -> Vec<u8> {
    tlv(0x04, body)
}

fn unsigned_integer(be: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let skip = be.iter().take_while(|b| **b == 0).count();
        &be[skip.min(be.len().saturating_sub(1))..]
    };
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(trimmed);
    tlv(0x02, &body)
}

/// Encodes `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
pub fn rsa_public_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut body = unsigned_integer(modulus);
    body.extend_from_slice(&unsigned_integer(exponent));
    tlv(0x30, &body)
}

/// Reads one TLV of the expected tag; returns its body and the rest.
fn read_tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
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

/// Decodes `RSAPublicKey` into (modulus, exponent), big-endian without leading zeros.
pub fn parse_rsa_public_key(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (seq, rest) = read_tlv(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (n, seq) = read_tlv(seq, 0x02)?;
    let (e, seq) = read_tlv(seq, 0x02)?;
    if !seq.is_empty() {
        return None;
    }
    let strip = |v: &[u8]| {
        let skip = v.iter().take_while(|b| **b == 0).count();
        v[skip..].to_vec()
    };
    Some((strip(n), strip(e)))
}

/// The uncompressed point inside `CKA_EC_POINT`. Accepts the DER `OCTET STRING` the spec
/// prescribes and, because some clients send it (pkcs11-provider #478, #766), the raw point.
pub fn ec_point_from_attribute(value: &[u8], point_len: usize) -> Option<Vec<u8>> {
    if value.len() == point_len && value.first() == Some(&0x04) {
        return Some(value.to_vec());
    }
    let (body, rest) = read_tlv(value, 0x04)?;
    (rest.is_empty() && body.len() == point_len && body.first() == Some(&0x04))
        .then(|| body.to_vec())
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
    fn parsers_refuse_garbage_without_panicking() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x02, 0x02, 0x05],
        ] {
            assert!(parse_rsa_public_key(input).is_none());
            assert!(ec_point_from_attribute(input, 65).is_none());
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
    }
}
