//! Incremental backups: each shard's changes since a base backup, and the chain a restore
//! follows back to a full backup.
//!
//! An incremental backup is laid out as a full one (`manifest.json`, `complete`, one file per
//! shard), with these differences:
//! - its manifest carries [`Incremental`]: the base (its URL, id and the SHA-256 of its
//!   manifest, which the base's `complete` marker holds) and, per shard, the revisions
//!   (`after_revision`, `to_revision`] it holds and the commit times of its first and last
//!   change; the shard's `revision` is its `to_revision`, its `documents` the changes held;
//! - each shard's file is `changes-NNNN.jsonl`: the shard's changes in revision order, one
//!   [`ChangeLine`] a line (a put with its version and body, or a delete).
//!
//! A base is a full or an incremental backup of the same database. A chain is a full backup
//! followed by incrementals, each of which starts, shard by shard, at the revision its base
//! ends at ([`check_link`]). [`resolve_chain`] walks the base references from the backup named
//! back to the full one and verifies every file of every link first: a link missing, without
//! its marker, corrupt, or not following on from its base refuses the whole chain, naming it.
//!
//! Restoring a chain folds each shard's changes into its base documents ([`ShardFold`]): the
//! last state of every document the changes touch is kept in memory (bounded by the documents
//! changed in the shard over the chain, not by the shard), then the base's documents are
//! streamed with those replaced. A time cut (`--until`) keeps each shard's changes up to the
//! first one committed after the time: a state each shard had.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{BackupError, Result};
use crate::manifest::{BackupDoc, COMPLETE, CompleteMarker, Manifest};
use crate::read::{get_all, read_lines, verify};
use crate::target::Target;

/// The version of the incremental part of a manifest this build writes and reads.
pub const INCREMENTAL_VERSION: u32 = 1;
/// The longest chain followed (a guard against a cycle of base references).
pub const MAX_CHAIN: usize = 10_000;

/// What makes a manifest an incremental backup's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incremental {
    pub version: u32,
    pub base: BaseRef,
    pub shards: Vec<ShardRange>,
}

/// The backup an incremental one follows on from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRef {
    /// Its URL as given when the incremental was taken.
    pub url: String,
    pub backup_id: String,
    /// The SHA-256 of its manifest (what its `complete` marker holds).
    pub manifest_sha256: String,
}

/// The changes of one shard an incremental backup holds: revisions in (after, to].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRange {
    pub shard: u32,
    /// The revision the base was read at (exclusive).
    pub after_revision: u64,
    /// The revision read up to (inclusive).
    pub to_revision: u64,
    /// Commit times (ms since the Unix epoch) of the first and last change with a known
    /// time; 0 when there is none.
    pub first_unix_ms: u64,
    pub last_unix_ms: u64,
}

/// One change as an incremental backup's file stores it (one JSON object a line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeLine {
    pub revision: u64,
    /// Commit time, ms since the Unix epoch: the clock of the leader that proposed it; 0 when
    /// unknown (written before commit times were kept).
    pub unix_ms: u64,
    pub collection: String,
    pub id: String,
    /// The version written; 0 for a delete.
    pub version: u64,
    /// The new body (JSON text); `None` for a delete.
    pub body: Option<String>,
}

/// An incremental backup's file of shard `shard`.
pub fn changes_file(shard: u32) -> String {
    format!("changes-{shard:04}.jsonl")
}

impl ChangeLine {
    /// One line of a changes file (with its newline).
    pub fn to_line(&self) -> Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }

    /// Parses line `line` (1-based) of file `name`.
    pub fn from_line(name: &str, line: u64, text: &str) -> Result<ChangeLine> {
        serde_json::from_str(text).map_err(|e| BackupError::BadDocument {
            name: name.to_string(),
            line,
            reason: e.to_string(),
        })
    }
}

impl Incremental {
    /// The incremental version is known, every shard of `manifest` has one range, starting
    /// no later than it ends, and ending at the shard's revision.
    pub fn check(&self, manifest: &Manifest) -> Result<()> {
        if !(1..=INCREMENTAL_VERSION).contains(&self.version) {
            return Err(BackupError::UnsupportedVersion(
                self.version,
                INCREMENTAL_VERSION,
            ));
        }
        let ranges: BTreeMap<u32, &ShardRange> = self.shards.iter().map(|r| (r.shard, r)).collect();
        if ranges.len() != self.shards.len() || ranges.len() != manifest.shards.len() {
            return Err(BackupError::InvalidManifest(
                "the incremental ranges do not name every shard once".into(),
            ));
        }
        for s in &manifest.shards {
            let Some(r) = ranges.get(&s.shard) else {
                return Err(BackupError::InvalidManifest(format!(
                    "shard {} has no incremental range",
                    s.shard
                )));
            };
            if r.after_revision > r.to_revision || r.to_revision != s.revision {
                return Err(BackupError::InvalidManifest(format!(
                    "shard {}: range ({}, {}] does not end at its revision {}",
                    s.shard, r.after_revision, r.to_revision, s.revision
                )));
            }
        }
        Ok(())
    }

