//! Backups at a consistent cut, end to end: real node processes, the real `flotilla` binary.
//!
//! A bank: accounts on every shard, transfers between them in cross-shard transactions that
//! keep the total constant, each transfer logged by its id (which names both accounts and the
//! amount) in both accounts it moves money between. Backups are taken again and again while
//! the transfers run (their shard reads opened 300 ms apart, so that transfers commit between
//! them unless the fences hold them back), each restored into a new database that must hold exactly the total, every
//! transfer wholly in (logged in both accounts) or wholly out, and every balance the sum of the
//! transfers its log holds (the value of a serial order of the transfers). At least one backup
//! must have caught a transaction decided but not yet resolved on every shard (a committed
//! intent that the restore applies): the mechanism is reached, not only the easy case.
//!
//! And a fence its backup never lifts (the backup client died) is lifted by the shard leaders
//! after `--backup-fence-max`, while a transaction that met it waits and then commits.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{assert_ok, flotilla};
use flotilla_client::{Client, Consistency, Error};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};
use flotilla_testkit::wait::wait_for;
use rand::{Rng, SeedableRng};

const BANK: &str = "bank";
const SHARDS: u32 = 3;
const ACCOUNTS: usize = 12;
const START: i64 = 100;

fn account(i: usize) -> String {
    format!("acct-{i}")
}

/// An account's body: its balance and the transfers applied to it.
fn body(balance: i64, log: &[String]) -> String {
    serde_json::json!({ "balance": balance, "log": log }).to_string()
}

fn parse(json: &str) -> (i64, Vec<String>) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let log = v["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    (v["balance"].as_i64().unwrap(), log)
}

/// A transfer's id: `t<n>:<from>><to>:<amount>`.
fn transfer_id(n: u64, from: usize, to: usize, amount: i64) -> String {
    format!("t{n}:{from}>{to}:{amount}")
}

fn parse_transfer(id: &str) -> (usize, usize, i64) {
    let (_, rest) = id.split_once(':').unwrap();
    let (pair, amount) = rest.split_once(':').unwrap();
    let (from, to) = pair.split_once('>').unwrap();
    (
        from.parse().unwrap(),
        to.parse().unwrap(),
        amount.parse().unwrap(),
    )
}

/// Moves `amount` from one account to another in one transaction, logging it in both.
async fn transfer(client: &Client, n: u64, from: usize, to: usize, amount: i64) -> bool {
    let id = transfer_id(n, from, to, amount);
    client
        .transaction(BANK, |t| {
            let id = id.clone();
            async move {
                let mut bodies = Vec::new();
                for (i, delta) in [(from, -amount), (to, amount)] {
                    let doc = t.get("accounts", &account(i)).await?;
                    let (balance, mut log) = parse(&doc.expect("every account exists").json);
                    log.push(id.clone());
                    bodies.push((i, body(balance + delta, &log)));
                }
                for (i, json) in bodies {
                    t.put("accounts", &account(i), &json, None).await?;
                }
                Ok(())
            }
        })
        .await
        .is_ok()
}

