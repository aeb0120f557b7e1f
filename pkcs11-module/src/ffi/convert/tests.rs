//! Table tests for the boundary conversions.

use super::*;
use hsm_proto::SecretBytes;

fn attr(type_: ck::CK_ATTRIBUTE_TYPE, value: &[u8]) -> ck::CK_ATTRIBUTE {
    ck::CK_ATTRIBUTE {
        type_,
        pValue: value.as_ptr() as *mut std::ffi::c_void,
        ulValueLen: value.len() as ck::CK_ULONG,
    }
}

fn null_attr(type_: ck::CK_ATTRIBUTE_TYPE, len: ck::CK_ULONG) -> ck::CK_ATTRIBUTE {
    ck::CK_ATTRIBUTE {
        type_,
        pValue: std::ptr::null_mut(),
        ulValueLen: len,
    }
}

fn parse(raw: &[ck::CK_ATTRIBUTE]) -> Result<Vec<Attribute>> {
    // SAFETY: every attribute points into live test data with its true length.
    unsafe { template(raw.as_ptr(), raw.len() as ck::CK_ULONG) }
}

fn code(r: Result<impl std::fmt::Debug>) -> ck::CK_RV {
    r.map(|_| ()).map_or_else(|e| e.ckr(), |()| ck::CKR_OK)
}

#[test]
fn templates_parse_typed_values() {
    let class = (ck::CKO_PRIVATE_KEY as ck::CK_ULONG).to_ne_bytes();
    let yes = [ck::CK_TRUE];
    let raw = [
        attr(ck::CKA_CLASS, &class),
        attr(ck::CKA_TOKEN, &yes),
        attr(ck::CKA_LABEL, b"k1"),
        attr(ck::CKA_VALUE, &[9, 9]),
        null_attr(ck::CKA_ID, 0),
    ];
    let parsed = parse(&raw).unwrap();
    assert_eq!(
        parsed,
        vec![
            Attribute::Class(ck::CKO_PRIVATE_KEY as u64),
            Attribute::Token(true),
            Attribute::Label(b"k1".to_vec()),
            Attribute::Value(SecretBytes::from_slice(&[9, 9])),
            Attribute::Id(Vec::new()),
        ]
    );
}

