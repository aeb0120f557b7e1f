//! The mechanisms of issue 3 as `C_GetMechanismList` and `C_GetMechanismInfo` report them:
//! every one listed, with sane key sizes and the flags of the functions it performs. Read
//! through the raw C ABI (`tests/c/token_probe.c`), because `cryptoki` silently drops the
//! mechanisms it has no name for.
//!
//! `print_mechanism_table` (ignored) prints the table of `docs/mechanisms.md` from what the
//! token reports: `cargo test --release -p hsm-tests --test token_mechanisms -- --ignored
//! --nocapture print_mechanism_table`.

use cryptoki::mechanism::MechanismType;
use cryptoki_sys as ck;
use hsm_tests::token_probe::{RawMechanism, run_token_probe};
use hsm_tests::{Cluster, isolated};

/// How a mechanism's key sizes must look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sizes {
    /// RSA modulus bits: 2048 to 4096.
    Rsa,
    /// EC field bits: P-256 to P-521.
    Ec,
    /// Ed25519: 255 or 256 bits (tokens differ).
    Ed25519,
    /// AES key bytes: 16 to 32.
    Aes,
    /// Generic secret (HMAC) key bits: some range that includes 256.
    Hmac,
    /// No key.
    None,
}

impl Sizes {
    fn unit(self) -> &'static str {
        match self {
            Sizes::Rsa | Sizes::Ec | Sizes::Ed25519 | Sizes::Hmac => "bits",
            Sizes::Aes => "bytes",
            Sizes::None => "",
        }
    }

    fn check(self, m: &RawMechanism) -> Result<(), String> {
        let ok = match self {
            Sizes::Rsa => m.min == 2048 && m.max == 4096,
            Sizes::Ec => m.min == 256 && m.max == 521,
            Sizes::Ed25519 => (255..=256).contains(&m.min) && (255..=256).contains(&m.max),
            Sizes::Aes => m.min == 16 && m.max == 32,
            Sizes::Hmac => m.min > 0 && m.min <= 256 && m.max >= 256,
            Sizes::None => m.min <= m.max,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "key sizes {}..{} do not fit {self:?}",
                m.min, m.max
            ))
        }
    }
}

const SV: u64 = (ck::CKF_SIGN | ck::CKF_VERIFY) as u64;
const ED: u64 = (ck::CKF_ENCRYPT | ck::CKF_DECRYPT) as u64;
const WU: u64 = (ck::CKF_WRAP | ck::CKF_UNWRAP) as u64;
const GEN: u64 = ck::CKF_GENERATE as u64;
const GEN_PAIR: u64 = ck::CKF_GENERATE_KEY_PAIR as u64;
const DIGEST: u64 = ck::CKF_DIGEST as u64;
const DERIVE: u64 = ck::CKF_DERIVE as u64;
const EC_CAPS: u64 = (ck::CKF_EC_F_P | ck::CKF_EC_NAMEDCURVE | ck::CKF_EC_UNCOMPRESS) as u64;

/// One mechanism issue 3 asks for: its name, number, the flags it must have and its sizes.
struct Wanted {
    name: &'static str,
    kind: ck::CK_MECHANISM_TYPE,
    flags: u64,
    sizes: Sizes,
}

const fn w(name: &'static str, kind: ck::CK_MECHANISM_TYPE, flags: u64, sizes: Sizes) -> Wanted {
    Wanted {
        name,
        kind,
        flags,
        sizes,
    }
}

