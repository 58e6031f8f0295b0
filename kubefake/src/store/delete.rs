//! Deletion: at once, or marked while finalizers remain or a pod's grace period runs, and the
//! garbage collection of dependents whose owners are gone.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, DEFAULT_GRACE_SECONDS, DeleteOptions, ObjectKey, State, Store,
    finalizers_empty, is_deleting, now, text,
};
use crate::resources::{Registry, ResourceType};

impl Store {
    /// Deletes the object: at once, or by setting `deletionTimestamp` while finalizers
    /// remain or (pods) until the kubelet stopped the containers.
    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: DeleteOptions,
    ) -> ApiResult<Value> {
        let key = Self::key(rt, namespace, name)?;
        let mut state = self.lock();
        self.delete_key(&mut state, rt.is_pod(), key, options)
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    pub(super) fn delete_key(
        &self,
        state: &mut State,
        pod: bool,
        key: ObjectKey,
        options: DeleteOptions,
    ) -> Option<Value> {
        let mut object = state.objects.get(&key).cloned()?;
        if options.orphan {
            self.orphan_dependents(state, &object);
        }
        let graceful = pod && options.grace_period_seconds != Some(0);
        if finalizers_empty(&object) && !graceful {
            return Some(self.remove(state, key));
        }
        if is_deleting(&object) {
            return Some(object);
        }
        object["metadata"]["deletionTimestamp"] = json!(now());
        // As the API server does when it marks an object for deletion: the generation
        // moves, so that controllers that filter on it see the deletion.
        if let Some(generation) = object["metadata"]["generation"].as_i64().filter(|g| *g > 0) {
            object["metadata"]["generation"] = json!(generation + 1);
        }
        if graceful {
            let grace = options
                .grace_period_seconds
                .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(DEFAULT_GRACE_SECONDS);
            object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        Some(self.commit(state, key, object, "MODIFIED"))
    }

    /// Removes the object for good, then deletes the dependents it leaves without owner.
    pub(super) fn remove(&self, state: &mut State, key: ObjectKey) -> Value {
        let Some(object) = state.objects.get(&key).cloned() else {
            return Value::Null;
        };
        state.applied.retain(|(k, _, _), _| *k != key);
        if key.resource == "apiextensions.k8s.io/customresourcedefinitions" {
            let types = Registry::from_crd(&object);
            state.registry.unregister(&types);
        }
        let removed = self.commit(state, key, object, "DELETED");
        self.collect_garbage(state);
        removed
    }

    /// Drops the owner references to `owner` from every object (what the garbage
    /// collector does for `propagationPolicy: Orphan` before the owner goes).
    fn orphan_dependents(&self, state: &mut State, owner: &Value) {
        let Some(uid) = text(owner, "/metadata/uid").map(str::to_owned) else {
            return;
        };
        let owned_by = |object: &Value| {
            object["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(&uid)))
        };
        let dependents: Vec<(ObjectKey, Value)> = state
            .objects
            .iter()
            .filter(|(_, object)| owned_by(object))
            .map(|(key, object)| (key.clone(), object.clone()))
            .collect();
        for (key, mut object) in dependents {
            if let Some(refs) = object["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"].as_str() != Some(&uid));
                if refs.is_empty()
                    && let Some(metadata) = object["metadata"].as_object_mut()
                {
                    metadata.remove("ownerReferences");
                }
            }
            self.commit(state, key, object, "MODIFIED");
        }
    }

    /// Deletes every object all of whose owners are gone (background propagation).
    fn collect_garbage(&self, state: &mut State) {
        loop {
            let uids: HashSet<String> = state
                .objects
                .values()
                .filter_map(|o| text(o, "/metadata/uid").map(str::to_owned))
                .collect();
            let orphans: Vec<ObjectKey> = state
                .objects
                .iter()
                .filter(|(_, object)| {
                    let owners = object["metadata"]["ownerReferences"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    !owners.is_empty()
                        && !is_deleting(object)
                        && owners.iter().all(|owner| {
                            owner["uid"].as_str().is_none_or(|uid| !uids.contains(uid))
                        })
                })
                .map(|(key, _)| key.clone())
                .collect();
            if orphans.is_empty() {
                return;
            }
            for key in orphans {
                let pod = key.resource == "/pods";
                self.delete_key(state, pod, key, DeleteOptions::default());
            }
        }
    }
}
