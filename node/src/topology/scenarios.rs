//! Data-driven scenarios: each `scenarios/*.txt` file is a small script run through the
//! simulator. Lines (`#` starts a comment):
//!
//! - `nodes 1 2 3` registers nodes (up; the first three are meta voters), `label 4 zone=a`,
//!   `down 3`, `up 3`, `drain 2`, `behind 2 5000` (entries behind in every group);
//! - `db NAME rf=3 replace_after=300|off rebalance=on|off require=zone=a` creates a database
//!   policy (or changes it), `shard NAME 1:M 2:M 3:R` adds a shard (`M` Member, `P`
//!   Promotable, `R` Rehab), `rebalance` requests a cluster rebalance, `meta-replace-after 3600`
//!   sets when a silent meta voter is replaced;
//! - `wait 60` lets seconds pass, `tick` decides and applies once; the lines after it that start
//!   with `>` are the changes expected from that tick, in order (none: nothing expected);
//!   `settle` ticks every 10 s until nothing happens for 1000 s;
//! - `replicas NAME/0 1:M 2:M 5:M` and `meta-voters 1 2 4` check the state.

use std::time::Duration;

use super::sim::Sim;
use super::*;
use crate::types::{GroupId, NodeId};

const T0: Duration = Duration::from_secs(1_000_000);

fn state(s: &str) -> ReplicaState {
    match s {
        "M" => ReplicaState::Member,
        "P" => ReplicaState::Promotable,
        "R" => ReplicaState::Rehab,
        other => panic!("unknown replica state {other}"),
    }
}

fn replica(s: &str) -> (NodeId, ReplicaState) {
    let (n, st) = s.split_once(':').unwrap_or((s, "M"));
    (n.parse().expect("node id"), state(st))
}

fn nodes(args: &[&str]) -> Vec<NodeId> {
    args.iter().map(|a| a.parse().expect("node id")).collect()
}

struct Script {
    sim: Sim,
    next_group: GroupId,
}

impl Script {
    fn new() -> Self {
        let mut sim = Sim::new(
            Topology::default(),
            Policy::default(),
            Default::default(),
            T0,
        );
        sim.policy.default_database.replace_after = Some(Duration::from_secs(300));
        Script { sim, next_group: 1 }
    }

