//! One abusive client does not hurt its neighbours: while raw TLS clients with a valid
//! application certificate flood the node with wrong-password logins, and pipeline requests
//! for the largest answers (1 MiB of random) without ever reading them, a well-behaved
//! application signing through the real module keeps being served, and the node's memory
//! stays bounded (its resident set is sampled from `/proc` throughout).
//!
//! The bound: the node charges every large request and answer to its connection (32 MiB) and
//! to the node (256 MiB) until it is written, and pauses a connection over budget. Without
//! that, four such clients make the node queue up to 4 GiB of answers. When the abusers hang
//! up, what they left buffered at the node is not computed. The good client's latency is
//! printed, not asserted (the benchmark's `--abuse` mode measures it); only gross stalls
//! (seconds, where it takes microseconds) fail the test.

use cryptoki::mechanism::Mechanism;
use hsm_proto::frame;
use hsm_proto::msg::UserType;
use hsm_proto::{Envelope, Password, Request, RequestId, Response};
use hsm_tests::keys::{ec_pair, sha256};
use hsm_tests::{Cluster, isolated};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long the abuse lasts.
const ABUSE: Duration = Duration::from_secs(8);
/// Connections that never read their answers.
const HOARDERS: usize = 4;
/// The growth of the node's resident set the test allows (the budgets, the frame buffers,
/// Argon2id's memory, the allocator's slack).
const RSS_BOUND_MIB: u64 = 768;

async fn open(cluster: &Cluster) -> TlsStream<TcpStream> {
    let (cert, key) = cluster.client_cert("app");
    let config =
        hsm_proto::tls::client_config(&cluster.ca_cert(), &cert, &key).expect("client config");
    let tcp = TcpStream::connect(cluster.addr()).await.expect("tcp");
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("tls");
    frame::client_handshake(&mut tls, "abuse-test")
        .await
        .expect("handshake");
    tls
}

/// Writes `request` under increasing ids, as fast as the node takes them, counting them in
/// `sent`; never reads. Blocks for good once the node stops reading (it is aborted then).
async fn hoard(mut tls: TlsStream<TcpStream>, request: Request, sent: Arc<AtomicU64>) {
    let mut buf = Vec::new();
    let mut id = 0;
    loop {
        buf.clear();
        for _ in 0..16 {
            id += 1;
            frame::encode_into(&Envelope::new(RequestId(id), request.clone()), &mut buf)
                .expect("encode");
        }
        if tls.write_all(&buf).await.is_err() {
            return;
        }
        sent.fetch_add(16, Ordering::Relaxed);
    }
}

/// Logs in with a wrong password, again and again, reading each verdict.
async fn guess(mut tls: TlsStream<TcpStream>, stop: Arc<AtomicBool>) -> (u64, u64) {
    let (mut tried, mut throttled_ms) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        tried += 1;
        let login = Request::Login {
            user_type: UserType::User,
            username: format!("nobody{}", tried % 7),
            password: Password::new("wrong password".to_owned()),
        };
        let started = Instant::now();
        if frame::write_message(&mut tls, &Envelope::new(RequestId(tried), login))
            .await
            .is_err()
        {
            break;
        }
        let reply: Result<Envelope<Response>, _> = frame::read_message(&mut tls).await;
        match reply {
            Ok(r) => assert!(
                matches!(r.body, Response::Error(_)),
                "a wrong password was accepted: {:?}",
                r.body
            ),
            Err(_) => break,
        }
        throttled_ms += started.elapsed().as_millis() as u64;
    }
    (tried, throttled_ms)
}

