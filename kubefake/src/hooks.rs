//! What a test can make the fake API do besides storing objects: forbid kinds (as RBAC
//! would), refuse writes (as admission or validation would), and remember every request.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::Method;

use crate::error::ApiError;
use crate::resources::ResourceType;

#[derive(Default)]
struct State {
    /// Every request, as `METHOD path`, oldest first.
    requests: Vec<String>,
    /// Keys ([`ResourceType::key`]) of the kinds no request may touch.
    forbidden: Vec<String>,
    /// Writes to paths containing the first part are refused with the second as the message.
    refused: Vec<(String, String)>,
}

/// The test controls of one fake API; clones share them.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    state: Arc<Mutex<State>>,
}

impl Hooks {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn record(&self, method: &Method, path: &str) {
        self.lock().requests.push(format!("{method} {path}"));
    }

    /// The error a request for `rt` at `path` gets before it reaches the objects, if any.
    pub(crate) fn check(
        &self,
        method: &Method,
        path: &str,
        rt: &ResourceType,
    ) -> Result<(), ApiError> {
        let state = self.lock();
        if state.forbidden.contains(&rt.key()) {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("{} is forbidden to this client", rt.plural),
            ));
        }
        if method != Method::GET
            && let Some((_, message)) = state.refused.iter().find(|(f, _)| path.contains(f))
        {
            return Err(ApiError::new(422, "Invalid", message.clone()));
        }
        Ok(())
    }

    pub(crate) fn forbid(&self, rt: &ResourceType) {
        self.lock().forbidden.push(rt.key());
    }

    pub(crate) fn refuse_writes(&self, fragment: &str, message: &str) {
        self.lock()
            .refused
            .push((fragment.to_owned(), message.to_owned()));
    }

    pub(crate) fn accept_writes(&self, fragment: &str) {
        self.lock().refused.retain(|(f, _)| f != fragment);
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    pub(crate) fn clear_requests(&self) {
        self.lock().requests.clear();
    }
}
