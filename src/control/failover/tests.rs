//! The controller's decisions under an injected clock: probe results, ejections, ticks
//! and commands are fed by hand with chosen instants, and the published routing table
//! is read back. Masters have a `health_url` only so that their machines wait for probes;
//! the probe tasks are spawned but never run (the test body does not await).

use super::*;
use crate::audit::AuditLog;
use crate::control::operator::OperatorStore;
use crate::server::{shutdown_pair, ShutdownTrigger};

pub(super) struct Rig {
    pub(super) c: Controller,
    pub(super) control: Arc<Control>,
    t0: Instant,
    _shutdown: ShutdownTrigger,
}

/// Two primaries `a`, `b` and two standbys: `s` (region X, priority 2) and `t`
/// (region Y, priority 1). `a` is in region X. Health: 2 passes / 2 failures;
/// failover: recovery wait 30 s, slow start 30 s, failback delay 60 s.
fn rig(failover_extra: &str) -> Rig {
    rig_with(failover_extra, OperatorStore::in_memory())
}

/// [`rig`] starting from the operator state in `store`, as after a restart.
pub(super) fn rig_with(failover_extra: &str, store: OperatorStore) -> Rig {
    let mut text = format!(
        "[health]\nhealthy_threshold = 2\nunhealthy_threshold = 2\n[failover]\n{failover_extra}\n"
    );
    for (id, role, region, priority) in [
        ("a", "primary", "X", 1),
        ("b", "primary", "Y", 1),
        ("s", "standby", "X", 2),
        ("t", "standby", "Y", 1),
    ] {
        text.push_str(&format!(
            "[[masters]]\nid = \"{id}\"\nsend_url = \"http://127.0.0.1:9/send\"\nhealth_url = \"http://127.0.0.1:9/health\"\nrole = \"{role}\"\nregion = \"{region}\"\npriority = {priority}\nweight = 2\n"
        ));
    }
    let config = Config::from_toml(&text).expect("valid config");
    let control = Arc::new(Control::new(
        config,
        0,
        None,
        Arc::new(AuditLog::in_memory()),
        store,
    ));
    let (trigger, shutdown) = shutdown_pair();
    let (alerter, _webhook_task_not_run) = Alerter::new(None, Duration::ZERO, shutdown);
    let (probe_tx, _probe_rx) = mpsc::channel(16);
    let view = Arc::new(ArcSwap::from_pointee(View::default()));
    let t0 = Instant::now();
    let c = Controller::new(control.clone(), Arc::new(alerter), probe_tx, view, t0);
    Rig {
        c,
        control,
        t0,
        _shutdown: trigger,
    }
}

impl Rig {
    pub(super) fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    pub(super) fn probe(&mut self, id: &str, ok: bool, secs: f64) {
        let result = if ok {
            Ok(())
        } else {
            Err(probe::ProbeError::Failed("503".to_string()))
        };
        let report = Report {
            master: Arc::from(id),
            result,
        };
        let now = self.at(secs);
        self.c.on_probe(report, now);
    }

    pub(super) fn down(&mut self, id: &str, secs: f64) {
        self.probe(id, false, secs);
        self.probe(id, false, secs);
    }

    pub(super) fn up(&mut self, id: &str, secs: f64) {
        self.probe(id, true, secs);
        self.probe(id, true, secs);
    }

    pub(super) fn tick(&mut self, secs: f64) {
        let now = self.at(secs);
        self.c.on_tick(now);
    }

    pub(super) fn command(&mut self, command: Command, secs: f64) -> Answer {
        let now = self.at(secs);
        self.c.on_command(command, now)
    }

    /// (state, eligible, promoted, effective weight) in the published table.
    pub(super) fn entry(&self, id: &str) -> (HealthState, bool, bool, f64) {
        let table = self.control.table();
        let m = &table.masters[table.index_of(id).unwrap()];
        (m.health, m.eligible, m.promoted, m.effective_weight)
    }

    pub(super) fn kinds(&self) -> Vec<EventKind> {
        let mut kinds: Vec<_> = self
            .control
            .audit
            .recent(1000)
            .iter()
            .map(|e| e.kind)
            .collect();
        kinds.reverse();
        kinds
    }
}

