//! The two Services of a cluster: the headless one that gives every pod a stable DNS
//! name for Raft traffic, and the client one that spreads clients over ready nodes.

use super::child_metadata;
use crate::crd::cluster_funcs::{CLIENT_PORT, HTTP_PORT, PEER_PORT};
use crate::crd::{Cluster, ServiceType};
use crate::error::Result;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(target.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The headless Service: `<pod>.<cluster>-peers.<namespace>.svc` for every pod, published
/// before the pod is ready so that nodes can find each other while they start.
pub fn headless_service(cluster: &Cluster) -> Result<Service> {
    Ok(Service {
        metadata: child_metadata(cluster, cluster.headless_service_name()?)?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(cluster.selector_labels()?),
            ports: Some(vec![
                port("client", CLIENT_PORT, "client"),
                port("peer", PEER_PORT, "peer"),
                port("http", HTTP_PORT, "http"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The client Service: client gRPC and HTTP ports of the ready nodes.
pub fn client_service(cluster: &Cluster) -> Result<Service> {
    let spec = &cluster.spec.service;
    let mut metadata = child_metadata(cluster, cluster.client_service_name()?)?;
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let type_ = match spec.type_ {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.to_owned()),
            selector: Some(cluster.selector_labels()?),
            ports: Some(vec![
                port("client", spec.ports.client, "client"),
                port("http", spec.ports.http, "http"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ServiceSpec as ClusterServiceSpec;
    use crate::desired::built;

    #[test]
    fn the_headless_service_publishes_pods_before_they_are_ready() {
        let service = built(headless_service(&Cluster::test()));
        assert_eq!(service.metadata.name.as_deref(), Some("flotilla-peers"));
        let spec = service.spec.unwrap_or_default();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<_> = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("client".to_owned(), 7100),
                ("peer".to_owned(), 7101),
                ("http".to_owned(), 7102)
            ]
        );
    }

    #[test]
    fn the_client_service_follows_the_service_spec() {
        let mut cluster = Cluster::test();
        cluster.spec.service = ClusterServiceSpec {
            type_: ServiceType::LoadBalancer,
            ports: crate::crd::ServicePorts {
                client: 9000,
                http: 9001,
            },
            annotations: [("lb.example/internal".to_owned(), "true".to_owned())].into(),
        };
        let service = built(client_service(&cluster));
        assert_eq!(
            service
                .metadata
                .annotations
                .unwrap_or_default()
                .get("lb.example/internal")
                .map(String::as_str),
            Some("true")
        );
        let spec = service.spec.unwrap_or_default();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.publish_not_ready_addresses, None);
        let ports = spec.ports.unwrap_or_default();
        assert_eq!(ports[0].port, 9000);
        assert_eq!(
            ports[0].target_port,
            Some(IntOrString::String("client".to_owned()))
        );
        assert_eq!(ports[1].port, 9001);
    }

    #[test]
    fn both_services_select_only_this_clusters_pods() {
        let cluster = Cluster::test().named("east");
        for service in [headless_service(&cluster), client_service(&cluster)] {
            let selector = service
                .ok()
                .and_then(|s| s.spec)
                .and_then(|s| s.selector)
                .unwrap_or_default();
            assert_eq!(
                selector
                    .get("app.kubernetes.io/instance")
                    .map(String::as_str),
                Some("east")
            );
        }
    }
}
