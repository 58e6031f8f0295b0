//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator processes
//! never act at once (the chart runs two replicas and rolls them one at a time).
//!
//! The lease itself is kept by `kube-lease-manager`: it takes a free lease with a
//! server-side apply (a concurrent taker gets a conflict), renews it `grace` seconds before
//! it ends, and judges a held lease expired by the lease's own `renewTime` and
//! `leaseDurationSeconds`. That judgement reads the local clock against the holder's
//! renew time, so the holder renews with a grace of two thirds of the lease: a standby
//! whose clock runs up to that much ahead still finds the lease renewed before it ends.
//!
//! Around it, this module adds what the crate leaves to its caller: a process that stops
//! (SIGTERM during a rolling update) releases the lease, and a standby that sees the lease
//! released takes it at once rather than when the released lease would have ended, so
//! that reconciling has no gap. A holder steps down as soon as a renewal fails.

use crate::error::{Error, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseParams};
use std::time::Duration;

/// How long a lease lasts and how its holder and the standbys act on it.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The lease's `leaseDurationSeconds`.
    pub duration_seconds: u64,
    /// How long before the lease ends the holder renews it (at most `duration_seconds - 1`).
    pub grace_seconds: u64,
    /// How often a standby looks whether the holder released the lease.
    pub release_poll: Duration,
}

impl Default for Timing {
    /// A 15 s lease renewed every 5 s; standbys look every second.
    fn default() -> Self {
        Self {
            duration_seconds: 15,
            grace_seconds: 10,
            release_poll: Duration::from_secs(1),
        }
    }
}

/// One process's candidacy for the lease.
pub struct Election {
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    timing: Timing,
}

/// The lease, held by this process until [`Leadership::release`] or until lost.
pub struct Leadership {
    manager: LeaseManager,
}

impl Election {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing: Timing::default(),
        }
    }

    pub fn with_timing(mut self, timing: Timing) -> Self {
        // The crate refuses (panics on) a grace that is zero or not below the duration.
        let duration = timing.duration_seconds.max(2);
        self.timing = Timing {
            duration_seconds: duration,
            grace_seconds: timing.grace_seconds.clamp(1, duration - 1),
            release_poll: timing.release_poll,
        };
        self
    }

    /// Runs `work` while this process holds the lease: waits for the lease, then runs
    /// `work` until it ends, the lease is lost or `shutdown` resolves. On shutdown `work`
    /// is stopped first and the lease released after, so that a standby takes over at
    /// once and the two never act together. A lost lease is not released (another
    /// process holds it) and ends the run with [`Error::LeadershipLost`].
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
        loop {
            let manager = match self.manager().await {
                Ok(manager) => manager,
                Err(error) => {
                    tracing::warn!(%error, lease = %self.name, "reading the leader lease");
                    tokio::time::sleep(self.timing.release_poll).await;
                    continue;
                }
            };
            tokio::select! {
                biased;
                held = manager.changed() => match held {
                    Ok(true) => return Leadership { manager },
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, lease = %self.name, "trying for the leader lease");
                        tokio::time::sleep(self.timing.release_poll).await;
                    }
                },
                // The crate's standby sleeps until the lease it saw would end; a released
                // lease is free now, so a fresh manager (which reads it at once) takes it.
                () = self.released() => {
                    tracing::info!(lease = %self.name, "the leader lease was released");
                }
            }
        }
    }

    async fn manager(&self) -> Result<LeaseManager> {
        let params = LeaseParams::new(
            &self.identity,
            self.timing.duration_seconds,
            self.timing.grace_seconds,
        )
        .with_field_manager(format!("flotilla-operator-{}", self.identity));
        LeaseManagerBuilder::new(self.client.clone(), &self.name)
            .with_namespace(&self.namespace)
            .with_parameters(params)
            .build()
            .await
            .map_err(Error::from)
    }

    /// Returns once the lease has no holder (its holder released it, or it is gone).
    async fn released(&self) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let poll = self.timing.release_poll;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        loop {
            ticks.tick().await;
            match api.get_opt(&self.name).await {
                Ok(Some(lease)) if holder(&lease).is_some() => {}
                Ok(_) => return,
                Err(error) => tracing::debug!(%error, "reading the leader lease"),
            }
        }
    }
}

impl Leadership {
    /// Keeps the lease renewed; returns why it is no longer held: taken by another
    /// process, or a renewal that failed (the holder then steps down rather than act
    /// on a lease that may have ended).
    pub async fn lost(&self) -> Error {
        loop {
            match self.manager.changed().await {
                Ok(true) => {}
                Ok(false) => return Error::LeadershipLost,
                Err(error) => return error.into(),
            }
        }
    }

    /// Gives the lease up so that a standby takes it over at once (on shutdown).
    pub async fn release(self) -> Result<()> {
        self.manager.release().await.map_err(Error::from)
    }
}

/// The identity holding the lease, if any.
fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

#[cfg(test)]
mod tests;
