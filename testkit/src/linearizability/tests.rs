//! Unit tests of the checker: small histories written as text, each with its verdict.

use super::*;

/// A history written as lines `client start end call outcome`, times in milliseconds,
/// `end` `-` for unknown: `1 0 10 put:5 v1`, `2 3 4 get 5@1`, `2 5 6 get none`,
/// `3 0 - put:7 ?`, `1 0 2 del existed`, `1 0 2 put:5@0 v1` (conditional).
fn history(text: &str) -> Vec<Op> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            let ms = |s: &str| Duration::from_millis(s.parse().expect("time"));
            let call = match w[3] {
                "get" => Call::Get,
                "del" => Call::Delete { if_version: None },
                del if del.starts_with("del@") => Call::Delete {
                    if_version: Some(del[4..].parse().expect("version")),
                },
                put => {
                    let arg = put.strip_prefix("put:").expect("put:VALUE");
                    let (value, cond) = match arg.split_once('@') {
                        Some((v, c)) => (v, Some(c.parse().expect("version"))),
                        None => (arg, None),
                    };
                    Call::Put {
                        value: value.parse().expect("value"),
                        if_version: cond,
                    }
                }
            };
            let outcome = match w[4] {
                "?" => Outcome::Unknown,
                "fail" => Outcome::Failed,
                "none" => Outcome::Read(None),
                "existed" => Outcome::Deleted { existed: true },
                "absent" => Outcome::Deleted { existed: false },
                v if v.starts_with('v') => Outcome::Put {
                    version: v[1..].parse().expect("version"),
                },
                read => {
                    let (value, version) = read.split_once('@').expect("VALUE@VERSION");
                    Outcome::Read(Some((
                        value.parse().expect("value"),
                        version.parse().expect("version"),
                    )))
                }
            };
            Op {
                client: w[0].parse().expect("client"),
                key: "k".into(),
                call,
                invoked: ms(w[1]),
                completed: (w[2] != "-").then(|| ms(w[2])),
                outcome,
                error: None,
                via: Default::default(),
            }
        })
        .collect()
}

fn verdict_with(text: &str, versions: Versions) -> Verdict {
    check_linearizable(&history(text), versions)
        .remove("k")
        .unwrap_or(Verdict::Linearizable)
}

fn verdict(text: &str) -> Verdict {
    verdict_with(text, Versions::Exact)
}

