//! Sticky recipients (SPEC section 10): each recipient goes to the same place in the
//! rotation, chosen by weighted rendezvous hashing, so conversations do not jump
//! between sender numbers.
//!
//! A recipient is hashed into one of [`BUCKETS`] buckets; each bucket belongs to the
//! place with the highest score `weight / -ln(u)`, where `u` in (0, 1) is a hash of
//! the bucket and the place's id. Hence:
//! - a place that leaves moves only its own buckets (every other bucket's best place
//!   is still there), and they come back when it returns;
//! - a place is a *master's place*, not the master: a standby promoted for a failed
//!   master serves the failed master's place (its id and weight), so it takes over
//!   exactly that master's recipients and gives them back on failback;
//! - nothing is stored: two nodes with the same places choose the same master.
//!
//! The hash is FNV-1a with a SplitMix64 finish, written here so it never changes with
//! a Rust or crate version. A bucket's choice is cached in the table that built the
//! places (one atomic per bucket), so a pick costs a hash and a load once warm, at
//! any number of masters; a miss scores every place once.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Buckets recipients are hashed into: fine enough that shares follow weights to a
/// fraction of a percent at 1,000 masters.
pub const BUCKETS: u32 = 1 << 16;

/// A stable 64-bit hash: FNV-1a over the bytes, then SplitMix64's finish.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bucket of a recipient.
pub fn bucket(recipient: &str) -> u32 {
    (stable_hash(recipient.as_bytes()) % BUCKETS as u64) as u32
}

/// One place in the rotation.
#[derive(Debug, Clone)]
pub struct Place {
    /// The id of the master whose place it is (the failed master's, for a promoted
    /// standby).
    pub id: String,
    pub weight: f64,
    /// The routing table index of the master serving it.
    pub master: usize,
}

/// The places of one routing table, and each bucket's choice once made.
#[derive(Debug)]
pub struct Places {
    seeds: Vec<u64>,
    weights: Vec<f64>,
    masters: Vec<usize>,
    /// Per bucket: 0 = not chosen yet, else the place's position + 1.
    chosen: Box<[AtomicU32]>,
}

impl Places {
    pub fn new(places: &[Place]) -> Places {
        Places {
            seeds: places
                .iter()
                .map(|p| stable_hash(p.id.as_bytes()))
                .collect(),
            weights: places.iter().map(|p| p.weight).collect(),
            masters: places.iter().map(|p| p.master).collect(),
            chosen: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// The master serving `bucket`'s place.
    #[inline]
    pub fn pick(&self, bucket: u32) -> Option<usize> {
        let cell = &self.chosen[(bucket % BUCKETS) as usize];
        match cell.load(Relaxed) {
            0 => {
                let best = self.best(bucket, |_| true)?;
                cell.store(best as u32 + 1, Relaxed);
                Some(self.masters[best])
            }
            n => Some(self.masters[n as usize - 1]),
        }
    }

    /// The best place for `bucket` whose master `allowed` accepts (the next choices
    /// when the first has no budget); not cached.
    pub fn pick_where(&self, bucket: u32, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        self.best(bucket, |i| allowed(self.masters[i]))
            .map(|i| self.masters[i])
    }

    fn best(&self, bucket: u32, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        let b = mix(bucket as u64 ^ 0x9e37_79b9_7f4a_7c15);
        let mut best: Option<(usize, f64)> = None;
        for (i, (&seed, &weight)) in self.seeds.iter().zip(&self.weights).enumerate() {
            if !allowed(i) {
                continue;
            }
            // u in (0, 1): the top 53 bits, never 0.
            let u = ((mix(seed ^ b) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = weight / -u.ln();
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests;
