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
