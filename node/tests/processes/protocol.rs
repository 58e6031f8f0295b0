//! The gRPC surface of a node as other tools see it: the client port answers the standard
//! health service and server reflection and serves only what users call; node-to-node calls
//! are answered on the peer port alone.

use std::time::Duration;

use flotilla_proto::peer::HeartbeatRequest;
use flotilla_proto::peer::peer_client::PeerClient;
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_for;
use futures::StreamExt;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_answers_grpc_health_and_reflection_and_hides_the_peer_service() {
    let cluster = Cluster::start(1, ClusterOptions::default()).await;
    let node = cluster.node(0);
    let client_url = format!("http://{}", node.client_addr);

    let channel = tonic::transport::Endpoint::from_shared(client_url.clone())
        .expect("an endpoint")
        .connect()
        .await
        .expect("connect to the client port");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "flotilla.v1.Documents", "flotilla.v1.Admin"] {
        let status = wait_for(
            Duration::from_secs(10),
            "the health service says SERVING",
            async || {
                let answer = health
                    .check(HealthCheckRequest {
                        service: service.to_string(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                (answer.status() == ServingStatus::Serving).then_some(answer.status())
            },
        )
        .await;
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "flotilla.peer.v1.Peer".into(),
        })
        .await
        .expect_err("the client port does not report the peer service");
    assert_eq!(unknown.code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([ask]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers
        .next()
        .await
        .expect("one answer")
        .expect("a good answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list of services: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "flotilla.v1.Documents",
        "flotilla.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.starts_with("flotilla.peer")),
        "the peer API is not offered to users: {names:?}"
    );

    let beat = HeartbeatRequest {
        from_node_id: 1,
        to_node_id: 0,
        leading: vec![],
        stopped: Default::default(),
        broken: vec![],
    };
    let mut on_client_port = PeerClient::connect(client_url)
        .await
        .expect("connect to the client port");
    let refused = on_client_port
        .heartbeat(beat.clone())
        .await
        .expect_err("the client port does not serve node-to-node calls");
    assert_eq!(refused.code(), Code::Unimplemented);
    let mut on_peer_port = PeerClient::connect(format!("http://{}", node.peer_addr))
        .await
        .expect("connect to the peer port");
    // The Peer service answers there, and refuses a heartbeat that names no target node.
    let refused = on_peer_port
        .heartbeat(beat)
        .await
        .expect_err("a heartbeat for no node is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        flotilla_proto::reason_of(&refused),
        Some(flotilla_proto::v1::ErrorReason::WrongTarget)
    );
}
