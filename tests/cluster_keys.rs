//! Idempotency keys shared across nodes, against a real etcd (`/usr/bin/etcd`, Debian's
//! `etcd-server`; `tests/run.sh` installs it): many tasks on two nodes claiming one
//! key, duplicates getting the first answer or waiting for it, shared bucket leases,
//! expiry after the window, takeover of a first that never settled, and a stopped
//! etcd reported as unreachable.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard::cluster::keys::{Answer, Claim, Held, Limits, SharedKeys, MAX_ANSWER_BODY};
use switchyard::cluster::StateError;

use common::etcd::Etcd;

const HOUR: Duration = Duration::from_secs(3600);

fn limits(wait: Duration) -> Limits {
    Limits {
        window: HOUR,
        wait,
        in_flight: Duration::from_secs(60),
    }
}

/// `keys`' claim of the fresh `key` as message "first".
async fn first(keys: &SharedKeys, key: &str) -> Held {
    let Claim::First(held) = keys
        .claim(key, "first", limits(Duration::ZERO))
        .await
        .unwrap()
    else {
        panic!("a fresh key is a first");
    };
    held
}

/// `keys` claiming `key` as message "second" in a task of its own, waiting up to
/// `wait` for the first's answer.
fn second_in_task(
    keys: &Arc<SharedKeys>,
    key: &str,
    wait: Duration,
) -> tokio::task::JoinHandle<Result<Claim, StateError>> {
    let (keys, key) = (keys.clone(), key.to_string());
    tokio::spawn(async move { keys.claim(&key, "second", limits(wait)).await })
}

fn ok_answer(body: &'static [u8]) -> Answer {
    Answer {
        status: 201,
        content_type: Some("application/json".into()),
        master: "m1".into(),
        body: Some(Bytes::from_static(body)),
    }
}

/// Claims until `done` says yes, or panics after `secs`.
async fn claim_until(
    keys: &SharedKeys,
    key: &str,
    id: &str,
    limits: Limits,
    secs: u64,
    done: impl Fn(&Claim) -> bool,
) -> Claim {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let claim = keys.claim(key, id, limits).await.expect("etcd answers");
        if done(&claim) {
            return claim;
        }
        assert!(Instant::now() < deadline, "still {claim:?} after {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_many_concurrent_claims_on_two_nodes_is_first_and_the_rest_get_its_answer() {
    let etcd = Etcd::start();
    let nodes = [etcd.keys("a").await, etcd.keys("b").await];
    for round in 0..10 {
        let key = format!("client\u{0}key {round}");
        let mut tasks = Vec::new();
        for task in 0..16 {
            let keys = nodes[task % 2].clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("id-{task}");
                let claim = keys.claim(&key, &id, limits(Duration::ZERO)).await;
                ((id, task % 2), claim.expect("etcd answers"))
            }));
        }
        let mut firsts = Vec::new();
        let mut duplicates = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                (id, Claim::First(held)) => firsts.push((id, held)),
                (_, Claim::Duplicate(record)) => duplicates.push(record),
            }
        }
        assert_eq!(firsts.len(), 1, "round {round}: exactly one first");
        let ((first_id, node), held) = firsts.pop().expect("one");
        assert_eq!(duplicates.len(), 15);
        for d in &duplicates {
            assert_eq!(d.id, first_id, "every duplicate names the first message");
            assert!(d.answer.is_none(), "not answered yet");
        }
        let answer = ok_answer(b"{\"ok\":true}\n");
        assert!(nodes[node].record(&held, &answer).await.expect("recorded"));
        for keys in &nodes {
            let Claim::Duplicate(record) = keys
                .claim(&key, "late", limits(Duration::ZERO))
                .await
                .unwrap()
            else {
                panic!("a repeat after the answer is a duplicate");
            };
            assert_eq!(record.id, first_id);
            assert_eq!(record.answer.as_ref(), Some(&answer));
        }
    }
}

#[tokio::test]
async fn a_waiting_duplicate_is_woken_by_the_answer_or_takes_a_released_key() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.keys("a").await, etcd.keys("b").await);

    let held = first(&a, "k1").await;
    let waiter = second_in_task(&b, "k1", Duration::from_secs(60));
    // The waiter has read the pending record and is watching it: give it the answer.
    etcd.wait_for_watchers().await;
    let answer = ok_answer(b"delivered");
    assert!(a.record(&held, &answer).await.unwrap());
    let woken = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the answer wakes the waiting duplicate")
        .expect("task")
        .expect("etcd answers");
    let Claim::Duplicate(record) = woken else {
        panic!("{woken:?}");
    };
    assert_eq!((record.id.as_str(), record.node.as_str()), ("first", "a"));
    assert_eq!(record.answer, Some(answer));

    // A first that nobody took is released: the waiting duplicate becomes the first.
    let held = first(&a, "k2").await;
    let waiter = second_in_task(&b, "k2", Duration::from_secs(60));
    etcd.wait_for_watchers().await;
    assert!(a.release(&held).await.unwrap());
    let woken = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the release wakes the waiting duplicate")
        .expect("task")
        .expect("etcd answers");
    assert!(matches!(woken, Claim::First(_)), "{woken:?}");

    // A duplicate whose wait runs out gets the pending record.
    first(&a, "k3").await;
    let claim = b
        .claim("k3", "second", limits(Duration::from_millis(200)))
        .await
        .unwrap();
    assert!(
        matches!(&claim, Claim::Duplicate(r) if r.id == "first" && r.answer.is_none()),
        "{claim:?}"
    );
}

