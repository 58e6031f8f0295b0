//! `flotilla doc`: write, read, delete, list, query and watch documents, and live queries.

use std::io::Read;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use flotilla_client::{Client, Consistency, Error, ListOptions};
use futures::StreamExt;

use crate::render::{self, Output};
use crate::{print, query};

#[derive(Debug, Subcommand)]
pub enum DocCommand {
    /// Write a document.
    Put {
        #[command(flatten)]
        at: DocAddr,
        /// The body, JSON text (`-` reads it from stdin).
        json: String,
        /// Write only if the document's version is this (0 = it must not exist).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Read a document.
    Get {
        #[command(flatten)]
        at: DocAddr,
        /// linearizable, lease or stale.
        #[arg(long, default_value = "linearizable")]
        consistency: Consistency,
    },
    /// Delete a document.
    Delete {
        #[command(flatten)]
        at: DocAddr,
        /// Delete only if the document's version is this.
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List the documents of a collection.
    List {
        /// The database.
        database: String,
        /// The collection within the database.
        collection: String,
        /// Only documents whose id starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Most documents listed (default: all).
        #[arg(long)]
        limit: Option<u64>,
        /// linearizable, lease or stale.
        #[arg(long, default_value = "linearizable")]
        consistency: Consistency,
    },
    /// Query a collection: `--where '/total > 1000 and /status = "open"'`.
    Query(query::QueryArgs),
    /// Stream the changes of a database until interrupted; with --where, a live query: the
    /// documents of the collection that match, then every change that makes one enter,
    /// change within or leave the result.
    Watch {
        /// The database.
        database: String,
        /// Only changes in this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Start at this revision of each shard (default: only new changes).
        #[arg(long, default_value_t = 0, conflicts_with = "filter")]
        from_revision: u64,
        /// A live query of --collection: `--where '/status = "open"'`.
        #[arg(long = "where", requires = "collection")]
        filter: Option<String>,
    },
}

/// Where a document lives.
#[derive(Debug, Args)]
pub struct DocAddr {
    /// The database.
    database: String,
    /// The collection within the database.
    collection: String,
    /// The document's id.
    id: String,
}

/// Largest page asked for when listing.
const PAGE_SIZE: u64 = 500;

pub async fn doc(client: &Client, command: DocCommand, out: Output) -> Result<()> {
    match command {
        DocCommand::Put {
            at,
            json,
            if_version,
        } => {
            let json = body(json)?;
            let r = client
                .put(&at.database, &at.collection, &at.id, &json, if_version)
                .await?;
            print(&render::put_result(&at.collection, &at.id, &r, out))
        }
        DocCommand::Get { at, consistency } => {
            match client
                .get(&at.database, &at.collection, &at.id, consistency)
                .await?
            {
                Some(d) => print(&render::documents(&[d], out)),
                None => Err(Error::NotFound(format!(
                    "document {}/{} in database {}",
                    at.collection, at.id, at.database
                ))
                .into()),
            }
        }
        DocCommand::Delete { at, if_version } => {
            let r = client
                .delete(&at.database, &at.collection, &at.id, if_version)
                .await?;
            print(&render::delete_result(&at.collection, &at.id, &r, out))
        }
        DocCommand::List {
            database,
            collection,
            prefix,
            limit,
            consistency,
        } => {
            list(
                client,
                &database,
                &collection,
                prefix,
                limit,
                consistency,
                out,
            )
            .await
        }
        DocCommand::Watch {
            database,
            collection,
            filter: Some(filter),
            ..
        } => {
            let collection = collection.unwrap_or_default();
            live(client, &database, &collection, &filter, out).await
        }
        DocCommand::Watch {
            database,
            collection,
            from_revision,
            filter: None,
        } => watch(client, &database, collection.as_deref(), from_revision, out).await,
        DocCommand::Query(a) => query::query(client, a, out).await,
    }
}

/// The body of a put: the argument, or stdin for `-`; checked to be JSON.
fn body(arg: String) -> Result<String> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the document from stdin")?;
        s
    } else {
        arg
    };
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
        return Err(Error::InvalidArgument(format!("the document is not JSON: {e}")).into());
    }
    Ok(text)
}

async fn list(
    client: &Client,
    database: &str,
    collection: &str,
    prefix: String,
    limit: Option<u64>,
    consistency: Consistency,
    out: Output,
) -> Result<()> {
    let mut options = ListOptions {
        prefix,
        consistency,
        ..ListOptions::default()
    };
    let mut remaining = limit.unwrap_or(u64::MAX);
    let mut all = Vec::new();
    while remaining > 0 {
        options.limit = remaining.min(PAGE_SIZE) as u32;
        let page = client.list_with(database, collection, &options).await?;
        let mut docs = page.documents;
        docs.truncate(remaining.min(docs.len() as u64) as usize);
        remaining -= docs.len() as u64;
        if out == Output::Json {
            // Stream JSON lines page by page.
            print(&render::documents(&docs, out))?;
        } else {
            all.extend(docs);
        }
        match page.next_page_token {
            Some(token) => options.page_token = Some(token),
            None => break,
        }
    }
    if out == Output::Table {
        print(&render::documents(&all, out))?;
    }
    Ok(())
}

/// A live query, printed until interrupted.
async fn live(
    client: &Client,
    database: &str,
    collection: &str,
    filter: &str,
    out: Output,
) -> Result<()> {
    let predicate = flotilla_client::parse_text(filter)
        .map_err(|e| Error::InvalidArgument(format!("--where: {e}")))?;
    let mut events = client
        .live_query(
            database,
            collection,
            Some(&predicate),
            Consistency::Linearizable,
            &[],
        )
        .await?;
    print(&render::watch_header(out))?;
    while let Some(event) = events.next().await {
        let event = event.context("live query interrupted")?;
        print(&render::live_event(&event, out))?;
    }
    Err(Error::Unavailable("the node ended the live query".to_string()).into())
}

async fn watch(
    client: &Client,
    database: &str,
    collection: Option<&str>,
    from_revision: u64,
    out: Output,
) -> Result<()> {
    let mut events = client.watch(database, collection, from_revision).await?;
    print(&render::watch_header(out))?;
    let mut last_revision = None;
    while let Some(event) = events.next().await {
        let event = event.with_context(|| match last_revision {
            Some(r) => format!("watch interrupted after revision {r}"),
            None => "watch interrupted".to_string(),
        })?;
        last_revision = Some(event.document.revision);
        print(&render::watch_event(&event, out))?;
    }
    let resume = last_revision.map_or(String::new(), |r| {
        format!(" after revision {r}; resume with --from-revision {}", r + 1)
    });
    Err(Error::Unavailable(format!("the node ended the watch{resume}")).into())
}
