//! Replication end to end, on one three-node cluster of real daemons, through the real module:
//!
//! 1. a key made through node A is usable at once through B and C (the module carries the
//!    highest log index it has seen from one node to the next, and a node waits for it):
//!    ECDSA signed through B verifies through C, AES-GCM encrypted through B decrypts
//!    through C; once with A the leader, once with A a follower (its write is forwarded);
//!    an object destroyed through C is gone through A and B; a label changed through B
//!    (`C_SetAttributeValue`) is seen through A and C;
//! 2. leader killed (SIGKILL) in the middle of 200 concurrent `C_GenerateKey`s from 12
//!    threads of one module process: every acknowledged key is on the survivors, and on the
//!    old leader once it is back; no label exists twice; every node holds the same objects;
//! 3. the wire protocol's request key: the same `GenerateKey` (same `Envelope.key`) sent to
//!    two nodes, one after the other and then at the same time, creates one key, and both
//!    answers name its id.

mod cluster_util;

use cluster_util::{
    Frozen, Module, Raw, Rng, assert_converged, duplicate_labels, fresh_seed, inventory, log_has,
    log_tail, own_process, settle, step, user_session,
};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use hsm_proto::msg::SessionId;
use hsm_proto::{Request, Response};
use hsm_tests::MultiCluster;
use hsm_tests::keys::{aes_key, attr_bytes, by_label, ec_pair, find, sha256};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The warning a node logs when it serves a request before it caught up with the client.
const STALE_READ: &str = "not applied here within";

fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
    Mechanism::AesGcm(GcmParams::new(iv, b"replication", 128.into()).expect("GCM params"))
}

/// Keys made through `a`, used through `b` and `c` right away.
fn usable_at_once(cluster: &MultiCluster, module: &mut Module, a: usize, b: usize, c: usize) {
    let (na, nb, nc) = (
        cluster.node(a).name.clone(),
        cluster.node(b).name.clone(),
        cluster.node(c).name.clone(),
    );
    let what = step(&format!(
        "keys made through {na} are usable at once through {nb} and {nc}"
    ));
    let (ec_label, aes_label) = (format!("rep-ec-{na}"), format!("rep-aes-{na}"));
    module.use_nodes(cluster, &[a]);
    let s = module.session();
    ec_pair(&s, true, &ec_label, ec_label.as_bytes());
    aes_key(&s, 32, &aes_label, &[Attribute::Token(true)]);
    drop(s);

    module.use_nodes(cluster, &[b]);
    let s = module.session();
    let private = find(&s, &by_label(&ec_label, Some(ObjectClass::PRIVATE_KEY)));
    assert_eq!(
        private.len(),
        1,
        "{what}: the private key made through {na} is not found through {nb}"
    );
    let digest = sha256(b"signed through one node, verified through another");
    let signature = s
        .sign(&Mechanism::Ecdsa, private[0], &digest)
        .unwrap_or_else(|e| panic!("{what}: C_Sign through {nb}: {e}"));
    let aes = find(&s, &by_label(&aes_label, Some(ObjectClass::SECRET_KEY)));
    assert_eq!(
        aes.len(),
        1,
        "{what}: the AES key is not found through {nb}"
    );
    let mut iv = [7u8; 12];
    let ciphertext = s
        .encrypt(&gcm(&mut iv), aes[0], b"encrypted through b")
        .unwrap_or_else(|e| panic!("{what}: C_Encrypt through {nb}: {e}"));
    drop(s);

    module.use_nodes(cluster, &[c]);
    let s = module.session();
    let public = find(&s, &by_label(&ec_label, Some(ObjectClass::PUBLIC_KEY)));
    assert_eq!(
        public.len(),
        1,
        "{what}: the public key is not found through {nc}"
    );
    s.verify(&Mechanism::Ecdsa, public[0], &digest, &signature)
        .unwrap_or_else(|e| panic!("{what}: C_Verify through {nc} of {nb}'s signature: {e}"));
    let aes = find(&s, &by_label(&aes_label, Some(ObjectClass::SECRET_KEY)));
    assert_eq!(
        aes.len(),
        1,
        "{what}: the AES key is not found through {nc}"
    );
    let mut iv = [7u8; 12];
    let plain = s
        .decrypt(&gcm(&mut iv), aes[0], &ciphertext)
        .unwrap_or_else(|e| panic!("{what}: C_Decrypt through {nc}: {e}"));
    assert_eq!(plain, b"encrypted through b", "{what}");
    drop(s);
    for i in [b, c] {
        assert!(
            !log_has(cluster, i, STALE_READ),
            "{what}: {} served a request before it had applied the client's index",
            cluster.node(i).name
        );
    }
}

