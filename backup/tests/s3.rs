//! A backup written to and read back from a real S3-compatible server (moto's, from PyPI, which
//! scripts/test.sh installs and names in `FLOTILLA_MOTO_SERVER`). Without it the test fails
//! under `CI=true` and is skipped, saying so, elsewhere.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_backup::{
    BackupDoc, BackupError, BackupWriter, DatabaseSpec, FORMAT_VERSION, Manifest, ShardBackup,
    ShardSpec, Target,
};
use futures::TryStreamExt;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `moto_server`: from `FLOTILLA_MOTO_SERVER`, else on the PATH.
fn moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOTILLA_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_round_trips_through_an_s3_compatible_server() {
    let Some(server) = moto_server() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("moto_server not found: scripts/test.sh installs it (FLOTILLA_MOTO_SERVER)");
        }
        eprintln!("SKIPPED: moto_server not found (set FLOTILLA_MOTO_SERVER)");
        return;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", server.display())),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    // One test in this binary: the environment is set before any other thread reads it.
    unsafe {
        std::env::set_var("AWS_ENDPOINT", &endpoint);
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    // The bucket is made with boto3 (installed with moto, beside moto_server) once moto answers.
    let python = server.with_file_name("python");
    let make_bucket = format!(
        "import boto3; boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test').create_bucket(Bucket='backups')"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let made = Command::new(&python)
            .args(["-c", &make_bucket])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if made {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "moto_server did not come up on {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let root = Target::open("s3://backups/cluster-a").unwrap();
    let writer = BackupWriter::start(root.clone(), "b1").await.unwrap();
    let doc = |i: u64| BackupDoc {
        collection: "c".into(),
        id: format!("{i:06}"),
        version: 1,
        revision: i,
        // Big enough that the shard file is uploaded in several parts.
        json: format!(r#"{{"pad":"{}"}}"#, "y".repeat(4000)),
    };
    let mut file = writer.shard(0);
    for i in 0..3000 {
        file.write(&doc(i)).await.unwrap();
    }
    let documents = file.documents();
    let entry = file.finish().await.unwrap();
    assert!(entry.size > 10 << 20, "a multi-part upload: {}", entry.size);
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        backup_id: "b1".into(),
        cluster_id: "c".into(),
        started_unix: 1,
        database: DatabaseSpec {
            name: "db".into(),
            collections: vec![],
            replication_factor: 1,
            shards: vec![ShardSpec {
                shard: 0,
                group_id: 7,
            }],
        },
        shards: vec![ShardBackup {
            shard: 0,
            revision: 3000,
            documents,
            file: entry,
        }],
        cut: None,
        incremental: None,
    };
    let url = writer.url();
    assert_eq!(url, "s3://backups/cluster-a/b1");
    // Not listed before its marker.
    assert!(flotilla_backup::list(&root).await.unwrap().is_empty());
    writer.complete(&manifest).await.unwrap();
    let listed = flotilla_backup::list(&root).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].manifest, manifest);
    let (backup, read) = flotilla_backup::open_verified(&url).await.unwrap();
    let docs: Vec<BackupDoc> = flotilla_backup::read_shard(&backup, &read.shards[0].file.name)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(docs, (0..3000).map(doc).collect::<Vec<_>>());
    // A missing file is caught.
    use object_store::ObjectStoreExt;
    backup
        .store
        .delete(&backup.path(&["shard-0000.jsonl"]))
        .await
        .unwrap();
    assert!(matches!(
        flotilla_backup::open_verified(&url).await,
        Err(BackupError::MissingFile(_))
    ));
}
