//! `flotilla cluster`: membership, the meta group, topology events, rebalancing, labels,
//! leadership, and rebuilding a damaged node ([`rebuild`]).

mod rebuild;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use flotilla_client::{Client, Group, RemoveNodeProgress};

use crate::print;
use crate::render::{self, Output};

/// How long `cluster remove-node` and `cluster rebuild-node` wait for the node's replicas to
/// move off it.
const REMOVE_NODE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every node with its meta role and health, and the meta leader.
    Status,
    /// Remove a node from the cluster (its replicas are moved off first).
    RemoveNode {
        /// The node's id (see `cluster status`).
        id: u64,
    },
    /// Replace every replica of a damaged node with a fresh copy made from its peers, then
    /// take the node out of the cluster (its id is never used again). Leadership moves off it
    /// first; each shard gets its new copy before the old one goes, so no shard drops below
    /// its replication factor. When every other node already holds its shards, start the node
    /// again with an empty data directory first (it joins as a new node) or add a node.
    /// Shows progress per shard; running it again resumes.
    RebuildNode {
        /// The damaged node's id (see `cluster status`).
        id: u64,
        /// Longest wait for the copies.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Topology transitions (replicas added, promoted, in rehab, replaced, removed).
    Events {
        /// Keep following new events.
        #[arg(long)]
        follow: bool,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Move replicas until every node holds within one replica of the others (each move adds a
    /// Promotable, promotes it, then removes the old replica); shows progress until done.
    Rebalance {
        /// Only ask for it; do not wait until it is done.
        #[arg(long)]
        no_wait: bool,
        /// Longest wait for the rebalance to finish.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
    },
    /// Assign placement labels to a node (on top of its --labels); none clears them.
    Label {
        /// The node's id.
        id: u64,
        /// Labels, `key=value`.
        #[arg(value_parser = crate::parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Hand the leadership of the meta group, or of one shard, to a node.
    TransferLeadership {
        /// The node id of the new leader.
        #[arg(long)]
        to: u64,
        /// Transfer the leadership of a shard of this database instead of the meta group.
        #[arg(long, requires = "shard")]
        database: Option<String>,
        /// The shard (with --database).
        #[arg(long, requires = "database")]
        shard: Option<u32>,
    },
}

pub async fn run(client: &Client, command: ClusterCommand, out: Output) -> Result<()> {
    match command {
        ClusterCommand::Status => {
            let status = client.cluster_status().await?;
            print(&render::cluster_status(&status, out))
        }
        ClusterCommand::Events { follow, after } => {
            use futures::StreamExt;
            let mut events = client.cluster_events(follow, after).await?;
            while let Some(event) = events.next().await {
                print(&render::cluster_event(&event?, out))?;
            }
            Ok(())
        }
        ClusterCommand::RemoveNode { id } => {
            // The node's replicas move first; every answer says how far that has come.
            let steps = client
                .remove_node_until_done(id, REMOVE_NODE_TIMEOUT, |step| {
                    if !matches!(step, RemoveNodeProgress::Removed { .. }) {
                        eprintln!("node {id}: {step}");
                    }
                })
                .await
                .with_context(|| format!("removing node {id}"))?;
            print(&render::node_removed(id, &steps, out))
        }
        ClusterCommand::RebuildNode { id, timeout } => {
            let steps = rebuild::rebuild(client, id, timeout).await?;
            let mut lines = vec![format!(
                "every replica of node {id} was replaced by a fresh copy; its data directory may be deleted"
            )];
            lines.extend(steps);
            print(&render::node_removed(id, &lines, out))
        }
        ClusterCommand::Label { id, labels } => {
            let labels = labels.into_iter().collect();
            let now = client
                .assign_labels(id, &labels)
                .await
                .with_context(|| format!("labelling node {id}"))?;
            let text = now
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            print(&render::steps(
                &format!(
                    "node {id} labels: {}",
                    if text.is_empty() { "-" } else { &text }
                ),
                &[],
                out,
            ))
        }
        ClusterCommand::Rebalance {
            no_wait,
            wait_timeout,
        } => {
            let steps = client.rebalance().await.context("requesting a rebalance")?;
            print(&render::steps("rebalance requested", &steps, out))?;
            if no_wait {
                return Ok(());
            }
            let deadline = tokio::time::Instant::now() + wait_timeout;
            let mut last = String::new();
            loop {
                let status = client.cluster_status().await?;
                let mut nodes: Vec<_> = status.nodes.iter().filter(|n| !n.draining).collect();
                nodes.sort_by_key(|n| n.id);
                let counts = nodes
                    .iter()
                    .map(|n| format!("{}: {}", n.id, n.replicas))
                    .collect::<Vec<_>>()
                    .join(", ");
                if counts != last {
                    eprintln!("replicas per node: {counts}");
                    last = counts;
                }
                if !status.rebalancing {
                    return print(&render::steps("rebalance finished", &[last], out));
                }
                if tokio::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "the rebalance is still running after {wait_timeout:?}; follow it with `flotilla cluster status`"
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        ClusterCommand::TransferLeadership {
            to,
            database,
            shard,
        } => {
            let group = match (database, shard) {
                (Some(database), Some(shard)) => Group::Shard { database, shard },
                _ => Group::Meta,
            };
            let leader = client
                .transfer_leadership(group.clone(), to)
                .await
                .with_context(|| format!("transferring leadership to node {to}"))?;
            print(&render::leadership_transferred(&group, leader, out))
        }
    }
}
