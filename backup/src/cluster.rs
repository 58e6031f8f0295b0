//! Whole-cluster backups: a backup of every database, with the cluster's roles and users, for
//! a restore into a new empty cluster.
//!
//! ```text
//! ROOT/<id>/<database>/...       one database backup each (the layout of the crate docs)
//! ROOT/<id>/cluster.json         format version, cluster id, start time, the databases (name
//!                                and the SHA-256 of each one's manifest), roles, users
//! ROOT/<id>/cluster-complete     written last: the SHA-256 of cluster.json
//! ```
//!
//! Like a database backup, a cluster backup without its marker is never listed nor restored,
//! and its verification checks every database backup it names (each one's manifest against
//! the checksum recorded here, then every file). Passwords and tokens are not kept: a user
//! restored from a backup authenticates by client certificate until given a password again.

use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{BackupError, Result};
use crate::manifest::{COMPLETE, CompleteMarker, Manifest};
use crate::read::{get_all, verify};
use crate::target::Target;

/// The cluster manifest's file name.
pub const CLUSTER_MANIFEST: &str = "cluster.json";
/// The marker written last.
pub const CLUSTER_COMPLETE: &str = "cluster-complete";
/// The version of the cluster manifest this build writes and reads.
pub const CLUSTER_FORMAT_VERSION: u32 = 1;

/// What a cluster backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterManifest {
    pub format_version: u32,
    pub backup_id: String,
    pub cluster_id: String,
    pub started_unix: u64,
    pub databases: Vec<ClusterDatabase>,
    pub roles: Vec<RoleSpec>,
    pub users: Vec<UserSpec>,
}

/// One database of a cluster backup: its backup is `ROOT/<id>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDatabase {
    pub name: String,
    /// The SHA-256 of that backup's manifest (as its `complete` marker names it).
    pub manifest_sha256: String,
}

/// A role and what it grants: (database, permission: `read`, `write` or `admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSpec {
    pub name: String,
    pub grants: Vec<(String, String)>,
}

/// A user and its roles (no password, no token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub name: String,
    pub roles: Vec<String>,
}

impl ClusterManifest {
    pub fn decode(bytes: &[u8]) -> Result<ClusterManifest> {
        let m: ClusterManifest = serde_json::from_slice(bytes)?;
        m.check()?;
        Ok(m)
    }

    pub fn encode(&self) -> Result<Vec<u8>> {
        self.check()?;
        Ok(serde_json::to_vec_pretty(self)?)
    }

    /// Checks the version and that no database is named twice.
    pub fn check(&self) -> Result<()> {
        if self.format_version != CLUSTER_FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion(
                self.format_version,
                CLUSTER_FORMAT_VERSION,
            ));
        }
        let mut names: Vec<&str> = self.databases.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(BackupError::InvalidManifest(format!(
                "database {} is listed twice",
                w[0]
            )));
        }
        Ok(())
    }
}

/// The target of a cluster backup's directory (`ROOT/<id>`).
fn child(root: &Target, id: &str) -> Target {
    Target {
        store: root.store.clone(),
        prefix: root.path(&[id]),
        url: root.child_url(id),
    }
}

/// A cluster backup being written under `ROOT/<id>/`.
pub struct ClusterBackupWriter {
    dir: Target,
}

impl ClusterBackupWriter {
    /// Starts cluster backup `id` under `root`; refuses an id already used there.
    pub async fn start(root: &Target, id: &str) -> Result<ClusterBackupWriter> {
        let dir = child(root, id);
        let mut listing = dir.store.list(Some(&dir.prefix));
        if futures::StreamExt::next(&mut listing).await.is_some() {
            return Err(BackupError::AlreadyExists(id.to_string()));
        }
        Ok(ClusterBackupWriter { dir })
    }

    /// Where the database backups go: start each with `BackupWriter::start(dir, name)`.
    pub fn databases(&self) -> &Target {
        &self.dir
    }

    /// The URL of this cluster backup.
    pub fn url(&self) -> &str {
        &self.dir.url
    }

    /// The manifest checksum of database backup `name`, written under [`Self::databases`]
    /// (read from its `complete` marker; the backup must be complete).
    pub async fn database_checksum(&self, name: &str) -> Result<String> {
        let db = child(&self.dir, name);
        let marker = match get_all(&db, &db.path(&[COMPLETE])).await {
            Err(BackupError::MissingFile(_)) => return Err(BackupError::Incomplete(db.url)),
            other => other?,
        };
        let marker: CompleteMarker = serde_json::from_slice(&marker)?;
        Ok(marker.manifest_sha256)
    }

    /// Writes the cluster manifest, then its marker: only now is the backup complete.
    pub async fn complete(self, manifest: &ClusterManifest) -> Result<()> {
        let bytes = manifest.encode()?;
        let marker = serde_json::to_vec(&CompleteMarker::for_manifest(&bytes))?;
        let store = &self.dir.store;
        store
            .put(&self.dir.path(&[CLUSTER_MANIFEST]), PutPayload::from(bytes))
            .await?;
        store
            .put(
                &self.dir.path(&[CLUSTER_COMPLETE]),
                PutPayload::from(marker),
            )
            .await?;
        Ok(())
    }
}

/// The manifest of the cluster backup at `dir`, checked against its marker.
pub async fn cluster_manifest_of(dir: &Target) -> Result<ClusterManifest> {
    let marker = match get_all(dir, &dir.path(&[CLUSTER_COMPLETE])).await {
        Err(BackupError::MissingFile(_)) => return Err(BackupError::Incomplete(dir.url.clone())),
        other => other?,
    };
    let marker: CompleteMarker = serde_json::from_slice(&marker)?;
    let bytes = get_all(dir, &dir.path(&[CLUSTER_MANIFEST])).await?;
    marker.check(&bytes)?;
    ClusterManifest::decode(&bytes)
}

