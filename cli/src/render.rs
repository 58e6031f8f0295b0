//! What the `flotilla` command prints: pure functions from the client's result types to text,
//! as aligned tables (`-o table`) or one JSON object per line (`-o json`).

use flotilla_client::{
    ClusterEvent, ClusterStatus, DatabaseInfo, DatabaseStatus, DeleteResult, Document, Group,
    PutResult, WatchEvent,
};
use serde_json::{Value, json};

use crate::table::Table;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON object per result, one per line.
    Json,
}

/// One JSON value as a line.
fn line(value: &Value) -> String {
    format!("{value}\n")
}

/// One JSON line per value.
fn lines(values: impl IntoIterator<Item = Value>) -> String {
    values.into_iter().map(|v| line(&v)).collect()
}

/// A serializable value as JSON (the client's types always serialize).
fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A document body as a JSON value; text that is not JSON stays a string.
fn body(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_string()))
}

/// A document body as compact JSON text.
fn compact(json: &str) -> String {
    match serde_json::from_str::<Value>(json) {
        Ok(v) => v.to_string(),
        Err(_) => json.to_string(),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `zone=a,disk=ssd`, or `-`.
fn labels(l: &std::collections::BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A byte count for people: `512 B`, `1.5 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// How far a replica is: for a Promotable its catch-up progress; for a replica whose group
/// stopped on its node, why.
fn progress(r: &flotilla_client::ReplicaStatus) -> String {
    if let Some(why) = &r.stopped {
        return format!("stopped: {why}");
    }
    match r.state {
        flotilla_client::ReplicaState::Promotable if r.snapshot_bytes_sent > 0 => format!(
            "{} behind, snapshot {} sent",
            r.lag,
            bytes(r.snapshot_bytes_sent)
        ),
        flotilla_client::ReplicaState::Promotable => format!("{} behind", r.lag),
        _ => "-".into(),
    }
}

/// What `cluster status` says of a cluster without auth.
pub const AUTH_DISABLED: &str = "WARNING: auth is disabled: whoever reaches a node may read, write \
     and administer everything (add a user with the role root, then `flotilla auth enable`)";

pub fn cluster_status(status: &ClusterStatus, output: Output) -> String {
    match output {
        Output::Json => {
            let leader = status
                .meta_leader()
                .map(|n| json!({"id": n.id, "name": n.name, "client_addr": n.client_addr}));
            let mut value = to_json(status);
            value["meta_leader"] = leader.unwrap_or(Value::Null);
            line(&value)
        }
        Output::Table => {
            let leader = match (status.meta_leader(), status.meta_leader_id) {
                (Some(n), _) => format!("{} (id {})", n.name, n.id),
                (None, Some(id)) => format!("id {id}"),
                (None, None) => "none".to_string(),
            };
            let mut out = format!(
                "cluster {}   meta leader: {}   term: {}{}\n",
                status.cluster_id,
                leader,
                status.meta_term,
                if status.rebalancing {
                    "   rebalancing"
                } else {
                    ""
                }
            );
            if !status.auth_enabled {
                out.push_str(AUTH_DISABLED);
                out.push('\n');
            }
            out.push('\n');
            let mut t = Table::new([
                "ID",
                "NAME",
                "CLIENT ADDRESS",
                "META ROLE",
                "HEALTH",
                "LAG",
                "REPLICAS",
                "LABELS",
            ]);
            let mut nodes: Vec<_> = status.nodes.iter().collect();
            nodes.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
            for n in nodes {
                t.row([
                    n.id.to_string(),
                    n.name.clone(),
                    n.client_addr.clone(),
                    n.meta_role.to_string(),
                    if n.draining {
                        format!("{} (draining)", n.health)
                    } else {
                        n.health.to_string()
                    },
                    n.lag.to_string(),
                    n.replicas.to_string(),
                    labels(&n.labels),
                ]);
            }
            out.push_str(&t.render());
            out
        }
    }
}

pub fn database_status(status: &DatabaseStatus, output: Output) -> String {
    match output {
        Output::Json => line(&to_json(status)),
        Output::Table => {
            let db = &status.database;
            let mut out = format!(
                "database {}   shards: {}   replication factor: {}   shards with a leader: {}/{}\n\
                 replace after: {}   placement: {}   auto rebalance: {}\n\n",
                db.name,
                db.shards,
                db.replication_factor,
                status.shards_with_leader(),
                status.shards.len(),
                db.replace_after,
                labels(&db.placement),
                if db.auto_rebalance { "on" } else { "off" }
            );
            let mut t = Table::new([
                "SHARD",
                "LEADER",
                "TERM",
                "COMMIT",
                "NODE",
                "CLIENT ADDRESS",
                "ROLE",
                "STATE",
                "LAG",
                "PROGRESS",
            ]);
            for s in &status.shards {
                if s.replicas.is_empty() {
                    t.row([
                        s.shard.to_string(),
                        opt(s.leader_id),
                        s.term.to_string(),
                        s.commit_index.to_string(),
                    ]);
                }
                for r in &s.replicas {
                    let role = if Some(r.node_id) == s.leader_id {
                        "leader"
                    } else {
                        "follower"
                    };
                    t.row([
                        s.shard.to_string(),
                        opt(s.leader_id),
                        s.term.to_string(),
                        s.commit_index.to_string(),
                        r.node_id.to_string(),
                        r.client_addr.clone(),
                        role.to_string(),
                        r.state.name().to_string(),
                        r.lag.to_string(),
                        progress(r),
                    ]);
                }
            }
            out.push_str(&t.render());
            for s in &status.shards {
                if let Some(m) = s.replacement {
                    out.push_str(&format!(
                        "shard {}: node {} is taking the place of node {}\n",
                        s.shard, m.new, m.old
                    ));
                }
            }
            out
        }
    }
}

pub fn databases(dbs: &[DatabaseInfo], output: Output) -> String {
    match output {
        Output::Json => lines(dbs.iter().map(to_json)),
        Output::Table => {
            let mut t = Table::new([
                "NAME",
                "SHARDS",
                "REPLICATION FACTOR",
                "REPLACE AFTER",
                "PLACEMENT",
                "AUTO REBALANCE",
            ]);
            for d in dbs {
                t.row([
                    d.name.clone(),
                    d.shards.to_string(),
                    d.replication_factor.to_string(),
                    d.replace_after.clone(),
                    labels(&d.placement),
                    if d.auto_rebalance { "on" } else { "off" }.to_string(),
                ]);
            }
            t.render()
        }
    }
}

/// A database just created (and, unless `status` is `None`, ready).
pub fn database_created(
    info: &DatabaseInfo,
    status: Option<&DatabaseStatus>,
    output: Output,
) -> String {
    match output {
        Output::Json => {
            let mut value = to_json(info);
            value["ready"] = Value::Bool(status.is_some_and(DatabaseStatus::is_ready));
            line(&value)
        }
        Output::Table => {
            let ready = match status {
                Some(s) if s.is_ready() => ", every shard has a leader",
                _ => "",
            };
            format!(
                "database {} created: {} shard(s), replication factor {}{ready}\n",
                info.name, info.shards, info.replication_factor
            )
        }
    }
}

pub fn database_dropped(name: &str, output: Output) -> String {
    match output {
        Output::Json => line(&json!({"name": name, "dropped": true})),
        Output::Table => format!("database {name} dropped\n"),
    }
}

fn document_json(d: &Document) -> Value {
    json!({
        "collection": d.collection,
        "id": d.id,
        "version": d.version,
        "revision": d.revision,
        "shard": d.shard,
        "value": body(&d.json),
    })
}

const DOCUMENT_HEADERS: [&str; 6] = ["COLLECTION", "ID", "VERSION", "REVISION", "SHARD", "VALUE"];

fn document_row(d: &Document) -> [String; 6] {
    [
        d.collection.clone(),
        d.id.clone(),
        d.version.to_string(),
        d.revision.to_string(),
        d.shard.to_string(),
        compact(&d.json),
    ]
}

/// Documents, as a table or one JSON object per document.
pub fn documents(docs: &[Document], output: Output) -> String {
    match output {
        Output::Json => lines(docs.iter().map(document_json)),
        Output::Table => {
            let mut t = Table::new(DOCUMENT_HEADERS);
            for d in docs {
                t.row(document_row(d));
            }
            t.render()
        }
    }
}

pub fn put_result(collection: &str, id: &str, r: &PutResult, output: Output) -> String {
    match output {
        Output::Json => line(&json!({
            "collection": collection,
            "id": id,
            "version": r.version,
            "revision": r.revision,
            "shard": r.shard,
        })),
        Output::Table => format!(
            "{collection}/{id} written: version {}, revision {}, shard {}\n",
            r.version, r.revision, r.shard
        ),
    }
}

pub fn delete_result(collection: &str, id: &str, r: &DeleteResult, output: Output) -> String {
    match output {
        Output::Json => line(&json!({
            "collection": collection,
            "id": id,
            "deleted": r.deleted,
            "revision": r.revision,
        })),
        Output::Table if r.deleted => {
            format!("{collection}/{id} deleted (revision {})\n", r.revision)
        }
        Output::Table => format!("{collection}/{id} did not exist\n"),
    }
}

/// Column widths of the watch table: rows are printed as they arrive, so the widths are fixed.
const WATCH_WIDTHS: [usize; 6] = [10, 6, 5, 16, 24, 7];
const WATCH_HEADERS: [&str; 7] = [
    "REVISION",
    "TYPE",
    "SHARD",
    "COLLECTION",
    "ID",
    "VERSION",
    "VALUE",
];

fn fixed_row(cells: &[String]) -> String {
    let mut text = String::new();
    for (i, cell) in cells.iter().enumerate() {
        text.push_str(cell);
        if let Some(w) = WATCH_WIDTHS.get(i) {
            let pad = w.saturating_sub(cell.chars().count()) + 3;
            text.extend(std::iter::repeat_n(' ', pad));
        }
    }
    format!("{}\n", text.trim_end())
}

/// The header printed once before watch events in table form (nothing for JSON).
pub fn watch_header(output: Output) -> String {
    match output {
        Output::Json => String::new(),
        Output::Table => fixed_row(&WATCH_HEADERS.map(str::to_string)),
    }
}

pub fn watch_event(e: &WatchEvent, output: Output) -> String {
    let d = &e.document;
    match output {
        Output::Json => {
            let mut value = document_json(d);
            value["type"] = to_json(&e.kind);
            if e.kind == flotilla_client::ChangeKind::Delete {
                value["value"] = Value::Null;
            }
            line(&value)
        }
        Output::Table => {
            let (version, value) = match e.kind {
                flotilla_client::ChangeKind::Put => (d.version.to_string(), compact(&d.json)),
                flotilla_client::ChangeKind::Delete => ("-".to_string(), String::new()),
            };
            fixed_row(&[
                d.revision.to_string(),
                e.kind.to_string(),
                d.shard.to_string(),
                d.collection.clone(),
                d.id.clone(),
                version,
                value,
            ])
        }
    }
}

/// One event of a live query, in the columns of a watch: `initial`, `enter`, `change` and
/// `leave` rows name their document; the `current` row gives each shard's revision.
pub fn live_event(e: &flotilla_client::LiveEvent, output: Output) -> String {
    use flotilla_client::LiveEvent;
    let kind = match e {
        LiveEvent::Initial(_) => "initial",
        LiveEvent::Current { .. } => "current",
        LiveEvent::Enter(_) => "enter",
        LiveEvent::Change(_) => "change",
        LiveEvent::Leave(_) => "leave",
    };
    let d = match e {
        LiveEvent::Current { shards } => {
            return match output {
                Output::Json => line(&json!({
                    "type": kind,
                    "shards": shards
                        .iter()
                        .map(|(shard, revision)| json!({"shard": shard, "revision": revision}))
                        .collect::<Vec<_>>(),
                })),
                Output::Table => {
                    let at: Vec<String> = shards.iter().map(|(s, r)| format!("{s}:{r}")).collect();
                    fixed_row(&[
                        "-".to_string(),
                        kind.to_string(),
                        "-".to_string(),
                        String::new(),
                        String::new(),
                        String::new(),
                        at.join(","),
                    ])
                }
            };
        }
        LiveEvent::Initial(d)
        | LiveEvent::Enter(d)
        | LiveEvent::Change(d)
        | LiveEvent::Leave(d) => d,
    };
    let gone = d.json.is_empty();
    match output {
        Output::Json => {
            let mut value = document_json(d);
            value["type"] = json!(kind);
            if gone {
                value["value"] = Value::Null;
            }
            line(&value)
        }
        Output::Table => {
            let (version, value) = if gone {
                ("-".to_string(), String::new())
            } else {
                (d.version.to_string(), compact(&d.json))
            };
            fixed_row(&[
                d.revision.to_string(),
                kind.to_string(),
                d.shard.to_string(),
                d.collection.clone(),
                d.id.clone(),
                version,
                value,
            ])
        }
    }
}

pub fn node_removed(node_id: u64, steps: &[String], output: Output) -> String {
    match output {
        Output::Json => line(&json!({"node_id": node_id, "removed": true, "steps": steps})),
        Output::Table => {
            let mut out = format!("node {node_id} removed\n");
            for step in steps {
                out.push_str(&format!("  - {step}\n"));
            }
            out
        }
    }
}

pub fn steps(title: &str, steps: &[String], output: Output) -> String {
    match output {
        Output::Json => line(&json!({"result": title, "steps": steps})),
        Output::Table => {
            let mut out = format!("{title}\n");
            for step in steps {
                out.push_str(&format!("  - {step}\n"));
            }
            out
        }
    }
}

pub fn database_updated(db: &DatabaseInfo, output: Output) -> String {
    match output {
        Output::Json => line(&json!(db)),
        Output::Table => format!(
            "database {} updated: replication factor {}, replace after {}, placement {}, auto rebalance {}\n",
            db.name,
            db.replication_factor,
            db.replace_after,
            labels(&db.placement),
            if db.auto_rebalance { "on" } else { "off" }
        ),
    }
}

pub fn cluster_event(e: &ClusterEvent, output: Output) -> String {
    match output {
        Output::Json => line(&json!(e)),
        Output::Table => format!(
            "#{:<5} {}  {}/{}  node {}  {} -> {}  ({})\n",
            e.sequence,
            e.at_unix_ms,
            e.database,
            e.shard,
            e.node_id,
            e.from_state,
            e.to_state,
            e.reason
        ),
    }
}

pub fn leadership_transferred(group: &Group, leader_id: u64, output: Output) -> String {
    match output {
        Output::Json => {
            let group = match group {
                Group::Meta => json!("meta"),
                Group::Shard { database, shard } => json!({"database": database, "shard": shard}),
            };
            line(&json!({"group": group, "leader_id": leader_id}))
        }
        Output::Table => {
            let group = match group {
                Group::Meta => "the meta group".to_string(),
                Group::Shard { database, shard } => format!("shard {shard} of database {database}"),
            };
            format!("leader of {group} is now node {leader_id}\n")
        }
    }
}

#[cfg(test)]
mod tests;
