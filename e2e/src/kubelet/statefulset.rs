//! The StatefulSet controller of the stand-in: one pod per ordinal below `replicas`, each
//! with its volume claims made from `volumeClaimTemplates` (held by the
//! `kubernetes.io/pvc-protection` finalizer while a pod uses them), pods above `replicas`
//! deleted, and the status (replicas, ready replicas, revisions) kept up to date.
//!
//! Pods are made in parallel (`podManagementPolicy: Parallel`, the only policy the operator
//! uses), labelled with the revision of the template they were made from, and scheduled on
//! a machine at creation ([`super::machines::schedule`]). With
//! `updateStrategy: OnDelete` nothing else happens to a running pod when the template
//! changes; with `RollingUpdate` pods at an older revision are deleted one at a time.
//! Pods a deleted StatefulSet orphaned are adopted by the next one of the same name.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::machines::{Machine, schedule};

/// Label of the template revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// Finalizer that keeps a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The machine every pod of the stand-in runs on when no machines are configured.
pub const NODE_NAME: &str = "flotilla-e2e-node";

fn revision(sts: &StatefulSet) -> String {
    let template = sts
        .spec
        .as_ref()
        .map(|s| serde_json::to_vec(&s.template).unwrap_or_default())
        .unwrap_or_default();
    let hash = template
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{}-{:010x}", sts.name_any(), hash & 0xff_ffff_ffff)
}

fn ordinal(sts_name: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(sts_name)?.strip_prefix('-')?.parse().ok()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Brings every StatefulSet's pods and claims in line with it; new pods go to `machines`.
pub async fn sync(client: &Client, machines: &[Machine]) -> Result<(), kube::Error> {
    let all = ListParams::default();
    let sets = Api::<StatefulSet>::all(client.clone())
        .list(&all)
        .await?
        .items;
    if sets.is_empty() {
        return Ok(());
    }
    let pods = Api::<Pod>::all(client.clone()).list(&all).await?.items;
    let claims = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&all)
        .await?
        .items;
    for sts in &sets {
        if sts.metadata.deletion_timestamp.is_none() {
            sync_one(client, sts, &pods, &claims, machines).await?;
        }
    }
    Ok(())
}

