//! Objects: attributes, the per-class attribute rules, and template processing.
//!
//! An object's attribute map never holds secret key components; those live only in the
//! object's ready-to-use key and, for storage and replication, in its blob wrapped under the
//! cluster domain key.

use crate::error::Error;
use crate::keys::{PublicKey, SecretKey};
use crate::seal::{ClusterDomainKey, WrapFormat};
use cryptoki_sys as ck;
use hsm_proto::{AttrOutcome, Attribute, ErrorCode, ObjectId, ObjectInfo, SecretBytes};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use zeroize::Zeroizing;

const DATA: u8 = 1 << 0;
const CERT: u8 = 1 << 1;
const PUB: u8 = 1 << 2;
const PRIV: u8 = 1 << 3;
const SECRET: u8 = 1 << 4;
const KEYS: u8 = PUB | PRIV | SECRET;
const ALL: u8 = DATA | CERT | KEYS;

const RSA: u8 = 1 << 0;
const EC: u8 = 1 << 1;
const SYM: u8 = 1 << 2;
const ANY: u8 = RSA | EC | SYM;

/// Set by the token only; a template may not give it (`CKR_ATTRIBUTE_READ_ONLY`).
const TOKEN_SET: u16 = 1 << 0;
/// Computed at generation; a generate template may not give it.
const NOT_IN_GENERATE: u16 = 1 << 1;
/// A secret component of a key: revealed only for a non-sensitive, extractable key, and never
/// kept in the attribute map.
const SECRET_PART: u16 = 1 << 2;
/// `C_SetAttributeValue` may change it (footnote 8 of the spec's attribute tables).
const MODIFY: u16 = 1 << 3;
/// `C_CopyObject`'s template may change it (footnote 9), besides the `MODIFY` ones.
const COPY: u16 = 1 << 4;
/// May only change from FALSE to TRUE (footnote 11: `CKA_SENSITIVE`, `CKA_WRAP_WITH_TRUSTED`).
const ONLY_TO_TRUE: u16 = 1 << 5;
/// May only change from TRUE to FALSE (footnote 12: `CKA_EXTRACTABLE`, `CKA_MODIFIABLE`, …).
const ONLY_TO_FALSE: u16 = 1 << 6;
/// Only an administrator (SO) may set it to TRUE (footnote 10: `CKA_TRUSTED`).
const SO_ONLY: u16 = 1 << 7;

/// Which classes and key types an attribute belongs to, and how it may be set.
#[derive(Clone, Copy, Debug)]
struct Rule {
    code: u64,
    classes: u8,
    key_types: u8,
    flags: u16,
}

const fn rule(code: ck::CK_ATTRIBUTE_TYPE, classes: u8, key_types: u8, flags: u16) -> Rule {
    Rule {
        code: code as u64,
        classes,
        key_types,
        flags,
    }
}

const VALUE_FLAGS: u16 = NOT_IN_GENERATE | SECRET_PART;

/// Attribute rules, sorted by `CKA_*` value (a test keeps it sorted).
const RULES: &[Rule] = &[
    rule(ck::CKA_CLASS, ALL, ANY, 0),
    rule(ck::CKA_TOKEN, ALL, ANY, COPY),
    rule(ck::CKA_PRIVATE, ALL, ANY, COPY),
    rule(ck::CKA_LABEL, ALL, ANY, MODIFY),
    rule(ck::CKA_UNIQUE_ID, ALL, ANY, TOKEN_SET),
    rule(ck::CKA_APPLICATION, DATA, ANY, MODIFY),
    // CKA_VALUE is plain (and modifiable) for data objects, plain for certificates, and a
    // secret part of EC private and secret keys: see `secret_part` and `may_change`.
    rule(ck::CKA_VALUE, DATA | CERT | PRIV | SECRET, ANY, VALUE_FLAGS),
    rule(ck::CKA_OBJECT_ID, DATA, ANY, MODIFY),
    rule(ck::CKA_CERTIFICATE_TYPE, CERT, ANY, 0),
    rule(ck::CKA_ISSUER, CERT, ANY, MODIFY),
    rule(ck::CKA_SERIAL_NUMBER, CERT, ANY, MODIFY),
    rule(ck::CKA_TRUSTED, CERT | PUB | SECRET, ANY, MODIFY | SO_ONLY),
    rule(ck::CKA_CERTIFICATE_CATEGORY, CERT, ANY, MODIFY),
    rule(ck::CKA_CHECK_VALUE, CERT | SECRET, ANY, TOKEN_SET),
    rule(ck::CKA_KEY_TYPE, KEYS, ANY, 0),
    rule(ck::CKA_SUBJECT, CERT | PUB | PRIV, ANY, MODIFY),
    rule(ck::CKA_ID, CERT | KEYS, ANY, MODIFY),
    rule(ck::CKA_SENSITIVE, PRIV | SECRET, ANY, MODIFY | ONLY_TO_TRUE),
    rule(ck::CKA_ENCRYPT, PUB | SECRET, ANY, MODIFY),
    rule(ck::CKA_DECRYPT, PRIV | SECRET, ANY, MODIFY),
    rule(ck::CKA_WRAP, PUB | SECRET, ANY, MODIFY),
    rule(ck::CKA_UNWRAP, PRIV | SECRET, ANY, MODIFY),
    rule(ck::CKA_SIGN, PRIV | SECRET, ANY, MODIFY),
    rule(ck::CKA_SIGN_RECOVER, PRIV, ANY, MODIFY),
    rule(ck::CKA_VERIFY, PUB | SECRET, ANY, MODIFY),
    rule(ck::CKA_VERIFY_RECOVER, PUB, ANY, MODIFY),
    rule(ck::CKA_DERIVE, KEYS, ANY, MODIFY),
    rule(ck::CKA_START_DATE, CERT | KEYS, ANY, MODIFY),
    rule(ck::CKA_END_DATE, CERT | KEYS, ANY, MODIFY),
    rule(ck::CKA_MODULUS, PUB | PRIV, RSA, NOT_IN_GENERATE),
    rule(ck::CKA_MODULUS_BITS, PUB, RSA, 0),
    rule(ck::CKA_PUBLIC_EXPONENT, PUB | PRIV, RSA, 0),
    rule(ck::CKA_PRIVATE_EXPONENT, PRIV, RSA, VALUE_FLAGS),
    rule(ck::CKA_PRIME_1, PRIV, RSA, VALUE_FLAGS),
    rule(ck::CKA_PRIME_2, PRIV, RSA, VALUE_FLAGS),
    rule(ck::CKA_EXPONENT_1, PRIV, RSA, VALUE_FLAGS),
    rule(ck::CKA_EXPONENT_2, PRIV, RSA, VALUE_FLAGS),
    rule(ck::CKA_COEFFICIENT, PRIV, RSA, VALUE_FLAGS),
    rule(ck::CKA_PUBLIC_KEY_INFO, PUB | PRIV, ANY, TOKEN_SET),
    rule(ck::CKA_VALUE_LEN, SECRET, SYM, 0),
    rule(
        ck::CKA_EXTRACTABLE,
        PRIV | SECRET,
        ANY,
        MODIFY | ONLY_TO_FALSE,
    ),
    rule(ck::CKA_LOCAL, KEYS, ANY, TOKEN_SET),
    rule(ck::CKA_NEVER_EXTRACTABLE, PRIV | SECRET, ANY, TOKEN_SET),
    rule(ck::CKA_ALWAYS_SENSITIVE, PRIV | SECRET, ANY, TOKEN_SET),
    rule(ck::CKA_KEY_GEN_MECHANISM, KEYS, ANY, TOKEN_SET),
    rule(ck::CKA_MODIFIABLE, ALL, ANY, COPY | ONLY_TO_FALSE),
    rule(ck::CKA_COPYABLE, ALL, ANY, COPY | ONLY_TO_FALSE),
    rule(ck::CKA_DESTROYABLE, ALL, ANY, COPY),
    rule(ck::CKA_EC_PARAMS, PUB | PRIV, EC, 0),
    rule(ck::CKA_EC_POINT, PUB, EC, NOT_IN_GENERATE),
    // Secret keys too: pkcs11-tool reads it from any key it decrypts with, as SoftHSM has it.
    rule(ck::CKA_ALWAYS_AUTHENTICATE, PRIV | SECRET, ANY, 0),
    rule(
        ck::CKA_WRAP_WITH_TRUSTED,
        PRIV | SECRET,
        ANY,
        MODIFY | ONLY_TO_TRUE,
    ),
    rule(ck::CKA_ALLOWED_MECHANISMS, KEYS, ANY, 0),
];

