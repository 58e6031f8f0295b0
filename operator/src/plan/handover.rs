//! Moving every leadership off a node on request (`kubectl flotilla transfer-leadership`,
//! which puts the annotation `flotilla.dev/handOverLeadership` on the node's pod): the
//! operator asks the node to hand its leaderships over, and clears the request once the
//! node leads nothing (or is no member). The node stays a voter; this only moves load, e.g.
//! before maintenance of its machine.

use super::{Observed, Step};
use crate::crd::Reason;

/// Steps of the hand-overs asked for; empty when none is.
pub fn steps(observed: &Observed) -> Vec<Step> {
    let Some(pod) = observed
        .pods
        .iter()
        .filter(|p| p.hand_over)
        .min_by_key(|p| p.ordinal)
    else {
        return Vec::new();
    };
    if observed.membership.is_none() {
        return vec![Step::wait(
            Reason::ClusterUnreachable,
            format!(
                "not moving leadership off {}: no node answers on its admin API",
                pod.name
            ),
        )];
    }
    match observed.member_in_pod(&pod.name) {
        Some(node) if observed.leaderships(&node.node_id) > 0 => {
            vec![Step::HandOverLeadership {
                pod: pod.name.clone(),
                node_id: node.node_id.clone(),
            }]
        }
        _ => vec![Step::FinishHandOver {
            pod: pod.name.clone(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Cluster;
    use crate::plan::fixtures::healthy;

    #[test]
    fn a_node_asked_to_hand_over_gives_up_its_leaderships_then_the_request_is_cleared() {
        let cluster = Cluster::test();
        let observed = healthy(&cluster, 3).hand_over("flotilla-1");
        assert_eq!(
            steps(&observed),
            [Step::HandOverLeadership {
                pod: "flotilla-1".to_owned(),
                node_id: "n1".to_owned(),
            }]
        );
        let moved = observed.led_by("orders/0", "n2");
        assert_eq!(
            steps(&moved),
            [Step::FinishHandOver {
                pod: "flotilla-1".to_owned()
            }]
        );
    }

    #[test]
    fn no_request_no_step_and_an_unreachable_cluster_waits() {
        let cluster = Cluster::test();
        assert!(steps(&healthy(&cluster, 3)).is_empty());
        let unreachable = healthy(&cluster, 3).hand_over("flotilla-0").unreachable();
        assert!(matches!(
            steps(&unreachable).as_slice(),
            [Step::Wait {
                reason: Reason::ClusterUnreachable,
                ..
            }]
        ));
    }
}
