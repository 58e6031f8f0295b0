//! What the API server's admission does to PersistentVolumeClaims: a claim that names no
//! StorageClass gets the default one (`DefaultStorageClass`), and a claim's storage request
//! may only grow, and only when its StorageClass has `allowVolumeExpansion: true`
//! (`PersistentVolumeClaimResize`). Completing a resize (`status.capacity`) is left to
//! whoever plays the storage driver.

use serde_json::{Value, json};

use super::{ApiError, ApiResult, ObjectKey, State, text};
use crate::resources::ResourceType;

/// Annotation marking the default StorageClass.
const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

fn is_claims(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "persistentvolumeclaims"
}

fn classes(state: &State) -> impl Iterator<Item = &Value> {
    state
        .objects
        .iter()
        .filter(|(key, _)| key.resource == "storage.k8s.io/storageclasses")
        .map(|(_, class)| class)
}

/// A new claim without `storageClassName` gets the default StorageClass, if there is one.
pub(super) fn admit_new_claim(state: &State, rt: &ResourceType, mut claim: Value) -> Value {
    if !is_claims(rt) || claim["spec"].get("storageClassName").is_some() {
        return claim;
    }
    let default = classes(state)
        .find(|class| class["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION] == "true");
    if let Some(name) = default.and_then(|class| text(class, "/metadata/name"))
        && claim["spec"].is_object()
    {
        claim["spec"]["storageClassName"] = json!(name);
    }
    claim
}

/// Refuses a change of a claim's storage request that shrinks it, or grows it on a
/// StorageClass that does not allow expansion.
pub(super) fn admit_claim_resize(
    state: &State,
    rt: &ResourceType,
    old: &Value,
    new: &Value,
) -> ApiResult<()> {
    const REQUEST: &str = "/spec/resources/requests/storage";
    if !is_claims(rt) {
        return Ok(());
    }
    let (Some(before), Some(after)) = (text(old, REQUEST), text(new, REQUEST)) else {
        return Ok(());
    };
    if before == after {
        return Ok(());
    }
    let (Some(before_bytes), Some(after_bytes)) = (bytes(before), bytes(after)) else {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!("spec.resources.requests.storage: Invalid value: {after:?}"),
        ));
    };
    if after_bytes < before_bytes {
        return Err(ApiError::new(
            422,
            "Invalid",
            "spec.resources.requests.storage: Forbidden: field can not be less than previous value",
        ));
    }
    if after_bytes == before_bytes {
        return Ok(());
    }
    let class = text(old, "/spec/storageClassName").and_then(|name| {
        state.objects.get(&ObjectKey {
            resource: "storage.k8s.io/storageclasses".to_owned(),
            namespace: String::new(),
            name: name.to_owned(),
        })
    });
    if class.is_some_and(|c| c["allowVolumeExpansion"].as_bool() == Some(true)) {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            "Forbidden",
            "only dynamically provisioned pvc can be resized and the storageclass that \
             provisions the pvc must support resize",
        ))
    }
}

