//! Suspension under an injected clock (every step is given its instant): a ban signal, probes that pass, the breaker,
//! reinstatement and a restart (a real `operator.json`).

use super::tests::{rig_with, Rig};
use super::*;
use crate::control::operator::OperatorStore;

fn ban(r: &mut Rig, id: &str, secs: f64) {
    let now = r.at(secs);
    r.c.signal(&Arc::from(id), Signal::Banned("answered 403".into()), now);
}

fn rig(failover_extra: &str) -> Rig {
    rig_with(failover_extra, OperatorStore::in_memory())
}

#[tokio::test]
async fn a_ban_suspends_at_once_and_promotes_the_standby_without_waiting() {
    let mut r = rig("");
    ban(&mut r, "a", 1.0);
    let (state, eligible, _, _) = r.entry("a");
    assert_eq!(state, HealthState::Suspended);
    assert!(!eligible);
    // No recovery_wait (30 s): promoted in the same step.
    assert!(r.entry("s").1 && r.entry("s").2, "s promoted at once");
    let view = r.c.view.load();
    assert_eq!(
        view.masters["a"].suspended_reason.as_deref(),
        Some("answered 403")
    );
    let table = r.control.table();
    assert!(table.masters[table.index_of("a").unwrap()]
        .stats
        .is_suspended());
    use EventKind::*;
    assert_eq!(
        r.kinds(),
        vec![Suspended, FailoverStarted, FailoverCompleted]
    );

    // Probes pass for an hour: still suspended, still held out.
    for i in 0..360 {
        let secs = 2.0 + f64::from(i) * 10.0;
        r.up("a", secs);
        r.tick(secs);
    }
    assert_eq!(r.entry("a").0, HealthState::Suspended);
    assert!(!r.entry("a").1 && r.entry("s").2);
    assert!(
        !r.c.masters[&Arc::<str>::from("a")].slow_recovery_warned,
        "waiting for an operator is no slow recovery"
    );

    // Reinstated: recovering at a tenth, its warm-up started, then failback by config.
    let answer = r.command(Command::Reinstate("a".into()), 4000.0).unwrap();
    assert_eq!(answer["state"], "recovering");
    assert_eq!(answer["held_for"], "s");
    assert_eq!(r.entry("a").0, HealthState::Recovering);
    assert_eq!(r.c.view.load().masters["a"].suspended_reason, None);
    let table = r.control.table();
    let stats = &table.masters[table.index_of("a").unwrap()].stats;
    assert!(!stats.is_suspended());
    assert!(stats.warmup_factor(crate::routing::budget::now_ns(), Duration::from_secs(3600)) < 0.2);
    r.tick(4060.0);
    assert!(r.entry("a").1 && !r.entry("s").2, "failed back");
    assert!(r.kinds().contains(&Reinstated));
}

#[tokio::test]
async fn reinstate_refuses_unknown_and_unsuspended_masters() {
    let mut r = rig("");
    let (code, kind, _) = r.command(Command::Reinstate("zz".into()), 1.0).unwrap_err();
    assert_eq!((code, kind), (StatusCode::NOT_FOUND, "unknown_master"));
    let (code, kind, _) = r.command(Command::Reinstate("a".into()), 1.0).unwrap_err();
    assert_eq!((code, kind), (StatusCode::CONFLICT, "not_suspended"));
    r.down("a", 2.0);
    let (code, _, _) = r.command(Command::Reinstate("a".into()), 3.0).unwrap_err();
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "a failed master is not suspended"
    );
}

#[tokio::test]
async fn a_ban_failover_ignores_the_breaker_and_does_not_count_toward_it() {
    let mut r = rig("max_failovers = 1");
    ban(&mut r, "a", 1.0);
    assert!(r.entry("s").2);
    // The one health failover the breaker allows still happens.
    r.down("b", 2.0);
    r.tick(32.0);
    assert!(r.entry("t").2, "the ban did not use up the breaker");
    assert!(!r.c.breaker_open);
    // With the breaker open, a ban still gets its standby.
    let mut r = rig("max_failovers = 1\nfailback = \"manual\"");
    r.down("b", 1.0);
    r.tick(31.0);
    r.down("a", 40.0);
    r.tick(70.0);
    assert!(r.c.breaker_open && !r.entry("s").2);
    ban(&mut r, "a", 71.0);
    assert!(r.entry("s").2, "promoted despite the open breaker");
}

