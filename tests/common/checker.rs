//! The checker of replicated-queue tests: which confirmed sequence numbers were never consumed
//! (lost), which were consumed more than once (duplicated), and how often a number came after a
//! larger one (reordered: one publisher's order broken).
//!
//! Included with `#[path = "common/checker.rs"] mod checker;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub lost: Vec<u64>,
    pub duplicated: Vec<u64>,
    pub reordered: usize,
    pub consumed: usize,
}

impl Report {
    /// One line: consumed, confirmed, lost (the numbers), duplicated and reordered (counts).
    pub fn summary(&self, confirmed: &BTreeSet<u64>) -> String {
        format!(
            "{} consumed, {} confirmed, lost {:?}, duplicated {}, reordered {}",
            self.consumed,
            confirmed.len(),
            self.lost,
            self.duplicated.len(),
            self.reordered
        )
    }
}

/// Checks `consumed` (in the order received) against the numbers the broker confirmed.
pub fn check(confirmed: &BTreeSet<u64>, consumed: &[u64]) -> Report {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for n in consumed {
        *seen.entry(*n).or_default() += 1;
    }
    Report {
        lost: confirmed
            .iter()
            .filter(|n| !seen.contains_key(n))
            .copied()
            .collect(),
        duplicated: seen
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(n, _)| *n)
            .collect(),
        reordered: consumed.windows(2).filter(|w| w[1] < w[0]).count(),
        consumed: consumed.len(),
    }
}

#[test]
fn the_checker_finds_what_it_reports() {
    let confirmed: BTreeSet<u64> = [1, 2, 3, 4].into_iter().collect();
    let report = check(&confirmed, &[1, 3, 2, 3, 5]);
    assert_eq!(report.lost, vec![4]);
    assert_eq!(report.duplicated, vec![3]);
    assert_eq!(report.reordered, 1);
    assert_eq!(report.consumed, 5);
}