#[tokio::test]
async fn a_duplicate_waiting_when_etcd_stops_stays_a_duplicate_of_the_first_in_flight() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.keys("a").await, etcd.keys("b").await);
    first(&a, "k").await;
    let waiter = second_in_task(&b, "k", Duration::from_secs(600));
    etcd.wait_for_watchers().await;
    drop(etcd);
    let claim = tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("a lost watch ends the wait")
        .expect("task");
    // Sending it would deliver the message twice: it is the first's duplicate.
    assert!(
        matches!(&claim, Ok(Claim::Duplicate(r)) if r.id == "first" && r.answer.is_none()),
        "{claim:?}"
    );
}

#[tokio::test]
async fn keys_claimed_in_one_bucket_share_one_lease_per_node() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.keys("a").await, etcd.keys("b").await);
    for i in 0..50 {
        for keys in [&a, &b] {
            keys.claim(&format!("key {i}"), "id", limits(Duration::ZERO))
                .await
                .unwrap();
        }
    }
    // A one-hour window has 450 s buckets: the run crosses at most one boundary.
    assert!(a.leases_granted() <= 2, "{}", a.leases_granted());
    assert!(b.leases_granted() <= 2, "{}", b.leases_granted());
    let mut client = etcd.client().await;
    let leases = client.leases().await.unwrap().leases().len();
    assert!(
        (2..=4).contains(&leases),
        "{leases} leases for 50 keys on two nodes"
    );
    let kvs = client
        .get(
            "/sy/keys/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(kvs.kvs().len(), 50);
    assert!(
        kvs.kvs().iter().all(|kv| kv.lease() != 0),
        "every record is leased"
    );
    assert!(kvs
        .kvs()
        .iter()
        .all(|kv| kv.key().len() == "/sy/keys/".len() + 64));
}

#[tokio::test]
async fn a_key_is_first_again_after_its_window_and_its_record_then_expires() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.keys("a").await, etcd.keys("b").await);
    let short = Limits {
        window: Duration::from_secs(2),
        wait: Duration::ZERO,
        in_flight: Duration::from_secs(60),
    };
    let Claim::First(held) = a.claim("k", "1", short).await.unwrap() else {
        panic!("a fresh key is a first");
    };
    a.record(&held, &ok_answer(b"x")).await.unwrap();
    assert!(matches!(
        b.claim("k", "2", short).await.unwrap(),
        Claim::Duplicate(_)
    ));
    // Past the window the record's lease (window plus one bucket) runs out: the key
    // is gone from etcd.
    let mut client = etcd.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(held.path(), None).await.unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "the record outlived its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(matches!(
        b.claim("k", "3", short).await.unwrap(),
        Claim::First(_)
    ));

    // A record still there but past the window is taken over as a first.
    let long_lease = Limits {
        window: HOUR,
        ..short
    };
    let Claim::First(_) = a.claim("k2", "1", long_lease).await.unwrap() else {
        panic!("a fresh key is a first");
    };
    claim_until(&b, "k2", "2", short, 30, |c| matches!(c, Claim::First(_))).await;
}

#[tokio::test]
async fn a_first_that_never_settles_is_taken_over_after_its_time_in_flight() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.keys("a").await, etcd.keys("b").await);
    let quick = Limits {
        window: HOUR,
        wait: Duration::ZERO,
        in_flight: Duration::from_millis(100),
    };
    let Claim::First(_) = a.claim("k", "1", quick).await.unwrap() else {
        panic!("a fresh key is a first");
    };
    let Claim::Duplicate(pending) = b.claim("k", "2", quick).await.unwrap() else {
        panic!("in flight: a duplicate");
    };
    assert_eq!(pending.id, "1");
    let taken = claim_until(&b, "k", "3", quick, 30, |c| matches!(c, Claim::First(_))).await;
    let Claim::First(held) = taken else {
        unreachable!()
    };
    // The first node's late answer no longer lands: the key is the new claim's.
    let Claim::Duplicate(now) = a.claim("k", "4", quick).await.unwrap() else {
        panic!("the new claim holds it");
    };
    assert_eq!((now.id.as_str(), now.node.as_str()), ("3", "b"));
    assert!(b.record(&held, &ok_answer(b"y")).await.unwrap());
}