/// Whether an attribute is a secret part for objects of this class (`CKA_VALUE` is one only
/// for private and secret keys).
fn secret_part(rule: &Rule, class_bit: u8) -> bool {
    rule.flags & SECRET_PART != 0 && class_bit & (PRIV | SECRET) != 0
}

fn find_rule(code: u64) -> Option<&'static Rule> {
    RULES
        .binary_search_by_key(&code, |r| r.code)
        .ok()
        .map(|i| &RULES[i])
}

fn class_bit(class: u64) -> u8 {
    match class {
        c if c == ck::CKO_DATA as u64 => DATA,
        c if c == ck::CKO_CERTIFICATE as u64 => CERT,
        c if c == ck::CKO_PUBLIC_KEY as u64 => PUB,
        c if c == ck::CKO_PRIVATE_KEY as u64 => PRIV,
        c if c == ck::CKO_SECRET_KEY as u64 => SECRET,
        _ => 0,
    }
}

fn key_type_bit(key_type: Option<u64>) -> u8 {
    match key_type {
        Some(k) if k == ck::CKK_RSA as u64 => RSA,
        Some(k) if k == ck::CKK_EC as u64 || k == ck::CKK_EC_EDWARDS as u64 => EC,
        Some(k) if k == ck::CKK_AES as u64 || k == ck::CKK_GENERIC_SECRET as u64 => SYM,
        _ => ANY,
    }
}

fn name(code: u64) -> &'static str {
    Attribute::type_name(code)
}

/// Whether an object is made by the token (generate) or handed in whole (create/import).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `C_GenerateKey`/`C_GenerateKeyPair` with this mechanism.
    Generated(u64),
    /// `C_CreateObject`.
    Created,
}

/// Checks a template against the rules for `class`/`key_type` and merges it over `defaults`.
/// Token-set attributes (`CKA_LOCAL`, …) are filled in by [`finish`] afterwards.
///
/// # Errors
/// `AttributeReadOnly` for an attribute only the token sets; `TemplateInconsistent` for one
/// that does not belong to this kind of object or contradicts another; each names the
/// attribute.
pub fn merge_template(
    class: u64,
    key_type: Option<u64>,
    template: &[Attribute],
    defaults: Vec<Attribute>,
    origin: Origin,
) -> Result<BTreeMap<u64, Attribute>, Error> {
    let cbit = class_bit(class);
    let kbit = key_type_bit(key_type);
    let mut attrs: BTreeMap<u64, Attribute> =
        defaults.into_iter().map(|a| (a.type_code(), a)).collect();
    let mut given: BTreeMap<u64, &Attribute> = BTreeMap::new();
    for a in template {
        let code = a.type_code();
        let inconsistent = |why: &str| {
            Error::new(
                ErrorCode::TemplateInconsistent,
                format!("{}: {why}", name(code)),
            )
        };
        let rule = find_rule(code).ok_or_else(|| inconsistent("not valid for any key object"))?;
        if rule.classes & cbit == 0 || rule.key_types & kbit == 0 {
            return Err(inconsistent("does not apply to this class or key type"));
        }
        if rule.flags & TOKEN_SET != 0 {
            return Err(Error::new(
                ErrorCode::AttributeReadOnly,
                format!("{} is set by the token", name(code)),
            ));
        }
        if matches!(origin, Origin::Generated(_))
            && rule.flags & (NOT_IN_GENERATE | SECRET_PART) != 0
        {
            return Err(inconsistent("is computed by key generation"));
        }
        if let Some(prev) = given.insert(code, a)
            && prev != a
        {
            return Err(inconsistent("given twice with different values"));
        }
        match a {
            Attribute::Class(c) if *c != class => {
                return Err(inconsistent("contradicts the mechanism"));
            }
            Attribute::KeyType(k) if Some(*k) != key_type => {
                return Err(inconsistent("contradicts the mechanism"));
            }
            Attribute::Trusted(true) => {
                return Err(Error::new(
                    ErrorCode::AttributeReadOnly,
                    "CKA_TRUSTED can be set only by an administrator",
                ));
            }
            _ => {}
        }
        // Secret components never enter the attribute map (see the module docs).
        if !secret_part(rule, cbit) {
            attrs.insert(code, a.clone());
        }
    }
    Ok(attrs)
}

