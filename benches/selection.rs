//! Selection cost per strategy at 3 and 1,000 masters, without and with budgets, and
//! the sticky recipient's pick.
//! Run: cargo bench --bench selection

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;
use switchyard::config::Config;
use switchyard::health::HealthState;
use switchyard::routing::stats::StatsRegistry;
use switchyard::routing::{AdminState, MasterInput, RoutingTable};

fn table(strategy: &str, n: usize) -> RoutingTable {
    table_with(strategy, n, false, false)
}

/// `budgets`: every master paced (and capped per day) far above what the bench can
/// spend, so that every pick takes budget and none is refused: the cost of the check
/// itself. `sticky`: `routing.sticky = true`.
fn table_with(strategy: &str, n: usize, budgets: bool, sticky: bool) -> RoutingTable {
    let mut text = format!("[routing]\nstrategy = \"{strategy}\"\nsticky = {sticky}\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[masters]]\nid = \"m{i}\"\nsend_url = \"http://127.0.0.1:{}/send\"\nweight = {}\npriority = {}\nregion = \"r{}\"\n",
            1024 + i,
            1 + i % 4,
            1 + i % 3,
            i % 5
        ));
    }
    let config = Arc::new(Config::from_toml(&text).expect("valid config"));
    let stats = StatsRegistry::default();
    let inputs = config
        .masters
        .iter()
        .map(|m| MasterInput {
            config: if budgets {
                Arc::new(switchyard::config::MasterConfig {
                    rate_per_sec: 1e12,
                    burst: 1_000_000,
                    daily_limit: 0,
                    ..(**m).clone()
                })
            } else {
                m.clone()
            },
            stats: stats.get_or_create(&m.id),
            health: HealthState::Healthy,
            admin: AdminState::Enabled,
            promoted: false,
            held: false,
            factor: 1.0,
            stands_for: None,
        })
        .collect();
    RoutingTable::build(1, 1, config, inputs, &mut StdRng::seed_from_u64(1))
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for strategy in ["round_robin", "weighted_priority", "least_loaded", "region"] {
        for n in [3usize, 1000] {
            let t = table(strategy, n);
            group.bench_with_input(BenchmarkId::new(strategy, n), &t, |b, t| {
                b.iter(|| t.select(black_box(Some("r1")), black_box(&[])))
            });
        }
    }
    group.finish();
    let mut group = c.benchmark_group("select_budgeted");
    for strategy in ["round_robin", "least_loaded"] {
        for n in [3usize, 1000] {
            let t = table_with(strategy, n, true, false);
            group.bench_with_input(BenchmarkId::new(strategy, n), &t, |b, t| {
                b.iter(|| t.select(black_box(Some("r1")), black_box(&[])))
            });
        }
    }
    group.finish();
    let recipients: Vec<String> = (0..4096).map(|i| format!("+97150{i:07}")).collect();
    let mut group = c.benchmark_group("select_sticky_budgeted");
    for n in [3usize, 1000] {
        let t = table_with("round_robin", n, true, true);
        let mut at = 0usize;
        group.bench_with_input(BenchmarkId::new("round_robin", n), &t, |b, t| {
            b.iter(|| {
                at = (at + 1) & 4095;
                t.select_sticky(black_box(&recipients[at]), black_box(&[]))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
