//! cert-manager `Certificate`s of a cluster whose `spec.tls.issuerRef` names an issuer: one
//! for the nodes and one for the operator's client, issued into the same Secrets the
//! operator fills itself otherwise (`<cluster>-tls`, `<cluster>-operator-tls`, each with
//! `tls.crt`, `tls.key` and `ca.crt`), so that the pods are the same either way. They are
//! dynamic objects: the operator needs no cert-manager types, only its CRDs installed.

use super::child_metadata;
use crate::crd::Cluster;
use crate::crd::cluster_funcs::OPERATOR_USER;
use crate::error::Result;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

/// API group of cert-manager.
pub const CERT_MANAGER_GROUP: &str = "cert-manager.io";

/// The `Certificate` resource of cert-manager.
pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(CERT_MANAGER_GROUP, "v1", "Certificate"),
        "certificates",
    )
}

/// `duration` as cert-manager spells it (whole hours or seconds).
fn go_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

/// The cert-manager Certificates of `cluster`: none unless TLS is on with an issuer.
pub fn certificates(cluster: &Cluster) -> Result<Vec<DynamicObject>> {
    let Some(issuer) = cluster.tls_issuer() else {
        return Ok(Vec::new());
    };
    let lifetime = cluster.certificate_lifetime();
    let issuer_ref = json!({ "name": issuer.name, "kind": issuer.kind, "group": issuer.group });
    let duration = go_duration(lifetime);
    // Renewed at two thirds of the lifetime, as the operator's own certificates are.
    let renew_before = go_duration(lifetime / 3);
    let labels = cluster.labels()?;
    let resource = certificate_resource();
    let certificate = |name: String, spec: serde_json::Value| -> Result<DynamicObject> {
        let mut object = DynamicObject::new(&name, &resource);
        object.metadata = child_metadata(cluster, name)?;
        object.data = json!({ "spec": spec });
        Ok(object)
    };
    let node = certificate(
        cluster.tls_secret_name()?,
        json!({
            "secretName": cluster.tls_secret_name()?,
            "secretTemplate": { "labels": labels },
            "commonName": format!("{}-node", cluster.name()?),
            "dnsNames": cluster.node_certificate_names()?,
            "duration": duration,
            "renewBefore": renew_before,
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "issuerRef": issuer_ref,
        }),
    )?;
    let operator = certificate(
        cluster.operator_tls_secret_name()?,
        json!({
            "secretName": cluster.operator_tls_secret_name()?,
            "secretTemplate": { "labels": labels },
            "commonName": OPERATOR_USER,
            "duration": duration,
            "renewBefore": renew_before,
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
            "usages": ["digital signature", "key encipherment", "client auth"],
            "issuerRef": issuer_ref,
        }),
    )?;
    Ok(vec![node, operator])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{IssuerRef, TlsSpec};
    use crate::desired::built;

    fn with_issuer() -> Cluster {
        let mut cluster = Cluster::test();
        cluster.spec.tls = Some(TlsSpec {
            enabled: true,
            issuer_ref: Some(IssuerRef {
                name: "cluster-ca".into(),
                kind: "ClusterIssuer".into(),
                group: "cert-manager.io".into(),
            }),
            certificate_lifetime: None,
        });
        cluster
    }

    #[test]
    fn without_an_issuer_the_operator_issues_and_needs_no_certificate_objects() {
        let mut cluster = Cluster::test();
        assert!(built(certificates(&cluster)).is_empty());
        cluster.spec.tls = Some(TlsSpec {
            enabled: true,
            ..TlsSpec::default()
        });
        assert!(built(certificates(&cluster)).is_empty());
    }

    #[test]
    fn an_issuer_gets_a_node_and_an_operator_certificate_into_the_mounted_secrets() {
        let objects = built(certificates(&with_issuer()));
        let names: Vec<_> = objects
            .iter()
            .map(|o| o.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["flotilla-tls", "flotilla-operator-tls"]);
        let node = &objects[0].data["spec"];
        assert_eq!(node["secretName"], "flotilla-tls");
        assert_eq!(node["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(node["duration"], "2160h");
        assert_eq!(node["renewBefore"], "720h");
        let names = node["dnsNames"].as_array().cloned().unwrap_or_default();
        assert!(names.contains(&json!("*.flotilla-peers.db.svc")));
        assert!(names.contains(&json!("flotilla.db.svc")));
        let operator = &objects[1].data["spec"];
        assert_eq!(operator["commonName"], OPERATOR_USER);
        assert_eq!(operator["usages"][2], "client auth");
        assert_eq!(
            objects[0].types.as_ref().map(|t| t.api_version.as_str()),
            Some("cert-manager.io/v1")
        );
    }
}
