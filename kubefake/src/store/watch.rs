//! Watches: the changes a watch or list wants, and the start of a watch (from the current
//! objects, or from a resourceVersion still in the history).

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::Store;
use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};

/// One change, as a watch reports it.
#[derive(Clone, Debug)]
pub struct WatchRecord {
    pub revision: u64,
    pub(super) resource: String,
    pub(super) namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event: &'static str,
    pub object: Value,
}

/// Which changes a watch or list wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub(super) fn matches(
        &self,
        resource: &str,
        namespace: &str,
        object: &Value,
        rt: &ResourceType,
    ) -> bool {
        resource == rt.key()
            && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    /// Whether the change is one this filter wants.
    pub fn wants(&self, record: &WatchRecord, rt: &ResourceType) -> bool {
        self.matches(&record.resource, &record.namespace, &record.object, rt)
    }
}

/// The start of a watch: the changes to send first, and the live feed after them.
pub struct WatchStart {
    pub initial: Vec<WatchRecord>,
    pub live: broadcast::Receiver<Arc<WatchRecord>>,
}

impl Store {
    /// Starts a watch from `from` (`None`: the current objects are sent first as `ADDED`).
    pub fn watch(
        &self,
        rt: &ResourceType,
        filter: &Filter,
        from: Option<u64>,
    ) -> ApiResult<WatchStart> {
        let state = self.lock();
        // Subscribing under the lock: no change falls between the initial part and the feed.
        let live = self.feed.subscribe();
        let initial = match from {
            None => state
                .objects
                .iter()
                .filter(|(key, object)| filter.matches(&key.resource, &key.namespace, object, rt))
                .map(|(key, object)| WatchRecord {
                    revision: state.revision,
                    resource: key.resource.clone(),
                    namespace: key.namespace.clone(),
                    event: "ADDED",
                    object: object.clone(),
                })
                .collect(),
            Some(from) if from < state.compacted => {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {from} ({})", state.compacted + 1),
                ));
            }
            Some(from) => state
                .history
                .iter()
                .filter(|r| r.revision > from && filter.wants(r, rt))
                .map(|r| (**r).clone())
                .collect(),
        };
        Ok(WatchStart { initial, live })
    }
}
