//! Key pairs made with `pkcs11-tool --keypairgen` once per test binary and shared by its
//! tests, with their public keys exported for independent checks by `openssl`.

use super::client::Run;
use super::fixture::Fixture;
use super::mechanisms::Mech;
use super::objects_matching;
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
fn edwards_point(value: &[u8]) -> Vec<u8> {
    match value {
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
            if run.succeeded() && fs::read(&path).is_ok_and(|b| b.starts_with(b"-----BEGIN")) {
                // OpenSC 0.23 writes some public keys (Ed25519) as PEM: make it DER.
                let pem = path.with_extension("pem");
                fs::rename(&path, &pem).expect("rename PEM public key");
                self.client("openssl pkey -pubin (PEM to DER)", "openssl")
                    .args(["pkey", "-pubin", "-in"])
                    .arg(&pem)
                    .args(["-outform", "DER", "-out"])
                    .arg(&path)
                    .run()
                    .ok();
            } else if spec.key_type.starts_with("EC:") && !run.succeeded() {
                // OpenSC 0.23 cannot export every EC public key (P-384: "cannot create
                // EVP_PKEY", with any token): build the SubjectPublicKeyInfo from CKA_EC_POINT
                // and CKA_EC_PARAMS as `--list-objects` prints them.
                let (point, params) = self.ec_point_listed(spec);
                let spki = if spec.needs == PairNeeds::Edwards {
                    // RFC 8410: id-Ed25519, no parameters.
                    let algorithm = der(0x30, &der(0x06, &[0x2b, 0x65, 0x70]));
                    spki(&algorithm, &edwards_point(&point))
                } else {
                    // RFC 5480: id-ecPublicKey with the named curve.
                    let mut algorithm = der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]);
                    algorithm.extend_from_slice(&params);
                    spki(&der(0x30, &algorithm), &octet_string_content(&point))
                };
                fs::write(&path, spki).expect("write SubjectPublicKeyInfo");
            } else {
                run.ok();
            }
            path
        })
        .clone()
    }

    /// `CKA_EC_POINT` and `CKA_EC_PARAMS` (DER) of `spec`'s public key as `pkcs11-tool
    /// --list-objects` prints them.
    pub fn ec_point_listed(&self, spec: PairSpec) -> (Vec<u8>, Vec<u8>) {
        let listing = self
            .pkcs11_tool_user("pkcs11-tool --list-objects --type pubkey")
            .args(["--list-objects", "--type", "pubkey"])
            .run()
            .ok();
        let objects = objects_matching(
            &listing.stdout,
            "Public Key Object",
            &format!("ID:         {}\n", spec.id),
        );
        let field = |name: &str| -> Vec<u8> {
            let hex_value = objects
                .iter()
                .find_map(|o| {
                    o.lines()
                        .find_map(|l| l.trim().strip_prefix(name))
                        .and_then(|v| v.split_whitespace().next())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| panic!("no {name} for {}\n{listing}", spec.label));
            hex::decode(&hex_value)
                .unwrap_or_else(|e| panic!("{name} of {} is not hex ({e})\n{listing}", spec.label))
        };
        (field("EC_POINT:"), field("EC_PARAMS:"))
    }
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// `SubjectPublicKeyInfo` from an `AlgorithmIdentifier` and the raw public key.
fn spki(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    let mut body = algorithm.to_vec();
    body.extend_from_slice(&der(0x03, &bits));
    der(0x30, &body)
}

/// The content of a DER OCTET STRING (`CKA_EC_POINT` as the spec encodes it), or the input
/// when it is a bare point.
fn octet_string_content(value: &[u8]) -> Vec<u8> {
    match value {
        // The wrapped point is itself uncompressed (0x04 first).
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && rest.first() == Some(&4) => {
            rest.to_vec()
        }
        [0x04, 0x81, len, rest @ ..]
            if usize::from(*len) == rest.len() && rest.first() == Some(&4) =>
        {
            rest.to_vec()
        }
        other => other.to_vec(),
    }
}
