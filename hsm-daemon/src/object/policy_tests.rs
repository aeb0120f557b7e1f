//! The key policy a CDK wrap is bound to: loading, tampering, migration and rewrapping.

use super::*;
use crate::seal::{GENERATION_1, KEY_LEN};

fn cdk() -> ClusterDomainKey {
    ClusterDomainKey::from_bytes(Zeroizing::new([3; KEY_LEN])).unwrap()
}

/// A token AES key, extractable and not sensitive (so policy changes are possible).
fn aes_key(id: u128, cdk: &ClusterDomainKey) -> Object {
    let class = ck::CKO_SECRET_KEY as u64;
    let key_type = ck::CKK_AES as u64;
    let origin = Origin::Generated(ck::CKM_AES_KEY_GEN as u64);
    let mut attrs = merge_template(
        class,
        Some(key_type),
        &[
            Attribute::Token(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Label(b"k".to_vec()),
        ],
        key_defaults(class, key_type),
        origin,
    )
    .unwrap();
    let (key, material) = crate::keys::generate_secret(key_type, 32).unwrap();
    secret_attributes(&mut attrs, &key);
    finish(&mut attrs, ObjectId(id), origin);
    Object::new(
        ObjectId(id),
        "alice",
        attrs,
        Body::Secret(Arc::new(key)),
        Some(&material),
        cdk,
    )
    .unwrap()
}

fn value(obj: &Object) -> Vec<u8> {
    match &obj.body {
        Body::Secret(k) => k.value().unwrap().to_vec(),
        _ => panic!("not a secret key"),
    }
}

fn with_attr(mut stored: StoredObject, a: Attribute) -> StoredObject {
    stored.attrs.retain(|x| x.type_code() != a.type_code());
    stored.attrs.push(a);
    stored
}

fn refused(result: Result<Object, Error>) -> String {
    let err = result.expect_err("must not load");
    assert_eq!(err.code, ErrorCode::DeviceError, "{err}");
    err.message
}

const TAMPERED: &str = "does not unwrap under the cluster domain key (tampered or foreign)";

#[test]
fn policy_flags_are_sorted_and_known_booleans() {
    assert!(POLICY_FLAGS.windows(2).all(|w| w[0] < w[1]));
    for code in POLICY_FLAGS {
        assert!(find_rule(code as u64).is_some(), "{}", name(code as u64));
        assert_eq!(
            Attribute::kind_of(code as u64),
            Some(hsm_proto::attr::AttrKind::Bool)
        );
    }
}

#[test]
fn a_key_round_trips_through_its_stored_form() {
    let cdk = cdk();
    let obj = aes_key(1, &cdk);
    let loaded = Object::from_stored(obj.id, obj.to_stored(), &cdk).unwrap();
    assert_eq!(value(&loaded), value(&obj));
    assert_eq!(loaded.attrs, obj.attrs);
    assert_eq!(loaded.policy(), obj.policy());
    assert_eq!(
        WrapFormat::of(obj.wrapped.as_ref().unwrap()),
        Some(WrapFormat::V2 {
            generation: GENERATION_1
        })
    );
}

#[test]
fn an_edited_policy_attribute_makes_the_key_refuse_to_load() {
    let cdk = cdk();
    let obj = aes_key(1, &cdk);
    let edits = [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::AlwaysSensitive(true),
        Attribute::NeverExtractable(true),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Derive(true),
        Attribute::Private(false),
        Attribute::Token(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Destroyable(false),
        Attribute::Trusted(true),
        Attribute::WrapWithTrusted(true),
        Attribute::AlwaysAuthenticate(true),
        Attribute::Local(false),
        Attribute::AllowedMechanisms(vec![ck::CKM_AES_GCM as u64]),
        Attribute::EndDate(b"20991231".to_vec()),
        Attribute::StartDate(b"20000101".to_vec()),
        Attribute::Class(ck::CKO_PRIVATE_KEY as u64),
        Attribute::KeyType(ck::CKK_GENERIC_SECRET as u64),
    ];
    for a in edits {
        let msg = refused(Object::from_stored(
            obj.id,
            with_attr(obj.to_stored(), a.clone()),
            &cdk,
        ));
        assert!(msg.contains(TAMPERED), "{a:?}: {msg}");
        assert!(msg.contains(&obj.id.to_string()), "names the key: {msg}");
    }
    // Dropping a policy attribute is a change too (absent is not FALSE).
    let mut dropped = obj.to_stored();
    dropped
        .attrs
        .retain(|a| a.type_code() != ck::CKA_SENSITIVE as u64);
    assert!(refused(Object::from_stored(obj.id, dropped, &cdk)).contains(TAMPERED));
    // So is the owner.
    let mut stolen = obj.to_stored();
    stolen.owner = "mallory".into();
    assert!(refused(Object::from_stored(obj.id, stolen, &cdk)).contains(TAMPERED));
    // An attribute outside the policy is not.
    let relabelled = with_attr(obj.to_stored(), Attribute::Label(b"other".to_vec()));
    assert!(Object::from_stored(obj.id, relabelled, &cdk).is_ok());
}

#[test]
fn a_blob_moved_to_another_object_does_not_load() {
    let cdk = cdk();
    let a = aes_key(1, &cdk);
    let b = aes_key(2, &cdk);
    // A's whole record under B's id.
    assert!(refused(Object::from_stored(b.id, a.to_stored(), &cdk)).contains(TAMPERED));
    // A's blob in B's record.
    let mut swapped = b.to_stored();
    swapped.wrapped = a.wrapped.clone();
    assert!(refused(Object::from_stored(b.id, swapped, &cdk)).contains(TAMPERED));
}

#[test]
fn another_generation_or_key_does_not_load() {
    let cdk = cdk();
    let obj = aes_key(1, &cdk);
    let gen2 = ClusterDomainKey::with_generation(Zeroizing::new([3; KEY_LEN]), 2).unwrap();
    assert!(refused(Object::from_stored(obj.id, obj.to_stored(), &gen2)).contains(TAMPERED));
    let foreign = ClusterDomainKey::from_bytes(Zeroizing::new([4; KEY_LEN])).unwrap();
    assert!(refused(Object::from_stored(obj.id, obj.to_stored(), &foreign)).contains(TAMPERED));
}

#[test]
fn v1_records_are_refused_until_migrated() {
    let cdk = cdk();
    let obj = aes_key(1, &cdk);
    let material = obj
        .policy()
        .unwrap(&cdk, obj.wrapped.as_ref().unwrap())
        .unwrap();
    let mut v1 = obj.to_stored();
    v1.wrapped = Some(cdk.wrap_v1(&obj.id.0.to_be_bytes(), &material).unwrap());

    let msg = refused(Object::from_stored(obj.id, v1.clone(), &cdk));
    assert!(msg.contains("format v1"), "{msg}");

    let migrated = migrate_stored(obj.id, v1.clone(), &cdk)
        .unwrap()
        .expect("a v1 record is rewrapped");
    assert_eq!(migrated.attrs, v1.attrs);
    assert_eq!(migrated.owner, v1.owner);
    let loaded = Object::from_stored(obj.id, migrated.clone(), &cdk).unwrap();
    assert_eq!(value(&loaded), value(&obj));
    // Bound from now on.
    let loosened = with_attr(migrated.clone(), Attribute::Extractable(false));
    assert!(refused(Object::from_stored(obj.id, loosened, &cdk)).contains(TAMPERED));

    // Nothing left to do for v2 records or objects without material.
    assert!(migrate_stored(obj.id, migrated, &cdk).unwrap().is_none());
    assert!(
        migrate_stored(obj.id, obj.to_stored(), &cdk)
            .unwrap()
            .is_none()
    );
    let public = StoredObject {
        wrapped: None,
        ..obj.to_stored()
    };
    assert!(migrate_stored(obj.id, public, &cdk).unwrap().is_none());

    // A v1 blob of another object, or under another CDK, does not migrate.
    assert!(migrate_stored(ObjectId(2), v1.clone(), &cdk).is_err());
    let foreign = ClusterDomainKey::from_bytes(Zeroizing::new([4; KEY_LEN])).unwrap();
    assert!(migrate_stored(obj.id, v1, &foreign).is_err());
    let garbage = StoredObject {
        wrapped: Some(vec![9; 40]),
        ..obj.to_stored()
    };
    assert!(migrate_stored(obj.id, garbage, &cdk).is_err());
}

#[test]
fn a_policy_change_is_rewrapped_and_loads() {
    let cdk = cdk();
    let obj = aes_key(1, &cdk);
    let template = [Attribute::Sensitive(true), Attribute::Extractable(false)];
    let attrs = apply_changes(&obj, &template, false, false).unwrap();

    // Keeping the old blob with the new attributes would not load.
    let stale = Object {
        attrs: attrs.clone(),
        body: obj.body.clone(),
        wrapped: obj.wrapped.clone(),
        owner: obj.owner.clone(),
        id: obj.id,
    };
    assert!(refused(Object::from_stored(obj.id, stale.to_stored(), &cdk)).contains(TAMPERED));

    let updated = obj
        .with_attributes(obj.id, obj.owner.clone(), attrs, &cdk)
        .unwrap();
    assert_ne!(updated.wrapped, obj.wrapped);
    let loaded = Object::from_stored(obj.id, updated.to_stored(), &cdk).unwrap();
    assert!(loaded.flag(ck::CKA_SENSITIVE) && !loaded.flag(ck::CKA_EXTRACTABLE));
    assert_eq!(value(&loaded), value(&obj));
    // The old attributes no longer load with the new blob: no rolling the change back.
    let rolled_back = StoredObject {
        wrapped: updated.wrapped.clone(),
        ..obj.to_stored()
    };
    assert!(refused(Object::from_stored(obj.id, rolled_back, &cdk)).contains(TAMPERED));
}

#[test]
fn a_label_change_keeps_the_blob() {
    let cdk = cdk();
    let obj = aes_key(1, &cdk);
    let attrs = apply_changes(&obj, &[Attribute::Label(b"new".to_vec())], false, false).unwrap();
    let updated = obj
        .with_attributes(obj.id, obj.owner.clone(), attrs, &cdk)
        .unwrap();
    assert_eq!(updated.wrapped, obj.wrapped);
    assert!(Object::from_stored(obj.id, updated.to_stored(), &cdk).is_ok());
}

#[test]
fn a_copy_is_wrapped_for_its_own_id_owner_and_attributes() {
    let cdk = cdk();
    let obj = aes_key(1, &cdk);
    let mut attrs = apply_changes(&obj, &[Attribute::Modifiable(false)], false, true).unwrap();
    let id = ObjectId(2);
    attrs.insert(
        ck::CKA_UNIQUE_ID as u64,
        Attribute::UniqueId(id.to_string().into_bytes()),
    );
    let copy = obj.with_attributes(id, "bob".into(), attrs, &cdk).unwrap();
    let loaded = Object::from_stored(id, copy.to_stored(), &cdk).unwrap();
    assert_eq!(loaded.owner, "bob");
    assert_eq!(value(&loaded), value(&obj));
    // The original still loads; the copy's blob is not the original's.
    assert!(Object::from_stored(obj.id, obj.to_stored(), &cdk).is_ok());
    let mut swapped = obj.to_stored();
    swapped.wrapped = copy.wrapped.clone();
    assert!(refused(Object::from_stored(obj.id, swapped, &cdk)).contains(TAMPERED));
}

#[test]
fn the_encoding_is_canonical() {
    let mut attrs = BTreeMap::new();
    attrs.insert(ck::CKA_CLASS as u64, Attribute::Class(4));
    attrs.insert(ck::CKA_SENSITIVE as u64, Attribute::Sensitive(true));
    attrs.insert(ck::CKA_EXTRACTABLE as u64, Attribute::Extractable(false));
    attrs.insert(
        ck::CKA_ALLOWED_MECHANISMS as u64,
        Attribute::AllowedMechanisms(vec![0x1087]),
    );
    attrs.insert(ck::CKA_LABEL as u64, Attribute::Label(b"ignored".to_vec()));
    let policy = KeyPolicy::of(ObjectId(0x0102), &attrs, "ab");

    let mut want = Vec::new();
    want.extend_from_slice(&0x0102u128.to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']);
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 4]); // class
    want.push(0); // no key type
    let mut flags = [0u8; POLICY_FLAGS.len()];
    flags[3] = 2; // CKA_SENSITIVE TRUE
    flags[13] = 1; // CKA_EXTRACTABLE FALSE
    want.extend_from_slice(&flags);
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 1]); // one allowed mechanism
    want.extend_from_slice(&0x1087u64.to_be_bytes());
    want.extend_from_slice(&[0, 0]); // no dates
    assert_eq!(policy.encode(), want);

    // Same attributes inserted in another order: same bytes.
    let reordered: BTreeMap<u64, Attribute> = attrs.clone().into_iter().rev().collect();
    assert_eq!(
        KeyPolicy::of(ObjectId(0x0102), &reordered, "ab").encode(),
        want
    );
    // Absent, FALSE and empty are told apart.
    let mut empty_list = attrs.clone();
    empty_list.insert(
        ck::CKA_ALLOWED_MECHANISMS as u64,
        Attribute::AllowedMechanisms(Vec::new()),
    );
    let mut no_list = attrs.clone();
    no_list.remove(&(ck::CKA_ALLOWED_MECHANISMS as u64));
    let a = KeyPolicy::of(ObjectId(1), &empty_list, "ab").encode();
    let b = KeyPolicy::of(ObjectId(1), &no_list, "ab").encode();
    assert_ne!(a, b);
    // Owner and date are length-prefixed: no shifting bytes between fields.
    let mut dated = attrs.clone();
    dated.insert(
        ck::CKA_START_DATE as u64,
        Attribute::StartDate(b"b".to_vec()),
    );
    assert_ne!(
        KeyPolicy::of(ObjectId(1), &dated, "a").encode(),
        KeyPolicy::of(ObjectId(1), &attrs, "ab").encode()
    );
}