/// Every mechanism of issue 3, in the order of the issue.
const WANTED: &[Wanted] = &[
    w(
        "CKM_RSA_PKCS_KEY_PAIR_GEN",
        ck::CKM_RSA_PKCS_KEY_PAIR_GEN,
        GEN_PAIR,
        Sizes::Rsa,
    ),
    w("CKM_RSA_PKCS", ck::CKM_RSA_PKCS, SV | ED, Sizes::Rsa),
    w("CKM_SHA1_RSA_PKCS", ck::CKM_SHA1_RSA_PKCS, SV, Sizes::Rsa),
    w(
        "CKM_SHA224_RSA_PKCS",
        ck::CKM_SHA224_RSA_PKCS,
        SV,
        Sizes::Rsa,
    ),
    w(
        "CKM_SHA256_RSA_PKCS",
        ck::CKM_SHA256_RSA_PKCS,
        SV,
        Sizes::Rsa,
    ),
    w(
        "CKM_SHA384_RSA_PKCS",
        ck::CKM_SHA384_RSA_PKCS,
        SV,
        Sizes::Rsa,
    ),
    w(
        "CKM_SHA512_RSA_PKCS",
        ck::CKM_SHA512_RSA_PKCS,
        SV,
        Sizes::Rsa,
    ),
    w("CKM_RSA_PKCS_PSS", ck::CKM_RSA_PKCS_PSS, SV, Sizes::Rsa),
    w(
        "CKM_SHA1_RSA_PKCS_PSS",
        ck::CKM_SHA1_RSA_PKCS_PSS,
        SV,
        Sizes::Rsa,
    ),
    w(
        "CKM_SHA224_RSA_PKCS_PSS",
        ck::CKM_SHA224_RSA_PKCS_PSS,
        SV,
        Sizes::Rsa,
    ),
    w(
        "CKM_SHA256_RSA_PKCS_PSS",
        ck::CKM_SHA256_RSA_PKCS_PSS,
        SV,
        Sizes::Rsa,
    ),
    w(
        "CKM_SHA384_RSA_PKCS_PSS",
        ck::CKM_SHA384_RSA_PKCS_PSS,
        SV,
        Sizes::Rsa,
    ),
    w(
        "CKM_SHA512_RSA_PKCS_PSS",
        ck::CKM_SHA512_RSA_PKCS_PSS,
        SV,
        Sizes::Rsa,
    ),
    w(
        "CKM_RSA_PKCS_OAEP",
        ck::CKM_RSA_PKCS_OAEP,
        ED | WU,
        Sizes::Rsa,
    ),
    w(
        "CKM_EC_KEY_PAIR_GEN",
        ck::CKM_EC_KEY_PAIR_GEN,
        GEN_PAIR | EC_CAPS,
        Sizes::Ec,
    ),
    w("CKM_ECDSA", ck::CKM_ECDSA, SV | EC_CAPS, Sizes::Ec),
    w(
        "CKM_ECDSA_SHA1",
        ck::CKM_ECDSA_SHA1,
        SV | EC_CAPS,
        Sizes::Ec,
    ),
    w(
        "CKM_ECDSA_SHA224",
        ck::CKM_ECDSA_SHA224,
        SV | EC_CAPS,
        Sizes::Ec,
    ),
    w(
        "CKM_ECDSA_SHA256",
        ck::CKM_ECDSA_SHA256,
        SV | EC_CAPS,
        Sizes::Ec,
    ),
    w(
        "CKM_ECDSA_SHA384",
        ck::CKM_ECDSA_SHA384,
        SV | EC_CAPS,
        Sizes::Ec,
    ),
    w(
        "CKM_ECDSA_SHA512",
        ck::CKM_ECDSA_SHA512,
        SV | EC_CAPS,
        Sizes::Ec,
    ),
    w(
        "CKM_ECDH1_DERIVE",
        ck::CKM_ECDH1_DERIVE,
        DERIVE | EC_CAPS,
        Sizes::Ec,
    ),
    w(
        "CKM_EC_EDWARDS_KEY_PAIR_GEN",
        ck::CKM_EC_EDWARDS_KEY_PAIR_GEN,
        GEN_PAIR,
        Sizes::Ed25519,
    ),
    w("CKM_EDDSA", ck::CKM_EDDSA, SV, Sizes::Ed25519),
    w("CKM_AES_KEY_GEN", ck::CKM_AES_KEY_GEN, GEN, Sizes::Aes),
    w("CKM_AES_GCM", ck::CKM_AES_GCM, ED | WU, Sizes::Aes),
    w("CKM_AES_CBC", ck::CKM_AES_CBC, ED, Sizes::Aes),
    w("CKM_AES_CBC_PAD", ck::CKM_AES_CBC_PAD, ED, Sizes::Aes),
    w("CKM_AES_CTR", ck::CKM_AES_CTR, ED, Sizes::Aes),
    w("CKM_AES_ECB", ck::CKM_AES_ECB, ED, Sizes::Aes),
    w("CKM_AES_CMAC", ck::CKM_AES_CMAC, SV, Sizes::Aes),
    w("CKM_AES_KEY_WRAP", ck::CKM_AES_KEY_WRAP, WU, Sizes::Aes),
    w(
        "CKM_AES_KEY_WRAP_PAD",
        ck::CKM_AES_KEY_WRAP_PAD,
        WU,
        Sizes::Aes,
    ),
    w(
        "CKM_GENERIC_SECRET_KEY_GEN",
        ck::CKM_GENERIC_SECRET_KEY_GEN,
        GEN,
        Sizes::Hmac,
    ),
    w("CKM_SHA_1_HMAC", ck::CKM_SHA_1_HMAC, SV, Sizes::Hmac),
    w("CKM_SHA224_HMAC", ck::CKM_SHA224_HMAC, SV, Sizes::Hmac),
    w("CKM_SHA256_HMAC", ck::CKM_SHA256_HMAC, SV, Sizes::Hmac),
    w("CKM_SHA384_HMAC", ck::CKM_SHA384_HMAC, SV, Sizes::Hmac),
    w("CKM_SHA512_HMAC", ck::CKM_SHA512_HMAC, SV, Sizes::Hmac),
    w("CKM_SHA_1", ck::CKM_SHA_1, DIGEST, Sizes::None),
    w("CKM_SHA224", ck::CKM_SHA224, DIGEST, Sizes::None),
    w("CKM_SHA256", ck::CKM_SHA256, DIGEST, Sizes::None),
    w("CKM_SHA384", ck::CKM_SHA384, DIGEST, Sizes::None),
    w("CKM_SHA512", ck::CKM_SHA512, DIGEST, Sizes::None),
];

