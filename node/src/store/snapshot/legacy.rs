//! Snapshots as they were kept before snapshot files (one value in the state file holding the
//! whole body): read only to carry a data directory over to files (`super::migrate`), and to
//! take a snapshot sent by a node of that version.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::format::{FrameWriter, Head};
use crate::codec::decode;
use crate::consensus::SnapshotMeta;
use crate::meta::MetaState;
use crate::store::dedup::Requests;
use crate::store::documents::StoredDoc;
use crate::store::indexes::SnapshotIndex;

/// The body: every document (data group) or the meta state (meta group); then, in the bytes
/// after it, the transaction part, the loading mark and the fences, each only when present.
#[derive(Serialize, Deserialize)]
pub(crate) struct Body {
    docs: Vec<(String, String, StoredDoc)>,
    meta: Option<MetaState>,
    requests: Requests,
    indexes: Vec<SnapshotIndex>,
}

/// A snapshot as the state file kept it: its Raft metadata and body.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Writes the snapshot body `data` of the older form to `out` as a snapshot file.
pub(crate) fn convert<W: Write>(data: &[u8], out: W) -> io::Result<W> {
    let body: Body = decode(data)?;
    let head = Head {
        meta: body.meta,
        requests: body.requests,
        indexes: body.indexes,
        txns: crate::store::txn::snapshot_tail::<Body>(data)?,
        loading: crate::store::load::snapshot_tail::<Body>(data)?,
        fences: crate::store::fence::snapshot_tail::<Body>(data)?,
    };
    let mut w = FrameWriter::start(out, head)?;
    for (collection, id, doc) in body.docs {
        w.doc(&collection, &id, doc)?;
    }
    w.finish()
}

/// The body of the older form of a data group's snapshot with about `bytes` bytes of
/// documents.
#[cfg(test)]
pub(crate) fn test_body(bytes: usize) -> Vec<u8> {
    let doc = StoredDoc {
        version: 1,
        revision: 1,
        json: format!("\"{}\"", "x".repeat(1000)),
    };
    let body = Body {
        docs: (0..bytes / 1000 + 1)
            .map(|i| ("c".to_string(), format!("d{i}"), doc.clone()))
            .collect(),
        meta: None,
        requests: Requests::default(),
        indexes: vec![],
    };
    crate::codec::encode(&body).unwrap_or_default()
}

/// The older form of the snapshot in `file` (a snapshot file's bytes), as such a node sent it.
#[cfg(test)]
pub(crate) fn from_file(file: &[u8]) -> Vec<u8> {
    let Ok((head, docs)) = super::format::open(file) else {
        return Vec::new();
    };
    let body = Body {
        docs: docs.flat_map(|b| b.unwrap_or_default()).collect(),
        meta: head.meta,
        requests: head.requests,
        indexes: head.indexes,
    };
    let mut out = crate::codec::encode(&body).unwrap_or_default();
    out.extend(crate::codec::encode(&head.txns).unwrap_or_default());
    out.extend(crate::codec::encode(&head.loading).unwrap_or_default());
    out.extend(crate::codec::encode(&head.fences).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_snapshot_becomes_a_file_with_the_same_documents() {
        let old = test_body(20_000);
        let file = convert(&old, Vec::new()).expect("convert");
        let (head, docs) = super::super::format::open(file.as_slice()).expect("open");
        assert!(head.meta.is_none() && !head.loading && head.fences.is_empty());
        let docs: Vec<_> = docs
            .collect::<io::Result<Vec<_>>>()
            .expect("docs")
            .into_iter()
            .flatten()
            .collect();
        let body: Body = decode(&old).expect("decode");
        assert_eq!(docs, body.docs);
    }
}
