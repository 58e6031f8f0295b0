//! `flotilla-node dev`: comes up, the printed example works, and Ctrl-C stops every process it
//! started.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use flotilla_client::{Client, Consistency};
use flotilla_testkit::wait::wait_until;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The node binary built by cargo for these tests.
const NODE_BIN: &str = env!("CARGO_BIN_EXE_flotilla-node");

/// A base port whose 3 nodes x 3 ports are all free right now.
fn free_base_port() -> u16 {
    for _ in 0..200 {
        let base: u16 = 20_000 + (rand_u16() % 20_000);
        let all_free = (0..3u16).all(|i| {
            (0..3u16).all(|o| std::net::TcpListener::bind(("127.0.0.1", base + 10 * i + o)).is_ok())
        });
        if all_free {
            return base;
        }
    }
    panic!("no free port range found");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id()) as u16
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_cluster_comes_up_serves_the_example_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev-data");
    let base = free_base_port();
    let mut child = Command::new(NODE_BIN)
        .args([
            "dev",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dev cluster");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    let endpoints = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(90))
            .expect("dev cluster printed its banner");
        banner.push(line.clone());
        if let Some(list) = line.trim().strip_prefix("export FLOTILLA_ENDPOINTS=") {
            break list.split(',').map(str::to_string).collect::<Vec<_>>();
        }
    };
    assert_eq!(endpoints.len(), 3, "{banner:#?}");
    assert!(
        banner.iter().any(|l| l.contains("database `default`")),
        "{banner:#?}"
    );
    // The example from the banner: put then get in database `default`.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        banner.push(line);
    }
    assert!(
        banner
            .iter()
            .any(|l| l.contains("doc put default users alice")),
        "{banner:#?}"
    );
    let client = Client::connect(endpoints).expect("client");
    client
        .put("default", "users", "alice", r#"{"name":"Alice"}"#, None)
        .await
        .expect("example put");
    let doc = client
        .get("default", "users", "alice", Consistency::Linearizable)
        .await
        .expect("example get");
    assert_eq!(
        doc.expect("alice exists").value().expect("json")["name"],
        "Alice"
    );

    let needle = data.to_string_lossy().to_string();
    assert_eq!(
        processes_mentioning(&needle).len(),
        4,
        "the dev command and its 3 nodes run"
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("Ctrl-C");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "dev exited with {status}");
    wait_until(
        Duration::from_secs(20),
        "every node process is gone",
        async || processes_mentioning(&needle).is_empty(),
    )
    .await;
}