fn flag_names(flags: u64) -> String {
    let names = [
        (ck::CKF_GENERATE, "generate"),
        (ck::CKF_GENERATE_KEY_PAIR, "generate key pair"),
        (ck::CKF_SIGN, "sign"),
        (ck::CKF_VERIFY, "verify"),
        (ck::CKF_ENCRYPT, "encrypt"),
        (ck::CKF_DECRYPT, "decrypt"),
        (ck::CKF_DIGEST, "digest"),
        (ck::CKF_WRAP, "wrap"),
        (ck::CKF_UNWRAP, "unwrap"),
        (ck::CKF_DERIVE, "derive"),
    ];
    names
        .iter()
        .filter(|(f, _)| flags & *f as u64 != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Mechanisms beyond the issue's list that the token may also list, with their names.
const EXTRA: &[Wanted] = &[w(
    "CKM_AES_KEY_WRAP_KWP",
    ck::CKM_AES_KEY_WRAP_KWP,
    WU,
    Sizes::Aes,
)];

fn known(kind: u64) -> Option<&'static Wanted> {
    WANTED.iter().chain(EXTRA).find(|w| w.kind as u64 == kind)
}

fn name_of(kind: u64) -> String {
    known(kind)
        .map(|w| w.name.to_owned())
        .or_else(|| {
            MechanismType::try_from(kind as ck::CK_MECHANISM_TYPE)
                .ok()
                .map(|m| m.to_string())
        })
        .unwrap_or_else(|| format!("{kind:#x}"))
}

/// What is wrong with one wanted mechanism in the raw list, if anything.
fn want_problem(want: &Wanted, listed: &[RawMechanism]) -> Option<String> {
    let Some(m) = listed.iter().find(|m| m.kind == want.kind as u64) else {
        return Some(format!("{}: not listed by C_GetMechanismList", want.name));
    };
    if m.info_rv != ck::CKR_OK as u64 {
        return Some(format!(
            "{}: C_GetMechanismInfo returned {:#x}",
            want.name, m.info_rv
        ));
    }
    if m.flags & want.flags != want.flags {
        return Some(format!(
            "{}: flags {:#x} lack {} (needs {})",
            want.name,
            m.flags,
            flag_names(want.flags & !m.flags),
            flag_names(want.flags)
        ));
    }
    want.sizes
        .check(m)
        .err()
        .map(|e| format!("{}: {e}", want.name))
}

#[test]
fn every_issue_mechanism_is_listed_with_sane_info() {
    isolated(
        "every_issue_mechanism_is_listed_with_sane_info",
        |cluster, token| {
            let p = run_token_probe(cluster, &token.user_pin, &["mechanisms"]);
            let listed = p.mechanisms();
            assert_eq!(
                p.get("mech_count").parse::<usize>().expect("count"),
                listed.len()
            );
            // The size-query convention of C_GetMechanismList.
            p.assert_rv("list_too_small_rv", ck::CKR_BUFFER_TOO_SMALL);
            p.assert_value("list_too_small_count", &listed.len().to_string());
            let mut kinds: Vec<u64> = listed.iter().map(|m| m.kind).collect();
            kinds.sort_unstable();
            kinds.dedup();
            assert_eq!(kinds.len(), listed.len(), "a mechanism is listed twice");

            let mut problems = Vec::new();
            for want in WANTED {
                problems.extend(want_problem(want, &listed));
            }
            // Every listed mechanism has info, and cryptoki sees the same numbers.
            for m in &listed {
                if m.info_rv != ck::CKR_OK as u64 {
                    problems.push(format!(
                        "{}: listed, but C_GetMechanismInfo returned {:#x}",
                        name_of(m.kind),
                        m.info_rv
                    ));
                }
                if m.flags & (SV | ED | WU | GEN | GEN_PAIR | DIGEST | DERIVE) == 0 {
                    problems.push(format!("{}: listed without any function", name_of(m.kind)));
                }
                if let Ok(mt) = MechanismType::try_from(m.kind as ck::CK_MECHANISM_TYPE) {
                    let info = token
                        .ctx
                        .get_mechanism_info(token.slot, mt)
                        .expect("C_GetMechanismInfo through cryptoki");
                    assert_eq!(
                        (info.min_key_size() as u64, info.max_key_size() as u64),
                        (m.min, m.max),
                        "{mt}"
                    );
                }
            }
            assert!(
                problems.is_empty(),
                "mechanism list problems:\n  {}\nraw list:\n{}",
                problems.join("\n  "),
                p.raw
            );
        },
    );
}

#[test]
#[ignore = "prints the table of docs/mechanisms.md"]
fn print_mechanism_table() {
    // Only the probe loads the module, so no process of its own is needed.
    let cluster = Cluster::start();
    {
        let p = run_token_probe(&cluster, &cluster.user_pin, &["mechanisms"]);
        let mut listed = p.mechanisms();
        // In the order of the issue, then whatever else is listed.
        listed.sort_by_key(|m| {
            WANTED
                .iter()
                .position(|w| w.kind as u64 == m.kind)
                .unwrap_or(usize::MAX)
        });
        println!("| Mechanism | Value | Key sizes | Functions |");
        println!("| --- | --- | --- | --- |");
        for m in &listed {
            let unit = known(m.kind).map_or("", |w| w.sizes.unit());
            let sizes = if m.min == 0 && m.max == 0 {
                "–".to_owned()
            } else if m.min == m.max {
                format!("{} {unit}", m.min)
            } else {
                format!("{}–{} {unit}", m.min, m.max)
            };
            println!(
                "| `{}` | `{:#x}` | {} | {} |",
                name_of(m.kind),
                m.kind,
                sizes.trim_end(),
                flag_names(m.flags)
            );
        }
        let missing: Vec<&str> = WANTED
            .iter()
            .filter(|w| !listed.iter().any(|m| m.kind == w.kind as u64))
            .map(|w| w.name)
            .collect();
        println!("\nNot offered: {}", missing.join(", "));
    }
}
