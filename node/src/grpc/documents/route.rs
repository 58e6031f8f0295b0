//! Routing a request: to the shard its database and id name (or a forwarded request names),
//! served here when this node holds a replica that can answer, otherwise forwarded over the
//! peer port to the shard leader or a replica that knows it (at most `MAX_HOPS` times).

use std::sync::Arc;
use std::time::Duration;

use crate::network::PeerChannel;
use flotilla_proto::v1::documents_client::DocumentsClient;
use tonic::{Request, Response, Status};

use super::{BoxFut, DocumentsService, Route, SHARD};
use crate::error::{NodeError, NodeResult};
use crate::host::{GroupHandle, Host};
use crate::meta::DatabaseRecord;
use crate::network::forward::{Effect, MAX_HOPS, is_lost_in_flight, is_unreachable, onward};
use crate::types::NodeId;
use crate::validate;

impl DocumentsService {
    /// The shard a forwarded request names (see [`SHARD`]).
    pub(super) fn shard_override<T>(&self, req: &Request<T>) -> Option<usize> {
        if !self.for_peers {
            return None;
        }
        req.metadata()
            .get(SHARD)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// Serves `msg` on `shard` (or the shard `pick` chooses): locally when this node holds a
    /// replica that can answer, otherwise forwarded.
    // The three closures are the per-method parts (choose the shard, serve here, forward);
    // bundling them in a struct would only move the same list elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn serve<T, R>(
        &self,
        msg: T,
        hops: u32,
        database: &str,
        shard: Option<usize>,
        pick: impl FnOnce(&DatabaseRecord) -> NodeResult<usize>,
        local: impl FnOnce(Arc<Host>, GroupHandle, Route, T) -> BoxFut<'static, NodeResult<R>>,
        call: impl Fn(
            DocumentsClient<PeerChannel>,
            Request<T>,
        ) -> BoxFut<'static, Result<Response<R>, Status>>,
    ) -> Result<Response<R>, Status>
    where
        T: Effect + Clone + Send + 'static,
        R: Send + 'static,
    {
        validate::database(database)?;
        let Some(db) = self.host.meta_state().databases.get(database).cloned() else {
            return self.unknown_database(database, msg, hops, None, call).await;
        };
        let shard = match shard {
            // A forwarded write must be for the shard its documents hash to.
            Some(s) if s < db.shards.len() && T::WRITES => {
                crate::grpc::peer_checks::check_forwarded_shard(database, s, pick(&db)?)?;
                s
            }
            Some(s) if s < db.shards.len() => s,
            Some(s) => {
                return Err(Status::invalid_argument(format!(
                    "database {database} has no shard {s}"
                )));
            }
            None => pick(&db)?,
        };
        let record = &db.shards[shard];
        let route = Route {
            shard,
            gid: record.group_id,
        };
        // Nodes this one has lost touch with (down, or on the other side of a partition) are
        // not worth a request that would wait for its deadline: without any other, the answer
        // is Unavailable at once, and the client tries another node.
        let window = Duration::from_millis(self.host.config.election_timeout);
        let silent = |node: NodeId| self.host.beats().silent(node, window);
        let mut targets = Vec::new();
        if let Some(group) = self.host.group(route.gid) {
            match local(self.host.clone(), group, route.clone(), msg.clone()).await {
                Err(NodeError::NotLeader { leader }) => {
                    if let Some((id, _)) = leader
                        && !silent(id)
                        && let Some(addr) = self.host.peer_addr_of(id)
                    {
                        targets.push(addr);
                    }
                }
                other => return other.map(Response::new).map_err(Status::from),
            }
        }
        for replica in &record.replicas {
            if *replica != self.host.id
                && !silent(*replica)
                && let Some(addr) = self.host.peer_addr_of(*replica)
                && !targets.contains(&addr)
            {
                targets.push(addr);
            }
        }
        self.forward(targets, hops, msg, Some(shard), call).await
    }

    /// The database is not in this node's meta state: ask the meta leader, which knows for sure.
    pub(super) async fn unknown_database<T, R>(
        &self,
        database: &str,
        msg: T,
        hops: u32,
        shard: Option<usize>,
        call: impl Fn(
            DocumentsClient<PeerChannel>,
            Request<T>,
        ) -> BoxFut<'static, Result<Response<R>, Status>>,
    ) -> Result<Response<R>, Status>
    where
        T: Effect + Clone + Send + 'static,
    {
        let not_found = || Status::from(NodeError::database_not_found(database));
        match self.host.meta_leader_peer() {
            Some((leader, addr)) if leader != self.host.id && hops < MAX_HOPS => {
                self.forward(vec![addr], hops, msg, shard, call).await
            }
            Some(_) => Err(not_found()),
            None => Err(Status::unavailable(
                "no meta leader known; cannot resolve the database",
            )),
        }
    }

    pub(super) async fn forward<T, R>(
        &self,
        targets: Vec<String>,
        hops: u32,
        msg: T,
        shard: Option<usize>,
        call: impl Fn(
            DocumentsClient<PeerChannel>,
            Request<T>,
        ) -> BoxFut<'static, Result<Response<R>, Status>>,
    ) -> Result<Response<R>, Status>
    where
        T: Effect + Clone,
    {
        if hops >= MAX_HOPS {
            return Err(Status::unavailable(
                "no leader reachable for this shard (forwarded too often)",
            ));
        }
        let mut last = Status::unavailable("no leader known for this shard");
        // A write lost on the way to an earlier target (it may have applied there).
        let mut lost: Option<String> = None;
        for addr in targets {
            if addr == self.host.addr.peer_addr {
                continue;
            }
            let client = self.host.peers().documents(&addr)?;
            let mut req = onward(msg.clone(), hops, self.host.config.request_timeout);
            if let Some(s) = shard
                && let Ok(v) = s.to_string().parse()
            {
                req.metadata_mut().insert(SHARD, v);
            }
            match call(client, req).await {
                Ok(r) => return Ok(r),
                Err(s) if is_unreachable(&s) => last = s,
                Err(s) if is_lost_in_flight(&s) && T::WRITES => {
                    let why = format!(
                        "outcome unknown: the connection to {addr} was lost: {}",
                        s.message()
                    );
                    // A write that names its request may go to the next target: a shard
                    // that applied it already answers with the first outcome.
                    if !msg.may_repeat() {
                        return Err(Status::aborted(why));
                    }
                    lost = Some(why);
                }
                Err(s) if is_lost_in_flight(&s) => {
                    last = Status::unavailable(format!(
                        "no answer from {addr}, which should serve this read: {}",
                        s.message()
                    ));
                }
                // A later target that cannot serve the write says nothing of the attempt
                // lost before: its outcome stays unknown.
                Err(s) if s.code() == tonic::Code::Unavailable && lost.is_some() => last = s,
                Err(s) => return Err(s),
            }
        }
        // Nobody answered after the write may have applied: its outcome is unknown (the
        // client may repeat it, under the same request id).
        match lost {
            Some(why) => Err(Status::aborted(why)),
            None => Err(last),
        }
    }
}
