//! Judging one consistency check from the digests its replicas gave: pure, so that every case
//! is tested without a cluster.
//!
//! A replica is only ever called diverged against a majority of the group's replicas (not of
//! those that answered): with three replicas, two equal digests outvote a third; with two
//! replicas that differ, or three that all differ, nobody can tell which is right, and nothing
//! is marked.

use std::collections::BTreeMap;

use crate::types::NodeId;

pub type Digest = [u8; 32];

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every replica compared had the same digest.
    Consistent { compared: usize },
    /// Fewer than two replicas could be compared.
    Incomplete { compared: usize },
    /// `agreeing` replicas, a majority of the group's, share `expected`; the `diverged` ones
    /// (with their digests) differ from it.
    Diverged {
        expected: Digest,
        agreeing: usize,
        compared: usize,
        diverged: Vec<(NodeId, Digest)>,
    },
    /// Digests differ and none is shared by a majority of the group's replicas.
    Undecided {
        compared: usize,
        digests: BTreeMap<Digest, Vec<NodeId>>,
    },
}

impl Verdict {
    /// The outcome label of the `consistency_checks` metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Consistent { .. } => "consistent",
            Verdict::Incomplete { .. } => "incomplete",
            Verdict::Diverged { .. } => "diverged",
            Verdict::Undecided { .. } => "undecided",
        }
    }
}

/// Judges the `digests` of the replicas that could be compared, out of a group of `replicas`.
pub fn judge(replicas: usize, digests: &BTreeMap<NodeId, Digest>) -> Verdict {
    let compared = digests.len();
    if compared < 2 {
        return Verdict::Incomplete { compared };
    }
    let mut by_digest: BTreeMap<Digest, Vec<NodeId>> = BTreeMap::new();
    for (node, digest) in digests {
        by_digest.entry(*digest).or_default().push(*node);
    }
    if by_digest.len() == 1 {
        return Verdict::Consistent { compared };
    }
    let majority = replicas.max(compared) / 2 + 1;
    let winner = by_digest
        .iter()
        .find(|(_, nodes)| nodes.len() >= majority)
        .map(|(d, nodes)| (*d, nodes.len()));
    match winner {
        Some((expected, agreeing)) => Verdict::Diverged {
            expected,
            agreeing,
            compared,
            diverged: digests
                .iter()
                .filter(|(_, d)| **d != expected)
                .map(|(n, d)| (*n, *d))
                .collect(),
        },
        None => Verdict::Undecided {
            compared,
            digests: by_digest,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Digest = [1; 32];
    const B: Digest = [2; 32];
    const C: Digest = [3; 32];

    fn digests(of: &[(NodeId, Digest)]) -> BTreeMap<NodeId, Digest> {
        of.iter().copied().collect()
    }

    #[test]
    fn equal_digests_are_consistent() {
        assert_eq!(
            judge(3, &digests(&[(1, A), (2, A), (3, A)])),
            Verdict::Consistent { compared: 3 }
        );
        // One replica did not answer: the two that did still agree.
        assert_eq!(
            judge(3, &digests(&[(1, A), (3, A)])),
            Verdict::Consistent { compared: 2 }
        );
    }

    #[test]
    fn one_answer_is_not_a_comparison() {
        assert_eq!(
            judge(3, &digests(&[(1, A)])),
            Verdict::Incomplete { compared: 1 }
        );
        assert_eq!(judge(3, &digests(&[])), Verdict::Incomplete { compared: 0 });
    }

    #[test]
    fn the_odd_one_out_of_three_diverged() {
        assert_eq!(
            judge(3, &digests(&[(1, A), (2, B), (3, A)])),
            Verdict::Diverged {
                expected: A,
                agreeing: 2,
                compared: 3,
                diverged: vec![(2, B)],
            }
        );
    }

    #[test]
    fn the_majority_is_of_the_group_not_of_those_that_answered() {
        // Five replicas, three answered, two agree: not a majority of five.
        let v = judge(5, &digests(&[(1, A), (2, A), (3, B)]));
        assert!(matches!(v, Verdict::Undecided { compared: 3, .. }), "{v:?}");
        // Three of five agree: the other two diverged.
        let v = judge(5, &digests(&[(1, A), (2, B), (3, A), (4, C), (5, A)]));
        assert_eq!(
            v,
            Verdict::Diverged {
                expected: A,
                agreeing: 3,
                compared: 5,
                diverged: vec![(2, B), (4, C)],
            }
        );
    }

    #[test]
    fn two_that_differ_or_three_all_different_are_undecided() {
        let v = judge(2, &digests(&[(1, A), (2, B)]));
        assert_eq!(v.outcome(), "undecided");
        let v = judge(3, &digests(&[(1, A), (2, B), (3, C)]));
        match v {
            Verdict::Undecided { compared, digests } => {
                assert_eq!(compared, 3);
                assert_eq!(digests.len(), 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_group_smaller_than_its_answers_counts_the_answers() {
        // A membership change between asking and answering: never a majority of fewer.
        let v = judge(1, &digests(&[(1, A), (2, B)]));
        assert_eq!(v.outcome(), "undecided");
    }
}
