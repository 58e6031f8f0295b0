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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_workload_runs_against_one_in_process_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
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
