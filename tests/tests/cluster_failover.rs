//! The module as a cluster client, on one three-node cluster of real daemon processes, through
//! the real `libhsm_pkcs11.so` (one process, one cluster, the steps in order):
//!
//! 1. **membership**: configured with one seed node, the module learns the other members
//!    and spreads 16 signing threads over all three (each node's request counter grows);
//! 2. **kill -9 under load**: 16 threads run a mix (ECDSA, RSA, AES-GCM, HMAC, multi-part
//!    hash-then-sign) while the leader is killed with SIGKILL and restarted, then another node:
//!    zero failed calls; the step prints the operations, the failovers (from the module's
//!    log), the longest stall, and every ECDSA signature is verified with the `p256` crate;
//! 3. **sealed**: the same while a node is restarted sealed (SIGTERM, start, no unseal) and
//!    unsealed later: zero failed calls, and the node is used again once unsealed;
//! 4. **a fresh key outlives the node that made it**: a key pair is created, the node that
//!    served the creation is killed at once, and the key signs through another node;
//! 5. **a node added while the application runs** (`hsmctl node add` … `node join`) starts
//!    receiving its requests, without a change to the module's configuration;
//! 6. **fork**, as a pre-forking server does it (a C program, `tests/c/fork_probe.c`): after
//!    `fork()` the parent still signs; each child's first call gets
//!    `CKR_CRYPTOKI_NOT_INITIALIZED`, and after its own `C_Initialize` it signs too;
//! 7. **`C_Finalize` racing 16 signing threads**, many rounds: every call either works or
//!    gets `CKR_CRYPTOKI_NOT_INITIALIZED`, nothing crashes or hangs.
//!
//! Timing is measured and printed, not asserted (the stall figure is for the reader and the
//! benchmark; two cores run three daemons and the load), with one exception: with no fault at
//! all (step 1), no call may wait anywhere near the request timeout (10 s), which only a
//! lost wake-up in the module would cause.

mod cluster_util;

use cluster_util::{Module, own_process, step, user_session, wait_for};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_tests::MultiCluster;
use hsm_tests::keys::unwrap_ec_point;
use hsm_tests::keys::{KeyPair, attr_bytes, by_label, ec_pair, find, rsa_pair, sha256};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const THREADS: usize = 16;
/// A guard against hangs, not a performance bound.
const SLOW: Duration = Duration::from_secs(120);

struct Keys {
    ec: KeyPair,
    ec_point: Vec<u8>,
    rsa: KeyPair,
    aes: ObjectHandle,
    hmac: ObjectHandle,
}

/// What the load threads saw.
#[derive(Default)]
struct Tally {
    ops: u64,
    failures: Vec<String>,
    longest: Duration,
    /// (digest, signature) of every ECDSA signature, verified at the end.
    ecdsa: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ops += other.ops;
        self.failures.extend(other.failures);
        self.longest = self.longest.max(other.longest);
        self.ecdsa.extend(other.ecdsa);
    }
}

fn make_keys(s: &Session) -> Keys {
    let ec = ec_pair(s, true, "fo-ec", b"fo-ec");
    let ec_point = unwrap_ec_point(&attr_bytes(s, ec.public, AttributeType::EcPoint));
    let rsa = rsa_pair(s, 2048, true, "fo-rsa");
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"fo-aes".to_vec()),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .expect("AES key");
    let hmac = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"fo-hmac".to_vec()),
                Attribute::ValueLen(32.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
        )
        .expect("HMAC key");
    Keys {
        ec,
        ec_point,
        rsa,
        aes,
        hmac,
    }
}

/// One operation of the mix; `Ok(false)` when a result is wrong.
fn one_op(
    s: &Session,
    keys: &Keys,
    worker: usize,
    i: u64,
    tally: &mut Tally,
) -> Result<bool, Error> {
    let data = format!("worker {worker} op {i}").into_bytes();
    match i % 5 {
        0 => {
            let digest = sha256(&data);
            let sig = s.sign(&Mechanism::Ecdsa, keys.ec.private, &digest)?;
            tally.ecdsa.push((digest, sig));
            Ok(true)
        }
        1 => {
            let sig = s.sign(&Mechanism::Sha256RsaPkcs, keys.rsa.private, &data)?;
            s.verify(&Mechanism::Sha256RsaPkcs, keys.rsa.public, &data, &sig)?;
            Ok(true)
        }
        2 => {
            let mut iv = [0u8; 12];
            iv[..8].copy_from_slice(&i.to_be_bytes());
            iv[8] = worker as u8;
            let ct = s.encrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, b"fo", 128.into()).expect("GCM")),
                keys.aes,
                &data,
            )?;
            let pt = s.decrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, b"fo", 128.into()).expect("GCM")),
                keys.aes,
                &ct,
            )?;
            Ok(pt == data)
        }
        3 => {
            let mac = s.sign(&Mechanism::Sha256Hmac, keys.hmac, &data)?;
            s.verify(&Mechanism::Sha256Hmac, keys.hmac, &data, &mac)?;
            Ok(true)
        }
        _ => {
            // Multi-part hash-then-sign: the module holds the input until C_SignFinal.
            let (a, b) = data.split_at(data.len() / 2);
            s.sign_init(&Mechanism::EcdsaSha256, keys.ec.private)?;
            s.sign_update(a)?;
            s.sign_update(b)?;
            let sig = s.sign_final()?;
            tally.ecdsa.push((sha256(&data), sig));
            Ok(true)
        }
    }
}

