//! A cluster with `spec.tls`: the operator's CA and certificates in Secrets, their renewal
//! and the CA's rotation; cert-manager Certificates instead when an issuer is named; the
//! NetworkPolicy.

use super::*;
use crate::controllers::tls::{
    self as certs, CA_CERT_KEY, CERT_KEY, KEY_KEY, PREVIOUS_CA_CERT_KEY,
};
use crate::crd::{IssuerRef, NetworkPolicySpec, TlsSpec};
use crate::plan::certificates::{ISSUER_ANNOTATION, TRUST_PROPAGATION};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use std::time::{Duration, SystemTime};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn tls_cluster(issuer: Option<IssuerRef>) -> Cluster {
    let mut cluster = Cluster::test().with_cluster_id("c-1");
    cluster.spec.tls = Some(TlsSpec {
        enabled: true,
        issuer_ref: issuer,
        certificate_lifetime: None,
    });
    cluster
}

impl Harness {
    fn secret(&self, name: &str) -> Secret {
        match self.api.get::<Secret>(NS, name) {
            Some(secret) => secret,
            None => panic!("Secret {name} is missing"),
        }
    }

    fn secret_text(&self, name: &str, key: &str) -> String {
        let secret = self.secret(name);
        let bytes = secret
            .data
            .and_then(|d| d.get(key).cloned())
            .map(|b| b.0)
            .unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    async fn issue_at(&self, now: SystemTime) {
        let cluster = self.cluster();
        if let Err(error) = certs::issue(&cluster, &self.ctx, NS, now).await {
            panic!("issuing certificates: {error}");
        }
    }

    fn admin_tls(&self) -> Option<Option<flotilla_client::ClientTls>> {
        self.admin.lock().client_tls.get("flotilla").cloned()
    }
}

fn certificates_in(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

#[tokio::test]
async fn a_tls_cluster_gets_a_ca_a_node_certificate_and_the_operators_client_certificate() {
    let h = Harness::new();
    h.api.put(&tls_cluster(None));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);

    let ca = h.secret_text("flotilla-ca", CA_CERT_KEY);
    assert_eq!(certificates_in(&ca), 1);
    assert!(
        h.secret_text("flotilla-ca", "ca.key")
            .contains("PRIVATE KEY")
    );
    for name in ["flotilla-tls", "flotilla-operator-tls"] {
        let secret = h.secret(name);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(h.secret_text(name, CA_CERT_KEY).trim(), ca.trim());
        assert_eq!(certificates_in(&h.secret_text(name, CERT_KEY)), 1);
        assert!(h.secret_text(name, KEY_KEY).contains("PRIVATE KEY"));
        // Owned by the cluster: they go with it.
        let owners = secret.metadata.owner_references.unwrap_or_default();
        assert_eq!(owners.first().map(|o| o.kind.as_str()), Some("Cluster"));
    }
    // The admin client calls the cluster with the operator's certificate.
    let tls = h.admin_tls().flatten();
    assert_eq!(
        tls.as_ref().map(|t| t.ca_pem.clone()),
        Some(
            h.secret_text("flotilla-operator-tls", CA_CERT_KEY)
                .into_bytes()
        )
    );
    assert_eq!(
        tls.and_then(|t| t.identity).map(|(cert, _)| cert),
        Some(
            h.secret_text("flotilla-operator-tls", CERT_KEY)
                .into_bytes()
        )
    );
    // The pods mount the node certificate.
    let volumes = h
        .statefulset()
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.volumes)
        .unwrap_or_default();
    assert!(
        volumes
            .iter()
            .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                == Some("flotilla-tls"))
    );
}

#[tokio::test]
async fn a_second_pass_issues_nothing_new() {
    let h = Harness::new();
    h.api.put(&tls_cluster(None));
    let now = SystemTime::now();
    h.issue_at(now).await;
    let before: Vec<_> = ["flotilla-ca", "flotilla-tls", "flotilla-operator-tls"]
        .iter()
        .map(|n| h.secret(n).data)
        .collect();
    h.issue_at(now + DAY).await;
    let after: Vec<_> = ["flotilla-ca", "flotilla-tls", "flotilla-operator-tls"]
        .iter()
        .map(|n| h.secret(n).data)
        .collect();
    assert_eq!(before, after);
}

#[tokio::test]
async fn certificates_are_renewed_at_two_thirds_of_their_lifetime_under_the_same_ca() {
    let h = Harness::new();
    h.api.put(&tls_cluster(None));
    let start = SystemTime::now();
    h.issue_at(start).await;
    let ca = h.secret_text("flotilla-ca", CA_CERT_KEY);
    let first = h.secret_text("flotilla-tls", CERT_KEY);

    // Default lifetime 90 days: not yet at 59, renewed at 61.
    h.issue_at(start + 59 * DAY).await;
    assert_eq!(h.secret_text("flotilla-tls", CERT_KEY), first);
    h.issue_at(start + 61 * DAY).await;
    let renewed = h.secret_text("flotilla-tls", CERT_KEY);
    assert_ne!(renewed, first);
    assert_eq!(h.secret_text("flotilla-ca", CA_CERT_KEY), ca);
    assert_eq!(h.secret_text("flotilla-tls", CA_CERT_KEY).trim(), ca.trim());
    let events = h.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("CertificateIssued"))
    );
}

