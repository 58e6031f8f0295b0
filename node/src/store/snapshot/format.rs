//! The content of a snapshot file: a magic number, then frames, each a length, the CRC-32C of
//! its payload and the payload. The first frame is the [`Head`] (everything of the group but
//! its documents), then frames of documents in key order (about [`DOCS_FRAME_BYTES`] each),
//! then [`Frame::End`] with the number of documents. Written and read a frame at a time, so
//! neither side ever holds more than a frame of a shard in memory.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode};
use crate::meta::MetaState;
use crate::store::dedup::Requests;
use crate::store::documents::StoredDoc;
use crate::store::fence::Fences;
use crate::store::indexes::SnapshotIndex;
use crate::store::txn::TxnSnapshot;
use crate::types::{GroupId, META_GROUP};

/// What every snapshot file starts with (and a snapshot of the format before files lacks).
pub const MAGIC: &[u8; 8] = b"FLSNAP\x00\x01";
/// About how many bytes of documents one frame holds.
pub const DOCS_FRAME_BYTES: usize = 1 << 20;
/// Largest frame read: a longer length is damage, not a frame to allocate for.
const MAX_FRAME_BYTES: u32 = 256 << 20;

/// One document of a group: collection, id, the stored document.
pub type Doc = (String, String, StoredDoc);

/// Everything of a group a snapshot carries besides its documents.
#[derive(Serialize, Deserialize, Default)]
pub struct Head {
    /// The meta state (meta group only).
    pub meta: Option<MetaState>,
    /// The request ids the group remembers (exactly-once writes).
    pub requests: Requests,
    /// Index definitions (their entries are built again from the documents on install).
    pub indexes: Vec<SnapshotIndex>,
    /// Write intents and transaction records, so they move with the shard.
    pub txns: TxnSnapshot,
    /// Whether the shard is being restored (see `store::load`).
    pub loading: bool,
    /// The backup fences up (see `store::fence`).
    pub fences: Fences,
}

#[derive(Serialize, Deserialize)]
pub enum Frame {
    Head(Box<Head>),
    Docs(Vec<Doc>),
    End { docs: u64 },
}

/// Writes a snapshot's frames to `out`, documents batched into frames.
pub struct FrameWriter<W: Write> {
    out: W,
    batch: Vec<Doc>,
    batch_bytes: usize,
    docs: u64,
}

impl<W: Write> FrameWriter<W> {
    /// Starts the file with the magic number and the head.
    pub fn start(mut out: W, head: Head) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        let mut w = FrameWriter {
            out,
            batch: Vec::new(),
            batch_bytes: 0,
            docs: 0,
        };
        w.frame(&Frame::Head(Box::new(head)))?;
        Ok(w)
    }

    pub fn doc(&mut self, collection: &str, id: &str, doc: StoredDoc) -> io::Result<()> {
        self.batch_bytes += collection.len() + id.len() + doc.json.len() + 16;
        self.batch
            .push((collection.to_string(), id.to_string(), doc));
        self.docs += 1;
        if self.batch_bytes >= DOCS_FRAME_BYTES {
            self.flush_docs()?;
        }
        Ok(())
    }

    /// Ends the file: the documents left, the end frame. Answers the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_docs()?;
        self.frame(&Frame::End { docs: self.docs })?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_docs(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.frame(&Frame::Docs(batch))
    }

    fn frame(&mut self, frame: &Frame) -> io::Result<()> {
        let payload = encode(frame)?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_FRAME_BYTES)
            .ok_or_else(|| io::Error::other("a snapshot frame over 256 MiB"))?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out
            .write_all(&crate::codec::checksum(&payload).to_le_bytes())?;
        self.out.write_all(&payload)
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads a snapshot file: [`open`] reads its head, then [`Docs`] its documents.
pub fn open<R: Read>(mut input: R) -> io::Result<(Head, Docs<R>)> {
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|e| bad(format!("snapshot too short: {e}")))?;
    if &magic != MAGIC {
        return Err(bad("not a snapshot file (no magic number)"));
    }
    let mut docs = Docs {
        input,
        count: 0,
        ended: false,
    };
    match docs.frame()? {
        Some(Frame::Head(head)) => Ok((*head, docs)),
        _ => Err(bad("a snapshot that does not start with its head")),
    }
}

