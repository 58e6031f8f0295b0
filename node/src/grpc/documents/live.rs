//! Live queries: the initial result read in query pages, every page of a shard from one read
//! held at one revision (`crate::store::held`), then a watch of the collection from just after those revisions, each change carrying the body it
//! replaced, so that whether it makes a document enter, change within or leave the result is
//! decided from the change alone (`flotilla_query::classify`). Nothing of the result is kept
//! on the node, and a live query resumes after any revisions exactly; a revision compacted
//! since fails it as it fails a watch.

use flotilla_proto::v1::documents_server::Documents;
use flotilla_proto::v1::{
    Document, ErrorReason, EventType, LiveEventType, LiveQueryEvent, LiveQueryRequest,
    QueryRequest, QueryResponse, ShardRevision, WatchEvent, WatchRequest,
};
use flotilla_query::{LiveChange, Predicate, classify, parse_selector_str};
use futures::StreamExt;
use tonic::{Request, Status};

use super::DocumentsService;
use super::query::{DEFAULT_PAGE_BYTES, HeldReads, MAX_PAGE_SIZE};
use crate::error::{NodeError, Refusal};
use crate::validate;

/// Documents per page of a live query's initial result when the request names none.
pub const LIVE_PAGE_SIZE: u32 = 1000;

/// The events of a live query.
pub(super) type LiveStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<LiveQueryEvent, Status>> + Send>>;

fn invalid_query(message: String) -> Status {
    Status::from(NodeError::refused(
        Refusal::InvalidArgument,
        ErrorReason::InvalidQuery,
        message,
    ))
}

impl DocumentsService {
    pub(super) async fn live_query_at(
        &self,
        msg: LiveQueryRequest,
        hops: u32,
    ) -> Result<LiveStream, Status> {
        validate::database(&msg.database)?;
        validate::collection(&msg.collection)?;
        let predicate = if msg.selector.is_empty() {
            Predicate::All
        } else {
            parse_selector_str(&msg.selector).map_err(|e| invalid_query(e.to_string()))?
        };
        if !msg.after.is_empty()
            && let Some(db) = self.host.meta_state().databases.get(&msg.database)
        {
            let named: std::collections::BTreeSet<u32> =
                msg.after.iter().map(|a| a.shard).collect();
            if named.len() != msg.after.len() || named != (0..db.shards.len() as u32).collect() {
                return Err(Status::invalid_argument(format!(
                    "after must name each of the database's {} shards once",
                    db.shards.len()
                )));
            }
        }
        if !msg.after.is_empty() {
            let changes = self
                .changes_after(&msg, predicate, msg.after.clone())
                .await?;
            return Ok(Box::pin(changes));
        }
        let query = QueryRequest {
            database: msg.database.clone(),
            collection: msg.collection.clone(),
            selector: msg.selector.clone(),
            page_size: match msg.page_size {
                0 => LIVE_PAGE_SIZE,
                n => n.min(MAX_PAGE_SIZE as u32),
            },
            max_page_bytes: DEFAULT_PAGE_BYTES as u64,
            consistency: msg.consistency,
            at_least: msg.at_least.clone(),
            ..QueryRequest::default()
        };
        // The first page here (its errors are the call's), the next ones as they are taken.
        let mut held = HeldReads::default();
        let first = self
            .query_held(query.clone(), hops, Some(&mut held))
            .await?;
        let revisions = first.shards.clone();
        let pages = Pages {
            service: self.clone(),
            hops,
            query,
            held,
            revisions: revisions.clone(),
            next: Some(first),
        };
        let service = self.clone();
        let changes = futures::stream::once(async move {
            match service.changes_after(&msg, predicate, revisions).await {
                Ok(changes) => changes.boxed(),
                Err(status) => futures::stream::once(futures::future::ready(Err(status))).boxed(),
            }
        })
        .flatten();
        Ok(Box::pin(until_error(pages.stream().chain(changes))))
    }

    /// The changes after `after` (one revision per shard) as live query events.
    async fn changes_after(
        &self,
        msg: &LiveQueryRequest,
        predicate: Predicate,
        after: Vec<ShardRevision>,
    ) -> Result<impl futures::Stream<Item = Result<LiveQueryEvent, Status>> + Send + 'static, Status>
    {
        let watch = WatchRequest {
            database: msg.database.clone(),
            collection: msg.collection.clone(),
            from_revision: 0,
            with_prev: true,
            after,
        };
        Ok(Documents::watch(self, Request::new(watch))
            .await?
            .into_inner()
            .filter_map(move |change| {
                let live = match change {
                    Ok(change) => live_event(&predicate, change).map(Ok),
                    Err(status) => Some(Err(status)),
                };
                futures::future::ready(live)
            }))
    }
}

