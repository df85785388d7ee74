use super::*;
use HealthState::*;

fn settings() -> Settings {
    Settings {
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        recovery_wait: Duration::from_secs(30),
        slow_start: Duration::from_secs(10),
        trial_initial: Duration::from_secs(5),
        trial_max: Duration::from_secs(20),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn fail(m: &mut Machine, now: Instant, s: &Settings) -> Option<Transition> {
    m.observe(Signal::ProbeFail("503".into()), now, s)
}

#[test]
fn probe_failures_need_the_threshold() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(true, t0);
    assert_eq!(fail(&mut m, t0, &s), None);
    assert_eq!(fail(&mut m, t0, &s), None);
    // A pass in between resets the count.
    assert_eq!(m.observe(Signal::ProbePass, t0, &s), None);
    assert_eq!(fail(&mut m, t0, &s), None);
    assert_eq!(fail(&mut m, t0, &s), None);
    let t = fail(&mut m, t0, &s).expect("third failure in a row");
    assert_eq!((t.from, t.to), (Healthy, Degraded));
    assert!(t.reason.contains("3 health checks"), "{}", t.reason);
    assert!(!m.state().routable());
}

#[test]
fn passive_ejection_is_immediate() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(true, t0);
    let t = m
        .observe(Signal::Ejected("5 requests failed".into()), t0, &s)
        .unwrap();
    assert_eq!(t.to, Degraded);
    // Already out: a second ejection changes nothing.
    assert_eq!(m.observe(Signal::Ejected("x".into()), t0, &s), None);
}

#[test]
fn recovery_within_the_wait_causes_no_failure() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(true, t0);
    m.observe(Signal::Ejected("down".into()), t0, &s);
    assert_eq!(m.tick(t0 + ms(29_000), &s), None);
    assert_eq!(m.observe(Signal::ProbePass, t0 + ms(29_100), &s), None);
    let t = m.observe(Signal::ProbePass, t0 + ms(29_200), &s).unwrap();
    assert_eq!((t.from, t.to), (Degraded, Recovering));
    assert_eq!(t.outage, Some(ms(29_200)));
    // Past the recovery wait now, but recovering: never `failed`.
    assert_eq!(m.tick(t0 + ms(31_000), &s), None);
    assert_eq!(m.state(), Recovering);
}

#[test]
fn degraded_past_the_wait_fails_then_recovers_with_slow_start() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(true, t0);
    m.observe(Signal::Ejected("down".into()), t0, &s);
    let t = m.tick(t0 + ms(30_000), &s).unwrap();
    assert_eq!((t.from, t.to), (Degraded, Failed));
    m.observe(Signal::ProbePass, t0 + ms(40_000), &s);
    let t = m.observe(Signal::ProbePass, t0 + ms(41_000), &s).unwrap();
    assert_eq!((t.from, t.to), (Failed, Recovering));
    // Slow start: 10% at once, half way at 5 s of 10, full at the end.
    let back = t0 + ms(41_000);
    assert!((m.factor(back, &s) - 0.1).abs() < 1e-9);
    assert!((m.factor(back + ms(5_000), &s) - 0.55).abs() < 1e-9);
    assert_eq!(m.tick(back + ms(9_999), &s), None);
    let t = m.tick(back + ms(10_000), &s).unwrap();
    assert_eq!((t.from, t.to), (Recovering, Healthy));
    assert_eq!(m.factor(back + ms(10_000), &s), 1.0);
    assert_eq!(m.mean_time_to_recovery(), Some(ms(41_000)));
}

#[test]
fn relapse_while_recovering_returns_to_failed() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(true, t0);
    m.observe(Signal::Ejected("down".into()), t0, &s);
    m.tick(t0 + ms(30_000), &s);
    m.observe(Signal::ProbePass, t0 + ms(31_000), &s);
    m.observe(Signal::ProbePass, t0 + ms(32_000), &s);
    assert_eq!(m.state(), Recovering);
    let t = m
        .observe(Signal::Ejected("again".into()), t0 + ms(33_000), &s)
        .unwrap();
    assert_eq!((t.from, t.to), (Recovering, Failed));
    assert_eq!(m.outage(t0 + ms(34_000)), Some(ms(34_000)));
    assert_eq!(m.mean_time_to_recovery(), None);
}

#[test]
fn relapse_from_degraded_keeps_the_original_wait() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(true, t0);
    m.observe(Signal::Ejected("down".into()), t0, &s);
    m.observe(Signal::ProbePass, t0 + ms(1_000), &s);
    m.observe(Signal::ProbePass, t0 + ms(2_000), &s);
    m.observe(Signal::Ejected("again".into()), t0 + ms(3_000), &s);
    assert_eq!(m.state(), Degraded);
    // 30 s after the first fall, not after the relapse.
    assert_eq!(m.tick(t0 + ms(29_999), &s), None);
    assert_eq!(m.tick(t0 + ms(30_000), &s).unwrap().to, Failed);
}

