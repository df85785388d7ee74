use super::*;
use proptest::prelude::*;

fn places(ids: &[(&str, f64)]) -> Vec<Place> {
    ids.iter()
        .enumerate()
        .map(|(master, (id, weight))| Place {
            id: id.to_string(),
            weight: *weight,
            master,
        })
        .collect()
}

/// Each bucket's place id.
fn owners(p: &[Place]) -> Vec<String> {
    let built = Places::new(p);
    (0..BUCKETS)
        .map(|b| p[built.pick(b).unwrap()].id.clone())
        .collect()
}

#[test]
fn the_hash_never_changes() {
    // Two nodes, or two versions, must map a recipient alike.
    // Values computed when the hash was written.
    assert_eq!(stable_hash(b""), 17_665_956_581_633_026_203);
    let known = [
        bucket("+971500000001"),
        bucket("+441632960961"),
        bucket("alice@example.com"),
    ];
    assert_eq!(known, [21601, 32066, 5048], "the recipient hash changed");
}

#[test]
fn cached_and_fresh_choices_agree() {
    let p = places(&[("a", 1.0), ("b", 2.0), ("c", 0.5)]);
    let built = Places::new(&p);
    for b in (0..BUCKETS).step_by(97) {
        let first = built.pick(b);
        assert_eq!(first, built.pick(b));
        assert_eq!(first, built.pick_where(b, |_| true));
    }
    assert!(Places::new(&[]).pick(7).is_none());
}

#[test]
fn shares_follow_weights() {
    let p = places(&[("a", 1.0), ("b", 2.0), ("c", 1.0)]);
    let o = owners(&p);
    let share = |id: &str| o.iter().filter(|x| *x == id).count() as f64 / BUCKETS as f64;
    assert!((share("a") - 0.25).abs() < 0.01, "{}", share("a"));
    assert!((share("b") - 0.50).abs() < 0.01, "{}", share("b"));
}

#[test]
fn the_second_choice_skips_a_master_without_budget() {
    let p = places(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]);
    let built = Places::new(&p);
    for b in 0..1000 {
        let first = built.pick(b).unwrap();
        let second = built.pick_where(b, |m| m != first).unwrap();
        assert_ne!(first, second);
        // The second choice is where the bucket goes if the first place leaves.
        let without: Vec<Place> = p.iter().filter(|x| x.master != first).cloned().collect();
        assert_eq!(Places::new(&without).pick(b), Some(second));
    }
}

#[test]
fn a_promoted_standby_takes_exactly_its_masters_recipients() {
    let before = places(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]);
    // `a` failed; standby `s` (table index 3) serves a's place.
    let mut after = before.clone();
    after[0].master = 3;
    let (b0, b1) = (Places::new(&before), Places::new(&after));
    for b in 0..BUCKETS {
        let (x, y) = (b0.pick(b).unwrap(), b1.pick(b).unwrap());
        if x == 0 {
            assert_eq!(y, 3);
        } else {
            assert_eq!(x, y);
        }
    }
}

proptest! {
    /// Removing any one place moves only the buckets it owned; putting it back
    /// restores every bucket.
    #[test]
    fn a_leaving_place_moves_only_its_own(
        weights in proptest::collection::vec(0.1f64..10.0, 2..12),
        gone in any::<prop::sample::Index>(),
    ) {
        let ids: Vec<String> = (0..weights.len()).map(|i| format!("m{i}")).collect();
        let all: Vec<(&str, f64)> = ids.iter().map(|s| s.as_str()).zip(weights.iter().copied()).collect();
        let p = places(&all);
        let gone = gone.index(p.len());
        let without: Vec<Place> = p.iter().filter(|x| x.master != gone).cloned().collect();
        let (full, less, back) = (Places::new(&p), Places::new(&without), Places::new(&p));
        for b in (0..BUCKETS).step_by(13) {
            let before = full.pick(b).unwrap();
            let after = less.pick(b).unwrap();
            if before != gone {
                prop_assert_eq!(before, after);
            } else {
                prop_assert_ne!(after, gone);
            }
            prop_assert_eq!(back.pick(b), Some(before));
        }
    }
}
