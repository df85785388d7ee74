//! The failover controller: one task that owns every master's health
//! [`Machine`], the failovers in progress and the circuit breaker. Probe results,
//! passive ejections from the request path, a clock tick and admin commands come in;
//! every decision goes out as one new routing table through [`Control::update`], an
//! audit event and, where SPEC section 5 says so, an alert.
//!
//! All transitions happen in this task, so decisions never race each other.

use super::shares::Shares;
use super::{Control, Ejection, MasterState};
use crate::alerts::{Alerter, Severity};
use crate::audit::{EventKind, NewEvent};
use crate::config::{Config, Failback, MasterConfig, Role};
use crate::health::machine::{slow_start, Machine, Settings, Signal, Transition};
use crate::health::probe::{self, ProbeError, Report};
use crate::health::HealthState;
use crate::server::Shutdown;
use crate::util::rfc3339;
use arc_swap::ArcSwap;
use http::{StatusCode, Uri};
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How often slow-start steps, failback delays, empty places, the share window and
/// the view are looked at. Machine deadlines wake the controller sooner.
const TICK: Duration = Duration::from_millis(50);
/// Window over which `share` of recent traffic is measured (rolling, in steps).
const SHARE_WINDOW: Duration = Duration::from_secs(10);
const SHARE_STEP: Duration = Duration::from_secs(1);
/// A master failing this often inside [`FLAP_WINDOW`] raises a warning.
const FLAPS: usize = 3;
const FLAP_WINDOW: Duration = Duration::from_secs(30 * 60);
/// An outage longer than this raises a warning.
const SLOW_RECOVERY: Duration = Duration::from_secs(5 * 60);

/// An admin command for the controller.
#[derive(Debug)]
pub enum Command {
    Pause,
    Resume,
    Failover(String),
    Failback(String),
    /// Lifts a master's suspension (SPEC section 10).
    Reinstate(String),
    /// Cluster mode: check an admin command and answer the change to write to the
    /// shared document (see [`clustered`]), without making it.
    Plan(Box<Command>),
    /// Cluster mode: apply a revision of the shared document.
    Apply(Box<crate::cluster::shared::SharedDoc>),
}

/// What started a failover: it decides the breaker's part and the audit reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The master failed its health checks or live requests past `recovery_wait`.
    Health,
    /// The master was suspended after a ban answer. It neither waits for the breaker
    /// nor counts toward it: the breaker guards against health readings that may be
    /// wrong (a network split makes every master look down), while a ban is the
    /// provider's own verdict, and the master is out of rotation either way, so
    /// refusing its standby would only take capacity away.
    Ban,
    /// Asked for through the admin API.
    Manual,
}

/// The controller's answer to a command: a JSON body, or an HTTP error.
pub type Answer = Result<serde_json::Value, (StatusCode, &'static str, String)>;

/// What `/ha/failover` and `/ha/status` show of the controller.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    pub failover_paused: bool,
    pub breaker_open: bool,
    pub active: Vec<ActiveView>,
    pub last_failover_at: Option<String>,
    pub failovers_total: u64,
    pub masters: HashMap<String, MasterView>,
}

