//! `flotilla backup create --all` / `restore URL --all` end to end: real node processes, the
//! real `flotilla` binary. Two databases (one with a shard key and an index), a role and a user
//! backed up from one cluster and restored into another, new and empty: every document with
//! its version, the collections and indexes, the role's grants and the user's roles. A second
//! restore into the same cluster is refused as already there; a damaged cluster backup is
//! refused before anything is created.

use flotilla_client::{Client, Consistency, Permission};
use flotilla_testkit::cluster::{Cluster, ClusterOptions};

mod common;
use common::{all_docs, flotilla, text};

const COLLECTIONS: [&str; 2] = ["users", "orders"];

async fn fill(client: &Client) {
    client
        .create_collection("shop", "orders", Some("/cust"))
        .await
        .unwrap();
    client
        .create_index("shop", "orders", "by_total", &["/total"])
        .await
        .unwrap();
    for i in 0..60 {
        let json = format!(r#"{{"cust":"c{}","total":{i}}}"#, i % 7);
        client
            .put("shop", "orders", &format!("o{i}"), &json, None)
            .await
            .unwrap();
        let json = format!(r#"{{"name":"u{i}"}}"#);
        client
            .put("crm", "users", &format!("u{i}"), &json, None)
            .await
            .unwrap();
    }
    // Overwritten documents keep their version through the round trip.
    for i in 0..10 {
        client
            .put(
                "crm",
                "users",
                &format!("u{i}"),
                r#"{"name":"again"}"#,
                None,
            )
            .await
            .unwrap();
    }
    client.role_add("clerk").await.unwrap();
    client
        .role_grant_permission("clerk", "shop", Permission::Write)
        .await
        .unwrap();
    client.user_add("ann", "s3cret-pass").await.unwrap();
    client.user_grant_role("ann", "clerk").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_backup_restores_every_database_role_and_user_into_a_new_cluster() {
    let source = Cluster::start(1, ClusterOptions::default().fast_elections()).await;
    source.create_database("shop", Some(1), Some(3)).await;
    source.create_database("crm", Some(1), Some(1)).await;
    let client = source.client();
    fill(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();

    let out = flotilla(
        &source.endpoint(0),
        &["backup", "create", "--all", "--to", root],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = flotilla(&source.endpoint(0), &["backup", "list", root]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("databases=2\troles=1\tusers=1"),
        "{}",
        text(&out)
    );
    let out = flotilla(&source.endpoint(0), &["backup", "verify", &url]).await;
    assert!(out.status.success(), "{}", text(&out));
    // A cluster backup is restored whole.
    let out = flotilla(
        &source.endpoint(0),
        &["backup", "restore", &url, "--database", "x"],
    )
    .await;
    assert!(
        !out.status.success() && text(&out).contains("--all"),
        "{}",
        text(&out)
    );

    let target = Cluster::start(1, ClusterOptions::default().fast_elections()).await;
    let out = flotilla(&target.endpoint(0), &["backup", "restore", &url, "--all"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let restored = target.client();
    for db in ["shop", "crm"] {
        assert_eq!(
            all_docs(&restored, db, &COLLECTIONS).await,
            all_docs(&client, db, &COLLECTIONS).await,
            "database {db}"
        );
    }
    let again = restored
        .get("crm", "users", "u3", Consistency::Linearizable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.version, 2);
    let indexes = restored.list_indexes("shop", Some("orders")).await.unwrap();
    assert!(indexes.iter().any(|i| i.name == "by_total"), "{indexes:?}");
    let roles = restored.role_list().await.unwrap();
    let clerk = roles
        .iter()
        .find(|r| r.name == "clerk")
        .expect("role clerk");
    assert_eq!(clerk.grants, vec![("shop".to_string(), Permission::Write)]);
    let users = restored.user_list().await.unwrap();
    let ann = users.iter().find(|u| u.name == "ann").expect("user ann");
    assert_eq!(ann.roles, vec!["clerk".to_string()]);
    assert!(!ann.has_password, "passwords are not in a backup");

    // Restored once: a second restore is refused (exit 8) and changes nothing.
    let out = flotilla(&target.endpoint(0), &["backup", "restore", &url, "--all"]).await;
    assert_eq!(out.status.code(), Some(8), "{}", text(&out));

    // A damaged database backup refuses the whole restore before anything is created.
    let shard = dir
        .path()
        .join(url.rsplit('/').next().unwrap())
        .join("crm")
        .join("shard-0000.jsonl");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(&shard, &bytes).unwrap();
    let empty = Cluster::start(1, ClusterOptions::default().fast_elections()).await;
    let out = flotilla(&empty.endpoint(0), &["backup", "restore", &url, "--all"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("corrupt"), "{}", text(&out));
    assert!(empty.client().list_databases().await.unwrap().is_empty());
    assert!(
        empty
            .client()
            .role_list()
            .await
            .unwrap()
            .iter()
            .all(|r| r.name != "clerk")
    );
}
