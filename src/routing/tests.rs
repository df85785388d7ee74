use super::*;
use crate::config::Config;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

/// (role, weight, priority, region) per master.
type Spec<'a> = (&'a str, f64, u32, &'a str);

fn config(strategy: &str, masters: &[Spec]) -> Arc<Config> {
    let mut text = format!("[routing]\nstrategy = \"{strategy}\"\n");
    for (i, (role, weight, priority, region)) in masters.iter().enumerate() {
        text.push_str(&format!(
            "[[masters]]\nid = \"m{i}\"\nsend_url = \"http://127.0.0.1:{}/send\"\nrole = \"{role}\"\nweight = {weight}\npriority = {priority}\nregion = \"{region}\"\n",
            9000 + i
        ));
    }
    if masters.iter().all(|m| m.0 == "standby") {
        text = text.replacen("role = \"standby\"", "role = \"primary\"", 1);
    }
    Arc::new(Config::from_toml(&text).unwrap())
}

fn table_with(
    config: Arc<Config>,
    states: &[(HealthState, AdminState, bool)],
    seed: u64,
) -> RoutingTable {
    let registry = stats::StatsRegistry::default();
    let inputs = config
        .masters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (health, admin, promoted) = states.get(i).copied().unwrap_or((
                HealthState::Healthy,
                AdminState::Enabled,
                false,
            ));
            MasterInput {
                config: m.clone(),
                stats: registry.get_or_create(&m.id),
                health,
                admin,
                promoted,
                held: false,
                factor: 1.0,
                stands_for: None,
            }
        })
        .collect();
    RoutingTable::build(1, 1, config, inputs, &mut StdRng::seed_from_u64(seed))
}

fn table(strategy: &str, masters: &[Spec]) -> RoutingTable {
    table_with(config(strategy, masters), &[], 7)
}

fn counts(t: &RoutingTable, region: Option<&str>, n: usize) -> HashMap<usize, usize> {
    let mut c = HashMap::new();
    for _ in 0..n {
        *c.entry(t.select(region, &[]).unwrap().index).or_default() += 1;
    }
    c
}

#[test]
fn round_robin_rotates_in_turn() {
    let t = table(
        "round_robin",
        &[
            ("primary", 1.0, 1, ""),
            ("primary", 5.0, 1, ""),
            ("secondary", 1.0, 2, ""),
        ],
    );
    let first: Vec<usize> = (0..3).map(|_| t.select(None, &[]).unwrap().index).collect();
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2], "weights and priority are ignored");
    let next: Vec<usize> = (0..3).map(|_| t.select(None, &[]).unwrap().index).collect();
    assert_eq!(first, next);
}

#[test]
fn standby_is_out_until_promoted() {
    let specs = [("primary", 1.0, 1, ""), ("standby", 1.0, 1, "")];
    let t = table("round_robin", &specs);
    assert_eq!(
        counts(&t, None, 10).keys().copied().collect::<Vec<_>>(),
        vec![0]
    );
    let promoted = [
        (HealthState::Failed, AdminState::Enabled, false),
        (HealthState::Healthy, AdminState::Enabled, true),
    ];
    let t = table_with(config("round_robin", &specs), &promoted, 1);
    assert_eq!(
        counts(&t, None, 10).keys().copied().collect::<Vec<_>>(),
        vec![1]
    );
}

#[test]
fn weighted_priority_spills_to_next_group() {
    let specs = [
        ("primary", 3.0, 1, ""),
        ("primary", 1.0, 1, ""),
        ("secondary", 1.0, 2, ""),
    ];
    let c = counts(&table("weighted_priority", &specs), None, 400);
    assert_eq!((c[&0], c[&1], c.get(&2)), (300, 100, None));
    let down = [
        (HealthState::Degraded, AdminState::Enabled, false),
        (HealthState::Healthy, AdminState::Disabled, false),
    ];
    let t = table_with(config("weighted_priority", &specs), &down, 3);
    assert_eq!(counts(&t, None, 50)[&2], 50);
}

#[test]
fn retry_excludes_tried_masters_then_spills() {
    let specs = [
        ("primary", 1.0, 1, ""),
        ("primary", 1.0, 1, ""),
        ("secondary", 1.0, 2, ""),
    ];
    let t = table("weighted_priority", &specs);
    assert_eq!(t.select(None, &[0, 1]).unwrap().index, 2);
    assert!(t.select(None, &[0, 1, 2]).is_none());
    let rr = table("round_robin", &specs);
    for _ in 0..6 {
        assert_ne!(rr.select(None, &[1]).unwrap().index, 1);
    }
}

#[test]
fn least_loaded_prefers_low_load_then_low_latency() {
    let specs = [
        ("primary", 1.0, 1, ""),
        ("primary", 2.0, 1, ""),
        ("primary", 1.0, 1, ""),
    ];
    let t = table("least_loaded", &specs);
    t.masters[0].stats.load.in_flight.store(2, Relaxed);
    t.masters[1].stats.load.in_flight.store(3, Relaxed); // 3 / 2 = 1.5
    t.masters[2].stats.load.queued.store(2, Relaxed);
    assert_eq!(counts(&t, None, 20)[&1], 20);
    t.masters[1].stats.load.in_flight.store(4, Relaxed); // all at 2.0
    t.masters[0]
        .stats
        .observe_latency(std::time::Duration::from_millis(9));
    t.masters[1]
        .stats
        .observe_latency(std::time::Duration::from_millis(3));
    t.masters[2]
        .stats
        .observe_latency(std::time::Duration::from_millis(5));
    assert_eq!(counts(&t, None, 20)[&1], 20);
}