#[tokio::test]
async fn a_large_answer_is_kept_without_its_body() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.keys("a").await, etcd.keys("b").await);
    let Claim::First(held) = a.claim("big", "1", limits(Duration::ZERO)).await.unwrap() else {
        panic!("a fresh key is a first");
    };
    let big = Answer {
        body: Some(Bytes::from(vec![b'x'; MAX_ANSWER_BODY + 1])),
        ..ok_answer(b"")
    };
    assert!(a.record(&held, &big).await.unwrap());
    let Claim::Duplicate(record) = b.claim("big", "2", limits(Duration::ZERO)).await.unwrap()
    else {
        panic!("a duplicate");
    };
    let answer = record.answer.expect("answered");
    assert_eq!((answer.status, answer.body), (201, None));
}

#[tokio::test]
async fn a_stopped_etcd_fails_claims_as_unreachable_and_they_then_fail_at_once() {
    let etcd = Etcd::start();
    let a = etcd.keys("a").await;
    a.claim("k", "1", limits(Duration::ZERO)).await.unwrap();
    drop(etcd);
    let claim = tokio::time::timeout(
        Duration::from_secs(30),
        a.claim("k2", "2", limits(Duration::ZERO)),
    )
    .await
    .expect("a claim on a stopped etcd fails, bounded by the claim timeout");
    assert!(
        matches!(claim, Err(StateError::Unreachable(_))),
        "{claim:?}"
    );
    let again = a.claim("k3", "3", limits(Duration::ZERO)).await;
    assert!(
        matches!(&again, Err(StateError::Unreachable(m)) if m.contains("not asked again")),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_frozen_etcd_is_skipped_after_one_timeout_and_asked_again_once_it_answers() {
    let etcd = Etcd::start();
    let endpoints = &etcd.urls();
    let a = SharedKeys::connect(endpoints, "/sy/keys/", "a", Duration::from_millis(300))
        .await
        .expect("connect");
    a.claim("k", "1", limits(Duration::ZERO)).await.unwrap();
    let signal = |sig: &str| {
        let pid = etcd.pid().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP");
    // The signal is sent: wait until the process is stopped.
    let stat = format!("/proc/{}/stat", etcd.pid());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&stat)
        .unwrap_or_default()
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('T'))
    {
        assert!(Instant::now() < deadline, "etcd never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let claim = tokio::time::timeout(
        Duration::from_secs(30),
        a.claim("k2", "2", limits(Duration::ZERO)),
    )
    .await
    .expect("the claim timeout bounds a claim on a frozen etcd");
    let skipped = a.claim("k3", "3", limits(Duration::ZERO)).await;
    signal("-CONT");
    assert!(
        matches!(claim, Err(StateError::Unreachable(_))),
        "{claim:?}"
    );
    assert!(
        matches!(&skipped, Err(StateError::Unreachable(m)) if m.contains("not asked again")),
        "{skipped:?}"
    );
    // Once the pause is over a claim probes etcd, which answers again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match a.claim("k4", "4", limits(Duration::ZERO)).await {
            Ok(claim) => {
                assert!(matches!(claim, Claim::First(_)), "{claim:?}");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "etcd still skipped: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let claim = a.claim("k", "5", limits(Duration::ZERO)).await;
    assert!(matches!(claim, Ok(Claim::Duplicate(_))), "{claim:?}");
}

#[tokio::test]
async fn a_handle_connects_while_etcd_is_down_and_its_claims_fail_as_unreachable() {
    let etcd = Etcd::start();
    let url = etcd.client_url();
    drop(etcd);
    let keys = SharedKeys::connect(&[url], "/sy/keys/", "a", Duration::from_millis(500))
        .await
        .expect("connecting does not need etcd up");
    let claim = keys.claim("k", "1", limits(Duration::ZERO)).await;
    assert!(
        matches!(claim, Err(StateError::Unreachable(_))),
        "{claim:?}"
    );
}

/// Not a check: prints what a claim costs against a local etcd. Run with
/// `cargo test --release --test cluster_keys -- --ignored --nocapture claim_latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn claim_latency() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.keys("a").await, etcd.keys("b").await);
    const N: usize = 2000;
    let (mut first, mut record, mut duplicate) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..N {
        let key = format!("latency {i}");
        let t = Instant::now();
        let Claim::First(held) = a.claim(&key, "1", limits(Duration::ZERO)).await.unwrap() else {
            panic!("a fresh key is a first");
        };
        first.push(t.elapsed());
        let t = Instant::now();
        a.record(&held, &ok_answer(b"{\"ok\":true}")).await.unwrap();
        record.push(t.elapsed());
        let t = Instant::now();
        let claim = b.claim(&key, "2", limits(Duration::ZERO)).await.unwrap();
        duplicate.push(t.elapsed());
        assert!(matches!(claim, Claim::Duplicate(_)));
    }
    for (what, mut times) in [
        ("claim, first", first),
        ("record answer", record),
        ("claim, answered duplicate", duplicate),
    ] {
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_micros();
        println!(
            "{what:>26}: median {} us, p90 {} us, p99 {} us ({N} keys)",
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
    println!("leases granted: {} (node a)", a.leases_granted());
}
