//! The transaction part of a backup taken at a consistent cut (format 3): per shard, the
//! pending intents and the transaction records its read held, in `txn-NNNN.jsonl` (one JSON
//! object a line: `{"intent": ...}` or `{"record": ...}`), listed and checksummed in the
//! manifest's [`CutInfo`].
//!
//! A restore applies the write of every intent whose transaction has a record, in any shard
//! of the backup, saying committed, and drops every other intent ([`Resolver`]); nothing of
//! the transactions themselves is restored. With the reads of a consistent cut, that puts
//! every transaction wholly in the restored database or wholly out of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{BackupError, Result};
use crate::manifest::{BackupDoc, FileEntry};

/// What a backup taken at a cut adds to its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutInfo {
    /// The cut's id (hex), as the cluster named it.
    pub cut: String,
    /// Intents in the backup whose transaction's record says committed: a restore applies
    /// their writes.
    pub committed_intents: u64,
    /// Per shard, the file of its intents and records.
    pub shards: Vec<ShardTxns>,
}

/// One shard's intents and records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTxns {
    pub shard: u32,
    pub intents: u64,
    pub records: u64,
    pub file: FileEntry,
}

/// The write an intent makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentWrite {
    /// The body (JSON text) the document gets.
    Put {
        json: String,
    },
    Delete,
}

/// A transaction's write pending on a document of a shard when it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupIntent {
    /// The transaction's id (32 hex digits).
    pub txn: String,
    pub collection: String,
    pub id: String,
    pub write: IntentWrite,
    /// The version the document has once the write applies (0 for a delete).
    pub version: u64,
}

/// A transaction's decision, as its primary shard held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub txn: String,
    pub committed: bool,
}

/// One line of a shard's transaction file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnLine {
    Intent(BackupIntent),
    Record(BackupRecord),
}

/// The transaction file's name for shard `shard`.
pub fn txn_file(shard: u32) -> String {
    format!("txn-{shard:04}.jsonl")
}

impl TxnLine {
    /// One line of a transaction file (with its newline).
    pub fn to_line(&self) -> Result<Vec<u8>> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }

    /// Parses line `line` (1-based) of file `name`.
    pub fn from_line(name: &str, line: u64, text: &str) -> Result<TxnLine> {
        serde_json::from_str(text).map_err(|e| BackupError::BadDocument {
            name: name.to_string(),
            line,
            reason: e.to_string(),
        })
    }
}

/// The transactions a set of records says committed.
pub fn committed<'a>(records: impl IntoIterator<Item = &'a BackupRecord>) -> BTreeSet<String> {
    records
        .into_iter()
        .filter(|r| r.committed)
        .map(|r| r.txn.clone())
        .collect()
}

/// Turns one shard's documents and intents into the documents a restore writes: the writes of
/// the intents of committed transactions applied, every other intent dropped.
#[derive(Debug, Clone)]
pub struct Resolver {
    writes: BTreeMap<(String, String), (IntentWrite, u64)>,
    revision: u64,
    applied: u64,
}

impl Resolver {
    /// For a shard read at `revision` holding `intents`; `committed` names every transaction
    /// the backup's records (of all shards) say committed.
    pub fn new(intents: &[BackupIntent], committed: &BTreeSet<String>, revision: u64) -> Self {
        let writes = intents
            .iter()
            .filter(|i| committed.contains(&i.txn))
            .map(|i| {
                (
                    (i.collection.clone(), i.id.clone()),
                    (i.write.clone(), i.version),
                )
            })
            .collect();
        Resolver {
            writes,
            revision,
            applied: 0,
        }
    }

    /// What document `doc` of the shard becomes (`None`: a committed intent deletes it).
    pub fn doc(&mut self, mut doc: BackupDoc) -> Option<BackupDoc> {
        let key = (doc.collection.clone(), doc.id.clone());
        let Some((write, version)) = self.writes.remove(&key) else {
            return Some(doc);
        };
        self.applied += 1;
        match write {
            IntentWrite::Put { json } => {
                doc.json = json;
                doc.version = version;
                doc.revision = self.revision;
                Some(doc)
            }
            IntentWrite::Delete => None,
        }
    }

    /// The documents committed intents create (those [`Resolver::doc`] did not meet), and how
    /// many committed intents were applied in all.
    pub fn rest(mut self) -> (Vec<BackupDoc>, u64) {
        let mut out = Vec::new();
        for ((collection, id), (write, version)) in std::mem::take(&mut self.writes) {
            self.applied += 1;
            if let IntentWrite::Put { json } = write {
                out.push(BackupDoc {
                    collection,
                    id,
                    version,
                    revision: self.revision,
                    json,
                });
            }
        }
        (out, self.applied)
    }
}

