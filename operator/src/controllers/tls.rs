//! The certificates of a cluster with `spec.tls.enabled`: the I/O around
//! [`crate::plan::certificates`] (what to make or renew, when) and [`crate::pki`] (making
//! it). Without an issuer the operator keeps three Secrets:
//!
//! - `<cluster>-ca`: the cluster CA's certificate and key (and the previous CA's certificate
//!   while it is still trusted). Never mounted into a pod.
//! - `<cluster>-tls`: the nodes' certificate (every pod's stable name, the client Service),
//!   its key, and the trust bundle (`ca.crt`: the current CA, then the previous one).
//! - `<cluster>-operator-tls`: the operator's client certificate (common name `root`), with
//!   the same bundle.
//!
//! With `spec.tls.issuerRef` cert-manager fills the last two (see
//! [`crate::desired::certificates`]). Either way the operator's admin calls to the cluster
//! then use the certificate of `<cluster>-operator-tls`.

use super::{Context, FIELD_MANAGER};
use crate::crd::Cluster;
use crate::crd::Reason;
use crate::crd::cluster_funcs::OPERATOR_USER;
use crate::desired::child_metadata;
use crate::error::{Error, Result};
use crate::pki::{self, KeyPairPem, LeafRequest, Usage};
use crate::plan::certificates::{
    CA_SINCE_ANNOTATION, CaRecord, CaStep, ISSUER_ANNOTATION, LeafRecord, LeafStep,
    PREVIOUS_CA_NOT_AFTER_ANNOTATION, Validity, ca_step, leaf_step,
};
use flotilla_client::ClientTls;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Key of the CA certificate (and, in a certificate's Secret, of the trust bundle).
pub const CA_CERT_KEY: &str = "ca.crt";
/// Key of the CA's private key in the CA Secret.
pub const CA_KEY_KEY: &str = "ca.key";
/// Key of the previous CA's certificate in the CA Secret, while it is still trusted.
pub const PREVIOUS_CA_CERT_KEY: &str = "previous-ca.crt";
/// Key of a certificate in its Secret.
pub const CERT_KEY: &str = "tls.crt";
/// Key of a certificate's private key in its Secret.
pub const KEY_KEY: &str = "tls.key";

/// The certificates the CA signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// The nodes' certificate.
    Node,
    /// The operator's client certificate.
    Operator,
}

impl Leaf {
    fn secret_name(self, cluster: &Cluster) -> Result<String> {
        match self {
            Leaf::Node => cluster.tls_secret_name(),
            Leaf::Operator => cluster.operator_tls_secret_name(),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Leaf::Node => "node certificate",
            Leaf::Operator => "operator client certificate",
        }
    }

    fn request(self, cluster: &Cluster) -> Result<LeafRequest> {
        let lifetime = cluster.certificate_lifetime();
        Ok(match self {
            Leaf::Node => LeafRequest {
                common_name: format!("{}-node", cluster.name()?),
                dns_names: cluster.node_certificate_names()?,
                usage: Usage::Node,
                lifetime,
            },
            Leaf::Operator => LeafRequest {
                common_name: OPERATOR_USER.to_owned(),
                dns_names: Vec::new(),
                usage: Usage::Client,
                lifetime,
            },
        })
    }
}

/// The cluster CA as read from its Secret.
struct Ca {
    record: CaRecord,
    pem: KeyPairPem,
    previous: Option<String>,
}

impl Ca {
    /// The CAs a certificate's holder trusts: the current one, then the previous one.
    fn bundle(&self) -> String {
        pki::bundle(std::iter::once(self.pem.cert.as_str()).chain(self.previous.as_deref()))
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|t| !t.trim().is_empty())
}

fn annotations(secret: &Secret) -> BTreeMap<String, String> {
    secret.metadata.annotations.clone().unwrap_or_default()
}

