//! The watch checker finds each kind of violation and passes a whole, orderly stream.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;

fn op(key: &str, call: Call, outcome: Outcome) -> Op {
    Op {
        client: 1,
        key: key.into(),
        call,
        invoked: Duration::ZERO,
        completed: Some(Duration::from_millis(1)),
        outcome,
        error: None,
        via: Default::default(),
    }
}

fn put(key: &str, value: u64, version: u64) -> Op {
    op(
        key,
        Call::Put {
            value,
            if_version: None,
        },
        Outcome::Put { version },
    )
}

fn seen(shard: u32, revision: u64, key: &str, change: Change) -> Seen {
    Seen {
        shard,
        revision,
        key: key.into(),
        change,
    }
}

fn p(value: u64, version: u64) -> Change {
    Change::Put { value, version }
}

/// Two documents on two shards: a put, a second put, a delete and a put again.
fn history() -> (Vec<Op>, Vec<Seen>, BTreeMap<String, Register>) {
    let ops = vec![
        put("a", 1, 1),
        put("b", 2, 1),
        put("a", 3, 2),
        op(
            "a",
            Call::Delete { if_version: None },
            Outcome::Deleted { existed: true },
        ),
        put("a", 4, 1),
    ];
    let events = vec![
        seen(0, 5, "a", p(1, 1)),
        seen(1, 3, "b", p(2, 1)),
        seen(0, 6, "a", p(3, 2)),
        seen(0, 7, "a", Change::Delete),
        seen(0, 8, "a", p(4, 1)),
    ];
    let finals = BTreeMap::from([("a".into(), Some((4, 1))), ("b".into(), Some((2, 1)))]);
    (ops, events, finals)
}

fn log(events: Vec<Seen>) -> WatchLog {
    WatchLog {
        events,
        ..WatchLog::default()
    }
}

#[test]
fn a_whole_orderly_stream_passes() {
    let (ops, events, finals) = history();
    let summary = check(&log(events), &ops, &finals).expect("no violation");
    assert!(summary.contains("5 changes"), "{summary}");
}

#[test]
fn a_missing_change_breaks_the_version_chain() {
    let (ops, mut events, finals) = history();
    events.remove(0);
    let violations = check(&log(events), &ops, &finals).expect_err("a gap");
    assert!(
        violations.iter().any(|v| v.contains("a change is missing")),
        "{violations:?}"
    );
    assert!(
        violations
            .iter()
            .any(|v| v.contains("acknowledged put of 1 never delivered")),
        "{violations:?}"
    );
}

#[test]
fn a_failed_write_delivered_or_a_wrong_version_is_found() {
    let (mut ops, events, finals) = history();
    ops[1].outcome = Outcome::Failed;
    let violations = check(&log(events.clone()), &ops, &finals).expect_err("failed write");
    assert!(
        violations
            .iter()
            .any(|v| v.contains("of a write that failed")),
        "{violations:?}"
    );
    let (mut ops, _, _) = history();
    ops[2].outcome = Outcome::Put { version: 7 };
    let violations = check(&log(events), &ops, &finals).expect_err("version");
    assert!(
        violations.iter().any(|v| v.contains("acknowledged at 7")),
        "{violations:?}"
    );
}

#[test]
fn the_last_change_must_be_the_final_state() {
    let (ops, events, mut finals) = history();
    finals.insert("b".into(), None);
    let violations = check(&log(events), &ops, &finals).expect_err("final state");
    assert!(
        violations
            .iter()
            .any(|v| v.starts_with("b: the last change")),
        "{violations:?}"
    );
}

