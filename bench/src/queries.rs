//! Query rows and put-with-indexes rows, Flotilla beside PostgreSQL: the same 1 KiB JSON
//! documents in a Flotilla collection with secondary indexes and in a PostgreSQL `jsonb` column
//! with expression indexes on the same paths; the same queries from the same process.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flotilla_client::{Client, Consistency};
use tokio_postgres::Client as PgClient;

use crate::drive::drive;
use crate::peer_report::{ClientMode, PeerRow};
use crate::postgres::PostgresServer;
use crate::report::Throughput;
use crate::stats::Summary;

/// One shard: every node holds it, as PostgreSQL's one server holds its table.
pub const DB: &str = "docs";
/// The same documents over 16 shards, for the scatter-gather row.
pub const DB16: &str = "docs16";
/// Collection (Flotilla) and table (PostgreSQL) of the queried documents.
pub const ORDERS: &str = "orders";
/// Database of the put-with-indexes rows: collections `w0`, `w1`, `w3` (0, 1, 3 indexes).
pub const WRITES_DB: &str = "writes";
/// Distinct documents the put-with-indexes rows overwrite.
const WRITE_KEYS: usize = 10_000;

const STATUSES: [&str; 5] = ["open", "paid", "shipped", "delivered", "cancelled"];
/// Size of every document, as in the etcd rows.
const DOC_BYTES: usize = 1024;
/// Distinct `/bucket` values: an unindexed equality matches documents / BUCKETS of them.
pub const BUCKETS: usize = 1000;

/// Document number `i`: unique `/sku` and `/seq`, and fields shared by many.
pub fn document(i: usize) -> String {
    let body = format!(
        r#"{{"sku":"sku-{i:07}","seq":{i},"customer":"c{:04}","status":"{}","total":{},"bucket":{},"pad":""#,
        (i * 7919) % 1000,
        STATUSES[i % STATUSES.len()],
        (i * 37) % 10_000,
        i % BUCKETS,
    );
    let pad = DOC_BYTES.saturating_sub(body.len() + 2);
    format!("{body}{}\"}}", "x".repeat(pad))
}

pub fn doc_id(i: usize) -> String {
    format!("o{i:07}")
}

/// The queried shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryShape {
    /// `/sku = "..."` through the `/sku` index: one document.
    IndexedEquality,
    /// `/seq >= x and /seq < x + 100` ordered by `/seq` through its index: 100 documents.
    IndexedRange,
    /// `/bucket = n`, no index: a scan of every document.
    Scan,
}

impl QueryShape {
    /// Flotilla's text form for a random draw `r` over `docs` documents, and the results it
    /// must return.
    fn flotilla(self, r: u64, docs: usize) -> (String, usize) {
        match self {
            QueryShape::IndexedEquality => {
                let i = (r % docs as u64) as usize;
                (format!("/sku = \"sku-{i:07}\""), 1)
            }
            QueryShape::IndexedRange => {
                let x = (r % (docs.saturating_sub(100).max(1)) as u64) as usize;
                (format!("/seq >= {x} and /seq < {}", x + 100), 100.min(docs))
            }
            QueryShape::Scan => {
                let b = (r % BUCKETS as u64) as usize;
                (
                    format!("/bucket = {b}"),
                    docs / BUCKETS + usize::from(b < docs % BUCKETS),
                )
            }
        }
    }
}

/// Runs one query on Flotilla and checks the number of results.
async fn flotilla_query(
    client: &Client,
    database: &str,
    shape: QueryShape,
    r: u64,
    docs: usize,
) -> Result<(), String> {
    let (text, expected) = shape.flotilla(r, docs);
    let mut q = client
        .query(database, ORDERS)
        .where_text(&text)
        .map_err(|e| e.to_string())?
        .consistency(Consistency::Linearizable);
    if shape == QueryShape::IndexedRange {
        q = q.order_by("/seq", false).limit(100);
    }
    let page = q.page(None).await.map_err(|e| e.to_string())?;
    if page.documents.len() != expected {
        return Err(format!(
            "{text}: {} results, expected {expected}",
            page.documents.len()
        ));
    }
    Ok(())
}

