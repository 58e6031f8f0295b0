//! The PostgreSQL peer of the query and transaction rows: one `postgres` server (Debian's
//! `postgresql` package) on 127.0.0.1 with its data under the benchmark's data directory, so on
//! the same disk as Flotilla's, committing synchronously (`synchronous_commit = on`, `fsync =
//! on`). It runs as the `postgres` system user when the benchmark runs as root (PostgreSQL
//! refuses to run as root), and is driven through `tokio-postgres` from this process.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;

use crate::process::{free_port, spawn_logged, stop_child};

/// The directory, under the benchmark's data directory, of the server's data.
pub const DIR: &str = "postgresql";

/// A running PostgreSQL server. Dropping it kills the server.
pub struct PostgresServer {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// Where Debian installs the server binaries (`/usr/lib/postgresql/<major>/bin`), the newest
/// major first; `initdb` on `PATH` otherwise.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    if let Some((_, bin)) = majors.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|d| d.join("initdb").exists() && d.join("postgres").exists())
        .context(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on \
             PATH): `apt-get install postgresql`, or leave the PostgreSQL rows out with --only",
        )
}

/// The uid and gid to run the server as: ours, or the `postgres` user's when we are root.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .context("looking up the postgres user")?
        .context("running as root, and there is no `postgres` user to run PostgreSQL as")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.as_std_mut().gid(gid).uid(uid);
    }
}

fn chown_tree(path: &Path, user: Option<(u32, u32)>) -> anyhow::Result<()> {
    let Some((uid, gid)) = user else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("handing {} to the postgres user", path.display()))
}

impl PostgresServer {
    /// Creates a fresh cluster under `root/postgresql` and starts it; ready when a connection
    /// succeeds.
    pub async fn start(root: &Path) -> anyhow::Result<PostgresServer> {
        let bin = bin_dir()?;
        let user = server_user()?;
        let dir = root.join(DIR);
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        chown_tree(&dir, user)?;
        let log = dir.join("postgres.log");
        std::fs::write(&log, b"").with_context(|| format!("creating {}", log.display()))?;
        chown_tree(&log, user)?;

        let mut init = Command::new(bin.join("initdb"));
        init.arg("-D")
            .arg(&data)
            .args([
                "-U",
                "bench",
                "--auth=trust",
                "--no-instructions",
                "-E",
                "UTF8",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        as_user(&mut init, user);
        let out = init.output().await.context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }

        let port = free_port()?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "fsync=on"])
            .args(["-c", "synchronous_commit=on"])
            .args(["-c", "max_connections=300"])
            .args(["-c", "shared_buffers=512MB"])
            .args(["-c", "max_pred_locks_per_transaction=256"]);
        as_user(&mut cmd, user);
        let child = spawn_logged(cmd, &log)?;
        let server = PostgresServer {
            port,
            child: Some(child),
            log,
        };
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            match self.connect().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!(
                        "PostgreSQL did not accept connections within {limit:?}: {e:#} (log: {})",
                        self.log.display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A new connection (its connection task runs in the background until the client drops).
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("bench")
            .dbname("postgres")
            .connect(NoTls)
            .await
            .context("connecting to PostgreSQL")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Fast shutdown (SIGTERM), then SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, Duration::from_secs(20)).await;
        }
    }
}