    /// The commit times of the first and last change with a known time, over every shard.
    pub fn time_range(&self) -> Option<(u64, u64)> {
        let first = self
            .shards
            .iter()
            .map(|r| r.first_unix_ms)
            .filter(|t| *t > 0)
            .min()?;
        let last = self.shards.iter().map(|r| r.last_unix_ms).max()?;
        Some((first, last))
    }
}

/// Checks that incremental `link` (at `link_url`) follows on from `base`, whose manifest's
/// SHA-256 is `base_sha256`: the base it names, of the same database and shards, and each
/// shard's changes starting at the revision the base ends at.
pub fn check_link(
    base: &Manifest,
    base_sha256: &str,
    link_url: &str,
    link: &Manifest,
) -> Result<()> {
    let mismatch = |reason: String| BackupError::ChainMismatch {
        link: link_url.to_string(),
        reason,
    };
    let Some(inc) = &link.incremental else {
        return Err(mismatch(
            "it is a full backup, not an incremental one".into(),
        ));
    };
    if inc.base.backup_id != base.backup_id || inc.base.manifest_sha256 != base_sha256 {
        return Err(mismatch(format!(
            "it names base {} (manifest SHA-256 {}), found {} ({base_sha256})",
            inc.base.backup_id, inc.base.manifest_sha256, base.backup_id
        )));
    }
    if link.database.name != base.database.name
        || link.database.shards.len() != base.database.shards.len()
        || link.cluster_id != base.cluster_id
    {
        return Err(mismatch(format!(
            "it backs up database {} ({} shards) of cluster {}, its base {} ({} shards) of {}",
            link.database.name,
            link.database.shards.len(),
            link.cluster_id,
            base.database.name,
            base.database.shards.len(),
            base.cluster_id
        )));
    }
    for r in &inc.shards {
        let base_revision = base.shards.iter().find(|s| s.shard == r.shard);
        if base_revision.map(|s| s.revision) != Some(r.after_revision) {
            return Err(mismatch(format!(
                "shard {} starts after revision {}, its base ends at {:?}",
                r.shard,
                r.after_revision,
                base_revision.map(|s| s.revision)
            )));
        }
    }
    Ok(())
}

/// One backup of a chain, verified.
#[derive(Debug, Clone)]
pub struct Link {
    pub url: String,
    pub target: Target,
    pub manifest: Manifest,
    /// The SHA-256 of its manifest (from its `complete` marker, checked against the manifest).
    pub manifest_sha256: String,
}

/// The backup at `url` with its manifest and that manifest's SHA-256, checked against its
/// `complete` marker (its files are not read).
pub async fn open_manifest(url: &str) -> Result<Link> {
    let target = Target::open(url)?;
    let manifest = crate::read::manifest_of(&target).await?;
    let manifest_sha256 = marker_sha(&target).await?;
    Ok(Link {
        url: url.to_string(),
        target,
        manifest,
        manifest_sha256,
    })
}

async fn marker_sha(target: &Target) -> Result<String> {
    let bytes = get_all(target, &target.path(&[COMPLETE])).await?;
    let marker: CompleteMarker = serde_json::from_slice(&bytes)?;
    Ok(marker.manifest_sha256)
}

/// The backup at `url` verified (every file), or why it cannot be a link of a chain.
async fn verified_link(url: &str) -> Result<Link> {
    let broken = |source: BackupError| BackupError::BrokenLink {
        link: url.to_string(),
        source: Box::new(source),
    };
    let target = Target::open(url).map_err(broken)?;
    let manifest = verify(&target, |_, _| {}).await.map_err(broken)?;
    let manifest_sha256 = marker_sha(&target).await.map_err(broken)?;
    Ok(Link {
        url: url.to_string(),
        target,
        manifest,
        manifest_sha256,
    })
}

