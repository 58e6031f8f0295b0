//! A cheap end-to-end check of the client side: one in-process Flotilla node, a tiny workload
//! of each kind, and the report built from it. Asserts only that work was done, never on time.

use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_client::Client;

use crate::args::{Cli, Cmd, Workload};
use crate::flotilla::DATABASE;
use crate::process::free_port;
use crate::report::{Failover, Row, Throughput};
use crate::workload::{self, Target};

/// One Flotilla node in this process, with the benchmark database; its client and task.
async fn one_node(dir: &std::path::Path) -> (Client, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let client_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let http_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let peer_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let cli = Cli::try_parse_from([
        "flotilla-bench",
        "node",
        "--name",
        "smoke",
        "--data-dir",
        dir.to_str().unwrap(),
        "--client-addr",
        &client_addr,
        "--peer-addr",
        &peer_addr,
        "--http-addr",
        &http_addr,
        "--initial-cluster-state",
        "new",
    ])
    .unwrap();
    let Some(Cmd::Node(config)) = cli.command else {
        panic!("node subcommand expected");
    };
    let node = tokio::spawn(flotilla_node::serve::run(*config));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    flotilla_testkit::http::wait_ready(&http_addr, deadline)
        .await
        .unwrap();
    let client = Client::connect(vec![client_addr]).unwrap();
    client
        .create_database(DATABASE, Some(1), Some(1))
        .await
        .unwrap();
    client
        .wait_for_database(DATABASE, Duration::from_secs(20), |_| {})
        .await
        .unwrap();
    (client, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_workload_runs_against_one_in_process_node() {
    let tmp = tempfile::tempdir().unwrap();
    let (client, node) = one_node(tmp.path()).await;
    let target = Target::Flotilla(client);
    workload::preload(&target, 20, 4).await.unwrap();
    let mut rows = Vec::new();
    for w in [Workload::Put, Workload::Get, Workload::Mixed] {
        let s = workload::run(
            &target,
            w,
            4,
            20,
            Duration::from_millis(50),
            Duration::from_millis(300),
        )
        .await;
        assert!(s.ops > 0, "{w:?}: no operation completed");
        assert_eq!(s.errors, 0, "{w:?}");
        let t = Throughput::new(&s, None);
        rows.push(Row::throughput(w.name(), 4, t.clone(), t));
    }
    let took = workload::time_until_write(&target, Instant::now(), Duration::from_secs(10)).await;
    assert!(took.is_some());
    rows.push(Row::failover(
        Failover::new(vec![1.0]),
        Failover::new(vec![2.0]),
    ));
    assert!(rows.iter().take(3).all(|r| r.ratio == Some(1.0)));
    node.abort();
}

/// The rows beside PostgreSQL, tiny: one in-process node, a PostgreSQL server in a temporary
/// directory, every query shape, puts with indexes, transfers and the bank's invariant after
/// them. PostgreSQL must be installed (`apt-get install postgresql`; `scripts/test.sh` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_rows_run_against_one_node_and_a_postgresql_server() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::Arc;

    use crate::peer_report::PeerRow;
    use crate::postgres::PostgresServer;
    use crate::queries::{self, QueryShape, Rig, Workers};
    use crate::transfers::{self, Transfer};

    let tmp = tempfile::tempdir().unwrap();
    // PostgreSQL runs as the `postgres` user when the tests run as root: let it in.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (client, node) = one_node(&tmp.path().join("node")).await;
    let mut pg = PostgresServer::start(tmp.path()).await.unwrap();
    let pg_admin = pg.connect().await.unwrap();
    let docs = 300;
    queries::load_flotilla(&client, &client, docs, 1, &|_| {})
        .await
        .unwrap();
    queries::load_postgres(&pg_admin, docs).await.unwrap();
    transfers::load(&client, &client, &pg_admin, 1)
        .await
        .unwrap();
    transfers::check_placement(&client).await.unwrap();

    let workers = 2;
    let rig = Rig {
        warmup: Duration::from_millis(50),
        window: Duration::from_millis(400),
        docs,
        fl_shared: Workers::shared(client.clone()),
        fl_per_worker: Workers::per_worker(vec![client.clone(), client.clone()]),
        pg_shared: Workers::shared(Arc::new(pg.connect().await.unwrap())),
        pg_per_worker: Workers::per_worker(Rig::pg_connections(&pg, workers).await.unwrap()),
    };
    let mut rows: Vec<PeerRow> = Vec::new();
    for (db, shape) in [
        (queries::DB, QueryShape::IndexedEquality),
        (queries::DB, QueryShape::IndexedRange),
        (queries::DB, QueryShape::Scan),
        (queries::DB16, QueryShape::IndexedRange),
    ] {
        rows.extend(queries::query_rows(&rig, "query", db, shape, workers, &|_| {}).await);
    }
    rows.extend(queries::put_rows(&rig, 3, workers, &|_| {}).await);
    let mut txn_conns = Vec::new();
    for _ in 0..workers {
        txn_conns.push(Arc::new(tokio::sync::Mutex::new(
            pg.connect().await.unwrap(),
        )));
    }
    rows.extend(transfers::batch_rows(&rig, workers, &|_| {}).await);
    for kind in [Transfer::TwoShards, Transfer::Hot] {
        rows.extend(transfers::transfer_rows(&rig, &txn_conns, kind, workers, &|_| {}).await);
    }
    for row in &rows {
        for side in [&row.flotilla, &row.postgresql].into_iter().flatten() {
            assert!(side.ops > 0, "no operation completed: {row:?}");
            assert_eq!(side.errors, 0, "{row:?}");
        }
        assert!(row.flotilla.is_some(), "{row:?}");
    }
    assert!(rows.iter().any(|r| r.ratio.is_some()));
    transfers::check_totals(&client, &pg_admin).await.unwrap();
    pg.stop().await;
    node.abort();
}

/// The backup rows, tiny: one in-process node, a 1 MiB database backed up and restored with the
/// `flotilla` command line of this build (built by the workspace's tests, beside the node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_rows_run_against_one_node() {
    use crate::backups::{BackupRig, cli_binary, run};

    let tmp = tempfile::tempdir().unwrap();
    let (client, node) = one_node(&tmp.path().join("node")).await;
    let cli = cli_binary(Some(
        &flotilla_testkit::cluster::node_binary().with_file_name("flotilla"),
    ))
    .unwrap();
    let endpoints = client.cluster_status().await.unwrap().nodes[0]
        .client_addr
        .clone();
    let rig = BackupRig {
        endpoints: vec![endpoints],
        replicas: 1,
        mib: 1,
        alone: Duration::from_millis(500),
        dir: tmp.path().join("backups"),
        cli: &cli,
        max_rate: 4.0,
        metrics: Vec::new(),
    };
    let rows = run(&rig, &|_| {}).await.unwrap();
    assert_eq!(rows.documents, 64, "{rows:?}");
    assert!(
        rows.backup_mib >= 1.0 && rows.backup_mib_per_sec > 0.0,
        "{rows:?}"
    );
    assert!(rows.restore_mib_per_sec > 0.0, "{rows:?}");
    assert_eq!(
        rows.writes.len(),
        4,
        "two client modes, unlimited and limited"
    );
    for w in &rows.writes {
        assert!(
            w.alone_ops_per_sec > 0.0 && w.during_backup_ops_per_sec > 0.0,
            "{rows:?}"
        );
    }
    assert!(rows.table().contains("MiB/s"));
    assert!(!rig.dir.exists(), "the backups are removed after the rows");
    node.abort();
}