/// A load thread: runs the mix until `stop`, timing every operation.
fn load(module: &Module, keys: &Keys, worker: usize, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let s = user_session(module.ctx(), module.slot(), module.user_pin()).expect("session");
    let mut i = worker as u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match one_op(&s, keys, worker, i, &mut tally) {
            Ok(true) => {}
            Ok(false) => tally.failures.push(format!("op {}: wrong result", i % 5)),
            Err(e) => tally.failures.push(format!("op {}: {e}", i % 5)),
        }
        tally.longest = tally.longest.max(started.elapsed());
        tally.ops += 1;
        i += THREADS as u64;
    }
    tally
}

/// Runs `threads` load threads while `faults` runs on this thread; returns their tally.
fn under_load(module: &Module, keys: &Keys, threads: usize, faults: impl FnOnce()) -> Tally {
    let stop = AtomicBool::new(false);
    let total = Mutex::new(Tally::default());
    std::thread::scope(|scope| {
        for w in 0..threads {
            let (stop, total) = (&stop, &total);
            scope.spawn(move || {
                let t = load(module, keys, w, stop);
                total.lock().expect("tally").merge(t);
            });
        }
        faults();
        stop.store(true, Ordering::Relaxed);
    });
    total.into_inner().expect("tally")
}

/// Every ECDSA signature verifies under the key's public point.
fn verify_all(point: &[u8], sigs: &[(Vec<u8>, Vec<u8>)]) -> usize {
    let key = VerifyingKey::from_sec1_bytes(point).expect("P-256 point");
    let bad = sigs
        .iter()
        .filter(|(digest, sig)| {
            Signature::from_slice(sig)
                .map(|sig| key.verify_prehash(digest, &sig).is_err())
                .unwrap_or(true)
        })
        .count();
    assert_eq!(
        bad,
        0,
        "{bad} of {} ECDSA signatures do not verify",
        sigs.len()
    );
    sigs.len()
}

fn requests(cluster: &MultiCluster, i: usize) -> u64 {
    cluster.status(i).map_or(0, |s| s.requests)
}

fn all_requests(cluster: &MultiCluster) -> Vec<u64> {
    (0..cluster.len()).map(|i| requests(cluster, i)).collect()
}