/// A node frozen (SIGSTOP) while a key is committed without it, then thawed with a client's
/// requests already in its socket: a request carrying the key's index is served only once the
/// node has applied it. The raw client pipelines a `Status` (no index: answered at once, it
/// shows how far the node had got) and a `FindObjects` with the index; the module does the
/// same through `C_FindObjects` and `C_Sign`. Repeated until the node was seen behind.
fn lagging_node_waits(cluster: &MultiCluster, module: &mut Module) {
    let what = step("a node behind the client's index waits before serving");
    let leader = cluster.leader();
    let c = (leader + 1) % 3;
    let name = cluster.node(c).name.clone();
    let mut behind_seen = 0;
    for round in 0..10 {
        let label = format!("lag-{round}");
        // Connected and logged in before it freezes: once thawed, it reads our requests
        // from the socket at once, before the leader's next append-entries reach it.
        let mut rc = Raw::connect(cluster, c);
        let frozen = Frozen::new(cluster, c);
        let mut ra = Raw::connect(cluster, leader);
        let created = ra.call(0, 0, generate_aes(&label));
        let id = generated_id(&ra.node, &created);
        let answers = std::thread::scope(|scope| {
            let asking = scope.spawn(|| {
                rc.calls(vec![
                    (0, 0, Request::Status),
                    (
                        created.index,
                        0,
                        Request::FindObjects {
                            session: SessionId(1),
                            template: vec![hsm_proto::Attribute::Label(label.clone().into_bytes())],
                        },
                    ),
                ])
            });
            // Gives the client time to queue its requests at the frozen node; the check
            // holds whatever the timing, the timing only decides whether it was exercised.
            std::thread::sleep(Duration::from_millis(200));
            drop(frozen);
            asking.join().expect("client thread")
        });
        let applied = match &answers[0].body {
            Response::Status(s) => s.raft.as_ref().and_then(|r| r.applied).unwrap_or(0),
            other => panic!("{what}: Status on {name}: {other:?}"),
        };
        match &answers[1].body {
            Response::Objects(found) => {
                let ids: Vec<_> = found.iter().map(|o| o.id).collect();
                assert_eq!(
                    ids,
                    [id],
                    "{what}: {name} (applied {applied} when asked) answered a find with index {} \
                     without the key committed there",
                    created.index
                );
            }
            other => panic!("{what}: FindObjects on {name}: {other:?}"),
        }
        if applied < created.index {
            behind_seen += 1;
        }
        eprintln!(
            "{what}: round {round}: {name} had applied {applied} of {} when asked",
            created.index
        );
        if behind_seen >= 2 {
            break;
        }
    }
    assert!(
        behind_seen > 0,
        "{what}: {name} never lagged behind the client in 10 rounds; the wait was not exercised"
    );

    // The same through the module: made through the leader, used at once through the
    // thawed node.
    module.use_nodes(cluster, &[leader]);
    let s = module.session();
    ec_pair(&s, true, "lag-ec", b"lag-ec");
    drop(s);
    let frozen = Frozen::new(cluster, c);
    module.finalize();
    std::thread::scope(|scope| {
        let using = scope.spawn(|| {
            module.use_nodes(cluster, &[c]);
            let s = module.session();
            let private = find(&s, &by_label("lag-ec", Some(ObjectClass::PRIVATE_KEY)));
            assert_eq!(private.len(), 1, "{what}: lag-ec not found through {name}");
            s.sign(&Mechanism::Ecdsa, private[0], &sha256(b"lag"))
                .unwrap_or_else(|e| panic!("{what}: C_Sign through {name}: {e}"));
        });
        std::thread::sleep(Duration::from_millis(200));
        drop(frozen);
        using.join().expect("module thread");
    });
    assert!(
        !log_has(cluster, c, STALE_READ),
        "{what}: {name} gave up waiting for an index: {}",
        log_tail(cluster, c)
    );
}

