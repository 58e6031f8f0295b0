//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator processes
//! never act at once (the chart runs two replicas and rolls them one at a time).
//!
//! It works as client-go's leader election does. A candidate takes a free lease with a
//! write conditional on the resourceVersion it read (a concurrent taker gets a conflict);
//! the holder renews it every `retry_period` and steps down when it could not renew for
//! `renew_deadline`, which is shorter than the lease's duration. A standby judges the
//! lease by its own monotonic clock only ([`record`]): it takes over once it has seen the
//! record unchanged for a whole lease duration, never by comparing the holder's
//! `renewTime` with its own wall clock, so that clock skew between the operator's
//! machines can neither hand the lease to a second process while its holder renews it
//! nor keep a standby waiting long after the holder died. The times written into the
//! lease (`acquireTime`, `renewTime`) are for people and tools to read.
//!
//! Around it: a process that stops (SIGTERM during a rolling update) releases the lease,
//! and a standby that sees the lease released takes it at its next look rather than a
//! lease duration later, so that reconciling has no gap.

mod record;

use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use record::{Observer, Verdict};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a lease lasts and how its holder and the standbys act on it.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The lease's `leaseDurationSeconds` (whole seconds, at least one): how long a
    /// standby waits, by its own clock, after it last saw the lease change.
    pub lease_duration: Duration,
    /// How long the holder goes on trying to renew before it steps down; shorter than
    /// the lease duration, so that it has stopped before any standby may take over.
    pub renew_deadline: Duration,
    /// How often the holder renews and a standby reads the lease.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// A 15 s lease renewed every 2 s, given up after 10 s without a renewal (client-go's).
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// The timing made consistent: a whole number of seconds of lease, a renew deadline
    /// below it and a retry period below the deadline.
    fn sane(self) -> Self {
        let lease_duration = Duration::from_secs(self.lease_duration.as_secs().max(1));
        let renew_deadline = self
            .renew_deadline
            .min(lease_duration.mul_f64(0.9))
            .max(Duration::from_millis(10));
        let retry_period = self
            .retry_period
            .min(renew_deadline / 2)
            .max(Duration::from_millis(5));
        Self {
            lease_duration,
            renew_deadline,
            retry_period,
        }
    }
}

/// The wall clock whose time the lease records for people and tools to read; no
/// decision is ever taken on it.
pub type WallClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// One process's candidacy for the lease.
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    wall_clock: WallClock,
}

/// The lease, held by this process until [`Leadership::release`] or until lost.
pub struct Leadership {
    election: LeaseWriter,
    /// When the last renewal that succeeded was sent, by the monotonic clock.
    renewed: Mutex<Instant>,
}

/// What a holder needs to renew and release the lease.
struct LeaseWriter {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    wall_clock: WallClock,
}

impl Election {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing: Timing::default(),
            wall_clock: Arc::new(Timestamp::now),
        }
    }

    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing.sane();
        self
    }

    /// Writes the times of `clock` into the lease instead of the system's.
    pub fn with_wall_clock(mut self, clock: WallClock) -> Self {
        self.wall_clock = clock;
        self
    }

    /// Runs `work` while this process holds the lease: waits for the lease, then runs
    /// `work` until it ends, the lease is lost or `shutdown` resolves. On shutdown `work`
    /// is stopped first and the lease released after, so that a standby takes over at
    /// once and the two never act together. A lost lease is not released (another
    /// process holds it, or it could not be renewed) and ends the run with an error.
    pub async fn lead(
        &self,
        work: impl Future<Output = Result<()>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        tracing::info!(lease = %self.name, identity = %self.identity, "waiting for the leader lease");
        let leadership = tokio::select! {
            leadership = self.acquire() => leadership,
            () = &mut shutdown => return Ok(()),
        };
        tracing::info!(lease = %self.name, identity = %self.identity, "leading");
        let outcome = tokio::select! {
            result = work => result,
            error = leadership.lost() => return Err(error),
            () = shutdown => Ok(()),
        };
        match leadership.release().await {
            Ok(()) => tracing::info!(lease = %self.name, "released the leader lease"),
            Err(error) => tracing::warn!(%error, lease = %self.name, "releasing the leader lease"),
        }
        outcome
    }

    /// Waits until this process holds the lease. Failures to reach the API while waiting
    /// are logged and retried: a standby does no harm by waiting longer.
    pub async fn acquire(&self) -> Leadership {
        let mut observer = Observer::default();
        let mut last_holder = None;
        loop {
            let attempt = Instant::now();
            match self.try_acquire(&mut observer, attempt).await {
                Ok(Ok(())) => {
                    return Leadership {
                        election: self.writer(),
                        renewed: Mutex::new(attempt),
                    };
                }
                Ok(Err(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.name, %holder, "the leader lease is held");
                        last_holder = Some(holder);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, lease = %self.name, "trying for the leader lease");
                }
            }
            tokio::time::sleep_until(attempt + self.timing.retry_period).await;
        }
    }

    /// Reads the lease and takes it if it is free: `Ok(Err(holder))` while another
    /// process holds it (or won the race to take it).
    async fn try_acquire(
        &self,
        observer: &mut Observer,
        now: Instant,
    ) -> std::result::Result<std::result::Result<(), String>, kube::Error> {
        let lease = self.api.get_opt(&self.name).await?;
        let verdict = observer.observe(
            lease.as_ref(),
            &self.identity,
            now,
            self.timing.lease_duration,
        );
        if let Verdict::Held { holder, .. } = verdict {
            return Ok(Err(holder));
        }
        let taken = self.writer().taken(lease.as_ref());
        let written = match lease {
            None => self.api.create(&PostParams::default(), &taken).await,
            Some(_) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &taken)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(Ok(())),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Err("a candidate that took it first".to_owned()))
            }
            Err(error) => Err(error),
        }
    }

    fn writer(&self) -> LeaseWriter {
        LeaseWriter {
            api: self.api.clone(),
            name: self.name.clone(),
            identity: self.identity.clone(),
            timing: self.timing,
            wall_clock: self.wall_clock.clone(),
        }
    }
}

