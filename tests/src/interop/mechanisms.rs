//! What the module advertises through `C_GetMechanismList` / `C_GetMechanismInfo`, read the
//! way a client reads it (`pkcs11-tool --list-mechanisms`), so that a flow needing a mechanism
//! the token does not serve yet is skipped loudly, and starts running by itself once the
//! mechanism is advertised.

use cryptoki_sys as ck;
use std::collections::{BTreeMap, BTreeSet};

/// A mechanism: its `CKM_*` value and the name OpenSC's `pkcs11-tool` prints for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mech {
    /// `pkcs11-tool`'s name (also accepted: `mechtype-0x…`, what it prints for a value it
    /// has no name for).
    pub name: &'static str,
    /// `CKM_*`.
    pub code: u64,
    /// The constant's name, for messages.
    pub ckm: &'static str,
}

const fn mech(name: &'static str, code: ck::CK_MECHANISM_TYPE, ckm: &'static str) -> Mech {
    Mech {
        name,
        code: code as u64,
        ckm,
    }
}

macro_rules! mechs {
    ($($(#[$doc:meta])* $id:ident = $name:literal, $ckm:ident;)*) => {
        impl Mech {
            $($(#[$doc])* pub const $id: Mech = mech($name, ck::$ckm, stringify!($ckm));)*
        }
        /// Every mechanism the interop tests look for.
        pub const ALL: &[Mech] = &[$(Mech::$id),*];
    };
}

mechs! {
    /// RSA key pair generation.
    RSA_PKCS_KEY_PAIR_GEN = "RSA-PKCS-KEY-PAIR-GEN", CKM_RSA_PKCS_KEY_PAIR_GEN;
    /// RSA PKCS#1 v1.5 (raw: the caller supplies the DigestInfo).
    RSA_PKCS = "RSA-PKCS", CKM_RSA_PKCS;
    /// RSA OAEP.
    RSA_PKCS_OAEP = "RSA-PKCS-OAEP", CKM_RSA_PKCS_OAEP;
    /// RSA PSS on a digest the caller computed (TLS 1.3, OpenSSL, Java `RSASSA-PSS`).
    RSA_PKCS_PSS = "RSA-PKCS-PSS", CKM_RSA_PKCS_PSS;
    /// RSA PKCS#1 v1.5 with SHA-1.
    SHA1_RSA_PKCS = "SHA1-RSA-PKCS", CKM_SHA1_RSA_PKCS;
    /// RSA PKCS#1 v1.5 with SHA-256.
    SHA256_RSA_PKCS = "SHA256-RSA-PKCS", CKM_SHA256_RSA_PKCS;
    /// RSA PSS with SHA-256.
    SHA256_RSA_PKCS_PSS = "SHA256-RSA-PKCS-PSS", CKM_SHA256_RSA_PKCS_PSS;
    /// EC key pair generation (P-256, P-384, … by `CKA_EC_PARAMS`).
    EC_KEY_PAIR_GEN = "ECDSA-KEY-PAIR-GEN", CKM_EC_KEY_PAIR_GEN;
    /// ECDSA on a digest the caller computed.
    ECDSA = "ECDSA", CKM_ECDSA;
    /// ECDSA with SHA-256.
    ECDSA_SHA256 = "ECDSA-SHA256", CKM_ECDSA_SHA256;
    /// ECDSA with SHA-384.
    ECDSA_SHA384 = "ECDSA-SHA384", CKM_ECDSA_SHA384;
    /// ECDH key derivation.
    ECDH1_DERIVE = "ECDH1-DERIVE", CKM_ECDH1_DERIVE;
    /// Ed25519 key pair generation.
    EC_EDWARDS_KEY_PAIR_GEN = "EC-EDWARDS-KEY-PAIR-GEN", CKM_EC_EDWARDS_KEY_PAIR_GEN;
    /// EdDSA.
    EDDSA = "EDDSA", CKM_EDDSA;
    /// AES key generation.
    AES_KEY_GEN = "AES-KEY-GEN", CKM_AES_KEY_GEN;
    /// AES-CBC without padding.
    AES_CBC = "AES-CBC", CKM_AES_CBC;
    /// AES-CBC with PKCS#7 padding.
    AES_CBC_PAD = "AES-CBC-PAD", CKM_AES_CBC_PAD;
    /// AES-GCM.
    AES_GCM = "AES-GCM", CKM_AES_GCM;
    /// AES key wrap (RFC 3394).
    AES_KEY_WRAP = "AES-KEY-WRAP", CKM_AES_KEY_WRAP;
    /// AES key wrap with padding (RFC 5649).
    AES_KEY_WRAP_PAD = "AES-KEY-WRAP-PAD", CKM_AES_KEY_WRAP_PAD;
    /// SHA-1 digest.
    SHA_1 = "SHA-1", CKM_SHA_1;
    /// SHA-256 digest.
    SHA256 = "SHA256", CKM_SHA256;
}

/// One `C_GetMechanismInfo` as `pkcs11-tool` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MechRow {
    /// `ulMinKeySize`, when shown.
    pub min_key: Option<u64>,
    /// `ulMaxKeySize`, when shown.
    pub max_key: Option<u64>,
    /// Flag names (`sign`, `verify`, `encrypt`, `decrypt`, `wrap`, `unwrap`, `derive`,
    /// `generate`, `generate_key_pair`, …).
    pub flags: BTreeSet<String>,
}

/// The advertised mechanisms.
#[derive(Clone, Debug, Default)]
pub struct Mechanisms {
    rows: BTreeMap<String, MechRow>,
    /// `pkcs11-tool --list-mechanisms` output, for messages.
    pub raw: String,
}

impl Mechanisms {
    /// Parses `pkcs11-tool --list-mechanisms` output: lines such as
    /// `  ECDSA, keySize={256,384}, sign, verify, EC F_P`.
    pub fn parse(text: &str) -> Mechanisms {
        let mut rows = BTreeMap::new();
        for line in text.lines() {
            if !line.starts_with("  ") {
                continue;
            }
            let mut parts = line.trim().split(", ");
            let Some(name) = parts.next().filter(|n| !n.is_empty()) else {
                continue;
            };
            let mut row = MechRow::default();
            for part in parts {
                if let Some(sizes) = part
                    .strip_prefix("keySize={")
                    .and_then(|s| s.strip_suffix('}'))
                {
                    let mut it = sizes.split(',').map(|n| n.trim().parse::<u64>().ok());
                    row.min_key = it.next().flatten();
                    row.max_key = it.next().flatten();
                } else {
                    row.flags.insert(part.trim().to_owned());
                }
            }
            rows.insert(name.to_owned(), row);
        }
        Mechanisms {
            rows,
            raw: text.to_owned(),
        }
    }

    /// How many mechanisms are advertised.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row of `m`, by name or by `mechtype-0x…`.
    pub fn row(&self, m: Mech) -> Option<&MechRow> {
        self.rows
            .get(m.name)
            .or_else(|| self.rows.get(&format!("mechtype-0x{:X}", m.code)))
    }

    /// Whether `m` is advertised with `flag` (`""`: with any flags).
    pub fn has(&self, m: Mech, flag: &str) -> bool {
        self.row(m)
            .is_some_and(|r| flag.is_empty() || r.flags.contains(flag))
    }

    /// Whether `m` is advertised for keys of `bits` (within its key-size range).
    pub fn has_key_size(&self, m: Mech, bits: u64) -> bool {
        self.row(m).is_some_and(|r| {
            r.min_key.is_none_or(|min| min <= bits) && r.max_key.is_none_or(|max| max >= bits)
        })
    }

    /// The unmet needs among `needs` (mechanism and flag), described for a skip message.
    pub fn missing(&self, needs: &[(Mech, &str)]) -> Vec<String> {
        needs
            .iter()
            .filter(|(m, flag)| !self.has(*m, flag))
            .map(|(m, flag)| {
                if flag.is_empty() {
                    m.ckm.to_owned()
                } else {
                    format!("{} with CKF_{}", m.ckm, flag.to_uppercase())
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
