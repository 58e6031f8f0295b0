//! Calls made at the same time to one node, sent to it together.
//!
//! Every get and write of a [`Client`](crate::Client) goes through the [`Coalescer`] of the
//! endpoint it is addressed to. A coalescer keeps at most [`MAX_IN_FLIGHT`] Multi requests to
//! its node in flight (one that takes longer than [`SLOT_HOLD`] no longer counts); a call made
//! while one is free leaves at once, alone, and calls made while all are taken wait and leave
//! together, as one Multi request, when one returns. A lone caller therefore waits for
//! nothing, and many callers share the cost of a request (framing, headers, a round of
//! wake-ups on both sides) instead of paying one each: the more load, the larger the batches.
//!
//! A batch that finds fewer calls waiting than the last request carried waits a moment (the
//! client's `coalesce_linger`, 100 µs by default) for the callers that request answered: they
//! tend to call again at once, and would otherwise split the load into two alternating halves,
//! each request carrying half the calls.
//!
//! The node answers each call of a Multi as it would the single call, so every caller still
//! gets its own result, error and retry.
//!
//! A node that does not know the Multi call (an older release) gets every call singly from then
//! on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::auth::AuthChannel as Channel;
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::documents_client::DocumentsClient;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use crate::error::REASON_KEY;

/// Multi requests one coalescer keeps in flight to its node (not counting those that have
/// been out longer than [`SLOT_HOLD`]).
pub(crate) const MAX_IN_FLIGHT: usize = 1;

/// How long a Multi request in flight keeps later calls waiting: one that takes longer (a slow
/// write, a read waiting for its replica to catch up) frees its slot, so that it holds up no
/// other call for longer than this.
pub(crate) const SLOT_HOLD: Duration = Duration::from_millis(5);

/// Most calls one Multi request carries (the node accepts up to 1024).
pub(crate) const MAX_CALLS: usize = 256;

/// Most bytes of calls one Multi request carries (a call larger than this leaves alone). Nodes
/// accept requests of up to 16 MiB by default (`--max-message-bytes`).
pub(crate) const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Largest response accepted (a Multi of gets can carry many documents).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

type Reply = oneshot::Sender<Result<pb::call_result::Result, Status>>;

/// One call waiting to leave.
struct Pending {
    call: pb::call::Call,
    timeout: Duration,
    reply: Reply,
}

/// The sending side of one endpoint's batches. Dropping it ends its task once the batches in
/// flight are answered.
#[derive(Debug)]
pub(crate) struct Coalescer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Coalescer {
    /// Starts the coalescer of the node behind `channel`. Must be called within a Tokio runtime.
    /// `linger`: how long a batch waits for the callers the last answer reached (see
    /// [`ClientOptions::coalesce_linger`](crate::ClientOptions::coalesce_linger)).
    pub(crate) fn start(channel: Channel, linger: Duration) -> Coalescer {
        let (queue, rx) = mpsc::unbounded_channel();
        let link = Link {
            client: DocumentsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
            single_only: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(run(link, rx, linger));
        Coalescer { queue }
    }

    /// Sends `call` with the next batch and waits for its result. `timeout` is the caller's
    /// deadline for it, sent to the node.
    pub(crate) async fn call(
        &self,
        call: pb::call::Call,
        timeout: Duration,
    ) -> Result<pb::call_result::Result, Status> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            call,
            timeout,
            reply,
        };
        if self.queue.send(pending).is_err() {
            return Err(Status::unavailable(
                "the client's sender for this node stopped",
            ));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Status::cancelled("the call was dropped before it was sent")))
    }
}

/// The connection to one node and what it is known to support.
#[derive(Clone)]
struct Link {
    client: DocumentsClient<Channel>,
    single_only: Arc<AtomicBool>,
}

/// Takes a free slot, then every call waiting (up to [`MAX_CALLS`] and [`MAX_REQUEST_BYTES`]),
/// and sends them.
async fn run(link: Link, mut queue: mpsc::UnboundedReceiver<Pending>, linger: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // How many calls the last Multi request sent carried.
    let mut last_sent = 0;
    // A call taken from the queue that did not fit in the last batch: it starts the next.
    let mut held: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut batch = Batch::new(first);
        held = batch.fill(&mut queue);
        // The slot is free because the last request was answered (or is slow): the callers
        // that answer reached are likely to call again at once, so give them a moment to join
        // this batch rather than the one after it.
        let expected = last_sent;
        let lingering = Instant::now();
        while held.is_none() && batch.calls.len() < expected && lingering.elapsed() < linger {
            tokio::task::yield_now().await;
            held = batch.fill(&mut queue);
        }
        last_sent = batch.calls.len();
        tokio::spawn(send(link.clone(), batch.calls, slot));
    }
}

/// The calls of one Multi request being gathered.
struct Batch {
    calls: Vec<Pending>,
    bytes: usize,
}

impl Batch {
    fn new(first: Pending) -> Batch {
        Batch {
            bytes: first.call.encoded_len(),
            calls: vec![first],
        }
    }

