//! Which of the cluster's recorded topology events a `DatabaseGroup` reports as Kubernetes
//! Events, and where it resumes reading them.
//!
//! A replica stopped for good on its node (a corrupt record, or content that differs from the
//! other replicas') is rebuilt by the cluster within seconds: between two looks at the
//! topology, so the `Replica<State>` Events that come from comparing them miss it. The cluster
//! records every transition, in order and numbered, so the group reads those instead and
//! raises a Warning (`ReplicaBroken`) for each transition of a replica of its database that
//! the cluster made because the replica was stopped for good (the mark to Rehab, and the
//! removal), with the cluster's reason in the note.
//!
//! The group's status remembers the last event handled and the cluster that numbered it
//! ([`EventCursor`]), so that each event is reported once, across reconciles and operator
//! restarts. A group with no cursor yet (a new one, or one from before the cursor existed)
//! reads every event the cluster still keeps (a bounded number of the most recent): breakages
//! from shortly before are reported once, each note saying when the cluster recorded it. A
//! cluster made anew under the same name numbers from 1 again, and is read from its first
//! event too. The Events are published before the status records the cursor (up to the last
//! one published when publishing fails), so a failed write publishes them again: at least
//! once, never lost.

use crate::admin::{TopologyEvent, TopologyEvents};
use crate::crd::{DatabaseGroupStatus, Reason};
use k8s_openapi::jiff::Timestamp;

/// Longest `note` of a Kubernetes Event, in bytes.
pub const NOTE_MAX_BYTES: usize = 1024;

/// Events of no concern to the group read past before its cursor moves over them.
pub const CURSOR_SLACK: u64 = 64;

/// Where the last read of a cluster's events ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventCursor {
    /// The cluster that numbered the events.
    pub cluster_id: String,
    /// The last event handled.
    pub sequence: u64,
}

impl EventCursor {
    /// The cursor `status` records, if any.
    pub fn of(status: &DatabaseGroupStatus) -> Option<Self> {
        Some(Self {
            cluster_id: status.events_cluster_id.clone()?,
            sequence: status.last_event_sequence?,
        })
    }

    /// Records the cursor in `status`.
    pub fn record(&self, status: &mut DatabaseGroupStatus) {
        status.events_cluster_id = Some(self.cluster_id.clone());
        status.last_event_sequence = Some(self.sequence);
    }
}

/// The sequence number to read the cluster's events after: the last one handled, or 0 (every
/// event the cluster keeps) when none was.
pub fn read_after(cursor: Option<&EventCursor>) -> u64 {
    cursor.map_or(0, |c| c.sequence)
}

/// A Kubernetes Event to publish about the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaEvent {
    /// The cluster's event it reports.
    pub sequence: u64,
    pub warning: bool,
    pub reason: Reason,
    pub note: String,
    /// The pod of the replica's node (Events of different pods are never aggregated into
    /// one); `None` when the cluster no longer knows the node.
    pub pod: Option<String>,
}

/// What to do with the events read after [`read_after`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsPlan {
    /// Another cluster numbered the events than the one the cursor counts in (the group's
    /// Cluster was made anew): read again after 0, and plan without the cursor.
    ReadFromStart,
    /// Publish these Events, then record the cursor.
    Report {
        events: Vec<ReplicaEvent>,
        cursor: EventCursor,
    },
}

/// The Events to publish about `database` from `read` (the events read after
/// [`read_after`]`(cursor)`), and the cursor to record once they are published.
pub fn plan_topology_events(
    database: &str,
    cursor: Option<&EventCursor>,
    read: &TopologyEvents,
) -> EventsPlan {
    let after = match cursor {
        Some(c) if c.cluster_id != read.cluster_id && c.sequence > 0 => {
            return EventsPlan::ReadFromStart;
        }
        Some(c) if c.cluster_id == read.cluster_id => c.sequence,
        _ => 0,
    };
    let new = read.events.iter().filter(|e| e.sequence > after);
    let last = new.clone().map(|e| e.sequence).max().unwrap_or(after);
    let events: Vec<ReplicaEvent> = new
        .filter(|e| e.database == database && stopped_for_good(e))
        .map(|e| ReplicaEvent {
            sequence: e.sequence,
            warning: true,
            reason: Reason::ReplicaBroken,
            note: note(e),
            pod: e.pod.clone(),
        })
        .collect();
    // Events that concern other databases (or ordinary transitions) move the cursor only once
    // they are many: each move is a write of the group's status, and every group of the
    // cluster would otherwise write its own whenever any replica anywhere changes state.
    let cursor = match cursor {
        Some(c)
            if c.cluster_id == read.cluster_id
                && events.is_empty()
                && last - c.sequence < CURSOR_SLACK =>
        {
            c.clone()
        }
        _ => EventCursor {
            cluster_id: read.cluster_id.clone(),
            sequence: last,
        },
    };
    EventsPlan::Report { events, cursor }
}

