//! An in-memory stand-in for the Kubernetes API behind a `kube::Client`, for reconcile
//! tests: objects by path, get / list (with label selectors) / create / delete /
//! replace with a resourceVersion precondition / server-side apply / JSON and merge patches, the status subresource, finalizers on
//! delete, and a log of every request.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<String>,
    counter: u64,
    /// Paths whose next write finds the object changed by someone else.
    raced: Vec<String>,
    /// Collections the client may not touch (as RBAC would forbid them).
    forbidden: Vec<String>,
    /// Writes to paths containing the first part are refused as invalid, with the second
    /// as the message (as admission or validation would refuse them).
    refused: Vec<(String, String)>,
}

/// The fake API; clone it freely, every clone shares the same objects.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn item_path<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
    let namespace = (!namespace.is_empty()).then_some(namespace);
    format!("{}/{name}", K::url_path(&(), namespace))
}

impl FakeApi {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> Client {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            let mut handle = Box::pin(handle);
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                send.send_response(fake.handle(&parts, &body));
            }
        });
        Client::new(service, "default")
    }

    /// Stores `object` as is (status included), as if another actor had written it.
    pub fn put<K: Resource<DynamicType = ()> + Serialize>(&self, object: &K) {
        let namespace = object.meta().namespace.clone().unwrap_or_default();
        let name = object.meta().name.clone().unwrap_or_default();
        let mut value = serde_json::to_value(object).unwrap_or_default();
        value["apiVersion"] = json!(K::api_version(&()));
        value["kind"] = json!(K::kind(&()));
        let mut state = self.lock();
        state.counter += 1;
        let version = state.counter.to_string();
        value["metadata"]["resourceVersion"] = json!(version);
        state
            .objects
            .insert(item_path::<K>(&namespace, &name), value);
    }

    /// The stored object, if any.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<K> {
        let value = self
            .lock()
            .objects
            .get(&item_path::<K>(namespace, name))
            .cloned()?;
        serde_json::from_value(value).ok()
    }

    /// Removes the stored object, as if another actor had deleted it.
    pub fn remove<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) {
        self.lock().objects.remove(&item_path::<K>(namespace, name));
    }

    /// The next write to the object finds it changed by another writer since it was read.
    pub fn bump_resource_version_on_next_write<K: Resource<DynamicType = ()>>(
        &self,
        namespace: &str,
        name: &str,
    ) {
        self.lock().raced.push(item_path::<K>(namespace, name));
    }

    /// Every request for objects of kind `K` (in any namespace) is forbidden from now on.
    pub fn forbid<K: Resource<DynamicType = ()>>(&self) {
        self.lock().forbidden.push(K::url_path(&(), None));
    }

    /// Every write to a path containing `fragment` is refused as invalid with `message`,
    /// until [`Self::accept_writes`].
    pub fn refuse_writes(&self, fragment: &str, message: &str) {
        self.lock()
            .refused
            .push((fragment.to_owned(), message.to_owned()));
    }

    /// Writes to paths containing `fragment` are accepted again.
    pub fn accept_writes(&self, fragment: &str) {
        self.lock().refused.retain(|(f, _)| f != fragment);
    }

    /// Every request, as `METHOD path`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Every request that changed something, as `METHOD path`, oldest first.
    pub fn writes(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .filter(|r| !r.starts_with("GET "))
            .cloned()
            .collect()
    }

    /// Forgets the requests seen so far.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    fn handle(&self, parts: &http::request::Parts, body: &[u8]) -> Response<Body> {
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let mut state = self.lock();
        state.requests.push(format!("{} {path}", parts.method));
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        // A namespaced path is forbidden with its kind's collection.
        let unscoped = match path.split_once("/namespaces/") {
            Some((head, tail)) => match tail.split_once('/') {
                Some((_, rest)) => format!("{head}/{rest}"),
                None => path.clone(),
            },
            None => path.clone(),
        };
        if state
            .forbidden
            .iter()
            .any(|f| unscoped == *f || unscoped.starts_with(&format!("{f}/")))
        {
            return status(StatusCode::FORBIDDEN, "Forbidden");
        }
        if parts.method != Method::GET
            && let Some((_, message)) = state.refused.iter().find(|(f, _)| path.contains(f))
        {
            return status(StatusCode::UNPROCESSABLE_ENTITY, &message.clone());
        }
        let Some(target) = Target::parse(&path) else {
            return status(StatusCode::NOT_FOUND, "NotFound");
        };
        let Target::Item { item, subresource } = target else {
            return match parts.method {
                Method::GET => list(&state, &path, &query),
                Method::POST => {
                    let name = body["metadata"]["name"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("generated-{}", state.counter));
                    let item = format!("{path}/{name}");
                    if state.objects.contains_key(&item) {
                        return status(StatusCode::CONFLICT, "AlreadyExists");
                    }
                    let stored = state.store(item, body);
                    respond(StatusCode::CREATED, &stored)
                }
                _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            };
        };
        match parts.method {
            Method::GET => match state.objects.get(&item) {
                Some(value) => respond(StatusCode::OK, value),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            Method::DELETE => state.delete(&item),
            Method::PUT => state.replace(&item, body),
            Method::PATCH => state.patch(&item, subresource, &content_type, body),
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }
}

