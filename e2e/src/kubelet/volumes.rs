//! The storage driver of the stand-in: a claim is provisioned at once (`Bound`, with the
//! capacity it requests; its directory is made when a pod mounts it), and a claim whose
//! request grew is expanded online, as a CSI driver with online expansion does through
//! the external resizer and the kubelet: `status.capacity` becomes the new request, with
//! no restart of the pod that uses it. Whether a claim may grow at all is the API server's
//! call (its StorageClass must allow expansion).

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// One pass over every claim; with `growth_held`, claims already bound are not grown.
pub async fn sync(client: &Client, growth_held: bool) -> Result<(), kube::Error> {
    let claims = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    for claim in &claims {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let request = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        let capacity = claim
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"));
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let Some(request) = request else {
            continue;
        };
        if bound && (capacity == Some(request) || growth_held) {
            continue;
        }
        let status = json!({"status": {
            "phase": "Bound",
            "accessModes": claim.spec.as_ref().and_then(|s| s.access_modes.clone()),
            "capacity": {"storage": request},
        }});
        let written = Api::<PersistentVolumeClaim>::namespaced(
            client.clone(),
            &claim.namespace().unwrap_or_default(),
        )
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await;
        match written {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