fn destroyed_everywhere(cluster: &MultiCluster, module: &mut Module, a: usize, b: usize, c: usize) {
    let (na, nc) = (cluster.node(a).name.clone(), cluster.node(c).name.clone());
    let what = step(&format!(
        "objects destroyed through {nc} are gone everywhere"
    ));
    module.use_nodes(cluster, &[a]);
    let s = module.session();
    aes_key(&s, 32, "doomed-aes", &[Attribute::Token(true)]);
    ec_pair(&s, true, "doomed-ec", b"doomed-ec");
    drop(s);

    module.use_nodes(cluster, &[c]);
    let s = module.session();
    for label in ["doomed-aes", "doomed-ec"] {
        let found = find(&s, &by_label(label, None));
        assert!(
            !found.is_empty(),
            "{what}: {label} (made through {na}) not found through {nc}"
        );
        for h in found {
            s.destroy_object(h)
                .unwrap_or_else(|e| panic!("{what}: C_DestroyObject({label}) through {nc}: {e}"));
        }
    }
    drop(s);

    for i in [a, b, c] {
        module.use_nodes(cluster, &[i]);
        let s = module.session();
        for label in ["doomed-aes", "doomed-ec"] {
            let found = find(&s, &by_label(label, None));
            assert!(
                found.is_empty(),
                "{what}: {label} is still found through {} ({} objects)",
                cluster.node(i).name,
                found.len()
            );
        }
    }
}

fn renamed_everywhere(cluster: &MultiCluster, module: &mut Module, a: usize, b: usize, c: usize) {
    let nb = cluster.node(b).name.clone();
    let what = step(&format!("a label changed through {nb} is seen everywhere"));
    module.use_nodes(cluster, &[a]);
    let s = module.session();
    aes_key(&s, 32, "label-before", &[Attribute::Token(true)]);
    drop(s);

    module.use_nodes(cluster, &[b]);
    let s = module.session();
    let found = find(&s, &by_label("label-before", None));
    assert_eq!(found.len(), 1, "{what}: the key is not found through {nb}");
    s.update_attributes(found[0], &[Attribute::Label(b"label-after".to_vec())])
        .unwrap_or_else(|e| panic!("{what}: C_SetAttributeValue(CKA_LABEL) through {nb}: {e}"));
    drop(s);

    for i in [a, c, b] {
        module.use_nodes(cluster, &[i]);
        let s = module.session();
        let name = &cluster.node(i).name;
        assert!(
            find(&s, &by_label("label-before", None)).is_empty(),
            "{what}: the old label is still found through {name}"
        );
        let after = find(&s, &by_label("label-after", None));
        assert_eq!(
            after.len(),
            1,
            "{what}: the new label is not found through {name}"
        );
        assert_eq!(
            attr_bytes(&s, after[0], AttributeType::Label),
            b"label-after",
            "{what}: through {name}"
        );
    }
}

