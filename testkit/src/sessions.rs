//! What each worker's session saw, and the check that it never went back in time: every
//! worker reads and writes through a `flotilla_client::Session`, and some of its reads are
//! stale (any replica may serve them). Per session and document, the revision a read returns
//! must be at least the highest revision the session saw of that document before: its own
//! acknowledged writes (read-your-writes) and its earlier reads (monotonic reads). A read that
//! finds no document carries no revision and is not judged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One thing a session saw, in the order it saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Its write of the document was acknowledged at `revision`.
    Wrote { revision: u64 },
    /// A read returned the version written at `revision`.
    Read { revision: u64, stale: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub session: u32,
    pub key: String,
    pub seen: Seen,
    /// For a read: the floor it carried for the document's shard (what the session sent the
    /// replica), when known. A violation with a floor at or past what the session saw is the
    /// replica's; one below it, the session's.
    pub floor_sent: Option<u64>,
}

/// Every session's observations, shared by the workers.
#[derive(Debug, Clone, Default)]
pub struct SessionLog(Arc<Mutex<Vec<Observation>>>);

impl SessionLog {
    pub fn record(&self, session: u32, key: &str, seen: Seen) {
        self.record_with_floor(session, key, seen, None);
    }

    /// [`SessionLog::record`] of a read that carried `floor_sent` for the document's shard.
    pub fn record_with_floor(&self, session: u32, key: &str, seen: Seen, floor_sent: Option<u64>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Observation {
                session,
                key: key.to_string(),
                seen,
                floor_sent,
            });
    }

    pub fn observations(&self) -> Vec<Observation> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Checks that no session read a document older than it had seen (see the module notes).
/// Returns a summary, or the violations.
pub fn check(observations: &[Observation]) -> Result<String, Vec<String>> {
    // Per session and key: the highest revision seen, and what showed it.
    let mut highest: HashMap<(u32, &str), (u64, Option<Seen>)> = HashMap::new();
    let mut violations = Vec::new();
    let (mut stale, mut reads) = (0, 0);
    for o in observations {
        let (floor, by) = highest.entry((o.session, o.key.as_str())).or_default();
        match o.seen {
            Seen::Wrote { revision } if revision > *floor => {
                (*floor, *by) = (revision, Some(o.seen))
            }
            Seen::Wrote { .. } => {}
            Seen::Read {
                revision,
                stale: is_stale,
            } => {
                reads += 1;
                stale += usize::from(is_stale);
                if revision < *floor {
                    violations.push(format!(
                        "session {} read {} at revision {revision} after seeing revision {} \
                         ({} read carrying the floor {}; the revision was seen as {:?})",
                        o.session,
                        o.key,
                        *floor,
                        if is_stale { "a stale" } else { "a consistent" },
                        o.floor_sent
                            .map_or_else(|| "unknown".to_string(), |f| f.to_string()),
                        by.unwrap_or(o.seen),
                    ));
                }
                if revision > *floor {
                    (*floor, *by) = (revision, Some(o.seen));
                }
            }
        }
    }
    if violations.is_empty() {
        Ok(format!(
            "sessions: {reads} reads ({stale} stale) never older than what their session saw"
        ))
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(session: u32, key: &str, seen: Seen) -> Observation {
        Observation {
            session,
            key: key.into(),
            seen,
            floor_sent: None,
        }
    }

    #[test]
    fn reads_that_never_go_back_pass_and_one_that_does_is_named() {
        let mut log = vec![
            o(1, "a", Seen::Wrote { revision: 5 }),
            o(
                1,
                "a",
                Seen::Read {
                    revision: 5,
                    stale: true,
                },
            ),
            o(
                2,
                "a",
                Seen::Read {
                    revision: 3,
                    stale: true,
                },
            ),
            o(
                1,
                "b",
                Seen::Read {
                    revision: 2,
                    stale: true,
                },
            ),
            o(
                1,
                "a",
                Seen::Read {
                    revision: 9,
                    stale: false,
                },
            ),
        ];
        let summary = check(&log).expect("monotonic");
        assert!(summary.contains("4 reads (3 stale)"), "{summary}");
        // Session 1 then reads "a" older than its own write.
        log.push(o(
            1,
            "a",
            Seen::Read {
                revision: 6,
                stale: true,
            },
        ));
        let violations = check(&log).expect_err("back in time");
        assert_eq!(violations.len(), 1);
        assert!(
            violations[0].contains("session 1 read a at revision 6"),
            "{}",
            violations[0]
        );
    }
}