fn read_ca(secret: &Secret) -> Option<Ca> {
    let annotations = annotations(secret);
    let validity = Validity::from_annotations(&annotations)?;
    let pem = KeyPairPem {
        cert: text(secret, CA_CERT_KEY)?,
        key: text(secret, CA_KEY_KEY)?,
    };
    let since = annotations
        .get(CA_SINCE_ANNOTATION)
        .and_then(|s| s.parse().ok())
        .unwrap_or(validity.not_before);
    let previous = text(secret, PREVIOUS_CA_CERT_KEY);
    let previous_not_after = previous.as_ref().and_then(|_| {
        annotations
            .get(PREVIOUS_CA_NOT_AFTER_ANNOTATION)
            .and_then(|s| s.parse().ok())
    });
    Some(Ca {
        record: CaRecord {
            fingerprint: pki::fingerprint(&pem.cert),
            validity,
            since,
            previous_not_after,
        },
        pem,
        previous: previous_not_after.and(previous),
    })
}

fn read_leaf(secret: &Secret, bundle: &str) -> Option<(LeafRecord, KeyPairPem)> {
    let annotations = annotations(secret);
    let pem = KeyPairPem {
        cert: text(secret, CERT_KEY)?,
        key: text(secret, KEY_KEY)?,
    };
    let record = LeafRecord {
        validity: Validity::from_annotations(&annotations)?,
        issuer: annotations.get(ISSUER_ANNOTATION)?.clone(),
        trusts_current_bundle: text(secret, CA_CERT_KEY).as_deref() == Some(bundle),
    };
    Some((record, pem))
}

fn data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

async fn write(api: &Api<Secret>, mut secret: Secret) -> Result<()> {
    let name = secret
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    secret.metadata.managed_fields = None;
    secret.metadata.resource_version = None;
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": secret.metadata,
            "type": secret.type_,
            "data": secret.data,
        })),
    )
    .await
    .map_err(|source| Error::Child {
        action: "applying",
        kind: "Secret".to_owned(),
        name,
        source: Box::new(source),
    })?;
    Ok(())
}

fn ca_secret(cluster: &Cluster, ca: &Ca) -> Result<Secret> {
    let mut metadata = child_metadata(cluster, cluster.ca_secret_name()?)?;
    let mut notes = ca.record.validity.annotations();
    notes.insert(CA_SINCE_ANNOTATION.to_owned(), ca.record.since.to_string());
    let mut entries = vec![
        (CA_CERT_KEY, ca.pem.cert.as_str()),
        (CA_KEY_KEY, ca.pem.key.as_str()),
    ];
    if let (Some(previous), Some(expiry)) = (&ca.previous, ca.record.previous_not_after) {
        entries.push((PREVIOUS_CA_CERT_KEY, previous.as_str()));
        notes.insert(
            PREVIOUS_CA_NOT_AFTER_ANNOTATION.to_owned(),
            expiry.to_string(),
        );
    }
    metadata.annotations = Some(notes);
    Ok(Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(data(&entries)),
        ..Secret::default()
    })
}

fn leaf_secret(
    cluster: &Cluster,
    leaf: Leaf,
    pem: &KeyPairPem,
    validity: Validity,
    issuer: &str,
    bundle: &str,
) -> Result<Secret> {
    let mut metadata = child_metadata(cluster, leaf.secret_name(cluster)?)?;
    let mut notes = validity.annotations();
    notes.insert(ISSUER_ANNOTATION.to_owned(), issuer.to_owned());
    metadata.annotations = Some(notes);
    Ok(Secret {
        metadata,
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data(&[
            (CERT_KEY, pem.cert.as_str()),
            (KEY_KEY, pem.key.as_str()),
            (CA_CERT_KEY, bundle),
        ])),
        ..Secret::default()
    })
}

async fn record(ctx: &Context, cluster: &Cluster, note: String) {
    tracing::info!(cluster = cluster.metadata.name.as_deref(), %note, "certificates");
    let event = Event {
        type_: EventType::Normal,
        reason: Reason::CertificateIssued.as_str().to_owned(),
        note: Some(note),
        action: "IssueCertificate".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(%error, "recording an event");
    }
}

