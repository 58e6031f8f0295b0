//! Distributed transactions: serializable, over any shards of one database, surviving the
//! loss of their coordinator. The design is in the README's design notes; in short:
//!
//! - [`coordinator`]: the node that began a transaction runs it (reads with versions,
//!   buffered writes, then prepare / decide / resolve, or one entry on one shard);
//! - [`commit`]: committing a writing transaction, on one shard or in two phases;
//! - [`plan`]: what the commit asks of each shard (pure);
//! - [`shards`]: a call on one shard, served by its leader wherever it is;
//! - [`query`]: queries inside a transaction, validated at commit (no phantom);
//! - [`resolve`]: meeting an intent (reads see never half a transaction; plain writes wait;
//!   an expired transaction is aborted in its record, then its intents dropped);
//! - [`records`]: forgetting the records no intent can still need (a bounded sweep);
//! - [`fence`]: backup cuts (fences that hold commits back while a backup opens its reads);
//! - the replicated part (intents, records, applying commands) is `crate::store::txn` and
//!   `crate::command::txn`.
//!
//! This module sits between the serving layer (`grpc`) and the host: it proposes through the
//! host and calls peers through the network.

pub mod batch;
pub mod commit;
pub mod coordinator;
pub mod fence;
pub mod plan;
pub mod query;
pub mod records;
pub mod resolve;
pub mod shards;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use coordinator::Coordinator;

use crate::command::txn::{Decision, Intent, TxnId};
use crate::host::Host;
use crate::types::NodeId;

/// How often a node drops abandoned open transactions and looks for expired intents on the
/// shards it leads.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The coordinators of the hosts running in this process (one per node; a dev cluster runs
/// several), shared by the client and peer ports.
static COORDINATORS: OnceLock<Mutex<HashMap<NodeId, Arc<Coordinator>>>> = OnceLock::new();

/// The coordinator of `host`, made (and its sweep started) on first use.
pub fn coordinator(host: &Arc<Host>) -> Arc<Coordinator> {
    let all = COORDINATORS.get_or_init(Mutex::default);
    let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = all.get(&host.id)
        && Arc::ptr_eq(c.host(), host)
    {
        return c.clone();
    }
    let c = Arc::new(Coordinator::new(host.clone()));
    all.insert(host.id, c.clone());
    tokio::spawn(sweep(Arc::downgrade(&c)));
    tokio::spawn(records::sweep_loop(Arc::downgrade(&c)));
    tokio::spawn(fence::lift_loop(Arc::downgrade(&c)));
    c
}

/// Every second: drops open transactions past their timeout and resolves the expired intents
/// on shards this node leads (so that a transaction whose coordinator died is resolved even
/// when nobody reads or writes its documents). The records no intent needs are forgotten by
/// a sweep on a task of its own ([`records::sweep_loop`]), which waits on other shards.
async fn sweep(c: std::sync::Weak<Coordinator>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let Some(c) = c.upgrade() else { return };
        if c.host().is_stopping() {
            return;
        }
        c.sweep();
        let host = c.host().clone();
        drop(c);
        for (database, shard, intents) in led_intents(&host, None) {
            let now = resolve::now_ms();
            let mut seen = std::collections::BTreeSet::new();
            for (_, _, intent) in intents {
                if !intent.txn.expired(now) || !seen.insert(intent.txn.id) {
                    continue;
                }
                match resolve::decision_of(&host, &database, intent.txn).await {
                    Ok(Some(d)) => {
                        let _ = resolve::resolve(&host, &database, shard, intent.txn, d).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, "recovering an expired intent failed"),
                }
            }
        }
    }
}

/// The intents on one shard: (database, shard, (collection, id, intent) of each).
pub type ShardIntents = (String, u32, Vec<(String, String, Intent)>);

/// The shards of `database` (or all) this node leads, each with a read of its state:
/// (database, shard, group, read).
fn led_shards(
    host: &Arc<Host>,
    database: Option<&str>,
) -> Vec<(String, u32, crate::types::GroupId, redb::ReadTransaction)> {
    let meta = host.meta_state();
    let mut out = Vec::new();
    for (name, db) in &meta.databases {
        if database.is_some_and(|d| d != name) {
            continue;
        }
        for (shard, record) in db.shards.iter().enumerate() {
            let Some(group) = host.group(record.group_id) else {
                continue;
            };
            if !group.is_leader() {
                continue;
            }
            if let Ok(read) = group.sm.begin_read() {
                out.push((name.clone(), shard as u32, record.group_id, read));
            }
        }
    }
    out
}

/// Intents on the shards this node leads (of `database`, or all).
pub fn led_intents(host: &Arc<Host>, database: Option<&str>) -> Vec<ShardIntents> {
    let mut out = Vec::new();
    for (name, shard, gid, read) in led_shards(host, database) {
        if let Ok(snap) = crate::store::txn::snapshot(&read, gid)
            && !snap.intents.is_empty()
        {
            out.push((name, shard, snap.intents));
        }
    }
    out
}

/// The records on the shards this node leads (of `database`, or all): (database, shard,
/// transaction, decision) of each.
pub fn led_records(
    host: &Arc<Host>,
    database: Option<&str>,
) -> Vec<(String, u32, TxnId, Decision)> {
    let mut out = Vec::new();
    for (name, shard, gid, read) in led_shards(host, database) {
        if let Ok(records) = crate::store::txn::records(&read, gid) {
            out.extend(
                records
                    .into_iter()
                    .map(|(txn, d)| (name.clone(), shard, txn, d)),
            );
        }
    }
    out
}

/// A transaction id as clients see it.
pub fn format_id(txn: TxnId) -> String {
    format!("{txn:032x}")
}

/// A transaction id from its text.
pub fn parse_id(text: &str) -> Option<TxnId> {
    (text.len() == 32)
        .then(|| TxnId::from_str_radix(text, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_id_reads_back_from_its_text_and_nothing_else_does() {
        let id = crate::command::txn::new_txn_id(77);
        assert_eq!(parse_id(&format_id(id)), Some(id));
        assert_eq!(parse_id("xyz"), None);
        assert_eq!(parse_id(""), None);
        assert_eq!(parse_id(&"g".repeat(32)), None);
    }
}
