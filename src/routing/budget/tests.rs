use super::*;
use proptest::prelude::*;

const S: u64 = 1_000_000_000;

/// Sends as fast as `try_take` allows at each of `arrivals` (ns), returning the
/// times it allowed.
fn run(pace: &Pace, arrivals: &[u64], factor: impl Fn(u64) -> f64) -> Vec<u64> {
    arrivals
        .iter()
        .copied()
        .filter(|&t| pace.try_take(t, factor(t)).is_ok())
        .collect()
}

/// The most sends inside any closed window of `width` ns.
fn max_in_window(sent: &[u64], width: u64) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..sent.len() {
        while sent[end] - sent[start] > width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[test]
fn burst_at_once_then_one_per_interval() {
    let pace = Pace::new(10.0, 3);
    let t0 = 5 * S;
    for _ in 0..3 {
        assert!(pace.try_take(t0, 1.0).is_ok());
    }
    let wait = pace.try_take(t0, 1.0).unwrap_err();
    assert_eq!(wait, Duration::from_millis(100));
    assert_eq!(pace.available(t0, 1.0), 0);
    assert!(pace.try_take(t0 + 99_000_000, 1.0).is_err());
    assert!(pace.try_take(t0 + 100_000_000, 1.0).is_ok());
    // Idle for a while: the full burst is back, never more.
    assert_eq!(pace.available(t0 + 10 * S, 1.0), 3);
}

#[test]
fn unlimited_always_allows() {
    let pace = Pace::new(0.0, 1);
    assert!((0..10_000).all(|_| pace.try_take(0, 1.0).is_ok()));
    assert_eq!(pace.available(0, 1.0), u32::MAX);
    assert_eq!(pace.wait(0, 1.0), Duration::ZERO);
}

#[test]
fn warm_up_factor_slows_the_pace() {
    let pace = Pace::new(10.0, 1);
    let every_ms: Vec<u64> = (0..10_000).map(|ms| ms * 1_000_000).collect();
    // 10% of 10/s: one a second.
    let sent = run(&pace, &every_ms, |_| 0.1);
    assert_eq!(sent.len(), 10, "{sent:?}");
    assert_eq!(pace.wait(10 * S, 0.1), Duration::ZERO);
}

#[test]
fn wait_says_when_the_next_may_go() {
    let pace = Pace::new(4.0, 1);
    assert!(pace.try_take(S, 1.0).is_ok());
    assert_eq!(pace.wait(S, 1.0), Duration::from_millis(250));
    assert_eq!(pace.wait(S + 200_000_000, 1.0), Duration::from_millis(50));
}

proptest! {
    /// No window of one second ever holds more than rate + burst, whatever the
    /// arrivals and however the warm-up factor rises; and a master with steady
    /// demand is not starved below its pace.
    #[test]
    fn never_above_the_pace(
        rate in 1u32..200,
        burst in 1u32..20,
        gaps in proptest::collection::vec(0u64..(S / 20), 1..3000),
        warm in any::<bool>(),
    ) {
        let pace = Pace::new(rate as f64, burst);
        let mut t = S;
        let arrivals: Vec<u64> = gaps.iter().map(|g| { t += g; t }).collect();
        let end = *arrivals.last().unwrap();
        let factor = |now: u64| if warm { 0.1 + 0.9 * ((now - S) as f64 / (end - S + 1) as f64) } else { 1.0 };
        let sent = run(&pace, &arrivals, factor);
        prop_assert!(max_in_window(&sent, S) <= (rate + burst) as usize,
            "{} in one second, rate {rate} burst {burst}", max_in_window(&sent, S));
    }

    #[test]
    fn steady_demand_gets_the_full_pace(rate in 1u32..100, burst in 1u32..10, secs in 1u64..8) {
        let pace = Pace::new(rate as f64, burst);
        // An arrival every 100 µs for `secs` seconds.
        let arrivals: Vec<u64> = (0..secs * 10_000).map(|n| S + n * 100_000).collect();
        let sent = run(&pace, &arrivals, |_| 1.0).len() as u64;
        let ideal = rate as u64 * secs + burst as u64;
        prop_assert!(sent <= ideal && sent * 100 + 200 >= ideal * 98, "sent {sent}, ideal {ideal}");
    }

    /// Over any 24 hours the cap holds, across restarts (snapshot and restore).
    #[test]
    fn daily_cap_holds_over_any_24_hours(
        limit in 1u64..50,
        gaps_min in proptest::collection::vec(0u64..600, 1..400),
        restart_every in 1usize..100,
    ) {
        let day = 24 * 60 * 60_000u64;
        let mut cap = DailyCap::new(limit);
        let mut t = 1_700_000_000_000u64;
        let mut sent = Vec::new();
        for (i, g) in gaps_min.iter().enumerate() {
            t += g * 10_000;
            if i % restart_every == 0 {
                let saved = cap.snapshot();
                cap = DailyCap::new(limit);
                cap.restore(&saved, t);
            }
            if cap.try_take(t) {
                sent.push(t);
            }
        }
        prop_assert!(max_in_window(&sent, day - 1) as u64 <= limit);
    }
}

#[test]
fn daily_cap_counts_and_forgets_after_24_hours() {
    let cap = DailyCap::new(3);
    let t = 1_700_000_000_000;
    assert!(cap.try_take(t) && cap.try_take(t + 1) && cap.try_take(t + 60_000));
    assert!(!cap.try_take(t + 120_000));
    assert!(cap.exhausted(t + 120_000));
    assert_eq!(cap.sent_24h(t + 120_000), 3);
    cap.give_back(t + 60_000);
    assert_eq!(cap.sent_24h(t + 120_000), 2);
    assert!(cap.try_take(t + 120_000));
    // A day and a minute later the first two are forgotten.
    // A day and a minute later the first minute's two are forgotten; the one given
    // back never counted.
    let later = t + 24 * 3_600_000 + 60_000;
    assert_eq!(cap.sent_24h(later), 1);
    assert!(cap.try_take(later));
    let saved = cap.snapshot();
    let again = DailyCap::new(3);
    again.restore(&saved, later);
    assert_eq!(again.sent_24h(later), 2);
}