/// Where base `base` of the link at `link_url` is looked for: the URL it was taken from,
/// then beside the link (a chain moved or copied together keeps working).
fn base_candidates(link_url: &str, base: &BaseRef) -> Vec<String> {
    let mut out = vec![base.url.clone()];
    if let Some((parent, _)) = link_url.trim_end_matches('/').rsplit_once('/') {
        let sibling = format!("{parent}/{}", base.backup_id);
        if sibling != base.url {
            out.push(sibling);
        }
    }
    out
}

/// The chain that ends with the backup at `url`: the full backup first, then every
/// incremental in order, each verified (every file's size and SHA-256) and checked to follow
/// on from the one before ([`check_link`]). `progress` is told each link verified.
pub async fn resolve_chain(url: &str, mut progress: impl FnMut(&Link)) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    let mut next = verified_link(url).await?;
    loop {
        progress(&next);
        let base = next.manifest.incremental.as_ref().map(|i| i.base.clone());
        let link_url = next.url.clone();
        links.push(next);
        let Some(base) = base else { break };
        if links.len() >= MAX_CHAIN {
            return Err(BackupError::ChainMismatch {
                link: link_url,
                reason: format!("the chain is longer than {MAX_CHAIN} backups (a cycle?)"),
            });
        }
        let mut found = None;
        let mut first_error = None;
        for candidate in base_candidates(&link_url, &base) {
            match verified_link(&candidate).await {
                Ok(link) if link.manifest.backup_id == base.backup_id => {
                    found = Some(link);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        next = match (found, first_error) {
            (Some(link), _) => link,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(BackupError::BrokenLink {
                    link: base.url.clone(),
                    source: Box::new(BackupError::NotABackup {
                        url: base.url,
                        reason: format!("it holds another backup than {}", base.backup_id),
                    }),
                });
            }
        };
    }
    links.reverse();
    for pair in links.windows(2) {
        check_link(
            &pair[0].manifest,
            &pair[0].manifest_sha256,
            &pair[1].url,
            &pair[1].manifest,
        )?;
    }
    Ok(links)
}

/// The changes of file `name` of the backup at `backup`, in order, streamed.
pub async fn read_changes(
    backup: &Target,
    name: &str,
) -> Result<impl Stream<Item = Result<ChangeLine>> + use<>> {
    let lines = read_lines(backup, name).await?;
    let name = name.to_string();
    Ok(lines.map(move |line| {
        let (number, text) = line?;
        ChangeLine::from_line(&name, number, &text)
    }))
}

/// Folds one shard's changes, in revision order, into the last state of each document they
/// touch, up to an optional time cut.
#[derive(Debug, Default)]
pub struct ShardFold {
    /// (collection, id) -> the document's last state; `None`: deleted.
    last: BTreeMap<(String, String), Option<BackupDoc>>,
    until_ms: Option<u64>,
    stopped: bool,
    applied: u64,
}

impl ShardFold {
    /// A fold keeping the changes up to the first one committed after `until_ms` (all of
    /// them without it). A change of unknown time (0) is kept while the cut is not reached.
    pub fn new(until_ms: Option<u64>) -> ShardFold {
        ShardFold {
            until_ms,
            ..ShardFold::default()
        }
    }

    /// Applies the next change; false once the time cut is reached (this change and every
    /// later one are left out).
    pub fn apply(&mut self, change: ChangeLine) -> bool {
        if self.stopped {
            return false;
        }
        if let Some(until) = self.until_ms
            && change.unix_ms > until
        {
            self.stopped = true;
            return false;
        }
        self.applied += 1;
        let key = (change.collection, change.id);
        let doc = change.body.map(|json| BackupDoc {
            collection: key.0.clone(),
            id: key.1.clone(),
            version: change.version,
            revision: change.revision,
            json,
        });
        self.last.insert(key, doc);
        true
    }

    /// Whether the time cut was reached (later changes of the chain are left out too).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Changes applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// What a base document becomes: itself when no change touched it, else its last state
    /// (`None`: deleted). Each document is answered once: it leaves the fold.
    pub fn resolve(&mut self, doc: BackupDoc) -> Option<BackupDoc> {
        match self.last.remove(&(doc.collection.clone(), doc.id.clone())) {
            Some(last) => last,
            None => Some(doc),
        }
    }

    /// The documents the changes created that no base document was resolved against, in
    /// (collection, id) order.
    pub fn created(self) -> impl Iterator<Item = BackupDoc> {
        self.last.into_values().flatten()
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
