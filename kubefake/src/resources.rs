//! The resource types the fake API server serves: the built-in kinds the operator and the
//! kubelet stand-in use, and every kind a `CustomResourceDefinition` registers once it is
//! created (as a real API server does, so that a missing CRD is a 404).

use serde_json::Value;

/// One resource type, as it appears in API paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group (`/api/v1`).
    pub group: String,
    pub version: String,
    /// Lower-case plural name used in paths (`statefulsets`).
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether `status` is written only through the `/status` subresource.
    pub status_subresource: bool,
}

impl ResourceType {
    fn builtin(
        group: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        status_subresource: bool,
    ) -> Self {
        Self {
            group: group.to_owned(),
            version: "v1".to_owned(),
            plural: plural.to_owned(),
            kind: kind.to_owned(),
            namespaced,
            status_subresource,
        }
    }

    /// `apiVersion` of the objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Key of the type in the store: `group/plural` (versions share their objects).
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// Whether this is the CustomResourceDefinition type.
    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.plural == "customresourcedefinitions"
    }

    /// Whether this is the Pod type (pods are deleted gracefully).
    pub fn is_pod(&self) -> bool {
        self.group.is_empty() && self.plural == "pods"
    }
}

/// Every type served, looked up by group, version and plural.
#[derive(Clone, Debug)]
pub struct Registry {
    types: Vec<ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        let t = ResourceType::builtin;
        Self {
            types: vec![
                t("", "pods", "Pod", true, true),
                t("", "services", "Service", true, true),
                t("", "configmaps", "ConfigMap", true, false),
                t("", "secrets", "Secret", true, false),
                t(
                    "",
                    "persistentvolumeclaims",
                    "PersistentVolumeClaim",
                    true,
                    true,
                ),
                t("", "events", "Event", true, false),
                t("", "namespaces", "Namespace", false, true),
                t("", "nodes", "Node", false, true),
                t("apps", "statefulsets", "StatefulSet", true, true),
                t("batch", "jobs", "Job", true, true),
                t(
                    "policy",
                    "poddisruptionbudgets",
                    "PodDisruptionBudget",
                    true,
                    true,
                ),
                t(
                    "networking.k8s.io",
                    "networkpolicies",
                    "NetworkPolicy",
                    true,
                    false,
                ),
                t("events.k8s.io", "events", "Event", true, false),
                t("coordination.k8s.io", "leases", "Lease", true, false),
                t(
                    "storage.k8s.io",
                    "storageclasses",
                    "StorageClass",
                    false,
                    false,
                ),
                t(
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    "CustomResourceDefinition",
                    false,
                    true,
                ),
            ],
        }
    }
}

impl Registry {
    /// The type served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The types a CustomResourceDefinition defines (one per served version).
    pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
        let spec = &crd["spec"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let versions = spec["versions"].as_array().cloned().unwrap_or_default();
        versions
            .iter()
            .filter(|v| v["served"].as_bool().unwrap_or(true))
            .map(|v| ResourceType {
                group: text(&spec["group"]),
                version: text(&v["name"]),
                plural: text(&spec["names"]["plural"]),
                kind: text(&spec["names"]["kind"]),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                status_subresource: v["subresources"].get("status").is_some(),
            })
            .collect()
    }

    /// Serves the types of a CRD (replacing an earlier definition of them).
    pub fn register(&mut self, types: Vec<ResourceType>) {
        for new in types {
            self.types.retain(|t| {
                !(t.group == new.group && t.version == new.version && t.plural == new.plural)
            });
            self.types.push(new);
        }
    }

    /// Stops serving the types of a deleted CRD.
    pub fn unregister(&mut self, types: &[ResourceType]) {
        self.types.retain(|t| !types.contains(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_crd_registers_one_type_per_served_version() {
        let crd = json!({"spec": {
            "group": "flotilla.dev",
            "names": {"plural": "clusters", "kind": "Cluster"},
            "scope": "Namespaced",
            "versions": [{"name": "v1alpha1", "served": true, "subresources": {"status": {}}}]
        }});
        let mut registry = Registry::default();
        assert!(
            registry
                .find("flotilla.dev", "v1alpha1", "clusters")
                .is_none()
        );
        registry.register(Registry::from_crd(&crd));
        let t = registry
            .find("flotilla.dev", "v1alpha1", "clusters")
            .cloned();
        assert_eq!(t.as_ref().map(|t| t.kind.as_str()), Some("Cluster"));
        assert_eq!(t.as_ref().map(|t| t.status_subresource), Some(true));
        assert_eq!(
            t.map(|t| t.api_version()).as_deref(),
            Some("flotilla.dev/v1alpha1")
        );
    }
}
