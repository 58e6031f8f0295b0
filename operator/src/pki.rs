//! The certificates the operator issues itself (when a Cluster names no cert-manager
//! issuer): a cluster CA, and certificates it signs for the nodes and for the operator's
//! own calls, all as PEM. When to make or renew which is decided in
//! [`crate::plan::certificates`]; this module only makes them.

use crate::error::{Error, Result};
use crate::plan::certificates::Validity;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lifetime of a cluster CA the operator makes: ten years. It is renewed at two thirds of
/// it, and the old one stays trusted until it expires.
pub const CA_LIFETIME: Duration = Duration::from_secs(3650 * 24 * 3600);
/// How far before "now" a certificate becomes valid, for clocks that lag the operator's.
const BACKDATE: Duration = Duration::from_secs(300);

/// A certificate and its private key, as PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPairPem {
    pub cert: String,
    pub key: String,
}

/// A certificate just made, with its validity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub pem: KeyPairPem,
    pub validity: Validity,
}

/// What a certificate is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A node: served on every port and presented to peers (server and client auth).
    Node,
    /// A client only (the operator's admin calls).
    Client,
}

/// What to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRequest {
    /// Subject common name (for a client, the user it authenticates as).
    pub common_name: String,
    /// DNS names it is valid for (wildcards allowed).
    pub dns_names: Vec<String>,
    pub usage: Usage,
    pub lifetime: Duration,
}

fn failed(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Certificate(format!("{what}: {e}"))
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn validity(now: SystemTime, lifetime: Duration) -> Validity {
    let now = seconds(now);
    Validity {
        not_before: now.saturating_sub(BACKDATE.as_secs()),
        not_after: now.saturating_add(lifetime.as_secs()),
    }
}

fn set_validity(params: &mut CertificateParams, validity: Validity) -> Result<()> {
    let at = |secs: u64| {
        let secs =
            i64::try_from(secs).map_err(|_| Error::Certificate("time out of range".into()))?;
        time::OffsetDateTime::from_unix_timestamp(secs)
            .map_err(|e| Error::Certificate(format!("time out of range: {e}")))
    };
    params.not_before = at(validity.not_before)?;
    params.not_after = at(validity.not_after)?;
    Ok(())
}

/// A new self-signed CA named `common_name`, valid from now for `lifetime`.
pub fn new_ca(common_name: &str, now: SystemTime, lifetime: Duration) -> Result<Issued> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed("CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let validity = validity(now, lifetime);
    set_validity(&mut params, validity)?;
    let key = KeyPair::generate().map_err(failed("CA key"))?;
    let key_pem = key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(params, key).map_err(failed("CA certificate"))?;
    Ok(Issued {
        pem: KeyPairPem {
            cert: ca.pem(),
            key: key_pem,
        },
        validity,
    })
}

/// A certificate for `request`, signed by `ca`, valid from now.
pub fn issue(ca: &KeyPairPem, request: &LeafRequest, now: SystemTime) -> Result<Issued> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(failed("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(failed("CA certificate"))?;
    let mut params = CertificateParams::new(request.dns_names.clone()).map_err(failed("names"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, request.common_name.as_str());
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match request.usage {
        Usage::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    let validity = validity(now, request.lifetime);
    set_validity(&mut params, validity)?;
    let key = KeyPair::generate().map_err(failed("key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(failed("certificate"))?;
    Ok(Issued {
        pem: KeyPairPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        },
        validity,
    })
}

/// A short, stable identity of a CA certificate (FNV-1a of its PEM), recorded on the
/// certificates it signed.
pub fn fingerprint(cert_pem: &str) -> String {
    let hash = cert_pem
        .trim()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// The CAs a node trusts, one PEM after the other: the current CA first.
pub fn bundle<'a>(cas: impl IntoIterator<Item = &'a str>) -> String {
    let mut bundle = String::new();
    for pem in cas {
        bundle.push_str(pem.trim_end());
        bundle.push('\n');
    }
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made<T>(result: Result<T>) -> T {
        match result {
            Ok(value) => value,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn a_leaf_is_valid_for_its_lifetime_from_a_little_before_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ca = made(new_ca("flotilla-ca", now, CA_LIFETIME));
        let request = LeafRequest {
            common_name: "node".into(),
            dns_names: vec!["*.db-peers.ns.svc".into(), "localhost".into()],
            usage: Usage::Node,
            lifetime: Duration::from_secs(3600),
        };
        let leaf = made(issue(&ca.pem, &request, now));
        assert_eq!(leaf.validity.not_before, 1_000_000 - 300);
        assert_eq!(leaf.validity.not_after, 1_000_000 + 3600);
        assert!(leaf.pem.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(leaf.pem.key.contains("PRIVATE KEY"));
        assert_ne!(fingerprint(&ca.pem.cert), fingerprint(&leaf.pem.cert));
    }

    #[test]
    fn a_bundle_holds_every_ca_in_order() {
        let bundle = bundle(["A\n", "B"]);
        assert_eq!(bundle, "A\nB\n");
    }
}