/// Fills in the attributes only the token sets.
pub fn finish(attrs: &mut BTreeMap<u64, Attribute>, id: ObjectId, origin: Origin) {
    let class = match attrs.get(&(ck::CKA_CLASS as u64)) {
        Some(Attribute::Class(c)) => *c,
        _ => 0,
    };
    attrs.insert(
        ck::CKA_UNIQUE_ID as u64,
        Attribute::UniqueId(id.to_string().into_bytes()),
    );
    if class_bit(class) == CERT {
        // CKA_CHECK_VALUE of a certificate: the first 3 bytes of the SHA-1 of its value.
        if let Some(Attribute::Value(v)) = attrs.get(&(ck::CKA_VALUE as u64)) {
            let sha1 = aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
                v.expose_secret(),
            );
            let kcv = sha1.as_ref()[..3].to_vec();
            attrs.insert(ck::CKA_CHECK_VALUE as u64, Attribute::CheckValue(kcv));
        }
    }
    if class_bit(class) & KEYS != 0 {
        let local = Attribute::Local(matches!(origin, Origin::Generated(_)));
        attrs.insert(ck::CKA_LOCAL as u64, local);
        let mechanism = Attribute::KeyGenMechanism(match origin {
            Origin::Generated(m) => m,
            Origin::Created => ck::CK_UNAVAILABLE_INFORMATION as u64,
        });
        attrs.insert(ck::CKA_KEY_GEN_MECHANISM as u64, mechanism);
    }
    if class_bit(class) & (PRIV | SECRET) != 0 {
        let sensitive = matches!(
            attrs.get(&(ck::CKA_SENSITIVE as u64)),
            Some(Attribute::Sensitive(true))
        );
        let extractable = matches!(
            attrs.get(&(ck::CKA_EXTRACTABLE as u64)),
            Some(Attribute::Extractable(true))
        );
        let generated = matches!(origin, Origin::Generated(_));
        attrs.insert(
            ck::CKA_ALWAYS_SENSITIVE as u64,
            Attribute::AlwaysSensitive(generated && sensitive),
        );
        attrs.insert(
            ck::CKA_NEVER_EXTRACTABLE as u64,
            Attribute::NeverExtractable(generated && !extractable),
        );
    }
}

/// Attributes every object has, with the defaults of a key of `class`.
pub fn key_defaults(class: u64, key_type: u64) -> Vec<Attribute> {
    let cbit = class_bit(class);
    let rsa = key_type == ck::CKK_RSA as u64;
    let mut v = vec![
        Attribute::Class(class),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Private(cbit != PUB),
        Attribute::Modifiable(true),
        Attribute::Copyable(true),
        Attribute::Destroyable(true),
        Attribute::Label(Vec::new()),
        Attribute::Id(Vec::new()),
        Attribute::StartDate(Vec::new()),
        Attribute::EndDate(Vec::new()),
        Attribute::Derive(false),
        Attribute::AllowedMechanisms(Vec::new()),
    ];
    match cbit {
        PUB => v.extend([
            Attribute::Subject(Vec::new()),
            Attribute::Encrypt(rsa),
            Attribute::Verify(true),
            Attribute::VerifyRecover(false),
            Attribute::Wrap(false),
            Attribute::Trusted(false),
        ]),
        PRIV => v.extend([
            Attribute::Subject(Vec::new()),
            Attribute::Sensitive(true),
            Attribute::Decrypt(rsa),
            Attribute::Sign(true),
            Attribute::SignRecover(false),
            Attribute::Unwrap(false),
            Attribute::Extractable(false),
            Attribute::AlwaysAuthenticate(false),
            Attribute::WrapWithTrusted(false),
        ]),
        SECRET => v.extend([
            Attribute::AlwaysAuthenticate(false),
            Attribute::Sensitive(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Extractable(false),
            Attribute::WrapWithTrusted(false),
            Attribute::Trusted(false),
        ]),
        _ => {}
    }
    v
}

/// Attributes every data object or certificate has, with their defaults.
pub fn storage_defaults(class: u64) -> Vec<Attribute> {
    let mut v = vec![
        Attribute::Class(class),
        Attribute::Token(false),
        // Certificates are public by default (applications look them up before login);
        // data objects may hold anything, so they are private unless asked otherwise.
        Attribute::Private(class_bit(class) == DATA),
        Attribute::Modifiable(true),
        Attribute::Copyable(true),
        Attribute::Destroyable(true),
        Attribute::Label(Vec::new()),
    ];
    if class_bit(class) == DATA {
        v.extend([
            Attribute::Application(Vec::new()),
            Attribute::ObjectIdDer(Vec::new()),
            Attribute::Value(SecretBytes::default()),
        ]);
    } else {
        v.extend([
            Attribute::Id(Vec::new()),
            Attribute::Issuer(Vec::new()),
            Attribute::SerialNumber(Vec::new()),
            Attribute::Trusted(false),
            Attribute::CertificateCategory(0),
            Attribute::StartDate(Vec::new()),
            Attribute::EndDate(Vec::new()),
        ]);
    }
    v
}

/// Checks a `C_SetAttributeValue` (or, with `copy`, a `C_CopyObject`) template against the
/// object and returns the attribute map after the change.
///
/// # Errors
/// `AttributeTypeInvalid` for an attribute the object cannot have; `AttributeReadOnly` for one
/// that may not change, or not in that direction, or not by this user; each names the attribute.
pub fn apply_changes(
    obj: &Object,
    template: &[Attribute],
    is_admin: bool,
    copy: bool,
) -> Result<BTreeMap<u64, Attribute>, Error> {
    let cbit = class_bit(obj.class());
    let kbit = key_type_bit(obj.key_type());
    let mut attrs = obj.attrs.clone();
    for a in template {
        let code = a.type_code();
        let read_only = |why: &str| {
            Error::new(
                ErrorCode::AttributeReadOnly,
                format!("{}: {why}", name(code)),
            )
        };
        let rule = find_rule(code)
            .filter(|r| r.classes & cbit != 0 && r.key_types & kbit != 0)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::AttributeTypeInvalid,
                    format!("{}: not an attribute of this object", name(code)),
                )
            })?;
        if attrs.get(&code) == Some(a) {
            continue; // setting the current value is always allowed
        }
        let data_value = cbit == DATA && code == ck::CKA_VALUE as u64;
        if !(rule.flags & MODIFY != 0 || (copy && rule.flags & COPY != 0) || data_value) {
            return Err(read_only("cannot be changed after creation"));
        }
        let new_true = a.to_raw().as_slice() == [1];
        if rule.flags & ONLY_TO_TRUE != 0 && !new_true {
            return Err(read_only("can only change from FALSE to TRUE"));
        }
        if rule.flags & ONLY_TO_FALSE != 0 && new_true {
            return Err(read_only("can only change from TRUE to FALSE"));
        }
        if rule.flags & SO_ONLY != 0 && new_true && !is_admin {
            return Err(read_only("only an administrator may set it"));
        }
        attrs.insert(code, a.clone());
    }
    Ok(attrs)
}

