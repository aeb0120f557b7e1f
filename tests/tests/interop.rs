//! Independent verification: what the HSM signs verifies with the `p256` and `rsa` crates
//! using the public key read through the module, and what those crates sign verifies through
//! `C_Verify` after importing their public key with `C_CreateObject`.

use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use hsm_tests::keys::{
    attr_bytes, ec_pair, ec_public_import, rsa_pair, rsa_public_import, sha256, sha256_digest_info,
    unwrap_ec_point,
};
use hsm_tests::{assert_ckr, isolated};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rsa::rand_core::OsRng;
use rsa::sha2::Sha256;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};

fn pss() -> Mechanism<'static> {
    Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    })
}

#[test]
fn hsm_signatures_verify_with_p256_and_rsa_crates() {
    isolated(
        "hsm_signatures_verify_with_p256_and_rsa_crates",
        |_cluster, token| {
            let s = token.user_session();
            let msg = b"signed inside the HSM";
            let digest = sha256(msg);

            // ECDSA P-256: the public key from CKA_EC_POINT (DER OCTET STRING).
            let ec = ec_pair(&s, false, "ec", b"ec");
            let point = unwrap_ec_point(&attr_bytes(&s, ec.public, AttributeType::EcPoint));
            let vk = VerifyingKey::from_sec1_bytes(&point).expect("valid P-256 point");
            let raw = s
                .sign(&Mechanism::Ecdsa, ec.private, &digest)
                .expect("ECDSA");
            let sig = Signature::from_slice(&raw).expect("r || s");
            vk.verify_prehash(&digest, &sig)
                .expect("p256 verifies CKM_ECDSA");
            let raw = s
                .sign(&Mechanism::EcdsaSha256, ec.private, msg)
                .expect("ECDSA_SHA256");
            let sig = Signature::from_slice(&raw).expect("r || s");
            vk.verify(msg, &sig)
                .expect("p256 verifies CKM_ECDSA_SHA256");
            assert!(vk.verify(b"another message", &sig).is_err());

            // RSA: the public key from CKA_MODULUS and CKA_PUBLIC_EXPONENT.
            let pair = rsa_pair(&s, 2048, false, "rsa");
            let key = RsaPublicKey::new(
                BigUint::from_bytes_be(&attr_bytes(&s, pair.public, AttributeType::Modulus)),
                BigUint::from_bytes_be(&attr_bytes(&s, pair.public, AttributeType::PublicExponent)),
            )
            .expect("valid RSA public key");
            let pkcs1 = Pkcs1v15Sign::new::<Sha256>();
            let sig = s
                .sign(&Mechanism::RsaPkcs, pair.private, &sha256_digest_info(msg))
                .expect("RSA_PKCS");
            key.verify(pkcs1.clone(), &digest, &sig)
                .expect("rsa verifies CKM_RSA_PKCS(DigestInfo)");
            let sig = s
                .sign(&Mechanism::Sha256RsaPkcs, pair.private, msg)
                .expect("SHA256_RSA_PKCS");
            key.verify(pkcs1.clone(), &digest, &sig)
                .expect("rsa verifies CKM_SHA256_RSA_PKCS");
            assert!(key.verify(pkcs1, &sha256(b"x"), &sig).is_err());
            let sig = s.sign(&pss(), pair.private, msg).expect("PSS");
            key.verify(Pss::new::<Sha256>(), &digest, &sig)
                .expect("rsa verifies CKM_SHA256_RSA_PKCS_PSS");
        },
    );
}

#[test]
fn crate_signatures_verify_through_c_verify() {
    isolated(
        "crate_signatures_verify_through_c_verify",
        |_cluster, token| {
            let s = token.user_session();
            let msg = b"signed outside the HSM";
            let digest = sha256(msg);

            // P-256 key made by the p256 crate; its public key imported.
            let sk = SigningKey::random(&mut OsRng);
            let point = sk.verifying_key().to_encoded_point(false);
            let imported = s
                .create_object(&ec_public_import(point.as_bytes(), "p256-import"))
                .expect("C_CreateObject(EC public key)");
            let attrs = s
                .get_attributes(imported, &[AttributeType::Class, AttributeType::KeyType])
                .expect("attributes");
            assert_eq!(
                attrs,
                vec![
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(KeyType::EC)
                ]
            );
            let prehashed: Signature = sk.sign_prehash(&digest).expect("p256 sign");
            s.verify(&Mechanism::Ecdsa, imported, &digest, &prehashed.to_bytes())
                .expect("C_Verify(CKM_ECDSA) of a p256 signature");
            let hashed: Signature = sk.sign(msg);
            s.verify(&Mechanism::EcdsaSha256, imported, msg, &hashed.to_bytes())
                .expect("C_Verify(CKM_ECDSA_SHA256) of a p256 signature");
            assert_ckr(
                s.verify(
                    &Mechanism::EcdsaSha256,
                    imported,
                    b"other",
                    &hashed.to_bytes(),
                ),
                RvError::SignatureInvalid,
            );

            // RSA key made by the rsa crate; its public key imported.
            let private = RsaPrivateKey::new(&mut OsRng, 2048).expect("rsa keygen");
            let public = private.to_public_key();
            let imported = s
                .create_object(&rsa_public_import(
                    &public.n().to_bytes_be(),
                    &public.e().to_bytes_be(),
                    "rsa-import",
                ))
                .expect("C_CreateObject(RSA public key)");
            let sig = private
                .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
                .expect("rsa sign");
            s.verify(&Mechanism::Sha256RsaPkcs, imported, msg, &sig)
                .expect("C_Verify(CKM_SHA256_RSA_PKCS) of an rsa-crate signature");
            s.verify(
                &Mechanism::RsaPkcs,
                imported,
                &sha256_digest_info(msg),
                &sig,
            )
            .expect("C_Verify(CKM_RSA_PKCS) of an rsa-crate signature");
            let sig = private
                .sign_with_rng(&mut OsRng, Pss::new::<Sha256>(), &digest)
                .expect("rsa PSS sign");
            s.verify(&pss(), imported, msg, &sig)
                .expect("C_Verify(CKM_SHA256_RSA_PKCS_PSS) of an rsa-crate signature");
            let mut bad = sig.clone();
            bad[100] ^= 0x01;
            assert_ckr(
                s.verify(&pss(), imported, msg, &bad),
                RvError::SignatureInvalid,
            );

            // An imported public key cannot sign.
            assert!(s.sign(&Mechanism::Sha256RsaPkcs, imported, msg).is_err());
        },
    );
}
