//! The NetworkPolicy of a cluster's nodes (`spec.networkPolicy.enabled`): the peer port
//! admits only the cluster's own pods; the client and HTTP ports admit the cluster's pods,
//! the operator's pods and the clients the spec allows (every pod of the cluster's namespace
//! unless it lists others).

use super::backup_job::backup_pod_selector;
use super::child_metadata;
use crate::crd::Cluster;
use crate::crd::cluster_funcs::{CLIENT_PORT, HTTP_PORT, PEER_PORT};
use crate::error::Result;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Which pods are the operator's: the NetworkPolicy lets them reach the client and HTTP
/// ports (the admin API the operator calls).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorPods {
    /// Namespace of the operator; any namespace when unknown.
    pub namespace: Option<String>,
    /// Labels of the operator's pods.
    pub labels: BTreeMap<String, String>,
}

impl Default for OperatorPods {
    /// The pods of the chart's and the plain manifests' Deployment, in any namespace.
    fn default() -> Self {
        Self {
            namespace: None,
            labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "flotilla-operator".to_owned(),
            )]),
        }
    }
}

impl OperatorPods {
    fn peer(&self) -> NetworkPolicyPeer {
        let namespace = LabelSelector {
            match_labels: self
                .namespace
                .as_ref()
                .map(|ns| BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), ns.clone())])),
            ..LabelSelector::default()
        };
        NetworkPolicyPeer {
            namespace_selector: Some(namespace),
            pod_selector: Some(LabelSelector {
                match_labels: Some(self.labels.clone()),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }
    }
}

fn ports(numbers: &[i32]) -> Option<Vec<NetworkPolicyPort>> {
    Some(
        numbers
            .iter()
            .map(|port| NetworkPolicyPort {
                port: Some(IntOrString::Int(*port)),
                protocol: Some("TCP".to_owned()),
                ..NetworkPolicyPort::default()
            })
            .collect(),
    )
}

/// The NetworkPolicy of `cluster`, when its spec enables one.
pub fn network_policy(cluster: &Cluster, operator: &OperatorPods) -> Result<Option<NetworkPolicy>> {
    let Some(spec) = cluster.spec.network_policy.as_ref().filter(|p| p.enabled) else {
        return Ok(None);
    };
    let own_pods = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(cluster.selector_labels()?),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let mut ingress = vec![
        NetworkPolicyIngressRule {
            from: Some(vec![own_pods]),
            ports: ports(&[PEER_PORT, CLIENT_PORT, HTTP_PORT]),
        },
        // The operator, and the Jobs that take the cluster's backups.
        NetworkPolicyIngressRule {
            from: Some(vec![
                operator.peer(),
                NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(backup_pod_selector(cluster)?),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                },
            ]),
            ports: ports(&[CLIENT_PORT, HTTP_PORT]),
        },
    ];
    let clients = spec.clients.clone().unwrap_or_else(|| {
        // Every pod of the cluster's own namespace.
        vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]
    });
    if !clients.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(clients),
            ports: ports(&[CLIENT_PORT, HTTP_PORT]),
        });
    }
    Ok(Some(NetworkPolicy {
        metadata: child_metadata(cluster, cluster.network_policy_name()?)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(cluster.selector_labels()?),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NetworkPolicySpec as PolicySpec;
    use crate::desired::built;

    fn enabled(clients: Option<Vec<NetworkPolicyPeer>>) -> Cluster {
        let mut cluster = Cluster::test();
        cluster.spec.network_policy = Some(PolicySpec {
            enabled: true,
            clients,
        });
        cluster
    }

    fn rules(cluster: &Cluster, operator: &OperatorPods) -> Vec<NetworkPolicyIngressRule> {
        built(network_policy(cluster, operator))
            .and_then(|p| p.spec)
            .and_then(|s| s.ingress)
            .unwrap_or_default()
    }

    fn port_numbers(rule: &NetworkPolicyIngressRule) -> Vec<i32> {
        rule.ports
            .iter()
            .flatten()
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn no_policy_unless_enabled() {
        let mut cluster = Cluster::test();
        assert_eq!(
            built(network_policy(&cluster, &OperatorPods::default())),
            None
        );
        cluster.spec.network_policy = Some(PolicySpec::default());
        assert_eq!(
            built(network_policy(&cluster, &OperatorPods::default())),
            None
        );
    }

    #[test]
    fn the_peer_port_admits_only_the_clusters_own_pods() {
        let cluster = enabled(None);
        let rules = rules(&cluster, &OperatorPods::default());
        let with_peer: Vec<_> = rules
            .iter()
            .filter(|r| port_numbers(r).contains(&PEER_PORT))
            .collect();
        assert_eq!(with_peer.len(), 1);
        let from = with_peer[0].from.clone().unwrap_or_default();
        assert_eq!(from.len(), 1);
        assert_eq!(from[0].namespace_selector, None);
        assert_eq!(
            from[0]
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(built(cluster.selector_labels()))
        );
    }

    #[test]
    fn the_operator_reaches_the_client_port_from_its_namespace() {
        let cluster = enabled(Some(Vec::new()));
        let operator = OperatorPods {
            namespace: Some("flotilla-system".to_owned()),
            labels: BTreeMap::from([("app".to_owned(), "op".to_owned())]),
        };
        let rules = rules(&cluster, &operator);
        // Own pods and the operator; an empty client list admits no one else.
        assert_eq!(rules.len(), 2);
        assert_eq!(port_numbers(&rules[1]), vec![CLIENT_PORT, HTTP_PORT]);
        let from = rules[1].from.clone().unwrap_or_default();
        assert_eq!(
            from[0]
                .namespace_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                "flotilla-system".to_owned()
            )]))
        );
        assert_eq!(
            from[0]
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(operator.labels.clone())
        );
        // The cluster's backup Jobs reach the client port too.
        let backups = from[1]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone());
        assert_eq!(
            backups.and_then(|l| l.get("app.kubernetes.io/component").cloned()),
            Some("backup".to_owned())
        );
    }

    #[test]
    fn clients_default_to_the_clusters_namespace_and_follow_the_spec() {
        let rules_default = rules(&enabled(None), &OperatorPods::default());
        assert_eq!(rules_default.len(), 3);
        let from = rules_default[2].from.clone().unwrap_or_default();
        assert_eq!(
            from,
            vec![NetworkPolicyPeer {
                pod_selector: Some(LabelSelector::default()),
                ..NetworkPolicyPeer::default()
            }]
        );
        assert_eq!(
            port_numbers(&rules_default[2]),
            vec![CLIENT_PORT, HTTP_PORT]
        );

        let app = NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("team".to_owned(), "shop".to_owned())])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        };
        let rules = rules(&enabled(Some(vec![app.clone()])), &OperatorPods::default());
        assert_eq!(rules[2].from, Some(vec![app]));
    }

    #[test]
    fn the_policy_selects_the_clusters_pods_for_ingress() {
        let cluster = enabled(None);
        let policy = built(network_policy(&cluster, &OperatorPods::default()));
        let spec = policy.and_then(|p| p.spec).unwrap_or_default();
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
        assert_eq!(
            spec.pod_selector.and_then(|s| s.match_labels),
            Some(built(cluster.selector_labels()))
        );
    }
}