/// Sets the attributes a public key determines on a key object of `class` (public or
/// private): EC parameters and point, RSA modulus and exponent, and the SubjectPublicKeyInfo.
pub fn public_attributes(attrs: &mut BTreeMap<u64, Attribute>, public: &PublicKey, class: u64) {
    let is_public = class_bit(class) == PUB;
    if let Some(params) = public.ec_params() {
        attrs.insert(
            ck::CKA_EC_PARAMS as u64,
            Attribute::EcParams(params.to_vec()),
        );
        if is_public {
            attrs.insert(
                ck::CKA_EC_POINT as u64,
                Attribute::EcPoint(public.ec_point_attribute()),
            );
        }
    }
    if let PublicKey::Rsa {
        modulus, exponent, ..
    } = public
    {
        attrs.insert(ck::CKA_MODULUS as u64, Attribute::Modulus(modulus.clone()));
        attrs.insert(
            ck::CKA_PUBLIC_EXPONENT as u64,
            Attribute::PublicExponent(exponent.clone()),
        );
        if is_public {
            attrs.insert(
                ck::CKA_MODULUS_BITS as u64,
                Attribute::ModulusBits(public.size_bits()),
            );
        }
    }
    attrs.insert(
        ck::CKA_PUBLIC_KEY_INFO as u64,
        Attribute::PublicKeyInfo(public.spki_der()),
    );
}

/// Sets the attributes a secret key determines: `CKA_VALUE_LEN` and `CKA_CHECK_VALUE`.
pub fn secret_attributes(attrs: &mut BTreeMap<u64, Attribute>, key: &SecretKey) {
    if let Some(kcv) = key.check_value() {
        attrs.insert(ck::CKA_CHECK_VALUE as u64, Attribute::CheckValue(kcv));
    }
    let kt = key.key_type();
    if kt == ck::CKK_AES as u64 || kt == ck::CKK_GENERIC_SECRET as u64 {
        attrs.insert(
            ck::CKA_VALUE_LEN as u64,
            Attribute::ValueLen(key.size_bits() / 8),
        );
    }
}

/// An object as stored on disk and carried by the replicated log: attributes (no secrets),
/// owner, and key material wrapped under the cluster domain key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredObject {
    /// Attributes, without secret components.
    pub attrs: Vec<Attribute>,
    /// The crypto user who owns it.
    pub owner: String,
    /// Key material wrapped under the CDK (format v2, bound to the object's [`KeyPolicy`]),
    /// if a private or secret key.
    pub wrapped: Option<Vec<u8>>,
}

/// The boolean attributes a [`KeyPolicy`] binds, sorted by `CKA_*` value (a test keeps it
/// sorted). Part of wrap format v2: changing this list changes every policy encoding, so it
/// needs a new format version and a migration, never an edit in place.
pub const POLICY_FLAGS: [ck::CK_ATTRIBUTE_TYPE; 22] = [
    ck::CKA_TOKEN,
    ck::CKA_PRIVATE,
    ck::CKA_TRUSTED,
    ck::CKA_SENSITIVE,
    ck::CKA_ENCRYPT,
    ck::CKA_DECRYPT,
    ck::CKA_WRAP,
    ck::CKA_UNWRAP,
    ck::CKA_SIGN,
    ck::CKA_SIGN_RECOVER,
    ck::CKA_VERIFY,
    ck::CKA_VERIFY_RECOVER,
    ck::CKA_DERIVE,
    ck::CKA_EXTRACTABLE,
    ck::CKA_LOCAL,
    ck::CKA_NEVER_EXTRACTABLE,
    ck::CKA_ALWAYS_SENSITIVE,
    ck::CKA_MODIFIABLE,
    ck::CKA_COPYABLE,
    ck::CKA_DESTROYABLE,
    ck::CKA_ALWAYS_AUTHENTICATE,
    ck::CKA_WRAP_WITH_TRUSTED,
];

