//! What a `DatabaseGroup` reports: its live topology, whether the replication factor is
//! met, conditions, and the replica state transitions worth an Event.

use crate::admin::ShardTopology;
use crate::crd::conditions::{NewCondition, set_condition};
use crate::crd::{
    ConditionStatus, ConditionType, DatabaseGroup, DatabaseGroupStatus, DeletionPolicy, Reason,
    ShardStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration;

/// What the controller learned about the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseObservation {
    /// The database exists with this topology.
    Topology(Vec<ShardTopology>),
    /// The referenced Cluster does not exist.
    ClusterNotFound,
    /// The referenced Cluster is paused; nothing was changed.
    ClusterPaused,
    /// The cluster could not be asked; the message says why.
    Unreachable(String),
    /// The cluster refused or cannot do what the spec asks; the message says why.
    Refused(String),
    /// A database of this name exists that the operator did not create, and the group does
    /// not adopt it; nothing was changed.
    Exists(String),
    /// The Cluster restores databases from backups first; the message says which.
    WaitingForRecovery(String),
}

/// Whether the group may take a database of its name that exists already: it says
/// `adopt: true`, or the database is the group's own (its status records where it came
/// from, or already shows its topology, as the status of a group from before that record
/// does).
pub fn may_use_existing(group: &DatabaseGroup) -> bool {
    group.spec.adopt
        || group
            .status
            .as_ref()
            .is_some_and(|s| s.created_by_operator.is_some() || !s.shards.is_empty())
}

/// Records, once, whether the operator created the database or took one that existed.
pub fn record_origin(status: &mut DatabaseGroupStatus, created: bool) {
    status.created_by_operator.get_or_insert(created);
}

/// Whether deleting the group drops its database: only with `deletionPolicy: Delete` and
/// only a database the operator created (never one it adopted or found).
pub fn drops_database_on_delete(group: &DatabaseGroup) -> bool {
    group.spec.deletion_policy == DeletionPolicy::Delete
        && group
            .status
            .as_ref()
            .and_then(|s| s.created_by_operator)
            .unwrap_or(false)
}

/// The status `group` should report after `observation`, at `now`.
pub fn database_group_status(
    group: &DatabaseGroup,
    observation: &DatabaseObservation,
    now: &Time,
) -> DatabaseGroupStatus {
    let mut status = group.status.clone().unwrap_or_default();
    let generation = group.metadata.generation;
    status.observed_generation = generation;
    let rf = usize::try_from(group.spec.replication_factor).unwrap_or(0);
    let conditions = match observation {
        DatabaseObservation::Topology(shards) => {
            status.shards = shards.iter().map(shard_status).collect();
            let members: usize = shards.iter().map(|s| s.members.len()).sum();
            status.member_summary = Some(format!("{members}/{}", group.wanted_replicas()));
            let complete = shards.len() == usize::try_from(group.spec.shards).unwrap_or(0)
                && shards.iter().all(|s| s.members.len() >= rf);
            status.replication_factor_met = complete;
            topology_conditions(group, shards, complete)
        }
        DatabaseObservation::ClusterNotFound => {
            let message = format!("Cluster {} does not exist", group.cluster_name());
            same_reason(
                [
                    ConditionStatus::False,
                    ConditionStatus::False,
                    ConditionStatus::True,
                ],
                Reason::ClusterNotFound,
                &message,
            )
        }
        DatabaseObservation::ClusterPaused => {
            let message = format!("Cluster {} is paused", group.cluster_name());
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == ConditionType::Ready.as_str())
                .map(|c| (c.status.as_str() == "True", c.message.clone()));
            let (ready, ready_message) = ready.unwrap_or((false, message.clone()));
            [
                NewCondition::new(
                    ConditionType::Ready,
                    ConditionStatus::from_bool(ready),
                    Reason::Paused,
                    ready_message,
                ),
                NewCondition::new(
                    ConditionType::Progressing,
                    ConditionStatus::False,
                    Reason::Paused,
                    message.clone(),
                ),
                NewCondition::new(
                    ConditionType::Degraded,
                    ConditionStatus::False,
                    Reason::Paused,
                    message,
                ),
            ]
        }
        DatabaseObservation::Exists(name) => {
            let message = format!(
                "database {name} exists already and this group did not create it; set adopt: true to take it over"
            );
            same_reason(
                [
                    ConditionStatus::False,
                    ConditionStatus::False,
                    ConditionStatus::True,
                ],
                Reason::DatabaseExists,
                &message,
            )
        }
        DatabaseObservation::WaitingForRecovery(why) => same_reason(
            [
                ConditionStatus::False,
                ConditionStatus::True,
                ConditionStatus::False,
            ],
            Reason::WaitingForRecovery,
            why,
        ),
        DatabaseObservation::Refused(why) => same_reason(
            [
                ConditionStatus::from_bool(status.replication_factor_met),
                ConditionStatus::False,
                ConditionStatus::True,
            ],
            Reason::ReconcileError,
            why,
        ),
        DatabaseObservation::Unreachable(why) => same_reason(
            [
                ConditionStatus::Unknown,
                ConditionStatus::Unknown,
                ConditionStatus::True,
            ],
            Reason::ClusterUnreachable,
            why,
        ),
    };
    for condition in conditions {
        set_condition(&mut status.conditions, condition, generation, now);
    }
    status
}