#[tokio::test]
async fn paused_failover_suspends_but_waits_to_promote() {
    let mut r = rig("");
    r.command(Command::Pause, 0.5).unwrap();
    ban(&mut r, "a", 1.0);
    assert_eq!(r.entry("a").0, HealthState::Suspended);
    assert!(!r.entry("s").2);
    r.command(Command::Resume, 2.0).unwrap();
    assert!(r.entry("s").2, "its place filled on resume");
}

#[tokio::test]
async fn a_suspension_survives_a_restart_and_reinstatement_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig_with("", OperatorStore::open(dir.path()).unwrap());
    ban(&mut r, "a", 1.0);
    let saved = std::fs::read_to_string(dir.path().join("operator.json")).unwrap();
    assert!(saved.contains("answered 403"), "{saved}");
    drop(r);
    let mut r = rig_with("", OperatorStore::open(dir.path()).unwrap());
    // In force from the first table, the standby still in its place.
    assert_eq!(r.entry("a").0, HealthState::Suspended);
    assert!(!r.entry("a").1 && r.entry("s").2);
    let table = r.control.table();
    assert!(table.masters[table.index_of("a").unwrap()]
        .stats
        .is_suspended());
    r.up("a", 5.0);
    r.tick(100.0);
    assert_eq!(r.entry("a").0, HealthState::Suspended);
    assert_eq!(
        r.c.view.load().masters["a"].suspended_reason.as_deref(),
        Some("answered 403")
    );
    r.command(Command::Reinstate("a".into()), 101.0).unwrap();
    drop(r);
    let r = rig_with("", OperatorStore::open(dir.path()).unwrap());
    assert_ne!(
        r.entry("a").0,
        HealthState::Suspended,
        "reinstatement saved"
    );
}

#[tokio::test]
async fn a_suspended_master_removed_by_a_reload_comes_back_afresh() {
    let mut r = rig("");
    ban(&mut r, "b", 1.0);
    let full = (*r.control.table().config).clone();
    let mut without = full.clone();
    without.masters.retain(|m| &*m.id != "b");
    r.control.apply_config(without, 1);
    r.tick(2.0);
    r.control.apply_config(full, 2);
    r.tick(3.0);
    let table = r.control.table();
    let b = &table.masters[table.index_of("b").unwrap()];
    assert_eq!(b.health, HealthState::Healthy);
    assert!(b.eligible && !b.stats.is_suspended(), "no stale suspension");
}

#[tokio::test]
async fn a_ban_from_a_master_just_added_by_a_reload_is_not_lost() {
    let mut r = rig("");
    let full = (*r.control.table().config).clone();
    let mut without = full.clone();
    without.masters.retain(|m| &*m.id != "b");
    r.control.apply_config(without, 1);
    r.tick(1.0);
    // Added back; banned before the controller's next tick.
    r.control.apply_config(full, 2);
    ban(&mut r, "b", 2.0);
    assert_eq!(r.entry("b").0, HealthState::Suspended);
}

#[tokio::test]
async fn a_standby_banned_in_a_recovered_masters_place_gives_it_back_at_once() {
    let mut r = rig("");
    r.down("a", 1.0);
    r.tick(31.0);
    assert!(r.entry("s").2, "s in a's place");
    r.up("a", 40.0);
    assert!(!r.entry("a").1, "held until failback (60 s)");
    ban(&mut r, "s", 41.0);
    assert_eq!(r.entry("s").0, HealthState::Suspended);
    assert!(!r.entry("s").1 && !r.entry("s").2);
    assert!(r.entry("a").1, "a back in its place at once");
}