/// The bytes of a storage quantity (`10Gi`, `500M`, `1e9`), or `None` if it is not one.
/// The API server parses quantities itself, and so does this stand-in for it: it cannot
/// borrow the operator's parser (`flotilla_operator::plan::drift::quantity`) without
/// depending on the code it is there to test.
fn bytes(quantity: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let quantity = quantity.trim();
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    quantity.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::super::{DeleteOptions, PatchKind, Store};
    use serde_json::{Value, json};

    fn store() -> Store {
        let store = Store::default();
        let create = |group: &str, plural: &str, ns: Option<&str>, body: Value| {
            let rt = store.resolve(group, "v1", plural);
            let rt = rt.unwrap_or_else(|| panic!("{plural} are served"));
            if let Err(e) = store.create(&rt, ns, body) {
                panic!("creating {plural}: {}", e.message);
            }
        };
        create("", "namespaces", None, json!({"metadata": {"name": "ns"}}));
        create(
            "storage.k8s.io",
            "storageclasses",
            None,
            json!({
                "metadata": {"name": "standard", "annotations": {super::DEFAULT_CLASS_ANNOTATION: "true"}},
                "provisioner": "example.com/csi",
                "allowVolumeExpansion": true,
            }),
        );
        create(
            "storage.k8s.io",
            "storageclasses",
            None,
            json!({"metadata": {"name": "fixed"}, "provisioner": "example.com/csi"}),
        );
        store
    }

    fn claim(store: &Store, name: &str, class: Option<&str>) -> Value {
        let rt = store.resolve("", "v1", "persistentvolumeclaims");
        let rt = rt.unwrap_or_else(|| panic!("claims are served"));
        let mut spec = json!({"resources": {"requests": {"storage": "10Gi"}}});
        if let Some(class) = class {
            spec["storageClassName"] = json!(class);
        }
        store
            .create(
                &rt,
                Some("ns"),
                json!({"metadata": {"name": name}, "spec": spec}),
            )
            .unwrap_or_else(|e| panic!("creating {name}: {}", e.message))
    }

    fn resize(store: &Store, name: &str, size: &str) -> Result<Value, u16> {
        let rt = store.resolve("", "v1", "persistentvolumeclaims");
        let rt = rt.unwrap_or_else(|| panic!("claims are served"));
        store
            .patch(
                &rt,
                Some("ns"),
                name,
                false,
                PatchKind::Merge,
                &json!({"spec": {"resources": {"requests": {"storage": size}}}}),
                "test",
            )
            .map_err(|e| e.code)
    }

    #[test]
    fn a_claim_without_a_class_gets_the_default_one() {
        let store = store();
        let created = claim(&store, "a", None);
        assert_eq!(created["spec"]["storageClassName"], json!("standard"));
        let named = claim(&store, "b", Some("fixed"));
        assert_eq!(named["spec"]["storageClassName"], json!("fixed"));
    }

    #[test]
    fn a_claim_grows_only_on_a_class_that_allows_expansion_and_never_shrinks() {
        let store = store();
        claim(&store, "a", None);
        claim(&store, "b", Some("fixed"));
        let grown = resize(&store, "a", "20Gi");
        assert_eq!(
            grown.map(|c| c["spec"]["resources"]["requests"]["storage"].clone()),
            Ok(json!("20Gi"))
        );
        assert_eq!(
            resize(&store, "a", "20480Mi").map(|_| ()),
            Ok(()),
            "the same size"
        );
        assert_eq!(resize(&store, "a", "10Gi").map(|_| ()), Err(422));
        assert_eq!(resize(&store, "b", "20Gi").map(|_| ()), Err(403));
    }

    #[test]
    fn an_orphaning_delete_leaves_the_dependents_without_owner() {
        let store = store();
        let sts = store.resolve("apps", "v1", "statefulsets");
        let sts = sts.unwrap_or_else(|| panic!("statefulsets are served"));
        let pods = store.resolve("", "v1", "pods");
        let pods = pods.unwrap_or_else(|| panic!("pods are served"));
        let owner = store
            .create(&sts, Some("ns"), json!({"metadata": {"name": "o"}}))
            .unwrap_or_default();
        let reference = json!([{"uid": owner["metadata"]["uid"], "name": "o", "kind": "StatefulSet", "apiVersion": "apps/v1"}]);
        let pod = json!({"metadata": {"name": "p", "ownerReferences": reference}});
        assert!(store.create(&pods, Some("ns"), pod).is_ok());
        let orphan = DeleteOptions {
            orphan: true,
            ..DeleteOptions::default()
        };
        assert!(store.delete(&sts, Some("ns"), "o", orphan).is_ok());
        let kept = store.get(&pods, Some("ns"), "p");
        assert!(
            kept.is_ok_and(|p| p["metadata"].get("ownerReferences").is_none()
                && p["metadata"].get("deletionTimestamp").is_none())
        );
    }
}
