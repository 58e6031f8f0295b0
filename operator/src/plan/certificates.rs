//! When the operator makes, renews and replaces the certificates it issues itself: the
//! cluster CA and the certificates it signs (the nodes' and the operator's own), from what
//! their Secrets record and the time. Pure: no I/O, no clock.
//!
//! - Every certificate is renewed at two thirds of its lifetime, long before it expires; the
//!   nodes read their files again when the kubelet refreshes the mounted Secret, so a renewal
//!   restarts nothing.
//! - The CA (ten years) is renewed the same way, without breaking trust: the new CA joins the
//!   trust bundle of every Secret at once, next to the old one, and certificates signed by the
//!   new CA are issued only [`TRUST_PROPAGATION`] later, once every pod has the bundle
//!   trusting it. The old CA stays in the bundle until it expires, so that a pod still
//!   presenting a certificate it signed is trusted meanwhile.

use std::collections::BTreeMap;
use std::time::Duration;

/// Annotation: start of a certificate's validity (seconds since the Unix epoch).
pub const NOT_BEFORE_ANNOTATION: &str = "flotilla.dev/not-before";
/// Annotation: end of a certificate's validity (seconds since the Unix epoch).
pub const NOT_AFTER_ANNOTATION: &str = "flotilla.dev/not-after";
/// Annotation: fingerprint of the CA that signed a certificate.
pub const ISSUER_ANNOTATION: &str = "flotilla.dev/issuer";
/// Annotation of the CA Secret: when its CA became the current one.
pub const CA_SINCE_ANNOTATION: &str = "flotilla.dev/ca-since";
/// Annotation of the CA Secret: end of the validity of the previous CA, still trusted.
pub const PREVIOUS_CA_NOT_AFTER_ANNOTATION: &str = "flotilla.dev/previous-ca-not-after";

/// How long a changed Secret takes to reach every pod that mounts it (the kubelet's sync
/// period and Secret cache, with a margin): certificates of a new CA are issued only this
/// long after the CA joined the trust bundle.
pub const TRUST_PROPAGATION: Duration = Duration::from_secs(300);

/// When a certificate is valid, in seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

impl Validity {
    /// When the certificate is to be renewed: at two thirds of its lifetime.
    pub fn renew_at(&self) -> u64 {
        let lifetime = self.not_after.saturating_sub(self.not_before);
        self.not_before.saturating_add(lifetime / 3 * 2)
    }

    /// Whether the certificate is to be renewed at `now`.
    pub fn needs_renewal(&self, now: u64) -> bool {
        now >= self.renew_at()
    }

    /// Reads the validity a Secret's annotations record.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Option<Validity> {
        let number = |key: &str| annotations.get(key)?.parse::<u64>().ok();
        Some(Validity {
            not_before: number(NOT_BEFORE_ANNOTATION)?,
            not_after: number(NOT_AFTER_ANNOTATION)?,
        })
    }

    /// The annotations recording this validity.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                NOT_BEFORE_ANNOTATION.to_owned(),
                self.not_before.to_string(),
            ),
            (NOT_AFTER_ANNOTATION.to_owned(), self.not_after.to_string()),
        ])
    }
}

/// The cluster CA, as its Secret records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaRecord {
    /// Fingerprint of the current CA certificate.
    pub fingerprint: String,
    pub validity: Validity,
    /// When it became the current CA (and joined the trust bundles).
    pub since: u64,
    /// End of validity of the previous CA, while it is still trusted.
    pub previous_not_after: Option<u64>,
}

/// What to do with the CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaStep {
    /// There is none (or it cannot be read): make one.
    Create,
    /// It reached two thirds of its lifetime: make a new one, keeping the old one trusted.
    Rotate,
    /// The previous CA expired: stop trusting it.
    DropPrevious,
}

/// The step the CA needs at `now`, if any.
pub fn ca_step(ca: Option<&CaRecord>, now: u64) -> Option<CaStep> {
    let Some(ca) = ca else {
        return Some(CaStep::Create);
    };
    if ca.validity.needs_renewal(now) {
        return Some(CaStep::Rotate);
    }
    match ca.previous_not_after {
        Some(expiry) if now >= expiry => Some(CaStep::DropPrevious),
        _ => None,
    }
}

/// A certificate the CA signed, as its Secret records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRecord {
    pub validity: Validity,
    /// Fingerprint of the CA that signed it.
    pub issuer: String,
    /// Whether the Secret's trust bundle is the CA's current one.
    pub trusts_current_bundle: bool,
}

/// Why a certificate is issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// There is none (or it cannot be read).
    Missing,
    /// It reached two thirds of its lifetime.
    Renewal,
    /// It was signed by a CA that is no longer the current one.
    NewCa,
}

impl IssueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "new",
            Self::Renewal => "renewal",
            Self::NewCa => "new CA",
        }
    }
}

/// What to do with a certificate the CA signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafStep {
    /// Issue a new certificate (with the current trust bundle).
    Issue(IssueReason),
    /// Keep the certificate, replace the trust bundle beside it.
    UpdateTrust,
}

