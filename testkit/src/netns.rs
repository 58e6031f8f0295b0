//! A private network of Linux network namespaces, one per node, on which links can be cut:
//! network partitions for processes on one machine.
//!
//! [`Fabric::create`] makes a hub namespace holding a bridge, one namespace per node joined to
//! the bridge by a veth pair (node `i` has address `10.213.S.(i+1)`, where `S` is the fabric's
//! slot), and one veth from the test's own namespace into the bridge (`10.213.S.254`) so that
//! clients reach every node. Links are cut with blackhole routes in both nodes' namespaces, so
//! packets are silently dropped, as in a real partition (no connection refused, no reset).
//! Faults of one direction and lossy links are packet filters (`iptables`) in a node's
//! namespace: a node that drops what comes from some nodes while they still hear it, or that
//! drops a share of every packet it receives, at random. A slow link is a token bucket filter
//! (`tc tbf`) on a node's interface: what it sends leaves at a low rate and waits in a queue,
//! so delay grows with the load (the kernel here has no `netem` for a fixed delay).
//!
//! Creating namespaces needs `CAP_NET_ADMIN` (root) and the `ip` command (iproute2). Slots are
//! taken atomically (the hub namespace's name is the lock), and a slot left behind by a killed
//! test process is reclaimed once its owner is dead. Dropping the fabric removes everything it
//! made.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::command::Cmd;
use crate::error::{Error, Result};
use crate::progress;

/// Slots (and so /24 subnets of 10.213.0.0/16) available to concurrent fabrics.
const SLOTS: u8 = 200;

/// Where each slot's owner writes its process id.
fn owner_file(slot: u8) -> PathBuf {
    std::env::temp_dir().join(format!("flotilla-netns-{slot}.pid"))
}

fn ip() -> Cmd {
    Cmd::new("ip").timeout(Duration::from_secs(20))
}

/// `ip netns exec NS` followed by `args`.
fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    ip().args(["netns", "exec", ns])
        .args(args.iter().copied())
        .output()
        .map(drop)
}

fn hub_name(slot: u8) -> String {
    format!("flt{slot}h")
}

fn node_name(slot: u8, index: usize) -> String {
    format!("flt{slot}n{index}")
}

fn root_link(slot: u8) -> String {
    format!("flt{slot}r")
}

/// The namespaces and links of one cluster's private network.
#[derive(Debug)]
pub struct Fabric {
    slot: u8,
    nodes: usize,
    /// Blocked links, as (lower index, higher index).
    blocked: Vec<(usize, usize)>,
    /// Nodes whose namespace has packet filters (one-way cuts, packet loss).
    filtered: Vec<usize>,
    /// Nodes whose interface is shaped (slow links).
    shaped: Vec<usize>,
}

impl Fabric {
    /// Whether namespaces can be made here (root with `CAP_NET_ADMIN` and `ip`): `Err` says why
    /// not.
    pub fn available() -> Result<()> {
        static PROBE: std::sync::OnceLock<std::result::Result<(), String>> =
            std::sync::OnceLock::new();
        PROBE
            .get_or_init(|| {
                let name = format!("flt-probe-{}", std::process::id());
                let made = ip().args(["netns", "add", &name]).output();
                let _ = ip().args(["netns", "del", &name]).output();
                made.map(drop).map_err(|e| {
                    format!("network namespaces cannot be made here (needs root and iproute2): {e}")
                })
            })
            .clone()
            .map_err(Error::Unavailable)
    }

    /// A network for `nodes` nodes (at most 250), every link up.
    pub fn create(nodes: usize) -> Result<Fabric> {
        Fabric::available()?;
        if nodes == 0 || nodes > 250 {
            return Err(Error::Parse(format!(
                "a fabric has 1 to 250 nodes, not {nodes}"
            )));
        }
        for slot in 0..SLOTS {
            if ip()
                .args(["netns", "add", &hub_name(slot)])
                .output()
                .is_err()
            {
                if owner_dead(slot) {
                    progress(format!(
                        "reclaiming network slot {slot} of a dead test process"
                    ));
                    remove_slot(slot);
                    if ip()
                        .args(["netns", "add", &hub_name(slot)])
                        .output()
                        .is_err()
                    {
                        continue;
                    }
                } else {
                    continue;
                }
            }
            let _ = std::fs::write(owner_file(slot), std::process::id().to_string());
            // From here on, dropping the fabric removes what was made.
            let fabric = Fabric {
                slot,
                nodes,
                blocked: Vec::new(),
                filtered: Vec::new(),
                shaped: Vec::new(),
            };
            fabric.build()?;
            progress(format!(
                "network fabric 10.213.{slot}.0/24 with {nodes} node namespaces ready"
            ));
            return Ok(fabric);
        }
        Err(Error::Unavailable("every network slot is in use".into()))
    }

