//! Checksums of stored records: every Raft log entry, stored snapshot and document is written
//! sealed (a tag, the CRC-32C of its encoding, the encoding) and checked on every read, so that
//! a flipped bit on disk is found and never trusted, applied or replicated. A record that fails
//! its check is a [`Corruption`] naming the group and the record; the group stops serving (see
//! `host::supervise`) and stays stopped.
//!
//! Records written before checksums existed (data format 2) carry no tag and still read: the
//! tag is ten bytes of `0xFF`, which no record of format 2 can start with (each of them starts
//! with a varint of at most ten bytes, or an option's tag byte, and ten bytes with the
//! continuation bit set are not a varint), so a tagged record is never mistaken for an old
//! one. An untagged record must decode whole, or it is corrupt too.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{CodecError, checksum};
use crate::types::GroupId;

/// What starts a sealed record.
const TAG: [u8; 10] = [0xFF; 10];
/// Bytes a sealed record adds to its encoding: the tag and the checksum.
pub const SEAL_BYTES: usize = TAG.len() + 4;

/// `value` encoded and sealed, as it is stored.
pub fn seal<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    // Encoded after room for the tag and checksum, so that it is not copied again.
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&TAG);
    out.extend_from_slice(&[0; 4]);
    let mut out = postcard::to_extend(value, out)?;
    let sum = checksum(&out[SEAL_BYTES..]);
    out[TAG.len()..SEAL_BYTES].copy_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// How a stored record failed its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The record's checksum does not match its bytes.
    Checksum { stored: u32, computed: u32 },
    /// The bytes do not decode as the record they should hold.
    Undecodable(String),
    /// The record names a file that is not there, or not whole (a snapshot's file).
    Missing(String),
    /// The replica's content differs from its peers' at the same log index (see
    /// `replication::consistency`).
    Diverged(Box<Divergence>),
}

/// What a consistency check found of one replica: at log `index`, its digest was `here`, while
/// `agreeing` of the `compared` replicas had `expected`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Divergence {
    pub index: u64,
    pub here: [u8; 32],
    pub expected: [u8; 32],
    pub agreeing: u32,
    pub compared: u32,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "differs from the other replicas at log index {} (digest {} here, {} on {} of {} \
             replicas compared)",
            self.index,
            short_hex(&self.here),
            short_hex(&self.expected),
            self.agreeing,
            self.compared
        )
    }
}

/// The first bytes of a digest, in hex: enough to tell digests apart in a message.
pub fn short_hex(digest: &[u8]) -> String {
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Damage::Undecodable(e) => write!(f, "does not decode: {e}"),
            Damage::Missing(e) => write!(f, "is missing: {e}"),
            Damage::Diverged(d) => d.fmt(f),
        }
    }
}

/// The encoding a stored record holds: a sealed one's after its checksum is checked, an
/// untagged one's (written before checksums existed) as it is.
pub fn payload(bytes: &[u8]) -> Result<&[u8], Damage> {
    let Some(rest) = bytes.strip_prefix(TAG.as_slice()) else {
        return Ok(bytes);
    };
    let Some((sum, payload)) = rest.split_first_chunk::<4>() else {
        return Err(Damage::Undecodable("a sealed record cut short".into()));
    };
    let stored = u32::from_le_bytes(*sum);
    let computed = checksum(payload);
    if stored != computed {
        return Err(Damage::Checksum { stored, computed });
    }
    Ok(payload)
}

/// Reads a stored record: a sealed one after its checksum is checked, an untagged one (written
/// before checksums existed) when it decodes whole.
pub fn unseal<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Damage> {
    let payload = payload(bytes)?;
    match postcard::take_from_bytes::<T>(payload) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Damage::Undecodable(format!(
            "{} bytes left over",
            rest.len()
        ))),
        Err(e) => Err(Damage::Undecodable(e.to_string())),
    }
}

/// Which stored record is corrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    LogEntry {
        index: u64,
    },
    Snapshot,
    Document {
        collection: String,
        id: String,
    },
    /// The replica as a whole (what a consistency check compares).
    Replica,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::LogEntry { index } => write!(f, "log entry {index}"),
            Record::Snapshot => write!(f, "snapshot"),
            Record::Document { collection, id } => write!(f, "document {collection}/{id}"),
            Record::Replica => write!(f, "replica"),
        }
    }
}

/// A stored record of a group failed its check: the group must not serve from this replica.
/// The other replicas still hold the data; replace this one (or restore it from them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {record} of group {gid}: {damage}")]
pub struct Corruption {
    pub gid: GroupId,
    pub record: Record,
    pub damage: Damage,
}

impl Corruption {
    /// The corruption an `io::Error` of the store carries, if it is one.
    pub fn of(e: &std::io::Error) -> Option<&Corruption> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Corruption>())
    }
}

impl From<Corruption> for std::io::Error {
    fn from(c: Corruption) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, c)
    }
}

/// Reads record `record` of group `gid` from its stored bytes.
pub(crate) fn read<T: DeserializeOwned>(
    gid: GroupId,
    record: impl FnOnce() -> Record,
    bytes: &[u8],
) -> Result<T, Corruption> {
    unseal(bytes).map_err(|damage| Corruption {
        gid,
        record: record(),
        damage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn a_sealed_record_reads_back_and_an_old_one_still_reads() {
        let value = (7u64, "seven".to_string());
        let sealed = seal(&value).unwrap_or_default();
        assert_eq!(
            sealed.len(),
            encode(&value).unwrap_or_default().len() + SEAL_BYTES
        );
        assert_eq!(unseal::<(u64, String)>(&sealed), Ok(value.clone()));
        let old = encode(&value).unwrap_or_default();
        assert_eq!(unseal::<(u64, String)>(&old), Ok(value));
    }

    #[test]
    fn every_flipped_byte_of_a_sealed_record_is_found() {
        let value = (300u64, "a document body".to_string(), Some(5u32));
        let sealed = seal(&value).unwrap_or_default();
        for at in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    unseal::<(u64, String, Option<u32>)>(&bad).is_err(),
                    "bit {bit} of byte {at} flipped went unnoticed"
                );
            }
        }
    }

    #[test]
    fn no_record_of_the_old_format_starts_with_the_tag() {
        // The records that are sealed now start with a varint (log entries, documents) or an
        // option (snapshots): a tagged record never decodes as one of them.
        let mut tagged = TAG.to_vec();
        tagged.extend_from_slice(&[0; 64]);
        assert!(decode::<u64>(&tagged).is_err());
        assert!(decode::<crate::consensus::Entry>(&tagged).is_err());
        assert!(decode::<super::super::StoredDoc>(&tagged).is_err());
        assert!(decode::<Option<crate::consensus::LogId>>(&tagged).is_err());
    }
}
