//! The four selection strategies of SPEC section 3, built once per routing table.
//!
//! Building does the work (weight sequences, priority groups, region maps); `select`
//! is a few atomic operations and never locks. Every strategy sees only eligible
//! masters: ineligible ones are left out when the table is built.

use super::stats::{LoadRef, MasterStats};
use crate::config::StrategyKind;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// What a strategy needs to know about one eligible master.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Position in the routing table's master list.
    pub index: usize,
    /// Configured weight.
    pub weight: f64,
    /// Slow-start factor in (0, 1]: 1 for a master at full share.
    pub factor: f64,
    pub priority: u32,
    /// Lower-cased region.
    pub region: String,
    pub stats: Arc<MasterStats>,
}

impl Candidate {
    pub fn effective_weight(&self) -> f64 {
        self.weight * self.factor
    }
}

/// The outcome of one selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    /// The region strategy had to use masters outside the request's region.
    pub region_fallback: bool,
}

#[derive(Debug)]
pub enum Strategy {
    RoundRobin(Rotation),
    WeightedPriority(PriorityGroups),
    LeastLoaded(LeastLoaded),
    Region {
        by_region: HashMap<String, Rotation>,
        fallback: PriorityGroups,
    },
}

impl Strategy {
    /// Builds the strategy over the eligible `candidates`. `rng` only picks where each
    /// rotation starts, so that restarted proxies do not all hit the same master first.
    pub fn build(kind: StrategyKind, candidates: &[Candidate], rng: &mut impl Rng) -> Strategy {
        match kind {
            StrategyKind::RoundRobin => {
                // Equal shares; a slow-starting master keeps its reduced factor.
                let equal: Vec<(usize, f64)> =
                    candidates.iter().map(|c| (c.index, c.factor)).collect();
                Strategy::RoundRobin(Rotation::new(&equal, rng))
            }
            StrategyKind::WeightedPriority => {
                Strategy::WeightedPriority(PriorityGroups::new(candidates, rng))
            }
            StrategyKind::LeastLoaded => Strategy::LeastLoaded(LeastLoaded::new(candidates, rng)),
            StrategyKind::Region => {
                let mut regions: HashMap<String, Vec<(usize, f64)>> = HashMap::new();
                for c in candidates.iter().filter(|c| !c.region.is_empty()) {
                    regions
                        .entry(c.region.clone())
                        .or_default()
                        .push((c.index, c.effective_weight()));
                }
                Strategy::Region {
                    by_region: regions
                        .into_iter()
                        .map(|(r, members)| (r, Rotation::new(&members, rng)))
                        .collect(),
                    fallback: PriorityGroups::new(candidates, rng),
                }
            }
        }
    }

    /// Chooses a master not in `tried`. `region` must already be lower-cased.
    pub fn select(&self, region: Option<&str>, tried: &[usize]) -> Option<Pick> {
        let plain = |index| Pick {
            index,
            region_fallback: false,
        };
        match self {
            Strategy::RoundRobin(r) => r.pick(tried).map(plain),
            Strategy::WeightedPriority(g) => g.pick(tried).map(plain),
            Strategy::LeastLoaded(l) => l.pick(tried).map(plain),
            Strategy::Region {
                by_region,
                fallback,
            } => {
                if let Some(index) = region
                    .and_then(|r| by_region.get(r))
                    .and_then(|rot| rot.pick(tried))
                {
                    return Some(plain(index));
                }
                fallback.pick(tried).map(|index| Pick {
                    index,
                    region_fallback: true,
                })
            }
        }
    }
}

/// Smooth weighted round-robin over a precomputed sequence, indexed by one atomic
/// counter. With equal weights it is plain round-robin.
#[derive(Debug)]
pub struct Rotation {
    seq: Box<[u32]>,
    next: AtomicUsize,
}

impl Rotation {
    pub fn new(members: &[(usize, f64)], rng: &mut impl Rng) -> Rotation {
        let seq = smooth_sequence(members);
        let start = if seq.is_empty() {
            0
        } else {
            rng.gen_range(0..seq.len())
        };
        Rotation {
            seq: seq.into_boxed_slice(),
            next: AtomicUsize::new(start),
        }
    }

    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let len = self.seq.len();
        if len == 0 {
            return None;
        }
        let at = self.next.fetch_add(1, Relaxed);
        (0..len)
            .map(|step| self.seq[(at.wrapping_add(step)) % len] as usize)
            .find(|i| !tried.contains(i))
    }
}

/// nginx's smooth weighted round-robin, unrolled into one period. Weights are turned
/// into integers (decimals kept to 1/1000, then divided by their gcd) and the period is
/// capped so building stays cheap at 1,000 masters.
fn smooth_sequence(members: &[(usize, f64)]) -> Vec<u32> {
    if members.is_empty() {
        return Vec::new();
    }
    let mut ints: Vec<u64> = members
        .iter()
        .map(|&(_, w)| (w * 1000.0).round().max(1.0) as u64)
        .collect();
    let g = ints.iter().copied().fold(0, gcd);
    ints.iter_mut().for_each(|w| *w /= g);
    let cap = (10_000_000 / members.len() as u64).max(members.len() as u64);
    let total: u64 = ints.iter().sum();
    if total > cap {
        let scale = cap as f64 / total as f64;
        ints.iter_mut()
            .for_each(|w| *w = ((*w as f64 * scale).round() as u64).max(1));
    }
    let total: i64 = ints.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; ints.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in ints.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(members[best].0 as u32);
    }
    seq
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Priority groups, best (lowest number) first; each spreads by weight.
#[derive(Debug)]
pub struct PriorityGroups(Vec<Rotation>);

