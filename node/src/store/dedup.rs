//! Exactly-once writes: the request ids a data group applied lately, and what each answered.
//!
//! A client names every write with a [`RequestId`] (its random client id and a sequence number)
//! and sends the same id with every retry. Applying an entry, a batch whose id the group
//! remembers is not applied again: it is answered with its first outcome and revision. Since
//! the record is written in the same apply transaction as the documents, every replica holds
//! the same records at the same index, and snapshots carry them (see [`Requests`]).
//!
//! Memory is bounded two ways, both counted in the group's own log (deterministic on every
//! replica):
//! - per client, the last [`MAX_PER_CLIENT`] ids it applied; older ones are forgotten and the
//!   client's *floor* rises above them: a repeat of a forgotten id is refused as
//!   [`Rejection::RequestExpired`] (never applied a second time);
//! - a client that applied nothing here for [`CLIENT_RETENTION`] revisions is forgotten
//!   entirely, floor included. A client retries within its own deadline (seconds), so a retry
//!   arriving after that many later revisions of the shard is not expected.
//!
//! Batches without an id apply as they always did.

use std::collections::HashMap;
use std::io;

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::io_err;
use super::tables::SM_STATE;
use crate::codec::{decode, encode};
use crate::command::{DataCommand, OpOutcome, Rejection, RequestId, Response};
use crate::types::GroupId;

/// (group, client, seq) -> [`Applied`]: the requests a group remembers.
pub(crate) const REQUESTS: TableDefinition<(u64, u64, u64), &[u8]> =
    TableDefinition::new("requests");
/// (group, client) -> [`ClientRecord`].
pub(crate) const CLIENTS: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("request_clients");
/// SM_STATE key: the revision the records were last pruned at.
const KEY_PRUNED: &str = "requests_pruned";

/// Requests remembered per client and group.
pub const MAX_PER_CLIENT: u64 = 1024;
/// Revisions after its last applied request at which a client is forgotten.
pub const CLIENT_RETENTION: u64 = 1 << 18;
/// Revisions between two prunes of silent clients.
const PRUNE_EVERY: u64 = 1024;

/// The outcome of one batch: its result, and the revision (log index) it applied at.
pub type Answer = (u64, Result<Vec<OpOutcome>, Rejection>);

/// A request as remembered: where it applied and what it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub revision: u64,
    pub result: Result<Vec<OpOutcome>, Rejection>,
}

/// What a group remembers of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Ids below this sequence number were forgotten.
    pub floor: u64,
    /// Requests remembered.
    pub count: u64,
    /// Revision of its last applied request.
    pub last_revision: u64,
}

/// Every record of one group, as a snapshot carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    pub clients: Vec<(u64, ClientRecord)>,
    pub requests: Vec<(u64, u64, Applied)>,
}

/// What the group knows of a request id before applying it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    New,
    /// Applied before; answer this.
    Applied(Applied),
    /// Below its client's floor: forgotten.
    Expired,
    /// The same id as an earlier batch of this entry (at this position among them).
    SameEntry(usize),
}

fn seen(txn: &WriteTransaction, gid: GroupId, id: RequestId) -> io::Result<Seen> {
    let requests = txn.open_table(REQUESTS).map_err(io_err)?;
    if let Some(v) = requests.get((gid, id.client, id.seq)).map_err(io_err)? {
        return Ok(Seen::Applied(decode(v.value())?));
    }
    let clients = txn.open_table(CLIENTS).map_err(io_err)?;
    let floor = match clients.get((gid, id.client)).map_err(io_err)? {
        Some(v) => decode::<ClientRecord>(v.value())?.floor,
        None => 0,
    };
    Ok(if id.seq < floor {
        Seen::Expired
    } else {
        Seen::New
    })
}

