//! Where a watch over server-sent events stands, as the `id` of each event, so that a client
//! resuming with `Last-Event-ID` misses nothing and sees nothing twice. Revisions are per
//! shard, so the cursor holds, per shard, the revision of the last event sent and its place
//! among the events of that revision (a batch writes several documents at one revision), or
//! that the shard's revisions up to one are all behind (`*`); and, for shards it has no
//! position of, the revision their events start at. Pure.
//!
//! Resuming asks the node for each shard's changes after the revision it stood at
//! ([`Cursor::resume_after`]) and drops those at or before each shard's position within that
//! revision: exact, and failing (as a watch does) only if a revision a shard still needs was
//! compacted.

use std::collections::BTreeMap;

/// A position within a shard's feed: a revision, and the index of the last event of that
/// revision taken ([`WHOLE`]: all of them).
type Position = (u64, u32);

/// The index meaning "every event of the revision".
const WHOLE: u32 = u32::MAX;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Where the events of a shard without a position start.
    unseen_from: Option<u64>,
    shards: BTreeMap<u32, Position>,
}

/// A `Last-Event-ID` that is not a cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Last-Event-ID {0:?} is not an event id of this watch")]
pub struct MalformedCursor(pub String);

impl Cursor {
    /// A watch from `revision` of every shard.
    pub fn from_revision(revision: u64) -> Cursor {
        Cursor {
            unseen_from: Some(revision.max(1)),
            shards: BTreeMap::new(),
        }
    }

    /// A watch of what follows `revisions` (per shard: the last revision already behind).
    pub fn after(revisions: impl IntoIterator<Item = (u32, u64)>) -> Cursor {
        Cursor {
            unseen_from: None,
            shards: revisions
                .into_iter()
                .map(|(s, r)| (s, (r, WHOLE)))
                .collect(),
        }
    }

    /// The cursor of a `Last-Event-ID`: comma-separated `shard:revision:index` (index `*`:
    /// the whole revision), and `*:revision` for shards without a position.
    pub fn parse(text: &str) -> Result<Cursor, MalformedCursor> {
        let malformed = || MalformedCursor(text.to_owned());
        let mut cursor = Cursor::default();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let fields: Vec<&str> = part.trim().split(':').collect();
            match fields.as_slice() {
                ["*", from] if cursor.unseen_from.is_none() => {
                    cursor.unseen_from = Some(from.parse().map_err(|_| malformed())?);
                }
                [shard, revision, index] => {
                    let shard = shard.parse::<u32>().map_err(|_| malformed())?;
                    let revision = revision.parse::<u64>().map_err(|_| malformed())?;
                    let index = match *index {
                        "*" => WHOLE,
                        i => i
                            .parse::<u32>()
                            .ok()
                            .filter(|i| *i != WHOLE && revision > 0)
                            .ok_or_else(malformed)?,
                    };
                    if cursor.shards.insert(shard, (revision, index)).is_some() {
                        return Err(malformed());
                    }
                }
                _ => return Err(malformed()),
            }
        }
        Ok(cursor)
    }

    /// The `from_revision` a watch resuming at this cursor asks for (0: only new changes).
    pub fn resume_from(&self) -> u64 {
        let needed = self.shards.values().map(|(revision, index)| match *index {
            WHOLE => revision + 1,
            _ => *revision,
        });
        needed.chain(self.unseen_from).min().unwrap_or(0)
    }

    /// Where a watch resuming at this cursor starts: per shard with a position, the revision
    /// whose changes after it are asked for (the node reads each shard from where it stood);
    /// for the others, the `from_revision` (0: only new changes).
    pub fn resume_after(&self) -> (Vec<(u32, u64)>, u64) {
        let after = self
            .shards
            .iter()
            .map(|(shard, (revision, index))| match *index {
                WHOLE => (*shard, *revision),
                _ => (*shard, revision.saturating_sub(1)),
            })
            .collect();
        (after, self.unseen_from.unwrap_or(0))
    }

    /// Takes an event of `shard` at `revision`, counting its index among that revision's
    /// events in `received` (the stream's own position per shard), and says whether it is
    /// new (else it was sent before the client resumed, and is dropped).
    pub fn advance(&mut self, received: &mut Received, shard: u32, revision: u64) -> bool {
        // Events of one shard arrive in order; count those of one revision.
        let index = match received.get(&shard) {
            Some((r, i)) if *r == revision => i + 1,
            _ => 0,
        };
        received.insert(shard, (revision, index));
        let behind = match self.shards.get(&shard) {
            Some((r, WHOLE)) => revision <= *r,
            Some(seen) => (revision, index) <= *seen,
            None => self.unseen_from.is_some_and(|from| revision < from),
        };
        if !behind {
            self.shards.insert(shard, (revision, index));
        }
        !behind
    }
}