    fn db(&mut self, name: &str, args: &[&str]) {
        let mut pol = self
            .sim
            .policy
            .databases
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.sim.policy.default_database.clone());
        for a in args {
            let (k, v) = a.split_once('=').expect("key=value");
            match k {
                "rf" => pol.replication_factor = v.parse().expect("rf"),
                "replace_after" if v == "off" => pol.replace_after = None,
                "replace_after" => {
                    pol.replace_after = Some(Duration::from_secs(v.parse().expect("secs")))
                }
                "rebalance" => pol.rebalance = v == "on",
                "require" => {
                    let (lk, lv) = v.split_once('=').expect("label=value");
                    pol.required_labels.insert(lk.into(), lv.into());
                }
                other => panic!("unknown db setting {other}"),
            }
        }
        self.sim.policy.databases.insert(name.into(), pol);
        self.sim.topo.databases.entry(name.into()).or_default();
    }

    fn shard_view(&self, name: &str) -> &ShardView {
        let (db, i) = name.split_once('/').expect("db/index");
        &self.sim.topo.databases[db].shards[i.parse::<usize>().expect("index")]
    }

    /// Runs one line; `expected` holds the `>` lines that follow a `tick`.
    fn line(&mut self, cmd: &str, args: &[&str], expected: &[String]) -> Result<(), String> {
        let sim = &mut self.sim;
        match cmd {
            "nodes" => {
                for n in nodes(args) {
                    sim.topo.nodes.insert(n, NodeView::default());
                    if sim.topo.meta.voters.len() < 3 {
                        sim.topo.meta.voters.insert(n);
                    } else {
                        sim.topo.meta.learners.insert(n);
                    }
                    sim.up.insert(n);
                    sim.last_seen.insert(n, sim.now);
                }
            }
            "label" => {
                let (k, v) = args[1].split_once('=').expect("label=value");
                let n = nodes(&args[..1])[0];
                let node = sim.topo.nodes.get_mut(&n).expect("registered node");
                node.labels.insert(k.into(), v.into());
            }
            "down" => nodes(args).iter().for_each(|n| {
                sim.up.remove(n);
            }),
            "up" => nodes(args).iter().for_each(|n| {
                sim.up.insert(*n);
            }),
            "drain" => {
                for n in nodes(args) {
                    sim.topo
                        .nodes
                        .get_mut(&n)
                        .expect("registered node")
                        .draining = true;
                }
            }
            "behind" => {
                let n = nodes(&args[..1])[0];
                match args[1].parse::<u64>().expect("entries") {
                    0 => sim.behind.remove(&n),
                    e => sim.behind.insert(n, e),
                };
            }
            "db" => self.db(args[0], &args[1..]),
            "shard" => {
                let replicas = args[1..]
                    .iter()
                    .map(|a| {
                        let (node, state) = replica(a);
                        Replica {
                            node,
                            state,
                            since: sim.now,
                        }
                    })
                    .collect();
                let db = sim.topo.databases.entry(args[0].into()).or_default();
                db.shards.push(ShardView {
                    group: self.next_group,
                    replicas,
                    replacement: None,
                });
                self.next_group += 1;
            }
            "rebalance" => sim.policy.rebalance_requested = true,
            "meta-replace-after" => {
                sim.policy.meta_replace_after = Duration::from_secs(args[0].parse().expect("secs"))
            }
            "wait" => sim.now += Duration::from_secs(args[0].parse().expect("seconds")),
            "tick" => {
                let got: Vec<String> = sim
                    .tick(Duration::ZERO)?
                    .iter()
                    .map(|a| a.change.to_string())
                    .collect();
                if got != expected {
                    return Err(format!("expected {expected:#?}\ngot {got:#?}"));
                }
            }
            "settle" => {
                sim.run_to_fixed_point(Duration::from_secs(10), 2_000, 100)?;
            }
            "replicas" => {
                let mut want: Vec<(NodeId, ReplicaState)> =
                    args[1..].iter().map(|a| replica(a)).collect();
                want.sort();
                let mut got: Vec<(NodeId, ReplicaState)> = self
                    .shard_view(args[0])
                    .replicas
                    .iter()
                    .map(|r| (r.node, r.state))
                    .collect();
                got.sort();
                if got != want {
                    return Err(format!(
                        "replicas of {}: expected {want:?}, got {got:?}",
                        args[0]
                    ));
                }
            }
            "meta-voters" => {
                let want: Vec<NodeId> = nodes(args);
                let got: Vec<NodeId> = sim.topo.meta.voters.iter().copied().collect();
                if got != want {
                    return Err(format!("meta voters: expected {want:?}, got {got:?}"));
                }
            }
            other => return Err(format!("unknown command {other}")),
        }
        Ok(())
    }
}

fn run_script(name: &str, text: &str) {
    let mut script = Script::new();
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let mut i = 0;
    while i < lines.len() {
        let (no, line) = lines[i];
        i += 1;
        if line.starts_with('>') {
            panic!("{name}:{no}: an expected change outside a tick");
        }
        let mut expected = Vec::new();
        while i < lines.len() && lines[i].1.starts_with('>') {
            expected.push(lines[i].1[1..].trim().to_string());
            i += 1;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Err(e) = script.line(words[0], &words[1..], &expected) {
            panic!("{name}:{no}: `{line}`: {e}");
        }
    }
}

#[test]
fn scenarios() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/topology/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("scenario directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios in {}", dir.display());
    for path in &files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let text = std::fs::read_to_string(path).expect("readable scenario");
        run_script(&name, &text);
    }
}