#[tokio::test]
async fn a_failed_primary_is_replaced_by_the_same_region_standby_then_fails_back() {
    let mut r = rig("");
    r.down("a", 1.0);
    assert_eq!(r.entry("a").0, HealthState::Degraded);
    assert!(!r.entry("a").1, "out of rotation at once");
    r.tick(30.9);
    assert!(!r.entry("s").2, "no failover before recovery_wait");
    r.tick(31.0);
    assert_eq!(r.entry("a").0, HealthState::Failed);
    // `s` shares a's region, though `t` has the better priority; it takes a's priority.
    let (_, eligible, promoted, _) = r.entry("s");
    assert!(eligible && promoted);
    assert!(!r.entry("t").2);
    let table = r.control.table();
    assert_eq!(
        table.masters[table.index_of("s").unwrap()].config.priority,
        1
    );

    // Back and healthy, but held out while `s` has its place.
    r.up("a", 40.0);
    let (state, eligible, _, _) = r.entry("a");
    assert_eq!(state, HealthState::Recovering);
    assert!(!eligible, "held until failback");
    r.tick(70.0);
    assert_eq!(r.entry("a").0, HealthState::Healthy);
    assert!(!r.entry("a").1 && r.entry("s").2);
    // Failback 60 s after it came back; then slow start from 10% of its weight (2).
    r.tick(99.9);
    assert!(r.entry("s").2, "failback waits failback_delay");
    r.tick(100.0);
    assert!(!r.entry("s").1 && !r.entry("s").2, "standby demoted");
    let (_, eligible, _, weight) = r.entry("a");
    assert!(eligible);
    assert!((weight - 0.2).abs() < 1e-9, "{weight}");
    r.tick(115.0);
    let weight = r.entry("a").3;
    assert!((weight - 1.1).abs() < 0.1, "half way: {weight}");
    r.tick(130.0);
    assert_eq!(r.entry("a"), (HealthState::Healthy, true, false, 2.0));
    use EventKind::*;
    assert_eq!(
        r.kinds(),
        vec![
            Degraded,
            Failed,
            FailoverStarted,
            FailoverCompleted,
            Recovered,
            Healthy,
            Failback
        ]
    );
    assert_eq!(r.c.failovers_total, 1);
}

#[tokio::test]
async fn recovery_within_the_wait_causes_no_failover() {
    let mut r = rig("");
    r.down("a", 1.0);
    r.up("a", 20.0);
    r.tick(60.0);
    assert!(!r.entry("s").2 && !r.entry("t").2);
    assert_eq!(r.entry("a").0, HealthState::Healthy);
    assert!(r.c.active.is_empty());
}

#[tokio::test]
async fn the_breaker_opens_past_max_failovers_and_resume_closes_it() {
    let mut r = rig("max_failovers = 1");
    r.down("a", 1.0);
    r.tick(31.0);
    assert!(r.entry("s").2);
    r.down("b", 40.0);
    r.tick(70.0);
    assert!(r.c.breaker_open);
    assert!(
        !r.entry("t").2,
        "no second failover while the breaker is open"
    );
    assert!(r.kinds().contains(&EventKind::BreakerOpen));
    // Resume closes it and fails over `b`, which failed meanwhile.
    let answer = r.command(Command::Resume, 80.0).unwrap();
    assert_eq!(answer["breaker_open"], false);
    assert!(r.entry("t").2);
}

#[tokio::test]
async fn the_breaker_window_forgets_old_failovers() {
    let mut r = rig("max_failovers = 1\nbreaker_window_ms = 60000\nfailback = \"manual\"");
    r.down("a", 1.0);
    r.tick(31.0);
    r.down("b", 100.0);
    r.tick(130.0);
    assert!(
        !r.c.breaker_open,
        "the first failover is outside the window"
    );
    assert!(r.entry("t").2);
}

#[tokio::test]
async fn paused_means_no_automatic_failover() {
    let mut r = rig("");
    r.command(Command::Pause, 0.5).unwrap();
    r.down("a", 1.0);
    r.tick(31.0);
    assert_eq!(r.entry("a").0, HealthState::Failed);
    assert!(!r.entry("s").2);
    r.command(Command::Resume, 40.0).unwrap();
    assert!(r.entry("s").2);
}

#[tokio::test]
async fn manual_failover_holds_the_master_out_until_failback() {
    let mut r = rig("");
    let answer = r.command(Command::Failover("a".into()), 1.0).unwrap();
    assert_eq!(answer["backup"], "s");
    assert!(!r.entry("a").1, "held out");
    assert!(r.entry("s").2);
    // Manual failovers do not fail back by themselves.
    r.tick(500.0);
    assert!(r.entry("s").2);
    let (code, _, _) = r.command(Command::Failover("a".into()), 2.0).unwrap_err();
    assert_eq!(code, StatusCode::CONFLICT);
    let answer = r.command(Command::Failback("s".into()), 501.0).unwrap();
    assert_eq!(answer["master"], "a");
    assert!(r.entry("a").1 && !r.entry("s").2);
    let (code, _, _) = r.command(Command::Failback("a".into()), 502.0).unwrap_err();
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, _, _) = r
        .command(Command::Failover("zz".into()), 503.0)
        .unwrap_err();
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, _) = r.command(Command::Failover("t".into()), 504.0).unwrap_err();
    assert_eq!(code, StatusCode::CONFLICT, "a standby does not fail over");
}

#[tokio::test]
async fn failback_is_refused_while_the_master_is_down() {
    let mut r = rig("failback = \"manual\"");
    r.down("a", 1.0);
    r.tick(31.0);
    let (code, kind, _) = r.command(Command::Failback("a".into()), 40.0).unwrap_err();
    assert_eq!((code, kind), (StatusCode::CONFLICT, "master_down"));
    r.up("a", 50.0);
    r.tick(200.0);
    assert!(r.entry("s").2, "manual failback mode waits for the admin");
    r.command(Command::Failback("a".into()), 201.0).unwrap();
    assert!(!r.entry("s").2);
}