/// Leader killed in the middle of `TOTAL` concurrent key creations.
fn leader_killed_under_load(cluster: &mut MultiCluster, module: &mut Module) {
    const TOTAL: usize = 200;
    const THREADS: usize = 12;
    const KILL_AFTER: usize = 50;
    let what = step("leader killed (SIGKILL) in the middle of 200 concurrent key creations");
    let leader = cluster.leader();
    // The leader first: the module's connection dies with it, requests in flight included.
    let mut order = vec![leader];
    order.extend((0..cluster.len()).filter(|&i| i != leader));
    module.use_nodes(cluster, &order);

    let next = AtomicUsize::new(0);
    let acked = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<(), RvError>)>> = Mutex::new(Vec::new());
    let (ctx, slot, pin) = (module.ctx(), module.slot(), module.user_pin());
    let mut attempted_at_kill = 0;
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                let s = user_session(ctx, slot, pin).expect("session before the kill");
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= TOTAL {
                        break;
                    }
                    let template = [
                        Attribute::Token(true),
                        Attribute::Label(format!("load-{k:03}").into_bytes()),
                        Attribute::ValueLen(32.into()),
                        Attribute::Encrypt(true),
                    ];
                    let r = match s.generate_key(&Mechanism::AesKeyGen, &template) {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        }
                        Err(Error::Pkcs11(rv, _)) => Err(rv),
                        Err(other) => panic!("C_GenerateKey load-{k:03}: {other}"),
                    };
                    results.lock().expect("results").push((k, r));
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.load(Ordering::SeqCst) < KILL_AFTER {
            assert!(
                Instant::now() < deadline,
                "{what}: fewer than {KILL_AFTER} creations acknowledged in 120 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        attempted_at_kill = next.load(Ordering::SeqCst);
        cluster.kill(leader);
    });
    let results = results.into_inner().expect("results");
    assert_eq!(results.len(), TOTAL, "{what}: every creation returned");
    let ok: Vec<String> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(k, _)| format!("load-{k:03}"))
        .collect();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for (_, r) in &results {
        if let Err(rv) = r {
            *errors.entry(format!("{rv:?}")).or_default() += 1;
        }
    }
    let after_kill_ok = results
        .iter()
        .filter(|(k, r)| *k >= attempted_at_kill && r.is_ok())
        .count();
    eprintln!(
        "{what}: {} acknowledged, failures {errors:?}; killed {} after {attempted_at_kill} \
         attempts; {after_kill_ok} acknowledged among the later attempts",
        ok.len(),
        cluster.node(leader).name
    );
    assert!(
        after_kill_ok > 0,
        "{what}: no creation succeeded after the leader was killed (the module did not fail \
         over); failures: {errors:?}"
    );

    let check = |cluster: &MultiCluster, nodes: &[usize], index: u64, when: &str| {
        for &i in nodes {
            let inv = inventory(cluster, i, index);
            let name = &cluster.node(i).name;
            // Key pairs made by the earlier steps carry one label on both halves.
            let dups: Vec<String> = duplicate_labels(&inv)
                .into_iter()
                .filter(|l| l.starts_with("load-"))
                .collect();
            assert!(
                dups.is_empty(),
                "{what} ({when}): labels twice on {name}: {dups:?}"
            );
            let labels: std::collections::BTreeSet<&str> =
                inv.values().map(String::as_str).collect();
            let lost: Vec<&String> = ok.iter().filter(|l| !labels.contains(l.as_str())).collect();
            assert!(
                lost.is_empty(),
                "{what} ({when}): acknowledged creations missing on {name}: {lost:?}"
            );
        }
    };
    let (_, index) = settle(cluster);
    let survivors: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).collect();
    check(cluster, &survivors, index, "survivors");
    assert_converged(cluster, &survivors, &format!("{what} (survivors)"));

    let survivor_labels: std::collections::BTreeSet<String> =
        inventory(cluster, survivors[0], index)
            .into_values()
            .collect();
    let failed_but_made = results
        .iter()
        .filter(|(k, r)| r.is_err() && survivor_labels.contains(&format!("load-{k:03}")))
        .count();
    eprintln!(
        "{what}: {failed_but_made} of the {} failed creations exist all the same",
        results.len() - ok.len()
    );

    cluster.restart(leader);
    let (_, index) = settle(cluster);
    check(cluster, &[0, 1, 2], index, "old leader back");
    assert_converged(cluster, &[0, 1, 2], &format!("{what} (old leader back)"));
}

