//! Writes by another actor with every permission, for tests: objects stored as given and
//! removed at once.

use serde_json::{Value, json};

use super::{ApiError, ApiResult, Store, new_uid, now, text};
use crate::resources::{Registry, ResourceType};

impl Store {
    /// Stores `object` as is, status included (as another actor with every permission
    /// would): only what the server always owns is filled in when missing.
    pub fn put(&self, rt: &ResourceType, mut object: Value) -> ApiResult<Value> {
        let name = text(&object, "/metadata/name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("metadata.name is required"))?
            .to_owned();
        let key = Self::key(rt, text(&object, "/metadata/namespace"), &name)?;
        object["apiVersion"] = json!(rt.api_version());
        object["kind"] = json!(rt.kind);
        let metadata = &mut object["metadata"];
        if metadata.get("uid").is_none_or(Value::is_null) {
            metadata["uid"] = json!(new_uid());
        }
        if metadata.get("creationTimestamp").is_none_or(Value::is_null) {
            metadata["creationTimestamp"] = json!(now());
        }
        if metadata.get("generation").is_none_or(Value::is_null) {
            metadata["generation"] = json!(1);
        }
        let mut state = self.lock();
        if rt.is_crd() {
            let types = Registry::from_crd(&object);
            state.registry.register(types);
        }
        let event = if state.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        Ok(self.commit(&mut state, key, object, event))
    }

    /// Removes the object at once, whatever its finalizers or grace period.
    pub fn remove_now(&self, rt: &ResourceType, namespace: Option<&str>, name: &str) {
        if let Ok(key) = Self::key(rt, namespace, name) {
            let mut state = self.lock();
            self.remove(&mut state, key);
        }
    }
}
