//! `flotilla txn DB --file ops.json`: a JSON array of operations run as one transaction
//! (retried from the start when it conflicts with another), each result printed and then the
//! outcome; `flotilla txn list DB`: open and recovering transactions.

use anyhow::{Context, Result};
use flotilla_client::{Client, CommitOutcome, Error, TransactionInfo};
use serde::{Deserialize, Serialize};

use crate::render::Output;

/// One operation of the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    Get {
        collection: String,
        id: String,
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
    },
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
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
            Op::Get { collection, id } => txn.get(collection, id).await.map(|doc| OpResult {
                op: "get",
                collection: collection.clone(),
                id: id.clone(),
                version: doc.as_ref().map(|d| d.version),
                document: Some(match doc {
                    Some(d) => {
                        serde_json::from_str(&d.json).unwrap_or(serde_json::Value::String(d.json))
                    }
                    None => serde_json::Value::Null,
                }),
            }),
            Op::Put {
                collection,
                id,
                json,
                if_version,
            } => txn
                .put(collection, id, &json.to_string(), *if_version)
                .await
                .map(|()| OpResult {
                    op: "put",
                    collection: collection.clone(),
                    id: id.clone(),
                    document: None,
                    version: None,
                }),
            Op::Delete {
                collection,
                id,
                if_version,
            } => txn
                .delete(collection, id, *if_version)
                .await
                .map(|()| OpResult {
                    op: "delete",
                    collection: collection.clone(),
                    id: id.clone(),
                    document: None,
                    version: None,
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
    for r in &mut results {
        if let Some(w) = outcome
            .writes
            .iter()
            .find(|w| w.collection == r.collection && w.id == r.id)
            && r.op != "get"
        {
            r.version = Some(w.version);
        }
    }
    Ok((results, outcome))
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
            out.push_str("TXN                               STATE       COORDINATOR  AGE      READS  WRITES  SHARDS\n");
            for t in txns {
                let shards: Vec<String> = t.shards.iter().map(u32::to_string).collect();
                out.push_str(&format!(
                    "{:<34}{:<12}{:<13}{:<9}{:<7}{:<8}{}\n",
                    t.txn,
                    t.state,
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
                {"op":"delete","collection":"acct","id":"a1"}]"#,
        )
        .unwrap();
        assert_eq!(ops.len(), 3);
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
                ..
            }
        ));
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