/// True when `url` holds a cluster backup (complete or not): it has a cluster manifest or
/// marker rather than a database manifest.
pub async fn is_cluster_backup(dir: &Target) -> Result<bool> {
    for name in [CLUSTER_COMPLETE, CLUSTER_MANIFEST] {
        match dir.store.head(&dir.path(&[name])).await {
            Ok(_) => return Ok(true),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// A database of a verified cluster backup: its name, URL and manifest.
#[derive(Debug, Clone)]
pub struct VerifiedDatabase {
    pub name: String,
    pub url: String,
    pub manifest: Manifest,
}

/// Verifies the cluster backup at `dir`: its marker and manifest, then each database backup
/// it names (its manifest against the recorded checksum, then every file). `progress` is
/// called after each database with (databases checked, databases in all).
pub async fn verify_cluster(
    dir: &Target,
    mut progress: impl FnMut(usize, usize),
) -> Result<(ClusterManifest, Vec<VerifiedDatabase>)> {
    let manifest = cluster_manifest_of(dir).await?;
    let mut out = Vec::with_capacity(manifest.databases.len());
    for (i, db) in manifest.databases.iter().enumerate() {
        let backup = child(dir, &db.name);
        let marker = match get_all(&backup, &backup.path(&[COMPLETE])).await {
            Err(BackupError::MissingFile(_)) => {
                return Err(BackupError::Incomplete(backup.url.clone()));
            }
            other => other?,
        };
        let marker: CompleteMarker = serde_json::from_slice(&marker)?;
        if marker.manifest_sha256 != db.manifest_sha256 {
            return Err(BackupError::ChecksumMismatch {
                name: format!("{}/manifest.json", db.name),
                expected: db.manifest_sha256.clone(),
                actual: marker.manifest_sha256,
            });
        }
        let m = verify(&backup, |_, _| {}).await?;
        if m.database.name != db.name {
            return Err(BackupError::InvalidManifest(format!(
                "{} holds a backup of database {}",
                backup.url, m.database.name
            )));
        }
        out.push(VerifiedDatabase {
            name: db.name.clone(),
            url: backup.url,
            manifest: m,
        });
        progress(i + 1, manifest.databases.len());
    }
    Ok((manifest, out))
}

/// Every complete cluster backup directly under `root`, oldest first.
pub async fn list_clusters(root: &Target) -> Result<Vec<(String, ClusterManifest)>> {
    let listing = root.store.list_with_delimiter(Some(&root.prefix)).await?;
    let mut found = Vec::new();
    for dir in listing.common_prefixes {
        let Some(id) = dir.filename().map(str::to_string) else {
            continue;
        };
        let backup = child(root, &id);
        match cluster_manifest_of(&backup).await {
            Ok(m) => found.push((backup.url, m)),
            Err(BackupError::Incomplete(_) | BackupError::MissingFile(_)) => {}
            Err(e) => return Err(e),
        }
    }
    found.sort_by(|a, b| {
        (a.1.started_unix, &a.1.backup_id).cmp(&(b.1.started_unix, &b.1.backup_id))
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> ClusterManifest {
        ClusterManifest {
            format_version: CLUSTER_FORMAT_VERSION,
            backup_id: "c1".into(),
            cluster_id: "abc".into(),
            started_unix: 1,
            databases: vec![ClusterDatabase {
                name: "orders".into(),
                manifest_sha256: "00".into(),
            }],
            roles: vec![RoleSpec {
                name: "clerk".into(),
                grants: vec![("orders".into(), "write".into())],
            }],
            users: vec![UserSpec {
                name: "ann".into(),
                roles: vec!["clerk".into()],
            }],
        }
    }

    #[test]
    fn a_cluster_manifest_round_trips_and_refuses_a_database_twice_or_another_version() {
        let m = manifest();
        assert_eq!(ClusterManifest::decode(&m.encode().unwrap()).unwrap(), m);
        let mut twice = m.clone();
        twice.databases.push(twice.databases[0].clone());
        assert!(matches!(
            twice.check(),
            Err(BackupError::InvalidManifest(_))
        ));
        let mut newer = m;
        newer.format_version = 9;
        assert!(matches!(
            newer.check(),
            Err(BackupError::UnsupportedVersion(9, _))
        ));
    }

    #[tokio::test]
    async fn a_cluster_backup_without_its_marker_is_not_listed_and_a_changed_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = Target::open(dir.path().to_str().unwrap()).unwrap();
        let mut m = manifest();
        m.databases.clear();
        let w = ClusterBackupWriter::start(&root, "c1").await.unwrap();
        w.complete(&m).await.unwrap();
        let partial = child(&root, "c2");
        partial
            .store
            .put(
                &partial.path(&[CLUSTER_MANIFEST]),
                PutPayload::from(m.encode().unwrap()),
            )
            .await
            .unwrap();
        let listed = list_clusters(&root).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(is_cluster_backup(&partial).await.unwrap());
        assert!(matches!(
            verify_cluster(&partial, |_, _| {}).await,
            Err(BackupError::Incomplete(_))
        ));
        // Another id cannot be written over it.
        assert!(matches!(
            ClusterBackupWriter::start(&root, "c1").await,
            Err(BackupError::AlreadyExists(_))
        ));
        // A manifest changed after the marker was written is refused.
        let done = child(&root, "c1");
        m.cluster_id = "other".into();
        done.store
            .put(
                &done.path(&[CLUSTER_MANIFEST]),
                PutPayload::from(m.encode().unwrap()),
            )
            .await
            .unwrap();
        assert!(matches!(
            verify_cluster(&done, |_, _| {}).await,
            Err(BackupError::ChecksumMismatch { .. })
        ));
    }
}