/// The pages of a live query's initial result, each shard's part read at the revision of its
/// first page (see `HeldReads`), then the CURRENT event naming those revisions.
struct Pages {
    service: DocumentsService,
    hops: u32,
    query: QueryRequest,
    held: HeldReads,
    revisions: Vec<ShardRevision>,
    /// The page to give next; `None` once the CURRENT event was given.
    next: Option<QueryResponse>,
}

impl Pages {
    fn stream(self) -> impl futures::Stream<Item = Result<LiveQueryEvent, Status>> + Send {
        futures::stream::unfold(self, |mut pages| async move {
            let page = pages.next.take()?;
            let mut events: Vec<Result<LiveQueryEvent, Status>> = page
                .documents
                .into_iter()
                .map(|d| Ok(event(LiveEventType::Initial, d)))
                .collect();
            if page.next_page_token.is_empty() {
                events.push(Ok(LiveQueryEvent {
                    r#type: LiveEventType::Current as i32,
                    document: None,
                    shards: pages.revisions.clone(),
                }));
                return Some((events, pages));
            }
            pages.query.page_token = page.next_page_token;
            let next = pages
                .service
                .query_held(pages.query.clone(), pages.hops, Some(&mut pages.held))
                .await;
            match next {
                Ok(next) if next.shards != pages.revisions => events.push(Err(Status::internal(
                    "a page of the initial result was read at other revisions than the first",
                ))),
                Ok(next) => pages.next = Some(next),
                Err(status) => events.push(Err(status)),
            }
            Some((events, pages))
        })
        .flat_map(futures::stream::iter)
    }
}

/// `events` up to and with the first error.
fn until_error<S>(events: S) -> impl futures::Stream<Item = Result<LiveQueryEvent, Status>> + Send
where
    S: futures::Stream<Item = Result<LiveQueryEvent, Status>> + Send,
{
    events.scan(false, |failed, event| {
        let give = (!*failed).then(|| {
            *failed = event.is_err();
            event
        });
        futures::future::ready(give)
    })
}

fn event(kind: LiveEventType, document: Document) -> LiveQueryEvent {
    LiveQueryEvent {
        r#type: kind as i32,
        document: Some(document),
        shards: Vec::new(),
    }
}

/// What one change of the collection is to the live query: an event, or nothing.
fn live_event(predicate: &Predicate, change: WatchEvent) -> Option<LiveQueryEvent> {
    let document = change.document?;
    let parse = |json: &str| serde_json::from_str::<serde_json::Value>(json).ok();
    let after = match EventType::try_from(change.r#type) {
        Ok(EventType::Delete) => None,
        _ => parse(&document.json),
    };
    let before = change.prev.as_ref().and_then(|p| parse(&p.json));
    let kind = match classify(predicate, before.as_ref(), after.as_ref())? {
        LiveChange::Enter => LiveEventType::Enter,
        LiveChange::Change => LiveEventType::Change,
        LiveChange::Leave => LiveEventType::Leave,
    };
    Some(event(kind, document))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_query::parse_text;

    fn change(kind: EventType, json: &str, prev: Option<&str>) -> WatchEvent {
        WatchEvent {
            r#type: kind as i32,
            document: Some(Document {
                collection: "c".into(),
                id: "d".into(),
                json: json.into(),
                version: 2,
                revision: 7,
                shard: 1,
            }),
            prev: prev.map(|p| Document {
                json: p.into(),
                ..Document::default()
            }),
        }
    }

    fn kind(predicate: &Predicate, change: WatchEvent) -> Option<LiveEventType> {
        live_event(predicate, change).map(|e| e.r#type())
    }

    #[test]
    fn a_change_is_an_event_only_when_it_moves_the_document_in_or_out_or_within() {
        let open = parse_text(r#"/s = "open""#).unwrap_or(Predicate::All);
        let (o, c) = (r#"{"s":"open"}"#, r#"{"s":"closed"}"#);
        assert_eq!(
            kind(&open, change(EventType::Put, o, None)),
            Some(LiveEventType::Enter)
        );
        assert_eq!(
            kind(&open, change(EventType::Put, o, Some(o))),
            Some(LiveEventType::Change)
        );
        assert_eq!(
            kind(&open, change(EventType::Put, c, Some(o))),
            Some(LiveEventType::Leave)
        );
        assert_eq!(
            kind(&open, change(EventType::Delete, "", Some(o))),
            Some(LiveEventType::Leave)
        );
        assert_eq!(kind(&open, change(EventType::Delete, "", Some(c))), None);
        assert_eq!(kind(&open, change(EventType::Put, c, None)), None);
        let left = live_event(&open, change(EventType::Put, c, Some(o)));
        let document = left.and_then(|e| e.document).unwrap_or_default();
        assert_eq!(
            (document.shard, document.revision),
            (1, 7),
            "where to resume after"
        );
    }
}
