//! Typed PKCS#11 attributes.
//!
//! The module converts raw `CK_ATTRIBUTE`s to [`Attribute`] at the C boundary and back; the wire
//! and the daemon only ever see the typed form. A type code this table does not know is
//! `CKR_ATTRIBUTE_TYPE_INVALID` at the boundary.

use crate::error::ErrorCode;
use crate::secret::SecretBytes;
use cryptoki_sys as ck;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// How an attribute's value is laid out in a `CK_ATTRIBUTE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// `CK_BBOOL`, one byte.
    Bool,
    /// `CK_ULONG`, native width and endianness.
    Ulong,
    /// A byte string.
    Bytes,
    /// A byte string that may be key material.
    Secret,
    /// An array of `CK_MECHANISM_TYPE`.
    Ulongs,
}

/// Size of `CK_ULONG` on this platform (the module and the application share it).
pub const ULONG_SIZE: usize = std::mem::size_of::<ck::CK_ULONG>();

macro_rules! attributes {
    ($($name:ident = $cka:ident : $kind:ident,)*) => {
        /// One attribute with its typed value.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum Attribute {
            $($name(attributes!(@ty $kind)),)*
        }

        impl Attribute {
            /// The `CKA_*` type code.
            pub fn type_code(&self) -> u64 {
                match self {
                    $(Attribute::$name(_) => ck::$cka as u64,)*
                }
            }

            /// The spec name of a type code, for log lines.
            pub fn type_name(code: u64) -> &'static str {
                $(if code == ck::$cka as u64 { return stringify!($cka); })*
                "CKA_(unknown)"
            }

            /// The layout of an attribute type, or `None` for a type we do not know.
            pub fn kind_of(code: u64) -> Option<AttrKind> {
                $(if code == ck::$cka as u64 { return Some(AttrKind::$kind); })*
                None
            }

            /// Parses a raw attribute value.
            ///
            /// # Errors
            /// `AttributeTypeInvalid` for an unknown type, `AttributeValueInvalid` for a value
            /// of the wrong length.
            pub fn from_raw(code: u64, value: &[u8]) -> Result<Attribute, ErrorCode> {
                $(if code == ck::$cka as u64 {
                    return Ok(Attribute::$name(attributes!(@parse $kind, value)?));
                })*
                Err(ErrorCode::AttributeTypeInvalid)
            }

            /// Encodes the value as a `CK_ATTRIBUTE` holds it.
            pub fn to_raw(&self) -> Zeroizing<Vec<u8>> {
                match self {
                    $(Attribute::$name(v) => attributes!(@encode $kind, v),)*
                }
            }
        }
    };
    (@ty Bool) => { bool };
    (@ty Ulong) => { u64 };
    (@ty Bytes) => { Vec<u8> };
    (@ty Secret) => { SecretBytes };
    (@ty Ulongs) => { Vec<u64> };
    (@parse Bool, $v:ident) => { parse_bool($v) };
    (@parse Ulong, $v:ident) => { parse_ulong($v) };
    (@parse Bytes, $v:ident) => { Ok::<_, ErrorCode>($v.to_vec()) };
    (@parse Secret, $v:ident) => { Ok::<_, ErrorCode>(SecretBytes::from_slice($v)) };
    (@parse Ulongs, $v:ident) => { parse_ulongs($v) };
    (@encode Bool, $v:ident) => { Zeroizing::new(vec![u8::from(*$v)]) };
    (@encode Ulong, $v:ident) => { Zeroizing::new(encode_ulong(*$v)) };
    (@encode Bytes, $v:ident) => { Zeroizing::new($v.clone()) };
    (@encode Secret, $v:ident) => { Zeroizing::new($v.expose_secret().to_vec()) };
    (@encode Ulongs, $v:ident) => { Zeroizing::new($v.iter().flat_map(|u| encode_ulong(*u)).collect()) };
}

