//! How a candidate judges a lease it does not hold, as client-go's leader election does:
//! by its own monotonic clock since it last saw the lease record change. The holder's
//! `renewTime` is never compared with the local wall clock, so that clocks that disagree
//! between machines (by seconds or by hours) neither let a standby take a lease its
//! holder still renews nor keep it waiting long after the renewals stopped.
//!
//! Pure: the caller reads the lease and the clock.

use k8s_openapi::api::coordination::v1::Lease;
use std::time::Duration;
use tokio::time::Instant;

/// The parts of a Lease whose change shows that its holder is alive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<String>,
    acquire_time: Option<String>,
    transitions: Option<i32>,
    duration_seconds: Option<i32>,
    resource_version: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        let time = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>| {
            t.map(|t| t.0.to_string())
        };
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: time(spec.renew_time),
            acquire_time: time(spec.acquire_time),
            transitions: spec.lease_transitions,
            duration_seconds: spec.lease_duration_seconds,
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What the lease means for a candidate now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No lease yet, no holder (released), or a holder unseen to renew it for a whole
    /// lease duration: the candidate may take it.
    Free,
    /// The candidate holds it (a restarted process with the same identity included).
    Mine,
    /// Another holder, alive as far as the candidate can tell, at least until `until`.
    Held { holder: String, until: Instant },
}

/// What a candidate has seen of the lease: the record it last saw and when it first saw
/// it so, by its own monotonic clock.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(Record, Instant)>,
}

impl Observer {
    /// Judges `lease` (read just now, at `now`) for `identity`; `duration` is the lease
    /// duration when the record names none.
    pub fn observe(
        &mut self,
        lease: Option<&Lease>,
        identity: &str,
        now: Instant,
        duration: Duration,
    ) -> Verdict {
        let Some(lease) = lease else {
            self.seen = None;
            return Verdict::Free;
        };
        let record = Record::of(lease);
        let since = match &self.seen {
            Some((seen, since)) if *seen == record => *since,
            _ => now,
        };
        self.seen = Some((record.clone(), since));
        let Some(holder) = record.holder else {
            return Verdict::Free;
        };
        if holder == identity {
            return Verdict::Mine;
        }
        let duration = record
            .duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(duration, Duration::from_secs);
        let until = since + duration;
        if now < until {
            Verdict::Held { holder, until }
        } else {
            Verdict::Free
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    const DURATION: Duration = Duration::from_secs(15);

    fn lease(holder: Option<&str>, renewed: Timestamp, version: u32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(version.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    fn hours(h: i64) -> Timestamp {
        Timestamp::now()
            .checked_add(SignedDuration::from_hours(h))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn a_lease_renewed_within_its_duration_stays_held_whatever_its_renew_time_says() {
        let mut observer = Observer::default();
        let start = Instant::now();
        // A renew time a day old, by this machine's clock: it does not matter.
        for (i, step) in (0..10).map(|i| (i, start + Duration::from_secs(10 * i))) {
            let version = u32::try_from(i).unwrap_or_default();
            let verdict = observer.observe(
                Some(&lease(Some("a"), hours(-24), version)),
                "b",
                step,
                DURATION,
            );
            assert!(
                matches!(verdict, Verdict::Held { ref holder, .. } if holder == "a"),
                "{verdict:?}"
            );
        }
    }

    #[test]
    fn a_lease_unchanged_for_its_duration_is_free_whatever_its_renew_time_says() {
        let mut observer = Observer::default();
        let start = Instant::now();
        // A renew time a day ahead of this machine's clock: it does not matter.
        let stale = lease(Some("a"), hours(24), 7);
        assert_eq!(
            observer.observe(Some(&stale), "b", start, DURATION),
            Verdict::Held {
                holder: "a".to_owned(),
                until: start + DURATION
            }
        );
        let almost = start + DURATION - Duration::from_millis(1);
        assert!(matches!(
            observer.observe(Some(&stale), "b", almost, DURATION),
            Verdict::Held { .. }
        ));
        assert_eq!(
            observer.observe(Some(&stale), "b", start + DURATION, DURATION),
            Verdict::Free
        );
    }

    #[test]
    fn a_released_or_missing_lease_is_free_and_one_held_by_this_identity_is_mine() {
        let mut observer = Observer::default();
        let now = Instant::now();
        assert_eq!(observer.observe(None, "b", now, DURATION), Verdict::Free);
        let released = lease(None, Timestamp::now(), 3);
        assert_eq!(
            observer.observe(Some(&released), "b", now, DURATION),
            Verdict::Free
        );
        let mine = lease(Some("b"), Timestamp::now(), 4);
        assert_eq!(
            observer.observe(Some(&mine), "b", now, DURATION),
            Verdict::Mine
        );
    }
}