impl State {
    fn store(&mut self, path: String, mut value: Value) -> Value {
        self.counter += 1;
        value["metadata"]["resourceVersion"] = json!(self.counter.to_string());
        if value["metadata"]["uid"].is_null() {
            value["metadata"]["uid"] = json!(format!("uid-{}", self.counter));
        }
        if value["metadata"]["generation"].is_null() {
            value["metadata"]["generation"] = json!(1);
        }
        let deleting = !value["metadata"]["deletionTimestamp"].is_null();
        let finalizers = value["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers {
            self.objects.remove(&path);
        } else {
            self.objects.insert(path, value.clone());
        }
        value
    }

    /// Replaces the object if the write carries the resourceVersion it has now.
    fn replace(&mut self, item: &str, body: Value) -> Response<Body> {
        if let Some(i) = self.raced.iter().position(|p| p == item) {
            self.raced.remove(i);
            self.counter += 1;
            let version = self.counter.to_string();
            if let Some(object) = self.objects.get_mut(item) {
                object["metadata"]["resourceVersion"] = json!(version);
            }
        }
        let Some(live) = self.objects.get(item) else {
            return status(StatusCode::NOT_FOUND, "NotFound");
        };
        if body["metadata"]["resourceVersion"] != live["metadata"]["resourceVersion"] {
            return status(StatusCode::CONFLICT, "Conflict");
        }
        let stored = self.store(item.to_owned(), body);
        respond(StatusCode::OK, &stored)
    }

    fn delete(&mut self, item: &str) -> Response<Body> {
        let Some(mut value) = self.objects.get(item).cloned() else {
            return status(StatusCode::NOT_FOUND, "NotFound");
        };
        if value["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        {
            value["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            let stored = self.store(item.to_owned(), value);
            return respond(StatusCode::OK, &stored);
        }
        self.objects.remove(item);
        respond(StatusCode::OK, &value)
    }

    fn patch(
        &mut self,
        item: &str,
        subresource: bool,
        content_type: &str,
        body: Value,
    ) -> Response<Body> {
        let existing = self.objects.get(item).cloned();
        // Like the API server, a StatefulSet's claim templates cannot change in place.
        if item.contains("/statefulsets/")
            && let Some(live) = &existing
            && !body["spec"]["volumeClaimTemplates"].is_null()
            && live["spec"]["volumeClaimTemplates"] != body["spec"]["volumeClaimTemplates"]
        {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "StatefulSet.apps is invalid: spec: Forbidden: updates to statefulset spec for \
                 fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', \
                 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            );
        }
        let updated = if content_type.starts_with("application/apply-patch") {
            apply(existing, body, subresource)
        } else if content_type.starts_with("application/json-patch") {
            let Some(mut value) = existing else {
                return status(StatusCode::NOT_FOUND, "NotFound");
            };
            // Like the API server, a test for `null` passes on a missing path.
            let operations: Vec<Value> = body
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|op| {
                    let missing = op["path"]
                        .as_str()
                        .is_some_and(|path| value.pointer(path).is_none());
                    !(op["op"] == "test" && op["value"].is_null() && missing)
                })
                .collect();
            let Ok(patch) = serde_json::from_value::<json_patch::Patch>(Value::Array(operations))
            else {
                return status(StatusCode::BAD_REQUEST, "BadRequest");
            };
            if json_patch::patch(&mut value, &patch).is_err() {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid");
            }
            value
        } else {
            let Some(mut value) = existing else {
                return status(StatusCode::NOT_FOUND, "NotFound");
            };
            json_patch::merge(&mut value, &body);
            value
        };
        let stored = self.store(item.to_owned(), updated);
        respond(StatusCode::OK, &stored)
    }
}

