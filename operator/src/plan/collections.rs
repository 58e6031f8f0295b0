//! The collections and indexes of a `DatabaseGroup`: from `spec.collections`, what the
//! database has and the indexes the operator created before, the changes to make (create
//! what is missing, drop what the operator created and the spec no longer declares), the
//! conflicts it refuses, and what the group reports.
//!
//! A collection whose shard key differs from the one the database has is a conflict: none
//! of its indexes is created or dropped, and the group says why. An index is named from its
//! paths (as `flotilla index create` names it); one of that name on other paths is a
//! conflict too. Only indexes recorded as created by the operator are ever dropped.

use crate::crd::conditions::NewCondition;
use crate::crd::{
    CollectionSpec, CollectionStatus, ConditionStatus, ConditionType, IndexState, IndexStatus,
    ManagedIndex, Reason,
};
use std::collections::BTreeSet;

/// A collection as the database has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedCollection {
    pub name: String,
    pub shard_key: Option<String>,
    pub indexes: Vec<ObservedIndex>,
}

/// An index as the database has it, with its progress on each shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedIndex {
    pub name: String,
    pub paths: Vec<String>,
    /// (shard, ready, documents indexed)
    pub shards: Vec<(u32, bool, u64)>,
}

/// One change to the database's collections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CollectionStep {
    CreateCollection {
        collection: String,
        shard_key: Option<String>,
    },
    CreateIndex {
        collection: String,
        name: String,
        paths: Vec<String>,
    },
    DropIndex {
        collection: String,
        name: String,
    },
}

impl std::fmt::Display for CollectionStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CreateCollection {
                collection,
                shard_key,
            } => write!(
                f,
                "create collection {collection} (shard key {})",
                shard_key.as_deref().unwrap_or("the document id")
            ),
            Self::CreateIndex {
                collection,
                name,
                paths,
            } => write!(
                f,
                "create index {name} of {collection} on {}",
                paths.join(",")
            ),
            Self::DropIndex { collection, name } => {
                write!(f, "drop index {name} of {collection}")
            }
        }
    }
}

/// Something of the spec the operator refuses to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// The spec's shard key differs from the database's (`None`: placed by id).
    ShardKey {
        collection: String,
        wanted: Option<String>,
        current: Option<String>,
    },
    /// An index of the name the spec's paths give exists on other paths.
    Index {
        collection: String,
        name: String,
        wanted: Vec<String>,
        current: Vec<String>,
    },
}

fn key_text(key: &Option<String>) -> &str {
    key.as_deref().unwrap_or("the document id")
}

impl Conflict {
    pub fn reason(&self) -> Reason {
        match self {
            Self::ShardKey { .. } => Reason::ShardKeyConflict,
            Self::Index { .. } => Reason::IndexConflict,
        }
    }
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ShardKey {
                collection,
                wanted,
                current,
            } => write!(
                f,
                "collection {collection} is placed by {} in the database, the spec asks for {}: a shard key cannot change, nothing of {collection} was changed",
                key_text(current),
                key_text(wanted)
            ),
            Self::Index {
                collection,
                name,
                wanted,
                current,
            } => write!(
                f,
                "index {name} of {collection} exists on {}, the spec asks for {}: it was left as it is",
                current.join(","),
                wanted.join(",")
            ),
        }
    }
}

/// What to do with the database's collections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectionPlan {
    /// Changes, in order: collections before their indexes, drops last.
    pub steps: Vec<CollectionStep>,
    pub conflicts: Vec<Conflict>,
    /// Managed indexes the database no longer has (dropped by hand): forgotten.
    pub forget: Vec<ManagedIndex>,
}

/// The index name of `paths`.
pub fn index_name(paths: &[String]) -> String {
    flotilla_client::index_name(paths)
}

