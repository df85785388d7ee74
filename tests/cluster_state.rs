//! The cluster state primitives against a real etcd (`/usr/bin/etcd`, Debian's
//! `etcd-server`; `tests/run.sh` installs it): compare-and-swap conflicts, lock expiry
//! and extension, many tasks contending for one lock, and a counter kept by CAS.

use std::process::Command;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::etcd::Etcd;
use switchyard::cluster::StateError;

#[tokio::test]
async fn compare_and_swap_lets_one_of_two_writers_win() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.state().await, etcd.state().await);

    let created = a.compare_and_swap("k", None, "v0").await.unwrap();
    assert!(created.won);
    let again = b.compare_and_swap("k", None, "other").await.unwrap();
    assert!(!again.won, "put-if-absent on a present key must lose");
    assert_eq!(again.revision, created.revision);

    let seen = a.get("k").await.unwrap().expect("present");
    assert_eq!(seen.mod_revision, created.revision);
    let first = a
        .compare_and_swap("k", Some(seen.mod_revision), "a")
        .await
        .unwrap();
    let second = b
        .compare_and_swap("k", Some(seen.mod_revision), "b")
        .await
        .unwrap();
    assert!(first.won);
    assert!(
        !second.won,
        "the second writer expected a revision that is gone"
    );
    assert_eq!(second.revision, first.revision);
    assert_eq!(second.current.unwrap().value, b"a");
    assert_eq!(b.get("k").await.unwrap().unwrap().value, b"a");

    assert!(a.delete("k").await.unwrap());
    assert_eq!(b.get("k").await.unwrap(), None);
    assert!(!a.delete("k").await.unwrap());
}

