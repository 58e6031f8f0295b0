//! Live queries: how one change of a document moves it with respect to a query's result,
//! from the document before and after the change alone (the change feed keeps both), so that
//! following a result needs no copy of it and resumes from any revision exactly.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Predicate;

/// What a change does to a query's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveChange {
    /// The document was not in the result and is now.
    Enter,
    /// The document was in the result and still is, with a new body.
    Change,
    /// The document was in the result and is not any more (changed or deleted).
    Leave,
}

impl LiveChange {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveChange::Enter => "enter",
            LiveChange::Change => "change",
            LiveChange::Leave => "leave",
        }
    }
}

/// The effect on the result of `predicate` of a change from `before` to `after` (`None`: the
/// document did not exist, or was deleted); `None` when the change leaves the result as it
/// was (the document matched neither before nor after).
pub fn classify(
    predicate: &Predicate,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Option<LiveChange> {
    let was = before.is_some_and(|d| predicate.matches(d));
    let is = after.is_some_and(|d| predicate.matches(d));
    match (was, is) {
        (false, true) => Some(LiveChange::Enter),
        (true, true) => Some(LiveChange::Change),
        (true, false) => Some(LiveChange::Leave),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_text;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn a_document_enters_changes_within_and_leaves_a_result() {
        let open = parse_text(r#"/status = "open""#).unwrap_or(Predicate::All);
        let (a, b) = (
            json!({"status": "open", "n": 1}),
            json!({"status": "open", "n": 2}),
        );
        let closed = json!({"status": "closed"});
        assert_eq!(classify(&open, None, Some(&a)), Some(LiveChange::Enter));
        assert_eq!(
            classify(&open, Some(&a), Some(&b)),
            Some(LiveChange::Change)
        );
        assert_eq!(
            classify(&open, Some(&b), Some(&closed)),
            Some(LiveChange::Leave)
        );
        assert_eq!(classify(&open, Some(&closed), None), None);
        assert_eq!(classify(&open, Some(&b), None), Some(LiveChange::Leave));
        assert_eq!(classify(&open, None, Some(&closed)), None);
    }

    proptest! {
        /// Applying the classified changes of random writes to a result kept beside them
        /// gives, after every write, exactly the brute-force filter of every document.
        #[test]
        fn classified_changes_keep_a_result_equal_to_the_brute_force_filter(
            writes in proptest::collection::vec((0u8..6, proptest::option::of(0i64..10)), 1..60),
            threshold in 0i64..10,
        ) {
            let predicate = parse_text(&format!("/n >= {threshold}")).unwrap_or(Predicate::All);
            let mut docs: BTreeMap<u8, Value> = BTreeMap::new();
            let mut result: BTreeMap<u8, Value> = BTreeMap::new();
            for (id, n) in writes {
                let after = n.map(|n| json!({"n": n}));
                let before = match &after {
                    Some(doc) => docs.insert(id, doc.clone()),
                    None => docs.remove(&id),
                };
                match classify(&predicate, before.as_ref(), after.as_ref()) {
                    Some(LiveChange::Enter) => {
                        prop_assert!(result.insert(id, after.clone().unwrap_or_default()).is_none());
                    }
                    Some(LiveChange::Change) => {
                        prop_assert!(result.insert(id, after.clone().unwrap_or_default()).is_some());
                    }
                    Some(LiveChange::Leave) => prop_assert!(result.remove(&id).is_some()),
                    None => {}
                }
                let brute: BTreeMap<u8, Value> = docs
                    .iter()
                    .filter(|(_, d)| predicate.matches(d))
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                prop_assert_eq!(&result, &brute);
            }
        }
    }
}