#[test]
fn least_loaded_spreads_idle_traffic() {
    let t = table(
        "least_loaded",
        &[("primary", 1.0, 1, ""), ("primary", 1.0, 1, "")],
    );
    let c = counts(&t, None, 10);
    assert_eq!((c[&0], c[&1]), (5, 5));
}

#[test]
fn region_matches_case_insensitively_and_falls_back() {
    let specs = [
        ("primary", 1.0, 2, "UAE"),
        ("primary", 1.0, 1, "EU"),
        ("primary", 1.0, 3, "uae"),
    ];
    let t = table("region", &specs);
    for _ in 0..10 {
        let p = t.select(Some("uae"), &[]).unwrap();
        assert!(!p.region_fallback);
        assert!(p.index == 0 || p.index == 2);
    }
    // Unknown region and no region: every master, best priority first.
    for region in [Some("us"), None] {
        let p = t.select(region, &[]).unwrap();
        assert_eq!((p.index, p.region_fallback), (1, true));
    }
    // The region's masters already tried: fall back.
    let p = t.select(Some("uae"), &[0, 2]).unwrap();
    assert_eq!((p.index, p.region_fallback), (1, true));
}

#[test]
fn slow_start_reduces_share() {
    let config = config(
        "weighted_priority",
        &[("primary", 1.0, 1, ""), ("primary", 1.0, 1, "")],
    );
    let registry = stats::StatsRegistry::default();
    let inputs = config
        .masters
        .iter()
        .enumerate()
        .map(|(i, m)| MasterInput {
            config: m.clone(),
            stats: registry.get_or_create(&m.id),
            health: if i == 0 {
                HealthState::Recovering
            } else {
                HealthState::Healthy
            },
            admin: AdminState::Enabled,
            promoted: false,
            held: false,
            factor: if i == 0 { 0.25 } else { 1.0 },
            stands_for: None,
        })
        .collect();
    let t = RoutingTable::build(1, 1, config, inputs, &mut StdRng::seed_from_u64(1));
    let c = counts(&t, None, 500);
    assert_eq!((c[&0], c[&1]), (100, 400));
}

#[test]
fn weights_three_to_one_give_75_percent() {
    for strategy in ["weighted_priority", "region"] {
        let t = table(
            strategy,
            &[("primary", 3.0, 1, "x"), ("primary", 1.0, 1, "x")],
        );
        let c = counts(&t, Some("x"), 100_000);
        let share = c[&0] as f64 / 100_000.0;
        assert!((share - 0.75).abs() <= 0.01, "{strategy}: {share}");
    }
}

fn state_strategy() -> impl proptest::strategy::Strategy<Value = (HealthState, AdminState, bool)> {
    (
        prop::sample::select(HealthState::ALL.to_vec()),
        prop::sample::select(vec![
            AdminState::Enabled,
            AdminState::Disabled,
            AdminState::Draining,
        ]),
        any::<bool>(),
    )
}

proptest! {
    #[test]
    fn no_ineligible_master_is_ever_chosen(
        strategy in prop::sample::select(vec!["round_robin", "weighted_priority", "least_loaded", "region"]),
        masters in prop::collection::vec(
            (prop::sample::select(vec!["primary", "secondary", "standby"]), 1u32..5, 1u32..4,
             prop::sample::select(vec!["", "uae", "EU"]), state_strategy()),
            1..12),
        region in prop::option::of(prop::sample::select(vec!["uae", "eu", "us"])),
        tried in prop::collection::vec(0usize..12, 0..3),
        seed in any::<u64>(),
    ) {
        let specs: Vec<Spec> = masters.iter().map(|m| (m.0, m.1 as f64 * 0.5, m.2, m.3)).collect();
        let states: Vec<_> = masters.iter().map(|m| m.4).collect();
        let t = table_with(config(strategy, &specs), &states, seed);
        let any_left = t.masters.iter().enumerate().any(|(i, m)| m.eligible && !tried.contains(&i));
        for _ in 0..50 {
            match t.select(region, &tried) {
                Some(p) => {
                    prop_assert!(t.masters[p.index].eligible);
                    prop_assert!(!tried.contains(&p.index));
                }
                None => prop_assert!(!any_left, "a master was left but none chosen"),
            }
        }
    }

    #[test]
    fn round_robin_is_exact(n in 1usize..20, rounds in 1usize..20, seed in any::<u64>()) {
        let specs: Vec<Spec> = (0..n).map(|i| ("primary", 1.0 + i as f64, 1, "")).collect();
        let t = table_with(config("round_robin", &specs), &[], seed);
        let c = counts(&t, None, n * rounds);
        for i in 0..n {
            prop_assert_eq!(c[&i], rounds);
        }
    }
}
