//! Comparing the replicas of a database, and waiting for its shards to settle after faults
//! and membership changes.
//!
//! [`Cluster::compare_replicas`] asks every replica of every shard for its applied index and
//! content digest (`Admin.ReplicaDigest`, answered by the node itself, never forwarded), waits
//! until all of a shard's replicas have applied the leader's commit index, and then requires
//! equal digests: replicas that applied the same log must hold the same documents, versions,
//! index entries, transaction state and request records. [`Cluster::wait_settled`] waits until
//! every shard has a leader and exactly its replication factor of Members.

use std::time::Duration;

use flotilla_client::{ClientOptions, DatabaseStatus, ReplicaDigest, ReplicaState, ShardStatus};
use tokio::time::Instant;

use super::Cluster;
use crate::progress;

/// How long [`Cluster::compare_replicas`] waits for a shard's replicas to reach one index.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Time between two polls.
const POLL: Duration = Duration::from_millis(250);

/// What one replica answered (or why it did not).
type Answer = (u64, Result<ReplicaDigest, String>);

fn short_options() -> ClientOptions {
    ClientOptions {
        total_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    }
}

fn describe(answers: &[Answer]) -> String {
    answers
        .iter()
        .map(|(node, answer)| match answer {
            Ok(d) => format!(
                "  node {node}: applied {} digest {} ({} documents, {} indexes building)\n",
                d.applied_index,
                d.hex(),
                d.documents,
                d.indexes_building
            ),
            Err(e) => format!("  node {node}: {e}\n"),
        })
        .collect()
}

/// The members a settled shard must have, or why it is not settled.
fn unsettled(status: &DatabaseStatus, shard: &ShardStatus) -> Option<String> {
    let rf = status.database.replication_factor as usize;
    let members = shard
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Member)
        .count();
    if shard.leader_id.is_none() {
        Some(format!("shard {} has no leader", shard.shard))
    } else if members != rf || shard.replicas.len() != rf {
        Some(format!(
            "shard {} has {members} Members of {} replicas, replication factor {rf}: {:?}",
            shard.shard,
            shard.replicas.len(),
            shard
                .replicas
                .iter()
                .map(|r| (r.node_id, r.state))
                .collect::<Vec<_>>()
        ))
    } else {
        shard
            .replacement
            .as_ref()
            .map(|m| format!("shard {} is replacing a replica: {m:?}", shard.shard))
    }
}

impl Cluster {
    /// The index of the node whose client address is `addr`.
    fn index_by_addr(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.client_addr == addr)
    }

    /// Waits (at most `timeout`) until every shard of `database` has a leader and exactly its
    /// replication factor of replicas, all Members, with no replacement in flight. Panics with
    /// the last status and every node's state otherwise.
    pub async fn wait_settled(&self, database: &str, timeout: Duration) -> DatabaseStatus {
        let deadline = Instant::now() + timeout;
        let client = self.client_with(short_options());
        let started = Instant::now();
        loop {
            let last = match client.database_status(database).await {
                Ok(status) => {
                    let problems: Vec<String> = status
                        .shards
                        .iter()
                        .filter_map(|s| unsettled(&status, s))
                        .collect();
                    if problems.is_empty() && status.is_ready() {
                        progress(format!(
                            "{database} settled in {:.1}s: every shard has a leader and {} Members",
                            started.elapsed().as_secs_f64(),
                            status.database.replication_factor
                        ));
                        return status;
                    }
                    problems.join("; ")
                }
                Err(e) => format!("database status: {e}"),
            };
            if Instant::now() >= deadline {
                panic!(
                    "{database} did not settle within {timeout:?}: {last}\n{}",
                    self.describe()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Compares the replicas of every shard of `database`: waits (bounded) until all of a
    /// shard's replicas report the leader's commit index as applied, with no index building,
    /// then requires their digests to be equal. Call it once the workload is stopped and the
    /// faults healed. Panics naming the shard, nodes, indexes and digests on a mismatch, and
    /// with the last answers when the replicas do not catch up. Returns the replicas compared.
    pub async fn compare_replicas(&self, database: &str) -> usize {
        let client = self.client_with(short_options());
        let status = client
            .database_status(database)
            .await
            .unwrap_or_else(|e| panic!("database status of {database}: {e}\n{}", self.describe()));
        let mut compared = 0;
        for shard in 0..status.shards.len() as u32 {
            compared += self.compare_shard(database, shard).await;
        }
        compared
    }

    async fn compare_shard(&self, database: &str, shard: u32) -> usize {
        let client = self.client_with(short_options());
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let (state, answers) = match client.database_status(database).await {
                Err(e) => (format!("database status: {e}"), vec![]),
                Ok(status) => match status.shards.iter().find(|s| s.shard == shard) {
                    None => (format!("no shard {shard} in the status"), vec![]),
                    Some(s) if s.leader_id.is_none() => ("no leader".to_string(), vec![]),
                    Some(s) => {
                        let answers = self.digests(database, s).await;
                        let commit = s.commit_index;
                        let caught_up = answers.iter().all(|(_, a)| {
                            a.as_ref()
                                .is_ok_and(|d| d.applied_index == commit && d.indexes_building == 0)
                        });
                        if caught_up {
                            let first = answers[0].1.as_ref().map(|d| d.digest.clone()).ok();
                            if answers
                                .iter()
                                .all(|(_, a)| a.as_ref().ok().map(|d| d.digest.clone()) == first)
                            {
                                progress(format!(
                                    "{database} shard {shard}: {} replicas equal at index {commit}",
                                    answers.len()
                                ));
                                return answers.len();
                            }
                            panic!(
                                "REPLICA MISMATCH: {database} shard {shard} (leader node {}, commit \
                                 index {commit}): replicas at the same applied index differ:\n{}",
                                s.leader_id.unwrap_or(0),
                                describe(&answers)
                            );
                        }
                        (format!("leader's commit index {commit}"), answers)
                    }
                },
            };
            if Instant::now() >= deadline {
                panic!(
                    "{database} shard {shard}: replicas did not reach one applied index within \
                     {CATCH_UP:?} ({state}):\n{}\n{}",
                    describe(&answers),
                    self.describe()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every replica's answer, asked of its own node.
    async fn digests(&self, database: &str, shard: &ShardStatus) -> Vec<Answer> {
        let mut out = Vec::new();
        for replica in &shard.replicas {
            let answer = match self.index_by_addr(&replica.client_addr) {
                None => Err(format!("no node at {}", replica.client_addr)),
                Some(i) => self
                    .node_client(i, short_options())
                    .replica_digest(database, shard.shard)
                    .await
                    .map_err(|e| e.to_string()),
            };
            out.push((replica.node_id, answer));
        }
        out
    }
}
