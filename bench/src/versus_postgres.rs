//! The rows beside PostgreSQL: starts the server, loads the same documents and accounts into
//! both systems, and measures the query, put-with-indexes and transaction rows in both client
//! modes. Runs after the etcd rows, on the same Flotilla cluster, with etcd stopped.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use flotilla_client::{Client, ClientOptions};
use tokio::sync::Mutex;

use crate::args::Plan;
use crate::flotilla::FlotillaCluster;
use crate::peer_report::PeerRow;
use crate::postgres::PostgresServer;
use crate::queries::{self, DB, DB16, QueryShape, Rig, Workers};
use crate::transfers::{self, Transfer};

/// Replicas of every database: one on each node.
const REPLICAS: u32 = 3;
/// Most concurrent workers of any row.
const MAX_WORKERS: usize = 64;

/// Measures every PostgreSQL row the plan names. A failure to set up (no PostgreSQL
/// installed, a load that fails) ends the phase with an error; the etcd rows are kept.
pub async fn run(
    flotilla: &FlotillaCluster,
    root: &Path,
    plan: &Plan,
    say: &dyn Fn(String),
) -> anyhow::Result<Vec<PeerRow>> {
    say("starting PostgreSQL".into());
    let mut pg = PostgresServer::start(root).await?;
    let result = measure(flotilla, &pg, plan, say).await;
    say("stopping PostgreSQL".into());
    pg.stop().await;
    result
}

async fn measure(
    flotilla: &FlotillaCluster,
    pg: &PostgresServer,
    plan: &Plan,
    say: &dyn Fn(String),
) -> anyhow::Result<Vec<PeerRow>> {
    let admin = flotilla.admin_client()?;
    let endpoints = flotilla.endpoints();
    let loader = Client::connect(endpoints.clone())?;
    let pg_admin = pg.connect().await?;
    let mut rows = Vec::new();
    if plan.queries {
        queries::load_flotilla(&admin, &loader, plan.docs, REPLICAS, say).await?;
        say(format!("loading {} documents into PostgreSQL", plan.docs));
        queries::load_postgres(&pg_admin, plan.docs).await?;
    }
    if plan.transactions {
        say("loading the bank's accounts into both".into());
        transfers::load(&admin, &loader, &pg_admin, REPLICAS).await?;
        transfers::check_placement(&loader).await?;
    }

    // Clients see every node: the one-shard databases' leaders may be anywhere, and a query
    // or transaction is served wherever its shards lead.
    let per_worker = (0..MAX_WORKERS)
        .map(|_| Client::with_options(endpoints.clone(), ClientOptions::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let pg_conns = queries::Rig::pg_connections(pg, MAX_WORKERS).await?;
    let rig = Rig {
        warmup: plan.warmup,
        window: plan.window,
        docs: plan.docs,
        fl_shared: Workers::shared(loader.clone()),
        fl_per_worker: Workers::per_worker(per_worker),
        pg_shared: Workers::shared(Arc::new(pg.connect().await?)),
        pg_per_worker: Workers::per_worker(pg_conns),
    };
    if plan.queries {
        use QueryShape::*;
        for (name, db, shape, clients) in [
            ("indexed equality", DB, IndexedEquality, 1),
            ("indexed equality", DB, IndexedEquality, 64),
            ("indexed range of 100", DB, IndexedRange, 64),
            ("scan with a predicate", DB, Scan, 16),
            ("range of 100, 16 shards", DB16, IndexedRange, 64),
        ] {
            rows.extend(queries::query_rows(&rig, name, db, shape, clients, say).await);
        }
        for indexes in [0, 1, 3] {
            rows.extend(queries::put_rows(&rig, indexes, 64, say).await);
        }
    }
    if plan.transactions {
        let mut txn_conns = Vec::with_capacity(MAX_WORKERS);
        for _ in 0..MAX_WORKERS {
            txn_conns.push(Arc::new(Mutex::new(pg.connect().await?)));
        }
        rows.extend(transfers::batch_rows(&rig, 64, say).await);
        for kind in [Transfer::TwoShards, Transfer::OneShard, Transfer::Hot] {
            rows.extend(transfers::transfer_rows(&rig, &txn_conns, kind, 64, say).await);
        }
        transfers::check_totals(&loader, &pg_admin)
            .await
            .context("checking the bank's invariant after the transfers")?;
        say("the bank's total is unchanged in both systems".into());
    }
    Ok(rows)
}
