//! Leader election with a `coordination.k8s.io/v1` Lease, so that two operator
//! processes never act at once (for example while a Deployment rolls).
//!
//! The holder renews the lease well within its duration; another process takes it over
//! only after it expired. Every write carries the resourceVersion it read, so two
//! contenders cannot both win.

use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;

/// A lease that one process at a time holds.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// How often the holder renews: a third of the lease duration.
    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    /// Acquires the lease if it is free or expired, renews it if held; returns whether
    /// this process holds it now.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool> {
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_loss(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let held_by_us = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !held_by_us {
            let duration = spec
                .lease_duration_seconds
                .map_or(self.duration.as_secs(), |s| u64::try_from(s).unwrap_or(0));
            let expires = spec.renew_time.as_ref().and_then(|t| {
                let lasts = SignedDuration::from_secs(i64::try_from(duration).unwrap_or(i64::MAX));
                t.0.checked_add(lasts).ok()
            });
            if expires.is_some_and(|expires| expires > now) {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        conflict_is_loss(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            if self.try_acquire_or_renew(Timestamp::now()).await? {
                return Ok(());
            }
            tokio::time::sleep(self.renew_interval()).await;
        }
    }

    /// Keeps renewing the lease; returns when it could not be renewed (lost, or the API
    /// unreachable for longer than the lease lasts).
    pub async fn hold(&self) -> Error {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_interval()).await;
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return Error::LeadershipLost,
                Err(error) if last_renewed.elapsed() >= self.duration => return error,
                Err(error) => tracing::warn!(%error, "renewing the leader lease"),
            }
        }
    }
}

/// A write that lost a race (409 Conflict) means another process holds the lease.
fn conflict_is_loss(result: Result<Lease, kube::Error>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::fake_api::FakeApi;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn lock(api: &FakeApi, identity: &str) -> LeaseLock {
        LeaseLock::new(
            Api::namespaced(api.client(), "ops"),
            "flotilla-operator",
            identity,
            Duration::from_secs(15),
        )
    }

    async fn holds(lock: &LeaseLock, seconds: i64) -> bool {
        match lock.try_acquire_or_renew(at(seconds)).await {
            Ok(held) => held,
            Err(e) => panic!("{e}"),
        }
    }

    fn holder(api: &FakeApi) -> Option<String> {
        api.get::<Lease>("ops", "flotilla-operator")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }

    #[tokio::test]
    async fn the_first_contender_takes_a_free_lease_and_keeps_it_by_renewing() {
        let api = FakeApi::default();
        let (a, b) = (lock(&api, "a"), lock(&api, "b"));
        assert!(holds(&a, 100).await);
        assert!(!holds(&b, 101).await);
        assert!(holds(&a, 110).await);
        assert!(!holds(&b, 120).await, "renewed at 110, valid until 125");
        assert_eq!(holder(&api).as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over() {
        let api = FakeApi::default();
        let (a, b) = (lock(&api, "a"), lock(&api, "b"));
        assert!(holds(&a, 100).await);
        assert!(holds(&b, 116).await);
        assert_eq!(holder(&api).as_deref(), Some("b"));
        let transitions = api
            .get::<Lease>("ops", "flotilla-operator")
            .and_then(|l| l.spec)
            .and_then(|s| s.lease_transitions);
        assert_eq!(transitions, Some(1));
        assert!(!holds(&a, 117).await, "the old holder lost it");
    }

    #[tokio::test]
    async fn a_write_based_on_a_stale_read_loses() {
        let api = FakeApi::default();
        let a = lock(&api, "a");
        assert!(holds(&a, 100).await);
        // Another process renews between this process's read and write.
        api.bump_resource_version_on_next_write::<Lease>("ops", "flotilla-operator");
        assert!(!holds(&a, 105).await);
    }
}
