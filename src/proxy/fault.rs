//! Whom a failed exchange is counted against. A master is blamed for what it did
//! (refused, reset, timed out, answered 429/502/503/504); a failure of this machine's
//! own resources (out of file descriptors, memory or local ports: SPEC section 8) is
//! not the master's and leaves its health alone, raising a critical
//! `local_resource_exhausted` alert instead.

use super::upstream::UpstreamError;
use super::Proxy;
use crate::routing::MasterEntry;

impl Proxy {
    /// Counts the failed exchange `err` with `master` (`text`: the error as the master's
    /// `last_error` shows it): a failure in its run, which may eject it. A local fault
    /// is not counted and raises the alert. Returns whether the master was blamed, that
    /// is whether this was a real delivery attempt.
    pub(super) fn count_failure(
        &self,
        master: &MasterEntry,
        err: &UpstreamError,
        text: String,
    ) -> bool {
        if let UpstreamError::Local(fault, detail) = err {
            self.control
                .local_fault(*fault, master.id(), "an exchange with", detail);
            return false;
        }
        let failures = master.stats.record_failure(text, master.table_version);
        self.passive_check(master, failures);
        true
    }
}
