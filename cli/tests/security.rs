//! The command line against secured clusters, with real node processes and the real `flotilla`
//! binary: a TLS dev cluster (`flotilla-node dev --tls`) used exactly as its banner says, and
//! recorded tokens (`flotilla token`), each revoked on its own and refused by every node while
//! the other tokens of the same user keep working.

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use flotilla_client::{ClientOptions, Credentials, Permission};
use flotilla_testkit::cluster::{Cluster, ClusterOptions, node_binary};
use flotilla_testkit::wait::wait_until;
use serde_json::Value;

/// Runs `flotilla <args>` with `env` (and no FLOTILLA_* variable from the test's environment).
async fn flotilla(args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FLOTILLA_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("the flotilla binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A `flotilla-node dev` process, stopped (SIGTERM, which stops its nodes) when dropped.
struct DevCluster {
    child: Child,
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A base port with the dev cluster's ports of `nodes` nodes (base + 10*i + 0..3) free.
fn free_base(nodes: u16) -> u16 {
    for _ in 0..50 {
        let base = 20_000 + rand::random_range(0..4_000u16) * 10;
        let free = (0..nodes)
            .flat_map(|i| (0..3).map(move |o| base + 10 * i + o))
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free ports for a dev cluster on 127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_dev_cluster_serves_the_command_line_as_its_banner_says_and_refuses_plaintext() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let base = free_base(3);
    let mut child = std::process::Command::new(node_binary())
        .args([
            "dev",
            "--tls",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("flotilla-node dev starts");
    let stdout = child.stdout.take().expect("its stdout");
    let dev = DevCluster { child };
    // The banner, up to the line that ends it; the `export` lines are what a user pastes.
    let banner = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let last = line.contains("Press Ctrl-C");
                lines.push(line);
                if last {
                    break;
                }
            }
            lines
        }),
    )
    .await
    .expect("the dev cluster comes up within 2 minutes")
    .expect("the banner is read");
    let env: Vec<(String, String)> = banner
        .iter()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "FLOTILLA_ENDPOINTS",
            "FLOTILLA_TLS_CA",
            "FLOTILLA_TLS_CERT",
            "FLOTILLA_TLS_KEY"
        ],
        "banner:\n{}",
        banner.join("\n")
    );
    assert!(
        banner.iter().any(|l| l.contains("metrics https://")),
        "{banner:?}"
    );

    let out = flotilla(
        &[
            "doc",
            "put",
            "default",
            "users",
            "alice",
            r#"{"name":"Alice"}"#,
        ],
        &env,
    )
    .await;
    assert_exit(&out, 0, "a put over TLS");
    let out = flotilla(
        &["-o", "json", "doc", "get", "default", "users", "alice"],
        &env,
    )
    .await;
    assert_exit(&out, 0, "a get over TLS");
    let got: Value = serde_json::from_slice(&out.stdout).expect("a JSON line");
    assert_eq!(got["value"]["name"], "Alice");
    // Every node serves it (each was reached through mutual TLS by the others).
    for i in 0..3u16 {
        let endpoint = format!("127.0.0.1:{}", base + 10 * i);
        let out = flotilla(
            &[
                "--endpoints",
                &endpoint,
                "doc",
                "get",
                "default",
                "users",
                "alice",
            ],
            &env,
        )
        .await;
        assert_exit(&out, 0, &format!("a get from node-{i}"));
    }
    // The same files as flags, spelled as curl spells them.
    let out = flotilla(
        &[
            "--cacert", &env[1].1, "--cert", &env[2].1, "--key", &env[3].1, "doc", "get",
            "default", "users", "alice",
        ],
        &env[..1],
    )
    .await;
    assert_exit(&out, 0, "a get with --cacert, --cert and --key");

    // Without the CA: plaintext to a TLS port, then TLS trusting a certificate that did not
    // sign the nodes' (the client's own). Both fail as "unavailable" with one line on stderr,
    // never a panic.
    let endpoints = env[..1].to_vec();
    let mut wrong_ca = endpoints.clone();
    wrong_ca.push(("FLOTILLA_TLS_CA".into(), env[2].1.clone()));
    for (what, env) in [("plaintext", &endpoints), ("another CA", &wrong_ca)] {
        let out = flotilla(
            &["--timeout", "3s", "doc", "get", "default", "users", "alice"],
            env,
        )
        .await;
        assert_exit(&out, 5, what);
        assert_eq!(text(&out.stderr).trim().lines().count(), 1, "{what}");
        assert!(out.stdout.is_empty(), "{what}");
    }
    drop(dev);
}