/// What a key object's CDK wrap is bound to: its identity (id, owner) and every attribute
/// that restricts how the key may be used or whether it may leave the cluster. Editing any of
/// them in a stored record, log entry, snapshot or backup makes the key refuse to load.
/// `CKA_LABEL`, `CKA_ID` and the like are not part of it: changing them loosens nothing.
///
/// An absent attribute is encoded apart from FALSE or empty, so dropping one is a change too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The object.
    pub id: ObjectId,
    /// The crypto user who owns it.
    pub owner: String,
    /// `CKA_CLASS`.
    pub class: Option<u64>,
    /// `CKA_KEY_TYPE`.
    pub key_type: Option<u64>,
    /// The attributes of [`POLICY_FLAGS`], in its order.
    pub flags: [Option<bool>; POLICY_FLAGS.len()],
    /// `CKA_ALLOWED_MECHANISMS`.
    pub allowed_mechanisms: Option<Vec<u64>>,
    /// `CKA_START_DATE`.
    pub start_date: Option<Vec<u8>>,
    /// `CKA_END_DATE`.
    pub end_date: Option<Vec<u8>>,
}

impl KeyPolicy {
    /// The policy of object `id` with these attributes and owner.
    pub fn of(id: ObjectId, attrs: &BTreeMap<u64, Attribute>, owner: &str) -> KeyPolicy {
        let get = |code: ck::CK_ATTRIBUTE_TYPE| attrs.get(&(code as u64));
        let mut flags = [None; POLICY_FLAGS.len()];
        for (flag, code) in flags.iter_mut().zip(POLICY_FLAGS) {
            // Booleans only: the map is keyed by each attribute's own type code.
            *flag = get(code).map(|a| a.to_raw().as_slice() == [1]);
        }
        KeyPolicy {
            id,
            owner: owner.to_owned(),
            class: match get(ck::CKA_CLASS) {
                Some(Attribute::Class(c)) => Some(*c),
                _ => None,
            },
            key_type: match get(ck::CKA_KEY_TYPE) {
                Some(Attribute::KeyType(k)) => Some(*k),
                _ => None,
            },
            flags,
            allowed_mechanisms: match get(ck::CKA_ALLOWED_MECHANISMS) {
                Some(Attribute::AllowedMechanisms(m)) => Some(m.clone()),
                _ => None,
            },
            start_date: match get(ck::CKA_START_DATE) {
                Some(Attribute::StartDate(d)) => Some(d.clone()),
                _ => None,
            },
            end_date: match get(ck::CKA_END_DATE) {
                Some(Attribute::EndDate(d)) => Some(d.clone()),
                _ => None,
            },
        }
    }

    /// The canonical encoding, the associated data of a v2 wrap: fixed order, fixed-width
    /// big-endian integers, length-prefixed strings and lists, and for every optional field a
    /// presence byte (0 absent, 1 present; a flag is 0 absent, 1 FALSE, 2 TRUE).
    pub fn encode(&self) -> Vec<u8> {
        fn ulong(out: &mut Vec<u8>, v: Option<u64>) {
            match v {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        fn bytes(out: &mut Vec<u8>, v: &[u8]) {
            out.extend_from_slice(&(v.len() as u64).to_be_bytes());
            out.extend_from_slice(v);
        }
        fn opt_bytes(out: &mut Vec<u8>, v: Option<&[u8]>) {
            match v {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    bytes(out, v);
                }
            }
        }
        let mut out = Vec::with_capacity(128 + self.owner.len());
        out.extend_from_slice(&self.id.0.to_be_bytes());
        bytes(&mut out, self.owner.as_bytes());
        ulong(&mut out, self.class);
        ulong(&mut out, self.key_type);
        out.extend(self.flags.iter().map(|f| match f {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        }));
        match &self.allowed_mechanisms {
            None => out.push(0),
            Some(list) => {
                out.push(1);
                out.extend_from_slice(&(list.len() as u64).to_be_bytes());
                for m in list {
                    out.extend_from_slice(&m.to_be_bytes());
                }
            }
        }
        opt_bytes(&mut out, self.start_date.as_deref());
        opt_bytes(&mut out, self.end_date.as_deref());
        out
    }

    fn wrap(&self, cdk: &ClusterDomainKey, material: &[u8]) -> Result<Vec<u8>, Error> {
        cdk.wrap(&self.encode(), material)
    }

    fn unwrap(&self, cdk: &ClusterDomainKey, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if WrapFormat::of(wrapped) == Some(WrapFormat::V1) {
            return Err(Error::device(format!(
                "key {} is wrapped in format v1, which loads only through migration",
                self.id
            )));
        }
        cdk.unwrap(&self.encode(), wrapped).map_err(|_| {
            Error::device(format!(
                "key {} does not unwrap under the cluster domain key (tampered or foreign)",
                self.id
            ))
        })
    }
}

/// Rewraps a record written before wrap format v2 (material bound to the object id only) so
/// that it is bound to the policy of the attributes and owner it is stored with. Call it on
/// every stored object at unseal, before [`Object::from_stored`], and persist each record it
/// returns. This trusts the stored attributes once: v1 gave no way to check them.
///
/// Returns `Some(record)` for a v1 record, `None` for one with nothing to migrate (already v2,
/// or no wrapped material; keep using the record as read, so pass a clone).
///
/// # Errors
/// `DeviceError` if a v1 blob does not open under this CDK for this id, or the blob's format
/// is unknown.
pub fn migrate_stored(
    id: ObjectId,
    stored: StoredObject,
    cdk: &ClusterDomainKey,
) -> Result<Option<StoredObject>, Error> {
    let Some(wrapped) = &stored.wrapped else {
        return Ok(None);
    };
    match WrapFormat::of(wrapped) {
        Some(WrapFormat::V2 { .. }) => Ok(None),
        Some(WrapFormat::V1) => {
            let material = cdk.open_v1(&id.0.to_be_bytes(), wrapped).map_err(|_| {
                Error::device(format!(
                    "key {id} does not unwrap under the cluster domain key (tampered or foreign)"
                ))
            })?;
            let attrs: BTreeMap<u64, Attribute> = stored
                .attrs
                .iter()
                .map(|a| (a.type_code(), a.clone()))
                .collect();
            let wrapped = KeyPolicy::of(id, &attrs, &stored.owner).wrap(cdk, &material)?;
            Ok(Some(StoredObject {
                wrapped: Some(wrapped),
                ..stored
            }))
        }
        None => Err(Error::device(format!(
            "key {id} is wrapped in an unknown format"
        ))),
    }
}

/// What an object holds besides attributes.
#[derive(Clone, Debug)]
pub enum Body {
    /// Data objects, certificates.
    None,
    /// Private or secret key, ready to use (shared with running multi-part operations).
    Secret(Arc<SecretKey>),
    /// Public key, ready to verify with.
    Public(Arc<PublicKey>),
}

/// An object in memory.
#[derive(Debug)]
pub struct Object {
    /// Stable id.
    pub id: ObjectId,
    /// Attributes by `CKA_*` code.
    pub attrs: BTreeMap<u64, Attribute>,
    /// Owner (crypto user name).
    pub owner: String,
    /// Key.
    pub body: Body,
    /// Wrapped material, kept to store or replicate the object again without unwrapping.
    pub wrapped: Option<Vec<u8>>,
}

impl Object {
    /// A new object, its key `material` (if any) wrapped under the CDK with the policy of
    /// exactly these attributes, id and owner: pass the final attributes.
    ///
    /// # Errors
    /// If wrapping fails.
    pub fn new(
        id: ObjectId,
        owner: &str,
        attrs: BTreeMap<u64, Attribute>,
        body: Body,
        material: Option<&[u8]>,
        cdk: &ClusterDomainKey,
    ) -> Result<Object, Error> {
        let wrapped = match material {
            Some(m) => Some(KeyPolicy::of(id, &attrs, owner).wrap(cdk, m)?),
            None => None,
        };
        Ok(Object {
            id,
            attrs,
            owner: owner.to_owned(),
            body,
            wrapped,
        })
    }