fn generate_aes(label: &str) -> Request {
    Request::GenerateKey {
        session: SessionId(7),
        mechanism: hsm_proto::Mechanism::plain(cryptoki_sys::CKM_AES_KEY_GEN as u64),
        template: vec![
            hsm_proto::Attribute::Token(true),
            hsm_proto::Attribute::Label(label.as_bytes().to_vec()),
            hsm_proto::Attribute::ValueLen(32),
            hsm_proto::Attribute::Encrypt(true),
        ],
    }
}

fn generated_id(node: &str, answer: &cluster_util::RawAnswer) -> hsm_proto::msg::ObjectId {
    match &answer.body {
        Response::KeyGenerated { key } => key.id,
        other => panic!("GenerateKey through {node}: {other:?}"),
    }
}

/// One object with `label` on every node, with id `id`.
fn exactly_one(cluster: &MultiCluster, label: &str, id: hsm_proto::msg::ObjectId, index: u64) {
    for i in 0..cluster.len() {
        let found = Raw::connect(cluster, i).find_label(index, label);
        let ids: Vec<_> = found.iter().map(|o| o.id).collect();
        assert_eq!(
            ids,
            [id],
            "request key: {} holds {} objects labelled {label} (answers named {id})",
            cluster.node(i).name,
            ids.len()
        );
    }
}

fn request_key_applies_once(cluster: &mut MultiCluster) {
    let what = step("the same GenerateKey (same request key) sent to two nodes creates one key");
    let (leader, _) = settle(cluster);
    let (x, y) = ((leader + 1) % 3, leader);
    let mut rng = Rng::new(fresh_seed());

    let key = rng.u128();
    let (mut rx, mut ry) = (Raw::connect(cluster, x), Raw::connect(cluster, y));
    let first = rx.call(0, key, generate_aes("idem-sequential"));
    let id1 = generated_id(&rx.node, &first);
    let second = ry.call(first.index, key, generate_aes("idem-sequential"));
    let id2 = generated_id(&ry.node, &second);
    assert_eq!(
        id1, id2,
        "{what}: the retry on another node answered another object"
    );
    exactly_one(
        cluster,
        "idem-sequential",
        id1,
        first.index.max(second.index),
    );

    let key = rng.u128();
    let (mut rx, mut ry) = (
        Raw::connect(cluster, x),
        Raw::connect(cluster, (leader + 2) % 3),
    );
    let (a, b) = std::thread::scope(|scope| {
        let ta = scope.spawn(|| rx.call(0, key, generate_aes("idem-concurrent")));
        let tb = scope.spawn(|| ry.call(0, key, generate_aes("idem-concurrent")));
        (ta.join().expect("thread"), tb.join().expect("thread"))
    });
    let (ida, idb) = (generated_id("x", &a), generated_id("y", &b));
    assert_eq!(
        ida, idb,
        "{what}: two concurrent sends of one request key named two objects"
    );
    exactly_one(cluster, "idem-concurrent", ida, a.index.max(b.index));
}

#[test]
fn replication_through_every_node() {
    own_process(
        "replication_through_every_node",
        |_| Vec::new(),
        |_root| {
            let started = Instant::now();
            let mut cluster = MultiCluster::start(3);
            eprintln!("3-node cluster up in {:?}", started.elapsed());
            let mut module = Module::load(&cluster);
            let leader = cluster.leader();
            let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);

            usable_at_once(&cluster, &mut module, leader, f1, f2);
            usable_at_once(&cluster, &mut module, f1, f2, leader);
            destroyed_everywhere(&cluster, &mut module, f1, f2, leader);
            renamed_everywhere(&cluster, &mut module, f2, f1, leader);
            lagging_node_waits(&cluster, &mut module);
            module.finalize();
            assert_converged(&mut cluster, &[0, 1, 2], "after the replication steps");

            leader_killed_under_load(&mut cluster, &mut module);
            module.finalize();
            request_key_applies_once(&mut cluster);
            eprintln!("replication_through_every_node: {:?}", started.elapsed());
        },
    );
}
