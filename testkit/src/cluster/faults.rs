//! Faults between the nodes of a [`Cluster`] on namespaces: cutting links and healing them, and
//! asking who leads a shard with a short deadline (a node cut off must not hold up the question).

use std::time::Duration;

use flotilla_client::{Client, ClientOptions};

use super::{Cluster, SLOW_SYNC};
use crate::error::{Error, Result};
use crate::netns::Fabric;
use crate::progress;

impl Cluster {
    fn fabric(&mut self) -> Result<&mut Fabric> {
        self.fabric.as_mut().ok_or_else(|| {
            Error::Unavailable("partitions need the nodes in network namespaces".into())
        })
    }

    /// Cuts node `i` off from every other node (clients still reach it).
    pub fn isolate(&mut self, i: usize) -> Result<()> {
        self.fabric()?.isolate(i)?;
        self.nodes[i].note("isolated from the other nodes");
        Ok(())
    }

    /// Splits the nodes into `groups` (a node in none is isolated).
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<()> {
        self.fabric()?.partition(groups)?;
        for node in &self.nodes {
            node.note(&format!("network partitioned: {groups:?}"));
        }
        Ok(())
    }

    /// Node `i` drops every packet from the other nodes, which still hear it (a one-way cut).
    pub fn deafen(&mut self, i: usize) -> Result<()> {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|&j| j != i).collect();
        self.fabric()?.deafen(i, &others)?;
        self.nodes[i].note("hears nothing from the other nodes (they still hear it)");
        Ok(())
    }

    /// Node `i` loses `percent` % of the packets it receives.
    pub fn lossy(&mut self, i: usize, percent: u8) -> Result<()> {
        self.fabric()?.lossy(i, percent)?;
        self.nodes[i].note(&format!("loses {percent}% of the packets it receives"));
        Ok(())
    }

    /// What node `i` sends leaves at `kbit` kbit/s through a queue of up to 400 ms: a slow,
    /// congested link (delay grows with the traffic).
    pub fn slow_link(&mut self, i: usize, kbit: u32) -> Result<()> {
        self.fabric()?.slow_link(i, kbit, 400)?;
        self.nodes[i].note(&format!("sends at {kbit} kbit/s"));
        Ok(())
    }

    /// How many packets node `i`'s slow link has held back so far.
    pub fn held_back(&mut self, i: usize) -> Result<u64> {
        self.fabric()?.held_back(i)
    }

    /// Cuts `left` and `right` apart while `bridge` reaches both (a non-transitive partition).
    pub fn bridge(&mut self, left: &[usize], bridge: usize, right: &[usize]) -> Result<()> {
        self.fabric()?.bridge(left, bridge, right)?;
        for node in &self.nodes {
            node.note(&format!(
                "network: {left:?} and {right:?} apart, bridged by node {bridge}"
            ));
        }
        Ok(())
    }

    /// Each sync of node `i`'s database files takes `ms` milliseconds longer, until
    /// [`Cluster::heal_all`]. The node must run with `--test-storage-faults` (else nothing
    /// would slow it, and the fault would pass unnoticed: refused).
    pub fn slow_disk(&mut self, i: usize, ms: u32) -> Result<()> {
        if !self
            .options
            .extra_args
            .iter()
            .any(|a| a == "--test-storage-faults")
        {
            return Err(Error::Unavailable(
                "a slow disk needs the nodes started with --test-storage-faults".into(),
            ));
        }
        let trigger = self.nodes[i].data_dir.join(SLOW_SYNC);
        std::fs::write(&trigger, ms.to_string())
            .map_err(|e| Error::Unavailable(format!("{}: {e}", trigger.display())))?;
        self.nodes[i].note(&format!("each sync takes {ms} ms longer"));
        Ok(())
    }

    /// Ends every slow disk.
    fn speed_up_disks(&self) {
        for node in &self.nodes {
            let trigger = node.data_dir.join(SLOW_SYNC);
            if trigger.exists() && std::fs::remove_file(&trigger).is_ok() {
                node.note("syncs at full speed again");
            }
        }
    }

    /// Restores every link (a no-op on 127.0.0.1).
    pub fn heal(&mut self) -> Result<()> {
        if let Some(fabric) = self.fabric.as_mut() {
            fabric.heal()?;
            for node in &self.nodes {
                node.note("network healed");
            }
            progress("network healed");
        }
        Ok(())
    }

    /// Heals the network, resumes frozen nodes and starts stopped ones.
    pub fn heal_all(&mut self) -> Result<()> {
        self.heal()?;
        self.speed_up_disks();
        for i in 0..self.nodes.len() {
            if self.nodes[i].frozen {
                self.sigcont(i);
            }
            if !self.nodes[i].is_running() {
                self.nodes[i].child = None;
                self.restart(i);
            }
        }
        Ok(())
    }

    /// The index of the leader of `shard` of `database` as node `node` sees it (an isolated
    /// old leader may still believe it leads: ask a node of the majority), asked with a short
    /// deadline.
    pub async fn shard_leader_seen_by(
        &self,
        database: &str,
        shard: u32,
        node: usize,
    ) -> Option<usize> {
        self.probe_shard_leader_by(database, shard, vec![self.nodes[node].endpoint()])
            .await
    }

    /// The index of the leader of `shard` of `database` as any node reports it, asked with a
    /// short deadline (for polling while nodes are down, frozen or cut off).
    pub async fn probe_shard_leader(&self, database: &str, shard: u32) -> Option<usize> {
        self.probe_shard_leader_by(database, shard, self.endpoints())
            .await
    }

    async fn probe_shard_leader_by(
        &self,
        database: &str,
        shard: u32,
        endpoints: Vec<String>,
    ) -> Option<usize> {
        let options = ClientOptions {
            total_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        };
        let status = Client::with_options(endpoints, options)
            .ok()?
            .database_status(database)
            .await
            .ok()?;
        let leader = status.shards.iter().find(|s| s.shard == shard)?.leader()?;
        self.nodes
            .iter()
            .position(|n| n.client_addr == leader.client_addr)
    }
}