/// The changes that bring `observed` to `spec`, given the indexes the operator created.
pub fn plan_collections(
    spec: &[CollectionSpec],
    observed: &[ObservedCollection],
    managed: &[ManagedIndex],
) -> CollectionPlan {
    let mut plan = CollectionPlan::default();
    let mut wanted: BTreeSet<ManagedIndex> = BTreeSet::new();
    let mut conflicted: BTreeSet<&str> = BTreeSet::new();
    for collection in spec {
        let found = observed.iter().find(|c| c.name == collection.name);
        for index in &collection.indexes {
            wanted.insert(ManagedIndex {
                collection: collection.name.clone(),
                name: index_name(&index.paths),
            });
        }
        match found {
            Some(found) if found.shard_key != collection.shard_key => {
                conflicted.insert(&collection.name);
                plan.conflicts.push(Conflict::ShardKey {
                    collection: collection.name.clone(),
                    wanted: collection.shard_key.clone(),
                    current: found.shard_key.clone(),
                });
                continue;
            }
            Some(_) => {}
            None => plan.steps.push(CollectionStep::CreateCollection {
                collection: collection.name.clone(),
                shard_key: collection.shard_key.clone(),
            }),
        }
        let existing = found.map(|c| c.indexes.as_slice()).unwrap_or_default();
        for index in &collection.indexes {
            let name = index_name(&index.paths);
            match existing.iter().find(|i| i.name == name) {
                Some(present) if present.paths != index.paths => {
                    plan.conflicts.push(Conflict::Index {
                        collection: collection.name.clone(),
                        name,
                        wanted: index.paths.clone(),
                        current: present.paths.clone(),
                    });
                }
                Some(_) => {}
                None => plan.steps.push(CollectionStep::CreateIndex {
                    collection: collection.name.clone(),
                    name,
                    paths: index.paths.clone(),
                }),
            }
        }
    }
    for index in managed {
        if wanted.contains(index) || conflicted.contains(index.collection.as_str()) {
            continue;
        }
        let present = observed
            .iter()
            .find(|c| c.name == index.collection)
            .is_some_and(|c| c.indexes.iter().any(|i| i.name == index.name));
        if present {
            plan.steps.push(CollectionStep::DropIndex {
                collection: index.collection.clone(),
                name: index.name.clone(),
            });
        } else {
            plan.forget.push(index.clone());
        }
    }
    plan
}

/// The managed indexes after `step` succeeded: an index the operator created is recorded,
/// one it dropped is forgotten.
pub fn record_step(managed: &mut Vec<ManagedIndex>, step: &CollectionStep) {
    match step {
        CollectionStep::CreateCollection { .. } => {}
        CollectionStep::CreateIndex {
            collection, name, ..
        } => {
            let index = ManagedIndex {
                collection: collection.clone(),
                name: name.clone(),
            };
            if !managed.contains(&index) {
                managed.push(index);
                managed.sort();
            }
        }
        CollectionStep::DropIndex { collection, name } => {
            managed.retain(|m| !(m.collection == *collection && m.name == *name));
        }
    }
}

/// What the group reports of the collections of its spec, as the database has them.
pub fn collection_statuses(
    spec: &[CollectionSpec],
    observed: &[ObservedCollection],
) -> Vec<CollectionStatus> {
    spec.iter()
        .map(|collection| {
            let found = observed.iter().find(|c| c.name == collection.name);
            let indexes = collection
                .indexes
                .iter()
                .filter_map(|index| {
                    let name = index_name(&index.paths);
                    let present = found?.indexes.iter().find(|i| i.name == name)?;
                    Some(index_status(present))
                })
                .collect();
            CollectionStatus {
                name: collection.name.clone(),
                exists: found.is_some(),
                shard_key: found.and_then(|c| c.shard_key.clone()),
                indexes,
            }
        })
        .collect()
}

fn index_status(index: &ObservedIndex) -> IndexStatus {
    let ready = index.shards.iter().filter(|(_, ready, _)| *ready).count();
    IndexStatus {
        name: index.name.clone(),
        paths: index.paths.clone(),
        state: if ready == index.shards.len() {
            IndexState::Ready
        } else {
            IndexState::Building
        },
        documents: index.shards.iter().map(|(_, _, docs)| docs).sum(),
        shards_ready: Some(format!("{ready}/{}", index.shards.len())),
    }
}

/// Whether any index of `statuses` is still building.
pub fn building(statuses: &[CollectionStatus]) -> bool {
    statuses
        .iter()
        .flat_map(|c| &c.indexes)
        .any(|i| i.state == IndexState::Building)
}