/// Per shard, the revision and index of the last event a watch stream received.
pub type Received = BTreeMap<u32, Position>;

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(from) = self.unseen_from {
            parts.push(format!("*:{from}"));
        }
        for (shard, (revision, index)) in &self.shards {
            match *index {
                WHOLE => parts.push(format!("{shard}:{revision}:*")),
                i => parts.push(format!("{shard}:{revision}:{i}")),
            }
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The events of a database's feed: (shard, revision) in the order each shard's feed
    /// sends them, shards interleaved; several events share a revision (a batch).
    fn feed() -> impl Strategy<Value = Vec<(u32, u64)>> {
        proptest::collection::vec((0u32..3, 0u64..3), 1..40).prop_map(|steps| {
            let mut revision = [1u64; 3];
            steps
                .into_iter()
                .map(|(shard, bump)| {
                    revision[shard as usize] += bump;
                    (shard, revision[shard as usize])
                })
                .collect()
        })
    }

    /// What the node sends a watch from `from`: each shard's events at or after it.
    fn served(events: &[(u32, u64)], from: u64) -> impl Iterator<Item = (usize, u32, u64)> + '_ {
        events
            .iter()
            .enumerate()
            .filter(move |(_, (_, r))| *r >= from)
            .map(|(i, (s, r))| (i, *s, *r))
    }

    #[test]
    fn a_cursor_reads_back_from_its_text() {
        let mut cursor = Cursor::after([(0, 2), (1, 6)]);
        let mut received = Received::new();
        assert_eq!(cursor.resume_from(), 3);
        assert!(cursor.advance(&mut received, 1, 7));
        assert!(cursor.advance(&mut received, 0, 3));
        assert!(cursor.advance(&mut received, 1, 7));
        assert!(!cursor.advance(&mut received, 0, 2));
        assert_eq!(cursor.to_string(), "0:3:0,1:7:1");
        assert_eq!(Cursor::parse(&cursor.to_string()), Ok(cursor.clone()));
        assert_eq!(cursor.resume_from(), 3);
        let from = Cursor::from_revision(5);
        assert_eq!(from.to_string(), "*:5");
        assert_eq!(
            Cursor::parse("*:5,2:9:*"),
            Ok(Cursor {
                unseen_from: Some(5),
                shards: [(2, (9, WHOLE))].into(),
            })
        );
        for bad in [
            "x",
            "1:2",
            "1:0:0",
            "1:2:3,1:4:0",
            "-1:2:3",
            "*:1,*:2",
            "1:2:4294967295",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Cursor::parse(""), Ok(Cursor::default()));
    }

    proptest! {
        /// A client that drops the connection after any event and resumes with the id of
        /// the last event it got receives every event of its watch exactly once.
        #[test]
        fn resuming_after_any_event_misses_nothing_and_repeats_nothing(
            events in feed(),
            floors in proptest::collection::vec(0u64..4, 3),
            from_revision in proptest::option::of(1u64..4),
            cut in 0usize..40,
        ) {
            let start = match from_revision {
                Some(from) => Cursor::from_revision(from),
                None => Cursor::after(floors.iter().enumerate().map(|(s, f)| (s as u32, *f))),
            };
            let wanted: Vec<usize> = events
                .iter()
                .enumerate()
                .filter(|(_, (s, r))| match from_revision {
                    Some(from) => *r >= from,
                    None => *r > floors[*s as usize],
                })
                .map(|(i, _)| i)
                .collect();
            let mut cursor = start.clone();
            let mut received = Received::new();
            let mut got = Vec::new();
            for (i, shard, revision) in served(&events, start.resume_from()) {
                if got.len() > cut % (wanted.len() + 1) {
                    break;
                }
                if cursor.advance(&mut received, shard, revision) {
                    got.push(i);
                }
            }
            let mut resumed = Cursor::parse(&cursor.to_string())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut received = Received::new();
            for (i, shard, revision) in served(&events, resumed.resume_from()) {
                if resumed.advance(&mut received, shard, revision) {
                    got.push(i);
                }
            }
            prop_assert_eq!(got, wanted);
        }
    }
}