/// The documents of a snapshot, a frame at a time. The last item is an error when the file is
/// damaged or cut short; after the end frame there must be nothing.
pub struct Docs<R> {
    input: R,
    count: u64,
    ended: bool,
}

impl<R: Read> Docs<R> {
    fn frame(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 8];
        let mut got = 0;
        while got < head.len() {
            let n = self.input.read(&mut head[got..])?;
            if n == 0 {
                return match got {
                    0 => Ok(None),
                    _ => Err(bad("a snapshot frame cut short")),
                };
            }
            got += n;
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_FRAME_BYTES {
            return Err(bad(format!("a snapshot frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len as usize];
        self.input
            .read_exact(&mut payload)
            .map_err(|e| bad(format!("a snapshot frame cut short: {e}")))?;
        let computed = crate::codec::checksum(&payload);
        if computed != sum {
            return Err(bad(format!(
                "a snapshot frame fails its checksum (stored {sum:#010x}, computed {computed:#010x})"
            )));
        }
        decode(&payload)
            .map(Some)
            .map_err(|e| bad(format!("a snapshot frame does not decode: {e}")))
    }
}

impl<R: Read> Iterator for Docs<R> {
    type Item = io::Result<Vec<Doc>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let step = match self.frame() {
            Ok(Some(Frame::Docs(batch))) => {
                self.count += batch.len() as u64;
                return Some(Ok(batch));
            }
            Ok(Some(Frame::End { docs })) if docs == self.count => match self.frame() {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err(bad("a snapshot with frames after its end")),
                Err(e) => Err(e),
            },
            Ok(Some(Frame::End { docs })) => Err(bad(format!(
                "a snapshot ends saying {docs} documents after {}",
                self.count
            ))),
            Ok(Some(Frame::Head(_))) => Err(bad("a snapshot with a second head")),
            Ok(None) => Err(bad("a snapshot cut short (no end frame)")),
            Err(e) => Err(e),
        };
        self.ended = true;
        step.err().map(Err)
    }
}

/// Checks that `input` is a whole snapshot of group `gid`: every frame whole and decoding, the
/// meta state there exactly when `gid` is the meta group, the document count right. Reads it
/// a frame at a time.
pub fn check<R: Read>(gid: GroupId, input: R) -> io::Result<()> {
    let (head, docs) = open(input)?;
    if head.meta.is_some() != (gid == META_GROUP) {
        return Err(bad(format!("not a snapshot of group {gid}")));
    }
    for batch in docs {
        batch?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(i: usize) -> StoredDoc {
        StoredDoc {
            version: i as u64 + 1,
            revision: 3,
            json: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "p".repeat(500)),
        }
    }

    fn file(docs: usize) -> Vec<u8> {
        let mut w = FrameWriter::start(Vec::new(), Head::default()).expect("start");
        for i in 0..docs {
            w.doc("c", &format!("d{i:05}"), doc(i)).expect("doc");
        }
        w.finish().expect("finish")
    }

    #[test]
    fn documents_come_back_in_order_across_frames() {
        let bytes = file(5_000);
        let (head, docs) = open(bytes.as_slice()).expect("open");
        assert!(head.meta.is_none());
        let batches: Vec<Vec<Doc>> = docs.collect::<io::Result<_>>().expect("docs");
        assert!(batches.len() > 1, "several frames: {}", batches.len());
        let all: Vec<Doc> = batches.into_iter().flatten().collect();
        assert_eq!(all.len(), 5_000);
        for (i, (c, id, d)) in all.iter().enumerate() {
            assert_eq!(
                (c.as_str(), id.as_str()),
                ("c", format!("d{i:05}").as_str())
            );
            assert_eq!(d, &doc(i));
        }
        check(7, bytes.as_slice()).expect("a whole data snapshot");
        assert!(
            check(META_GROUP, bytes.as_slice()).is_err(),
            "not the meta group's"
        );
    }

    #[test]
    fn a_damaged_or_cut_snapshot_is_refused() {
        let bytes = file(3_000);
        for at in [3, 20, bytes.len() / 2, bytes.len() - 2] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            assert!(check(7, damaged.as_slice()).is_err(), "flipped at {at}");
        }
        for cut in [0, 7, 12, bytes.len() / 3, bytes.len() - 1] {
            assert!(check(7, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&bytes[8..]);
        assert!(check(7, longer.as_slice()).is_err(), "frames after the end");
    }
}
