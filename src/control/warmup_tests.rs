//! Warm-up (SPEC section 10): when the controller starts a master's ramp.

use super::Control;
use crate::routing::budget::now_ns;
use std::sync::Arc;
use std::time::Duration;

fn config(masters: &[&str]) -> crate::config::Config {
    let text: String = masters
        .iter()
        .map(|id| {
            format!("[[masters]]\nid = \"{id}\"\nsend_url = \"http://127.0.0.1:9/\"\nrate_per_sec = 10\nwarmup_ms = 60000\n")
        })
        .collect();
    crate::config::Config::from_toml(&text).unwrap()
}

/// Warm-up starts for a master a reload adds, not for those there at start.
#[test]
fn a_master_added_by_reload_warms_up_and_one_there_at_start_does_not() {
    let control = Control::new(
        config(&["a"]),
        1,
        None,
        Arc::new(crate::audit::AuditLog::in_memory()),
        super::operator::OperatorStore::in_memory(),
    );
    control.apply_config(config(&["a", "b"]), 2);
    let minute = Duration::from_secs(60);
    let factor = |id: &str| {
        control
            .stats_of(&Arc::from(id))
            .warmup_factor(now_ns(), minute)
    };
    assert_eq!(factor("a"), 1.0);
    assert!(factor("b") < 0.2, "{}", factor("b"));
}

/// Warm-up starts for a standby when a table first shows it promoted, and not again
/// while it stays promoted.
#[test]
fn a_promoted_standby_warms_up_once() {
    let text = "[[masters]]\nid = \"a\"\nsend_url = \"http://127.0.0.1:9/\"\nrate_per_sec = 10\nwarmup_ms = 60000\n\
                [[masters]]\nid = \"s\"\nsend_url = \"http://127.0.0.1:9/\"\nrole = \"standby\"\nrate_per_sec = 10\nwarmup_ms = 60000\n";
    let control = Control::new(
        crate::config::Config::from_toml(text).unwrap(),
        1,
        None,
        Arc::new(crate::audit::AuditLog::in_memory()),
        super::operator::OperatorStore::in_memory(),
    );
    let minute = Duration::from_secs(60);
    let factor = || {
        control
            .stats_of(&Arc::from("s"))
            .warmup_factor(now_ns(), minute)
    };
    assert_eq!(factor(), 1.0, "a standby waiting is not warming up");
    control.update(|states| {
        states.entry(Arc::from("a")).or_default().promoted_for = Some(Arc::from("s"));
    });
    let table = control.table();
    assert!(table.masters[table.index_of("s").unwrap()].promoted);
    assert!(factor() < 0.2, "{}", factor());
    // Another table with it still promoted does not start the ramp over: its factor
    // at a fixed later instant stays the same.
    let stats = control.stats_of(&Arc::from("s"));
    let later = now_ns() + 30_000_000_000;
    let before = stats.warmup_factor(later, minute);
    std::thread::sleep(Duration::from_millis(20));
    let version = control.table().version;
    control.update(|states| {
        states.entry(Arc::from("a")).or_default().factor = 0.5;
    });
    assert!(control.table().version > version, "a new table was built");
    assert_eq!(stats.warmup_factor(later, minute), before);
}