const PG_EQUALITY: &str = "SELECT id, doc::text FROM orders WHERE doc->>'sku' = $1";
const PG_RANGE: &str = "SELECT id, doc::text FROM orders WHERE (doc->>'seq')::bigint >= $1 \
     AND (doc->>'seq')::bigint < $2 ORDER BY (doc->>'seq')::bigint LIMIT 100";
const PG_SCAN: &str = "SELECT id, doc::text FROM orders WHERE (doc->>'bucket')::bigint = $1";

/// The same query on PostgreSQL.
async fn pg_query(pg: &PgClient, shape: QueryShape, r: u64, docs: usize) -> Result<(), String> {
    let (_, expected) = shape.flotilla(r, docs);
    let rows = match shape {
        QueryShape::IndexedEquality => {
            let i = (r % docs as u64) as usize;
            pg.query(PG_EQUALITY, &[&format!("sku-{i:07}")]).await
        }
        QueryShape::IndexedRange => {
            let x = (r % (docs.saturating_sub(100).max(1)) as u64) as i64;
            pg.query(PG_RANGE, &[&x, &(x + 100)]).await
        }
        QueryShape::Scan => {
            let b = (r % BUCKETS as u64) as i64;
            pg.query(PG_SCAN, &[&b]).await
        }
    }
    .map_err(|e| e.to_string())?;
    if rows.len() != expected {
        return Err(format!(
            "{shape:?}: {} rows, expected {expected}",
            rows.len()
        ));
    }
    Ok(())
}