/// Ready, Progressing and Degraded with these statuses, one reason and one message.
fn same_reason(
    [ready, progressing, degraded]: [ConditionStatus; 3],
    reason: Reason,
    message: &str,
) -> [NewCondition; 3] {
    [
        (ConditionType::Ready, ready),
        (ConditionType::Progressing, progressing),
        (ConditionType::Degraded, degraded),
    ]
    .map(|(type_, status)| NewCondition::new(type_, status, reason, message))
}

fn topology_conditions(
    group: &DatabaseGroup,
    shards: &[ShardTopology],
    complete: bool,
) -> [NewCondition; 3] {
    let rf = group.spec.replication_factor;
    if usize::try_from(group.spec.shards).ok() != Some(shards.len()) {
        // Never resharded to match: the database keeps its shards (a restored one, its
        // backup's), and the group says so.
        let message = format!(
            "the database has {} shards and the group asks for {}: a database's shard count \
             never changes; set spec.shards to {} (a new DatabaseGroup, as shards is immutable)",
            shards.len(),
            group.spec.shards,
            shards.len()
        );
        return same_reason(
            [
                ConditionStatus::False,
                ConditionStatus::False,
                ConditionStatus::True,
            ],
            Reason::ShardCountMismatch,
            &message,
        );
    }
    let catching_up: usize = shards.iter().map(|s| s.promotables.len()).sum();
    let rehab: Vec<&str> = shards
        .iter()
        .flat_map(|s| s.rehab.iter().map(String::as_str))
        .collect();
    let ready = if complete {
        NewCondition::new(
            ConditionType::Ready,
            ConditionStatus::True,
            Reason::AllMembersReady,
            format!("every shard has {rf} members"),
        )
    } else {
        NewCondition::new(
            ConditionType::Ready,
            ConditionStatus::False,
            Reason::ReplicationFactorNotMet,
            format!("some shards have fewer than {rf} members"),
        )
    };
    let progressing = if catching_up > 0 {
        NewCondition::new(
            ConditionType::Progressing,
            ConditionStatus::True,
            Reason::Creating,
            format!("{catching_up} replicas catching up"),
        )
    } else {
        NewCondition::new(
            ConditionType::Progressing,
            ConditionStatus::False,
            Reason::Idle,
            "no replica is catching up",
        )
    };
    let degraded = if rehab.is_empty() {
        NewCondition::new(
            ConditionType::Degraded,
            ConditionStatus::False,
            Reason::Healthy,
            "nothing is wrong",
        )
    } else {
        NewCondition::new(
            ConditionType::Degraded,
            ConditionStatus::True,
            Reason::ReplicationFactorNotMet,
            format!("replicas in rehab on {}", rehab.join(", ")),
        )
    };
    [ready, progressing, degraded]
}

fn shard_status(shard: &ShardTopology) -> ShardStatus {
    ShardStatus {
        shard: i32::try_from(shard.shard).unwrap_or(i32::MAX),
        leader: shard.leader.clone(),
        members: shard.members.clone(),
        promotables: shard.promotables.clone(),
        rehab: shard.rehab.clone(),
    }
}

/// How soon to look at a database again after writing `status`: often while its topology or
/// its cluster is changing (so that every replica transition is seen and reported), rarely
/// once both are settled.
pub fn recheck_after(status: &DatabaseGroupStatus, cluster_ready: bool) -> Duration {
    let settled = status.replication_factor_met
        && status
            .shards
            .iter()
            .all(|s| s.leader.is_some() && s.promotables.is_empty() && s.rehab.is_empty());
    if settled && cluster_ready {
        SETTLED_RECHECK
    } else {
        CHANGING_RECHECK
    }
}

