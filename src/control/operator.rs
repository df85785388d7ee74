//! Operator state that survives a restart (SPEC sections 9 and 10): each master's admin
//! state (disabled, draining), the masters held out by a failover with the standby in
//! their place (automatic or manual), the masters suspended after a ban answer, and
//! whether automatic failover is paused.
//!
//! It lives in one small JSON file, `operator.json` in the data dir, rewritten whole
//! on every change. It is read once at start, before the first routing table is
//! built: a master id the config no longer has, or a failover whose standby is gone,
//! is ignored with a warning.
//!
//! # Durability
//!
//! When [`OperatorStore::update`] returns `Ok`, the new state is on disk: it is
//! written to `operator.json.tmp`, `sync_all`ed, renamed over `operator.json`, and the
//! directory is synced, so a crash at any point leaves either the old file or the new
//! one, never a mix. An `Err` leaves the previous state both on disk and as the
//! store's idea of what is saved (the next update writes everything again). A change
//! costs two fsyncs; it happens on admin commands and failovers only.
//!
//! # A file that cannot be read
//!
//! A file that exists but cannot be read or parsed is a **startup error** naming the
//! file: starting with every master enabled could send traffic to a master an operator
//! took out (a suspended account), so switchyard refuses to guess. Fix the file or
//! remove it to start with nothing disabled, drained, held or paused.

use crate::routing::AdminState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file name under the data dir.
pub const FILE_NAME: &str = "operator.json";
/// The largest file read at start; operator state is a few bytes per master.
const MAX_BYTES: u64 = 16 * 1024 * 1024;
const VERSION: u32 = 1;

/// Everything an operator (or a failover) set that must outlive the process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorState {
    #[serde(default = "version")]
    pub version: u32,
    #[serde(default)]
    pub failover_paused: bool,
    /// By master id; masters in their default state are left out.
    #[serde(default)]
    pub masters: BTreeMap<String, MasterOperator>,
}

fn version() -> u32 {
    VERSION
}

/// One master's saved state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterOperator {
    #[serde(default = "enabled", with = "admin_name")]
    pub admin: AdminState,
    /// Failed over: the standby serving in its place. The master stays out of rotation
    /// until failback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// Suspended after a ban answer (SPEC section 10): out of rotation until
    /// reinstated through the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<Suspension>,
}

impl Default for MasterOperator {
    fn default() -> Self {
        Self {
            admin: AdminState::Enabled,
            held: None,
            suspended: None,
        }
    }
}

fn enabled() -> AdminState {
    AdminState::Enabled
}

/// A failover in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The standby promoted in the master's place.
    pub standby: String,
    /// Asked for through the admin API: only a manual failback ends it.
    #[serde(default)]
    pub manual: bool,
    /// When the failover happened, milliseconds since the Unix epoch.
    #[serde(default)]
    pub since_unix_ms: u64,
}

/// A suspension in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspension {
    /// The answer that met the ban rules, in words.
    pub reason: String,
    /// When it was suspended, milliseconds since the Unix epoch.
    #[serde(default)]
    pub since_unix_ms: u64,
}

mod admin_name {
    use crate::routing::AdminState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &AdminState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AdminState, D::Error> {
        let name = String::deserialize(d)?;
        AdminState::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "admin must be enabled, disabled or draining, not `{name}`"
                ))
            })
    }
}

impl OperatorState {
    /// The entry for `id`, created in its default state.
    pub fn master(&mut self, id: &str) -> &mut MasterOperator {
        self.masters.entry(id.to_string()).or_default()
    }

    /// Drops entries that say nothing (enabled, not held).
    fn compact(&mut self) {
        self.masters.retain(|_, m| *m != MasterOperator::default());
    }

    /// Keeps what `known` (a master id in the running config) allows, warning about
    /// the rest: unknown masters, and failovers whose standby is not `standby`.
    pub fn retain_known(&mut self, known: impl Fn(&str) -> bool, standby: impl Fn(&str) -> bool) {
        self.masters.retain(|id, m| {
            if !known(id) {
                tracing::warn!(master = %id, file = FILE_NAME, "saved operator state names a master the config does not have; ignored");
                return false;
            }
            if let Some(h) = &m.held {
                if !standby(&h.standby) {
                    tracing::warn!(master = %id, standby = %h.standby, file = FILE_NAME, "saved failover names a standby the config does not have; the master is no longer held");
                    m.held = None;
                }
            }
            true
        });
        self.compact();
    }
}

/// A saved file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the operator state in {path}: {reason}; fix the file or remove it to start with every master enabled, none held and failover not paused")]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: String,
}

/// The saved state and where it is written; `path` is `None` for a store kept in
/// memory only (an embedded config in tests and the demo).
#[derive(Debug)]
pub struct OperatorStore {
    path: Option<PathBuf>,
    saved: OperatorState,
}