/// Applies the batches of the entry at `revision` of group `gid`, each at most once across
/// requests: `apply` gets the batches to apply now (all of them, unless some repeat a
/// remembered request) and returns one result per batch, as `documents::apply_many` does.
/// Returns the entry's response: the usual one when nothing repeated (`many`: the entry was a
/// `DataMany`), [`Response::Repeated`] otherwise.
pub(crate) fn apply_once(
    txn: &WriteTransaction,
    gid: GroupId,
    revision: u64,
    cmds: &[DataCommand],
    many: bool,
    apply: impl FnOnce(&[DataCommand]) -> io::Result<Vec<Result<Vec<OpOutcome>, Rejection>>>,
) -> io::Result<Response> {
    prune(txn, gid, revision)?;
    let mut seen_all = Vec::with_capacity(cmds.len());
    let mut in_entry: HashMap<RequestId, usize> = HashMap::new();
    for (i, cmd) in cmds.iter().enumerate() {
        let s = match cmd.request {
            None => Seen::New,
            Some(id) => match in_entry.get(&id) {
                Some(&first) => Seen::SameEntry(first),
                None => {
                    let s = seen(txn, gid, id)?;
                    if s == Seen::New {
                        in_entry.insert(id, i);
                    }
                    s
                }
            },
        };
        seen_all.push(s);
    }
    let all_new = seen_all.iter().all(|s| *s == Seen::New);
    let fresh: Vec<usize> = (0..cmds.len())
        .filter(|&i| seen_all[i] == Seen::New)
        .collect();
    let results = if all_new {
        apply(cmds)?
    } else {
        let picked: Vec<DataCommand> = fresh.iter().map(|&i| cmds[i].clone()).collect();
        apply(&picked)?
    };
    if results.len() != fresh.len() {
        return Err(io::Error::other(format!(
            "applying {} batches gave {} results",
            fresh.len(),
            results.len()
        )));
    }
    let mut answers: Vec<Option<Answer>> = vec![None; cmds.len()];
    for (&i, result) in fresh.iter().zip(results) {
        // A batch that met a transaction's intent applied nothing and is sent again once the
        // intent is resolved: not its outcome to remember.
        let locked = matches!(result, Err(Rejection::Intent { .. }));
        if let Some(id) = cmds[i].request
            && !locked
        {
            remember(txn, gid, id, revision, &result)?;
        }
        answers[i] = Some((revision, result));
    }
    if all_new {
        let mut results: Vec<_> = answers.into_iter().flatten().map(|(_, r)| r).collect();
        return Ok(if many {
            Response::DataMany(results)
        } else {
            Response::Data(results.pop().unwrap_or(Ok(Vec::new())))
        });
    }
    let mut out = Vec::with_capacity(cmds.len());
    for (i, s) in seen_all.into_iter().enumerate() {
        let answer = match s {
            Seen::New => answers[i].clone(),
            Seen::SameEntry(first) => answers[first].clone(),
            Seen::Applied(a) => Some((a.revision, a.result)),
            Seen::Expired => cmds[i].request.map(|id| {
                (
                    revision,
                    Err(Rejection::RequestExpired {
                        client: id.client,
                        seq: id.seq,
                    }),
                )
            }),
        };
        out.push(answer.ok_or_else(|| io::Error::other("a batch got no answer"))?);
    }
    Ok(Response::Repeated(out))
}

/// Replaces what request `id` answered by `outcomes`, keeping where it applied: the claim of a
/// batch over several shards (an empty batch with the batch's id) takes the outcome of the
/// transaction that ran it, so that a repeat is answered with it. False when the group no
/// longer remembers the request.
pub(crate) fn settle(
    txn: &WriteTransaction,
    gid: GroupId,
    id: RequestId,
    outcomes: &[OpOutcome],
) -> io::Result<bool> {
    let mut requests = txn.open_table(REQUESTS).map_err(io_err)?;
    let key = (gid, id.client, id.seq);
    let revision = match requests.get(key).map_err(io_err)? {
        Some(v) => decode::<Applied>(v.value())?.revision,
        None => return Ok(false),
    };
    let applied = Applied {
        revision,
        result: Ok(outcomes.to_vec()),
    };
    requests
        .insert(key, encode(&applied)?.as_slice())
        .map_err(io_err)?;
    Ok(true)
}

/// Records that request `id` applied at `revision` with `result`, forgetting the client's
/// oldest request beyond [`MAX_PER_CLIENT`].
fn remember(
    txn: &WriteTransaction,
    gid: GroupId,
    id: RequestId,
    revision: u64,
    result: &Result<Vec<OpOutcome>, Rejection>,
) -> io::Result<()> {
    let mut requests = txn.open_table(REQUESTS).map_err(io_err)?;
    let mut clients = txn.open_table(CLIENTS).map_err(io_err)?;
    let mut client: ClientRecord = match clients.get((gid, id.client)).map_err(io_err)? {
        Some(v) => decode(v.value())?,
        None => ClientRecord::default(),
    };
    let applied = Applied {
        revision,
        result: result.clone(),
    };
    requests
        .insert((gid, id.client, id.seq), encode(&applied)?.as_slice())
        .map_err(io_err)?;
    client.count += 1;
    client.last_revision = revision;
    while client.count > MAX_PER_CLIENT {
        let oldest = match requests
            .range((gid, id.client, 0)..=(gid, id.client, u64::MAX))
            .map_err(io_err)?
            .next()
        {
            Some(row) => row.map_err(io_err)?.0.value().2,
            None => break,
        };
        requests.remove((gid, id.client, oldest)).map_err(io_err)?;
        client.floor = client.floor.max(oldest + 1);
        client.count -= 1;
    }
    clients
        .insert((gid, id.client), encode(&client)?.as_slice())
        .map_err(io_err)?;
    Ok(())
}

