//! How many meta group voters to have, and which learners to promote: a pure decision.
//!
//! The voter count is kept odd (an even count tolerates no more failures than one fewer voter,
//! and a 2-voter group stops when either fails), never above the configured target, and grows in
//! one step (e.g. 1 -> 3) so the group never passes through a fragile even size.

use crate::types::NodeId;

/// The voter count to aim for with `available` nodes that could vote and a target of `target`.
pub fn desired_voters(available: usize, target: usize) -> usize {
    let n = available.min(target).max(1);
    if n.is_multiple_of(2) { n - 1 } else { n }
}

/// Learners to promote now: `candidates` are healthy, caught-up learners in preference order.
pub fn to_promote(voters: usize, candidates: &[NodeId], target: usize) -> Vec<NodeId> {
    let want = desired_voters(voters + candidates.len(), target);
    if want <= voters {
        return vec![];
    }
    candidates.iter().take(want - voters).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voter_counts_stay_odd_and_within_the_target() {
        assert_eq!(desired_voters(1, 3), 1);
        assert_eq!(desired_voters(2, 3), 1);
        assert_eq!(desired_voters(3, 3), 3);
        assert_eq!(desired_voters(4, 5), 3);
        assert_eq!(desired_voters(9, 5), 5);
        assert_eq!(desired_voters(9, 3), 3);
    }

    #[test]
    fn a_single_voter_grows_straight_to_three() {
        assert_eq!(to_promote(1, &[7], 3), Vec::<NodeId>::new());
        assert_eq!(to_promote(1, &[7, 8], 3), vec![7, 8]);
        assert_eq!(to_promote(1, &[7, 8, 9], 3), vec![7, 8]);
        assert_eq!(to_promote(3, &[7, 8], 5), vec![7, 8]);
        assert_eq!(to_promote(3, &[7], 5), Vec::<NodeId>::new());
        assert_eq!(to_promote(5, &[7, 8], 5), Vec::<NodeId>::new());
    }
}