    /// The policy this object's wrapped material is bound to.
    pub fn policy(&self) -> KeyPolicy {
        KeyPolicy::of(self.id, &self.attrs, &self.owner)
    }

    /// This object changed (`C_SetAttributeValue`: same id and owner, new attributes) or
    /// copied (`C_CopyObject`: a new id and owner too). The key material is rewrapped when the
    /// policy changes, so the stored object always loads with the attributes it is stored with;
    /// when it does not (a new label), the blob is kept as it is.
    ///
    /// # Errors
    /// `DeviceError` if the current blob does not unwrap (it always does for an object that
    /// was loaded or made here), or rewrapping fails.
    pub fn with_attributes(
        &self,
        id: ObjectId,
        owner: String,
        attrs: BTreeMap<u64, Attribute>,
        cdk: &ClusterDomainKey,
    ) -> Result<Object, Error> {
        let new_policy = KeyPolicy::of(id, &attrs, &owner);
        let wrapped = match &self.wrapped {
            None => None,
            Some(w) => {
                let old_policy = self.policy();
                if old_policy == new_policy {
                    Some(w.clone())
                } else {
                    let material = old_policy.unwrap(cdk, w)?;
                    Some(new_policy.wrap(cdk, &material)?)
                }
            }
        };
        Ok(Object {
            id,
            attrs,
            owner,
            body: self.body.clone(),
            wrapped,
        })
    }

    /// Rebuilds an object from its stored form: unwraps (with the policy of the stored
    /// attributes and owner) and parses the key once. Refuses v1 blobs: those go through
    /// [`migrate_stored`] first.
    ///
    /// # Errors
    /// `DeviceError` if the wrapped material does not open under the CDK for this id and
    /// policy (a bound attribute was changed, or the blob belongs to another object), or is
    /// in format v1.
    pub fn from_stored(
        id: ObjectId,
        stored: StoredObject,
        cdk: &ClusterDomainKey,
    ) -> Result<Object, Error> {
        let attrs: BTreeMap<u64, Attribute> = stored
            .attrs
            .into_iter()
            .map(|a| (a.type_code(), a))
            .collect();
        let body = match &stored.wrapped {
            Some(w) => {
                let material = KeyPolicy::of(id, &attrs, &stored.owner).unwrap(cdk, w)?;
                Body::Secret(Arc::new(crate::keys::parse_material(&material)?))
            }
            None => public_body(&attrs)?,
        };
        Ok(Object {
            id,
            attrs,
            owner: stored.owner,
            body,
            wrapped: stored.wrapped,
        })
    }

    /// The stored form.
    pub fn to_stored(&self) -> StoredObject {
        StoredObject {
            attrs: self.attrs.values().cloned().collect(),
            owner: self.owner.clone(),
            wrapped: self.wrapped.clone(),
        }
    }

    /// `CKA_CLASS`.
    pub fn class(&self) -> u64 {
        match self.attrs.get(&(ck::CKA_CLASS as u64)) {
            Some(Attribute::Class(c)) => *c,
            _ => ck::CKO_DATA as u64,
        }
    }

    /// `CKA_KEY_TYPE`, for keys.
    pub fn key_type(&self) -> Option<u64> {
        match self.attrs.get(&(ck::CKA_KEY_TYPE as u64)) {
            Some(Attribute::KeyType(k)) => Some(*k),
            _ => None,
        }
    }