attributes! {
    Class = CKA_CLASS: Ulong,
    Token = CKA_TOKEN: Bool,
    Private = CKA_PRIVATE: Bool,
    Label = CKA_LABEL: Bytes,
    Application = CKA_APPLICATION: Bytes,
    Value = CKA_VALUE: Secret,
    ObjectIdDer = CKA_OBJECT_ID: Bytes,
    CertificateType = CKA_CERTIFICATE_TYPE: Ulong,
    Issuer = CKA_ISSUER: Bytes,
    SerialNumber = CKA_SERIAL_NUMBER: Bytes,
    Trusted = CKA_TRUSTED: Bool,
    CertificateCategory = CKA_CERTIFICATE_CATEGORY: Ulong,
    CheckValue = CKA_CHECK_VALUE: Bytes,
    KeyType = CKA_KEY_TYPE: Ulong,
    Subject = CKA_SUBJECT: Bytes,
    Id = CKA_ID: Bytes,
    Sensitive = CKA_SENSITIVE: Bool,
    Encrypt = CKA_ENCRYPT: Bool,
    Decrypt = CKA_DECRYPT: Bool,
    Wrap = CKA_WRAP: Bool,
    Unwrap = CKA_UNWRAP: Bool,
    Sign = CKA_SIGN: Bool,
    SignRecover = CKA_SIGN_RECOVER: Bool,
    Verify = CKA_VERIFY: Bool,
    VerifyRecover = CKA_VERIFY_RECOVER: Bool,
    Derive = CKA_DERIVE: Bool,
    StartDate = CKA_START_DATE: Bytes,
    EndDate = CKA_END_DATE: Bytes,
    Modulus = CKA_MODULUS: Bytes,
    ModulusBits = CKA_MODULUS_BITS: Ulong,
    PublicExponent = CKA_PUBLIC_EXPONENT: Bytes,
    PrivateExponent = CKA_PRIVATE_EXPONENT: Secret,
    Prime1 = CKA_PRIME_1: Secret,
    Prime2 = CKA_PRIME_2: Secret,
    Exponent1 = CKA_EXPONENT_1: Secret,
    Exponent2 = CKA_EXPONENT_2: Secret,
    Coefficient = CKA_COEFFICIENT: Secret,
    PublicKeyInfo = CKA_PUBLIC_KEY_INFO: Bytes,
    ValueLen = CKA_VALUE_LEN: Ulong,
    Extractable = CKA_EXTRACTABLE: Bool,
    Local = CKA_LOCAL: Bool,
    NeverExtractable = CKA_NEVER_EXTRACTABLE: Bool,
    AlwaysSensitive = CKA_ALWAYS_SENSITIVE: Bool,
    KeyGenMechanism = CKA_KEY_GEN_MECHANISM: Ulong,
    Modifiable = CKA_MODIFIABLE: Bool,
    Copyable = CKA_COPYABLE: Bool,
    Destroyable = CKA_DESTROYABLE: Bool,
    EcParams = CKA_EC_PARAMS: Bytes,
    EcPoint = CKA_EC_POINT: Bytes,
    AlwaysAuthenticate = CKA_ALWAYS_AUTHENTICATE: Bool,
    WrapWithTrusted = CKA_WRAP_WITH_TRUSTED: Bool,
    AllowedMechanisms = CKA_ALLOWED_MECHANISMS: Ulongs,
    UniqueId = CKA_UNIQUE_ID: Bytes,
}

fn parse_bool(v: &[u8]) -> Result<bool, ErrorCode> {
    match v {
        [b] => Ok(*b != 0),
        _ => Err(ErrorCode::AttributeValueInvalid),
    }
}

fn parse_ulong(v: &[u8]) -> Result<u64, ErrorCode> {
    let bytes: [u8; ULONG_SIZE] = v.try_into().map_err(|_| ErrorCode::AttributeValueInvalid)?;
    Ok(ck::CK_ULONG::from_ne_bytes(bytes) as u64)
}

fn parse_ulongs(v: &[u8]) -> Result<Vec<u64>, ErrorCode> {
    if !v.len().is_multiple_of(ULONG_SIZE) {
        return Err(ErrorCode::AttributeValueInvalid);
    }
    v.chunks_exact(ULONG_SIZE).map(parse_ulong).collect()
}

fn encode_ulong(u: u64) -> Vec<u8> {
    // CK_ULONG is 64-bit on every platform we build for (LP64 Linux); the cast is lossless.
    (u as ck::CK_ULONG).to_ne_bytes().to_vec()
}

/// The answer for one requested attribute type in `GetAttributeValue`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrOutcome {
    /// The value.
    Value(Attribute),
    /// The attribute exists but may not be revealed (`CKR_ATTRIBUTE_SENSITIVE`).
    Sensitive,
    /// The object has no such attribute (`CKR_ATTRIBUTE_TYPE_INVALID`).
    Invalid,
}

/// Finds the first attribute of a type in a template.
pub fn find(template: &[Attribute], code: u64) -> Option<&Attribute> {
    template.iter().find(|a| a.type_code() == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip() {
        let attrs = [
            Attribute::Token(true),
            Attribute::Class(ck::CKO_PRIVATE_KEY as u64),
            Attribute::Label(b"k1".to_vec()),
            Attribute::Value(SecretBytes::from_slice(&[1, 2, 3])),
            Attribute::AllowedMechanisms(vec![1, 2, 0x1041]),
        ];
        for a in attrs {
            let raw = a.to_raw();
            assert_eq!(Attribute::from_raw(a.type_code(), &raw).unwrap(), a);
        }
    }

    proptest::proptest! {
        /// Any type code and any bytes: a typed attribute that encodes back to the same
        /// bytes, or a CKR error; never a panic.
        #[test]
        fn from_raw_never_panics_and_round_trips(code in proptest::prelude::any::<u64>(),
                                                 small in 0u64..0x200,
                                                 value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            for code in [code, small] {
                match Attribute::from_raw(code, &value) {
                    Ok(a) => {
                        proptest::prop_assert_eq!(a.type_code(), code);
                        let raw = a.to_raw();
                        if a.to_raw().as_slice() != value.as_slice() {
                            // Only booleans normalise (any non-zero byte is TRUE).
                            proptest::prop_assert_eq!(Attribute::kind_of(code), Some(AttrKind::Bool));
                        }
                        proptest::prop_assert_eq!(Attribute::from_raw(code, &raw), Ok(a));
                    }
                    Err(e) => proptest::prop_assert!(matches!(
                        e,
                        ErrorCode::AttributeTypeInvalid | ErrorCode::AttributeValueInvalid
                    )),
                }
            }
        }
    }

    #[test]
    fn bad_values_are_refused() {
        assert_eq!(
            Attribute::from_raw(ck::CKA_TOKEN as u64, &[1, 1]),
            Err(ErrorCode::AttributeValueInvalid)
        );
        assert_eq!(
            Attribute::from_raw(ck::CKA_CLASS as u64, &[1, 2, 3]),
            Err(ErrorCode::AttributeValueInvalid)
        );
        assert_eq!(
            Attribute::from_raw(0x7fff_0000, &[]),
            Err(ErrorCode::AttributeTypeInvalid)
        );
    }
}
