//! Transaction rows: transfers between bank accounts, as serializable transactions in
//! Flotilla (accounts spread over four shards) and in PostgreSQL (`SERIALIZABLE`, retried on a
//! serialization failure as Flotilla's closure form retries a conflict), and single-shard
//! atomic batches as the reference a two-shard transfer is measured against.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use flotilla_client::{BatchOp, Client, Error};
use tokio::sync::Mutex;
use tokio_postgres::Client as PgClient;
use tokio_postgres::error::SqlState;

use crate::drive::{Retried, Rng, drive};
use crate::peer_report::{ClientMode, PeerRow};
use crate::queries::{Rig, Workers, line, modes};
use crate::report::Throughput;

pub const BANK: &str = "bank";
const ACCOUNTS: &str = "acct";
/// Collection of the atomic-batch reference row's writes.
const BATCHES: &str = "batches";
/// Shards of the bank database.
pub const SHARDS: u32 = 4;
/// Accounts; the hot-account row draws from the first [`HOT`] only.
const N_ACCOUNTS: usize = 10_000;
const HOT: usize = 8;
const START_BALANCE: i64 = 1_000_000;

fn account(i: usize) -> String {
    format!("a{i:05}")
}

fn balance_json(balance: i64) -> String {
    format!(r#"{{"balance":{balance}}}"#)
}

/// The shard an account lives on: Flotilla places a document by the xxh3 hash of its id over
/// the shard count (`DatabaseRecord::shard_of`); the benchmark checks this against the shards
/// each commit reports.
pub fn shard_of(id: &str) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % SHARDS as u64) as u32
}

/// Which accounts a transfer draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// Two accounts on different shards.
    TwoShards,
    /// Two accounts on the same shard.
    OneShard,
    /// Two of the [`HOT`] first accounts, on different shards: heavy contention.
    Hot,
}

impl Transfer {
    pub fn name(self) -> &'static str {
        match self {
            Transfer::TwoShards => "transfer, 2 shards",
            Transfer::OneShard => "transfer, 1 shard",
            Transfer::Hot => "transfer, 8 hot accounts",
        }
    }

    /// The two accounts of draw `r`.
    pub fn accounts(self, r: u64) -> (String, String) {
        let mut rng = Rng::new(r);
        let pool = if self == Transfer::Hot {
            HOT
        } else {
            N_ACCOUNTS
        };
        let a = account(rng.below(pool));
        let same = self == Transfer::OneShard;
        loop {
            let b = account(rng.below(pool));
            if b != a && (shard_of(&a) == shard_of(&b)) == same {
                return (a, b);
            }
        }
    }

    /// Shards a commit of this transfer writes.
    fn shards(self) -> u32 {
        if self == Transfer::OneShard { 1 } else { 2 }
    }
}

fn parse_balance(json: &str) -> Result<i64, String> {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["balance"].as_i64())
        .ok_or_else(|| format!("not an account: {json}"))
}