impl PriorityGroups {
    pub fn new(candidates: &[Candidate], rng: &mut impl Rng) -> PriorityGroups {
        let mut by_priority: Vec<(u32, Vec<(usize, f64)>)> = Vec::new();
        for c in candidates {
            match by_priority.iter_mut().find(|(p, _)| *p == c.priority) {
                Some((_, members)) => members.push((c.index, c.effective_weight())),
                None => by_priority.push((c.priority, vec![(c.index, c.effective_weight())])),
            }
        }
        by_priority.sort_by_key(|(p, _)| *p);
        PriorityGroups(
            by_priority
                .iter()
                .map(|(_, members)| Rotation::new(members, rng))
                .collect(),
        )
    }

    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        self.0.iter().find_map(|group| group.pick(tried))
    }
}

/// Lowest (in-flight + queued) / weight; ties go to the lower recent latency, then to
/// whichever comes first from a rotating start so idle masters share traffic.
#[derive(Debug)]
pub struct LeastLoaded {
    /// (fixed-point 1 / weight, load cell), what the scan reads, in table order.
    members: Box<[(u64, LoadRef)]>,
    /// The table index of each member.
    indices: Box<[usize]>,
    next: AtomicUsize,
}

impl LeastLoaded {
    pub fn new(candidates: &[Candidate], rng: &mut impl Rng) -> LeastLoaded {
        // 1 / weight in fixed point, scaled so the lightest master's is u32::MAX: a
        // load below 2^32 times it fits a u64 exactly, and the heaviest keeps 32 bits
        // less the log2 of the weight ratio of precision.
        let lightest = candidates
            .iter()
            .map(Candidate::effective_weight)
            .fold(f64::INFINITY, f64::min);
        let members: Box<[_]> = candidates
            .iter()
            .map(|c| {
                let inv = (u32::MAX as f64 * lightest / c.effective_weight()).max(1.0);
                (inv as u64, c.stats.load)
            })
            .collect();
        let indices = candidates.iter().map(|c| c.index).collect();
        let start = if members.is_empty() {
            0
        } else {
            rng.gen_range(0..members.len())
        };
        LeastLoaded {
            members,
            indices,
            next: AtomicUsize::new(start),
        }
    }

    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        if self.members.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed) % self.members.len();
        if tried.is_empty() {
            self.scan(start, |_| true)
        } else {
            self.scan(start, |index| !tried.contains(&index))
        }
    }

    /// One pass over every eligible master from `start`: each master's key is
    /// (load / weight, latency), all integers. The load is taken modulo 2^32 (far above
    /// any in-flight plus queued count) so the product cannot overflow. Strict `<`
    /// keeps the first of equal keys in rotation order.
    ///
    /// Shaped for speed at 1,000 masters (about 2 cycles each): each member holds its
    /// cell's address and its weight, 16 bytes read in order; the best place is a
    /// plain integer (an `Option` of the table index made the compiler carry it through
    /// memory, a store-to-load round trip per master), and the rare update is laid out
    /// off the straight path.
    #[inline(always)]
    fn scan(&self, start: usize, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let members = &self.members[..];
        let mut best_key = (u64::MAX, u64::MAX);
        let mut best_at = usize::MAX;
        let mut visit = |from: usize, to: usize| {
            for (at, (inv_weight, load)) in members[from..to].iter().enumerate() {
                let key = (
                    u64::from(load.total() as u32) * inv_weight,
                    load.latency_us(),
                );
                if key < best_key && allowed(self.indices[from + at]) {
                    // Rare after the first few masters: keep the common path straight.
                    unlikely();
                    best_key = key;
                    best_at = from + at;
                }
            }
        };
        visit(start, members.len());
        visit(0, start);
        self.indices.get(best_at).copied()
    }
}

/// Marks the branch that calls it as unlikely, for code layout.
#[cold]
fn unlikely() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_sequence_interleaves() {
        // nginx's classic example: weights 5, 1, 1 -> a a b a c a a
        let seq = smooth_sequence(&[(0, 5.0), (1, 1.0), (2, 1.0)]);
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
        let seq = smooth_sequence(&[(0, 0.5), (1, 1.5)]);
        assert_eq!(seq.len(), 4);
        assert_eq!(seq.iter().filter(|&&i| i == 1).count(), 3);
    }

    #[test]
    fn period_is_capped_for_many_masters() {
        let members: Vec<(usize, f64)> = (0..1000).map(|i| (i, 1.0 + i as f64 * 0.001)).collect();
        let seq = smooth_sequence(&members);
        assert!(seq.len() <= 10_000 + 1000, "{}", seq.len());
        for i in 0..1000u32 {
            assert!(seq.contains(&i));
        }
    }
}