    fn build(&self) -> Result<()> {
        let slot = self.slot;
        let hub = hub_name(slot);
        in_ns(&hub, &["ip", "link", "set", "lo", "up"])?;
        in_ns(&hub, &["ip", "link", "add", "br0", "type", "bridge"])?;
        in_ns(&hub, &["ip", "link", "set", "br0", "up"])?;
        // The test's own side.
        let root = root_link(slot);
        ip().args(["link", "add", &root, "type", "veth", "peer", "name", "up0"])
            .args(["netns", &hub])
            .output()?;
        ip().args([
            "addr",
            "add",
            &format!("{}/24", self.host_addr()),
            "dev",
            &root,
        ])
        .output()?;
        ip().args(["link", "set", &root, "up"]).output()?;
        in_ns(&hub, &["ip", "link", "set", "up0", "master", "br0", "up"])?;
        for i in 0..self.nodes {
            let ns = node_name(slot, i);
            ip().args(["netns", "add", &ns]).output()?;
            let port = format!("p{i}");
            in_ns(
                &hub,
                &[
                    "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                ],
            )?;
            in_ns(&hub, &["ip", "link", "set", "eth0", "netns", &ns])?;
            in_ns(&hub, &["ip", "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.addr(i));
            in_ns(&ns, &["ip", "addr", "add", &addr, "dev", "eth0"])?;
            in_ns(&ns, &["ip", "link", "set", "eth0", "up"])?;
            in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The address of node `i`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.slot, (i + 1) as u8)
    }

    /// The test process's own address on the fabric.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.slot, 254)
    }

    /// The namespace node `i` runs in.
    pub fn namespace(&self, i: usize) -> String {
        node_name(self.slot, i)
    }

    pub fn len(&self) -> usize {
        self.nodes
    }

    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }

    /// Cuts the link between nodes `a` and `b` (both directions).
    pub fn block(&mut self, a: usize, b: usize) -> Result<()> {
        let link = (a.min(b), a.max(b));
        if a == b || self.blocked.contains(&link) {
            return Ok(());
        }
        for (from, to) in [(a, b), (b, a)] {
            let route = format!("{}/32", self.addr(to));
            in_ns(
                &self.namespace(from),
                &["ip", "route", "add", "blackhole", &route],
            )?;
        }
        self.blocked.push(link);
        Ok(())
    }

    /// Splits the nodes into `groups`: links inside a group stay up, links between groups are
    /// cut. A node in no group is cut off from every node.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<()> {
        self.heal()?;
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for a in 0..self.nodes {
            for b in (a + 1)..self.nodes {
                let same = matches!((group_of(a), group_of(b)), (Some(x), Some(y)) if x == y);
                if !same {
                    self.block(a, b)?;
                }
            }
        }
        progress(format!("network partitioned: {groups:?} (others isolated)"));
        Ok(())
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&mut self, i: usize) -> Result<()> {
        for j in 0..self.nodes {
            self.block(i, j)?;
        }
        progress(format!("network: node {i} isolated"));
        Ok(())
    }

    /// Node `deaf` drops every packet from each node of `from`, which still receive what it
    /// sends: a one-way cut (over TCP its connections with them stall rather than break at
    /// once: what it sends goes out, and the answers never come back).
    pub fn deafen(&mut self, deaf: usize, from: &[usize]) -> Result<()> {
        for &f in from.iter().filter(|&&f| f != deaf) {
            let source = self.addr(f).to_string();
            self.filter(deaf, &["-A", "INPUT", "-s", &source, "-j", "DROP"])?;
        }
        progress(format!("network: node {deaf} hears nothing from {from:?}"));
        Ok(())
    }

