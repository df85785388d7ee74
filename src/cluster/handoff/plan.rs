//! How a round of a hand-off is laid out: which peers are live, which messages go to
//! which peer, and how many make one batch.

use super::{BATCH_BYTES, BATCH_RECORDS};
use crate::cluster::member::NodeState;
use crate::cluster::Cluster;
use crate::queue::Handed;
use std::hash::{Hash, Hasher};

/// A live peer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: String,
    pub admin: String,
}

/// The nodes the last tick saw active or leading, other than this one, by id.
pub fn live_peers(cluster: &Cluster) -> Vec<Peer> {
    cluster
        .view()
        .nodes
        .iter()
        .filter(|n| n.id != cluster.node_id() && !n.admin.is_empty())
        .filter(|n| matches!(n.state, NodeState::Active | NodeState::Leader))
        .map(|n| Peer {
            id: n.id.clone(),
            admin: n.admin.clone(),
        })
        .collect()
}

/// Spreads a round over `peers`: one routing key's messages all to one peer (a hash
/// of the key), the others in turn; acceptance order is kept within each part.
pub fn assign(batch: Vec<Handed>, peers: &[Peer]) -> Vec<(Peer, Vec<Handed>)> {
    let mut parts: Vec<Vec<Handed>> = peers.iter().map(|_| Vec::new()).collect();
    let mut turn = 0usize;
    for h in batch {
        let i = match &h.record.routing_key {
            Some(key) => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                key.hash(&mut hasher);
                (hasher.finish() % peers.len() as u64) as usize
            }
            None => {
                turn += 1;
                turn % peers.len()
            }
        };
        parts[i].push(h);
    }
    peers
        .iter()
        .cloned()
        .zip(parts)
        .filter(|(_, part)| !part.is_empty())
        .collect()
}

/// How many of `part`'s first messages make one batch: up to [`BATCH_RECORDS`] and
/// about [`BATCH_BYTES`] of bodies, at least one.
pub fn batch_len(part: &[Handed]) -> usize {
    let mut bytes = 0;
    for (i, h) in part.iter().enumerate().take(BATCH_RECORDS) {
        bytes += h.record.body.len() + 256;
        if bytes > BATCH_BYTES && i > 0 {
            return i;
        }
    }
    part.len().min(BATCH_RECORDS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn handed(n: u8, key: Option<&str>) -> Handed {
        let mut record = crate::queue::record::Record::decode(&sample()).unwrap();
        record.id = [n; 16];
        record.routing_key = key.map(String::from);
        Handed {
            record,
            keyed: false,
        }
    }

    fn sample() -> Vec<u8> {
        let h = Handed {
            record: crate::queue::record::Record::test_queued([0; 16], b"{}"),
            keyed: false,
        };
        h.record.encode()
    }

    fn peers(n: usize) -> Vec<Peer> {
        (0..n)
            .map(|i| Peer {
                id: format!("p{i}"),
                admin: format!("127.0.0.1:{i}"),
            })
            .collect()
    }

    #[test]
    fn one_key_goes_to_one_peer_in_order_and_the_rest_is_spread() {
        let mut batch = Vec::new();
        for n in 0..30u8 {
            let key = (n % 3 == 0).then_some("+971");
            batch.push(handed(n, key));
        }
        let parts = assign(batch, &peers(3));
        let keyed: Vec<_> = parts
            .iter()
            .filter(|(_, part)| part.iter().any(|h| h.record.routing_key.is_some()))
            .collect();
        assert_eq!(keyed.len(), 1, "one key, one peer");
        for (_, part) in &parts {
            let ids: Vec<u8> = part.iter().map(|h| h.record.id[0]).collect();
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(ids, sorted, "acceptance order within a part");
        }
        let unkeyed: Vec<usize> = parts
            .iter()
            .map(|(_, part)| {
                part.iter()
                    .filter(|h| h.record.routing_key.is_none())
                    .count()
            })
            .collect();
        assert_eq!(unkeyed.iter().sum::<usize>(), 20);
        assert!(unkeyed.iter().all(|&n| (6..=7).contains(&n)), "{unkeyed:?}");
    }

    #[test]
    fn a_batch_is_bounded_in_count_and_bytes_and_never_empty() {
        let small: Vec<Handed> = (0..5000).map(|_| handed(1, None)).collect();
        assert_eq!(batch_len(&small), BATCH_RECORDS);
        assert_eq!(batch_len(&small[..3]), 3);
        let mut big = handed(1, None);
        big.record.body = Bytes::from(vec![0; BATCH_BYTES * 2]);
        assert_eq!(batch_len(&[big.clone(), big.clone()]), 1);
        let mut half = handed(1, None);
        half.record.body = Bytes::from(vec![0; BATCH_BYTES / 2]);
        assert_eq!(batch_len(&[half.clone(), half.clone(), half]), 1);
    }
}
