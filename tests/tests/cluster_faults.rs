//! Faults on one three-node cluster of real daemons, through the real module:
//!
//! 1. quorum loss: with two of three nodes killed (once the leader survives, once a
//!    follower), `C_GenerateKey` fails with `CKR_DEVICE_ERROR` in bounded time (the default
//!    write timeout is 5 s; we allow 20 s), never a silent success, while `C_Sign` with an
//!    existing key still works on the survivor. A write refused for want of a quorum may still
//!    commit once the quorum is back, so afterwards we check only that every node holds the
//!    same objects;
//! 2. a seeded fault schedule: one node at a time (never a majority) killed with SIGKILL and
//!    restarted, for `HSM_FAULT_SECONDS` (default 30), under a mixed load from six threads of
//!    one module process (key creation, destruction, signing). Then: nothing acknowledged is
//!    lost, nothing whose destruction was acknowledged comes back, no label exists twice, every
//!    signature verifies (checked with the `p256` crate), and every node holds the same
//!    objects.
//!
//! The schedule (which node, when, for how long) is drawn from a seed: `HSM_FAULT_SEED`, or
//! a fresh one, printed at the start and in every failure message. The load's interleaving
//! is not reproducible (threads and the network decide), the schedule is.
//!
//! A longer run: `HSM_FAULT_SECONDS=600 HSM_FAULT_SEED=<seed> cargo test --release -p
//! hsm-tests --test cluster_faults`.

mod cluster_util;

use cluster_util::{
    Module, Rng, assert_converged, duplicate_labels, fresh_seed, own_process, settle, step,
    user_session,
};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use hsm_tests::MultiCluster;
use hsm_tests::keys::{attr_bytes, by_label, ec_pair, find, sha256, unwrap_ec_point};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SEED_ENV: &str = "HSM_FAULT_SEED";
const SECONDS_ENV: &str = "HSM_FAULT_SECONDS";
/// The bound a write without quorum must fail within (the daemon's default write timeout
/// is 5 s; the rest is slack for a loaded two-core machine).
const NO_QUORUM_BOUND: Duration = Duration::from_secs(20);

fn quorum_loss(cluster: &mut MultiCluster, module: &mut Module) {
    let what = step("two of three nodes down: writes fail in bounded time, signing works");
    // The module retries a write no node can commit until its failover budget is spent;
    // this test bounds that budget so the failure it expects comes in bounded time.
    module
        .options
        .insert("failover_timeout_ms".into(), 8000.into());
    let (leader, _) = settle(cluster);
    module.use_nodes(cluster, &[0, 1, 2]);
    let s = module.session();
    ec_pair(&s, true, "quorum-ec", b"quorum-ec");
    drop(s);
    module.finalize();
    settle(cluster);

    for (variant, survivor) in [
        ("the leader survives", leader),
        ("a follower survives", (leader + 1) % 3),
    ] {
        let name = cluster.node(survivor).name.clone();
        let down: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();
        for &d in &down {
            cluster.kill(d);
        }
        module.use_nodes(cluster, &[survivor]);
        let s = module.session();
        let label = format!("no-quorum-{}", survivor + 1);
        let started = Instant::now();
        let result = s.generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(label.into_bytes()),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
            ],
        );
        let took = started.elapsed();
        eprintln!("{what} ({variant}): C_GenerateKey on {name} answered {result:?} after {took:?}");
        match result {
            Err(Error::Pkcs11(RvError::DeviceError, _)) => {}
            other => panic!(
                "{what} ({variant}): C_GenerateKey on {name} without a quorum: expected \
                 CKR_DEVICE_ERROR, got {other:?} after {took:?}"
            ),
        }
        assert!(
            took < NO_QUORUM_BOUND,
            "{what} ({variant}): the refused write took {took:?} (bound {NO_QUORUM_BOUND:?})"
        );

        let private = find(&s, &by_label("quorum-ec", Some(ObjectClass::PRIVATE_KEY)));
        let public = find(&s, &by_label("quorum-ec", Some(ObjectClass::PUBLIC_KEY)));
        assert_eq!(
            (private.len(), public.len()),
            (1, 1),
            "{what} ({variant}): the key pair is not found on {name}"
        );
        let digest = sha256(variant.as_bytes());
        let signature = s
            .sign(&Mechanism::Ecdsa, private[0], &digest)
            .unwrap_or_else(|e| panic!("{what} ({variant}): C_Sign on {name}: {e}"));
        s.verify(&Mechanism::Ecdsa, public[0], &digest, &signature)
            .unwrap_or_else(|e| panic!("{what} ({variant}): C_Verify on {name}: {e}"));
        drop(s);
        module.finalize();

        for &d in &down {
            cluster.restart(d);
        }
        assert_converged(
            cluster,
            &[0, 1, 2],
            &format!("{what} ({variant}): quorum back"),
        );
    }
}