/// Creates the Flotilla databases, collections and indexes and loads `docs` documents into
/// both query databases.
pub async fn load_flotilla(
    admin: &Client,
    loader: &Client,
    docs: usize,
    replicas: u32,
    say: &dyn Fn(String),
) -> anyhow::Result<()> {
    for (db, shards) in [(DB, 1), (DB16, 16), (WRITES_DB, 1)] {
        admin
            .create_database(db, Some(replicas), Some(shards))
            .await
            .with_context(|| format!("creating database {db}"))?;
        admin
            .wait_for_database(db, Duration::from_secs(120), |_| {})
            .await
            .with_context(|| format!("waiting for database {db}"))?;
    }
    admin.create_index(DB, ORDERS, "sku", &["/sku"]).await?;
    admin.create_index(DB, ORDERS, "seq", &["/seq"]).await?;
    admin.create_index(DB16, ORDERS, "seq", &["/seq"]).await?;
    admin
        .create_index(WRITES_DB, "w1", "status", &["/status"])
        .await?;
    for (name, path) in [
        ("status", "/status"),
        ("customer", "/customer"),
        ("total", "/total"),
    ] {
        admin.create_index(WRITES_DB, "w3", name, &[path]).await?;
    }
    for db in [DB, DB16] {
        say(format!(
            "loading {docs} documents of 1 KiB into Flotilla's {db}"
        ));
        let workers = 64;
        let mut tasks = Vec::new();
        for w in 0..workers {
            let client = loader.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..docs).step_by(workers) {
                    let mut tries = 0;
                    while let Err(e) = client.put(db, ORDERS, &doc_id(i), &document(i), None).await
                    {
                        tries += 1;
                        if tries >= 5 {
                            anyhow::bail!("loading {}: {e}", doc_id(i));
                        }
                    }
                }
                Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    wait_indexes_ready(admin).await
}

async fn wait_indexes_ready(admin: &Client) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    for db in [DB, DB16, WRITES_DB] {
        loop {
            let indexes = admin.list_indexes(db, None).await?;
            if indexes.iter().all(|i| i.ready()) {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the indexes of {db} were not built within 300 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Creates the PostgreSQL tables and expression indexes and loads the documents.
pub async fn load_postgres(pg: &PgClient, docs: usize) -> anyhow::Result<()> {
    pg.batch_execute(
        "CREATE TABLE orders (id text PRIMARY KEY, doc jsonb NOT NULL);
         CREATE INDEX orders_sku ON orders ((doc->>'sku'));
         CREATE INDEX orders_seq ON orders (((doc->>'seq')::bigint));
         CREATE TABLE w0 (id text PRIMARY KEY, doc jsonb NOT NULL);
         CREATE TABLE w1 (id text PRIMARY KEY, doc jsonb NOT NULL);
         CREATE INDEX w1_status ON w1 ((doc->>'status'));
         CREATE TABLE w3 (id text PRIMARY KEY, doc jsonb NOT NULL);
         CREATE INDEX w3_status ON w3 ((doc->>'status'));
         CREATE INDEX w3_customer ON w3 ((doc->>'customer'));
         CREATE INDEX w3_total ON w3 (((doc->>'total')::numeric));",
    )
    .await
    .context("creating the PostgreSQL tables")?;
    let insert = pg
        .prepare(
            "INSERT INTO orders (id, doc) SELECT i, d::jsonb FROM unnest($1::text[], $2::text[]) AS t(i, d)",
        )
        .await?;
    for start in (0..docs).step_by(1000) {
        let end = (start + 1000).min(docs);
        let ids: Vec<String> = (start..end).map(doc_id).collect();
        let bodies: Vec<String> = (start..end).map(document).collect();
        pg.execute(&insert, &[&ids, &bodies])
            .await
            .context("loading documents into PostgreSQL")?;
    }
    pg.batch_execute("VACUUM ANALYZE orders")
        .await
        .context("analyzing the PostgreSQL table")?;
    Ok(())
}

/// The clients of one row's workers in one mode.
#[derive(Clone)]
pub struct Workers<T> {
    clients: Arc<Vec<T>>,
}

impl<T> Workers<T> {
    pub fn shared(client: T) -> Workers<T> {
        Workers {
            clients: Arc::new(vec![client]),
        }
    }
    pub fn per_worker(clients: Vec<T>) -> Workers<T> {
        Workers {
            clients: Arc::new(clients),
        }
    }
    pub fn of(&self, worker: usize) -> &T {
        &self.clients[worker % self.clients.len()]
    }
}

/// Everything one measured row needs: durations, and both systems' clients in both modes.
pub struct Rig {
    pub warmup: Duration,
    pub window: Duration,
    pub docs: usize,
    /// Flotilla clients, shared / one per worker (as many as the most clients of any row).
    pub fl_shared: Workers<Client>,
    pub fl_per_worker: Workers<Client>,
    pub pg_shared: Workers<Arc<PgClient>>,
    pub pg_per_worker: Workers<Arc<PgClient>>,
}

impl Rig {
    pub fn flotilla(&self, mode: ClientMode) -> Workers<Client> {
        match mode {
            ClientMode::Shared => self.fl_shared.clone(),
            ClientMode::PerWorker => self.fl_per_worker.clone(),
        }
    }
    pub fn postgres(&self, mode: ClientMode) -> Workers<Arc<PgClient>> {
        match mode {
            ClientMode::Shared => self.pg_shared.clone(),
            ClientMode::PerWorker => self.pg_per_worker.clone(),
        }
    }

    /// Connections of PostgreSQL for `n` workers.
    pub async fn pg_connections(
        pg: &PostgresServer,
        n: usize,
    ) -> anyhow::Result<Vec<Arc<PgClient>>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(Arc::new(pg.connect().await?));
        }
        Ok(out)
    }
}

/// The modes a row runs in: one client gives the same either way.
pub fn modes(clients: usize) -> &'static [ClientMode] {
    if clients == 1 {
        &[ClientMode::PerWorker]
    } else {
        &[ClientMode::Shared, ClientMode::PerWorker]
    }
}

fn throughput(s: &Summary) -> Throughput {
    Throughput::new(s, None)
}

/// A query row: `shape` on `database` at `clients`, both systems, each mode.
pub async fn query_rows(
    rig: &Rig,
    name: &str,
    database: &'static str,
    shape: QueryShape,
    clients: usize,
    say: &dyn Fn(String),
) -> Vec<PeerRow> {
    let mut rows = Vec::new();
    for &mode in modes(clients) {
        let docs = rig.docs;
        let fl = rig.flotilla(mode);
        let f = drive(clients, rig.warmup, rig.window, move |w, r| {
            let fl = fl.clone();
            async move { flotilla_query(fl.of(w), database, shape, r, docs).await }
        })
        .await;
        let pg = rig.postgres(mode);
        let p = drive(clients, rig.warmup, rig.window, move |w, r| {
            let pg = pg.clone();
            async move { pg_query(pg.of(w), shape, r, docs).await }
        })
        .await;
        let row = PeerRow::new(
            "queries",
            name,
            clients,
            mode,
            Some(throughput(&f)),
            Some(throughput(&p)),
        );
        say(line(&row));
        rows.push(row);
    }
    rows
}

/// A put row: 1 KiB documents overwritten at random among [`WRITE_KEYS`] in collection `w{n}`
/// (`n` indexes) and table `w{n}`.
pub async fn put_rows(
    rig: &Rig,
    indexes: usize,
    clients: usize,
    say: &dyn Fn(String),
) -> Vec<PeerRow> {
    let collection: &'static str = match indexes {
        0 => "w0",
        1 => "w1",
        _ => "w3",
    };
    let upsert = format!(
        "INSERT INTO {collection} (id, doc) VALUES ($1, $2::text::jsonb) \
         ON CONFLICT (id) DO UPDATE SET doc = EXCLUDED.doc"
    );
    let upsert: &'static str = Box::leak(upsert.into_boxed_str());
    let mut rows = Vec::new();
    for &mode in modes(clients) {
        let fl = rig.flotilla(mode);
        let f = drive(clients, rig.warmup, rig.window, move |w, r| {
            let fl = fl.clone();
            async move {
                let i = (r % WRITE_KEYS as u64) as usize;
                // The draw's high bits pick the body, so that indexed values change.
                let body = document((r >> 20) as usize % 100_000);
                fl.of(w)
                    .put(WRITES_DB, collection, &doc_id(i), &body, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        let pg = rig.postgres(mode);
        let p = drive(clients, rig.warmup, rig.window, move |w, r| {
            let pg = pg.clone();
            async move {
                let i = (r % WRITE_KEYS as u64) as usize;
                let body = document((r >> 20) as usize % 100_000);
                pg.of(w)
                    .execute(upsert, &[&doc_id(i), &body])
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        let name = match indexes {
            0 => "put 1 KiB, no index",
            1 => "put 1 KiB, 1 index",
            _ => "put 1 KiB, 3 indexes",
        };
        let row = PeerRow::new(
            "indexes",
            name,
            clients,
            mode,
            Some(throughput(&f)),
            Some(throughput(&p)),
        );
        say(line(&row));
        rows.push(row);
    }
    rows
}

/// One row as a progress line.
pub fn line(row: &PeerRow) -> String {
    let side = |t: &Option<Throughput>| {
        t.as_ref().map_or("-".to_string(), |t| {
            format!(
                "{:.0}/s p99 {:.2} ms{}{}",
                t.ops_per_sec,
                t.p99_ms,
                if t.errors > 0 {
                    format!(" errors {}", t.errors)
                } else {
                    String::new()
                },
                t.retries.map_or(String::new(), |r| format!(" retries {r}"))
            )
        })
    };
    format!(
        "{:<26} c{:<3} {:<10} flotilla {}  postgresql {}",
        row.workload,
        row.clients,
        row.mode.name(),
        side(&row.flotilla),
        side(&row.postgresql)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_one_kib_of_json_with_the_queried_fields() {
        for i in [0, 7, 99_999] {
            let d = document(i);
            assert_eq!(d.len(), DOC_BYTES, "{d}");
            let v: serde_json::Value = serde_json::from_str(&d).unwrap();
            assert_eq!(v["seq"], i);
            assert_eq!(v["sku"], format!("sku-{i:07}"));
            assert_eq!(v["bucket"], i % BUCKETS);
        }
    }

    #[test]
    fn the_expected_result_counts_match_the_documents() {
        let docs = 2_500;
        for r in [0u64, 1, 499, 999, 12_345] {
            for shape in [
                QueryShape::IndexedEquality,
                QueryShape::IndexedRange,
                QueryShape::Scan,
            ] {
                let (text, expected) = shape.flotilla(r, docs);
                let p = flotilla_query::parse_text(&text).unwrap();
                let matching = (0..docs)
                    .filter(|i| {
                        let v: serde_json::Value = serde_json::from_str(&document(*i)).unwrap();
                        p.matches(&v)
                    })
                    .count();
                assert_eq!(matching, expected, "{text}");
            }
        }
    }
}
