//! How many nodes share every master's budget (SPEC section 11, "Budgets"): the pace
//! is split across the nodes live now, the daily cap across the most nodes live at once
//! over the last 24 hours. A node that left may have spent its share of today's cap;
//! the others take it over only once its count has aged out, so the nodes together
//! never send more in a day than the master allows.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Live node counts over the last day.
#[derive(Debug, Default)]
pub struct Split {
    /// Each count with the time it began; the first may have begun more than a day
    /// ago (it is still in force at the start of the window).
    counts: VecDeque<(Instant, u32)>,
}

impl Split {
    /// Takes in the number of live nodes at `now`; returns `(pace_nodes, daily_nodes)`.
    pub fn observe(&mut self, live: u32, now: Instant) -> (u32, u32) {
        let live = live.max(1);
        if self.counts.back().is_none_or(|(_, last)| *last != live) {
            self.counts.push_back((now, live));
        }
        // A count that ended more than a day ago no longer matters.
        while self
            .counts
            .get(1)
            .is_some_and(|(next, _)| now.duration_since(*next) >= DAY)
        {
            self.counts.pop_front();
        }
        let daily = self.counts.iter().map(|(_, n)| *n).max().unwrap_or(live);
        (live, daily)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_split_keeps_the_most_nodes_of_the_last_day() {
        let t = Instant::now();
        let mut split = Split::default();
        assert_eq!(split.observe(0, t), (1, 1), "never below one node");
        assert_eq!(split.observe(3, t + Duration::from_secs(10)), (3, 3));
        // One leaves: the pace is shared by two at once, the daily cap still by three.
        assert_eq!(split.observe(2, t + Duration::from_secs(20)), (2, 3));
        assert_eq!(split.observe(2, t + DAY), (2, 3));
        // A day after the three became two, the third's share is free again.
        assert_eq!(split.observe(2, t + DAY + Duration::from_secs(20)), (2, 2));
        assert_eq!(split.observe(4, t + DAY + Duration::from_secs(30)), (4, 4));
    }
}
