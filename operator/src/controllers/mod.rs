//! The kube-runtime controllers: thin I/O shells that observe, call the pure planners
//! in [`crate::plan`] and [`crate::desired`], execute one step, and write status.
//!
//! Children and status are written by server-side apply with one field manager,
//! [`FIELD_MANAGER`]; pods and volumes are deleted, and the DatabaseGroup finalizer is
//! added and removed with JSON patches, by kube-runtime's finalizer helper.

pub mod apply;
mod backoff;
pub mod backup;
pub mod cluster;
mod collections;
pub mod database_group;
mod observe;
mod recovery;
pub mod scheduled_backup;
#[cfg(test)]
mod tests;
pub mod tls;

use crate::admin::ClusterAdmin;
use crate::crd::{Backup, Cluster, DatabaseGroup, ScheduledBackup};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "flotilla-operator";

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub admin: Arc<dyn ClusterAdmin>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// Who publishes the operator's Events.
    reporter: Reporter,
    /// The operator's own pods, which a cluster's NetworkPolicy lets reach the nodes.
    pub operator_pods: crate::desired::OperatorPods,
    backoff: backoff::Backoff,
    /// Reading Kubernetes Nodes was forbidden the last time it was tried (so that it is
    /// logged once, not on every reconcile).
    nodes_forbidden: AtomicBool,
}

impl Context {
    pub fn new(client: Client, admin: Arc<dyn ClusterAdmin>, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter.clone());
        Self {
            client,
            admin,
            metrics,
            recorder,
            reporter,
            operator_pods: crate::desired::OperatorPods::default(),
            backoff: backoff::Backoff::default(),
            nodes_forbidden: AtomicBool::new(false),
        }
    }
}

impl Context {
    /// A recorder of its own, for an Event that must stand alone: the shared [`Self::recorder`]
    /// merges Events of the same type, reason, action and objects published within minutes
    /// into one series that keeps the first note, whatever the later notes say.
    fn lone_recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    /// The same context, with the operator's pods as the NetworkPolicies name them.
    pub fn with_operator_pods(mut self, operator_pods: crate::desired::OperatorPods) -> Self {
        self.operator_pods = operator_pods;
        self
    }
}

fn backoff_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

/// Counts the failure and retries with per-object exponential backoff; the status
/// written by the reconcile says what went wrong.
fn error_policy<K: Resource<DynamicType = ()>>(
    controller: &'static str,
) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |object, error, ctx| {
        let delay = ctx.backoff.failed(&backoff_key(object.as_ref()));
        tracing::warn!(
            controller,
            object = backoff_key(object.as_ref()),
            error = error.chain(),
            retry_in = ?delay,
            "reconcile failed"
        );
        ctx.metrics.failure(controller, object.as_ref());
        Action::requeue(delay)
    }
}

/// Runs `reconcile` and forgets the object's past failures when it succeeds.
async fn with_backoff_reset<K, F>(object: Arc<K>, ctx: Arc<Context>, reconcile: F) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: AsyncFnOnce(Arc<K>, Arc<Context>) -> Result<Action>,
{
    let key = backoff_key(object.as_ref());
    let result = reconcile(object, ctx.clone()).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

/// Records an Event about `object`; a failure to record is logged, never fatal.
async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: kube::runtime::events::EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    let event = kube::runtime::events::Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, "recording an event");
    }
}

/// An API over every namespace, or over `namespace` only.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Whether a Cluster's status records its cluster id, as a predicate: a status lost (wiped by
/// hand, or by a restore of the object without it) is written again at once, not at the next
/// periodic pass, while the operator's own status writes trigger no reconcile.
fn recorded_cluster_id(cluster: &Cluster) -> Option<u64> {
    Some(u64::from(cluster.recorded_cluster_id().is_some()))
}

/// Fails with a hint when the CRDs are not installed.
pub async fn check_crds_installed(client: &Client, namespace: Option<&str>) -> Result<()> {
    let probe = ListParams::default().limit(1);
    for result in [
        scoped::<Cluster>(client, namespace)
            .list(&probe)
            .await
            .map(drop),
        scoped::<DatabaseGroup>(client, namespace)
            .list(&probe)
            .await
            .map(drop),
        scoped::<Backup>(client, namespace)
            .list(&probe)
            .await
            .map(drop),
        scoped::<ScheduledBackup>(client, namespace)
            .list(&probe)
            .await
            .map(drop),
    ] {
        if let Err(kube::Error::Api(status)) = &result
            && status.code == 404
        {
            return Err(Error::CrdsNotInstalled);
        }
        result?;
    }
    Ok(())
}

