//! The objects of the fake API server and every change made to them.
//!
//! One global resourceVersion counts every change; each change is kept in a bounded history
//! and broadcast, so that a watch can resume from any resourceVersion still in the history
//! (older ones get `410 Gone`, and kube-runtime's watcher lists again). Writes keep what the
//! server owns (`uid`, `creationTimestamp`, `generation`, `deletionTimestamp`), bump
//! `generation` when anything but metadata and status changes (and when an object is marked
//! for deletion), and honour the status subresource. Deletion waits for finalizers; pods are
//! deleted gracefully (the kubelet finishes the deletion once the container stopped). When an object is gone, its dependents
//! (by owner reference uid) are deleted in the background, as the garbage collector does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::broadcast;

pub use crate::error::{ApiError, ApiResult};
use crate::hooks::Hooks;
use crate::patch;
use crate::resources::{Registry, ResourceType};
use crate::schema;

/// Changes kept for watches that resume from a resourceVersion.
const HISTORY: usize = 20_000;
/// Changes a slow watcher may fall behind before its watch ends with `410 Gone`.
const BROADCAST_CAPACITY: usize = 8_192;
/// Grace period of a pod whose spec names none.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Identity of a stored object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ObjectKey {
    /// [`ResourceType::key`].
    resource: String,
    /// Empty for cluster-scoped objects.
    namespace: String,
    name: String,
}

/// How a PATCH request changes the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Apply,
    Merge,
    Json,
}

/// What a DELETE request asks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy: Orphan`: the dependents lose their owner reference and stay.
    pub orphan: bool,
}

#[derive(Default)]
struct State {
    revision: u64,
    registry: Registry,
    objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Arc<WatchRecord>>,
    /// Highest revision no longer in the history.
    compacted: u64,
    /// Last configuration each field manager applied, by object and subresource.
    applied: HashMap<(ObjectKey, String, bool), Value>,
}

/// The stored objects; clones share them.
#[derive(Clone)]
pub struct Store {
    state: Arc<Mutex<State>>,
    feed: broadcast::Sender<Arc<WatchRecord>>,
    hooks: Hooks,
}

impl Default for Store {
    fn default() -> Self {
        let (feed, _) = broadcast::channel(BROADCAST_CAPACITY);
        let store = Self {
            state: Arc::default(),
            feed,
            hooks: Hooks::default(),
        };
        // The namespaces every cluster starts with.
        if let Some(rt) = store.resolve("", "v1", "namespaces") {
            for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let namespace = json!({"metadata": {"name": name}});
                if let Err(e) = store.put(&rt, namespace) {
                    eprintln!("fake API: namespace {name}: {}", e.message);
                }
            }
        }
        store
    }
}

impl State {
    fn namespace_exists(&self, name: &str) -> bool {
        self.objects.contains_key(&ObjectKey {
            resource: "/namespaces".to_owned(),
            namespace: String::new(),
            name: name.to_owned(),
        })
    }