#[test]
fn bad_templates_get_the_spec_codes() {
    let cases: &[(&[ck::CK_ATTRIBUTE], ck::CK_RV)] = &[
        (&[null_attr(ck::CKA_LABEL, 4)], ck::CKR_ARGUMENTS_BAD),
        (
            &[attr(ck::CKA_TOKEN, &[1, 0])],
            ck::CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            &[attr(ck::CKA_CLASS, &[1, 0, 0])],
            ck::CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (&[attr(0x8000_1234, &[1])], ck::CKR_ATTRIBUTE_TYPE_INVALID),
    ];
    for (raw, expected) in cases {
        assert_eq!(code(parse(raw)), *expected, "{raw:?}");
    }
    // SAFETY: a NULL array with a count is refused before any read.
    let r = unsafe { template(std::ptr::null(), 2) };
    assert_eq!(code(r), ck::CKR_ARGUMENTS_BAD);
    // SAFETY: a NULL array with count 0 is the empty template.
    let r = unsafe { template(std::ptr::null(), 0) };
    assert!(r.unwrap().is_empty());
}

#[test]
fn unknown_types_in_a_search_match_nothing() {
    let raw = [attr(0x8000_1234, &[1])];
    // SAFETY: points into live test data.
    let r = unsafe { search_template(raw.as_ptr(), 1) }.unwrap();
    assert!(r.is_none());
    let raw = [attr(ck::CKA_TOKEN, &[1, 1])];
    // SAFETY: as above.
    let r = unsafe { search_template(raw.as_ptr(), 1) };
    assert_eq!(code(r), ck::CKR_ATTRIBUTE_VALUE_INVALID);
}

#[test]
fn get_attribute_value_fills_partially() {
    let mut label = [0u8; 2];
    let mut id = [0u8; 16];
    let mut raw = [
        // Big enough.
        ck::CK_ATTRIBUTE {
            type_: ck::CKA_ID,
            pValue: id.as_mut_ptr() as *mut std::ffi::c_void,
            ulValueLen: 16,
        },
        // Length query.
        null_attr(ck::CKA_MODULUS, 0),
        // Too small.
        ck::CK_ATTRIBUTE {
            type_: ck::CKA_LABEL,
            pValue: label.as_mut_ptr() as *mut std::ffi::c_void,
            ulValueLen: 2,
        },
        null_attr(ck::CKA_VALUE, 0),
        null_attr(0x8000_0001, 0),
    ];
    let outcomes = [
        AttrOutcome::Value(Attribute::Id(vec![1, 2, 3])),
        AttrOutcome::Value(Attribute::Modulus(vec![0; 256])),
        AttrOutcome::Value(Attribute::Label(b"long label".to_vec())),
        AttrOutcome::Sensitive,
        AttrOutcome::Invalid,
    ];
    // SAFETY: every non-NULL pValue points to a live local buffer of ulValueLen bytes.
    let r = unsafe { fill_template(raw.as_mut_ptr(), raw.len() as ck::CK_ULONG, &outcomes) };
    assert_eq!(code(r), ck::CKR_BUFFER_TOO_SMALL);
    assert_eq!(raw[0].ulValueLen, 3);
    assert_eq!(&id[..3], &[1, 2, 3]);
    assert_eq!(raw[1].ulValueLen, 256);
    assert_eq!(raw[2].ulValueLen, UNAVAILABLE);
    assert_eq!(raw[3].ulValueLen, UNAVAILABLE);
    assert_eq!(raw[4].ulValueLen, UNAVAILABLE);

    let mut raw = [null_attr(ck::CKA_VALUE, 0), null_attr(ck::CKA_ID, 0)];
    let outcomes = [
        AttrOutcome::Sensitive,
        AttrOutcome::Value(Attribute::Id(vec![1])),
    ];
    // SAFETY: NULL pValues are never written.
    let r = unsafe { fill_template(raw.as_mut_ptr(), 2, &outcomes) };
    assert_eq!(code(r), ck::CKR_ATTRIBUTE_SENSITIVE);
    assert_eq!(raw[1].ulValueLen, 1);
}

fn parse_mechanism(m: &ck::CK_MECHANISM) -> Result<Mechanism> {
    // SAFETY: `m` and its parameter are live test data of the stated length.
    unsafe { mechanism(m) }
}

#[test]
fn gcm_parameters() {
    let iv = [7u8; 12];
    let aad = [1u8, 2, 3];
    let gcm = ck::CK_GCM_PARAMS {
        pIv: iv.as_ptr() as *mut u8,
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: aad.as_ptr() as *mut u8,
        ulAADLen: 3,
        ulTagBits: 128,
    };
    let size = size_of::<ck::CK_GCM_PARAMS>();
    let m = parse_mechanism(&raw_mechanism(ck::CKM_AES_GCM, Some(&gcm), size)).unwrap();
    assert_eq!(
        m.params,
        MechanismParams::Gcm {
            iv: iv.to_vec(),
            aad: aad.to_vec(),
            tag_bits: 128
        }
    );
    // The layout without ulIvBits.
    let short = GcmParamsNoIvBits {
        p_iv: iv.as_ptr() as *mut u8,
        ul_iv_len: 12,
        p_aad: std::ptr::null_mut(),
        ul_aad_len: 0,
        ul_tag_bits: 128,
    };
    let m = parse_mechanism(&raw_mechanism(
        ck::CKM_AES_GCM,
        Some(&short),
        size_of::<GcmParamsNoIvBits>(),
    ))
    .unwrap();
    assert!(matches!(m.params, MechanismParams::Gcm { ref aad, .. } if aad.is_empty()));

    let bad: &[ck::CK_MECHANISM] = &[
        raw_mechanism::<u8>(ck::CKM_AES_GCM, None, 0),
        raw_mechanism(ck::CKM_AES_GCM, Some(&gcm), size - 1),
        raw_mechanism(ck::CKM_AES_GCM, Some(&gcm), size + 8),
    ];
    for m in bad {
        assert_eq!(code(parse_mechanism(m)), ck::CKR_MECHANISM_PARAM_INVALID);
    }
    // NULL IV with a length.
    let null_iv = ck::CK_GCM_PARAMS {
        pIv: std::ptr::null_mut(),
        ..gcm
    };
    let m = raw_mechanism(ck::CKM_AES_GCM, Some(&null_iv), size);
    assert_eq!(code(parse_mechanism(&m)), ck::CKR_MECHANISM_PARAM_INVALID);
}

#[test]
fn pss_parameters() {
    let pss = ck::CK_RSA_PKCS_PSS_PARAMS {
        hashAlg: ck::CKM_SHA256,
        mgf: ck::CKG_MGF1_SHA256,
        sLen: 32,
    };
    let size = size_of::<ck::CK_RSA_PKCS_PSS_PARAMS>();
    let m = parse_mechanism(&raw_mechanism(
        ck::CKM_SHA256_RSA_PKCS_PSS,
        Some(&pss),
        size,
    ));
    assert_eq!(
        m.unwrap().params,
        MechanismParams::Pss {
            hash: ck::CKM_SHA256 as u64,
            mgf: ck::CKG_MGF1_SHA256 as u64,
            salt_len: 32
        }
    );
    let bad: &[ck::CK_MECHANISM] = &[
        raw_mechanism::<u8>(ck::CKM_SHA256_RSA_PKCS_PSS, None, 0),
        raw_mechanism(ck::CKM_SHA256_RSA_PKCS_PSS, Some(&pss), size - 8),
    ];
    for m in bad {
        assert_eq!(code(parse_mechanism(m)), ck::CKR_MECHANISM_PARAM_INVALID);
    }
}

#[test]
fn parameterless_mechanisms() {
    let m = parse_mechanism(&raw_mechanism::<u8>(ck::CKM_ECDSA, None, 0)).unwrap();
    assert_eq!(m, Mechanism::plain(ck::CKM_ECDSA as u64));
    // A non-NULL pointer with length 0 is "no parameter" too (some applications do this).
    let x = 0u8;
    let m = parse_mechanism(&raw_mechanism(ck::CKM_ECDSA, Some(&x), 0)).unwrap();
    assert_eq!(m.params, MechanismParams::None);
    // A parameter where the spec defines none is passed on; the token refuses it.
    let m = parse_mechanism(&raw_mechanism(ck::CKM_ECDSA, Some(&x), 1)).unwrap();
    assert_eq!(m.params, MechanismParams::Bytes(vec![0]));
    // Unknown mechanisms are passed on without reading the parameter (the token refuses).
    let m = parse_mechanism(&raw_mechanism(ck::CKM_DES_CBC, Some(&x), 1000)).unwrap();
    assert_eq!(m, Mechanism::plain(ck::CKM_DES_CBC as u64));
    // SAFETY: NULL is refused before any read.
    let r = unsafe { mechanism(std::ptr::null()) };
    assert_eq!(code(r), ck::CKR_ARGUMENTS_BAD);
}