/// Recheck interval of a database whose topology and cluster are settled.
pub const SETTLED_RECHECK: Duration = Duration::from_secs(30);
/// Recheck interval while a database's topology or cluster is changing.
pub const CHANGING_RECHECK: Duration = Duration::from_secs(5);

/// A replica that changed state between two statuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaTransition {
    pub shard: i32,
    pub pod: String,
    /// `Member`, `Promotable`, `Rehab`, or `Removed`.
    pub to: &'static str,
}

/// Replicas whose state differs between `old` and `new`, in shard and pod order.
pub fn replica_transitions(old: &[ShardStatus], new: &[ShardStatus]) -> Vec<ReplicaTransition> {
    let state_of = |shards: &[ShardStatus], shard: i32, pod: &str| -> Option<&'static str> {
        let s = shards.iter().find(|s| s.shard == shard)?;
        if s.members.iter().any(|p| p == pod) {
            Some("Member")
        } else if s.promotables.iter().any(|p| p == pod) {
            Some("Promotable")
        } else if s.rehab.iter().any(|p| p == pod) {
            Some("Rehab")
        } else {
            None
        }
    };
    let mut keys: Vec<(i32, &str)> = old
        .iter()
        .chain(new)
        .flat_map(|s| {
            s.members
                .iter()
                .chain(&s.promotables)
                .chain(&s.rehab)
                .map(move |p| (s.shard, p.as_str()))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|(shard, pod)| {
            let before = state_of(old, shard, pod);
            let after = state_of(new, shard, pod);
            (before != after).then(|| ReplicaTransition {
                shard,
                pod: pod.to_owned(),
                to: after.unwrap_or("Removed"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::conditions::find_condition;
    use k8s_openapi::jiff::Timestamp;

    fn now() -> Time {
        Time(Timestamp::UNIX_EPOCH)
    }

    fn shard(n: u32, members: &[&str], promotables: &[&str], rehab: &[&str]) -> ShardTopology {
        let owned = |pods: &[&str]| pods.iter().map(|p| (*p).to_owned()).collect();
        ShardTopology {
            shard: n,
            leader: members.first().map(|p| (*p).to_owned()),
            members: owned(members),
            promotables: owned(promotables),
            rehab: owned(rehab),
        }
    }

    fn reason(status: &DatabaseGroupStatus, type_: ConditionType) -> String {
        find_condition(&status.conditions, type_)
            .map(|c| format!("{} {}", c.status, c.reason))
            .unwrap_or_default()
    }

    fn group() -> DatabaseGroup {
        let mut group = DatabaseGroup::test();
        group.spec.shards = 2;
        group
    }

    #[test]
    fn full_shards_meet_the_replication_factor() {
        let all = ["db-0", "db-1", "db-2"];
        let observation =
            DatabaseObservation::Topology(vec![shard(0, &all, &[], &[]), shard(1, &all, &[], &[])]);
        let status = database_group_status(&group(), &observation, &now());
        assert!(status.replication_factor_met);
        assert_eq!(status.member_summary.as_deref(), Some("6/6"));
        assert_eq!(status.shards.len(), 2);
        assert_eq!(status.shards[1].leader.as_deref(), Some("db-0"));
        assert_eq!(
            reason(&status, ConditionType::Ready),
            "True AllMembersReady"
        );
        assert_eq!(reason(&status, ConditionType::Degraded), "False Healthy");
    }

    #[test]
    fn a_replica_in_rehab_degrades_the_group() {
        let observation = DatabaseObservation::Topology(vec![
            shard(0, &["db-0", "db-1"], &[], &["db-2"]),
            shard(1, &["db-0", "db-1", "db-2"], &[], &[]),
        ]);
        let status = database_group_status(&group(), &observation, &now());
        assert!(!status.replication_factor_met);
        assert_eq!(
            reason(&status, ConditionType::Ready),
            "False ReplicationFactorNotMet"
        );
        assert_eq!(
            reason(&status, ConditionType::Degraded),
            "True ReplicationFactorNotMet"
        );
    }

    #[test]
    fn promotables_show_as_progressing() {
        let observation = DatabaseObservation::Topology(vec![
            shard(0, &["db-0", "db-1"], &["db-3"], &[]),
            shard(1, &["db-0", "db-1", "db-2"], &[], &[]),
        ]);
        let status = database_group_status(&group(), &observation, &now());
        assert_eq!(reason(&status, ConditionType::Progressing), "True Creating");
    }

    #[test]
    fn a_refused_request_is_reported_without_losing_the_last_topology() {
        let mut group = group();
        group.status = Some(database_group_status(
            &group,
            &DatabaseObservation::Topology(vec![shard(0, &["db-0"], &[], &[])]),
            &now(),
        ));
        let why = "the cluster cannot change the replication factor yet".to_owned();
        let status = database_group_status(&group, &DatabaseObservation::Refused(why), &now());
        assert_eq!(
            reason(&status, ConditionType::Degraded),
            "True ReconcileError"
        );
        assert_eq!(status.shards.len(), 1);
    }

    #[test]
    fn a_missing_cluster_is_reported() {
        let status = database_group_status(&group(), &DatabaseObservation::ClusterNotFound, &now());
        assert_eq!(
            reason(&status, ConditionType::Ready),
            "False ClusterNotFound"
        );
        assert_eq!(
            reason(&status, ConditionType::Degraded),
            "True ClusterNotFound"
        );
    }

    #[test]
    fn transitions_name_each_replica_that_changed_state() {
        let before = vec![shard_status(&shard(0, &["db-0", "db-1", "db-2"], &[], &[]))];
        let after = vec![shard_status(&shard(
            0,
            &["db-0", "db-1"],
            &["db-3"],
            &["db-2"],
        ))];
        let transitions = replica_transitions(&before, &after);
        let seen: Vec<_> = transitions.iter().map(|t| (t.pod.as_str(), t.to)).collect();
        assert_eq!(seen, vec![("db-2", "Rehab"), ("db-3", "Promotable")]);
        let back = vec![shard_status(&shard(0, &["db-0", "db-1", "db-2"], &[], &[]))];
        let transitions = replica_transitions(&after, &back);
        let seen: Vec<_> = transitions.iter().map(|t| (t.pod.as_str(), t.to)).collect();
        assert_eq!(seen, vec![("db-2", "Member"), ("db-3", "Removed")]);
    }

    #[test]
    fn a_changing_database_or_cluster_is_looked_at_again_soon() {
        let group = group();
        let settled = database_group_status(
            &group,
            &DatabaseObservation::Topology(vec![
                shard(0, &["a", "b", "c"], &[], &[]),
                shard(1, &["a", "b", "c"], &[], &[]),
            ]),
            &now(),
        );
        assert_eq!(recheck_after(&settled, true), SETTLED_RECHECK);
        assert_eq!(recheck_after(&settled, false), CHANGING_RECHECK);
        let rehab = database_group_status(
            &group,
            &DatabaseObservation::Topology(vec![
                shard(0, &["a", "b", "c"], &[], &[]),
                shard(1, &["a", "b"], &[], &["c"]),
            ]),
            &now(),
        );
        assert_eq!(recheck_after(&rehab, true), CHANGING_RECHECK);
    }

    #[test]
    fn a_group_waiting_for_its_clusters_recovery_says_so_and_touches_nothing() {
        let why = "Cluster flotilla restores database orders from a backup first".to_owned();
        let status = database_group_status(
            &group(),
            &DatabaseObservation::WaitingForRecovery(why),
            &now(),
        );
        assert_eq!(
            reason(&status, ConditionType::Ready),
            "False WaitingForRecovery"
        );
        assert_eq!(
            reason(&status, ConditionType::Progressing),
            "True WaitingForRecovery"
        );
        assert!(status.shards.is_empty());
        assert_eq!(status.created_by_operator, None);
    }

    #[test]
    fn a_database_with_another_shard_count_than_the_group_asks_is_reported_not_resharded() {
        let all = ["db-0", "db-1", "db-2"];
        // The group asks for 2 shards; the (restored) database has 3.
        let observation = DatabaseObservation::Topology(vec![
            shard(0, &all, &[], &[]),
            shard(1, &all, &[], &[]),
            shard(2, &all, &[], &[]),
        ]);
        let status = database_group_status(&group(), &observation, &now());
        assert_eq!(
            reason(&status, ConditionType::Ready),
            "False ShardCountMismatch"
        );
        assert_eq!(
            reason(&status, ConditionType::Degraded),
            "True ShardCountMismatch"
        );
        let message = find_condition(&status.conditions, ConditionType::Ready)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(message.contains("3 shards"), "{message}");
        assert_eq!(status.shards.len(), 3);
    }

    #[test]
    fn an_unchanged_topology_has_no_transitions() {
        let same = vec![shard_status(&shard(0, &["db-0"], &["db-1"], &[]))];
        assert_eq!(replica_transitions(&same, &same), Vec::new());
    }
}
