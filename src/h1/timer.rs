//! A timer for a deadline that moves later often and passes rarely: a connection's
//! idle deadline, moved at each request, and a pooled connection's exchange deadline,
//! moved at each message.
//!
//! Moving a tokio timer costs a deadline-to-tick conversion and an atomic update of the
//! timer wheel's entry (more when it must be moved in the wheel); per message that
//! showed as 3% of switchyard's user time. Here moving the deadline later only stores
//! the new time. The runtime's timer keeps the earlier one; when it fires before the
//! deadline it is moved once, to the deadline. So it is moved at most once per period
//! of the deadline however many requests went by, and at once when the deadline moves
//! earlier.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

pub struct Timer {
    /// The deadline.
    at: Instant,
    /// Fires at or before `at`.
    sleep: Pin<Box<Sleep>>,
    /// The polling task's waker is registered with `sleep` (see
    /// [`Timer::poll_passed_by_owner`]).
    armed: bool,
}

impl Timer {
    pub fn new(at: Instant) -> Timer {
        Timer {
            at,
            sleep: Box::pin(tokio::time::sleep_until(at)),
            armed: false,
        }
    }

    /// Moves the deadline to `at`, later or earlier.
    pub fn set(&mut self, at: Instant) {
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
            self.armed = false;
        }
        self.at = at;
    }

    /// Ready once the deadline has passed.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            std::task::ready!(self.sleep.as_mut().poll(cx));
            // It fired at its own deadline, which is now: passed unless ours is later.
            if self.sleep.deadline() >= self.at {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(self.at);
        }
    }

    /// [`Timer::poll_passed`] for a timer that only one task ever polls (a client
    /// connection's): once that task's waker is registered, a poll until the runtime's
    /// timer fires is one atomic load, where polling the `Sleep` would register the
    /// same waker again.
    pub fn poll_passed_by_owner(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        let polled = self.poll_passed(cx);
        self.armed = polled.is_pending();
        polled
    }

    /// Resolves once the deadline has passed; for one task only, as
    /// [`Timer::poll_passed_by_owner`].
    #[cfg(test)]
    pub async fn passed(&mut self) {
        std::future::poll_fn(|cx| self.poll_passed_by_owner(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::Timer;
    use std::time::Duration;
    use tokio::time::Instant;

    // A timer never fires before its deadline, so the lower bounds below hold on any
    // machine; the upper ones are generous deadlines, not timings.

    #[tokio::test]
    async fn a_deadline_moved_later_is_not_passed_before_it() {
        let start = Instant::now();
        let mut timer = Timer::new(start + Duration::from_millis(20));
        // Moved later twice before the first one is reached.
        timer.set(start + Duration::from_millis(40));
        timer.set(start + Duration::from_millis(200));
        tokio::time::timeout(Duration::from_secs(10), timer.passed())
            .await
            .expect("the deadline passes");
        assert!(start.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_deadline_moved_earlier_passes_then_and_the_timer_serves_again() {
        let start = Instant::now();
        let mut timer = Timer::new(start + Duration::from_secs(3600));
        timer.set(start + Duration::from_millis(10));
        tokio::time::timeout(Duration::from_secs(10), timer.passed())
            .await
            .expect("moved earlier, the deadline passes long before the first one");
        let again = Instant::now();
        timer.set(again + Duration::from_millis(100));
        tokio::time::timeout(Duration::from_secs(10), timer.passed())
            .await
            .expect("the new deadline passes");
        assert!(again.elapsed() >= Duration::from_millis(100));
    }
}
