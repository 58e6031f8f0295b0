//! The machines of the stand-in: one Node object each (with its labels, such as
//! `topology.kubernetes.io/zone`), and where the StatefulSet controller puts each pod.
//!
//! Scheduling is deterministic so that a test knows where every pod runs: pod `i` of a
//! StatefulSet goes to machine `i mod n` of the `n` machines whose labels match the pod's
//! `nodeSelector` (of every machine when none does: the stand-in has no Pending pods).
//! Affinity, taints and resources are not looked at. A lost machine gets no new pods.
//!
//! Registering the machines also registers the one StorageClass of the stand-in,
//! [`STORAGE_CLASS`], the default, which allows volume expansion.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, PodSpec};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// The default StorageClass of the stand-in's volumes ([`super::volumes`] plays its driver).
pub const STORAGE_CLASS: &str = "standard";

/// A machine pods run on: a Kubernetes Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Machine {
    /// A machine named `name` with `labels` (and `kubernetes.io/hostname`, as a kubelet
    /// registers it).
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Self {
        let mut all: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.insert("kubernetes.io/hostname".to_owned(), name.to_owned());
        Self {
            name: name.to_owned(),
            labels: all,
        }
    }

    fn node(&self) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".to_owned(),
                    status: "True".to_owned(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        }
    }
}

/// Creates the Node object of every machine and the StorageClass (one that exists already
/// is left alone).
pub async fn register(client: &Client, machines: &[Machine]) -> Result<(), kube::Error> {
    let api = Api::<Node>::all(client.clone());
    for machine in machines {
        match api.create(&PostParams::default(), &machine.node()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error),
        }
    }
    let class = StorageClass {
        metadata: ObjectMeta {
            name: Some(STORAGE_CLASS.to_owned()),
            annotations: Some(BTreeMap::from([(
                "storageclass.kubernetes.io/is-default-class".to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        provisioner: "flotilla.dev/e2e-volumes".to_owned(),
        allow_volume_expansion: Some(true),
        volume_binding_mode: Some("Immediate".to_owned()),
        ..StorageClass::default()
    };
    match Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Marks the Nodes of lost machines NotReady (`Ready: Unknown`, as the node controller
/// does once a kubelet stops reporting).
pub async fn mark_lost(client: &Client, lost: &[&Machine]) -> Result<(), kube::Error> {
    let api = Api::<Node>::all(client.clone());
    for machine in lost {
        let node = api.get(&machine.name).await?;
        let ready = node
            .status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status);
        if ready.as_deref() == Some("Unknown") {
            continue;
        }
        let status = json!({"status": {"conditions": [{
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.",
        }]}});
        api.patch_status(
            &machine.name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    }
    Ok(())
}

/// The machine pod `ordinal` with `spec` runs on.
pub fn schedule<'a>(machines: &'a [Machine], spec: &PodSpec, ordinal: i32) -> Option<&'a Machine> {
    let selector = spec.node_selector.clone().unwrap_or_default();
    let matching: Vec<&Machine> = machines
        .iter()
        .filter(|m| selector.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
        .collect();
    let candidates: Vec<&Machine> = if matching.is_empty() {
        machines.iter().collect()
    } else {
        matching
    };
    let index = usize::try_from(ordinal).ok()? % candidates.len().max(1);
    candidates.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "topology.kubernetes.io/zone";

    fn machines() -> Vec<Machine> {
        vec![
            Machine::new("m0", &[(ZONE, "a")]),
            Machine::new("m1", &[(ZONE, "b")]),
            Machine::new("m2", &[(ZONE, "a")]),
        ]
    }

    fn name(machine: Option<&Machine>) -> &str {
        machine.map_or("-", |m| m.name.as_str())
    }

    #[test]
    fn pods_go_round_the_machines_by_ordinal() {
        let machines = machines();
        let spec = PodSpec::default();
        let placed: Vec<&str> = (0..5)
            .map(|i| name(schedule(&machines, &spec, i)))
            .collect();
        assert_eq!(placed, ["m0", "m1", "m2", "m0", "m1"]);
        assert_eq!(name(schedule(&[], &spec, 0)), "-");
    }

    #[test]
    fn a_node_selector_narrows_the_machines() {
        let machines = machines();
        let spec = PodSpec {
            node_selector: Some(BTreeMap::from([(ZONE.to_owned(), "a".to_owned())])),
            ..PodSpec::default()
        };
        let placed: Vec<&str> = (0..3)
            .map(|i| name(schedule(&machines, &spec, i)))
            .collect();
        assert_eq!(placed, ["m0", "m2", "m0"]);
        assert_eq!(
            machines[1]
                .labels
                .get("kubernetes.io/hostname")
                .map(String::as_str),
            Some("m1")
        );
    }
}
