//! `flotilla txn DB --file ops.json`: a JSON array of operations run as one transaction
//! (retried from the start when it conflicts with another), each result printed and then the
//! outcome; `flotilla txn list DB`: open and recovering transactions, and the decided ones
//! whose record is still kept.

use anyhow::{Context, Result};
use flotilla_client::{Client, CommitOutcome, CommittedWrite, Error, TransactionInfo};
use serde::{Deserialize, Serialize};

use crate::render::Output;

/// One operation of the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    Get {
        collection: String,
        id: String,
        /// In a collection with a shard key: the document's value there.
        shard_key: Option<serde_json::Value>,
    },
    /// Every document of the collection a predicate matches (its text form in `where`;
    /// every document when absent).
    Query {
        collection: String,
        #[serde(rename = "where")]
        where_text: Option<String>,
    },
    Put {
        collection: String,
        id: String,
        json: serde_json::Value,
        if_version: Option<u64>,
    },
    Delete {
        collection: String,
        id: String,
        if_version: Option<u64>,
        shard_key: Option<serde_json::Value>,
    },
}

/// The JSON text of a shard key value (empty when none is given).
fn key_text(shard_key: &Option<serde_json::Value>) -> String {
    shard_key
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default()
}

/// A document body as JSON (its text as a string if it is not JSON).
fn body(json: String) -> serde_json::Value {
    serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json))
}

/// What one operation answered inside the transaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpResult {
    pub op: &'static str,
    pub collection: String,
    pub id: String,
    /// For a get: the document (null when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<serde_json::Value>,
    /// For a query: the matching documents, each with its id and version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<Vec<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// For a put or delete: the document's shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

/// Parses the operations file.
pub fn parse(text: &str) -> Result<Vec<Op>, Error> {
    let ops: Vec<Op> = serde_json::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("the operations file: {e}")))?;
    if ops.is_empty() {
        return Err(Error::InvalidArgument(
            "the operations file is empty".into(),
        ));
    }
    Ok(ops)
}

/// Runs `ops` as one transaction on `database`, from the start again (up to 10 times) while it
/// conflicts with other transactions.
pub async fn run(
    client: &Client,
    database: &str,
    ops: &[Op],
) -> Result<(Vec<OpResult>, CommitOutcome), Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        match run_once(client, database, ops).await {
            Err(Error::TxnConflict(_) | Error::TxnAborted(_)) if tries < 10 => {
                tokio::time::sleep(client.options().backoff(tries)).await;
            }
            other => return other,
        }
    }
}

async fn run_once(
    client: &Client,
    database: &str,
    ops: &[Op],
) -> Result<(Vec<OpResult>, CommitOutcome), Error> {
    let txn = client.begin(database, None).await?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let done = match op {
            Op::Get {
                collection,
                id,
                shard_key,
            } => txn
                .get_keyed(collection, id, &key_text(shard_key))
                .await
                .map(|doc| OpResult {
                    op: "get",
                    collection: collection.clone(),
                    id: id.clone(),
                    version: doc.as_ref().map(|d| d.version),
                    document: Some(doc.map_or(serde_json::Value::Null, |d| body(d.json))),
                    documents: None,
                    shard: None,
                }),
            Op::Query {
                collection,
                where_text,
            } => {
                let predicate = match where_text {
                    Some(text) => flotilla_client::parse_text(text).map_err(Error::from),
                    None => Ok(flotilla_client::Predicate::All),
                };
                let found = match predicate {
                    Ok(p) => txn.query(collection, &p).await,
                    Err(e) => Err(e),
                };
                found.map(|docs| OpResult {
                    op: "query",
                    collection: collection.clone(),
                    id: String::new(),
                    version: None,
                    shard: None,
                    document: None,
                    documents: Some(
                        docs.into_iter()
                            .map(|d| {
                                serde_json::json!({"id": d.id, "version": d.version, "json": body(d.json)})
                            })
                            .collect(),
                    ),
                })
            }
            Op::Put {
                collection,
                id,
                json,
                if_version,
            } => txn
                .put(collection, id, &json.to_string(), *if_version)
                .await
                .map(|shard| OpResult {
                    op: "put",
                    collection: collection.clone(),
                    id: id.clone(),
                    document: None,
                    documents: None,
                    version: None,
                    shard: Some(shard),
                }),
            Op::Delete {
                collection,
                id,
                if_version,
                shard_key,
            } => txn
                .delete_keyed(collection, id, &key_text(shard_key), *if_version)
                .await
                .map(|shard| OpResult {
                    op: "delete",
                    collection: collection.clone(),
                    id: id.clone(),
                    document: None,
                    documents: None,
                    version: None,
                    shard: Some(shard),
                }),
        };
        match done {
            Ok(r) => results.push(r),
            Err(e) => {
                let _ = txn.rollback().await;
                return Err(e);
            }
        }
    }
    let outcome = txn.commit().await?;
    fill_versions(&mut results, &outcome.writes);
    Ok((results, outcome))
}

/// Gives each put and delete the version the commit wrote on its document: the one of the
/// same collection, id and shard (in a collection with a shard key, one id may name a
/// document on each shard).
fn fill_versions(results: &mut [OpResult], writes: &[CommittedWrite]) {
    for r in results {
        let Some(shard) = r.shard else { continue };
        if let Some(w) = writes
            .iter()
            .find(|w| w.collection == r.collection && w.id == r.id && w.shard == shard)
        {
            r.version = Some(w.version);
        }
    }
}