/// Lines of the module's log that contain `needle`.
fn module_log_count(cluster: &MultiCluster, needle: &str) -> usize {
    std::fs::read_to_string(cluster.module_log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until node `i` has answered `more` requests beyond `from`.
fn wait_used(cluster: &MultiCluster, i: usize, more: u64, what: &str) {
    let from = requests(cluster, i);
    wait_for(what, SLOW, || {
        let now = requests(cluster, i);
        (now >= from + more, now)
    });
}

fn report(what: &str, tally: &Tally, threads: usize, failovers: usize) {
    eprintln!(
        "{what}: {} operations by {threads} threads, {} failed, {failovers} failovers, longest \
         stall {:?}",
        tally.ops,
        tally.failures.len(),
        tally.longest
    );
    let shown: Vec<&String> = tally.failures.iter().take(10).collect();
    assert!(
        tally.failures.is_empty(),
        "{what}: {} calls failed, first: {shown:#?}",
        tally.failures.len()
    );
}

fn membership(cluster: &MultiCluster, module: &Module, keys: &Keys) {
    let what = step("one seed node: the module learns the members and uses all three");
    let before = all_requests(cluster);
    let tally = under_load(module, keys, THREADS, || {
        std::thread::sleep(Duration::from_secs(4))
    });
    let after = all_requests(cluster);
    let spread: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!("requests per node during the load: {spread:?}");
    report(&what, &tally, THREADS, 0);
    assert!(
        tally.longest < Duration::from_secs(5),
        "{what}: a call took {:?} with every node up: a waiting thread was not woken",
        tally.longest
    );
    for (i, n) in spread.iter().enumerate() {
        assert!(
            *n >= tally.ops / 20,
            "{what}: node {} served only {n} of about {} requests: {spread:?}",
            i + 1,
            tally.ops
        );
    }
    verify_all(&keys.ec_point, &tally.ecdsa);
}

fn kill_under_load(cluster: &mut MultiCluster, module: &Module, keys: &Keys) {
    let what = step("kill -9 the leader, restart it, then kill another node, under load");
    let failovers_before = module_log_count(cluster, "retrying on");
    let cluster_cell = Mutex::new(&mut *cluster);
    let tally = under_load(module, keys, THREADS, || {
        let mut cluster = cluster_cell.lock().expect("cluster");
        std::thread::sleep(Duration::from_secs(2));
        let first = cluster.leader();
        eprintln!("killing node{} (the leader)", first + 1);
        cluster.kill(first);
        std::thread::sleep(Duration::from_secs(3));
        cluster.restart(first);
        wait_used(&cluster, first, 500, "the restarted node is used again");
        let second = (first + 1) % 3;
        eprintln!("killing node{}", second + 1);
        cluster.kill(second);
        std::thread::sleep(Duration::from_secs(3));
        cluster.restart(second);
        wait_used(
            &cluster,
            second,
            500,
            "the second restarted node is used again",
        );
        std::thread::sleep(Duration::from_secs(1));
    });
    let failovers = module_log_count(cluster, "retrying on") - failovers_before;
    report(&what, &tally, THREADS, failovers);
    let n = verify_all(&keys.ec_point, &tally.ecdsa);
    eprintln!("{n} ECDSA signatures verified");
}

fn sealed_under_load(cluster: &mut MultiCluster, module: &Module, keys: &Keys) {
    let what = step("a node restarted sealed, then unsealed, under load");
    let failovers_before = module_log_count(cluster, "retrying on");
    let victim = (cluster.leader() + 2) % 3;
    let cluster_cell = Mutex::new(&mut *cluster);
    let tally = under_load(module, keys, THREADS, || {
        let mut cluster = cluster_cell.lock().expect("cluster");
        std::thread::sleep(Duration::from_secs(2));
        eprintln!("restarting node{} sealed", victim + 1);
        cluster.restart_sealed(victim);
        let sealed_from = requests(&cluster, victim);
        std::thread::sleep(Duration::from_secs(3));
        // Status requests (ours, the module's probes) are all a sealed node answers.
        let sealed_to = requests(&cluster, victim);
        eprintln!(
            "requests answered by the sealed node in 3 s: {}",
            sealed_to - sealed_from
        );
        cluster.unseal(victim);
        wait_used(&cluster, victim, 500, "the unsealed node is used again");
        std::thread::sleep(Duration::from_secs(1));
    });
    let failovers = module_log_count(cluster, "retrying on") - failovers_before;
    report(&what, &tally, THREADS, failovers);
    verify_all(&keys.ec_point, &tally.ecdsa);
}

fn fresh_key_survives(cluster: &mut MultiCluster, module: &Module) {
    let what = step("a key pair is created, its node killed at once, the key used elsewhere");
    let s = module.session();
    let pair = ec_pair(&s, true, "fo-fresh", b"fo-fresh");
    let log = std::fs::read_to_string(cluster.module_log_path()).expect("module log");
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("GenerateKeyPair") && l.contains("applied through"))
        .unwrap_or_else(|| panic!("{what}: the module's log names no node for the creation"))
        .to_owned();
    let served = (0..3)
        .find(|&i| line.contains(&format!("applied through {} ", cluster.node(i).addr())))
        .unwrap_or_else(|| panic!("{what}: no node in {line:?}"));
    eprintln!("created through node{}; killing it", served + 1);
    cluster.kill(served);
    let digest = sha256(b"fresh key");
    let sig = s
        .sign(&Mechanism::Ecdsa, pair.private, &digest)
        .unwrap_or_else(|e| panic!("{what}: sign after the node died: {e}"));
    let point = unwrap_ec_point(&attr_bytes(&s, pair.public, AttributeType::EcPoint));
    verify_all(&point, &[(digest, sig)]);
    drop(s);
    cluster.restart(served);
}

fn added_node_is_used(cluster: &mut MultiCluster, module: &Module, keys: &Keys) {
    let what = step("a node added while the application runs receives its requests");
    let cluster_cell = Mutex::new(&mut *cluster);
    let tally = under_load(module, keys, 4, || {
        let mut cluster = cluster_cell.lock().expect("cluster");
        let i = cluster.add_node();
        eprintln!("added node{}", i + 1);
        wait_used(
            &cluster,
            i,
            200,
            "the added node receives the module's requests",
        );
    });
    report(&what, &tally, 4, 0);
    assert!(
        module_log_count(cluster, "new cluster member node4") >= 1,
        "{what}: the module did not log learning of node4"
    );
}

/// A pre-forking server, in C (`tests/c/fork_probe.c`): the parent signs, forks workers that
/// must initialize before their first call works, and signs on while they run.
fn fork_workers(cluster: &MultiCluster, module: &mut Module) {
    let what = step("fork: a parent and 4 pre-forked workers all sign");
    // The probe reads the configuration the harness wrote; the module here stays out of it.
    module.finalize();
    static PROBE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let probe =
        PROBE.get_or_init(|| hsm_tests::probe::compile_c("fork_probe.c", "hsm-tests-fork-probe"));
    let conf = std::env::var_os(hsm_proto::config::MODULE_CONFIG_ENV).expect("module config");
    let out = std::process::Command::new(probe)
        .arg(&hsm_tests::artifacts().module)
        .arg(module.user_pin())
        .args(["fo-ec", "4", "20"])
        .env(hsm_proto::config::MODULE_CONFIG_ENV, conf)
        .output()
        .expect("run the fork probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "fork probe:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: the fork probe failed ({}):\n{stdout}",
        out.status
    );
    assert!(stdout.contains("children_ok 4"), "{what}: {stdout}");
    assert!(stdout.contains("parent_signed 21"), "{what}: {stdout}");
    module.use_nodes(cluster, &[0]);
}

fn finalize_races(cluster: &MultiCluster, module: &mut Module, rounds: usize) {
    let what = step(&format!(
        "C_Finalize racing {THREADS} signing threads, {rounds} rounds"
    ));
    let mut rng = cluster_util::Rng::new(cluster_util::fresh_seed());
    let mut calls = 0u64;
    for round in 0..rounds {
        module.use_nodes(cluster, &[0, 1, 2]);
        let key = {
            let s = module.session();
            find(&s, &by_label("fo-ec", Some(ObjectClass::PRIVATE_KEY)))
                .into_iter()
                .next()
                .expect("fo-ec")
        };
        let wrong = Mutex::new(Vec::new());
        let done = Mutex::new(0u64);
        let delay = Duration::from_millis(rng.range(20, 400));
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let (module, wrong, done) = (&*module, &wrong, &done);
                scope.spawn(move || {
                    let ctx = module.ctx();
                    let s = match user_session(ctx, module.slot(), module.user_pin()) {
                        Ok(s) => s,
                        Err(Error::Pkcs11(RvError::CryptokiNotInitialized, _)) => return,
                        Err(e) => {
                            wrong.lock().expect("wrong").push(format!("session: {e}"));
                            return;
                        }
                    };
                    let mut n = 0u64;
                    loop {
                        match s.sign(&Mechanism::Ecdsa, key, &[7u8; 32]) {
                            Ok(_) => n += 1,
                            Err(Error::Pkcs11(RvError::CryptokiNotInitialized, _)) => break,
                            Err(e) => {
                                wrong.lock().expect("wrong").push(format!("sign: {e}"));
                                break;
                            }
                        }
                    }
                    *done.lock().expect("done") += n;
                });
            }
            std::thread::sleep(delay);
            let ctx = module.ctx().clone();
            let started = Instant::now();
            ctx.finalize().expect("C_Finalize");
            assert!(
                started.elapsed() < SLOW,
                "{what}: C_Finalize took {:?}",
                started.elapsed()
            );
        });
        module.forget_initialized();
        let wrong = wrong.into_inner().expect("wrong");
        assert!(
            wrong.is_empty(),
            "{what}: round {round}: calls racing C_Finalize got {wrong:?}"
        );
        calls += done.into_inner().expect("done");
    }
    eprintln!("{what}: {calls} signatures across {rounds} rounds, no crash, no hang");
}

#[test]
fn the_module_fails_over_and_survives_fork_and_finalize() {
    let name = "the_module_fails_over_and_survives_fork_and_finalize";
    own_process(
        name,
        |_| vec![],
        |_root| {
            let started = Instant::now();
            let mut cluster = MultiCluster::start(3);
            eprintln!("3-node cluster up in {:?}", started.elapsed());
            let mut module = Module::load(&cluster);
            // One seed; the module finds the rest.
            module
                .options
                .insert("discover_members".into(), true.into());
            module
                .options
                .insert("membership_refresh_ms".into(), 1000.into());
            module.use_nodes(&cluster, &[0]);
            let keys = {
                let s = module.session();
                make_keys(&s)
            };
            membership(&cluster, &module, &keys);
            kill_under_load(&mut cluster, &module, &keys);
            sealed_under_load(&mut cluster, &module, &keys);
            fresh_key_survives(&mut cluster, &module);
            added_node_is_used(&mut cluster, &module, &keys);
            fork_workers(&cluster, &mut module);
            let rounds = std::env::var("HSM_FINALIZE_ROUNDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(12);
            finalize_races(&cluster, &mut module, rounds);
            eprintln!("{name}: {:?}", started.elapsed());
        },
    );
}
