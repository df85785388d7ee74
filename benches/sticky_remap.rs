//! Sticky remap (SPEC section 10): with 10 masters and 100,000 recipients, the share of
//! recipients that move when one master fails (goal: its own 10% ± 1%, nobody else's),
//! when a standby is promoted in its place, and when it returns.
//! Run: cargo bench --bench sticky_remap

use switchyard::routing::sticky::{bucket, Place, Places};

fn owners(places: &[Place], recipients: &[String]) -> Vec<usize> {
    let p = Places::new(places);
    recipients
        .iter()
        .map(|r| p.pick(bucket(r)).expect("a place"))
        .collect()
}

fn main() {
    let recipients: Vec<String> = (0..100_000).map(|i| format!("+9715{i:08}")).collect();
    let all: Vec<Place> = (0..10)
        .map(|i| Place {
            id: format!("master-{i}"),
            weight: 1.0,
            master: i,
        })
        .collect();
    let before = owners(&all, &recipients);
    let failed = 3;
    let without: Vec<Place> = all.iter().filter(|p| p.master != failed).cloned().collect();
    let during = owners(&without, &recipients);
    // A standby (table index 10) promoted into the failed master's place.
    let mut promoted = without.clone();
    promoted.push(Place {
        id: format!("master-{failed}"),
        weight: 1.0,
        master: 10,
    });
    let standby = owners(&promoted, &recipients);
    let after = owners(&all, &recipients);
    let n = recipients.len() as f64;
    let own = before.iter().filter(|&&m| m == failed).count();
    let moved = before.iter().zip(&during).filter(|(a, b)| a != b).count();
    let others_moved = before
        .iter()
        .zip(&during)
        .filter(|(a, b)| a != b && **a != failed)
        .count();
    let to_standby = standby.iter().filter(|&&m| m == 10).count();
    let standby_exact = before
        .iter()
        .zip(&standby)
        .all(|(a, b)| (*a == failed) == (*b == 10) && (*a == failed || a == b));
    let back = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    println!("10 masters, 100,000 recipients, master-{failed} fails:");
    println!("  its own share: {:.2}%", own as f64 / n * 100.0);
    println!(
        "  moved when it fails: {:.2}% ({moved}), of which other masters' recipients: {others_moved}",
        moved as f64 / n * 100.0
    );
    println!(
        "  promoted standby in its place takes {:.2}% ({to_standby}); exactly its recipients: {standby_exact}",
        to_standby as f64 / n * 100.0
    );
    let returned = during.iter().zip(&after).filter(|(a, b)| a != b).count();
    let returned_to_it = during
        .iter()
        .zip(&after)
        .filter(|(a, b)| a != b && **b == failed)
        .count();
    println!(
        "  moved when it returns: {:.2}% ({returned}), to it: {returned_to_it}; differing from before the failure: {back}",
        returned as f64 / n * 100.0
    );
}