impl View {
    /// The standby holding the place of the failed master `failed`, if one does.
    pub fn backup_of(&self, failed: &str) -> Option<String> {
        self.active
            .iter()
            .find(|a| a.failed == failed)
            .map(|a| a.backup.clone())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ActiveView {
    pub failed: String,
    pub backup: String,
    pub since: String,
    pub manual: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MasterView {
    pub uptime_ratio: f64,
    pub mean_time_to_recovery_ms: Option<u64>,
    /// Share of the requests of the last 10 s (rolling; since start when sooner).
    pub share: f64,
    /// Why it is suspended, while it is.
    pub suspended_reason: Option<String>,
}

/// The handle the admin API holds.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::Sender<(Command, oneshot::Sender<Answer>)>,
    view: Arc<ArcSwap<View>>,
}

impl Handle {
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    pub async fn command(&self, command: Command) -> Answer {
        let (tx, rx) = oneshot::channel();
        let gone = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the failover controller is stopping".to_string(),
            )
        };
        self.commands
            .send((command, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

struct Active {
    backup: Arc<str>,
    since: Instant,
    since_at: SystemTime,
    manual: bool,
}

struct Watched {
    machine: Machine,
    /// The running probe, with what it checks: the URL and its pool key (which names
    /// the trusted roots, so a new `tls_ca` restarts it).
    probe: Option<((Uri, String), JoinHandle<()>)>,
    /// When it fell, for the flapping warning.
    falls: VecDeque<Instant>,
    slow_recovery_warned: bool,
    /// The slow-start factor in the published table.
    published_factor: f64,
    /// When it took its place back from a standby: slow start runs again from there.
    failed_back_at: Option<Instant>,
    /// While suspended: since when, for the saved state.
    suspended_at: Option<SystemTime>,
}

impl Watched {
    /// A master the controller starts watching at `now`: no probe yet, nothing seen.
    fn new(master: &MasterConfig, now: Instant) -> Watched {
        Watched {
            machine: Machine::new(master.health_url.is_some(), now),
            probe: None,
            falls: VecDeque::new(),
            slow_recovery_warned: false,
            published_factor: 1.0,
            failed_back_at: None,
            suspended_at: None,
        }
    }
}

struct Controller {
    control: Arc<Control>,
    alerts: Arc<Alerter>,
    settings: Settings,
    config: Arc<Config>,
    masters: HashMap<Arc<str>, Watched>,
    active: HashMap<Arc<str>, Active>,
    paused: bool,
    breaker_open: bool,
    recent_failovers: VecDeque<Instant>,
    failovers_total: u64,
    last_failover_at: Option<SystemTime>,
    probe_tx: mpsc::Sender<Report>,
    view: Arc<ArcSwap<View>>,
    shares: HashMap<Arc<str>, f64>,
    share_window: Shares,
    /// When the shares were last checked for imbalance.
    imbalance_checked: Instant,
    had_eligible: bool,
    /// Draining masters already reported `drained` in the audit trail.
    drained: HashSet<Arc<str>>,
    /// The last save failed (logged once, until one works again).
    save_failing: bool,
    /// Cluster mode: the shared document this node follows.
    link: Option<clustered::Link>,
}

/// Runs one step of the controller; `None` when it panicked. The panic hook has logged
/// and counted the panic; the controller goes on with its next input.
fn survive<T>(step: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).ok()
}

/// Starts the controller task. It runs until `shutdown`.
pub fn spawn(
    control: Arc<Control>,
    alerts: Arc<Alerter>,
    shutdown: Shutdown,
) -> (Handle, JoinHandle<()>) {
    spawn_with(control, alerts, None, shutdown)
}

/// [`spawn`], in cluster mode when `shared` is set: automatic failover, failback and
/// the breaker are the leader's, and every node applies the shared document.
pub fn spawn_with(
    control: Arc<Control>,
    alerts: Arc<Alerter>,
    shared: Option<Arc<crate::cluster::shared::Shared>>,
    mut shutdown: Shutdown,
) -> (Handle, JoinHandle<()>) {
    let (commands, mut command_rx) = mpsc::channel::<(Command, oneshot::Sender<Answer>)>(16);
    let (probe_tx, mut probe_rx) = mpsc::channel::<Report>(256);
    let mut ejections = control
        .take_ejections()
        .expect("one failover controller per Control");
    let view = Arc::new(ArcSwap::from_pointee(View::default()));
    let mut c = Controller::new(control, alerts, probe_tx, view.clone(), Instant::now());
    c.link = shared.map(|s| clustered::Link::new(s, c.control.operator_state()));
    let task = tokio::spawn(async move {
        // Periodic work runs every TICK however busy the inputs are; a machine deadline
        // (recovery wait, slow start, trial) wakes the loop sooner.
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = c.next_deadline();
            let deadline = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Each input is handled alone: a panic in one (logged and counted by the
            // panic hook) loses that input only, never the controller.
            tokio::select! {
                Some(report) = probe_rx.recv() => {
                    survive(|| c.on_probe(report, Instant::now()));
                }
                Some(Ejection { master, reason, banned }) = ejections.recv() => {
                    let signal = if banned {
                        Signal::Banned(reason)
                    } else {
                        Signal::Ejected(reason)
                    };
                    survive(|| c.signal(&master, signal, Instant::now()));
                }
                Some((command, reply)) = command_rx.recv() => {
                    // A panicked command drops `reply`: the admin API answers an error.
                    if let Some(answer) = survive(|| c.on_command(command, Instant::now())) {
                        let _caller_gone = reply.send(answer);
                    }
                }
                _ = tick.tick() => {
                    survive(|| c.on_tick(Instant::now()));
                }
                _ = deadline => {
                    survive(|| c.on_tick(Instant::now()));
                }
                _ = shutdown.wait() => break,
            }
        }
        for w in c.masters.values() {
            if let Some((_, task)) = &w.probe {
                task.abort();
            }
        }
    });
    (Handle { commands, view }, task)
}

fn settings(config: &Config) -> Settings {
    Settings::new(
        &config.health,
        config.failover.recovery_wait,
        config.failover.slow_start,
    )
}

impl Controller {
    /// A controller following the running config, with probes started. `now` is the
    /// clock reading every machine starts from.
    fn new(
        control: Arc<Control>,
        alerts: Arc<Alerter>,
        probe_tx: mpsc::Sender<Report>,
        view: Arc<ArcSwap<View>>,
        now: Instant,
    ) -> Controller {
        let config = control.table().config.clone();
        control.set_alerter(alerts.clone());
        let mut c = Controller {
            settings: settings(&config),
            control,
            alerts,
            config: config.clone(),
            masters: HashMap::new(),
            active: HashMap::new(),
            paused: false,
            breaker_open: false,
            recent_failovers: VecDeque::new(),
            failovers_total: 0,
            last_failover_at: None,
            probe_tx,
            view,
            shares: HashMap::new(),
            share_window: Shares::new(SHARE_WINDOW, SHARE_STEP),
            imbalance_checked: now,
            had_eligible: true,
            drained: HashSet::new(),
            save_failing: false,
            link: None,
        };
        c.restore(now);
        c.sync_config(config, now);
        c
    }

    /// Follows a new config: machines for new masters, probes started, stopped or
    /// moved, failovers whose masters left dropped.
    fn sync_config(&mut self, config: Arc<Config>, now: Instant) {
        self.settings = settings(&config);
        self.alerts.set_webhook(config.alerts.webhook_url.clone());
        let ids: Vec<Arc<str>> = config.masters.iter().map(|m| m.id.clone()).collect();
        let control = &self.control;
        self.masters.retain(|id, w| {
            let keep = ids.contains(id);
            if !keep {
                if let Some((_, task)) = &w.probe {
                    task.abort();
                }
                // A master that left forgets its suspension, as its saved state does:
                // added again, it starts afresh.
                control.master_stats(id).reinstate();
            }
            keep
        });
        let timing_changed = config.health.interval != self.config.health.interval
            || config.health.timeout != self.config.health.timeout;
        for m in &config.masters {
            let w = self
                .masters
                .entry(m.id.clone())
                .or_insert_with(|| Watched::new(m, now));
            w.machine.set_probed(m.health_url.is_some());
            let target = m
                .health_url
                .as_ref()
                .zip(m.health.as_ref())
                .map(|(url, endpoint)| (url.clone(), endpoint.key.clone()));
            let same = match (&w.probe, &target) {
                (Some((running, _)), Some(new)) => running == new,
                (None, None) => true,
                _ => false,
            };
            if !same || timing_changed {
                if let Some((_, task)) = w.probe.take() {
                    task.abort();
                }
                if let (Some(target), Some(endpoint)) = (target, &m.health) {
                    let task = tokio::spawn(probe::run(
                        m.id.clone(),
                        endpoint.clone(),
                        config.health.interval,
                        config.health.timeout,
                        self.probe_tx.clone(),
                    ));
                    w.probe = Some((target, task));
                }
            }
        }
        self.active.retain(|failed, a| {
            config.master(failed).is_some() && config.master(&a.backup).is_some()
        });
        self.config = config;
        self.publish(now);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.masters
            .values()
            .filter_map(|w| w.machine.deadline(&self.settings))
            .min()
    }

    fn on_probe(&mut self, report: Report, now: Instant) {
        let signal = match report.result {
            Ok(()) => Signal::ProbePass,
            Err(ProbeError::Failed(why)) => Signal::ProbeFail(why),
            Err(ProbeError::Local(fault, why)) => {
                // Not the master's doing: its machine sees nothing.
                self.control
                    .local_fault(fault, &report.master, "a health probe of", &why);
                return;
            }
        };
        self.signal(&report.master, signal, now);
    }

    fn signal(&mut self, id: &Arc<str>, signal: Signal, now: Instant) {
        // A master added by a reload the next tick has not followed yet is known
        // first: a ban from its first answers must not be lost.
        let config = self.control.table().config.clone();
        if !Arc::ptr_eq(&config, &self.config) {
            self.sync_config(config, now);
        }
        let Some(w) = self.masters.get_mut(id) else {
            return;
        };
        if let Some(t) = w.machine.observe(signal, now, &self.settings) {
            self.transition(id.clone(), t, now);
            self.publish(now);
            self.save();
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let config = self.control.table().config.clone();
        if !Arc::ptr_eq(&config, &self.config) {
            self.sync_config(config, now);
        }
        let mut changed = false;
        let ids: Vec<Arc<str>> = self.masters.keys().cloned().collect();
        for id in ids {
            let Some(w) = self.masters.get_mut(&id) else {
                continue;
            };
            if let Some(t) = w.machine.tick(now, &self.settings) {
                self.transition(id.clone(), t, now);
                changed = true;
            } else {
                // Slow start: publish the ramp in 5% steps.
                let step = |f: f64| (f * 20.0).floor();
                changed |= step(factor(w, now, &self.settings)) != step(w.published_factor);
            }
            self.watch_outage(&id, now);
        }
        if self.link.is_none() {
            changed |= self.auto_failback(now);
        }
        if self.link.is_none() || self.leads() {
            changed |= self.fill_empty_places(now);
        }
        self.cluster_tick(now);
        self.watch_drains();
        if self.breaker_open {
            self.prune_failovers(now);
        }
        self.measure_shares(now);
        if changed {
            self.publish(now);
        } else {
            self.publish_view(now);
        }
        // A reload may have ended failovers too (sync_config): compared, written if so.
        self.save();
    }

    /// Records a transition and acts on it.
    fn transition(&mut self, id: Arc<str>, t: Transition, now: Instant) {
        let audit = &self.control.audit;
        let m = id.as_ref();
        tracing::info!(master = m, from = t.from.as_str(), to = t.to.as_str(), reason = %t.reason, "master state changed");
        match t.to {
            HealthState::Degraded => {
                audit.record(NewEvent::new(EventKind::Degraded, &t.reason).master(m));
                if t.from == HealthState::Healthy {
                    self.alerts.raise(
                        Severity::Critical,
                        "master_down",
                        Some(m),
                        format!("{m} is out of rotation: {}", t.reason),
                    );
                }
                self.note_fall(&id, now);
            }
            HealthState::Failed => {
                audit.record(NewEvent::new(EventKind::Failed, &t.reason).master(m));
                if self.config.failover.enabled && !self.paused {
                    let _logged = self.fail_over(&id, Cause::Health, now);
                }
            }
            HealthState::Suspended => self.suspended(&id, t, now),
            HealthState::Recovering => {
                // Counts toward the passive limit start again.
                if let Some(stats) = self.stats(&id) {
                    stats.consecutive_failures.store(0, Relaxed);
                }
                let mut e = NewEvent::new(EventKind::Recovered, &t.reason).master(m);
                if let Some(outage) = t.outage {
                    e = e.duration(outage);
                }
                audit.record(e);
                self.alerts.raise(
                    Severity::Info,
                    "master_recovered",
                    Some(m),
                    format!("{m} is back in rotation (slow start): {}", t.reason),
                );
                if let Some(w) = self.masters.get_mut(&id) {
                    w.slow_recovery_warned = false;
                }
            }
            HealthState::Healthy => {
                audit.record(NewEvent::new(EventKind::Healthy, &t.reason).master(m));
                // Its last error belongs to the outage it is over, and so do the
                // errors of exchanges routed before this transition's table.
                if let Some(stats) = self.stats(&id) {
                    stats.clear_last_error(self.control.table().version + 1);
                }
            }
        }
    }

    fn stats(&self, id: &str) -> Option<Arc<crate::routing::stats::MasterStats>> {
        let table = self.control.table();
        table.index_of(id).map(|i| table.masters[i].stats.clone())
    }

    fn note_fall(&mut self, id: &Arc<str>, now: Instant) {
        let Some(w) = self.masters.get_mut(id) else {
            return;
        };
        w.falls.push_back(now);
        while w
            .falls
            .front()
            .is_some_and(|t| now.duration_since(*t) > FLAP_WINDOW)
        {
            w.falls.pop_front();
        }
        if w.falls.len() >= FLAPS {
            self.alerts.raise(
                Severity::Warning,
                "master_flapping",
                Some(id),
                format!("{id} failed {} times within 30 minutes", w.falls.len()),
            );
        }
    }

    fn watch_outage(&mut self, id: &Arc<str>, now: Instant) {
        let Some(w) = self.masters.get_mut(id) else {
            return;
        };
        if w.machine.state() == HealthState::Suspended {
            // Not a slow recovery: it waits for an operator, and said so (critical).
            return;
        }
        if let Some(outage) = w.machine.outage(now) {
            if outage > SLOW_RECOVERY && !w.slow_recovery_warned {
                w.slow_recovery_warned = true;
                self.alerts.raise(
                    Severity::Warning,
                    "slow_recovery",
                    Some(id),
                    format!("{id} has been down for over five minutes"),
                );
            }
        }
    }

    /// Promotes the best standby in the place of `failed`. `Err` says why not.
    fn fail_over(
        &mut self,
        failed: &Arc<str>,
        cause: Cause,
        now: Instant,
    ) -> Result<Arc<str>, String> {
        let Some(failed_cfg) = self.config.master(failed).cloned() else {
            return Err(format!("no master with id `{failed}`"));
        };
        if failed_cfg.role == Role::Standby {
            return Err(format!(
                "{failed} is a standby; only primaries and secondaries fail over"
            ));
        }
        if let Some(a) = self.active.get(failed) {
            return Err(format!("{failed} is already failed over to {}", a.backup));
        }
        let proposed = self.link.is_some() && cause != Cause::Manual;
        if proposed {
            self.may_decide(failed, cause)?;
        }
        if cause == Cause::Health {
            self.prune_failovers(now);
            if self.breaker_open {
                return Err("the failover breaker is open".into());
            }
            if self.recent_failovers.len() >= self.config.failover.max_failovers as usize {
                self.open_breaker();
                return Err("the failover breaker is open".into());
            }
        }
        let Some(backup) = self.best_standby(&failed_cfg) else {
            let why = format!(
                "no standby is available for {failed}; the remaining masters take its traffic"
            );
            tracing::warn!("{why}");
            return Err(why);
        };
        if proposed {
            self.propose(
                crate::cluster::shared::Mutation::Hold {
                    failed: failed.to_string(),
                    backup: backup.to_string(),
                    manual: false,
                },
                true,
            );
            return Ok(backup);
        }
        self.promote(failed, backup.clone(), cause, now, true, "");
        Ok(backup)
    }

    /// Puts `backup` in the place of `failed`: the table, the audit trail and, with
    /// `notify` (the node that decided it), the alerts. `origin` says who decided, in
    /// cluster mode.
    fn promote(
        &mut self,
        failed: &Arc<str>,
        backup: Arc<str>,
        cause: Cause,
        now: Instant,
        notify: bool,
        origin: &str,
    ) {
        let manual = cause == Cause::Manual;
        let started = Instant::now();
        let audit = self.control.audit.clone();
        audit.record(
            NewEvent::new(EventKind::FailoverStarted, {
                let why = match cause {
                    Cause::Manual => "manual failover",
                    Cause::Ban => "master suspended",
                    Cause::Health => "master failed",
                };
                if origin.is_empty() {
                    why.to_string()
                } else {
                    format!("{why} ({origin})")
                }
            })
            .master(failed)
            .backup(&backup),
        );
        if !notify {
        } else if manual {
            // An operator's own action is logged, not alerted on: nothing failed.
            tracing::info!(master = %failed, backup = %backup, "manual failover: promoting the standby");
        } else {
            self.alerts.raise(
                Severity::Critical,
                "failover_started",
                Some(failed),
                match cause {
                    Cause::Ban => format!("{failed} is suspended; promoting standby {backup}"),
                    _ => format!("{failed} failed; promoting standby {backup}"),
                },
            );
        }
        self.active.insert(
            failed.clone(),
            Active {
                backup: backup.clone(),
                since: now,
                since_at: SystemTime::now(),
                manual,
            },
        );
        if cause != Cause::Ban {
            self.recent_failovers.push_back(now);
        }
        self.failovers_total += 1;
        self.last_failover_at = Some(SystemTime::now());
        metrics::counter!("switchyard_failovers_total", "master" => failed.to_string())
            .increment(1);
        self.publish(now);
        audit.record(
            NewEvent::new(EventKind::FailoverCompleted, format!("{backup} promoted"))
                .master(failed)
                .backup(&backup)
                .duration(started.elapsed()),
        );
        if notify {
            self.alerts.raise(
                Severity::Info,
                "failover_completed",
                Some(failed),
                format!("{backup} now serves in the place of {failed}"),
            );
        }
    }

    /// The healthy, enabled standby with the lowest priority, the same region first.
    fn best_standby(&self, failed: &MasterConfig) -> Option<Arc<str>> {
        let in_use: Vec<&Arc<str>> = self.active.values().map(|a| &a.backup).collect();
        let states = self.control.states();
        states
            .iter()
            .filter(|(m, s)| {
                m.role == Role::Standby
                    && s.admin == crate::routing::AdminState::Enabled
                    && s.health.routable()
                    && !in_use.contains(&&m.id)
            })
            .min_by_key(|(m, _)| (m.region_key != failed.region_key, m.priority))
            .map(|(m, _)| m.id.clone())
    }

    fn prune_failovers(&mut self, now: Instant) {
        let window = self.config.failover.breaker_window;
        while self
            .recent_failovers
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.recent_failovers.pop_front();
        }
    }

    fn open_breaker(&mut self) {
        if self.breaker_open {
            return;
        }
        if self.link.is_some() {
            self.propose(crate::cluster::shared::Mutation::OpenBreaker, true);
            return;
        }
        self.breaker_open = true;
        self.breaker_opened(true);
    }

    /// With `failback = "auto"`, gives a recovered master its place back once it has
    /// been healthy for `failback_delay`. Manual failovers wait for the admin API.
    fn auto_failback(&mut self, now: Instant) -> bool {
        if self.config.failover.failback != Failback::Auto || self.paused {
            return false;
        }
        let due: Vec<Arc<str>> = self
            .active
            .iter()
            .filter(|(failed, a)| {
                !a.manual
                    && self.masters.get(*failed).is_some_and(|w| {
                        w.machine.routable_since().is_some_and(|since| {
                            now.duration_since(since) >= self.config.failover.failback_delay
                        })
                    })
            })
            .map(|(failed, _)| failed.clone())
            .collect();
        for failed in &due {
            self.fail_back(failed, now);
        }
        !due.is_empty()
    }

    /// A failed master whose place is empty — no standby was free when it failed, or
    /// its standby went down or left the config — gets the best standby free now.
    fn fill_empty_places(&mut self, now: Instant) -> bool {
        // A suspended master's place is filled even with the breaker open (see
        // [`Cause::Ban`]); a failed one's is not.
        let breaker_open = self.breaker_open;
        let out = |state: HealthState| {
            state == HealthState::Suspended || (state == HealthState::Failed && !breaker_open)
        };
        if !self.config.failover.enabled
            || self.paused
            || !self.masters.values().any(|w| out(w.machine.state()))
        {
            return false;
        }
        let states = self.control.states();
        let serving = |id: &Arc<str>| {
            states
                .iter()
                .any(|(m, s)| &m.id == id && s.admin == crate::routing::AdminState::Enabled)
                && self
                    .masters
                    .get(id)
                    .is_some_and(|w| w.machine.state().routable())
        };
        let empty: Vec<Arc<str>> = self
            .masters
            .iter()
            .filter(|(id, w)| {
                out(w.machine.state())
                    && self.active.get(*id).is_none_or(|a| {
                        // In cluster mode a place changes through the shared
                        // document only: the leader releases a standby that went
                        // down, and fills the place again afterwards.
                        self.link.is_none() && !a.manual && !serving(&a.backup)
                    })
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut changed = false;
        for id in empty {
            let Some(cfg) = self.config.master(&id).cloned() else {
                continue;
            };
            if cfg.role == Role::Standby || self.best_standby(&cfg).is_none() {
                continue;
            }
            if let Some(stale) = self.active.remove(&id) {
                tracing::warn!(master = %id, backup = %stale.backup, "the standby in a failed master's place is down; choosing another");
            }
            let cause = if self.masters.get(&id).map(|w| w.machine.state())
                == Some(HealthState::Suspended)
            {
                Cause::Ban
            } else {
                Cause::Health
            };
            changed |= self.fail_over(&id, cause, now).is_ok();
        }
        changed
    }

    /// Gives `failed` its place back; in cluster mode the leader proposes it (and
    /// others do nothing) and it happens when it comes back applied.
    fn fail_back(&mut self, failed: &Arc<str>, now: Instant) -> Option<Arc<str>> {
        if self.link.is_some() {
            if self.leads() {
                let release = crate::cluster::shared::Mutation::Release {
                    failed: failed.to_string(),
                };
                self.propose(release, true);
            }
            return None;
        }
        self.demote(failed, now, true, "")
    }

    /// Demotes the standby: it takes no new traffic, and its in-flight exchanges finish.
    fn demote(
        &mut self,
        failed: &Arc<str>,
        now: Instant,
        notify: bool,
        origin: &str,
    ) -> Option<Arc<str>> {
        let a = self.active.remove(failed)?;
        if let Some(w) = self.masters.get_mut(failed) {
            w.failed_back_at = Some(now);
        }
        let took = now.duration_since(a.since);
        self.publish(now);
        self.control.audit.record(
            NewEvent::new(
                EventKind::Failback,
                if origin.is_empty() {
                    format!("{failed} takes its place back")
                } else {
                    format!("{failed} takes its place back ({origin})")
                },
            )
            .master(failed)
            .backup(&a.backup)
            .duration(took),
        );
        if notify {
            self.alerts.raise(
                Severity::Info,
                "failback",
                Some(failed),
                format!(
                    "{failed} is back in its place; {} is a standby again",
                    a.backup
                ),
            );
        }
        Some(a.backup)
    }

    /// Runs an admin command; the state it leaves is saved before it answers.
    fn on_command(&mut self, command: Command, now: Instant) -> Answer {
        let answer = match command {
            Command::Plan(command) => return self.plan(*command),
            Command::Apply(doc) => {
                self.apply_shared(*doc, now);
                return Ok(serde_json::Value::Null);
            }
            command => self.run_command(command, now)?,
        };
        self.persist().map_err(|e| {
            tracing::error!(error = %e, "cannot save the operator state");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "state_not_saved",
                format!("the change is in force but could not be saved, so it will not survive a restart: {e}"),
            )
        })?;
        Ok(answer)
    }

    fn run_command(&mut self, command: Command, now: Instant) -> Answer {
        let audit = self.control.audit.clone();
        match command {
            Command::Pause => {
                if !self.paused {
                    self.paused = true;
                    audit.record(NewEvent::new(EventKind::Paused, "paused by the admin API"));
                }
            }
            Command::Resume => {
                if self.paused || self.breaker_open {
                    let was_open = std::mem::take(&mut self.breaker_open);
                    self.paused = false;
                    self.recent_failovers.clear();
                    audit.record(NewEvent::new(
                        EventKind::Resumed,
                        "resumed by the admin API",
                    ));
                    if was_open {
                        audit.record(NewEvent::new(
                            EventKind::BreakerClosed,
                            "closed by POST /ha/resume",
                        ));
                    }
                    // Masters that failed meanwhile are failed over now.
                    self.fill_empty_places(now);
                }
            }
            Command::Failover(id) => {
                let Some(failed) = self.config.master(&id).map(|m| m.id.clone()) else {
                    return Err(unknown(&id));
                };
                let backup = self
                    .fail_over(&failed, Cause::Manual, now)
                    .map_err(|why| (StatusCode::CONFLICT, "failover_refused", why))?;
                return Ok(serde_json::json!({"failed": id, "backup": backup.as_ref()}));
            }
            Command::Reinstate(id) => return self.reinstate(&id, now),
            Command::Plan(_) | Command::Apply(_) => return Ok(serde_json::Value::Null),
            Command::Failback(id) => {
                let failed = self.failback_target(&id)?;
                let backup = self.fail_back(&failed, now);
                return Ok(
                    serde_json::json!({"master": failed.as_ref(), "demoted": backup.as_deref()}),
                );
            }
        }
        self.publish_view(now);
        Ok(serde_json::json!({"failover_paused": self.paused, "breaker_open": self.breaker_open}))
    }

    /// The failed master `id` names (itself, or the standby in its place) for a manual
    /// failback, when it is healthy enough to take its place back.
    fn failback_target(&self, id: &str) -> Result<Arc<str>, (StatusCode, &'static str, String)> {
        let Some(failed) = self
            .active
            .iter()
            .find(|(f, a)| f.as_ref() == id || a.backup.as_ref() == id)
            .map(|(f, _)| f.clone())
        else {
            return match self.config.master(id) {
                None => Err(unknown(id)),
                Some(_) => Err((
                    StatusCode::CONFLICT,
                    "no_failover",
                    format!("{id} is not failed over"),
                )),
            };
        };
        let routable = self
            .masters
            .get(&failed)
            .is_some_and(|w| w.machine.state().routable());
        if !routable {
            return Err((
                StatusCode::CONFLICT,
                "master_down",
                format!("{failed} is not healthy; failing back would leave its place empty"),
            ));
        }
        Ok(failed)
    }

    /// Measures the shares over the rolling window; every [`SHARE_WINDOW`], checks
    /// them for imbalance.
    fn measure_shares(&mut self, now: Instant) {
        if !self.share_window.due(now) {
            return;
        }
        let table = self.control.table();
        let counts: Vec<(Arc<str>, u64)> = table
            .masters
            .iter()
            .map(|m| {
                let count = m.stats.sent_total.load(Relaxed) + m.stats.failed_total.load(Relaxed);
                (m.config.id.clone(), count)
            })
            .collect();
        let measured = self.share_window.measure(now, &counts);
        self.shares = measured.shares;
        if now.duration_since(self.imbalance_checked) < SHARE_WINDOW {
            return;
        }
        self.imbalance_checked = now;
        let limit = self.config.alerts.imbalance_warning;
        if measured.total >= 100 && table.eligible_count() > 1 {
            for (id, share) in &self.shares {
                if *share > limit {
                    self.alerts.raise(
                        Severity::Warning,
                        "imbalance",
                        Some(id),
                        format!("{id} took {:.0}% of recent traffic", share * 100.0),
                    );
                }
            }
        }
    }

    /// Publishes the machines' states and the promotions as one routing table.
    fn publish(&mut self, now: Instant) {
        let settings = &self.settings;
        for w in self.masters.values_mut() {
            w.published_factor = factor(w, now, settings);
            if w.published_factor >= 1.0 {
                w.failed_back_at = None;
            }
        }
        let masters = &self.masters;
        let active = &self.active;
        self.control.update(|states| {
            for (id, w) in masters {
                let s = states
                    .entry(id.clone())
                    .or_insert_with(MasterState::default);
                s.health = w.machine.state();
                s.factor = w.published_factor;
                s.promoted_for = active.get(id).map(|a| a.backup.clone());
            }
        });
        let eligible = self.control.table().eligible_count() > 0;
        if self.had_eligible && !eligible {
            self.alerts.raise(
                Severity::Critical,
                "no_eligible_master",
                None,
                "no master is eligible to take messages",
            );
        }
        self.had_eligible = eligible;
        self.publish_view(now);
    }

    fn publish_view(&mut self, now: Instant) {
        let masters = self
            .masters
            .iter_mut()
            .map(|(id, w)| {
                let v = MasterView {
                    uptime_ratio: w.machine.uptime_ratio(now),
                    mean_time_to_recovery_ms: w
                        .machine
                        .mean_time_to_recovery()
                        .map(|d| d.as_millis() as u64),
                    share: self.shares.get(id).copied().unwrap_or(0.0),
                    suspended_reason: w.machine.suspended_reason().map(str::to_string),
                };
                (id.to_string(), v)
            })
            .collect();
        self.view.store(Arc::new(View {
            failover_paused: self.paused,
            breaker_open: self.breaker_open,
            active: self
                .active
                .iter()
                .map(|(failed, a)| ActiveView {
                    failed: failed.to_string(),
                    backup: a.backup.to_string(),
                    since: rfc3339(a.since_at),
                    manual: a.manual,
                })
                .collect(),
            last_failover_at: self.last_failover_at.map(rfc3339),
            failovers_total: self.failovers_total,
            masters,
        }));
    }
}

/// The share a master gets: the slower of its recovery ramp and its failback ramp.
fn factor(w: &Watched, now: Instant, s: &Settings) -> f64 {
    let recovery = w.machine.factor(now, s);
    let failback = w.failed_back_at.map_or(1.0, |at| {
        slow_start(now.saturating_duration_since(at), s.slow_start)
    });
    recovery.min(failback)
}

fn unknown(id: &str) -> (StatusCode, &'static str, String) {
    (
        StatusCode::NOT_FOUND,
        "unknown_master",
        format!("no master with id `{id}`"),
    )
}

mod clustered;
mod kept;
#[cfg(test)]
mod restart_tests;
mod suspend;
#[cfg(test)]
mod suspend_tests;
#[cfg(test)]
mod tests;