/// The `CollectionsApplied` condition: False with the first conflict or the refusal when
/// something cannot be applied, False while indexes build or changes remain, True once the
/// database has everything the spec declares.
pub fn collections_condition(
    conflicts: &[Conflict],
    refused: Option<&str>,
    remaining: usize,
    statuses: &[CollectionStatus],
) -> NewCondition {
    let condition = |status, reason, message: String| {
        NewCondition::new(ConditionType::CollectionsApplied, status, reason, message)
    };
    if let Some(why) = refused {
        return condition(
            ConditionStatus::False,
            Reason::CollectionRefused,
            why.to_owned(),
        );
    }
    if let Some(first) = conflicts.first() {
        let more = match conflicts.len() {
            1 => String::new(),
            n => format!(" (and {} more conflicts)", n - 1),
        };
        return condition(
            ConditionStatus::False,
            first.reason(),
            format!("{first}{more}"),
        );
    }
    if remaining > 0 || building(statuses) {
        let building: Vec<&str> = statuses
            .iter()
            .flat_map(|c| &c.indexes)
            .filter(|i| i.state == IndexState::Building)
            .map(|i| i.name.as_str())
            .collect();
        return condition(
            ConditionStatus::False,
            Reason::CollectionsPending,
            format!(
                "{remaining} changes to make; indexes building: {}",
                if building.is_empty() {
                    "none".to_owned()
                } else {
                    building.join(", ")
                }
            ),
        );
    }
    condition(
        ConditionStatus::True,
        Reason::CollectionsApplied,
        format!(
            "{} collections with their indexes as declared",
            statuses.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::IndexSpec;

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| (*s).to_owned()).collect()
    }

    fn spec(name: &str, key: Option<&str>, indexes: &[&[&str]]) -> CollectionSpec {
        CollectionSpec {
            name: name.to_owned(),
            shard_key: key.map(str::to_owned),
            indexes: indexes
                .iter()
                .map(|p| IndexSpec { paths: paths(p) })
                .collect(),
        }
    }

    fn observed(
        name: &str,
        key: Option<&str>,
        indexes: &[(&str, &[&str], bool)],
    ) -> ObservedCollection {
        ObservedCollection {
            name: name.to_owned(),
            shard_key: key.map(str::to_owned),
            indexes: indexes
                .iter()
                .map(|(n, p, ready)| ObservedIndex {
                    name: (*n).to_owned(),
                    paths: paths(p),
                    shards: vec![(0, true, 10), (1, *ready, 4)],
                })
                .collect(),
        }
    }

    fn managed(collection: &str, name: &str) -> ManagedIndex {
        ManagedIndex {
            collection: collection.to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn a_missing_collection_is_created_before_its_indexes() {
        let plan = plan_collections(
            &[spec(
                "orders",
                Some("/customerId"),
                &[&["/status"], &["/customerId", "/createdAt"]],
            )],
            &[],
            &[],
        );
        let shown: Vec<String> = plan.steps.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "create collection orders (shard key /customerId)",
                "create index status of orders on /status",
                "create index customerId_createdAt of orders on /customerId,/createdAt",
            ]
        );
        assert!(plan.conflicts.is_empty());
    }

    #[test]
    fn what_the_database_has_already_is_left_alone() {
        let plan = plan_collections(
            &[spec("orders", None, &[&["/status"]])],
            &[observed("orders", None, &[("status", &["/status"], true)])],
            &[],
        );
        assert_eq!(plan, CollectionPlan::default());
    }

    #[test]
    fn a_different_shard_key_is_refused_and_nothing_of_the_collection_changes() {
        let plan = plan_collections(
            &[spec("orders", Some("/region"), &[&["/status"]])],
            &[observed(
                "orders",
                Some("/customerId"),
                &[("total", &["/total"], true)],
            )],
            &[managed("orders", "total")],
        );
        assert!(plan.steps.is_empty(), "{:?}", plan.steps);
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].reason(), Reason::ShardKeyConflict);
        assert!(
            plan.conflicts[0].to_string().contains("/customerId"),
            "{}",
            plan.conflicts[0]
        );
    }

    #[test]
    fn a_shard_key_on_a_collection_placed_by_id_is_a_conflict() {
        let plan = plan_collections(
            &[spec("orders", Some("/region"), &[])],
            &[observed("orders", None, &[])],
            &[],
        );
        assert_eq!(plan.conflicts.len(), 1);
    }

    #[test]
    fn an_index_of_the_same_name_on_other_paths_is_a_conflict() {
        let plan = plan_collections(
            &[spec("orders", None, &[&["/status"]])],
            &[observed("orders", None, &[("status", &["/state"], true)])],
            &[],
        );
        assert!(plan.steps.is_empty());
        assert_eq!(plan.conflicts[0].reason(), Reason::IndexConflict);
    }

    #[test]
    fn only_managed_indexes_removed_from_the_spec_are_dropped() {
        let plan = plan_collections(
            &[spec("orders", None, &[&["/status"]])],
            &[observed(
                "orders",
                None,
                &[
                    ("status", &["/status"], true),
                    ("total", &["/total"], true),
                    ("by_hand", &["/note"], true),
                ],
            )],
            &[managed("orders", "status"), managed("orders", "total")],
        );
        assert_eq!(
            plan.steps,
            [CollectionStep::DropIndex {
                collection: "orders".to_owned(),
                name: "total".to_owned()
            }]
        );
    }

    #[test]
    fn managed_indexes_of_a_collection_gone_from_the_spec_are_dropped_too() {
        let plan = plan_collections(
            &[],
            &[observed("orders", None, &[("status", &["/status"], true)])],
            &[managed("orders", "status"), managed("orders", "gone")],
        );
        assert_eq!(plan.steps.len(), 1);
        assert_eq!(plan.forget, [managed("orders", "gone")]);
    }

    #[test]
    fn created_indexes_are_recorded_and_dropped_ones_forgotten() {
        let mut recorded = vec![managed("orders", "total")];
        record_step(
            &mut recorded,
            &CollectionStep::CreateIndex {
                collection: "orders".to_owned(),
                name: "status".to_owned(),
                paths: paths(&["/status"]),
            },
        );
        assert_eq!(
            recorded,
            [managed("orders", "status"), managed("orders", "total")]
        );
        record_step(
            &mut recorded,
            &CollectionStep::DropIndex {
                collection: "orders".to_owned(),
                name: "total".to_owned(),
            },
        );
        assert_eq!(recorded, [managed("orders", "status")]);
    }

    #[test]
    fn the_status_shows_each_index_building_or_ready_with_its_documents() {
        let statuses = collection_statuses(
            &[
                spec("orders", None, &[&["/status"], &["/total"]]),
                spec("later", None, &[]),
            ],
            &[observed(
                "orders",
                None,
                &[
                    ("status", &["/status"], false),
                    ("total", &["/total"], true),
                ],
            )],
        );
        assert_eq!(statuses.len(), 2);
        assert!(!statuses[1].exists);
        let status = &statuses[0].indexes[0];
        assert_eq!(status.state, IndexState::Building);
        assert_eq!(status.documents, 14);
        assert_eq!(status.shards_ready.as_deref(), Some("1/2"));
        assert_eq!(statuses[0].indexes[1].state, IndexState::Ready);
        let condition = collections_condition(&[], None, 0, &statuses);
        assert_eq!(
            (condition.status, condition.reason),
            (ConditionStatus::False, Reason::CollectionsPending)
        );
        let ready = collection_statuses(
            &[spec("orders", None, &[&["/total"]])],
            &[observed("orders", None, &[("total", &["/total"], true)])],
        );
        let condition = collections_condition(&[], None, 0, &ready);
        assert_eq!(condition.status, ConditionStatus::True);
    }

    #[test]
    fn a_conflict_makes_the_condition_false_with_its_reason() {
        let conflict = Conflict::ShardKey {
            collection: "orders".to_owned(),
            wanted: Some("/a".to_owned()),
            current: None,
        };
        let condition = collections_condition(&[conflict], None, 0, &[]);
        assert_eq!(
            (condition.status, condition.reason),
            (ConditionStatus::False, Reason::ShardKeyConflict)
        );
        assert!(condition.message.contains("the document id"));
    }
}
