//! The cluster's topology events as a stream: those recorded after a sequence number, and,
//! when asked to follow, every new one as the meta state records it.

use std::sync::Arc;

use flotilla_proto::v1::{ClusterEvent, ClusterEventCause, ClusterEventsRequest};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::host::Host;

/// The events after `msg.after_sequence`, and then new ones while `msg.follow` (until the
/// caller goes away or the node stops).
pub(super) fn follow(
    host: Arc<Host>,
    msg: ClusterEventsRequest,
) -> ReceiverStream<Result<ClusterEvent, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut after = msg.after_sequence;
        let mut applied = host.meta().sm.state().subscribe();
        let mut stopping = host.stopping();
        loop {
            let state = host.meta_state();
            let since = after;
            for e in state.events.iter().filter(|e| e.sequence > since) {
                after = e.sequence;
                let event = ClusterEvent {
                    sequence: e.sequence,
                    at_unix_ms: e.at_ms,
                    database: e.database.clone(),
                    shard: e.shard,
                    node_id: e.node,
                    from_state: e.from.clone(),
                    to_state: e.to.clone(),
                    reason: e.reason.clone(),
                    cause: if crate::topology::replica_broken(&e.reason) {
                        ClusterEventCause::ReplicaBroken as i32
                    } else {
                        ClusterEventCause::Unspecified as i32
                    },
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if !msg.follow {
                return;
            }
            tokio::select! {
                r = applied.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
                _ = async { let _ = stopping.wait_for(|stopping| *stopping).await; } => {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "this node is stopping: follow the events on another node",
                        )))
                        .await;
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