/// Runs the controllers (Clusters, DatabaseGroups, Backups, ScheduledBackups) until a termination signal
/// arrives, over every namespace or over `namespace` only.
pub async fn run(client: Client, ctx: Arc<Context>, namespace: Option<&str>) -> Result<()> {
    check_crds_installed(&client, namespace).await?;
    let clusters = scoped::<Cluster>(&client, namespace);
    // Status writes do not change the generation: they must not trigger a reconcile.
    let (reader, writer) = kube::runtime::reflector::store();
    let cluster_stream = watcher(clusters, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(recorded_cluster_id),
            Default::default(),
        );
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=flotilla-operator");
    let pods = scoped::<Pod>(&client, namespace);
    let cluster_controller = Controller::for_stream(cluster_stream, reader)
        .owns(scoped::<StatefulSet>(&client, namespace), owned.clone())
        .owns(scoped::<Service>(&client, namespace), owned.clone())
        .owns(scoped::<ConfigMap>(&client, namespace), owned.clone())
        .owns(
            scoped::<PodDisruptionBudget>(&client, namespace),
            owned.clone(),
        )
        .watches(pods, owned, |pod: Pod| {
            let cluster = pod
                .labels()
                .get(crate::crd::cluster_funcs::CLUSTER_LABEL)?
                .clone();
            let namespace = pod.meta().namespace.clone()?;
            Some(ObjectRef::<Cluster>::new(&cluster).within(&namespace))
        })
        // A volume that grew (its capacity reported) moves a volume growth on at once.
        // Claims carry the claim template's labels: the selector labels of their Cluster.
        .watches(
            scoped::<PersistentVolumeClaim>(&client, namespace),
            watcher::Config::default()
                .labels("app.kubernetes.io/name=flotilla,app.kubernetes.io/component=node"),
            |pvc: PersistentVolumeClaim| {
                let cluster = pvc.labels().get("app.kubernetes.io/instance")?.clone();
                let namespace = pvc.meta().namespace.clone()?;
                Some(ObjectRef::<Cluster>::new(&cluster).within(&namespace))
            },
        )
        .shutdown_on_signal()
        .run(
            |cluster, ctx| with_backoff_reset(cluster, ctx, cluster::reconcile),
            error_policy::<Cluster>(cluster::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "cluster controller");
            }
        });

    let groups = scoped::<DatabaseGroup>(&client, namespace);
    let (reader, writer) = kube::runtime::reflector::store();
    let group_stream = watcher(groups, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers),
            Default::default(),
        );
    // A database's topology changes with its cluster: every change of a Cluster (its status
    // included) is a reason to look at the DatabaseGroups placed on it.
    let groups_of_cluster = reader.clone();
    let group_controller = Controller::for_stream(group_stream, reader)
        .watches(
            scoped::<Cluster>(&client, namespace),
            watcher::Config::default().any_semantic(),
            move |cluster: Cluster| {
                let namespace = cluster.namespace();
                let name = cluster.name_any();
                groups_of_cluster
                    .state()
                    .iter()
                    .filter(|g| g.namespace() == namespace && g.cluster_name() == name)
                    .map(|g| ObjectRef::from_obj(g.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            |group, ctx| with_backoff_reset(group, ctx, database_group::reconcile),
            error_policy::<DatabaseGroup>(database_group::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "database group controller");
            }
        });
    let backups = scoped::<Backup>(&client, namespace);
    let (reader, writer) = kube::runtime::reflector::store();
    let backup_stream = watcher(backups, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let backup_controller = Controller::for_stream(backup_stream, reader)
        .owns(
            scoped::<Job>(&client, namespace),
            watcher::Config::default().labels("app.kubernetes.io/component=backup"),
        )
        .shutdown_on_signal()
        .run(
            |backup, ctx| with_backoff_reset(backup, ctx, backup::reconcile),
            error_policy::<Backup>(backup::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "backup controller");
            }
        });
    let schedules = scoped::<ScheduledBackup>(&client, namespace);
    let (reader, writer) = kube::runtime::reflector::store();
    let schedule_stream = watcher(schedules, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    // A schedule's Backups and deletion Jobs carry its name as a label (Backups have no owner:
    // they outlive their schedule).
    let by_schedule_label = |meta: &kube::api::ObjectMeta| {
        let schedule = meta
            .labels
            .as_ref()?
            .get(crate::crd::scheduled_backup::SCHEDULE_LABEL)?
            .clone();
        let namespace = meta.namespace.clone()?;
        Some(ObjectRef::<ScheduledBackup>::new(&schedule).within(&namespace))
    };
    let labelled = watcher::Config::default().labels(crate::crd::scheduled_backup::SCHEDULE_LABEL);
    let schedule_controller = Controller::for_stream(schedule_stream, reader)
        .watches(
            scoped::<Backup>(&client, namespace),
            labelled.clone(),
            move |backup: Backup| by_schedule_label(backup.meta()),
        )
        .watches(
            scoped::<Job>(&client, namespace),
            labelled,
            move |job: Job| by_schedule_label(job.meta()),
        )
        .shutdown_on_signal()
        .run(
            |schedule, ctx| with_backoff_reset(schedule, ctx, scheduled_backup::reconcile),
            error_policy::<ScheduledBackup>(scheduled_backup::CONTROLLER),
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "scheduled backup controller");
            }
        });
    futures::join!(
        cluster_controller,
        group_controller,
        backup_controller,
        schedule_controller
    );
    Ok(())
}
