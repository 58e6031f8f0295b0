//! Server-side apply of desired objects. An object that carries the hash of exactly what
//! would be applied, and whose live fields the operator sets still have the desired
//! values, is left alone, so that a reconcile of an unchanged cluster writes nothing; a
//! hand edit of those fields (drift) is undone and reported.

use super::FIELD_MANAGER;
use crate::desired::DesiredObject;
use crate::error::{Error, Result};
use crate::plan::drift::{Drift, drift};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Annotation holding the hash of the configuration the operator last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "flotilla.dev/applied-hash";

/// FNV-1a over the canonical JSON of `object`: stable across builds and platforms.
pub fn content_hash<T: Serialize>(object: &T) -> Result<String> {
    let bytes = serde_json::to_vec(object).map_err(|e| Error::Serialize {
        what: "desired object".to_owned(),
        message: e.to_string(),
    })?;
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    Ok(format!("{hash:016x}"))
}

fn stamp(metadata: &mut ObjectMeta, hash: &str) {
    metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash.to_owned());
}

/// What [`apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The live object is as desired: nothing was written.
    Unchanged,
    /// The object was created, or changed to a new desired state.
    Written,
    /// The desired state is unchanged but the live object was edited by hand or another
    /// writer: these fields were put back.
    Reverted(Vec<Drift>),
}

/// Applies `object` unless the live object already carries its hash and none of the
/// fields the operator sets drifted.
pub async fn apply(client: &Client, namespace: &str, object: DesiredObject) -> Result<Applied> {
    match object {
        DesiredObject::ConfigMap(o) => apply_typed(client, namespace, o).await,
        DesiredObject::Service(o) => apply_typed(client, namespace, o).await,
        DesiredObject::StatefulSet(o) => apply_typed(client, namespace, o).await,
        DesiredObject::PodDisruptionBudget(o) => apply_typed(client, namespace, o).await,
        DesiredObject::NetworkPolicy(o) => apply_typed(client, namespace, o).await,
        DesiredObject::Certificate(o) => {
            let resource = crate::desired::certificate_resource();
            let api = Api::namespaced_with(client.clone(), namespace, &resource);
            apply_with(api, resource.kind.clone(), o).await
        }
    }
}

async fn apply_typed<K>(client: &Client, namespace: &str, object: K) -> Result<Applied>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api = Api::namespaced(client.clone(), namespace);
    apply_with(api, K::kind(&()).into_owned(), object).await
}

/// [`apply`] through `api`, of an object of `kind`.
async fn apply_with<K>(api: Api<K>, kind: String, mut object: K) -> Result<Applied>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let hash = content_hash(&object)?;
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let context = |action| {
        let name = name.clone();
        let kind = kind.clone();
        move |source| Error::Child {
            action,
            kind,
            name,
            source: Box::new(source),
        }
    };
    let mut applied = Applied::Written;
    if let Some(live) = api.get_opt(&name).await.map_err(context("reading"))? {
        let same_hash = live
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
            .is_some_and(|applied| *applied == hash);
        if same_hash {
            let drifted = drift(&to_value(&object)?, &to_value(&live)?);
            if drifted.is_empty() {
                return Ok(Applied::Unchanged);
            }
            applied = Applied::Reverted(drifted);
        }
    }
    stamp(object.meta_mut(), &hash);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .map_err(context("applying"))?;
    Ok(applied)
}

fn to_value<T: Serialize>(object: &T) -> Result<serde_json::Value> {
    serde_json::to_value(object).map_err(|e| Error::Serialize {
        what: "object".to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Cluster;
    use crate::desired::{OperatorPods, Shape, built, desired_objects};

    #[test]
    fn the_hash_follows_the_content() {
        let cluster = Cluster::test();
        let three = built(desired_objects(
            &cluster,
            &Shape::running(3),
            &OperatorPods::default(),
        ));
        let again = built(desired_objects(
            &cluster,
            &Shape::running(3),
            &OperatorPods::default(),
        ));
        let five = built(desired_objects(
            &cluster,
            &Shape::running(5),
            &OperatorPods::default(),
        ));
        let hashes = |objects: &[DesiredObject]| -> Vec<String> {
            objects.iter().map(|o| built(content_hash(o))).collect()
        };
        assert_eq!(hashes(&three), hashes(&again));
        // The ConfigMap (join list) and the StatefulSet (replicas) change; the Services do not.
        let changed: Vec<bool> = hashes(&three)
            .iter()
            .zip(hashes(&five))
            .map(|(a, b)| *a != b)
            .collect();
        assert_eq!(changed, vec![true, false, false, true, false]);
    }
}