/// The step a certificate needs at `now`, under `ca`, if any.
pub fn leaf_step(leaf: Option<&LeafRecord>, ca: &CaRecord, now: u64) -> Option<LeafStep> {
    let Some(leaf) = leaf else {
        return Some(LeafStep::Issue(IssueReason::Missing));
    };
    let renew = leaf.validity.needs_renewal(now);
    if leaf.issuer != ca.fingerprint {
        if trust_has_propagated(ca, now) {
            let reason = if renew {
                IssueReason::Renewal
            } else {
                IssueReason::NewCa
            };
            return Some(LeafStep::Issue(reason));
        }
        // Not every pod trusts the new CA yet: a certificate it signed would be refused.
        // One due for renewal still has a third of its lifetime left; it waits.
    } else if renew {
        return Some(LeafStep::Issue(IssueReason::Renewal));
    }
    (!leaf.trusts_current_bundle).then_some(LeafStep::UpdateTrust)
}

/// Whether every pod trusts the current CA by now.
fn trust_has_propagated(ca: &CaRecord, now: u64) -> bool {
    now >= ca.since.saturating_add(TRUST_PROPAGATION.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600;

    fn ca(since: u64) -> CaRecord {
        CaRecord {
            fingerprint: "ca-1".into(),
            validity: Validity {
                not_before: since,
                not_after: since + 3000 * DAY,
            },
            since,
            previous_not_after: None,
        }
    }

    fn leaf(not_before: u64, lifetime: u64, issuer: &str) -> LeafRecord {
        LeafRecord {
            validity: Validity {
                not_before,
                not_after: not_before + lifetime,
            },
            issuer: issuer.into(),
            trusts_current_bundle: true,
        }
    }

    #[test]
    fn renewal_comes_at_two_thirds_of_the_lifetime() {
        let v = Validity {
            not_before: 1000,
            not_after: 1000 + 90 * DAY,
        };
        assert_eq!(v.renew_at(), 1000 + 60 * DAY);
        assert!(!v.needs_renewal(1000 + 60 * DAY - 1));
        assert!(v.needs_renewal(1000 + 60 * DAY));
    }

    #[test]
    fn a_missing_ca_is_created_and_a_young_one_left_alone() {
        assert_eq!(ca_step(None, 0), Some(CaStep::Create));
        assert_eq!(ca_step(Some(&ca(0)), 1000 * DAY), None);
    }

    #[test]
    fn the_ca_is_rotated_at_two_thirds_and_the_old_one_dropped_once_expired() {
        assert_eq!(ca_step(Some(&ca(0)), 2000 * DAY), Some(CaStep::Rotate));
        let mut rotated = ca(2000 * DAY);
        rotated.previous_not_after = Some(3000 * DAY);
        assert_eq!(ca_step(Some(&rotated), 2500 * DAY), None);
        assert_eq!(
            ca_step(Some(&rotated), 3000 * DAY),
            Some(CaStep::DropPrevious)
        );
    }

    #[test]
    fn a_missing_certificate_is_issued() {
        assert_eq!(
            leaf_step(None, &ca(0), 10),
            Some(LeafStep::Issue(IssueReason::Missing))
        );
    }

    #[test]
    fn a_certificate_is_renewed_at_two_thirds_of_its_lifetime() {
        let cert = leaf(DAY, 90 * DAY, "ca-1");
        assert_eq!(leaf_step(Some(&cert), &ca(0), 60 * DAY), None);
        assert_eq!(
            leaf_step(Some(&cert), &ca(0), 61 * DAY),
            Some(LeafStep::Issue(IssueReason::Renewal))
        );
    }

    #[test]
    fn after_a_ca_rotation_the_bundle_changes_first_and_the_certificate_only_later() {
        let now = 2000 * DAY;
        let mut new_ca = ca(now);
        new_ca.fingerprint = "ca-2".into();
        new_ca.previous_not_after = Some(3000 * DAY);
        let mut cert = leaf(now - DAY, 90 * DAY, "ca-1");
        cert.trusts_current_bundle = false;
        // The bundle with both CAs goes out at once...
        assert_eq!(
            leaf_step(Some(&cert), &new_ca, now),
            Some(LeafStep::UpdateTrust)
        );
        cert.trusts_current_bundle = true;
        assert_eq!(leaf_step(Some(&cert), &new_ca, now + 60), None);
        // ...and a certificate of the new CA once every pod trusts it.
        let later = now + TRUST_PROPAGATION.as_secs();
        assert_eq!(
            leaf_step(Some(&cert), &new_ca, later),
            Some(LeafStep::Issue(IssueReason::NewCa))
        );
    }

    #[test]
    fn a_certificate_due_right_after_a_ca_rotation_waits_until_the_new_ca_is_trusted() {
        let now = 2000 * DAY;
        let mut new_ca = ca(now);
        new_ca.fingerprint = "ca-2".into();
        let cert = leaf(now - 61 * DAY, 90 * DAY, "ca-1");
        assert_eq!(leaf_step(Some(&cert), &new_ca, now + 10), None);
        assert_eq!(
            leaf_step(Some(&cert), &new_ca, now + TRUST_PROPAGATION.as_secs()),
            Some(LeafStep::Issue(IssueReason::Renewal))
        );
    }

    #[test]
    fn a_certificate_of_the_current_ca_with_its_bundle_needs_nothing() {
        let cert = leaf(DAY, 90 * DAY, "ca-1");
        assert_eq!(leaf_step(Some(&cert), &ca(0), 2 * DAY), None);
    }

    #[test]
    fn validity_round_trips_through_annotations() {
        let v = Validity {
            not_before: 5,
            not_after: 7,
        };
        assert_eq!(Validity::from_annotations(&v.annotations()), Some(v));
        assert_eq!(Validity::from_annotations(&BTreeMap::new()), None);
    }
}
