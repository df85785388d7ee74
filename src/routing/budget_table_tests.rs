//! Budgets and sticky recipients in the routing table (SPEC section 10). No test
//! waits: paces are slow enough (one message per 1,000 s) that none refills while a
//! test runs.

use super::*;
use crate::config::Config;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Duration;

/// A table over `masters` (id, extra TOML lines), each healthy and enabled;
/// `stands_for` gives a promoted standby's failed master, `out` the ids out of rotation.
fn table(
    routing: &str,
    masters: &[(&str, &str)],
    registry: &stats::StatsRegistry,
    stands_for: &[(&str, &str)],
    out: &[&str],
) -> RoutingTable {
    let mut text = format!("[routing]\n{routing}\n");
    for (i, (id, extra)) in masters.iter().enumerate() {
        text.push_str(&format!(
            "[[masters]]\nid = \"{id}\"\nsend_url = \"http://127.0.0.1:{}/send\"\n{extra}\n",
            9000 + i
        ));
    }
    let config = Arc::new(Config::from_toml(&text).unwrap());
    let inputs = config
        .masters
        .iter()
        .map(|m| {
            let failed = stands_for.iter().find(|(s, _)| *s == &*m.id).map(|p| p.1);
            MasterInput {
                config: m.clone(),
                stats: registry.get_or_create(&m.id),
                health: HealthState::Healthy,
                admin: AdminState::Enabled,
                promoted: failed.is_some(),
                held: out.contains(&&*m.id),
                factor: 1.0,
                stands_for: failed.map(Arc::from),
            }
        })
        .collect();
    RoutingTable::build(1, 1, config, inputs, &mut StdRng::seed_from_u64(3))
}

#[test]
fn a_master_without_budget_is_passed_over_and_stays_eligible() {
    let registry = stats::StatsRegistry::default();
    let slow = "rate_per_sec = 0.001\nburst = 2";
    let t = table("", &[("a", slow), ("b", "")], &registry, &[], &[]);
    let picks: Vec<usize> = (0..50)
        .map(|_| t.select(None, &[]).unwrap().index)
        .collect();
    assert_eq!(
        picks.iter().filter(|&&i| i == 0).count(),
        2,
        "a's burst, then none"
    );
    assert_eq!(
        t.eligible_count(),
        2,
        "out of budget is not out of rotation"
    );
    assert_eq!(t.budget_available(), u64::MAX, "b has no limits");
}

#[test]
fn with_no_budget_anywhere_selection_says_when() {
    let registry = stats::StatsRegistry::default();
    let slow = "rate_per_sec = 0.001\nburst = 1";
    let t = table("", &[("a", slow), ("b", slow)], &registry, &[], &[]);
    assert!(t.select(None, &[]).is_some() && t.select(None, &[]).is_some());
    assert_eq!(t.select(None, &[]), None);
    assert_eq!(t.budget_available(), 0);
    let wait = t.budget_wait(&[]).expect("eligible masters, no budget");
    assert!(wait > Duration::from_secs(900), "{wait:?}");
    // A rebuild (a reload) keeps what was spent.
    let again = table("", &[("a", slow), ("b", slow)], &registry, &[], &[]);
    assert_eq!(again.select(None, &[]), None);
}

#[test]
fn a_daily_cap_stops_a_master_until_its_day_frees() {
    let registry = stats::StatsRegistry::default();
    let t = table("", &[("a", "daily_limit = 3")], &registry, &[], &[]);
    for _ in 0..3 {
        assert!(t.select(None, &[]).is_some());
    }
    assert_eq!(t.select(None, &[]), None);
    assert!(t.budget_wait(&[]).unwrap() > Duration::from_secs(23 * 3600));
    // Raising the limit by reload applies at once, with the count kept.
    let t = table("", &[("a", "daily_limit = 4")], &registry, &[], &[]);
    assert!(t.select(None, &[]).is_some());
    assert_eq!(t.select(None, &[]), None);
    assert_eq!(
        registry
            .get_or_create(&Arc::from("a"))
            .daily
            .sent_24h(crate::util::unix_ms()),
        4
    );
}

fn owners(t: &RoutingTable, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let r = format!("+97150{i:07}");
            match t.select_sticky(&r, &[]) {
                Some(Ok(pick)) => t.masters[pick.index].id().to_string(),
                other => panic!("{r}: {other:?}"),
            }
        })
        .collect()
}

#[test]
fn a_promoted_standby_takes_exactly_its_failed_masters_recipients() {
    let registry = stats::StatsRegistry::default();
    let masters = [("a", ""), ("b", ""), ("c", ""), ("s", "role = \"standby\"")];
    let before = owners(&table("sticky = true", &masters, &registry, &[], &[]), 5000);
    assert!(!before.contains(&"s".to_string()), "a standby has none");
    let failed_over = table("sticky = true", &masters, &registry, &[("s", "b")], &["b"]);
    let during = owners(&failed_over, 5000);
    for (was, now) in before.iter().zip(&during) {
        let expected = if was == "b" { "s" } else { was.as_str() };
        assert_eq!(now, expected);
    }
    // Failback: b takes its own recipients back.
    let after = owners(&table("sticky = true", &masters, &registry, &[], &[]), 5000);
    assert_eq!(before, after);
}

#[test]
fn a_master_leaving_moves_only_its_own_recipients() {
    let registry = stats::StatsRegistry::default();
    let masters = [("a", ""), ("b", "weight = 2"), ("c", "")];
    let before = owners(&table("sticky = true", &masters, &registry, &[], &[]), 5000);
    let without_c = owners(
        &table("sticky = true", &masters, &registry, &[], &["c"]),
        5000,
    );
    let mut moved = 0;
    for (was, now) in before.iter().zip(&without_c) {
        if was == "c" {
            moved += 1;
            assert_ne!(now, "c");
        } else {
            assert_eq!(was, now, "only c's recipients move");
        }
    }
    // c's share by weight: a quarter, within a few percent.
    assert!((1000..1500).contains(&moved), "{moved}");
}

#[test]
fn a_sticky_master_without_budget_makes_its_recipient_wait() {
    let registry = stats::StatsRegistry::default();
    let slow = "rate_per_sec = 0.001\nburst = 1";
    let t = table(
        "sticky = true",
        &[("a", slow), ("b", slow)],
        &registry,
        &[],
        &[],
    );
    let r = "+971500000000";
    let Some(Ok(first)) = t.select_sticky(r, &[]) else {
        panic!("its master has budget")
    };
    match t.select_sticky(r, &[]) {
        Some(Err(wait)) => assert!(wait > Duration::from_secs(900)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        t.select_sticky(r, &[first.index]),
        None,
        "failed there: any master"
    );
    assert_eq!(t.select_sticky(r, &[]).map(|_| ()), Some(()));
    let plain = table("", &[("a", "")], &registry, &[], &[]);
    assert_eq!(plain.select_sticky(r, &[]), None, "sticky off");
}