#[tokio::test]
async fn with_no_standby_left_the_others_take_the_traffic() {
    let mut r = rig("");
    r.down("a", 1.0);
    r.tick(31.0);
    r.down("b", 40.0);
    r.tick(70.0);
    assert!(r.entry("s").2 && r.entry("t").2);
    // A third failure has no standby: nothing is promoted, nothing breaks.
    r.down("s", 80.0);
    r.tick(111.0);
    assert_eq!(r.c.active.len(), 2);
    assert!(r.entry("t").1);
}

#[tokio::test]
async fn ejection_from_the_request_path_takes_a_master_out() {
    let mut r = rig("");
    let now = r.at(1.0);
    r.c.signal(
        &Arc::from("b"),
        Signal::Ejected("5 live requests failed".into()),
        now,
    );
    assert_eq!(r.entry("b").0, HealthState::Degraded);
    assert!(!r.entry("b").1);
}

#[tokio::test]
async fn a_dead_standby_in_a_failed_place_is_replaced() {
    let mut r = rig("");
    r.down("a", 1.0);
    r.tick(31.0);
    assert!(r.entry("s").2);
    // `s` dies in a's place: `t` takes it over at the next tick.
    r.down("s", 40.0);
    r.tick(40.1);
    assert!(
        r.entry("t").1 && r.entry("t").2,
        "t promoted in the empty place"
    );
    assert_eq!(r.c.failovers_total, 2);
}

#[tokio::test]
async fn a_place_left_empty_is_filled_once_a_standby_is_free() {
    let mut r = rig("");
    r.down("s", 0.5);
    r.down("t", 0.5);
    r.down("a", 1.0);
    r.tick(31.0);
    assert!(r.c.active.is_empty(), "no standby free");
    r.up("t", 35.0);
    r.tick(35.1);
    assert!(r.entry("t").2, "t fills a's place once it is back");
}

#[tokio::test]
async fn manual_failback_mode_keeps_the_standby_until_asked() {
    let mut r = rig("failback = \"manual\"");
    r.down("a", 1.0);
    r.tick(31.0);
    r.up("a", 40.0);
    r.tick(500.0);
    assert!(
        r.entry("s").2 && !r.entry("a").1,
        "a does not take its place back by itself"
    );
    r.command(Command::Failback("a".into()), 501.0).unwrap();
    assert!(r.entry("a").1 && !r.entry("s").2);
}

#[tokio::test]
async fn probes_failing_for_local_reasons_leave_the_master_alone() {
    let mut r = rig("");
    let local = || {
        Err(probe::ProbeError::Local(
            crate::pool::LocalFault::FileDescriptors,
            "Too many open files (os error 24)".to_string(),
        ))
    };
    // One real failure first (the threshold is 2)...
    r.probe("a", false, 0.0);
    for i in 1..11 {
        let now = r.at(f64::from(i));
        r.c.on_probe(
            Report {
                master: Arc::from("a"),
                result: local(),
            },
            now,
        );
        r.tick(f64::from(i) + 0.5);
    }
    r.tick(100.0);
    // ...then ten local ones: none counted, or it would be degraded.
    let (state, eligible, _, _) = r.entry("a");
    assert_eq!(state, HealthState::Healthy);
    assert!(eligible);
    assert!(!r.entry("s").2, "no failover");
    assert!(r.kinds().is_empty(), "{:?}", r.kinds());
    // Nor did they end the run: the next real failure is the second in a row.
    r.probe("a", false, 101.0);
    assert_eq!(r.entry("a").0, HealthState::Degraded);
}

#[tokio::test]
async fn an_error_of_an_exchange_routed_before_the_recovery_does_not_come_back() {
    let mut r = rig("");
    r.down("a", 1.0);
    r.up("a", 2.0);
    assert_eq!(r.entry("a").0, HealthState::Recovering);
    let during = r.control.table();
    let a = &during.masters[during.index_of("a").unwrap()];
    a.stats.record_failure("503".into(), a.table_version);
    assert!(a.stats.last_error().is_some(), "shown while recovering");
    r.tick(33.0);
    assert_eq!(r.entry("a").0, HealthState::Healthy);
    assert!(a.stats.last_error().is_none(), "cleared once healthy");
    // An exchange routed while it was recovering fails late: counted, not shown.
    a.stats.record_failure("timed out".into(), a.table_version);
    assert!(a.stats.last_error().is_none());
    let now = r.control.table();
    let a = &now.masters[now.index_of("a").unwrap()];
    a.stats.record_failure("reset".into(), a.table_version);
    assert_eq!(
        a.stats.last_error().as_deref().map(String::as_str),
        Some("reset")
    );
}