    /// Adds the calls waiting in `queue`, up to [`MAX_CALLS`] and [`MAX_REQUEST_BYTES`];
    /// returns the call that did not fit, if one was taken.
    fn fill(&mut self, queue: &mut mpsc::UnboundedReceiver<Pending>) -> Option<Pending> {
        while self.calls.len() < MAX_CALLS {
            match queue.try_recv() {
                Ok(p) if self.bytes + p.call.encoded_len() > MAX_REQUEST_BYTES => return Some(p),
                Ok(p) => {
                    self.bytes += p.call.encoded_len();
                    self.calls.push(p);
                }
                Err(_) => return None,
            }
        }
        None
    }
}

/// Sends `batch`, holding `slot` until it is answered or [`SLOT_HOLD`] has passed.
async fn send(link: Link, batch: Vec<Pending>, slot: OwnedSemaphorePermit) {
    let sent = send_batch(link, batch);
    tokio::pin!(sent);
    tokio::select! {
        () = &mut sent => {}
        () = tokio::time::sleep(SLOT_HOLD) => {
            drop(slot);
            sent.await;
        }
    }
}

async fn send_batch(link: Link, batch: Vec<Pending>) {
    if link.single_only.load(Ordering::Relaxed) {
        return send_singly(link, batch).await;
    }
    // Every caller's deadline fits in the request's.
    let timeout = batch.iter().map(|p| p.timeout).max().unwrap_or_default();
    let calls = batch
        .iter()
        .map(|p| pb::Call {
            call: Some(p.call.clone()),
        })
        .collect();
    let mut request = Request::new(pb::MultiRequest { calls });
    request.set_timeout(timeout);
    let mut client = link.client.clone();
    match client.multi(request).await {
        Ok(response) => {
            let results = response.into_inner().results;
            if results.len() != batch.len() {
                let status = Status::internal(format!(
                    "the node answered {} results to {} calls",
                    results.len(),
                    batch.len()
                ));
                for p in batch {
                    let _ = p.reply.send(Err(status.clone()));
                }
                return;
            }
            for (p, result) in batch.into_iter().zip(results) {
                let _ = p.reply.send(unpack(result));
            }
        }
        // Sent before the node knew the call: nothing of it was applied.
        Err(status) if status.code() == Code::Unimplemented => {
            link.single_only.store(true, Ordering::Relaxed);
            send_singly(link, batch).await;
        }
        Err(status) => {
            for p in batch {
                let _ = p.reply.send(Err(status.clone()));
            }
        }
    }
}

/// Sends each call of `batch` as its own request, all at once.
async fn send_singly(link: Link, batch: Vec<Pending>) {
    let calls = batch.into_iter().map(|p| {
        let mut client = link.client.clone();
        async move {
            let result = match p.call {
                pb::call::Call::Get(get) => client
                    .get(with_timeout(get, p.timeout))
                    .await
                    .map(|r| pb::call_result::Result::Get(r.into_inner())),
                pb::call::Call::Batch(batch) => client
                    .batch(with_timeout(batch, p.timeout))
                    .await
                    .map(|r| pb::call_result::Result::Batch(r.into_inner())),
            };
            let _ = p.reply.send(result);
        }
    });
    futures::future::join_all(calls).await;
}

fn with_timeout<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// One result of a Multi answer: its value, or the status the single call would have failed
/// with (so that it is classified and retried exactly like one).
fn unpack(result: pb::CallResult) -> Result<pb::call_result::Result, Status> {
    match result.result {
        Some(pb::call_result::Result::Error(e)) => Err(call_status(e)),
        Some(ok) => Ok(ok),
        None => Err(Status::internal("the node answered a call with nothing")),
    }
}

/// The status a failed call of a Multi request stands for.
pub(crate) fn call_status(e: pb::CallError) -> Status {
    let mut status = Status::new(Code::from(e.code), e.message);
    if !e.reason.is_empty()
        && let Ok(v) = MetadataValue::try_from(e.reason.as_str())
    {
        status.metadata_mut().insert(REASON_KEY, v);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Failure, classify};

    fn error(code: Code, message: &str, reason: &str) -> pb::CallError {
        pb::CallError {
            code: code as i32,
            message: message.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_failed_call_is_classified_like_the_single_call() {
        let cases = [
            (
                error(
                    Code::FailedPrecondition,
                    "v 3",
                    "ERROR_REASON_VERSION_MISMATCH",
                ),
                (Error::VersionMismatch("v 3".into()), Failure::Final),
            ),
            (
                error(Code::FailedPrecondition, "x", ""),
                (Error::FailedPrecondition("x".into()), Failure::Final),
            ),
            (
                error(Code::Unavailable, "no leader", ""),
                (Error::Unavailable("no leader".into()), Failure::Unavailable),
            ),
            (
                error(Code::Aborted, "lost", ""),
                (Error::OutcomeUnknown("lost".into()), Failure::Uncertain),
            ),
        ];
        for (e, expected) in cases {
            assert_eq!(classify(&call_status(e), "n1"), expected);
        }
    }

    #[test]
    fn an_empty_result_is_an_error() {
        assert!(unpack(pb::CallResult { result: None }).is_err());
        let ok = unpack(pb::CallResult {
            result: Some(pb::call_result::Result::Get(pb::GetResponse {
                document: None,
            })),
        });
        assert!(matches!(ok, Ok(pb::call_result::Result::Get(_))));
    }
}