#[tokio::test]
async fn a_lock_expires_without_keep_alive_and_is_kept_by_extension() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.state().await, etcd.state().await);

    // Extended every 500 ms, a 2 s lock is still held well past 2 s.
    let kept = a.try_lock("kept", 2).await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        a.extend(&kept).await.unwrap();
        assert!(matches!(
            b.try_lock("kept", 2).await,
            Err(StateError::Conflict(_))
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(a.holds(&kept).await.unwrap());

    // Not extended, it expires: another holder gets it with a greater token, and the
    // first one's extension reports the loss.
    let lapsed = a.try_lock("lapsed", 2).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let taken = loop {
        match b.try_lock("lapsed", 2).await {
            Ok(lock) => break lock,
            Err(StateError::Conflict(_)) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the lock never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(taken.token > lapsed.token);
    assert!(!a.holds(&lapsed).await.unwrap());
    let lost = a.extend(&lapsed).await;
    assert!(
        matches!(lost, Err(StateError::LeaseLost(l)) if l == lapsed.lease),
        "{lost:?}"
    );

    // Releasing hands it over at once.
    a.release(kept).await.unwrap();
    b.try_lock("kept", 2).await.unwrap();
}

#[tokio::test]
async fn twenty_tasks_contending_never_hold_the_lock_together() {
    let etcd = Etcd::start();
    let holders = Arc::new(AtomicUsize::new(0));
    let last_token = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let state = etcd.state().await;
        let (holders, last_token) = (holders.clone(), last_token.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let lock = loop {
                match state.try_lock("contended", 10).await {
                    Ok(lock) => break lock,
                    Err(StateError::Conflict(_)) => {}
                    Err(e) => panic!("{e}"),
                }
                assert!(Instant::now() < deadline, "never got the lock");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
            let previous = last_token.swap(lock.token, Ordering::SeqCst);
            assert!(
                lock.token > previous,
                "token {} after {previous}",
                lock.token
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(state.holds(&lock).await.unwrap());
            holders.fetch_sub(1, Ordering::SeqCst);
            state.release(lock).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(holders.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_counter_kept_by_compare_and_swap_loses_no_increment() {
    let etcd = Etcd::start();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let state = etcd.state().await;
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..20 {
                let mut seen = state.get("counter").await.unwrap();
                loop {
                    let n: u64 = seen.as_ref().map_or(0, |v| {
                        std::str::from_utf8(&v.value).unwrap().parse().unwrap()
                    });
                    let expected = seen.as_ref().map(|v| v.mod_revision);
                    let cas = state
                        .compare_and_swap("counter", expected, (n + 1).to_string())
                        .await
                        .unwrap();
                    if cas.won {
                        break;
                    }
                    conflicts += 1;
                    seen = cas.current;
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let state = etcd.state().await;
    let end = state.get("counter").await.unwrap().unwrap();
    assert_eq!(end.value, b"200", "{conflicts} conflicts on the way");
}

#[tokio::test]
async fn a_stopped_etcd_is_reported_unreachable() {
    let etcd = Etcd::start();
    let state = etcd.state().await;
    state.put("k", "v").await.unwrap();
    drop(etcd);
    // The first call finds the connection broken, a later one cannot connect.
    for _ in 0..2 {
        let answer = tokio::time::timeout(Duration::from_secs(30), state.get("k"))
            .await
            .expect("a call to a stopped etcd must fail, not hang");
        assert!(
            matches!(answer, Err(StateError::Unreachable(_))),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn an_etcd_that_stops_answering_is_reported_unreachable_and_then_recovers() {
    let etcd = Etcd::start();
    let state = etcd.state().await;
    state.put("k", "v").await.unwrap();
    let signal = |sig: &str| {
        let pid = etcd.pid().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success());
    };
    signal("-STOP");
    let answer = tokio::time::timeout(Duration::from_secs(30), state.get("k"))
        .await
        .expect("the call timeout bounds a call to a frozen etcd");
    signal("-CONT");
    assert!(
        matches!(answer, Err(StateError::Unreachable(_))),
        "{answer:?}"
    );
    assert_eq!(state.get("k").await.unwrap().unwrap().value, b"v");
}

#[tokio::test]
async fn a_watch_from_a_listed_revision_misses_nothing_and_sees_leases_end() {
    let etcd = Etcd::start();
    let state = etcd.state().await;
    state.put("/w/before", "1").await.unwrap();
    let (listed, revision) = state.list("/w/").await.unwrap();
    assert_eq!(listed.len(), 1);
    // Written between the read and the watch: still seen.
    state.put("/w/a", "2").await.unwrap();
    let mut watch = state.watch("/w/", revision + 1).await.unwrap();
    let lease = state.grant(5).await.unwrap();
    state.put_leased("/w/leased", "3", lease).await.unwrap();
    state.put("/other", "x").await.unwrap();
    state.delete("/w/a").await.unwrap();
    state.revoke(lease).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("changes arrive")
            .unwrap();
        seen.extend(batch);
    }
    let summary: Vec<(&str, Option<&[u8]>)> = seen
        .iter()
        .map(|c| (c.key.as_str(), c.value.as_ref().map(|v| v.value.as_slice())))
        .collect();
    assert_eq!(
        summary,
        [
            ("/w/a", Some(&b"2"[..])),
            ("/w/leased", Some(&b"3"[..])),
            ("/w/a", None),
            ("/w/leased", None),
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].revision < w[1].revision));
}

/// A leader's decision carries its fence: once its lease is gone and another node
/// leads, the old leader's write fails (`Deposed`) and the shared document keeps the
/// new leader's decisions only.
#[tokio::test]
async fn a_deposed_leaders_decision_is_refused_by_etcd() {
    use switchyard::cluster::election;
    use switchyard::cluster::shared::{Mutation, Shared, UpdateError};
    let etcd = Etcd::start();
    let state = etcd.state().await;
    let (_trigger, shutdown) = switchyard::server::shutdown_pair();
    let (alerter, _webhook) =
        switchyard::alerts::Alerter::new(None, Duration::from_secs(60), shutdown);
    let config = switchyard::config::ClusterConfig {
        node_id: "old".into(),
        etcd: vec![etcd.client_url()],
        prefix: "/fence".into(),
        priority: 1,
        lease_ttl: Duration::from_secs(3),
        advertise_admin: None,
        handoff_timeout: Duration::from_secs(30),
    };
    let cluster = switchyard::cluster::Cluster::new(
        config,
        "127.0.0.1:1".into(),
        Arc::new(switchyard::audit::AuditLog::in_memory()),
        Arc::new(alerter),
        Box::new(|| 0),
    )
    .await
    .unwrap();
    let shared = Shared::new(cluster);

    let first = state.grant(3).await.unwrap();
    let now = election::read(&state, "/fence").await.unwrap();
    let old = election::campaign(&state, "/fence", "old", first, &now)
        .await
        .unwrap()
        .expect("the first campaign wins");
    let hold = Mutation::Hold {
        failed: "p".into(),
        backup: "s".into(),
        manual: false,
    };
    shared
        .update(Some(old), &hold)
        .await
        .expect("the leader writes");

    // Its lease ends (a pause past the TTL); another node is elected.
    state.revoke(first).await.unwrap();
    let second = state.grant(3).await.unwrap();
    let now = election::read(&state, "/fence").await.unwrap();
    let new = election::campaign(&state, "/fence", "new", second, &now)
        .await
        .unwrap()
        .expect("the next campaign wins");
    assert_eq!(new.term, old.term + 1);

    let release = Mutation::Release { failed: "p".into() };
    let stale = shared.update(Some(old), &release).await;
    assert!(matches!(stale, Err(UpdateError::Deposed)), "{stale:?}");
    let (doc, _) = shared.read().await.unwrap().unwrap();
    assert!(
        doc.operator.masters["p"].held.is_some(),
        "the stale write left nothing"
    );
    assert_eq!(doc.term, old.term);

    shared
        .update(Some(new), &release)
        .await
        .expect("the new leader writes");
    let (doc, _) = shared.read().await.unwrap().unwrap();
    assert!(doc.operator.masters.is_empty());
    assert_eq!((doc.term, doc.decision), (new.term, true));
}