#[test]
fn repeats_are_dropped_after_a_resume_and_found_within_a_stream() {
    let mut state = State {
        log: WatchLog::default(),
        cursors: BTreeMap::new(),
    };
    let mut resumed = BTreeSet::new();
    state.record(seen(0, 5, "a", p(1, 1)), &mut resumed);
    state.record(seen(0, 5, "b", p(2, 1)), &mut resumed);
    // A new stream resumes after revision 4 of shard 0: revision 5 comes again.
    assert_eq!(state.resume_after(), vec![(0, 4)]);
    let mut resumed = BTreeSet::from([0]);
    state.record(seen(0, 5, "a", p(1, 1)), &mut resumed);
    state.record(seen(0, 5, "b", p(2, 1)), &mut resumed);
    state.record(seen(0, 6, "a", p(3, 2)), &mut resumed);
    assert_eq!((state.log.events.len(), state.log.repeats), (3, 2));
    assert!(
        state.log.violations.is_empty(),
        "{:?}",
        state.log.violations
    );
    // Two changes of one document at one revision (independent writes in one log entry):
    // both delivered, neither a repeat.
    state.record(seen(0, 6, "a", p(4, 3)), &mut resumed);
    assert_eq!((state.log.events.len(), state.log.repeats), (4, 2));
    assert!(
        state.log.violations.is_empty(),
        "{:?}",
        state.log.violations
    );
    // Within that stream now: a repeat, and a revision going back, are violations.
    state.record(seen(0, 6, "a", p(3, 2)), &mut resumed);
    state.record(seen(0, 5, "c", p(9, 1)), &mut resumed);
    assert_eq!(state.log.violations.len(), 2, "{:?}", state.log.violations);
}

#[test]
fn a_compacted_stream_is_not_held_to_the_whole_history() {
    let (ops, mut events, finals) = history();
    // Started over with new changes only after the first change: the next two were missed.
    events.drain(1..3);
    let mut log = log(events);
    log.compacted.push("revision 2 compacted".into());
    log.started_over_at = Some(1);
    let summary = check(&log, &ops, &finals).expect("an explicit error excuses the gap");
    assert!(
        summary.contains("1 ended with REVISION_COMPACTED"),
        "{summary}"
    );
}

#[test]
fn after_a_start_over_only_documents_changed_since_are_held_to_their_final_state() {
    let (ops, events, mut finals) = history();
    let mut log = log(events);
    log.compacted.push("revision 2 compacted".into());
    // Started over before the last change of "a": "b" changed only before.
    log.started_over_at = Some(4);
    finals.insert("b".into(), Some((99, 9)));
    assert!(log.settled(&finals));
    check(&log, &ops, &finals).expect("b is not known after the start over");
    finals.insert("a".into(), None);
    assert!(!log.settled(&finals));
    check(&log, &ops, &finals).expect_err("a is");
}

#[test]
fn a_batch_delivered_in_part_or_at_two_revisions_of_a_shard_is_found() {
    let batch = |key: &str, value: u64| Op {
        via: Via::Batch(7),
        ..put(key, value, 1)
    };
    let ops = vec![batch("a", 1), batch("b", 2)];
    let finals = BTreeMap::from([("a".into(), Some((1, 1))), ("b".into(), Some((2, 1)))]);
    // Both puts at one revision of their shard: atomic.
    let whole = vec![seen(0, 4, "a", p(1, 1)), seen(0, 4, "b", p(2, 1))];
    check(&log(whole), &ops, &finals).expect("an atomic batch");
    // On two shards (a transaction underneath), each shard has its own revision.
    let across = vec![seen(0, 4, "a", p(1, 1)), seen(1, 9, "b", p(2, 1))];
    check(&log(across), &ops, &finals).expect("a batch across shards");
    // One shard, two revisions: not atomic.
    let split = vec![seen(0, 4, "a", p(1, 1)), seen(0, 5, "b", p(2, 1))];
    let violations = check(&log(split), &ops, &finals).expect_err("two revisions");
    assert!(
        violations
            .iter()
            .any(|v| v.contains("batch 7: its puts on shard 0")),
        "{violations:?}"
    );
    // One put of an unknown batch delivered, the other never: applied in part.
    let unknown: Vec<Op> = ops
        .iter()
        .map(|op| Op {
            outcome: Outcome::Unknown,
            completed: None,
            ..op.clone()
        })
        .collect();
    let finals = BTreeMap::from([("a".into(), Some((1, 1))), ("b".into(), None)]);
    let part = vec![seen(0, 4, "a", p(1, 1))];
    let violations = check(&log(part), &unknown, &finals).expect_err("in part");
    assert!(
        violations
            .iter()
            .any(|v| v.contains("batch 7 applied in part")),
        "{violations:?}"
    );
}