/// Every [`PRUNE_EVERY`] revisions, forgets the clients silent for [`CLIENT_RETENTION`].
fn prune(txn: &WriteTransaction, gid: GroupId, revision: u64) -> io::Result<()> {
    let mut sm = txn.open_table(SM_STATE).map_err(io_err)?;
    let pruned = match sm.get((gid, KEY_PRUNED)).map_err(io_err)? {
        Some(v) => v.value().try_into().map(u64::from_le_bytes).unwrap_or(0),
        None => 0,
    };
    if revision < pruned + PRUNE_EVERY {
        return Ok(());
    }
    sm.insert((gid, KEY_PRUNED), revision.to_le_bytes().as_slice())
        .map_err(io_err)?;
    let Some(horizon) = revision.checked_sub(CLIENT_RETENTION) else {
        return Ok(());
    };
    let mut clients = txn.open_table(CLIENTS).map_err(io_err)?;
    let mut silent = Vec::new();
    for row in clients.range((gid, 0)..=(gid, u64::MAX)).map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        let record: ClientRecord = decode(v.value())?;
        if record.last_revision < horizon {
            silent.push(k.value().1);
        }
    }
    let mut requests = txn.open_table(REQUESTS).map_err(io_err)?;
    for client in silent {
        clients.remove((gid, client)).map_err(io_err)?;
        requests
            .retain_in((gid, client, 0)..=(gid, client, u64::MAX), |_, _| false)
            .map_err(io_err)?;
    }
    Ok(())
}

/// Every record of group `gid` (for a snapshot).
pub(crate) fn export(txn: &ReadTransaction, gid: GroupId) -> io::Result<Requests> {
    let mut out = Requests::default();
    let clients = txn.open_table(CLIENTS).map_err(io_err)?;
    for row in clients.range((gid, 0)..=(gid, u64::MAX)).map_err(io_err)? {
        let (k, v) = row.map_err(io_err)?;
        out.clients.push((k.value().1, decode(v.value())?));
    }
    let requests = txn.open_table(REQUESTS).map_err(io_err)?;
    for row in requests
        .range((gid, 0, 0)..=(gid, u64::MAX, u64::MAX))
        .map_err(io_err)?
    {
        let (k, v) = row.map_err(io_err)?;
        let (_, client, seq) = k.value();
        out.requests.push((client, seq, decode(v.value())?));
    }
    Ok(out)
}

/// Replaces every record of group `gid` with `records` (snapshot install).
pub(crate) fn replace(txn: &WriteTransaction, gid: GroupId, records: &Requests) -> io::Result<()> {
    delete_group(txn, gid)?;
    let mut clients = txn.open_table(CLIENTS).map_err(io_err)?;
    for (client, record) in &records.clients {
        clients
            .insert((gid, *client), encode(record)?.as_slice())
            .map_err(io_err)?;
    }
    let mut requests = txn.open_table(REQUESTS).map_err(io_err)?;
    for (client, seq, applied) in &records.requests {
        requests
            .insert((gid, *client, *seq), encode(applied)?.as_slice())
            .map_err(io_err)?;
    }
    Ok(())
}

/// Removes every record of group `gid`.
pub(crate) fn delete_group(txn: &WriteTransaction, gid: GroupId) -> io::Result<()> {
    let mut clients = txn.open_table(CLIENTS).map_err(io_err)?;
    clients
        .retain_in((gid, 0)..=(gid, u64::MAX), |_, _| false)
        .map_err(io_err)?;
    let mut requests = txn.open_table(REQUESTS).map_err(io_err)?;
    requests
        .retain_in((gid, 0, 0)..=(gid, u64::MAX, u64::MAX), |_, _| false)
        .map_err(io_err)?;
    let mut sm = txn.open_table(SM_STATE).map_err(io_err)?;
    sm.remove((gid, KEY_PRUNED)).map_err(io_err)?;
    Ok(())
}

/// Creates the tables.
pub(crate) fn init(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(REQUESTS)?;
    txn.open_table(CLIENTS)?;
    Ok(())
}

#[cfg(test)]
mod tests;