/// A shard's documents as a restore writes them (see [`Resolver`]), and the committed intents
/// applied.
pub fn resolve(
    docs: impl IntoIterator<Item = BackupDoc>,
    intents: &[BackupIntent],
    committed: &BTreeSet<String>,
    revision: u64,
) -> (Vec<BackupDoc>, u64) {
    let mut resolver = Resolver::new(intents, committed, revision);
    let mut out: Vec<BackupDoc> = docs.into_iter().filter_map(|d| resolver.doc(d)).collect();
    let (created, applied) = resolver.rest();
    out.extend(created);
    (out, applied)
}

/// The lines of transaction file `name` of the backup at `backup` (small: read whole).
pub async fn read_txns(backup: &crate::Target, name: &str) -> Result<Vec<TxnLine>> {
    use object_store::ObjectStoreExt;
    let bytes = match backup.store.get(&backup.path(&[name])).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BackupError::MissingFile(name.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| BackupError::BadDocument {
        name: name.to_string(),
        line: 0,
        reason: e.to_string(),
    })?;
    text.lines()
        .enumerate()
        .map(|(i, line)| TxnLine::from_line(name, i as u64 + 1, line))
        .collect()
}

/// The bytes of a shard's transaction file holding `lines`.
pub fn txn_file_bytes(lines: &[TxnLine]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for l in lines {
        out.extend(l.to_line()?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, version: u64, json: &str) -> BackupDoc {
        BackupDoc {
            collection: "acct".into(),
            id: id.into(),
            version,
            revision: 5,
            json: json.into(),
        }
    }

    fn intent(txn: &str, id: &str, write: IntentWrite, version: u64) -> BackupIntent {
        BackupIntent {
            txn: txn.into(),
            collection: "acct".into(),
            id: id.into(),
            write,
            version,
        }
    }

    fn put(json: &str) -> IntentWrite {
        IntentWrite::Put { json: json.into() }
    }

    #[test]
    fn committed_intents_are_applied_and_all_others_dropped() {
        let records = [
            BackupRecord {
                txn: "t1".into(),
                committed: true,
            },
            BackupRecord {
                txn: "t2".into(),
                committed: false,
            },
        ];
        let committed = committed(&records);
        let docs = vec![
            doc("a", 3, "10"),
            doc("b", 1, "20"),
            doc("c", 7, "30"),
            doc("d", 2, "40"),
        ];
        let intents = vec![
            intent("t1", "a", put("15"), 4),
            intent("t1", "d", IntentWrite::Delete, 0),
            intent("t1", "new", put("1"), 1),
            intent("t2", "b", put("99"), 2),
            // No record anywhere: undecided at the cut, dropped.
            intent("t3", "c", put("99"), 8),
        ];
        let (mut out, applied) = resolve(docs, &intents, &committed, 9);
        out.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(applied, 3);
        let seen: Vec<(&str, u64, &str, u64)> = out
            .iter()
            .map(|d| (d.id.as_str(), d.version, d.json.as_str(), d.revision))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", 4, "15", 9),
                ("b", 1, "20", 5),
                ("c", 7, "30", 5),
                ("new", 1, "1", 9)
            ]
        );
    }

    #[test]
    fn a_record_in_another_shard_decides_this_shards_intents() {
        // Shard 1 holds the intents, shard 0 (the primary) the record.
        let shard0 = [BackupRecord {
            txn: "t".into(),
            committed: true,
        }];
        let shard1_intents = [intent("t", "x", put("2"), 2)];
        let (out, applied) = resolve(
            vec![doc("x", 1, "1")],
            &shard1_intents,
            &committed(&shard0),
            6,
        );
        assert_eq!(applied, 1);
        assert_eq!(out[0].json, "2");
        let (out, applied) = resolve(vec![doc("x", 1, "1")], &shard1_intents, &BTreeSet::new(), 6);
        assert_eq!((applied, out[0].json.as_str()), (0, "1"));
    }

    #[test]
    fn transaction_lines_round_trip_and_name_a_bad_line() {
        let lines = [
            TxnLine::Intent(intent("t", "a\nb", IntentWrite::Delete, 0)),
            TxnLine::Record(BackupRecord {
                txn: "t".into(),
                committed: true,
            }),
        ];
        for l in &lines {
            let bytes = l.to_line().unwrap();
            let text = std::str::from_utf8(&bytes).unwrap().trim_end();
            assert!(!text.contains('\n'));
            assert_eq!(&TxnLine::from_line("f", 1, text).unwrap(), l);
        }
        assert!(matches!(
            TxnLine::from_line("f", 3, "{\"nope\":1}"),
            Err(BackupError::BadDocument { line: 3, .. })
        ));
    }
}