    /// A boolean attribute, false when absent.
    pub fn flag(&self, code: ck::CK_ATTRIBUTE_TYPE) -> bool {
        matches!(self.attrs.get(&(code as u64)).map(|a| a.to_raw()), Some(v) if v.as_slice() == [1])
    }

    /// Whether this is a token (persistent) object.
    pub fn is_token(&self) -> bool {
        self.flag(ck::CKA_TOKEN)
    }

    /// Whether `mechanism` is allowed by `CKA_ALLOWED_MECHANISMS` (empty allows all).
    pub fn allows_mechanism(&self, mechanism: u64) -> bool {
        match self.attrs.get(&(ck::CKA_ALLOWED_MECHANISMS as u64)) {
            Some(Attribute::AllowedMechanisms(list)) => {
                list.is_empty() || list.contains(&mechanism)
            }
            _ => true,
        }
    }

    /// The summary the module caches with a handle.
    pub fn info(&self) -> ObjectInfo {
        let mut usage = 0;
        for (code, bit) in [
            (ck::CKA_SIGN, ObjectInfo::SIGN),
            (ck::CKA_VERIFY, ObjectInfo::VERIFY),
            (ck::CKA_ENCRYPT, ObjectInfo::ENCRYPT),
            (ck::CKA_DECRYPT, ObjectInfo::DECRYPT),
            (ck::CKA_WRAP, ObjectInfo::WRAP),
            (ck::CKA_UNWRAP, ObjectInfo::UNWRAP),
            (ck::CKA_DERIVE, ObjectInfo::DERIVE),
            (ck::CKA_TOKEN, ObjectInfo::TOKEN),
            (ck::CKA_PRIVATE, ObjectInfo::PRIVATE),
        ] {
            if self.flag(code) {
                usage |= bit;
            }
        }
        ObjectInfo {
            id: self.id,
            class: self.class(),
            key_type: self.key_type(),
            usage,
        }
    }

    /// Whether every attribute of `template` is present here with an equal value.
    pub fn matches(&self, template: &[Attribute]) -> bool {
        template
            .iter()
            .all(|t| self.attrs.get(&t.type_code()) == Some(t))
    }

    /// One attribute for `C_GetAttributeValue`, under the spec's rules for secrets.
    pub fn attribute(&self, code: u64) -> AttrOutcome {
        if let Some(a) = self.attrs.get(&code) {
            return AttrOutcome::Value(a.clone());
        }
        let Some(rule) = find_rule(code) else {
            return AttrOutcome::Invalid;
        };
        if !secret_part(rule, class_bit(self.class()))
            || rule.classes & class_bit(self.class()) == 0
            || rule.key_types & key_type_bit(self.key_type()) == 0
        {
            return AttrOutcome::Invalid;
        }
        if self.flag(ck::CKA_SENSITIVE) || !self.flag(ck::CKA_EXTRACTABLE) {
            return AttrOutcome::Sensitive;
        }
        match (&self.body, code) {
            (Body::Secret(k), c) if c == ck::CKA_VALUE as u64 => match k.value() {
                Some(v) => AttrOutcome::Value(Attribute::Value(SecretBytes::from_slice(&v))),
                None => AttrOutcome::Invalid,
            },
            (Body::Secret(k), c) => match k.rsa_components() {
                Some(rsa) => {
                    let part = |v: &[u8]| {
                        AttrOutcome::Value(
                            Attribute::from_raw(c, v)
                                .unwrap_or(Attribute::Value(SecretBytes::from_slice(v))),
                        )
                    };
                    match c {
                        c if c == ck::CKA_PRIVATE_EXPONENT as u64 => part(&rsa.private_exponent),
                        c if c == ck::CKA_PRIME_1 as u64 => part(&rsa.prime1),
                        c if c == ck::CKA_PRIME_2 as u64 => part(&rsa.prime2),
                        c if c == ck::CKA_EXPONENT_1 as u64 => part(&rsa.exponent1),
                        c if c == ck::CKA_EXPONENT_2 as u64 => part(&rsa.exponent2),
                        c if c == ck::CKA_COEFFICIENT as u64 => part(&rsa.coefficient),
                        _ => AttrOutcome::Invalid,
                    }
                }
                None => AttrOutcome::Invalid,
            },
            _ => AttrOutcome::Invalid,
        }
    }
}

fn public_body(attrs: &BTreeMap<u64, Attribute>) -> Result<Body, Error> {
    let class = attrs.get(&(ck::CKA_CLASS as u64));
    if class != Some(&Attribute::Class(ck::CKO_PUBLIC_KEY as u64)) {
        return Ok(Body::None);
    }
    match (
        attrs.get(&(ck::CKA_EC_POINT as u64)),
        attrs.get(&(ck::CKA_MODULUS as u64)),
        attrs.get(&(ck::CKA_PUBLIC_EXPONENT as u64)),
    ) {
        (Some(Attribute::EcPoint(p)), _, _) => {
            let params = match attrs.get(&(ck::CKA_EC_PARAMS as u64)) {
                Some(Attribute::EcParams(params)) => params.as_slice(),
                // Public keys stored by the first release were P-256 and had no other kind.
                _ => crate::der::P256_OID,
            };
            Ok(Body::Public(Arc::new(
                crate::keys::ec_public_from_attributes(params, p)?,
            )))
        }
        (_, Some(Attribute::Modulus(n)), Some(Attribute::PublicExponent(e))) => Ok(Body::Public(
            Arc::new(crate::keys::rsa_public_from_components(n, e)?),
        )),
        _ => Ok(Body::None),
    }
}

#[cfg(test)]
mod policy_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_sorted_and_unique() {
        assert!(RULES.windows(2).all(|w| w[0].code < w[1].code));
    }