/// How a renewal went.
enum Renewal {
    Renewed,
    /// Another process holds the lease now.
    Taken,
}

impl LeaseWriter {
    fn now(&self) -> MicroTime {
        MicroTime((self.wall_clock)())
    }

    /// The lease as this process takes (or keeps) it, conditional on the version read.
    fn taken(&self, old: Option<&Lease>) -> Lease {
        let old_spec = old.and_then(|l| l.spec.clone()).unwrap_or_default();
        let ours = old_spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let now = self.now();
        let seconds = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: old.and_then(|l| l.metadata.resource_version.clone()),
                ..old.map(|l| l.metadata.clone()).unwrap_or_default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: if ours {
                    old_spec.acquire_time.clone()
                } else {
                    Some(now.clone())
                },
                renew_time: Some(now),
                lease_transitions: Some(if ours {
                    old_spec.lease_transitions.unwrap_or(1)
                } else {
                    old_spec.lease_transitions.unwrap_or(0) + 1
                }),
                ..old_spec
            }),
        }
    }

    async fn renew(&self) -> std::result::Result<Renewal, kube::Error> {
        let lease = self.api.get(&self.name).await?;
        if holder(&lease) != Some(self.identity.as_str()) {
            return Ok(Renewal::Taken);
        }
        let renewed = self.taken(Some(&lease));
        self.api
            .replace(&self.name, &PostParams::default(), &renewed)
            .await?;
        Ok(Renewal::Renewed)
    }
}

impl Leadership {
    /// Keeps the lease renewed; returns why it is no longer held: taken by another
    /// process ([`Error::LeadershipLost`]), or not renewed within the renew deadline
    /// ([`Error::LeaseNotRenewed`]; the holder then steps down rather than act on a lease that a
    /// standby may take once its duration has passed).
    pub async fn lost(&self) -> Error {
        let timing = self.election.timing;
        let last_renewal = || {
            *self
                .renewed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let mut last_error = None;
        let mut next = last_renewal() + timing.retry_period;
        loop {
            let deadline = last_renewal() + timing.renew_deadline;
            tokio::time::sleep_until(next.min(deadline)).await;
            let attempt = Instant::now();
            next = attempt + timing.retry_period;
            if attempt >= deadline {
                return Error::LeaseNotRenewed {
                    within: timing.renew_deadline,
                    last_error: last_error.map(Box::new),
                };
            }
            // A request that hangs must not keep this process acting past the deadline.
            match tokio::time::timeout_at(deadline, self.election.renew()).await {
                Ok(Ok(Renewal::Renewed)) => {
                    *self
                        .renewed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = attempt;
                    last_error = None;
                }
                Ok(Ok(Renewal::Taken)) => return Error::LeadershipLost,
                Ok(Err(error)) => {
                    tracing::warn!(%error, lease = %self.election.name, "renewing the leader lease");
                    last_error = Some(error);
                }
                Err(_) => {}
            }
        }
    }

    /// Gives the lease up so that a standby takes it over at once (on shutdown).
    pub async fn release(self) -> Result<()> {
        let writer = &self.election;
        let lease = writer.api.get(&writer.name).await?;
        if holder(&lease) != Some(writer.identity.as_str()) {
            return Ok(());
        }
        let mut released = lease;
        if let Some(spec) = released.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = Some(writer.now());
        }
        writer
            .api
            .replace(&writer.name, &PostParams::default(), &released)
            .await?;
        Ok(())
    }
}

/// The identity holding the lease, if any.
fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()?
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests;