/// What the load threads saw.
#[derive(Debug, Default)]
struct Ledger {
    /// Creations answered `CKR_OK`.
    created: BTreeSet<String>,
    /// Creations that failed: the key may or may not exist.
    maybe_created: BTreeSet<String>,
    /// Destructions answered `CKR_OK`.
    destroyed: BTreeSet<String>,
    /// Destructions that failed: the key may or may not exist.
    maybe_destroyed: BTreeSet<String>,
    /// `(operation, CKR_*)` → how often.
    errors: BTreeMap<String, usize>,
    /// Signatures made.
    signed: usize,
    /// Acknowledged keys that a find did not see (a node served before it caught up).
    stale_reads: Vec<String>,
    /// Invariant violations seen during the load.
    violations: Vec<String>,
}

/// A signing key: its handle in the module and its public point.
#[derive(Clone, Copy)]
struct SigningKey {
    private: ObjectHandle,
    point: [u8; 65],
}

fn rv(e: &Error) -> String {
    match e {
        Error::Pkcs11(rv, _) => format!("{rv:?}"),
        other => format!("{other}"),
    }
}

fn load_thread(
    module: &Module,
    worker: u64,
    seed: u64,
    keys: &[SigningKey],
    stop: &AtomicBool,
    ledger: &Mutex<Ledger>,
) {
    let mut rng = Rng::new(seed ^ (worker + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let s = user_session(module.ctx(), module.slot(), module.user_pin())
        .expect("a session before the faults start");
    let mut live: Vec<String> = Vec::new();
    let mut n = 0u64;
    let note = |op: &str, e: &Error| {
        *ledger
            .lock()
            .expect("ledger")
            .errors
            .entry(format!("{op}: {}", rv(e)))
            .or_default() += 1;
    };
    while !stop.load(Ordering::SeqCst) {
        match rng.range(0, 10) {
            0..=4 => {
                let label = format!("f{worker}-{n:04}");
                n += 1;
                let result = s.generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Label(label.clone().into_bytes()),
                        Attribute::ValueLen(32.into()),
                        Attribute::Encrypt(true),
                    ],
                );
                match result {
                    Ok(_) => {
                        ledger.lock().expect("ledger").created.insert(label.clone());
                        live.push(label);
                    }
                    Err(e) => {
                        note("create", &e);
                        ledger.lock().expect("ledger").maybe_created.insert(label);
                    }
                }
            }
            5..=6 if !live.is_empty() => {
                let at = usize::try_from(rng.range(0, live.len() as u64)).expect("index");
                let label = live[at].clone();
                let found = match s.find_objects(&by_label(&label, None)) {
                    Ok(found) => found,
                    Err(e) => {
                        note("find", &e);
                        continue;
                    }
                };
                match found.as_slice() {
                    [] => ledger.lock().expect("ledger").stale_reads.push(label),
                    [h] => {
                        live.swap_remove(at);
                        match s.destroy_object(*h) {
                            Ok(()) => {
                                ledger.lock().expect("ledger").destroyed.insert(label);
                            }
                            Err(e) => {
                                note("destroy", &e);
                                ledger.lock().expect("ledger").maybe_destroyed.insert(label);
                            }
                        }
                    }
                    more => ledger
                        .lock()
                        .expect("ledger")
                        .violations
                        .push(format!("{label} found {} times", more.len())),
                }
            }
            _ => {
                let key = keys[usize::try_from(rng.range(0, keys.len() as u64)).expect("index")];
                let digest = sha256(&n.to_be_bytes());
                match s.sign(&Mechanism::Ecdsa, key.private, &digest) {
                    Ok(sig) => {
                        let vk = VerifyingKey::from_sec1_bytes(&key.point).expect("P-256 point");
                        let ok = Signature::from_slice(&sig)
                            .ok()
                            .is_some_and(|sig| vk.verify_prehash(&digest, &sig).is_ok());
                        let mut l = ledger.lock().expect("ledger");
                        l.signed += 1;
                        if !ok {
                            l.violations
                                .push(format!("a signature does not verify: {sig:02x?}"));
                        }
                    }
                    Err(e) => note("sign", &e),
                }
            }
        }
    }
}