#[test]
fn without_probes_a_trial_follows_a_doubling_backoff() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(false, t0);
    m.observe(Signal::Ejected("down".into()), t0, &s);
    assert_eq!(m.tick(t0 + ms(4_999), &s), None);
    let t = m.tick(t0 + ms(5_000), &s).unwrap();
    assert_eq!(
        (t.from, t.to, t.reason.as_str()),
        (Degraded, Recovering, "trial after backoff")
    );
    // The trial fails: out again, and the next trial waits twice as long.
    m.observe(Signal::Ejected("trial failed".into()), t0 + ms(5_100), &s);
    assert_eq!(m.state(), Degraded);
    assert_eq!(m.tick(t0 + ms(15_099), &s), None);
    assert_eq!(m.tick(t0 + ms(15_100), &s).unwrap().to, Recovering);
    // A trial that holds through slow start makes it healthy.
    assert_eq!(m.tick(t0 + ms(25_100), &s).unwrap().to, Healthy);
}

#[test]
fn probed_masters_wait_for_probes_not_trials() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(true, t0);
    m.observe(Signal::Ejected("down".into()), t0, &s);
    assert_eq!(m.tick(t0 + ms(10_000), &s), None);
    assert_eq!(m.state(), Degraded);
}

#[test]
fn uptime_ratio_counts_routable_time() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(true, t0);
    m.tick(t0 + ms(6_000), &s);
    m.observe(Signal::Ejected("down".into()), t0 + ms(6_000), &s);
    m.tick(t0 + ms(8_000), &s);
    let r = m.uptime_ratio(t0 + ms(8_000));
    assert!((r - 0.75).abs() < 1e-9, "{r}");
}

#[test]
fn deadlines_name_the_next_time_driven_transition() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(false, t0);
    assert_eq!(m.deadline(&s), None);
    m.observe(Signal::Ejected("down".into()), t0, &s);
    // Degraded without probes: the trial (5 s) comes before the recovery wait (30 s).
    assert_eq!(m.deadline(&s), Some(t0 + ms(5_000)));
    m.set_probed(true);
    assert_eq!(m.deadline(&s), Some(t0 + ms(30_000)));
    m.tick(t0 + ms(30_000), &s);
    assert_eq!(m.deadline(&s), None);
    m.observe(Signal::ProbePass, t0 + ms(31_000), &s);
    m.observe(Signal::ProbePass, t0 + ms(32_000), &s);
    assert_eq!(m.deadline(&s), Some(t0 + ms(42_000)));
}

#[test]
fn a_ban_suspends_from_any_state_and_nothing_but_reinstate_lifts_it() {
    let s = settings();
    for probed in [true, false] {
        let t0 = Instant::now();
        let mut m = Machine::new(probed, t0);
        let t = m
            .observe(Signal::Banned("answered 403".into()), t0, &s)
            .unwrap();
        assert_eq!((t.from, t.to), (Healthy, Suspended));
        assert!(!m.state().routable());
        assert_eq!(m.suspended_reason(), Some("answered 403"));
        assert_eq!(m.deadline(&s), None, "no time-driven way out");
        // Probes, live outcomes, a second ban and hours of ticks leave it suspended.
        for i in 1..=20u64 {
            let now = t0 + Duration::from_secs(i * 600);
            assert_eq!(m.observe(Signal::ProbePass, now, &s), None);
            assert_eq!(m.observe(Signal::Ejected("x".into()), now, &s), None);
            assert_eq!(m.observe(Signal::Banned("again".into()), now, &s), None);
            assert_eq!(m.tick(now, &s), None);
        }
        assert_eq!(m.state(), Suspended);
        assert_eq!(m.suspended_reason(), Some("answered 403"));
        let back = t0 + Duration::from_secs(12_001);
        let t = m.reinstate(back).unwrap();
        assert_eq!((t.from, t.to), (Suspended, Recovering));
        assert_eq!(t.outage, Some(Duration::from_secs(12_001)));
        assert_eq!(m.suspended_reason(), None);
        assert_eq!(
            m.reinstate(back),
            None,
            "only a suspended master is reinstated"
        );
        // Slow start from a tenth, then healthy.
        assert!((m.factor(back, &s) - 0.1).abs() < 1e-9);
        assert_eq!(m.tick(back + ms(10_000), &s).unwrap().to, Healthy);
    }
}

#[test]
fn a_ban_while_down_suspends_and_a_relapse_after_reinstating_fails() {
    let s = settings();
    let t0 = Instant::now();
    let mut m = Machine::new(true, t0);
    m.observe(Signal::Ejected("down".into()), t0, &s);
    assert_eq!(m.state(), Degraded);
    let t = m
        .observe(Signal::Banned("banned".into()), t0 + ms(1_000), &s)
        .unwrap();
    assert_eq!((t.from, t.to), (Degraded, Suspended));
    // recovery_wait passes: it stays suspended, not failed.
    assert_eq!(m.tick(t0 + ms(60_000), &s), None);
    m.reinstate(t0 + ms(61_000)).unwrap();
    let t = m
        .observe(Signal::Ejected("again".into()), t0 + ms(62_000), &s)
        .unwrap();
    assert_eq!((t.from, t.to), (Recovering, Failed));
    assert_eq!(m.outage(t0 + ms(63_000)), Some(ms(63_000)));
}