#[tokio::test]
async fn a_ca_rotation_trusts_both_cas_before_any_certificate_of_the_new_one_is_used() {
    let h = Harness::new();
    h.api.put(&tls_cluster(None));
    let start = SystemTime::now();
    h.issue_at(start).await;
    let old_ca = h.secret_text("flotilla-ca", CA_CERT_KEY);
    // Certificates renewed along the way, still under the first CA.
    h.issue_at(start + 2400 * DAY).await;
    let leaf = h.secret_text("flotilla-tls", CERT_KEY);
    let old_issuer = h
        .secret("flotilla-tls")
        .metadata
        .annotations
        .unwrap_or_default()[ISSUER_ANNOTATION]
        .clone();

    // Two thirds of the CA's ten years: a new CA; the old one stays trusted.
    let rotation = start + 2440 * DAY;
    h.issue_at(rotation).await;
    let new_ca = h.secret_text("flotilla-ca", CA_CERT_KEY);
    assert_ne!(new_ca, old_ca);
    assert_eq!(h.secret_text("flotilla-ca", PREVIOUS_CA_CERT_KEY), old_ca);
    let bundle = h.secret_text("flotilla-tls", CA_CERT_KEY);
    assert_eq!(certificates_in(&bundle), 2);
    assert!(bundle.starts_with(new_ca.trim()));
    assert!(bundle.contains(old_ca.trim()));
    // The certificate itself waits until every pod trusts the new CA.
    assert_eq!(h.secret_text("flotilla-tls", CERT_KEY), leaf);

    h.issue_at(rotation + TRUST_PROPAGATION).await;
    assert_ne!(h.secret_text("flotilla-tls", CERT_KEY), leaf);
    let issuer = h
        .secret("flotilla-tls")
        .metadata
        .annotations
        .unwrap_or_default()[ISSUER_ANNOTATION]
        .clone();
    assert_ne!(issuer, old_issuer);
    assert_eq!(
        certificates_in(&h.secret_text("flotilla-tls", CA_CERT_KEY)),
        2
    );

    // Once the old CA expires it is trusted no more.
    h.issue_at(start + 3651 * DAY).await;
    assert_eq!(h.secret_text("flotilla-ca", PREVIOUS_CA_CERT_KEY), "");
    assert_eq!(
        certificates_in(&h.secret_text("flotilla-tls", CA_CERT_KEY)),
        1
    );
    assert_eq!(
        certificates_in(&h.secret_text("flotilla-operator-tls", CA_CERT_KEY)),
        1
    );
}

/// The CRD of cert-manager's Certificates, enough for the fake API to serve them.
fn certificate_crd() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "certificates.cert-manager.io" },
        "spec": {
            "group": "cert-manager.io",
            "scope": "Namespaced",
            "names": { "plural": "certificates", "singular": "certificate", "kind": "Certificate" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } }
            }]
        }
    })
}

#[tokio::test]
async fn with_an_issuer_cert_manager_issues_and_the_operator_makes_no_ca() {
    let h = Harness::new();
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        match serde_json::from_value(certificate_crd()) {
            Ok(crd) => crd,
            Err(error) => panic!("CRD: {error}"),
        };
    h.api.put(&crd);
    h.api.put(&tls_cluster(Some(IssuerRef {
        name: "cluster-ca".into(),
        kind: "Issuer".into(),
        group: "cert-manager.io".into(),
    })));
    h.admin.set_membership(Some(membership(3)));
    // The operator's certificate is not issued yet: its calls wait for it.
    let _ = h.reconcile_cluster().await;
    assert!(h.api.get::<Secret>(NS, "flotilla-ca").is_none());
    let resource = crate::desired::certificate_resource();
    let certificates =
        kube::Api::<kube::api::DynamicObject>::namespaced_with(h.ctx.client.clone(), NS, &resource);
    let names: Vec<String> = match certificates.list(&Default::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect(),
        Err(error) => panic!("listing Certificates: {error}"),
    };
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"flotilla-tls".to_owned()));
    assert!(names.contains(&"flotilla-operator-tls".to_owned()));
    assert_eq!(h.admin_tls(), Some(None));

    // cert-manager fills the Secret: the operator uses it.
    let mut secret = Secret::default();
    secret.metadata.name = Some("flotilla-operator-tls".into());
    secret.metadata.namespace = Some(NS.into());
    secret.data = Some(
        [(CA_CERT_KEY, "ca"), (CERT_KEY, "cert"), (KEY_KEY, "key")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    h.api.put(&secret);
    let _ = h.reconcile_cluster().await;
    let tls = h.admin_tls().flatten();
    assert_eq!(tls.map(|t| t.ca_pem), Some(b"ca".to_vec()));
}

#[tokio::test]
async fn a_network_policy_is_kept_while_enabled_and_removed_after() {
    let h = Harness::new();
    let mut cluster = Cluster::test().with_cluster_id("c-1");
    cluster.spec.network_policy = Some(NetworkPolicySpec {
        enabled: true,
        clients: None,
    });
    h.api.put(&cluster);
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    assert!(h.api.get::<NetworkPolicy>(NS, "flotilla").is_some());

    let mut cluster = h.cluster();
    cluster.spec.network_policy = Some(NetworkPolicySpec::default());
    h.api.put(&cluster);
    ok(h.reconcile_cluster().await);
    assert!(h.api.get::<NetworkPolicy>(NS, "flotilla").is_none());
}

#[tokio::test]
async fn a_cluster_without_tls_is_called_in_plaintext_and_gets_no_secret() {
    let h = Harness::new();
    h.api.put(&Cluster::test().with_cluster_id("c-1"));
    h.admin.set_membership(Some(membership(3)));
    ok(h.reconcile_cluster().await);
    assert_eq!(h.admin_tls(), Some(None));
    assert!(h.api.get::<Secret>(NS, "flotilla-ca").is_none());
    assert!(h.api.get::<Secret>(NS, "flotilla-tls").is_none());
}