/// The node's resident set and its peak, in MiB.
fn rss_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn an_abusive_client_does_not_starve_others_or_exhaust_memory() {
    isolated(
        "an_abusive_client_does_not_starve_others_or_exhaust_memory",
        |cluster, token| {
            let pid: u32 = std::fs::read_to_string(cluster.dir.join("daemon.pid"))
                .expect("daemon pid")
                .trim()
                .parse()
                .expect("pid");
            let session = token.user_session();
            let pair = ec_pair(&session, false, "abuse", b"abuse");
            let digest = sha256(b"abuse");
            let sign = |n: usize| -> Vec<Duration> {
                (0..n)
                    .map(|_| {
                        let t = Instant::now();
                        session
                            .sign(&Mechanism::Ecdsa, pair.private, &digest)
                            .expect("the good client's signature");
                        t.elapsed()
                    })
                    .collect()
            };
            let p99 = |mut v: Vec<Duration>| {
                v.sort();
                v[v.len() * 99 / 100]
            };
            let quiet = p99(sign(2000));
            let (rss_before, _) = rss_mib(pid);

            let stop = Arc::new(AtomicBool::new(false));
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let sent = Arc::new(AtomicU64::new(0));
            let (hoarders, guesser) = runtime.block_on(async {
                let mut hoarders = Vec::new();
                for _ in 0..HOARDERS {
                    let tls = open(cluster).await;
                    hoarders.push(tokio::spawn(hoard(
                        tls,
                        Request::GenerateRandom {
                            length: frame::MAX_RANDOM_LEN,
                        },
                        sent.clone(),
                    )));
                }
                let guesser = tokio::spawn(guess(open(cluster).await, stop.clone()));
                (hoarders, guesser)
            });

            // The good client signs throughout, and the node's memory is sampled.
            let peak = Arc::new(AtomicU64::new(0));
            let sampler = {
                let (stop, peak) = (stop.clone(), peak.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        peak.fetch_max(rss_mib(pid).0, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
            };
            let started = Instant::now();
            let mut during = Vec::new();
            while started.elapsed() < ABUSE {
                during.extend(sign(100));
            }
            stop.store(true, Ordering::Relaxed);
            sampler.join().expect("sampler");
            let (tried, guess_ms) = runtime.block_on(async {
                for h in hoarders {
                    h.abort();
                }
                guesser.await.expect("guesser")
            });
            let sent = sent.load(Ordering::Relaxed);
            drop(runtime);
            // The abusers hung up with thousands of requests still buffered at the node: it
            // must not go on computing them (that once took the node for seconds).
            std::thread::sleep(Duration::from_millis(200));
            let after = Instant::now();
            let _ = sign(500);
            let after = after.elapsed();
            eprintln!("500 signatures after the abusers left: {after:?}");
            assert!(
                after < Duration::from_secs(5),
                "500 signatures took {after:?} after the abusers hung up"
            );

            let ops = during.len();
            let longest = during.iter().max().copied().unwrap_or_default();
            let abused = p99(during);
            let peak = peak.load(Ordering::Relaxed);
            let (_, hwm) = rss_mib(pid);
            eprintln!(
                "good client: {ops} signatures in {:?}, p99 {abused:?} (quiet {quiet:?}, {:.1}x), \
                 longest {longest:?}",
                ABUSE,
                abused.as_secs_f64() / quiet.as_secs_f64()
            );
            eprintln!(
                "abusers: {sent} requests for 1 MiB sent unread by {HOARDERS} connections, \
                 {tried} wrong-password logins (mean {} ms each)",
                guess_ms / tried.max(1)
            );
            eprintln!(
                "node memory: {rss_before} MiB before, peak {peak} MiB sampled, high-water {hwm} MiB"
            );

            assert!(
                ops >= 100,
                "the good client made only {ops} signatures in {ABUSE:?}"
            );
            assert!(
                longest < Duration::from_secs(5),
                "a signature of the good client took {longest:?}"
            );
            assert!(
                tried < 5 + 3 * ABUSE.as_secs(),
                "{tried} wrong-password logins in {ABUSE:?}: the password throttle did not hold"
            );
            assert!(
                peak.saturating_sub(rss_before) < RSS_BOUND_MIB,
                "the node's memory grew from {rss_before} MiB to {peak} MiB under abuse"
            );
            // And it still serves a new client.
            token
                .session()
                .sign(&Mechanism::Ecdsa, pair.private, &digest)
                .expect("served after the abuse");
        },
    );
}