/// Makes, renews or rotates what the operator issues itself for `cluster`, as of `now`.
pub async fn issue(
    cluster: &Cluster,
    ctx: &Context,
    namespace: &str,
    now: SystemTime,
) -> Result<()> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let now_s = seconds(now);
    let name = cluster.name()?;
    let ca_name = cluster.ca_secret_name()?;
    let mut ca = secrets.get_opt(&ca_name).await?.as_ref().and_then(read_ca);
    if let Some(step) = ca_step(ca.as_ref().map(|c| &c.record), now_s) {
        let next = match (step, ca.take()) {
            (CaStep::DropPrevious, Some(mut current)) => {
                current.previous = None;
                current.record.previous_not_after = None;
                current
            }
            (step, old) => {
                let made = pki::new_ca(&format!("{name}-ca"), now, pki::CA_LIFETIME)?;
                // A rotated CA stays trusted beside the new one until it expires.
                let (previous, previous_not_after) = match (step, old) {
                    (CaStep::Rotate, Some(old)) => {
                        (Some(old.pem.cert), Some(old.record.validity.not_after))
                    }
                    _ => (None, None),
                };
                Ca {
                    record: CaRecord {
                        fingerprint: pki::fingerprint(&made.pem.cert),
                        validity: made.validity,
                        since: now_s,
                        previous_not_after,
                    },
                    pem: made.pem,
                    previous,
                }
            }
        };
        write(&secrets, ca_secret(cluster, &next)?).await?;
        let note = match step {
            CaStep::Create => "made the cluster CA".to_owned(),
            CaStep::Rotate => {
                "renewed the cluster CA; the previous one stays trusted until it expires".to_owned()
            }
            CaStep::DropPrevious => {
                "the previous cluster CA expired and is no longer trusted".to_owned()
            }
        };
        record(ctx, cluster, note).await;
        ca = Some(next);
    }
    let Some(ca) = ca else {
        return Err(Error::Certificate(
            "the cluster CA could not be made".to_owned(),
        ));
    };
    let bundle = ca.bundle();
    for leaf in [Leaf::Node, Leaf::Operator] {
        let secret_name = leaf.secret_name(cluster)?;
        let live = secrets.get_opt(&secret_name).await?;
        let found = live.as_ref().and_then(|s| read_leaf(s, &bundle));
        match leaf_step(found.as_ref().map(|(r, _)| r), &ca.record, now_s) {
            Some(LeafStep::Issue(reason)) => {
                let made = pki::issue(&ca.pem, &leaf.request(cluster)?, now)?;
                let secret = leaf_secret(
                    cluster,
                    leaf,
                    &made.pem,
                    made.validity,
                    &ca.record.fingerprint,
                    &bundle,
                )?;
                write(&secrets, secret).await?;
                record(
                    ctx,
                    cluster,
                    format!(
                        "issued the {} into Secret {secret_name} ({})",
                        leaf.what(),
                        reason.as_str()
                    ),
                )
                .await;
            }
            Some(LeafStep::UpdateTrust) => {
                if let Some((record, pem)) = &found {
                    let secret =
                        leaf_secret(cluster, leaf, pem, record.validity, &record.issuer, &bundle)?;
                    write(&secrets, secret).await?;
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// The operator's TLS settings for calls to `cluster`, read from `<cluster>-operator-tls`;
/// `None` while the Secret is not issued yet.
pub async fn client_tls(
    cluster: &Cluster,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<ClientTls>> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let Some(secret) = secrets
        .get_opt(&cluster.operator_tls_secret_name()?)
        .await?
    else {
        return Ok(None);
    };
    let bytes = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty())
    };
    let (Some(ca), Some(cert), Some(key)) = (bytes(CA_CERT_KEY), bytes(CERT_KEY), bytes(KEY_KEY))
    else {
        return Ok(None);
    };
    Ok(Some(ClientTls {
        ca_pem: ca,
        identity: Some((cert, key)),
        // Every node certificate names the client Service; the pods are dialled by their own
        // names, or through an address map that the names do not survive.
        domain: Some(cluster.client_service_dns_name()?),
    }))
}

/// Gives the admin client what it needs to call `cluster`: its client certificate when the
/// cluster serves TLS, plaintext otherwise.
pub async fn prepare_admin(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<()> {
    let tls = if cluster.tls_enabled() {
        client_tls(cluster, ctx, namespace).await?
    } else {
        None
    };
    ctx.admin.use_client_tls(cluster, tls);
    Ok(())
}

/// A cluster's certificates: issued or renewed (unless cert-manager does that, or the
/// cluster is paused), then handed to the admin client.
pub async fn reconcile(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<()> {
    if cluster.tls_enabled() && cluster.tls_issuer().is_none() && !cluster.spec.paused {
        issue(cluster, ctx, namespace, SystemTime::now()).await?;
    }
    prepare_admin(cluster, ctx, namespace).await
}