/// Server-side apply by the only field manager there is: the applied fields replace
/// the live ones, labels and annotations merge, the status is only written through
/// the status subresource, and the generation moves when the spec changes.
fn apply(existing: Option<Value>, body: Value, subresource: bool) -> Value {
    let Some(mut live) = existing else {
        let mut created = body;
        if !subresource && let Some(object) = created.as_object_mut() {
            object.remove("status");
        }
        return created;
    };
    if subresource {
        live["status"] = body["status"].clone();
        return live;
    }
    let spec_before = live["spec"].clone();
    if let Some(fields) = body.as_object() {
        for (key, value) in fields {
            match key.as_str() {
                "status" => {}
                "metadata" => {
                    for map in ["labels", "annotations"] {
                        if let Some(entries) = value[map].as_object() {
                            for (k, v) in entries {
                                live["metadata"][map][k] = v.clone();
                            }
                        }
                    }
                    if !value["ownerReferences"].is_null() {
                        live["metadata"]["ownerReferences"] = value["ownerReferences"].clone();
                    }
                }
                _ => live[key] = value.clone(),
            }
        }
    }
    if live["spec"] != spec_before {
        let generation = live["metadata"]["generation"].as_i64().unwrap_or(1);
        live["metadata"]["generation"] = json!(generation + 1);
    }
    live
}

/// What a request path names.
enum Target {
    /// A collection (`.../namespaces/NS/PLURAL`, or a cluster-wide `.../PLURAL`).
    Collection,
    /// One object, or its status subresource.
    Item { item: String, subresource: bool },
}

impl Target {
    fn parse(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let namespaces = segments.iter().position(|s| *s == "namespaces");
        let rest = match (namespaces, segments.as_slice()) {
            (Some(i), _) => segments.get(i + 2..)?,
            // A cluster-scoped kind.
            (None, ["api", _version, rest @ ..]) => rest,
            (None, ["apis", _group, _version, rest @ ..]) => rest,
            (None, _) => return Some(Self::Collection),
        };
        match rest {
            [_plural] => Some(Self::Collection),
            [_plural, _name] => Some(Self::Item {
                item: path.to_owned(),
                subresource: false,
            }),
            [_plural, _name, "status"] => Some(Self::Item {
                item: path.trim_end_matches("/status").to_owned(),
                subresource: true,
            }),
            _ => None,
        }
    }
}

/// `apiVersion` of the objects under `path`.
fn api_version(path: &str) -> String {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", version, ..] => (*version).to_owned(),
        ["apis", group, version, ..] => format!("{group}/{version}"),
        _ => "v1".to_owned(),
    }
}

fn list(state: &State, collection: &str, query: &str) -> Response<Body> {
    let selector: Vec<(String, String)> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("labelSelector="))
        .flat_map(|s| decode(s).split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|term| {
            term.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let prefix = format!("{collection}/");
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|(path, _)| {
            path.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.contains('/'))
        })
        .map(|(_, value)| value.clone())
        .filter(|value| {
            selector
                .iter()
                .all(|(k, v)| value["metadata"]["labels"][k].as_str() == Some(v))
        })
        .collect();
    respond(
        StatusCode::OK,
        &json!({
            "apiVersion": api_version(collection),
            "kind": "List",
            "metadata": {"resourceVersion": state.counter.to_string()},
            "items": items,
        }),
    )
}

fn decode(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(code: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = code;
    response
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    respond(
        code,
        &json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "message": reason,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}
