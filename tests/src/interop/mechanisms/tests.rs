use super::*;

#[test]
fn parses_pkcs11_tool_listing() {
    let m = Mechanisms::parse(
        "Using slot 0 with a present token (0x0)\nSupported mechanisms:\n  \
         RSA-PKCS, keySize={2048,4096}, sign, verify\n  \
         ECDSA-KEY-PAIR-GEN, keySize={256,384}, generate_key_pair, EC F_P, EC OID\n  \
         mechtype-0x210A, keySize={16,32}, wrap, unwrap\n  SHA256, digest\n",
    );
    assert_eq!(m.len(), 4);
    assert!(m.has(Mech::RSA_PKCS, "sign"));
    assert!(!m.has(Mech::RSA_PKCS, "decrypt"));
    assert!(m.has_key_size(Mech::EC_KEY_PAIR_GEN, 384));
    assert!(!m.has_key_size(Mech::EC_KEY_PAIR_GEN, 521));
    assert!(m.has(Mech::AES_KEY_WRAP_PAD, "unwrap"));
    assert!(m.has(Mech::SHA256, ""));
    assert_eq!(
        m.missing(&[(Mech::RSA_PKCS_PSS, "sign"), (Mech::SHA256, "digest")]),
        vec!["CKM_RSA_PKCS_PSS with CKF_SIGN".to_owned()]
    );
}