/// Creates the bank in both systems, every account at [`START_BALANCE`].
pub async fn load(
    admin: &Client,
    loader: &Client,
    pg: &PgClient,
    replicas: u32,
) -> anyhow::Result<()> {
    admin
        .create_database(BANK, Some(replicas), Some(SHARDS))
        .await
        .context("creating the bank database")?;
    admin
        .wait_for_database(BANK, Duration::from_secs(120), |_| {})
        .await?;
    let workers = 32;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = loader.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..N_ACCOUNTS).step_by(workers) {
                client
                    .put(
                        BANK,
                        ACCOUNTS,
                        &account(i),
                        &balance_json(START_BALANCE),
                        None,
                    )
                    .await
                    .with_context(|| format!("loading account {i}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    pg.batch_execute("CREATE TABLE acct (id text PRIMARY KEY, doc jsonb NOT NULL)")
        .await?;
    let ids: Vec<String> = (0..N_ACCOUNTS).map(account).collect();
    pg.execute(
        "INSERT INTO acct SELECT i, jsonb_build_object('balance', $2::bigint) FROM unnest($1::text[]) AS t(i)",
        &[&ids, &START_BALANCE],
    )
    .await
    .context("loading the PostgreSQL accounts")?;
    pg.batch_execute("VACUUM ANALYZE acct").await?;
    Ok(())
}

/// One transfer of 1 from `a` to `b` in a Flotilla transaction, run again on a conflict by the
/// client's closure form; `attempts` counts every run of the body.
async fn flotilla_transfer(client: &Client, kind: Transfer, r: u64) -> Result<Retried, String> {
    let (a, b) = kind.accounts(r);
    let attempts = AtomicU64::new(0);
    let attempts = &attempts;
    client
        .transaction(BANK, |txn| {
            attempts.fetch_add(1, Ordering::Relaxed);
            let (a, b) = (a.clone(), b.clone());
            async move {
                let from = txn.get(ACCOUNTS, &a).await?;
                let to = txn.get(ACCOUNTS, &b).await?;
                let (Some(from), Some(to)) = (from, to) else {
                    return Err(Error::NotFound(format!("{a} or {b}")));
                };
                let fb = parse_balance(&from.json).map_err(Error::InvalidArgument)?;
                let tb = parse_balance(&to.json).map_err(Error::InvalidArgument)?;
                txn.put(ACCOUNTS, &a, &balance_json(fb - 1), None).await?;
                txn.put(ACCOUNTS, &b, &balance_json(tb + 1), None).await?;
                Ok(())
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(Retried(attempts.load(Ordering::Relaxed).saturating_sub(1)))
}

/// The same transfer in PostgreSQL at `SERIALIZABLE`, run again after a serialization failure
/// or a deadlock with the same backoff as Flotilla's client.
async fn pg_transfer(
    conn: &Mutex<PgClient>,
    kind: Transfer,
    r: u64,
    backoff: impl Fn(u32) -> Duration,
) -> Result<Retried, String> {
    let (a, b) = kind.accounts(r);
    let mut conn = conn.lock().await;
    let mut retry = 0u32;
    loop {
        match pg_transfer_once(&mut conn, &a, &b).await {
            Ok(()) => return Ok(Retried(retry.into())),
            Err(e)
                if matches!(
                    e.code(),
                    Some(&SqlState::T_R_SERIALIZATION_FAILURE | &SqlState::T_R_DEADLOCK_DETECTED)
                ) =>
            {
                tokio::time::sleep(backoff(retry.min(6))).await;
                retry += 1;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn pg_transfer_once(
    conn: &mut PgClient,
    a: &str,
    b: &str,
) -> Result<(), tokio_postgres::Error> {
    let t = conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::Serializable)
        .start()
        .await?;
    let get = "SELECT (doc->>'balance')::bigint FROM acct WHERE id = $1";
    let fb: i64 = t.query_one(get, &[&a]).await?.get(0);
    let tb: i64 = t.query_one(get, &[&b]).await?.get(0);
    let set = "UPDATE acct SET doc = jsonb_build_object('balance', $2::bigint) WHERE id = $1";
    t.execute(set, &[&a, &(fb - 1)]).await?;
    t.execute(set, &[&b, &(tb + 1)]).await?;
    t.commit().await
}

/// The transfer rows of `kind` at `clients`, each mode. PostgreSQL runs one transaction at a
/// time per connection, so its shared-mode side is left empty.
pub async fn transfer_rows(
    rig: &Rig,
    pg_conns: &[Arc<Mutex<PgClient>>],
    kind: Transfer,
    clients: usize,
    say: &dyn Fn(String),
) -> Vec<PeerRow> {
    let mut rows = Vec::new();
    let backoff = {
        let options = rig.fl_shared.of(0).options().clone();
        move |n: u32| options.backoff(n)
    };
    for &mode in modes(clients) {
        let fl = rig.flotilla(mode);
        let f = drive(clients, rig.warmup, rig.window, move |w, r| {
            let fl = fl.clone();
            async move { flotilla_transfer(fl.of(w), kind, r).await }
        })
        .await;
        let mut ft = Throughput::new(&f, None);
        ft.retries = Some(f.retries);
        let pt = if mode == ClientMode::PerWorker {
            let conns = Workers::per_worker(pg_conns.to_vec());
            let backoff = backoff.clone();
            let p = drive(clients, rig.warmup, rig.window, move |w, r| {
                let (conns, backoff) = (conns.clone(), backoff.clone());
                async move { pg_transfer(conns.of(w), kind, r, backoff).await }
            })
            .await;
            let mut pt = Throughput::new(&p, None);
            pt.retries = Some(p.retries);
            Some(pt)
        } else {
            None
        };
        let mut row = PeerRow::new("transactions", kind.name(), clients, mode, Some(ft), pt);
        if mode == ClientMode::Shared {
            row = row.with_note("PostgreSQL runs one transaction at a time per connection");
        }
        say(line(&row));
        rows.push(row);
    }
    rows
}

/// The reference: the two writes of a one-shard transfer as one atomic batch (no reads).
pub async fn batch_rows(rig: &Rig, clients: usize, say: &dyn Fn(String)) -> Vec<PeerRow> {
    let mut rows = Vec::new();
    for &mode in modes(clients) {
        let fl = rig.flotilla(mode);
        let f = drive(clients, rig.warmup, rig.window, move |w, r| {
            let fl = fl.clone();
            async move {
                let (a, b) = Transfer::OneShard.accounts(r);
                // Another collection than the accounts' (same placement by id), so that the
                // bank's total stays checkable.
                let ops = vec![
                    BatchOp::put(BATCHES, a, balance_json(START_BALANCE - 1)),
                    BatchOp::put(BATCHES, b, balance_json(START_BALANCE + 1)),
                ];
                fl.of(w)
                    .batch(BANK, ops)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        let row = PeerRow::new(
            "transactions",
            "atomic batch, 1 shard",
            clients,
            mode,
            Some(Throughput::new(&f, None)),
            None,
        )
        .with_note("the reference for transfers: two puts as one atomic batch, no reads");
        say(line(&row));
        rows.push(row);
    }
    rows
}

/// Checks the placement the transfer rows rely on: a transaction over each kind's accounts
/// commits on as many shards as [`Transfer::shards`] says.
pub async fn check_placement(client: &Client) -> anyhow::Result<()> {
    for kind in [Transfer::TwoShards, Transfer::OneShard, Transfer::Hot] {
        let (a, b) = kind.accounts(7);
        let txn = client.begin(BANK, None).await?;
        for id in [&a, &b] {
            let doc = txn
                .get(ACCOUNTS, id)
                .await?
                .context("a loaded account is missing")?;
            txn.put(ACCOUNTS, id, &doc.json, None).await?;
        }
        let outcome = txn.commit().await?;
        anyhow::ensure!(
            outcome.shards == kind.shards(),
            "{} over {a} and {b} committed on {} shards, expected {}: the benchmark's placement \
             differs from the node's",
            kind.name(),
            outcome.shards,
            kind.shards()
        );
    }
    Ok(())
}

/// The sum of every account: transfers keep it at `N_ACCOUNTS * START_BALANCE`.
pub async fn check_totals(client: &Client, pg: &PgClient) -> anyhow::Result<()> {
    let expected = N_ACCOUNTS as i64 * START_BALANCE;
    let mut total = 0i64;
    for d in client.query(BANK, ACCOUNTS).all().await? {
        total += parse_balance(&d.json).map_err(|e| anyhow::anyhow!(e))?;
    }
    let pg_total: i64 = pg
        .query_one(
            "SELECT sum((doc->>'balance')::bigint)::bigint FROM acct",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        total == expected && pg_total == expected,
        "after the transfers: Flotilla's accounts sum to {total}, PostgreSQL's to {pg_total}, \
         expected {expected}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_draw_accounts_as_their_kind_says() {
        for r in 0..200u64 {
            let (a, b) = Transfer::TwoShards.accounts(r);
            assert_ne!(shard_of(&a), shard_of(&b));
            let (a, b) = Transfer::OneShard.accounts(r);
            assert_eq!(shard_of(&a), shard_of(&b));
            assert_ne!(a, b);
            let (a, b) = Transfer::Hot.accounts(r);
            assert!(a < account(HOT) && b < account(HOT), "{a} {b}");
            assert_ne!(shard_of(&a), shard_of(&b));
        }
    }

    #[test]
    fn the_hot_accounts_span_several_shards() {
        let shards: std::collections::BTreeSet<u32> =
            (0..HOT).map(|i| shard_of(&account(i))).collect();
        assert!(shards.len() >= 2, "{shards:?}");
    }
}
