//! Offline validation of objects against the CEL rules (`x-kubernetes-validations`) of
//! the CRDs, as the API server would apply them on create and update.

use crate::error::{Error, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::Validator;

/// Checks `object` (and, for an update, the transition from `old`) against the CEL rules
/// of `crd`'s first version. The error lists every failed rule.
pub fn validate_cel(
    crd: &CustomResourceDefinition,
    object: &serde_json::Value,
    old: Option<&serde_json::Value>,
) -> Result<()> {
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or(Error::MissingObjectKey("openAPIV3Schema"))?;
    let schema = serde_json::to_value(schema).map_err(|e| Error::Serialize {
        what: "CRD schema".to_owned(),
        message: e.to_string(),
    })?;
    Validator::new()
        .validate(&schema, object, old)
        .map_err(|errors| Error::Invalid {
            kind: crd.spec.names.kind.clone(),
            messages: errors.iter().map(ToString::to_string).collect(),
        })
}
