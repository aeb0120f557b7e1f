//! Invariant 1: no plaintext key material on disk. A deliberately extractable AES-256 key is
//! read through PKCS#11, the daemon is stopped, and every file of the cluster is searched for
//! its bytes.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use hsm_tests::isolated;
use hsm_tests::keys::{aes_key, attr_bytes, by_label, find};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn store_files_hold_no_key_bytes() {
    isolated("store_files_hold_no_key_bytes", |cluster, token| {
        let s = token.user_session();
        let key = aes_key(
            &s,
            32,
            "exportable",
            &[
                Attribute::Token(true),
                Attribute::Extractable(true),
                Attribute::Sensitive(false),
            ],
        );
        let value = attr_bytes(&s, key, AttributeType::Value);
        assert_eq!(value.len(), 32);
        assert!(value.iter().any(|b| *b != 0), "a real key, not zeros");
        let mut iv = [3u8; 12];
        let ct = s
            .encrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
                key,
                b"persisted",
            )
            .expect("encrypt");
        drop(s);

        // Stopped, so everything it would write is on disk.
        cluster.stop_daemon();
        let files = files_under(&cluster.data_dir());
        let stored: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(
            stored > 0,
            "the store wrote nothing under {}",
            cluster.data_dir().display()
        );
        let hex_lower = hex::encode(&value);
        let hex_upper = hex_lower.to_uppercase();
        // Every file of the cluster directory: the store, and also the logs and configs.
        let key_windows: HashSet<&[u8]> = value.windows(8).collect();
        for file in files_under(&cluster.dir) {
            let bytes = std::fs::read(&file).expect("read");
            assert!(
                !bytes.windows(8).any(|w| key_windows.contains(w)),
                "{} contains 8 consecutive bytes of the key",
                file.display()
            );
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&hex_lower[..16]) && !text.contains(&hex_upper[..16]),
                "{} contains the key in hex",
                file.display()
            );
        }

        // The key was stored all the same (sealed): after restart and unseal it is back.
        cluster.start_daemon();
        cluster.unseal();
        let s = token.user_session();
        let found = find(&s, &by_label("exportable", Some(ObjectClass::SECRET_KEY)));
        assert_eq!(found.len(), 1);
        assert_eq!(attr_bytes(&s, found[0], AttributeType::Value), value);
        let mut iv = [3u8; 12];
        let pt = s
            .decrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
                found[0],
                &ct,
            )
            .expect("decrypt after restart");
        assert_eq!(pt, b"persisted");
    });
}
