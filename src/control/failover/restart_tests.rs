//! Operator state across a restart: a controller is run, its saved state is written to
//! a real `operator.json`, and a second controller starts from that file.

use super::tests::{rig_with, Rig};
use super::*;
use crate::control::operator::OperatorStore;
use crate::routing::AdminState;

/// A second life for `r`'s state: a fresh control and controller reading the file
/// the first one wrote in `dir`.
fn restart(r: Rig, dir: &std::path::Path, failover_extra: &str) -> Rig {
    drop(r);
    rig_with(failover_extra, OperatorStore::open(dir).expect("readable"))
}

fn first(dir: &std::path::Path, failover_extra: &str) -> Rig {
    rig_with(failover_extra, OperatorStore::open(dir).expect("readable"))
}

fn admin(r: &Rig, id: &str) -> AdminState {
    let table = r.control.table();
    table.masters[table.index_of(id).unwrap()].admin
}

#[tokio::test]
async fn a_manual_failover_stays_until_a_manual_failback_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = first(dir.path(), "");
    r.command(Command::Failover("a".into()), 1.0).unwrap();
    let mut r = restart(r, dir.path(), "");
    // In force from the first table, before any tick.
    assert!(!r.entry("a").1 && r.entry("s").2, "a held, s promoted");
    // Healthy for long: a manual failover does not fail back by itself.
    r.tick(500.0);
    assert!(!r.entry("a").1 && r.entry("s").2);
    assert!(r
        .c
        .view
        .load()
        .active
        .iter()
        .any(|a| a.failed == "a" && a.backup == "s" && a.manual));
    r.command(Command::Failback("a".into()), 501.0).unwrap();
    assert!(r.entry("a").1 && !r.entry("s").2);
    let r = restart(r, dir.path(), "");
    assert!(
        r.entry("a").1 && !r.entry("s").2,
        "the failback was saved too"
    );
}

#[tokio::test]
async fn an_automatic_failover_fails_back_by_config_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = first(dir.path(), "");
    r.down("a", 1.0);
    r.tick(31.0);
    assert!(r.entry("s").2, "failed over");
    let mut r = restart(r, dir.path(), "");
    assert!(
        !r.entry("a").1 && r.entry("s").2,
        "still held after the restart"
    );
    // `a` answers healthy from the start; failback = auto after failback_delay (60 s).
    r.tick(59.0);
    assert!(r.entry("s").2);
    r.tick(61.0);
    assert!(!r.entry("s").2 && r.entry("a").1, "failed back");
    assert!(r.kinds().contains(&EventKind::Failback));
}

#[tokio::test]
async fn pause_and_admin_states_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = first(dir.path(), "");
    r.command(Command::Pause, 1.0).unwrap();
    r.control.set_admin("b", AdminState::Disabled).unwrap();
    r.control.set_admin("t", AdminState::Draining).unwrap();
    let mut r = restart(r, dir.path(), "");
    assert!(r.c.paused);
    assert_eq!(admin(&r, "b"), AdminState::Disabled);
    assert_eq!(admin(&r, "t"), AdminState::Draining);
    // Paused: a failed master is not failed over.
    r.down("a", 1.0);
    r.tick(31.0);
    assert!(!r.entry("s").2);
    r.command(Command::Resume, 32.0).unwrap();
    r.control.set_admin("b", AdminState::Enabled).unwrap();
    let r = restart(r, dir.path(), "");
    assert!(!r.c.paused);
    assert_eq!(admin(&r, "b"), AdminState::Enabled);
}

#[tokio::test]
async fn a_saved_failover_to_a_standby_no_longer_configured_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("operator.json"),
        r#"{"version": 1, "masters": {"a": {"admin": "enabled", "held": {"standby": "gone"}},
            "zz": {"admin": "disabled"}, "b": {"admin": "disabled"}}}"#,
    )
    .unwrap();
    let r = first(dir.path(), "");
    assert!(r.entry("a").1, "a not held");
    assert_eq!(admin(&r, "b"), AdminState::Disabled);
    assert!(r.c.active.is_empty());
}

#[tokio::test]
async fn a_draining_master_is_reported_drained_once_nothing_is_under_way() {
    let mut r = rig_with("", OperatorStore::in_memory());
    let stats = r.c.stats("a").unwrap();
    let exchange = stats.start();
    r.control.set_admin("a", AdminState::Draining).unwrap();
    r.tick(1.0);
    let drained = |r: &Rig| {
        r.kinds()
            .iter()
            .filter(|k| **k == EventKind::Drained)
            .count()
    };
    assert_eq!(drained(&r), 0, "an exchange is under way");
    let table = r.control.table();
    assert_eq!(table.masters[0].admin_shown(), "draining");
    drop(exchange);
    assert_eq!(table.masters[0].admin_shown(), "drained");
    r.tick(2.0);
    r.tick(3.0);
    assert_eq!(drained(&r), 1, "recorded once");
    // Enabled, then draining again: a new drain, a new event.
    r.control.set_admin("a", AdminState::Enabled).unwrap();
    r.tick(4.0);
    r.control.set_admin("a", AdminState::Draining).unwrap();
    r.tick(5.0);
    assert_eq!(drained(&r), 2);
}

#[tokio::test]
async fn a_master_removed_by_a_reload_forgets_its_saved_state() {
    let dir = tempfile::tempdir().unwrap();
    let r = first(dir.path(), "");
    r.control.set_admin("b", AdminState::Disabled).unwrap();
    r.control.set_admin("a", AdminState::Draining).unwrap();
    let mut config = (*r.control.table().config).clone();
    config.masters.retain(|m| &*m.id != "b");
    r.control.apply_config(config, 1);
    let saved = OperatorStore::open(dir.path()).unwrap();
    let ids: Vec<&String> = saved.state().masters.keys().collect();
    assert_eq!(ids, ["a"]);
}
