//! The CDK wrap formats: v2 binds policy and generation; v1 opens only for migration.

use super::*;

fn cdk(generation: u32) -> ClusterDomainKey {
    ClusterDomainKey::with_generation(Zeroizing::new([9; KEY_LEN]), generation).unwrap()
}

#[test]
fn v2_round_trips_and_names_its_version_and_generation() {
    let k = cdk(GENERATION_1);
    let blob = k.wrap(b"policy", b"material").unwrap();
    assert_eq!(&k.unwrap(b"policy", &blob).unwrap()[..], b"material");
    assert_eq!(blob[0], 2);
    assert_eq!(&blob[1..5], &1u32.to_be_bytes());
    assert_eq!(blob.len(), 1 + 4 + NONCE_LEN + b"material".len() + TAG_LEN);
    assert_eq!(
        WrapFormat::of(&blob),
        Some(WrapFormat::V2 { generation: 1 })
    );
    assert!(!blob.windows(8).any(|w| w == b"material"));
}

#[test]
fn v2_is_bound_to_the_policy() {
    let k = cdk(GENERATION_1);
    let blob = k.wrap(b"policy", b"material").unwrap();
    assert_eq!(k.unwrap(b"policz", &blob), Err(OpenError));
    assert_eq!(k.unwrap(b"", &blob), Err(OpenError));
    let mut tampered = blob.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(k.unwrap(b"policy", &tampered), Err(OpenError));
    assert_eq!(k.unwrap(b"policy", &blob[..blob.len() - 1]), Err(OpenError));
    assert_eq!(k.unwrap(b"policy", &[]), Err(OpenError));
}

#[test]
fn v2_is_bound_to_the_generation() {
    let blob = cdk(1).wrap(b"policy", b"material").unwrap();
    // Same key bytes, another generation: refused.
    assert_eq!(cdk(2).unwrap(b"policy", &blob), Err(OpenError));
    // Rewriting the header's generation does not help: it is in the associated data too.
    let mut relabelled = blob.clone();
    relabelled[1..5].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(cdk(2).unwrap(b"policy", &relabelled), Err(OpenError));
    assert_eq!(cdk(1).unwrap(b"policy", &relabelled), Err(OpenError));
    // Another key of the same generation: refused.
    let other = ClusterDomainKey::from_bytes(Zeroizing::new([8; KEY_LEN])).unwrap();
    assert_eq!(other.generation(), GENERATION_1);
    assert_eq!(other.unwrap(b"policy", &blob), Err(OpenError));
}

#[test]
fn v1_opens_only_through_open_v1() {
    let k = cdk(GENERATION_1);
    let id = 7u128.to_be_bytes();
    let v1 = k.wrap_v1(&id, b"material").unwrap();
    assert_eq!(WrapFormat::of(&v1), Some(WrapFormat::V1));
    assert_eq!(&k.open_v1(&id, &v1).unwrap()[..], b"material");
    assert_eq!(k.open_v1(&8u128.to_be_bytes(), &v1), Err(OpenError));
    // A v1 blob is no v2 blob, whatever policy is tried (the id included).
    assert_eq!(k.unwrap(&id, &v1), Err(OpenError));
    // And a v2 blob does not open as v1.
    let v2 = k.wrap(&id, b"material").unwrap();
    assert_eq!(k.open_v1(&id, &v2), Err(OpenError));
}

#[test]
fn wrap_format_of_refuses_unknown_and_short_blobs() {
    assert_eq!(WrapFormat::of(&[]), None);
    assert_eq!(WrapFormat::of(&[2, 0, 0, 0, 1]), None);
    assert_eq!(WrapFormat::of(&[1; 20]), None);
    assert_eq!(WrapFormat::of(&[3; 64]), None);
}

#[test]
fn debug_shows_the_generation_and_no_key() {
    let k = cdk(5);
    let shown = format!("{k:?}");
    assert!(shown.contains("generation 5"), "{shown}");
    assert!(!shown.contains("9, 9"), "{shown}");
}