/// The results and the outcome, as text or JSON lines.
pub fn render(results: &[OpResult], outcome: &CommitOutcome, output: Output) -> String {
    let mut out = String::new();
    for r in results {
        match output {
            Output::Json => {
                out.push_str(&serde_json::to_string(r).unwrap_or_default());
                out.push('\n');
            }
            Output::Table => {
                if let Some(docs) = &r.documents {
                    out.push_str(&format!(
                        "{:<7}{}  {} document{}\n",
                        r.op,
                        r.collection,
                        docs.len(),
                        if docs.len() == 1 { "" } else { "s" }
                    ));
                    for d in docs {
                        out.push_str(&format!(
                            "         {}  v{}  {}\n",
                            d["id"].as_str().unwrap_or_default(),
                            d["version"],
                            d["json"]
                        ));
                    }
                    continue;
                }
                let detail = match (&r.document, r.version) {
                    (Some(serde_json::Value::Null), _) => "absent".to_string(),
                    (Some(d), Some(v)) => format!("v{v} {d}"),
                    (None, Some(v)) if v > 0 => format!("now v{v}"),
                    (None, _) if r.op == "delete" => "deleted".to_string(),
                    _ => String::new(),
                };
                out.push_str(&format!(
                    "{:<7}{}/{}  {}\n",
                    r.op, r.collection, r.id, detail
                ));
            }
        }
    }
    match output {
        Output::Json => out.push_str(&format!(
            "{{\"outcome\":\"committed\",\"shards\":{}}}\n",
            outcome.shards
        )),
        Output::Table => out.push_str(&format!(
            "committed ({} shard{})\n",
            outcome.shards,
            if outcome.shards == 1 { "" } else { "s" }
        )),
    }
    out
}

/// Open and recovering transactions.
pub fn render_list(txns: &[TransactionInfo], output: Output) -> String {
    let mut out = String::new();
    match output {
        Output::Json => {
            for t in txns {
                out.push_str(&serde_json::to_string(t).unwrap_or_default());
                out.push('\n');
            }
        }
        Output::Table => {
            out.push_str("TXN                               STATE       DECISION   COORDINATOR  AGE      READS  WRITES  SHARDS\n");
            for t in txns {
                let shards: Vec<String> = t.shards.iter().map(u32::to_string).collect();
                out.push_str(&format!(
                    "{:<34}{:<12}{:<11}{:<13}{:<9}{:<7}{:<8}{}\n",
                    t.txn,
                    t.state,
                    t.decision.as_deref().unwrap_or("-"),
                    t.coordinator,
                    format!("{}ms", t.age_ms),
                    t.reads,
                    t.writes,
                    shards.join(",")
                ));
            }
        }
    }
    out
}

/// Reads the operations file (`-` for stdin).
pub fn read_file(path: &std::path::Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading the operations from stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_gets_puts_and_deletes_with_optional_versions() {
        let ops = parse(
            r#"[{"op":"get","collection":"acct","id":"a0"},
                {"op":"put","collection":"acct","id":"a0","json":{"balance":90},"if_version":3},
                {"op":"delete","collection":"acct","id":"a1","shard_key":"c42"},
                {"op":"query","collection":"acct","where":"/balance < 0"}]"#,
        )
        .unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(
            ops[1],
            Op::Put {
                collection: "acct".into(),
                id: "a0".into(),
                json: serde_json::json!({"balance": 90}),
                if_version: Some(3),
            }
        );
        assert!(matches!(
            &ops[2],
            Op::Delete {
                if_version: None,
                shard_key: Some(k),
                ..
            } if key_text(&Some(k.clone())) == "\"c42\""
        ));
        assert!(matches!(&ops[3], Op::Query { where_text: Some(w), .. } if w == "/balance < 0"));
    }

    #[test]
    fn a_put_and_a_delete_of_one_id_on_two_shards_each_get_their_own_version() {
        let write = |op: &'static str, shard: u32| OpResult {
            op,
            collection: "orders".into(),
            id: "a".into(),
            document: None,
            documents: None,
            version: None,
            shard: Some(shard),
        };
        let mut results = vec![write("put", 2), write("delete", 0)];
        let committed = |shard: u32, version: u64, deleted: bool| CommittedWrite {
            collection: "orders".into(),
            id: "a".into(),
            version,
            deleted,
            shard,
        };
        fill_versions(
            &mut results,
            &[committed(2, 5, false), committed(0, 0, true)],
        );
        assert_eq!(results[0].version, Some(5));
        assert_eq!(results[1].version, Some(0));
        assert_eq!(
            render(
                &results,
                &CommitOutcome {
                    writes: Vec::new(),
                    shards: 2
                },
                Output::Table
            ),
            "put    orders/a  now v5\ndelete orders/a  deleted\ncommitted (2 shards)\n"
        );
    }

    #[test]
    fn an_unknown_op_an_unknown_field_or_an_empty_file_is_refused() {
        for bad in [
            r#"[{"op":"merge","collection":"a","id":"b"}]"#,
            r#"[{"op":"get","collection":"a","id":"b","extra":1}]"#,
            "[]",
            "{}",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}
