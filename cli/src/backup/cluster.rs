//! `flotilla backup create --all` and `flotilla backup restore URL --all`: every database of a
//! cluster, with its roles and users, into a new empty cluster (layout in
//! `flotilla_backup::cluster`).
//!
//! Each database is backed up as `backup create DB` does (so each holds its own consistent
//! point; databases are independent, transactions never span two). A restore verifies the
//! whole cluster backup first and refuses, creating nothing, when it is incomplete or damaged
//! or when the cluster already has a database or role of the same name; then it creates the
//! roles, the users (with their roles; no password: they authenticate by client certificate
//! until given one again with `flotilla user passwd`) and restores every database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use flotilla_backup::{
    ClusterBackupWriter, ClusterDatabase, ClusterManifest, RoleSpec, Target, UserSpec,
    cluster::CLUSTER_FORMAT_VERSION,
};
use flotilla_client::{Client, Error as ClientError, Permission};

/// The word a permission is kept as.
fn permission_name(p: Permission) -> &'static str {
    match p {
        Permission::Read => "read",
        Permission::Write => "write",
        Permission::Admin => "admin",
    }
}

fn permission_of(name: &str) -> Result<Permission> {
    Ok(match name {
        "read" => Permission::Read,
        "write" => Permission::Write,
        "admin" => Permission::Admin,
        other => bail!("the backup grants an unknown permission {other:?}"),
    })
}

/// The built-in role, which every cluster has.
const ROOT_ROLE: &str = "root";

/// Backs up every database, the roles and the users under `to`; answers the backup's URL.
pub async fn create_all(
    client: &Client,
    to: &str,
    id: Option<&str>,
    reading: &super::Reading,
) -> Result<String> {
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let cluster = client.cluster_status().await?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => format!("cluster-{}", started.as_millis()),
    };
    let writer = ClusterBackupWriter::start(&Target::open(to)?, &id).await?;
    let roles = client
        .role_list()
        .await?
        .into_iter()
        .filter(|r| !r.cluster_admin && r.name != ROOT_ROLE)
        .map(|r| RoleSpec {
            name: r.name,
            grants: r
                .grants
                .into_iter()
                .map(|(db, p)| (db, permission_name(p).to_string()))
                .collect(),
        })
        .collect();
    let users = client
        .user_list()
        .await?
        .into_iter()
        .map(|u| UserSpec {
            name: u.name,
            roles: u.roles,
        })
        .collect();
    let names: Vec<String> = client
        .list_databases()
        .await?
        .into_iter()
        .map(|d| d.name)
        .collect();
    let mut databases = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        eprintln!("database {}/{}: {name}", i + 1, names.len());
        match super::create(
            client,
            name,
            writer.databases().clone(),
            Some(name),
            reading,
        )
        .await
        {
            Ok(_) => {}
            // Dropped since it was listed: not in the backup.
            Err(e) if matches!(e.downcast_ref(), Some(ClientError::NotFound(_))) => {
                eprintln!("database {name} was dropped meanwhile; left out");
                continue;
            }
            Err(e) => return Err(e.context(format!("backing up database {name}"))),
        }
        databases.push(ClusterDatabase {
            name: name.clone(),
            manifest_sha256: writer.database_checksum(name).await?,
        });
    }
    let manifest = ClusterManifest {
        format_version: CLUSTER_FORMAT_VERSION,
        backup_id: id,
        cluster_id: cluster.cluster_id,
        started_unix: started.as_secs(),
        databases,
        roles,
        users,
    };
    let url = writer.url().to_string();
    writer.complete(&manifest).await?;
    Ok(url)
}

/// Refuses (as already existing) when any of `wanted` is among `present` (`kind`s).
fn refuse_present<'a>(
    kind: &str,
    present: impl Iterator<Item = String>,
    wanted: impl Iterator<Item = &'a String> + Clone,
) -> Result<()> {
    let clash: Vec<String> = present.filter(|n| wanted.clone().any(|w| w == n)).collect();
    if clash.is_empty() {
        return Ok(());
    }
    Err(anyhow::Error::new(ClientError::AlreadyExists(format!(
        "the cluster already has {kind}(s) {}: restore a whole cluster into a new empty one (nothing was created)",
        clash.join(", ")
    ))))
}

/// Restores the cluster backup at `url` into this cluster (see the module notes).
pub async fn restore_all(client: &Client, url: &str, wait: Duration) -> Result<()> {
    let dir = Target::open(url)?;
    let (manifest, databases) = flotilla_backup::verify_cluster(&dir, |done, all| {
        eprintln!("verified {done}/{all} databases");
    })
    .await
    .context("refusing to restore")?;
    let databases_there = client.list_databases().await?.into_iter().map(|d| d.name);
    refuse_present(
        "database",
        databases_there,
        manifest.databases.iter().map(|d| &d.name),
    )?;
    let roles_there = client.role_list().await?.into_iter().map(|r| r.name);
    refuse_present("role", roles_there, manifest.roles.iter().map(|r| &r.name))?;
    for role in &manifest.roles {
        client.role_add(&role.name).await?;
        for (db, p) in &role.grants {
            client
                .role_grant_permission(&role.name, db, permission_of(p)?)
                .await?;
        }
    }
    let users_there: Vec<String> = client
        .user_list()
        .await?
        .into_iter()
        .map(|u| u.name)
        .collect();
    for user in &manifest.users {
        if !users_there.contains(&user.name) {
            // No password: certificate authentication until one is set.
            client.user_add(&user.name, "").await?;
        }
        for role in &user.roles {
            client.user_grant_role(&user.name, role).await?;
        }
    }
    eprintln!(
        "{} role(s) and {} user(s) restored (users need a new password or a client certificate)",
        manifest.roles.len(),
        manifest.users.len()
    );
    for (i, db) in databases.iter().enumerate() {
        eprintln!("database {}/{}: {}", i + 1, databases.len(), db.name);
        super::restore::restore(client, &db.url, &db.name, wait)
            .await
            .with_context(|| format!("restoring database {}", db.name))?;
    }
    println!(
        "restored cluster backup {} ({} databases) from cluster {}",
        manifest.backup_id,
        databases.len(),
        manifest.cluster_id
    );
    Ok(())
}