    proptest::proptest! {
        /// Random templates (any known attribute type, any bytes that parse) against every
        /// class: a merged map or a template error naming the attribute; never a panic.
        #[test]
        fn template_processing_never_panics(
            raw in proptest::collection::vec(
                (0u64..0x200, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)),
                0..12,
            ),
            class_pick in 0usize..5,
        ) {
            let template: Vec<Attribute> =
                raw.iter().filter_map(|(code, v)| Attribute::from_raw(*code, v).ok()).collect();
            let classes = [
                (ck::CKO_DATA, None),
                (ck::CKO_CERTIFICATE, None),
                (ck::CKO_PUBLIC_KEY, Some(ck::CKK_EC)),
                (ck::CKO_PRIVATE_KEY, Some(ck::CKK_RSA)),
                (ck::CKO_SECRET_KEY, Some(ck::CKK_AES)),
            ];
            let (class, key_type) = classes[class_pick];
            let defaults = match key_type {
                Some(k) => key_defaults(class as u64, k as u64),
                None => storage_defaults(class as u64),
            };
            for origin in [Origin::Created, Origin::Generated(ck::CKM_AES_KEY_GEN as u64)] {
                match merge_template(class as u64, key_type.map(|k| k as u64), &template, defaults.clone(), origin) {
                    Ok(attrs) => {
                        let obj = Object { id: ObjectId(7), attrs, owner: "u".into(), body: Body::None, wrapped: None };
                        for copy in [false, true] {
                            if let Err(e) = apply_changes(&obj, &template, false, copy) {
                                proptest::prop_assert!(matches!(
                                    e.code,
                                    ErrorCode::AttributeReadOnly | ErrorCode::AttributeTypeInvalid
                                ), "{e}");
                            }
                        }
                    }
                    Err(e) => {
                        proptest::prop_assert!(matches!(
                            e.code,
                            ErrorCode::TemplateInconsistent | ErrorCode::AttributeReadOnly
                        ), "{e}");
                        proptest::prop_assert!(e.message.contains("CKA_"), "names the attribute: {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn token_set_attributes_are_read_only() {
        let err = merge_template(
            ck::CKO_SECRET_KEY as u64,
            Some(ck::CKK_AES as u64),
            &[Attribute::Local(true)],
            Vec::new(),
            Origin::Generated(ck::CKM_AES_KEY_GEN as u64),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::AttributeReadOnly);
        assert!(err.message.contains("CKA_LOCAL"), "{}", err.message);
    }

    fn secret_key_object() -> Object {
        let class = ck::CKO_SECRET_KEY as u64;
        let key_type = ck::CKK_AES as u64;
        let mut attrs = merge_template(
            class,
            Some(key_type),
            &[Attribute::Sensitive(false), Attribute::Extractable(true)],
            key_defaults(class, key_type),
            Origin::Generated(ck::CKM_AES_KEY_GEN as u64),
        )
        .unwrap();
        finish(
            &mut attrs,
            ObjectId(1),
            Origin::Generated(ck::CKM_AES_KEY_GEN as u64),
        );
        Object {
            id: ObjectId(1),
            attrs,
            owner: "alice".into(),
            body: Body::None,
            wrapped: None,
        }
    }

    #[test]
    fn set_attribute_rules_follow_the_spec() {
        let obj = secret_key_object();
        let code = |t: &[Attribute]| {
            apply_changes(&obj, t, false, false)
                .map(|_| ())
                .map_err(|e| e.code)
        };
        assert_eq!(code(&[Attribute::Label(b"new".to_vec())]), Ok(()));
        assert_eq!(code(&[Attribute::Sensitive(true)]), Ok(()));
        assert_eq!(code(&[Attribute::Extractable(false)]), Ok(()));
        assert_eq!(code(&[Attribute::Encrypt(false)]), Ok(()));
        // Same value is always fine; read-only and one-way rules otherwise.
        assert_eq!(code(&[Attribute::Local(true)]), Ok(()));
        assert_eq!(
            code(&[Attribute::Local(false)]),
            Err(ErrorCode::AttributeReadOnly)
        );
        assert_eq!(
            code(&[Attribute::ValueLen(16)]),
            Err(ErrorCode::AttributeReadOnly)
        );
        assert_eq!(code(&[Attribute::Token(false)]), Ok(()));
        assert_eq!(
            code(&[Attribute::Token(true)]),
            Err(ErrorCode::AttributeReadOnly)
        );
        assert_eq!(
            code(&[Attribute::Trusted(true)]),
            Err(ErrorCode::AttributeReadOnly)
        );
        assert_eq!(
            code(&[Attribute::Modulus(vec![1])]),
            Err(ErrorCode::AttributeTypeInvalid)
        );
        assert!(apply_changes(&obj, &[Attribute::Trusted(true)], true, false).is_ok());
        // Copy may change the storage attributes.
        assert!(
            apply_changes(
                &obj,
                &[Attribute::Token(true), Attribute::Modifiable(false)],
                false,
                true
            )
            .is_ok()
        );
        assert_eq!(
            apply_changes(
                &obj,
                &[Attribute::Modifiable(false), Attribute::Copyable(true)],
                false,
                true
            )
            .map(|_| ())
            .map_err(|e| e.code),
            Ok(())
        );

        let sealed = Object {
            attrs: apply_changes(&obj, &[Attribute::Sensitive(true)], false, false).unwrap(),
            ..obj
        };
        let code = |t: &[Attribute]| {
            apply_changes(&sealed, t, false, false)
                .map(|_| ())
                .map_err(|e| e.code)
        };
        assert_eq!(
            code(&[Attribute::Sensitive(false)]),
            Err(ErrorCode::AttributeReadOnly)
        );
    }

    #[test]
    fn attributes_of_other_classes_are_inconsistent() {
        let err = merge_template(
            ck::CKO_SECRET_KEY as u64,
            Some(ck::CKK_AES as u64),
            &[Attribute::ModulusBits(2048)],
            Vec::new(),
            Origin::Generated(ck::CKM_AES_KEY_GEN as u64),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::TemplateInconsistent);
        assert!(err.message.contains("CKA_MODULUS_BITS"));
    }
}