/// Checks database `db` holds a state of the bank some serial order of the transfers reaches:
/// the total, each transfer in both its accounts or in neither, each balance the sum of its
/// log. Answers the transfers it holds.
async fn check_bank(client: &Client, db: &str, seed: u64) -> usize {
    let mut logs: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut total = 0;
    for i in 0..ACCOUNTS {
        let doc = client
            .get(db, "accounts", &account(i), Consistency::Linearizable)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("seed {seed}: {db} lost account {i}"));
        let (balance, log) = parse(&doc.json);
        let mut expected = START;
        for t in &log {
            let (from, to, amount) = parse_transfer(t);
            assert!(
                from == i || to == i,
                "seed {seed}: {t} logged in account {i}"
            );
            expected += if from == i { -amount } else { amount };
        }
        assert_eq!(
            balance, expected,
            "seed {seed}: {db}: account {i}'s balance is not the sum of its transfers {log:?}"
        );
        total += balance;
        logs.insert(i, log.into_iter().collect());
    }
    assert_eq!(
        total,
        START * ACCOUNTS as i64,
        "seed {seed}: {db}: the total"
    );
    let all: BTreeSet<&String> = logs.values().flatten().collect();
    for t in &all {
        let (from, to, _) = parse_transfer(t);
        assert!(
            logs[&from].contains(*t) && logs[&to].contains(*t),
            "seed {seed}: {db}: transfer {t} is half in the database"
        );
    }
    all.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_during_cross_shard_transfers_restore_whole_transactions_only() {
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database(BANK, Some(3), Some(SHARDS)).await;
    let client = cluster.client();
    let endpoints = cluster.endpoints().join(",");
    let shards: BTreeSet<u32> = (0..ACCOUNTS)
        .map(|i| flotilla_query::shard_of_id(&account(i), SHARDS))
        .collect();
    assert_eq!(shards.len(), SHARDS as usize, "accounts on every shard");
    for i in 0..ACCOUNTS {
        client
            .put(BANK, "accounts", &account(i), &body(START, &[]), None)
            .await
            .unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (client, stop, next, done) =
                (client.clone(), stop.clone(), next.clone(), done.clone());
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ w);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let from = rng.random_range(0..ACCOUNTS);
                    let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                    let amount = rng.random_range(1..20);
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if transfer(&client, n, from, to, amount).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    wait_for(Duration::from_secs(60), "transfers commit", async || {
        (done.load(Ordering::Relaxed) >= 20).then_some(())
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let mut resolved_at_restore = 0u64;
    let mut backups = 0;
    while backups < 3 || (resolved_at_restore == 0 && backups < 12) {
        backups += 1;
        // The reads opened 300 ms apart: transfers decided meanwhile must not be half in.
        let out = flotilla(
            &endpoints,
            &[
                "backup",
                "create",
                BANK,
                "--to",
                &root,
                "--stagger-reads",
                "300ms",
            ],
        )
        .await;
        let url = assert_ok(&out, seed).trim().to_string();
        let (_, manifest) = flotilla_backup::open_verified(&url).await.unwrap();
        let cut = manifest.cut.as_ref().expect("a backup at a cut");
        assert_eq!(cut.shards.len(), SHARDS as usize);
        let restored = format!("restored-{backups}");
        let out = flotilla(
            &endpoints,
            &["backup", "restore", &url, "--database", &restored],
        )
        .await;
        let stdout = assert_ok(&out, seed);
        let applied: u64 = stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("applied ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("seed {seed}: the restore says what it applied: {stdout}"));
        assert_eq!(applied, cut.committed_intents, "seed {seed}: {stdout}");
        resolved_at_restore += applied;
        let held = check_bank(&client, &restored, seed).await;
        eprintln!(
            "backup {backups}: {held} transfers, {} pending intents ({applied} committed)",
            cut.shards.iter().map(|s| s.intents).sum::<u64>()
        );
        client.drop_database(&restored).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let committed = done.load(Ordering::Relaxed);
    eprintln!("{committed} transfers committed during {backups} backups");
    assert!(
        committed > 20,
        "seed {seed}: transfers went on during the backups"
    );
    assert!(
        resolved_at_restore > 0,
        "seed {seed}: no backup of {backups} caught a committed transaction's intent"
    );
    check_bank(&client, BANK, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_left_by_a_dead_backup_is_lifted_by_the_shard_leader_and_commits_go_on() {
    let seed: u64 = rand::rng().random();
    let bound = Duration::from_secs(3);
    let mut options = ClusterOptions::default().fast_elections();
    options
        .extra_args
        .extend(["--backup-fence-max".to_string(), "3s".to_string()]);
    let cluster = Cluster::start(3, options).await;
    cluster.create_database(BANK, Some(3), Some(SHARDS)).await;
    let client = cluster.client();
    for i in 0..ACCOUNTS {
        client
            .put(BANK, "accounts", &account(i), &body(START, &[]), None)
            .await
            .unwrap();
    }
    // Accounts 0 and 1 on different shards: their transfer commits in two phases.
    let (a, b) = (0..ACCOUNTS)
        .flat_map(|x| (0..ACCOUNTS).map(move |y| (x, y)))
        .find(|(x, y)| {
            flotilla_query::shard_of_id(&account(*x), SHARDS)
                != flotilla_query::shard_of_id(&account(*y), SHARDS)
        })
        .unwrap();

    // A backup begins a cut and dies: nobody lifts it.
    let cut = client.begin_cut(BANK).await.unwrap();
    assert_eq!(cut.fence_indexes.len(), SHARDS as usize);
    let fenced_at = Instant::now();
    // A transfer meets the fence: its commit waits (no error) until the fence is lifted.
    assert!(
        transfer(&client, 1, a, b, 5).await,
        "seed {seed}: the transfer commits"
    );
    let waited = fenced_at.elapsed();
    assert!(
        waited >= bound - Duration::from_millis(500),
        "seed {seed}: the commit waited for the fence ({waited:?})"
    );
    // The cut can no longer be read: the fence is down on every shard.
    let status = client.database_status(BANK).await.unwrap();
    for shard in &status.shards {
        let addr = shard.leader().unwrap().client_addr.clone();
        let read = client
            .read_shard_at(&addr, BANK, shard.shard, cut.at(shard.shard))
            .await;
        let lifted = match read {
            Err(e) => e,
            Ok(mut stream) => match stream.message().await {
                Err(s) => panic!("seed {seed}: {s}"),
                Ok(first) => panic!("seed {seed}: the lifted cut was read: {first:?}"),
            },
        };
        assert!(matches!(lifted, Error::CutLifted(_)), "{lifted:?}");
    }
    // Lifting it again is harmless; a new cut works.
    client.end_cut(BANK, cut.id).await.unwrap();
    let again = client.begin_cut(BANK).await.unwrap();
    client.end_cut(BANK, again.id).await.unwrap();
    let held = check_bank(&client, BANK, seed).await;
    assert_eq!(held, 1);
}

/// A backup with `--max-rate` reads no faster than its limit (it takes at least the time its
/// bytes need at that rate, less the one-second burst it may save up), while the cut's fences
/// are down as soon as every read is open: transfers across shards commit all the while (with
/// `--backup-fence-max` at a minute, a fence held through the slow drain would make them time
/// out). The backup restores whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_backup_is_slow_but_never_holds_commits_back() {
    let seed: u64 = rand::rng().random();
    eprintln!("seed {seed}");
    let mut options = ClusterOptions::default().fast_elections();
    options
        .extra_args
        .extend(["--backup-fence-max".to_string(), "60s".to_string()]);
    let cluster = Cluster::start(3, options).await;
    cluster.create_database(BANK, Some(3), Some(SHARDS)).await;
    let client = cluster.client();
    let endpoints = cluster.endpoints().join(",");
    for i in 0..ACCOUNTS {
        client
            .put(BANK, "accounts", &account(i), &body(START, &[]), None)
            .await
            .unwrap();
    }
    // Ballast beside the bank: 96 documents of 8 KiB.
    let pad = "p".repeat(8 << 10);
    let mut bytes = 0usize;
    for i in 0..96 {
        let (id, json) = (format!("b{i:03}"), format!(r#"{{"pad":"{pad}"}}"#));
        bytes += "ballast".len() + id.len() + json.len();
        client.put(BANK, "ballast", &id, &json, None).await.unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let worker = {
        let (client, stop, done, failed) =
            (client.clone(), stop.clone(), done.clone(), failed.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let from = rng.random_range(0..ACCOUNTS);
                let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                let counter = if transfer(&client, n, from, to, 1).await {
                    &done
                } else {
                    &failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // 0.1 MiB/s: the ballast alone needs about 8 s.
    let rate = 0.1;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let started = Instant::now();
    let out = flotilla(
        &endpoints,
        &[
            "backup",
            "create",
            BANK,
            "--to",
            &root,
            "--max-rate",
            &rate.to_string(),
        ],
    )
    .await;
    let took = started.elapsed();
    let url = assert_ok(&out, seed).trim().to_string();
    let during = done.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    worker.await.unwrap();

    let least = Duration::from_secs_f64(bytes as f64 / (rate * 1048576.0))
        .saturating_sub(Duration::from_secs(1));
    assert!(
        took >= least,
        "seed {seed}: {bytes} bytes at {rate} MiB/s took {took:?}, less than {least:?}"
    );
    assert!(
        during >= 3,
        "seed {seed}: transfers committed while the backup read ({during} in {took:?})"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "seed {seed}: a transfer failed during the backup (a fence held back its commit?)"
    );
    let out = flotilla(
        &endpoints,
        &["backup", "restore", &url, "--database", "restored"],
    )
    .await;
    assert_ok(&out, seed);
    check_bank(&client, "restored", seed).await;
    let docs = common::all_docs(&client, "restored", &["ballast"]).await;
    assert_eq!(docs.len(), 96, "seed {seed}: the ballast is restored");

    // A rate that is not a positive number is refused before anything is read.
    let out = flotilla(
        &endpoints,
        &["backup", "create", BANK, "--to", &root, "--max-rate", "0"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("positive number of MiB per second"),
        "{}",
        common::text(&out)
    );
}
