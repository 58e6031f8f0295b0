//! `flotilla doc query`, `flotilla index ...` and `flotilla collection ...`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use flotilla_client::{Client, Consistency, Error, QueryExplain, index_name};
use serde_json::json;

use crate::render::{self, Output};
use crate::table::Table;

/// `flotilla doc query DB COLL --where '...'`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The database.
    database: String,
    /// The collection within the database.
    collection: String,
    /// The predicate, e.g. `/total > 1000 and /status = "open"` (operators: = != < <= > >=,
    /// in [..], exists, prefix "..", and, or, not, parentheses). Every document when absent.
    #[arg(long = "where", default_value = "")]
    filter: String,
    /// Order by this path (repeatable); `-/total` orders descending.
    #[arg(long, allow_hyphen_values = true)]
    order_by: Vec<String>,
    /// Most results.
    #[arg(long)]
    limit: Option<u64>,
    /// Keep only these paths of each document (repeatable).
    #[arg(long)]
    project: Vec<String>,
    /// Print how many documents match instead of the documents.
    #[arg(long)]
    count: bool,
    /// Print how the query was served (index, shards, documents examined) after the results.
    #[arg(long)]
    explain: bool,
    /// linearizable, lease or stale.
    #[arg(long, default_value = "linearizable")]
    consistency: Consistency,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Create a secondary index, built in the background (see `index list`).
    Create {
        database: String,
        collection: String,
        /// Path, or comma-separated paths of a compound index (`/customerId,/createdAt`).
        paths: String,
        /// The index's name (default: made from the paths).
        #[arg(long)]
        name: Option<String>,
    },
    /// The indexes and their state on each shard (building / ready, documents done).
    List {
        database: String,
        collection: Option<String>,
    },
    /// Drop an index (its space is freed).
    Drop {
        database: String,
        collection: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CollectionCommand {
    /// Declare a collection, with the JSON path that places its documents (fixed once set).
    Create {
        database: String,
        collection: String,
        /// E.g. `/customerId`; documents are placed by their id without one.
        #[arg(long)]
        shard_key: Option<String>,
    },
    /// The declared collections of a database.
    List { database: String },
}

pub async fn query(client: &Client, a: QueryArgs, out: Output) -> Result<()> {
    let mut q = client
        .query(&a.database, &a.collection)
        .where_text(&a.filter)
        .map_err(|e| Error::InvalidArgument(format!("--where: {e}")))?
        .consistency(a.consistency);
    for p in &a.order_by {
        q = match p.strip_prefix('-') {
            Some(p) => q.order_by(p, true),
            None => q.order_by(p, false),
        };
    }
    if let Some(n) = a.limit {
        q = q.limit(n);
    }
    if !a.project.is_empty() {
        let paths: Vec<&str> = a.project.iter().map(String::as_str).collect();
        q = q.project(&paths);
    }
    if a.count {
        let n = q.count().await?;
        return crate::print(&match out {
            Output::Json => format!("{}\n", json!({ "count": n })),
            Output::Table => format!("{n}\n"),
        });
    }
    if a.explain {
        q = q.explain();
    }
    let mut token: Option<String> = None;
    let mut explains = Vec::new();
    loop {
        let page = q.page(token.as_deref()).await.context("querying")?;
        crate::print(&render::documents(&page.documents, out))?;
        explains.extend(page.explain);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    if let Some(e) = explains.first() {
        let examined: u64 = explains.iter().map(|e| e.examined).sum();
        crate::print(&explain(e, examined, out))?;
    }
    Ok(())
}

fn explain(e: &QueryExplain, examined: u64, out: Output) -> String {
    match out {
        Output::Json => format!(
            "{}\n",
            json!({
                "explain": {
                    "index": e.index,
                    "ranges": e.ranges,
                    "pinned": e.pinned,
                    "examined": examined,
                    "shards": e.shards.iter().map(|s| json!({
                        "shard": s.shard, "index": s.index, "examined": s.examined, "returned": s.returned,
                    })).collect::<Vec<_>>(),
                }
            })
        ),
        Output::Table => {
            let mut t = Table::new(["SHARD", "INDEX", "EXAMINED", "RETURNED"]);
            for s in &e.shards {
                t.row([
                    s.shard.to_string(),
                    s.index.clone().unwrap_or_else(|| "(scan)".into()),
                    s.examined.to_string(),
                    s.returned.to_string(),
                ]);
            }
            format!(
                "\nplan: {}{}, {} shard(s) asked{}, {examined} documents examined (all pages)\n{}",
                e.index
                    .as_deref()
                    .map_or("full scan".to_string(), |i| format!("index {i}")),
                if e.index.is_some() {
                    format!(" ({} key ranges)", e.ranges)
                } else {
                    String::new()
                },
                e.shards.len(),
                if e.pinned { " (shard key pinned)" } else { "" },
                t.render()
            )
        }
    }
}

pub async fn index(client: &Client, command: IndexCommand, out: Output) -> Result<()> {
    match command {
        IndexCommand::Create {
            database,
            collection,
            paths,
            name,
        } => {
            let paths: Vec<&str> = paths.split(',').map(str::trim).collect();
            let name = name.unwrap_or_else(|| index_name(&paths));
            client
                .create_index(&database, &collection, &name, &paths)
                .await?;
            crate::print(&match out {
                Output::Json => format!(
                    "{}\n",
                    json!({"index": name, "paths": paths, "created": true})
                ),
                Output::Table => format!(
                    "index {name} on {collection} ({}) created; building\n",
                    paths.join(",")
                ),
            })
        }
        IndexCommand::List {
            database,
            collection,
        } => {
            let indexes = client
                .list_indexes(&database, collection.as_deref())
                .await?;
            crate::print(&match out {
                Output::Json => indexes
                    .iter()
                    .map(|i| {
                        format!(
                            "{}\n",
                            json!({
                                "collection": i.collection, "name": i.name, "paths": i.paths,
                                "ready": i.ready(),
                                "shards": i.shards.iter().map(|(s, r, d)| json!({"shard": s, "ready": r, "documents": d})).collect::<Vec<_>>(),
                            })
                        )
                    })
                    .collect(),
                Output::Table => {
                    let mut t = Table::new(["COLLECTION", "NAME", "PATHS", "STATE", "DOCUMENTS"]);
                    for i in &indexes {
                        let building = i.shards.iter().filter(|(_, r, _)| !r).count();
                        t.row([
                            i.collection.clone(),
                            i.name.clone(),
                            i.paths.join(","),
                            if building == 0 { "ready".to_string() } else { format!("building ({building} shard(s))") },
                            i.shards.iter().map(|(_, _, d)| d).sum::<u64>().to_string(),
                        ]);
                    }
                    t.render()
                }
            })
        }
        IndexCommand::Drop {
            database,
            collection,
            name,
        } => {
            let dropped = client.drop_index(&database, &collection, &name).await?;
            crate::print(&match out {
                Output::Json => format!("{}\n", json!({"index": name, "dropped": dropped})),
                Output::Table if dropped => format!("index {name} dropped\n"),
                Output::Table => format!("no index {name} on {collection}\n"),
            })
        }
    }
}

pub async fn collection(client: &Client, command: CollectionCommand, out: Output) -> Result<()> {
    match command {
        CollectionCommand::Create {
            database,
            collection,
            shard_key,
        } => {
            let created = client
                .create_collection(&database, &collection, shard_key.as_deref())
                .await?;
            crate::print(&match out {
                Output::Json => format!(
                    "{}\n",
                    json!({"collection": collection, "shard_key": shard_key, "created": created})
                ),
                Output::Table => format!(
                    "collection {collection} {} (placed by {})\n",
                    if created { "created" } else { "exists already" },
                    shard_key.as_deref().unwrap_or("document id")
                ),
            })
        }
        CollectionCommand::List { database } => {
            let collections = client.list_collections(&database).await?;
            crate::print(&match out {
                Output::Json => collections
                    .iter()
                    .map(|c| {
                        format!(
                            "{}\n",
                            json!({"name": c.name, "shard_key": c.shard_key, "indexes": c.indexes})
                        )
                    })
                    .collect(),
                Output::Table => {
                    let mut t = Table::new(["NAME", "SHARD KEY", "INDEXES"]);
                    for c in &collections {
                        t.row([
                            c.name.clone(),
                            c.shard_key.clone().unwrap_or_else(|| "(id)".into()),
                            c.indexes.join(","),
                        ]);
                    }
                    t.render()
                }
            })
        }
    }
}