fn seeded_faults(cluster: &mut MultiCluster, module: &mut Module, seed: u64, budget: Duration) {
    let what = step(&format!("seeded faults for {budget:?}"));
    let replay = format!("seed {seed}: replay with {SEED_ENV}={seed}");
    let mut rng = Rng::new(seed);
    // The module's own failover budget from here on.
    module.options.remove("failover_timeout_ms");
    settle(cluster);
    let mut order = vec![0, 1, 2];
    for i in (1..order.len()).rev() {
        order.swap(
            i,
            usize::try_from(rng.range(0, i as u64 + 1)).expect("index"),
        );
    }
    module.use_nodes(cluster, &order);
    let s = module.session();
    let keys: Vec<SigningKey> = (0..3)
        .map(|n| {
            let label = format!("fault-sign-{n}");
            let pair = ec_pair(&s, true, &label, label.as_bytes());
            let point = unwrap_ec_point(&attr_bytes(&s, pair.public, AttributeType::EcPoint));
            SigningKey {
                private: pair.private,
                point: point.try_into().expect("65 bytes"),
            }
        })
        .collect();
    drop(s);

    let stop = AtomicBool::new(false);
    let ledger = Mutex::new(Ledger::default());
    let mut events = Vec::new();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..6 {
            let (module, keys, stop, ledger) = (&*module, &keys, &stop, &ledger);
            scope.spawn(move || load_thread(module, worker, seed, keys, stop, ledger));
        }
        while started.elapsed() < budget {
            // The schedule: time up, which node (a quarter of the time the leader, whoever
            // it is then), time down.
            std::thread::sleep(Duration::from_millis(rng.range(500, 2500)));
            let leader = cluster.leader();
            let victim = match rng.range(0, 4) {
                0 => leader,
                k => usize::try_from(k - 1).expect("index"),
            };
            let down = Duration::from_millis(rng.range(200, 2500));
            cluster.kill(victim);
            events.push(format!(
                "{:>6.1}s kill {}{} for {down:?}",
                started.elapsed().as_secs_f64(),
                cluster.node(victim).name,
                if victim == leader { " (leader)" } else { "" }
            ));
            std::thread::sleep(down);
            cluster.restart(victim);
        }
        stop.store(true, Ordering::SeqCst);
    });
    let ledger = ledger.into_inner().expect("ledger");
    eprintln!(
        "{what} ({replay}): schedule:\n{}\ncreated {}, maybe created {}, destroyed {}, maybe \
         destroyed {}, signed {}, stale reads {:?}, errors {:?}",
        events.join("\n"),
        ledger.created.len(),
        ledger.maybe_created.len(),
        ledger.destroyed.len(),
        ledger.maybe_destroyed.len(),
        ledger.signed,
        ledger.stale_reads,
        ledger.errors
    );
    assert!(
        ledger.violations.is_empty(),
        "{what} ({replay}): during the load: {:?}",
        ledger.violations
    );
    assert!(
        !ledger.created.is_empty() && ledger.signed > 0,
        "{what} ({replay}): no progress at all under one fault at a time: {:?}",
        ledger.errors
    );

    module.finalize();
    let inv = assert_converged(cluster, &[0, 1, 2], &format!("{what} ({replay})"));
    let dups = duplicate_labels(&inv);
    let labels: BTreeSet<&str> = inv.values().map(String::as_str).collect();
    let lost: Vec<&String> = ledger
        .created
        .iter()
        .filter(|l| !ledger.destroyed.contains(*l) && !ledger.maybe_destroyed.contains(*l))
        .filter(|l| !labels.contains(l.as_str()))
        .collect();
    let back: Vec<&String> = ledger
        .destroyed
        .iter()
        .filter(|l| labels.contains(l.as_str()))
        .collect();
    let signing: Vec<String> = (0..3)
        .map(|n| format!("fault-sign-{n}"))
        .filter(|l| inv.values().filter(|v| *v == l).count() != 2)
        .collect();
    eprintln!(
        "{what}: of {} failed creations {} exist; of {} failed destructions {} took effect",
        ledger.maybe_created.len(),
        ledger
            .maybe_created
            .iter()
            .filter(|l| labels.contains(l.as_str()))
            .count(),
        ledger.maybe_destroyed.len(),
        ledger
            .maybe_destroyed
            .iter()
            .filter(|l| !labels.contains(l.as_str()))
            .count(),
    );
    assert!(
        lost.is_empty(),
        "{what} ({replay}): acknowledged creations lost: {lost:?}"
    );
    assert!(
        back.is_empty(),
        "{what} ({replay}): destroyed keys came back: {back:?}"
    );
    // Key pairs carry one label on both halves; everything else is one object per label.
    let dups: Vec<&String> = dups
        .iter()
        .filter(|l| !l.starts_with("fault-sign-") && *l != "quorum-ec")
        .collect();
    assert!(dups.is_empty(), "{what} ({replay}): labels twice: {dups:?}");
    assert!(
        signing.is_empty(),
        "{what} ({replay}): signing key pairs not whole: {signing:?}"
    );
}

#[test]
fn faults_lose_nothing() {
    let name = "faults_lose_nothing";
    let seed = std::env::var(SEED_ENV)
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .unwrap_or_else(|_| panic!("{SEED_ENV}={s}: not a u64"))
        })
        .unwrap_or_else(fresh_seed);
    if !hsm_tests::is_child(name) {
        eprintln!("{name}: seed {seed} (replay with {SEED_ENV}={seed})");
    }
    own_process(
        name,
        |_| vec![(SEED_ENV, OsString::from(seed.to_string()))],
        |_root| {
            let budget = Duration::from_secs(
                std::env::var(SECONDS_ENV)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(30),
            );
            eprintln!("{name}: seed {seed}, fault budget {budget:?}");
            let started = Instant::now();
            let mut cluster = MultiCluster::start(3);
            eprintln!("3-node cluster up in {:?}", started.elapsed());
            let mut module = Module::load(&cluster);
            quorum_loss(&mut cluster, &mut module);
            seeded_faults(&mut cluster, &mut module, seed, budget);
            eprintln!("{name}: {:?}", started.elapsed());
        },
    );
}
