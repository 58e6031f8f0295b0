//! The collections of a `DatabaseGroup`, once its database exists: reads what the database
//! has, makes the changes [`crate::plan::collections`] decides one after the other (stopping
//! at the first the cluster refuses), records the indexes it created, and writes what the
//! group reports, with an Event per change and a Warning per conflict or refusal.

use super::Context;
use crate::crd::Reason;
use crate::crd::conditions::NewCondition;
use crate::crd::conditions::{find_condition, set_condition};
use crate::crd::{Cluster, ConditionStatus, ConditionType, DatabaseGroup, DatabaseGroupStatus};
use crate::error::Result;
use crate::plan::collections::{
    CollectionStep, building, collection_statuses, collections_condition, plan_collections,
    record_step,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

/// Brings the database's collections to the group's spec and writes them into `status`.
/// Returns whether an index is still building (so that the group is looked at again soon).
pub(super) async fn reconcile_collections(
    group: &DatabaseGroup,
    cluster: &Cluster,
    ctx: &Context,
    status: &mut DatabaseGroupStatus,
    now: &Time,
) -> Result<bool> {
    if group.spec.collections.is_empty()
        && status.managed_indexes.is_empty()
        && status.collections.is_empty()
        && find_condition(&status.conditions, ConditionType::CollectionsApplied).is_none()
    {
        return Ok(false);
    }
    let database = group.database_name()?;
    let generation = group.metadata.generation;
    let observed = match ctx.admin.collections(cluster, database).await {
        Ok(observed) => observed,
        Err(error) => {
            let reason = if error.is_unreachable() {
                Reason::ClusterUnreachable
            } else {
                Reason::CollectionRefused
            };
            let condition = NewCondition::new(
                ConditionType::CollectionsApplied,
                ConditionStatus::Unknown,
                reason,
                format!("listing the collections: {}", error.chain()),
            );
            set_condition(&mut status.conditions, condition, generation, now);
            return Ok(true);
        }
    };
    let plan = plan_collections(&group.spec.collections, &observed, &status.managed_indexes);
    let mut managed = status.managed_indexes.clone();
    managed.retain(|m| !plan.forget.contains(m));
    let mut refused = None;
    let mut done = 0;
    for step in &plan.steps {
        match ctx.admin.change_collections(cluster, database, step).await {
            Ok(()) => {
                record_step(&mut managed, step);
                done += 1;
                let reason = match step {
                    CollectionStep::CreateCollection { .. } => "CollectionCreated",
                    CollectionStep::CreateIndex { .. } => "IndexCreated",
                    CollectionStep::DropIndex { .. } => "IndexDropped",
                };
                publish(ctx, group, EventType::Normal, reason, step.to_string()).await;
            }
            Err(error) => {
                refused = Some(format!("{step}: {}", error.chain()));
                break;
            }
        }
    }
    // What the changes made, with the new indexes' progress.
    let observed = if done > 0 {
        ctx.admin
            .collections(cluster, database)
            .await
            .unwrap_or(observed)
    } else {
        observed
    };
    let statuses = collection_statuses(&group.spec.collections, &observed);
    let condition = collections_condition(
        &plan.conflicts,
        refused.as_deref(),
        plan.steps.len() - done,
        &statuses,
    );
    let before = find_condition(&status.conditions, ConditionType::CollectionsApplied)
        .map(|c| (c.reason.clone(), c.message.clone()));
    let news = before.as_ref().map(|(r, m)| (r.as_str(), m.as_str()))
        != Some((condition.reason.as_str(), condition.message.as_str()));
    if news && (refused.is_some() || !plan.conflicts.is_empty()) {
        publish(
            ctx,
            group,
            EventType::Warning,
            condition.reason.as_str(),
            condition.message.clone(),
        )
        .await;
    }
    let still_building = building(&statuses) || refused.is_some();
    status.collections = statuses;
    status.managed_indexes = managed;
    set_condition(&mut status.conditions, condition, generation, now);
    Ok(still_building)
}

async fn publish(
    ctx: &Context,
    group: &DatabaseGroup,
    type_: EventType,
    reason: &str,
    note: String,
) {
    super::publish(ctx, group, type_, reason, note, "ApplyCollections").await;
}