impl OperatorStore {
    /// Reads `operator.json` under `dir`; a missing file is the default state.
    pub fn open(dir: &Path) -> Result<OperatorStore, LoadError> {
        let path = dir.join(FILE_NAME);
        let fail = |reason: String| LoadError {
            path: path.clone(),
            reason,
        };
        let saved = match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => OperatorState::default(),
            Err(e) => return Err(fail(e.to_string())),
            Ok(file) => {
                let len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
                if len > MAX_BYTES {
                    return Err(fail(format!(
                        "it is {len} bytes, over the {MAX_BYTES} limit"
                    )));
                }
                let bytes = fs::read(&path).map_err(|e| fail(e.to_string()))?;
                let state: OperatorState =
                    serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
                if state.version != VERSION {
                    return Err(fail(format!(
                        "version {} is not one this build reads ({VERSION})",
                        state.version
                    )));
                }
                state
            }
        };
        Ok(OperatorStore {
            path: Some(path),
            saved,
        })
    }

    pub fn in_memory() -> OperatorStore {
        OperatorStore {
            path: None,
            saved: OperatorState::default(),
        }
    }

    /// What was last saved.
    pub fn state(&self) -> &OperatorState {
        &self.saved
    }

    /// Replaces the state without writing (the filtering done at start).
    pub fn reset(&mut self, state: OperatorState) {
        self.saved = state;
    }

    /// Applies `f` and writes the result (see the module doc for what `Ok` promises).
    /// Nothing is written when nothing changed.
    pub fn update(&mut self, f: impl FnOnce(&mut OperatorState)) -> io::Result<()> {
        let mut next = self.saved.clone();
        f(&mut next);
        next.version = VERSION;
        next.compact();
        if next == self.saved {
            return Ok(());
        }
        if let Some(path) = &self.path {
            write_atomically(path, &next)?;
        }
        self.saved = next;
        Ok(())
    }
}

fn write_atomically(path: &Path, state: &OperatorState) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let tmp = path.with_extension("json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(standby: &str) -> Option<Held> {
        Some(Held {
            standby: standby.into(),
            manual: true,
            since_unix_ms: 7,
        })
    }

    #[test]
    fn a_saved_state_reads_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OperatorStore::open(dir.path()).unwrap();
        assert_eq!(*store.state(), OperatorState::default());
        store
            .update(|s| {
                s.failover_paused = true;
                s.master("a").admin = AdminState::Disabled;
                s.master("b").admin = AdminState::Draining;
                s.master("p").held = held("s");
                s.master("banned").suspended = Some(Suspension {
                    reason: "answered 403".into(),
                    since_unix_ms: 9,
                });
                s.master("quiet").admin = AdminState::Enabled;
            })
            .unwrap();
        let again = OperatorStore::open(dir.path()).unwrap();
        assert_eq!(again.state(), store.state());
        let s = again.state();
        assert!(s.failover_paused);
        assert_eq!(s.masters["a"].admin, AdminState::Disabled);
        assert_eq!(s.masters["b"].admin, AdminState::Draining);
        assert_eq!(s.masters["p"].held, held("s"));
        let suspension = s.masters["banned"].suspended.as_ref().unwrap();
        assert_eq!(suspension.reason, "answered 403");
        assert!(!s.masters.contains_key("quiet"), "defaults are left out");
        assert!(!dir.path().join("operator.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        for (text, says) in [
            ("{\"masters\": {\"a\": {\"admin\": \"off\"}}}", "not `off`"),
            ("{\"failover_paused\": tru", "EOF"),
            ("{\"version\": 9}", "version 9"),
        ] {
            fs::write(&path, text).unwrap();
            let e = OperatorStore::open(dir.path()).unwrap_err().to_string();
            assert!(e.contains("operator.json") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn unknown_masters_and_missing_standbys_are_dropped() {
        let mut s = OperatorState::default();
        s.master("gone").admin = AdminState::Disabled;
        s.master("a").held = held("gone-standby");
        s.master("b").held = held("s");
        s.master("b").admin = AdminState::Disabled;
        s.retain_known(|id| id != "gone", |id| id == "s");
        assert_eq!(s.masters.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(s.masters["b"].held, held("s"));
    }

    #[test]
    fn a_failed_write_keeps_the_saved_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = OperatorStore::open(dir.path()).unwrap();
        store.update(|s| s.failover_paused = true).unwrap();
        // The temp file's name is taken by a directory: the write fails.
        fs::create_dir(dir.path().join("operator.json.tmp")).unwrap();
        assert!(store
            .update(|s| s.master("a").admin = AdminState::Disabled)
            .is_err());
        assert!(store.state().masters.is_empty());
        let again = OperatorStore::open(dir.path()).unwrap();
        assert!(again.state().failover_paused && again.state().masters.is_empty());
    }
}
