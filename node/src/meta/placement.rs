//! Where a new database's shard replicas go: a pure function of the nodes and their current load.
//! Each shard gets `rf` distinct nodes, least-loaded first (ties by node id), so replicas spread
//! evenly as shards are added.

use std::collections::BTreeMap;

use crate::types::NodeId;

/// Why no placement exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {rf} needs {rf} nodes, the cluster has {nodes}")]
    NotEnoughNodes { rf: usize, nodes: usize },
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
}

/// Replica lists for `shards` new shards of replication factor `rf`.
pub fn place_shards(
    load: &BTreeMap<NodeId, usize>,
    shards: usize,
    rf: usize,
) -> Result<Vec<Vec<NodeId>>, PlacementError> {
    if rf == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    if rf > load.len() {
        return Err(PlacementError::NotEnoughNodes {
            rf,
            nodes: load.len(),
        });
    }
    let mut load = load.clone();
    let mut out = Vec::with_capacity(shards);
    for _ in 0..shards {
        let mut nodes: Vec<(usize, NodeId)> = load.iter().map(|(n, l)| (*l, *n)).collect();
        nodes.sort();
        let chosen: Vec<NodeId> = nodes.iter().take(rf).map(|(_, n)| *n).collect();
        for n in &chosen {
            *load.entry(*n).or_default() += 1;
        }
        out.push(chosen);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn refuses_more_replicas_than_nodes() {
        let load = BTreeMap::from([(1, 0), (2, 0)]);
        assert_eq!(
            place_shards(&load, 1, 3),
            Err(PlacementError::NotEnoughNodes { rf: 3, nodes: 2 })
        );
    }

    #[test]
    fn prefers_the_least_loaded_nodes() {
        let load = BTreeMap::from([(1, 5), (2, 0), (3, 1), (4, 0)]);
        assert_eq!(place_shards(&load, 1, 2).unwrap(), vec![vec![2, 4]]);
    }

    proptest! {
        #[test]
        fn replicas_are_distinct_and_load_stays_balanced(nodes in 1usize..8, shards in 1usize..16, rf in 1usize..5) {
            prop_assume!(rf <= nodes);
            let load: BTreeMap<NodeId, usize> = (1..=nodes as u64).map(|n| (n, 0)).collect();
            let placed = place_shards(&load, shards, rf).unwrap();
            prop_assert_eq!(placed.len(), shards);
            let mut count: BTreeMap<NodeId, usize> = BTreeMap::new();
            for replicas in &placed {
                let set: BTreeSet<_> = replicas.iter().collect();
                prop_assert_eq!(set.len(), rf);
                for r in replicas { *count.entry(*r).or_default() += 1; }
            }
            let max = count.values().max().copied().unwrap_or(0);
            let min = load.keys().map(|n| count.get(n).copied().unwrap_or(0)).min().unwrap_or(0);
            prop_assert!(max - min <= 1, "unbalanced: {:?}", count);
        }
    }
}