/// Whether the cluster made the transition because the replica was stopped for good on its
/// node (the cluster says so in the event's cause; a replica added to replace one is not
/// itself broken).
fn stopped_for_good(event: &TopologyEvent) -> bool {
    event.replica_broken
}

/// `shard 1: replica on flotilla-2 went from member to rehab at 2025-03-01T10:00:00Z: stopped
/// for good: ...`, cut to what an Event's note may hold.
fn note(event: &TopologyEvent) -> String {
    let replica = match &event.pod {
        Some(pod) => pod.clone(),
        None => format!("node {}", event.node_id),
    };
    let seconds = i64::try_from(event.at_unix_ms / 1000).unwrap_or(i64::MAX);
    let at = match Timestamp::from_second(seconds) {
        Ok(at) => at.to_string(),
        Err(_) => format!("{} ms after the Unix epoch", event.at_unix_ms),
    };
    let note = format!(
        "shard {}: replica on {replica} went from {} to {} at {at}: {}",
        event.shard, event.from_state, event.to_state, event.reason
    );
    truncated(note, NOTE_MAX_BYTES)
}

/// `text` cut to at most `max` bytes on a character boundary, ending with `…` when cut.
fn truncated(mut text: String, max: usize) -> String {
    const ELLIPSIS: char = '…';
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(ELLIPSIS.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push(ELLIPSIS);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORRUPT: &str = "stopped for good: corrupt replica of group 1: differs from the other \
        replicas at log index 33 (digest 86939e6acde4 here, 323bf5b0518a on 2 of 3 replicas compared)";
    const REMOVED: &str =
        "stopped for good on node 102: corrupt log entry 17 of group 5: checksum mismatch";

    fn event(sequence: u64, database: &str, to: &str, reason: &str) -> TopologyEvent {
        TopologyEvent {
            sequence,
            // 2025-03-01T10:00:00.250Z
            at_unix_ms: 1_740_823_200_250,
            database: database.to_owned(),
            shard: 1,
            node_id: 102,
            pod: Some("flotilla-2".to_owned()),
            from_state: "member".to_owned(),
            to_state: to.to_owned(),
            reason: reason.to_owned(),
            replica_broken: reason.starts_with("stopped for good"),
        }
    }

    fn read(cluster_id: &str, events: Vec<TopologyEvent>) -> TopologyEvents {
        TopologyEvents {
            cluster_id: cluster_id.to_owned(),
            events,
        }
    }

    fn cursor(cluster_id: &str, sequence: u64) -> EventCursor {
        EventCursor {
            cluster_id: cluster_id.to_owned(),
            sequence,
        }
    }

    fn report(plan: EventsPlan) -> (Vec<ReplicaEvent>, EventCursor) {
        match plan {
            EventsPlan::Report { events, cursor } => (events, cursor),
            EventsPlan::ReadFromStart => panic!("expected a report, got ReadFromStart"),
        }
    }

    #[test]
    fn a_replica_stopped_for_good_is_a_warning_naming_shard_pod_and_the_clusters_reason() {
        let events = vec![
            event(5, "orders", "rehab", "not seen for 60s"),
            event(6, "orders", "rehab", CORRUPT),
            event(7, "orders", "removed", REMOVED),
        ];
        let (published, cursor) =
            report(plan_topology_events("orders", None, &read("c-1", events)));
        assert_eq!(
            published,
            vec![
                ReplicaEvent {
                    sequence: 6,
                    warning: true,
                    reason: Reason::ReplicaBroken,
                    note: format!(
                        "shard 1: replica on flotilla-2 went from member to rehab at \
                         2025-03-01T10:00:00Z: {CORRUPT}"
                    ),
                    pod: Some("flotilla-2".to_owned()),
                },
                ReplicaEvent {
                    sequence: 7,
                    warning: true,
                    reason: Reason::ReplicaBroken,
                    note: format!(
                        "shard 1: replica on flotilla-2 went from member to removed at \
                         2025-03-01T10:00:00Z: {REMOVED}"
                    ),
                    pod: Some("flotilla-2".to_owned()),
                },
            ]
        );
        assert_eq!(cursor, self::cursor("c-1", 7));
    }

    #[test]
    fn other_databases_and_ordinary_transitions_are_not_reported_and_passed_once_many() {
        let events = vec![
            event(3, "invoices", "rehab", CORRUPT),
            event(4, "orders", "member", "caught up (0 entries behind)"),
            event(
                5,
                "orders",
                "promotable",
                &format!("replacing node 102: {REMOVED}"),
            ),
        ];
        let (published, cursor) = report(plan_topology_events(
            "orders",
            Some(&self::cursor("c-1", 2)),
            &read("c-1", events),
        ));
        assert_eq!(published, Vec::new());
        assert_eq!(
            cursor,
            self::cursor("c-1", 2),
            "a few events of no concern leave the status as it is"
        );
        // Many of them move the cursor past them all.
        let many: Vec<_> = (3..3 + CURSOR_SLACK)
            .map(|n| event(n, "invoices", "rehab", CORRUPT))
            .collect();
        let (published, cursor) = report(plan_topology_events(
            "orders",
            Some(&self::cursor("c-1", 2)),
            &read("c-1", many),
        ));
        assert_eq!(published, Vec::new());
        assert_eq!(cursor, self::cursor("c-1", 2 + CURSOR_SLACK));
    }

    #[test]
    fn events_handled_before_are_not_reported_again() {
        let events = vec![
            event(6, "orders", "rehab", CORRUPT),
            event(7, "orders", "removed", REMOVED),
        ];
        let (published, cursor) = report(plan_topology_events(
            "orders",
            Some(&self::cursor("c-1", 6)),
            &read("c-1", events),
        ));
        let sequences: Vec<_> = published.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, vec![7], "only the removal is new");
        assert_eq!(cursor, self::cursor("c-1", 7));
    }

    #[test]
    fn no_new_event_keeps_the_cursor() {
        let (published, cursor) = report(plan_topology_events(
            "orders",
            Some(&self::cursor("c-1", 9)),
            &read("c-1", Vec::new()),
        ));
        assert_eq!(published, Vec::new());
        assert_eq!(cursor, self::cursor("c-1", 9));
        let (_, first) = report(plan_topology_events(
            "orders",
            None,
            &read("c-1", Vec::new()),
        ));
        assert_eq!(
            first,
            self::cursor("c-1", 0),
            "a cluster with no events yet is read from its first one later"
        );
    }

    #[test]
    fn a_group_without_a_cursor_reads_every_event_the_cluster_keeps() {
        assert_eq!(read_after(None), 0);
        assert_eq!(read_after(Some(&cursor("c-1", 41))), 41);
        let status = DatabaseGroupStatus::default();
        assert_eq!(EventCursor::of(&status), None);
        let mut status = status;
        cursor("c-1", 41).record(&mut status);
        assert_eq!(status.last_event_sequence, Some(41));
        assert_eq!(EventCursor::of(&status), Some(cursor("c-1", 41)));
    }

    #[test]
    fn a_cluster_made_anew_is_read_again_from_its_first_event() {
        let events = vec![event(2, "orders", "rehab", CORRUPT)];
        assert_eq!(
            plan_topology_events(
                "orders",
                Some(&cursor("c-1", 500)),
                &read("c-2", events.clone())
            ),
            EventsPlan::ReadFromStart
        );
        // Read again after 0, planned without the cursor.
        let (published, cursor) =
            report(plan_topology_events("orders", None, &read("c-2", events)));
        assert_eq!(published.len(), 1);
        assert_eq!(cursor, self::cursor("c-2", 2));
    }

    #[test]
    fn a_replica_of_a_node_the_cluster_forgot_is_named_by_node_id() {
        let mut gone = event(8, "orders", "removed", REMOVED);
        gone.pod = None;
        let (published, _) = report(plan_topology_events(
            "orders",
            None,
            &read("c-1", vec![gone]),
        ));
        let notes: Vec<_> = published
            .iter()
            .map(|e| (e.note.as_str(), e.pod.clone()))
            .collect();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].0.starts_with("shard 1: replica on node 102 went"),
            "{}",
            notes[0].0
        );
        assert_eq!(notes[0].1, None);
    }

    #[test]
    fn a_long_reason_is_cut_to_what_a_note_may_hold() {
        let long = format!("stopped for good: {}", "é".repeat(NOTE_MAX_BYTES));
        let (published, _) = report(plan_topology_events(
            "orders",
            None,
            &read("c-1", vec![event(1, "orders", "rehab", &long)]),
        ));
        let note = published
            .first()
            .map(|e| e.note.clone())
            .unwrap_or_default();
        assert!(note.len() <= NOTE_MAX_BYTES, "{} bytes", note.len());
        assert!(note.ends_with('…'));
        assert!(note.starts_with("shard 1: replica on flotilla-2"));
    }
}