    /// The body as stored: for a custom kind, pruned, defaulted and validated against the
    /// schema of its CustomResourceDefinition ([`schema::admit`]); other kinds as given.
    fn admit(
        &self,
        rt: &ResourceType,
        name: &str,
        body: Value,
        old: Option<&Value>,
    ) -> ApiResult<Value> {
        let crd = self.objects.get(&ObjectKey {
            resource: "apiextensions.k8s.io/customresourcedefinitions".to_owned(),
            namespace: String::new(),
            name: format!("{}.{}", rt.plural, rt.group),
        });
        match crd.and_then(|crd| schema::of_version(crd, &rt.version)) {
            Some(schema) => schema::admit(schema, &rt.kind, name, body, old),
            None => Ok(body),
        }
    }
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn new_uid() -> String {
    let n: u128 = rand::random();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// The object without metadata and status: what `generation` counts changes of.
fn desired_part(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    object
}

fn is_deleting(object: &Value) -> bool {
    object["metadata"].get("deletionTimestamp").is_some()
}

fn finalizers_empty(object: &Value) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty)
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// The type served at `group/version/plural`, if any.
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock().registry.find(group, version, plural).cloned()
    }

    /// The current resourceVersion.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> ApiResult<ObjectKey> {
        let namespace = match (rt.namespaced, namespace) {
            (true, Some(ns)) if !ns.is_empty() => ns.to_owned(),
            (true, _) => {
                return Err(ApiError::bad_request(format!(
                    "{} is namespaced: a namespace is required",
                    rt.plural
                )));
            }
            (false, _) => String::new(),
        };
        Ok(ObjectKey {
            resource: rt.key(),
            namespace,
            name: name.to_owned(),
        })
    }

    /// Every object of `rt` the filter selects, and the resourceVersion of the list.
    pub fn list(&self, rt: &ResourceType, filter: &Filter) -> (Vec<Value>, u64) {
        let state = self.lock();
        let items = state
            .objects
            .iter()
            .filter(|(key, object)| filter.matches(&key.resource, &key.namespace, object, rt))
            .map(|(_, object)| object.clone())
            .collect();
        (items, state.revision)
    }

    pub fn get(&self, rt: &ResourceType, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let key = Self::key(rt, namespace, name)?;
        self.lock()
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut body: Value,
    ) -> ApiResult<Value> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body must be an object"));
        }
        let name = match text(&body, "/metadata/name") {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match text(&body, "/metadata/generateName") {
                Some(prefix) => {
                    let suffix: String = (0..5)
                        .map(|_| {
                            char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27)])
                        })
                        .collect();
                    format!("{prefix}{suffix}")
                }
                None => return Err(ApiError::bad_request("metadata.name is required")),
            },
        };
        let key = Self::key(rt, namespace, &name)?;
        if let Some(ns) = text(&body, "/metadata/namespace")
            && rt.namespaced
            && ns != key.namespace
        {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({ns}) does not match the request ({})",
                key.namespace
            )));
        }
        let mut state = self.lock();
        if rt.namespaced && !state.namespace_exists(&key.namespace) {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("namespaces \"{}\" not found", key.namespace),
            ));
        }
        if state.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{}.{} \"{name}\" already exists", rt.plural, rt.group),
            ));
        }
        body["apiVersion"] = json!(rt.api_version());
        body["kind"] = json!(rt.kind);
        if rt.status_subresource
            && let Some(map) = body.as_object_mut()
        {
            map.remove("status");
        }
        let metadata = &mut body["metadata"];
        metadata["name"] = json!(name);
        if rt.namespaced {
            metadata["namespace"] = json!(key.namespace);
        }
        metadata["uid"] = json!(new_uid());
        metadata["creationTimestamp"] = json!(now());
        metadata["generation"] = json!(1);
        if let Some(map) = metadata.as_object_mut() {
            map.remove("deletionTimestamp");
            map.remove("resourceVersion");
            map.remove("generateName");
        }
        let body = volumes::admit_new_claim(&state, rt, body);
        let body = state.admit(rt, &name, body, None)?;
        if rt.is_crd() {
            let types = Registry::from_crd(&body);
            state.registry.register(types);
        }
        Ok(self.commit(&mut state, key, body, "ADDED"))
    }

    /// Replaces the object (PUT), or only its status when `status` is set.
    pub fn replace(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        status: bool,
    ) -> ApiResult<Value> {
        let key = Self::key(rt, namespace, name)?;
        let mut state = self.lock();
        let old = state
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(expected) = text(&body, "/metadata/resourceVersion")
            && Some(expected) != text(&old, "/metadata/resourceVersion")
        {
            return Err(conflict(rt, name));
        }
        self.update(&mut state, rt, key, &old, body, status)
    }

    /// Patches the object (or its status); an apply patch creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        status: bool,
        kind: PatchKind,
        body: &Value,
        manager: &str,
    ) -> ApiResult<Value> {
        let key = Self::key(rt, namespace, name)?;
        let mut state = self.lock();
        let old = match state.objects.get(&key) {
            Some(old) => old.clone(),
            None if kind == PatchKind::Apply && !status => {
                drop(state);
                let mut created = body.clone();
                created["metadata"]["name"] = json!(name);
                let created = self.create(rt, namespace, created)?;
                self.lock()
                    .applied
                    .insert((key, manager.to_owned(), false), body.clone());
                return Ok(created);
            }
            None => return Err(ApiError::not_found(rt, name)),
        };
        let new = match kind {
            PatchKind::Apply => {
                let managed = (key.clone(), manager.to_owned(), status);
                let new = patch::server_side_apply(&old, body, state.applied.get(&managed));
                state.applied.insert(managed, body.clone());
                new
            }
            PatchKind::Merge => {
                let mut new = old.clone();
                patch::merge(&mut new, body);
                new
            }
            PatchKind::Json => {
                let mut new = old.clone();
                patch::json_patch(&mut new, body).map_err(|e| ApiError::new(422, "Invalid", e))?;
                new
            }
        };
        if text(&new, "/metadata/resourceVersion") != text(&old, "/metadata/resourceVersion") {
            return Err(conflict(rt, name));
        }
        self.update(&mut state, rt, key, &old, new, status)
    }

    fn update(
        &self,
        state: &mut State,
        rt: &ResourceType,
        key: ObjectKey,
        old: &Value,
        mut new: Value,
        status: bool,
    ) -> ApiResult<Value> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        // Like the API server, a StatefulSet's claim templates cannot change in place.
        if rt.group == "apps"
            && rt.plural == "statefulsets"
            && !status
            && old["spec"]["volumeClaimTemplates"] != new["spec"]["volumeClaimTemplates"]
        {
            return Err(ApiError::new(
                422,
                "Invalid",
                "StatefulSet.apps is invalid: spec: Forbidden: updates to statefulset spec for \
                 fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', \
                 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
        if !status {
            volumes::admit_claim_resize(state, rt, old, &new)?;
        }
        if status {
            let mut only_status = old.clone();
            only_status["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            if only_status["status"].is_null()
                && let Some(map) = only_status.as_object_mut()
            {
                map.remove("status");
            }
            new = only_status;
        } else if rt.status_subresource {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(map) = new.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        // What the server owns.
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(map) = new["metadata"].as_object_mut() {
                        map.remove(field);
                    }
                }
            }
        }
        for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(map) = new["metadata"].as_object_mut() {
                        map.remove(field);
                    }
                }
            }
        }
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        let changed_spec = desired_part(old) != desired_part(&new);
        new["metadata"]["generation"] = json!(if changed_spec {
            generation + 1
        } else {
            generation
        });
        let new = state.admit(rt, &key.name, new, Some(old))?;
        if new == *old {
            return Ok(new);
        }
        if rt.is_crd() {
            let types = Registry::from_crd(&new);
            state.registry.register(types);
        }
        let deleting_done = is_deleting(&new) && finalizers_empty(&new) && !rt.is_pod();
        let committed = self.commit(state, key.clone(), new, "MODIFIED");
        if deleting_done {
            return Ok(self.remove(state, key));
        }
        Ok(committed)
    }

    /// Records a change: bumps the resourceVersion, stores (or drops) the object, keeps the
    /// change in the history and sends it to every watch.
    fn commit(
        &self,
        state: &mut State,
        key: ObjectKey,
        mut object: Value,
        event: &'static str,
    ) -> Value {
        state.revision += 1;
        object["metadata"]["resourceVersion"] = json!(state.revision.to_string());
        if event == "DELETED" {
            state.objects.remove(&key);
        } else {
            state.objects.insert(key.clone(), object.clone());
        }
        let record = Arc::new(WatchRecord {
            revision: state.revision,
            resource: key.resource,
            namespace: key.namespace,
            event,
            object: object.clone(),
        });
        state.history.push_back(record.clone());
        while state.history.len() > HISTORY {
            if let Some(dropped) = state.history.pop_front() {
                state.compacted = dropped.revision;
            }
        }
        // No receiver is not an error: nobody watches.
        let _ = self.feed.send(record);
        object
    }
}

fn conflict(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            rt.plural, rt.group
        ),
    )
}

mod delete;
mod direct;
#[cfg(test)]
mod tests;
mod volumes;
mod watch;

pub use watch::{Filter, WatchRecord};