/// The JSON object `out` printed on its one line.
#[track_caller]
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// The ids `token list -o json` printed.
fn listed(out: &Output) -> Vec<String> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_expired_token_is_refused_by_every_node_and_the_users_other_token_works() {
    let cluster = Cluster::start(3, ClusterOptions::default().fast_elections()).await;
    cluster.create_database("shop", Some(3), Some(1)).await;
    let admin = cluster.client();
    admin.user_add("root", "root-pw").await.expect("user root");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("root is root");
    admin.role_add("shop-writer").await.expect("a role");
    admin
        .role_grant_permission("shop-writer", "shop", Permission::Write)
        .await
        .expect("a grant");
    for user in ["ann", "bob"] {
        admin.user_add(user, "pw").await.expect("a user");
        admin
            .user_grant_role(user, "shop-writer")
            .await
            .expect("a role granted");
    }
    admin.auth_enable().await.expect("auth enabled");
    let as_root = cluster.client_with(ClientOptions {
        credentials: Some(Credentials::new("root", "root-pw")),
        ..ClusterOptions::default().client_options
    });
    wait_until(Duration::from_secs(10), "root authenticates", async || {
        as_root.auth_status().await.is_ok()
    })
    .await;

    let everywhere = cluster.endpoints().join(",");
    let with = |endpoints: &str, extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut env = vec![("FLOTILLA_ENDPOINTS".to_string(), endpoints.to_string())];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let ann = with(
        &everywhere,
        &[("FLOTILLA_USER", "ann"), ("FLOTILLA_PASSWORD", "pw")],
    );
    let bob = with(
        &everywhere,
        &[("FLOTILLA_USER", "bob"), ("FLOTILLA_PASSWORD", "pw")],
    );

    // Three tokens of ann: two for 30 days, one for 3 seconds.
    let mut made = Vec::new();
    for (description, ttl) in [("first", "30d"), ("second", "30d"), ("short", "3s")] {
        let out = flotilla(
            &[
                "-o",
                "json",
                "token",
                "create",
                "--ttl",
                ttl,
                "--description",
                description,
            ],
            &ann,
        )
        .await;
        assert_exit(&out, 0, "token create");
        let v = json(&out);
        let id = v["id"].as_str().expect("an id").to_string();
        let token = v["token"].as_str().expect("a token").to_string();
        made.push((id, token));
    }
    let [(first_id, first), (second_id, second), (short_id, short)] = &made[..] else {
        unreachable!("three tokens made");
    };
    let out = flotilla(&["-o", "json", "token", "list"], &ann).await;
    assert_exit(&out, 0, "token list");
    let mut ids = listed(&out);
    ids.sort();
    let mut want = vec![first_id.clone(), second_id.clone(), short_id.clone()];
    want.sort();
    assert_eq!(ids, want);
    // The table form shows the same ids, never the tokens.
    let out = flotilla(&["token", "list"], &ann).await;
    assert_exit(&out, 0, "token list as a table");
    assert!(text(&out.stdout).contains(first_id.as_str()));
    assert!(!text(&out.stdout).contains(first.as_str()));

    // A token works on every node, as its user.
    let get_on = |node: usize, token: &str| {
        let env = with(
            &cluster.node(node).client_addr,
            &[("FLOTILLA_TOKEN", token)],
        );
        async move { flotilla(&["doc", "get", "shop", "c", "k"], &env).await }
    };
    let out = flotilla(
        &["doc", "put", "shop", "c", "k", "{}"],
        &with(&everywhere, &[("FLOTILLA_TOKEN", first)]),
    )
    .await;
    assert_exit(&out, 0, "a put with the first token");
    let out = flotilla(
        &["auth", "status", "-o", "json"],
        &with(&everywhere, &[("FLOTILLA_TOKEN", second)]),
    )
    .await;
    assert_exit(&out, 0, "auth status with the second token");
    assert_eq!(json(&out)["user"], "ann");

    // Bob cannot revoke ann's token: to him it does not exist.
    let out = flotilla(&["token", "revoke", first_id], &bob).await;
    assert_exit(&out, 3, "bob revoking ann's token");
    let out = flotilla(&["token", "revoke", first_id], &ann).await;
    assert_exit(&out, 0, "ann revoking her first token");
    for node in 0..3 {
        // Each node refuses it as soon as it applied the revocation (at once on the node that
        // answered, within moments on the others).
        let refused = async || get_on(node, first).await.status.code() == Some(10);
        wait_until(
            Duration::from_secs(10),
            &format!("node {node} refuses the revoked token"),
            refused,
        )
        .await;
        let out = get_on(node, first).await;
        assert_exit(&out, 10, "the revoked token");
        assert!(
            text(&out.stderr).contains("revoked"),
            "{}",
            text(&out.stderr)
        );
        assert_exit(&get_on(node, second).await, 0, "the other token of ann");
    }
    let out = flotilla(&["token", "revoke", first_id], &ann).await;
    assert_exit(&out, 3, "revoking a revoked token");

    // The short token expires: refused everywhere, and gone from the list.
    let expired = async || get_on(0, short).await.status.code() == Some(10);
    wait_until(Duration::from_secs(15), "the short token expires", expired).await;
    for node in 0..3 {
        let out = get_on(node, short).await;
        assert_exit(&out, 10, "the expired token");
        assert!(
            text(&out.stderr).contains("expired"),
            "{}",
            text(&out.stderr)
        );
        assert_exit(&get_on(node, second).await, 0, "the other token of ann");
    }
    let out = flotilla(&["-o", "json", "token", "list"], &ann).await;
    assert_eq!(listed(&out), std::slice::from_ref(second_id));
    // Root sees every user's tokens.
    let root = with(
        &everywhere,
        &[("FLOTILLA_USER", "root"), ("FLOTILLA_PASSWORD", "root-pw")],
    );
    let out = flotilla(&["-o", "json", "token", "list"], &root).await;
    assert_exit(&out, 0, "root lists tokens");
    assert_eq!(listed(&out), std::slice::from_ref(second_id));
}