    /// Node `i` drops `percent` % of the packets it receives, each at random.
    pub fn lossy(&mut self, i: usize, percent: u8) -> Result<()> {
        let probability = format!("{:.2}", f64::from(percent.min(100)) / 100.0);
        self.filter(
            i,
            &[
                "-A",
                "INPUT",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
        )?;
        progress(format!(
            "network: node {i} loses {percent}% of what it receives"
        ));
        Ok(())
    }

    /// What node `i` sends leaves at `kbit` kbit/s, through a queue that holds up to
    /// `queue_ms` milliseconds of it (beyond that, packets are dropped): a slow, congested link
    /// whose delay grows with the traffic.
    pub fn slow_link(&mut self, i: usize, kbit: u32, queue_ms: u32) -> Result<()> {
        let rate = format!("{}kbit", kbit.max(8));
        let latency = format!("{}ms", queue_ms.max(1));
        in_ns(
            &self.namespace(i),
            &[
                "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &rate, "burst",
                "16kb", "latency", &latency,
            ],
        )?;
        if !self.shaped.contains(&i) {
            self.shaped.push(i);
        }
        progress(format!(
            "network: node {i} sends at {kbit} kbit/s (queue up to {queue_ms} ms)"
        ));
        Ok(())
    }

    /// How many packets node `i`'s slow link has held back so far (the shaper's overlimits):
    /// proof that the link was slower than the traffic it carried.
    pub fn held_back(&self, i: usize) -> Result<u64> {
        let stats = ip()
            .args(["netns", "exec", &self.namespace(i)])
            .args(["tc", "-s", "qdisc", "show", "dev", "eth0", "root"])
            .output()?;
        stats
            .split([',', '(', ')'])
            .find_map(|part| part.trim().strip_prefix("overlimits "))
            .and_then(|n| n.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| Error::Parse(format!("no overlimits in the qdisc statistics: {stats}")))
    }

    /// A non-transitive partition: `left` and `right` cannot reach each other, and `bridge`
    /// reaches both (Jepsen's bridge).
    pub fn bridge(&mut self, left: &[usize], bridge: usize, right: &[usize]) -> Result<()> {
        self.heal()?;
        for &a in left {
            for &b in right {
                if a != bridge && b != bridge {
                    self.block(a, b)?;
                }
            }
        }
        progress(format!(
            "network: {left:?} and {right:?} cut apart, node {bridge} reaches both"
        ));
        Ok(())
    }

    /// Adds a packet filter rule to node `i`'s namespace.
    fn filter(&mut self, i: usize, rule: &[&str]) -> Result<()> {
        let mut args = vec!["iptables", "-w"];
        args.extend_from_slice(rule);
        in_ns(&self.namespace(i), &args)?;
        if !self.filtered.contains(&i) {
            self.filtered.push(i);
        }
        Ok(())
    }

    /// Restores every link.
    pub fn heal(&mut self) -> Result<()> {
        for i in std::mem::take(&mut self.shaped) {
            in_ns(
                &self.namespace(i),
                &["tc", "qdisc", "del", "dev", "eth0", "root"],
            )?;
        }
        for i in std::mem::take(&mut self.filtered) {
            in_ns(&self.namespace(i), &["iptables", "-w", "-F", "INPUT"])?;
        }
        for (a, b) in std::mem::take(&mut self.blocked) {
            for (from, to) in [(a, b), (b, a)] {
                let route = format!("{}/32", self.addr(to));
                in_ns(
                    &self.namespace(from),
                    &["ip", "route", "del", "blackhole", &route],
                )?;
            }
        }
        Ok(())
    }

    /// The links that are cut.
    pub fn blocked(&self) -> &[(usize, usize)] {
        &self.blocked
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        remove_slot(self.slot);
    }
}

/// True when the slot's owner file names a process that no longer runs.
fn owner_dead(slot: u8) -> bool {
    let Ok(text) = std::fs::read_to_string(owner_file(slot)) else {
        return false;
    };
    match text.trim().parse::<i32>() {
        Ok(pid) => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                == Err(nix::errno::Errno::ESRCH)
        }
        Err(_) => false,
    }
}

/// Removes a slot's namespaces (their links go with them) and its owner file.
fn remove_slot(slot: u8) {
    let prefix = format!("flt{slot}n");
    let list = ip().args(["netns", "list"]).output().unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if name
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.parse::<usize>().is_ok())
        {
            let _ = ip().args(["netns", "del", name]).output();
        }
    }
    let _ = ip().args(["link", "del", &root_link(slot)]).output();
    let _ = ip().args(["netns", "del", &hub_name(slot)]).output();
    let _ = std::fs::remove_file(owner_file(slot));
}