async fn sync_one(
    client: &Client,
    sts: &StatefulSet,
    pods: &[Pod],
    claims: &[PersistentVolumeClaim],
    machines: &[Machine],
) -> Result<(), kube::Error> {
    let (Some(namespace), Some(spec)) = (sts.namespace(), sts.spec.as_ref()) else {
        return Ok(());
    };
    let name = sts.name_any();
    let uid = sts.uid().unwrap_or_default();
    let revision = revision(sts);
    let replicas = spec.replicas.unwrap_or(1);
    let pod_api = Api::<Pod>::namespaced(client.clone(), &namespace);
    let claim_api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
    let in_namespace = |p: &&Pod| p.namespace().as_deref() == Some(namespace.as_str());
    let owned: Vec<&Pod> = pods
        .iter()
        .filter(in_namespace)
        .filter(|p| p.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let owner = OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: "StatefulSet".to_owned(),
        name: name.clone(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    // Pods orphaned by an earlier StatefulSet of this name (deleted with
    // `propagationPolicy: Orphan`) are adopted, as the StatefulSet controller adopts the
    // orphans its selector matches; they keep running.
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let orphans = pods.iter().filter(in_namespace).filter(|p| {
        ordinal(&name, &p.name_any()).is_some()
            && !p
                .owner_references()
                .iter()
                .any(|o| o.controller == Some(true))
            && selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))
    });
    for orphan in orphans {
        let adopt = json!({"metadata": {"ownerReferences": [owner.clone()]}});
        pod_api
            .patch(
                &orphan.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&adopt),
            )
            .await?;
    }
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");

    for ordinal in 0..replicas {
        let pod_name = format!("{name}-{ordinal}");
        let mut claims_ready = true;
        let mut volumes = Vec::new();
        for template in spec.volume_claim_templates.iter().flatten() {
            let template_name = template.name_any();
            let claim_name = format!("{template_name}-{name}-{ordinal}");
            let existing = claims.iter().find(|c| {
                c.namespace().as_deref() == Some(namespace.as_str()) && c.name_any() == claim_name
            });
            match existing {
                Some(claim) if claim.metadata.deletion_timestamp.is_some() => claims_ready = false,
                Some(_) => {}
                None => {
                    let claim = PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some(claim_name.clone()),
                            namespace: Some(namespace.clone()),
                            labels: template.metadata.labels.clone(),
                            finalizers: Some(vec![PVC_PROTECTION.to_owned()]),
                            ..ObjectMeta::default()
                        },
                        spec: template.spec.clone(),
                        ..PersistentVolumeClaim::default()
                    };
                    create_quietly(&claim_api, &claim).await?;
                }
            }
            volumes.push(Volume {
                name: template_name,
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name,
                    read_only: None,
                }),
                ..Volume::default()
            });
        }
        let existing = pods
            .iter()
            .filter(in_namespace)
            .find(|p| p.name_any() == pod_name);
        match existing {
            None if claims_ready => {
                let mut metadata = spec.template.metadata.clone().unwrap_or_default();
                let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
                labels.insert(REVISION_LABEL.to_owned(), revision.clone());
                labels.insert(
                    "statefulset.kubernetes.io/pod-name".to_owned(),
                    pod_name.clone(),
                );
                labels.insert(
                    "apps.kubernetes.io/pod-index".to_owned(),
                    ordinal.to_string(),
                );
                metadata.name = Some(pod_name.clone());
                metadata.namespace = Some(namespace.clone());
                metadata.owner_references = Some(vec![owner.clone()]);
                let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
                pod_spec.hostname = Some(pod_name.clone());
                pod_spec.subdomain = Some(spec.service_name.clone().unwrap_or_default());
                pod_spec.node_name = schedule(machines, &pod_spec, ordinal)
                    .map(|m| m.name.clone())
                    .or_else(|| Some(NODE_NAME.to_owned()));
                pod_spec
                    .volumes
                    .get_or_insert_with(Vec::new)
                    .extend(volumes);
                let pod = Pod {
                    metadata,
                    spec: Some(pod_spec),
                    status: None,
                };
                create_quietly(&pod_api, &pod).await?;
            }
            Some(pod)
                if rolling
                    && pod.metadata.deletion_timestamp.is_none()
                    && pod.labels().get(REVISION_LABEL) != Some(&revision)
                    && owned
                        .iter()
                        .all(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none()) =>
            {
                pod_api.delete(&pod_name, &DeleteParams::default()).await?;
            }
            _ => {}
        }
    }
    for pod in &owned {
        let beyond = ordinal(&name, &pod.name_any()).is_none_or(|o| o >= replicas);
        if beyond && pod.metadata.deletion_timestamp.is_none() {
            pod_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await?;
        }
    }

    let live: Vec<&&Pod> = owned
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let updated = live
        .iter()
        .filter(|p| p.labels().get(REVISION_LABEL) == Some(&revision))
        .count();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let current_revision = if updated == live.len() {
        revision.clone()
    } else {
        sts.status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_else(|| revision.clone())
    };
    let status = json!({
        "observedGeneration": sts.metadata.generation,
        "replicas": count(live.len()),
        "readyReplicas": count(live.iter().filter(|p| is_ready(p)).count()),
        "availableReplicas": count(live.iter().filter(|p| is_ready(p)).count()),
        "currentReplicas": count(updated),
        "updatedReplicas": count(updated),
        "currentRevision": current_revision,
        "updateRevision": revision,
    });
    let old = serde_json::to_value(&sts.status).unwrap_or_default();
    let changed = status
        .as_object()
        .into_iter()
        .flatten()
        .any(|(k, v)| old.get(k).unwrap_or(&serde_json::Value::Null) != v);
    if changed {
        Api::<StatefulSet>::namespaced(client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(())
}

/// Creates `object`; one that already exists (made by an earlier pass) is fine.
async fn create_quietly<K>(api: &Api<K>, object: &K) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_pod_names() {
        assert_eq!(ordinal("db", "db-3"), Some(3));
        assert_eq!(ordinal("db", "db-x"), None);
        assert_eq!(ordinal("db", "other-1"), None);
    }
}
