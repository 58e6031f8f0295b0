//! Typed access for tests: objects of `k8s-openapi` and `kube::CustomResource` types written
//! and read as another actor would, without going through a client.

use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::FakeApi;
use crate::resources::ResourceType;

impl FakeApi {
    /// The served type of `K`. Panics when it is not served: a custom kind is served once its
    /// CustomResourceDefinition was created (see [`FakeApi::put`]).
    fn resource_type<K: Resource<DynamicType = ()>>(&self) -> ResourceType {
        let (group, version, plural) = (K::group(&()), K::version(&()), K::plural(&()));
        match self.store().resolve(&group, &version, &plural) {
            Some(rt) => rt,
            None => panic!(
                "the fake API does not serve {group}/{version}/{plural}: create its \
                 CustomResourceDefinition first"
            ),
        }
    }

    /// Stores `object` as is (status included), as if another actor had written it; a
    /// CustomResourceDefinition makes its kinds served.
    pub fn put<K: Resource<DynamicType = ()> + Serialize>(&self, object: &K) {
        let rt = self.resource_type::<K>();
        let value = match serde_json::to_value(object) {
            Ok(value) => value,
            Err(e) => panic!("{} does not serialize: {e}", rt.kind),
        };
        if let Err(e) = self.store().put(&rt, value) {
            panic!("storing a {}: {}", rt.kind, e.message);
        }
    }

    /// The stored object, if any.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<K> {
        let rt = self.resource_type::<K>();
        let value: Value = self.store().get(&rt, Some(namespace), name).ok()?;
        serde_json::from_value(value).ok()
    }

    /// Removes the stored object at once (finalizers and grace periods aside), as if
    /// another actor had deleted it.
    pub fn remove<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) {
        let rt = self.resource_type::<K>();
        self.store().remove_now(&rt, Some(namespace), name);
    }

    /// Every request for objects of kind `K` (in any namespace) is forbidden from now on.
    pub fn forbid<K: Resource<DynamicType = ()>>(&self) {
        let rt = self.resource_type::<K>();
        self.store().hooks().forbid(&rt);
    }

    /// Every write to a path containing `fragment` is refused as invalid with `message`,
    /// until [`Self::accept_writes`].
    pub fn refuse_writes(&self, fragment: &str, message: &str) {
        self.store().hooks().refuse_writes(fragment, message);
    }

    /// Writes to paths containing `fragment` are accepted again.
    pub fn accept_writes(&self, fragment: &str) {
        self.store().hooks().accept_writes(fragment);
    }

    /// Every request, as `METHOD path`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.store().hooks().requests()
    }

    /// Every request that changed something, as `METHOD path`, oldest first.
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| !r.starts_with("GET "))
            .collect()
    }

    /// Forgets the requests seen so far.
    pub fn clear_requests(&self) {
        self.store().hooks().clear_requests();
    }
}
