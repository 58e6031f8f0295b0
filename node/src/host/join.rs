//! Joining a cluster: a node started with `--join` (members' client addresses) asks one of them
//! who the members are, then asks their peer ports to admit it (the request reaches the meta
//! leader) until it is a member of the meta group, registered with its current labels.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::peer::JoinClusterRequest;
use flotilla_proto::v1::admin_client::AdminClient;
use flotilla_proto::v1::{ClusterStatusRequest, NodeInfo};

use super::Host;

/// How long one question to a member may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the members named by `--join` to admit this node until it is in the meta group.
pub async fn join_cluster(host: Arc<Host>) {
    let mut stopping = host.stopping();
    let mut attempt: u32 = 0;
    // A restarted node asks once even when its own (possibly stale) copy of the meta state
    // says it is registered: its address may have changed, or been claimed meanwhile.
    let mut asked = host.config.join.iter().all(|t| t == &host.addr.client_addr);
    loop {
        if asked && is_member(&host) {
            tracing::info!(node_id = host.id, "member of the cluster");
            return;
        }
        for target in &host.config.join {
            if target == &host.addr.client_addr {
                continue;
            }
            match join_through(&host, target).await {
                Ok(cluster_id) => {
                    asked = true;
                    tracing::info!(via = %target, %cluster_id, "joined the cluster");
                    break;
                }
                Err(e) => {
                    if attempt.is_multiple_of(10) {
                        tracing::warn!(via = %target, error = %e, "join attempt failed; retrying");
                    }
                }
            }
        }
        attempt += 1;
        let backoff = Duration::from_millis((200 * u64::from(attempt.min(10))).max(200));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {},
            _ = stopping.changed() => return,
        }
    }
}

/// In the meta group and registered at its current address with the labels it was started
/// with.
fn is_member(host: &Host) -> bool {
    let in_group = host
        .meta()
        .metrics()
        .membership_config
        .membership()
        .get_node(&host.id)
        .is_some();
    let state = host.meta_state();
    in_group
        && state.nodes.get(&host.id) == Some(&host.addr)
        && state.labels.get(&host.id) == Some(&host.config.label_map())
}

/// Learns the members' peer addresses from the member at client address `target`, then asks
/// them (the meta leader first) to admit this node; answers the cluster id.
async fn join_through(host: &Host, target: &str) -> Result<String, String> {
    let endpoint = crate::tls::connect::endpoint(target).map_err(|e| e.to_string())?;
    let channel = crate::tls::connect::channel(endpoint, host.tls.to_members.clone());
    let mut admin = AdminClient::new(channel);
    let mut ask = tonic::Request::new(ClusterStatusRequest {});
    ask.set_timeout(ASK_TIMEOUT);
    let status = admin
        .cluster_status(ask)
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let mut peers: Vec<(u64, String)> = status
        .nodes
        .iter()
        .filter_map(|n| n.node.as_ref())
        .filter(|n| n.id != host.id && !n.peer_addr.is_empty())
        .map(|n| (n.id, n.peer_addr.clone()))
        .collect();
    peers.sort_by_key(|(id, _)| *id != status.meta_leader_id);
    let mut last = format!("{target} named no member to join through");
    for (_, addr) in peers {
        let request = JoinClusterRequest {
            node: Some(NodeInfo {
                id: host.id,
                name: host.addr.name.clone(),
                client_addr: host.addr.client_addr.clone(),
                peer_addr: host.addr.peer_addr.clone(),
            }),
            labels: host.config.label_map().into_iter().collect(),
            join_token: host.config.security.join_token.clone().unwrap_or_default(),
        };
        let mut request = tonic::Request::new(request);
        request.set_timeout(host.config.request_timeout);
        let mut peer = host.peers().peer(&addr).map_err(|e| e.to_string())?;
        match peer.join_cluster(request).await {
            Ok(answer) => return Ok(answer.into_inner().cluster_id),
            Err(s) => last = format!("{addr}: {}", s.message()),
        }
    }
    Err(last)
}
