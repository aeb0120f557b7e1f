//! Key pairs made with `pkcs11-tool --keypairgen` once per test binary and shared by its
//! tests, with their public keys exported for independent checks by `openssl`.

use super::client::Run;
use super::fixture::Fixture;
use super::mechanisms::Mech;
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// What the token must advertise to make a key pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairNeeds {
    /// RSA or P-256: served since the foundation issue.
    Baseline,
    /// An EC curve of this many bits (`CKM_EC_KEY_PAIR_GEN`'s key-size range).
    EcBits(u64),
    /// `CKM_EC_EDWARDS_KEY_PAIR_GEN`.
    Edwards,
}

/// A key pair: `pkcs11-tool --key-type`, label and id (hex).
#[derive(Clone, Copy, Debug)]
pub struct PairSpec {
    /// `rsa:2048`, `EC:prime256v1`, `EC:edwards25519`, …
    pub key_type: &'static str,
    /// `CKA_LABEL` of both halves.
    pub label: &'static str,
    /// `CKA_ID` of both halves, hex.
    pub id: &'static str,
    /// What generating it needs.
    pub needs: PairNeeds,
}

type Cache<T> = Mutex<HashMap<&'static str, Arc<OnceLock<T>>>>;

/// The once-per-binary cell for `label` in `cache`.
fn cell<T>(cache: &'static Cache<T>, label: &'static str) -> Arc<OnceLock<T>> {
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(label)
        .or_default()
        .clone()
}

/// The raw public key inside `CKA_EC_POINT` of an Edwards key: a DER OCTET STRING (what the
/// module returns) or, as some tokens do, the bare 32 bytes.
fn edwards_point(der: &[u8]) -> Vec<u8> {
    match der {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.to_vec(),
        raw if raw.len() == 32 => raw.to_vec(),
        other => panic!("CKA_EC_POINT of an Ed25519 key: {other:02x?}"),
    }
}

impl Fixture {
    /// Whether the token advertises what `spec` needs; a loud skip (naming `test`) otherwise.
    pub fn pair_supported(&self, test: &str, spec: PairSpec) -> bool {
        match spec.needs {
            PairNeeds::Baseline => true,
            PairNeeds::EcBits(bits) => {
                self.require_key_size(test, Mech::EC_KEY_PAIR_GEN, bits, spec.key_type)
            }
            PairNeeds::Edwards => self.require(
                test,
                &[(Mech::EC_EDWARDS_KEY_PAIR_GEN, "generate_key_pair")],
            ),
        }
    }

    /// `pkcs11-tool --keypairgen` for `spec`, run once per test binary (the run is returned to
    /// every caller; assert on it with [`Run::ok`]).
    pub fn keypair(&self, spec: PairSpec) -> Run {
        static PAIRS: OnceLock<Cache<Run>> = OnceLock::new();
        let cell = cell(PAIRS.get_or_init(Default::default), spec.label);
        cell.get_or_init(|| {
            self.pkcs11_tool_user(&format!("pkcs11-tool --keypairgen {}", spec.key_type))
                .args(["--keypairgen", "--key-type", spec.key_type])
                .args(["--label", spec.label, "--id", spec.id])
                .run()
        })
        .clone()
    }

    /// The key pair's public key as DER `SubjectPublicKeyInfo`, exported with `pkcs11-tool
    /// --read-object` (generating the pair first if needed).
    ///
    /// # Panics
    /// If generation or export fails (with the client's output).
    pub fn public_key_der(&self, spec: PairSpec) -> PathBuf {
        static PUBLIC: OnceLock<Cache<PathBuf>> = OnceLock::new();
        let cell = cell(PUBLIC.get_or_init(Default::default), spec.label);
        cell.get_or_init(|| {
            self.keypair(spec).ok();
            let path = self.path(&format!("{}.pub.der", spec.label));
            let run = self
                .pkcs11_tool_user("pkcs11-tool --read-object --type pubkey")
                .args(["--read-object", "--type", "pubkey", "--id", spec.id, "-o"])
                .arg(&path)
                .run();
            if spec.needs == PairNeeds::Edwards && !run.succeeded() {
                // OpenSC 0.23 may not export Ed25519 public keys: build the SPKI of RFC 8410
                // from CKA_EC_POINT as `--list-objects` prints it.
                let mut spki = vec![
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ];
                spki.extend_from_slice(&edwards_point(&self.ec_point_listed(spec)));
                fs::write(&path, spki).expect("write Ed25519 SPKI");
            } else {
                run.ok();
            }
            path
        })
        .clone()
    }

    /// `CKA_EC_POINT` of `spec`'s public key as `pkcs11-tool --list-objects` prints it.
    pub fn ec_point_listed(&self, spec: PairSpec) -> Vec<u8> {
        let listing = self
            .pkcs11_tool_user("pkcs11-tool --list-objects --type pubkey")
            .args(["--list-objects", "--type", "pubkey", "--id", spec.id])
            .run()
            .ok();
        let hex_point = listing
            .stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("EC_POINT:"))
            .unwrap_or_else(|| panic!("no EC_POINT for {}\n{listing}", spec.label))
            .trim()
            .to_owned();
        hex::decode(&hex_point)
            .unwrap_or_else(|e| panic!("EC_POINT of {} is not hex ({e})\n{listing}", spec.label))
    }
}
