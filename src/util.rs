//! Small helpers with no better home.

use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Hop-by-hop headers: they describe one connection, so a proxy never passes them on
/// (RFC 9110 section 7.6.1, with the usual legacy ones).
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// Wall-clock milliseconds since the Unix epoch (0 before it): the time of queue records,
/// status records, daily caps and shared keys.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// [`unix_ms`] at `at`, a monotonic time the caller read already: the wall clock is
/// read at most once a second per thread, and `at` placed by its distance from that
/// reading (a step of the wall clock shows within the second).
pub fn unix_ms_at(at: std::time::Instant) -> u64 {
    thread_local! {
        /// A monotonic time and the wall clock's time since the epoch, read together.
        static ANCHOR: std::cell::Cell<Option<(std::time::Instant, Duration)>> =
            const { std::cell::Cell::new(None) };
    }
    ANCHOR.with(|anchor| {
        // `at` on the wall clock by its distance from a reading, and how long after
        // the reading it is (zero if before it).
        let place =
            |(mono, wall): (std::time::Instant, Duration)| match at.checked_duration_since(mono) {
                Some(after) => (wall + after, after),
                None => (wall.saturating_sub(mono - at), Duration::ZERO),
            };
        // The usual case: `at` within the second after the reading, or before it (a
        // message that ended before another on this thread took a new reading).
        if let Some(reading) = anchor.get() {
            let (wall_at, after) = place(reading);
            if after < Duration::from_secs(1) {
                return wall_at.as_millis() as u64;
            }
        }
        let reading = (
            std::time::Instant::now(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        );
        anchor.set(Some(reading));
        place(reading).0.as_millis() as u64
    })
}

/// `make()`'s value in a new box, pinned. The box is allocated first and the value
/// written into it, which lets the compiler build a large future in place; `Box::pin`
/// of a future builds it on the stack and copies it whole into the box.
pub fn boxed<T>(make: impl FnOnce() -> T) -> std::pin::Pin<Box<T>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// Runs the background task `start` makes until it returns. A panic inside it (logged
/// and counted by the panic hook) starts a new one a second later, so one bug cannot
/// silently stop a duty such as queue delivery for the rest of the process's life.
pub async fn supervise<F, Fut>(name: &'static str, start: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    while AssertUnwindSafe(start()).catch_unwind().await.is_err() {
        tracing::error!(
            task = name,
            "a background task panicked; it starts again in 1 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `t` as RFC 3339 UTC with milliseconds (see [`format_rfc3339`]); a time before the
/// epoch reads as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    format_rfc3339(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// Formats a time since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-11-24T19:54:09.123Z`), without pulling in a calendar crate.
pub fn format_rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// An error and its sources in one line, e.g. "client error (Connect): tcp connect
/// error: Connection refused (os error 111)".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339(Duration::from_millis(1_795_549_449_123)),
            "2026-11-24T19:44:09.123Z"
        );
        assert_eq!(
            format_rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn wall_time_of_a_monotonic_time_matches_the_wall_clock() {
        let now = std::time::Instant::now();
        let (before, at, after) = (unix_ms(), unix_ms_at(now), unix_ms());
        // Read around the anchor's own reading: within the clocks' millisecond.
        assert!(
            before.saturating_sub(1) <= at && at <= after + 1,
            "{before} {at} {after}"
        );
        // An earlier time, placed from the same reading, keeps its distance exactly.
        let earlier = now - Duration::from_millis(1500);
        assert_eq!(at - unix_ms_at(earlier), 1500);
        // A time past the reading's second takes a new reading: the same distance,
        // within the millisecond the two readings may differ by.
        let later = now + Duration::from_millis(2500);
        assert!((2499..=2501).contains(&(unix_ms_at(later) - at)));
        assert!(unix_ms_at(now).abs_diff(at) <= 1);
    }
}

#[cfg(test)]
mod supervise_tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    /// Two restarts: two seconds.
    #[tokio::test]
    async fn a_panicking_task_is_started_again_until_it_returns() {
        let runs = AtomicU32::new(0);
        supervise("test", || async {
            if runs.fetch_add(1, Relaxed) < 2 {
                panic!("a bug in a background task");
            }
        })
        .await;
        assert_eq!(runs.load(Relaxed), 3);
    }
}