#[test]
fn sequential_puts_reads_and_deletes_are_linearizable() {
    let v = verdict(
        "1 0 1 put:1 v1
         1 2 3 get 1@1
         1 4 5 put:2 v2
         2 6 7 get 2@2
         2 8 9 del existed
         1 10 11 get none
         1 12 13 del absent
         2 14 15 put:3 v1",
    );
    assert_eq!(v, Verdict::Linearizable);
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    // The read overlaps both puts: it may see either; the later read sees the winner.
    let v = verdict(
        "1 0 10 put:1 v2
         2 0 10 put:2 v1
         3 5 6 get 2@1
         3 11 12 get 1@2",
    );
    assert_eq!(v, Verdict::Linearizable);
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_a_violation() {
    let Verdict::Violation(sub) = verdict(
        "1 0 1 put:1 v1
         1 2 3 put:2 v2
         2 4 5 get 1@1
         2 6 7 get 2@2",
    ) else {
        panic!("a stale read must be found");
    };
    // The violation is complete once the stale read returned; the later read is trimmed.
    assert_eq!(sub.len(), 3, "{sub:#?}");
    assert!(
        sub.iter()
            .all(|op| op.completed <= Some(Duration::from_millis(5)))
    );
}

#[test]
fn reads_that_go_back_in_time_are_a_violation() {
    let v = verdict(
        "1 0 100 put:1 v1
         2 10 20 get 1@1
         3 30 40 get none",
    );
    assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
}

#[test]
fn a_version_skipped_or_repeated_is_a_violation() {
    // The put applied twice (the version went up by two).
    let v = verdict(
        "1 0 1 put:1 v1
         1 2 3 put:2 v3",
    );
    assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
    let v = verdict(
        "1 0 1 put:1 v1
         2 2 3 put:2 v1",
    );
    assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
}

#[test]
fn monotonic_versions_tolerate_a_write_applied_twice_within_its_interval() {
    // A put retried after its first attempt applied: acknowledged with version 3.
    let twice = "1 0 1 put:1 v1
                 2 2 30 put:2 v3
                 1 31 32 get 2@3
                 3 33 34 del existed";
    assert!(matches!(verdict(twice), Verdict::Violation(_)));
    assert_eq!(
        verdict_with(twice, Versions::Monotonic),
        Verdict::Linearizable
    );
    // A delete applied twice answers that nothing existed.
    let delete = "1 0 1 put:1 v1
                  2 2 30 del absent
                  1 31 32 get none";
    assert!(matches!(verdict(delete), Verdict::Violation(_)));
    assert_eq!(
        verdict_with(delete, Versions::Monotonic),
        Verdict::Linearizable
    );
    // Values still have to be linearizable, and versions may not go back.
    let stale = "1 0 1 put:1 v1
                 1 2 3 put:2 v2
                 2 4 5 get 1@1";
    assert!(matches!(
        verdict_with(stale, Versions::Monotonic),
        Verdict::Violation(_)
    ));
    let back = "1 0 1 put:1 v1
                1 2 3 put:2 v5
                2 4 5 get 2@4";
    assert!(matches!(
        verdict_with(back, Versions::Monotonic),
        Verdict::Violation(_)
    ));
}

#[test]
fn an_unknown_write_may_or_may_not_have_happened() {
    // Seen by a later read...
    assert_eq!(
        verdict(
            "1 0 - put:1 ?
             2 50 51 get 1@1"
        ),
        Verdict::Linearizable
    );
    // ...or never.
    assert_eq!(
        verdict(
            "1 0 - put:1 ?
             2 50 51 get none
             2 52 53 put:2 v1"
        ),
        Verdict::Linearizable
    );
    // But once seen it cannot be unseen.
    assert!(matches!(
        verdict(
            "1 0 - put:1 ?
             2 50 51 get 1@1
             2 52 53 get none"
        ),
        Verdict::Violation(_)
    ));
}

#[test]
fn failed_writes_never_take_effect() {
    let v = verdict(
        "1 0 1 put:1 fail
         2 2 3 get 1@1",
    );
    assert!(matches!(v, Verdict::Violation(_)), "{v:?}");
}

#[test]
fn conditional_puts_apply_only_at_their_version() {
    assert_eq!(
        verdict(
            "1 0 1 put:1@0 v1
             1 2 3 put:2@1 v2
             2 4 5 get 2@2"
        ),
        Verdict::Linearizable
    );
    // Acknowledged although the version it was conditioned on was gone.
    assert!(matches!(
        verdict(
            "1 0 1 put:1 v1
             1 2 3 put:2 v2
             2 4 5 put:3@1 v2"
        ),
        Verdict::Violation(_)
    ));
    // An unknown conditional put whose condition failed changes nothing.
    assert_eq!(
        verdict(
            "1 0 1 put:1 v1
             2 2 - put:9@5 ?
             1 4 5 get 1@1"
        ),
        Verdict::Linearizable
    );
}

#[test]
fn conditional_deletes_apply_only_at_their_version() {
    assert_eq!(
        verdict(
            "1 0 1 put:1 v1
             1 2 3 del@1 existed
             1 4 5 get none"
        ),
        Verdict::Linearizable
    );
    assert!(matches!(
        verdict(
            "1 0 1 put:1 v1
             1 2 3 put:2 v2
             1 4 5 del@1 existed"
        ),
        Verdict::Violation(_)
    ));
    // Unknown and its condition gone: nothing deleted.
    assert_eq!(
        verdict(
            "1 0 1 put:1 v1
             1 2 3 put:2 v2
             2 4 - del@1 ?
             1 6 7 get 2@2"
        ),
        Verdict::Linearizable
    );
}

#[test]
fn a_delete_must_report_whether_the_document_existed() {
    assert!(matches!(
        verdict(
            "1 0 1 put:1 v1
             1 2 3 del absent"
        ),
        Verdict::Violation(_)
    ));
}

#[test]
fn the_shrunk_history_keeps_only_what_the_violation_needs() {
    let mut text = String::new();
    // Forty correct operations, then a stale read, then more noise.
    for i in 0..20u64 {
        let t = i * 10;
        text.push_str(&format!("1 {t} {} put:{} v{}\n", t + 1, i + 1, i + 1));
        text.push_str(&format!("2 {} {} get {}@{}\n", t + 2, t + 3, i + 1, i + 1));
    }
    text.push_str("3 300 301 get 5@5\n");
    text.push_str("1 400 401 put:99 v21\n");
    let Verdict::Violation(sub) = verdict(&text) else {
        panic!("the stale read must be found");
    };
    assert!(sub.len() < 25, "{} operations kept: {sub:#?}", sub.len());
    assert!(
        sub.iter()
            .any(|op| op.invoked == Duration::from_millis(300))
    );
    assert!(
        sub.iter()
            .all(|op| op.invoked <= Duration::from_millis(300))
    );
}

#[test]
fn a_lost_acknowledged_write_is_reported() {
    let ops = history(
        "1 1 2 put:1 v1
         1 3 4 put:2 v2
         2 5 - put:3 ?",
    );
    // The final state is the first write: the second, acknowledged after it, was lost.
    let lost = lost_writes("k", &ops, Some((1, 1)));
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        lost[0].write.call,
        Call::Put {
            value: 2,
            if_version: None
        }
    );
    // The unknown write may be the last one; so may the acknowledged one.
    assert!(lost_writes("k", &ops, Some((3, 3))).is_empty());
    assert!(lost_writes("k", &ops, Some((2, 2))).is_empty());
    // Nothing at all: every acknowledged write is lost.
    assert_eq!(lost_writes("k", &ops, None).len(), 2);
}

#[test]
fn the_report_names_the_seed_and_the_offending_operations() {
    let ops = history(
        "1 1 2 put:1 v1
         2 3 4 get none",
    );
    let finals = BTreeMap::from([("k".to_string(), None)]);
    let report = check(42, Versions::Exact, &ops, &finals);
    assert!(!report.is_ok());
    let text = report.to_string();
    assert!(text.contains("FLOTILLA_SEED=42"), "{text}");
    assert!(text.contains("put(1)"), "{text}");
    assert!(text.contains("acknowledged write lost"), "{text}");
    let ok = check(
        7,
        Versions::Exact,
        &history("1 0 1 put:1 v1"),
        &BTreeMap::new(),
    );
    assert!(ok.is_ok(), "{ok}");
}
