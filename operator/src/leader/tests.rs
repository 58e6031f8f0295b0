//! Leader election against the in-process fake API, on tokio's paused clock (time moves
//! only when every task waits), with the wall clocks of the candidates set apart by hours.

use super::*;
use flotilla_kubefake::FakeApi;
use k8s_openapi::jiff::SignedDuration;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::time::timeout;

const NAMESPACE: &str = "ops";
const NAME: &str = "flotilla-operator";
/// Far longer than any step of these tests takes when it passes (virtual time).
const PATIENCE: Duration = Duration::from_secs(600);
const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(15),
    renew_deadline: Duration::from_secs(10),
    retry_period: Duration::from_secs(2),
};

/// A candidate whose wall clock is `skew_hours` off the system's.
fn candidate(api: &FakeApi, identity: &str, skew_hours: i64) -> Election {
    let clock: WallClock = Arc::new(move || {
        Timestamp::now()
            .checked_add(SignedDuration::from_hours(skew_hours))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    });
    Election::new(api.client(), NAMESPACE, NAME, identity)
        .with_timing(TIMING)
        .with_wall_clock(clock)
}

fn spec(api: &FakeApi) -> LeaseSpec {
    api.get::<Lease>(NAMESPACE, NAME)
        .and_then(|lease| lease.spec)
        .unwrap_or_default()
}

async fn acquired(election: &Election) -> Leadership {
    match timeout(PATIENCE, election.acquire()).await {
        Ok(leadership) => leadership,
        Err(_) => panic!("{} never got the lease", election.identity),
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_candidate_creates_and_takes_a_free_lease() {
    let api = crate::crd::fixtures::fake_api();
    let _leadership = acquired(&candidate(&api, "a", 0)).await;
    let spec = spec(&api);
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(spec.renew_time.is_some() && spec.acquire_time.is_some());
}

/// The holder's clock is an hour behind and the standby's an hour ahead: by wall clocks
/// the holder's renewals look two hours old, yet the standby never takes the lease.
#[tokio::test(start_paused = true)]
async fn a_standby_whose_clock_is_far_ahead_never_takes_a_lease_being_renewed() {
    let api = crate::crd::fixtures::fake_api();
    let a = acquired(&candidate(&api, "a", -1)).await;
    let first_renewal = spec(&api).renew_time;
    let standby = candidate(&api, "b", 1);
    tokio::select! {
        lost = a.lost() => panic!("the holder lost its lease: {lost}"),
        _ = standby.acquire() => panic!("the standby took a lease its holder renews"),
        () = tokio::time::sleep(TIMING.lease_duration * 10) => {}
    }
    let spec = spec(&api);
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_ne!(spec.renew_time, first_renewal, "the holder renewed it");
    assert_eq!(spec.lease_transitions, Some(1));
}

/// The holder's clock is an hour ahead and the standby's an hour behind: by wall clocks
/// the holder's last renewal lies two hours in the future, yet the standby takes the
/// lease one lease duration after it last saw it change.
#[tokio::test(start_paused = true)]
async fn a_standby_whose_clock_is_far_behind_takes_over_a_lease_duration_after_renewals_stop() {
    let api = crate::crd::fixtures::fake_api();
    let a = acquired(&candidate(&api, "a", 1)).await;
    // The holder dies without releasing the lease: nothing renews it any more.
    drop(a);
    let standby = candidate(&api, "b", -1);
    let start = Instant::now();
    let _b = acquired(&standby).await;
    let waited = start.elapsed();
    assert!(
        waited >= TIMING.lease_duration
            && waited <= TIMING.lease_duration + TIMING.retry_period * 2,
        "took over after {waited:?}"
    );
    let spec = spec(&api);
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_goes_to_the_standby_at_its_next_look_not_a_lease_duration_later() {
    let api = crate::crd::fixtures::fake_api();
    let a = acquired(&candidate(&api, "a", 0)).await;
    let b = candidate(&api, "b", 0);
    let standby = tokio::spawn(async move {
        let leadership = b.acquire().await;
        (leadership, Instant::now())
    });
    // The standby has seen the lease held.
    tokio::time::sleep(TIMING.retry_period * 3).await;
    assert!(!standby.is_finished(), "the standby took a held lease");
    let released_at = Instant::now();
    let released = a.release().await;
    assert!(released.is_ok(), "{released:?}");
    let taken = timeout(PATIENCE, standby).await;
    let Ok(Ok((_b, taken_at))) = taken else {
        panic!("the standby did not take over");
    };
    assert!(
        taken_at - released_at <= TIMING.retry_period,
        "taken {:?} after the release",
        taken_at - released_at
    );
    let spec = spec(&api);
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(2), "taken by a, then by b");
}

#[tokio::test(start_paused = true)]
async fn a_lease_whose_holder_vanished_is_taken_over_once_unchanged_for_its_duration() {
    let api = crate::crd::fixtures::fake_api();
    api.put(&Lease {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("crashed".to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        }),
    });
    let start = Instant::now();
    let _b = acquired(&candidate(&api, "b", 0)).await;
    assert!(start.elapsed() >= TIMING.lease_duration);
    let spec = spec(&api);
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(5));
}

#[tokio::test(start_paused = true)]
async fn a_holder_whose_lease_was_taken_steps_down() {
    let api = crate::crd::fixtures::fake_api();
    let a = acquired(&candidate(&api, "a", 0)).await;
    let mut lease = api.get::<Lease>(NAMESPACE, NAME).unwrap_or_default();
    lease.metadata.namespace = Some(NAMESPACE.to_owned());
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("other".to_owned());
    }
    api.put(&lease);
    let lost = timeout(PATIENCE, a.lost()).await;
    assert!(matches!(lost, Ok(Error::LeadershipLost)), "{lost:?}");
}

/// A holder that cannot write the lease stops acting within the renew deadline, before
/// a standby may take the lease (a lease duration after its last change).
#[tokio::test(start_paused = true)]
async fn a_holder_that_cannot_renew_steps_down_before_the_lease_may_be_taken() {
    let api = crate::crd::fixtures::fake_api();
    let a = acquired(&candidate(&api, "a", 0)).await;
    let last_renewal = Instant::now();
    api.refuse_writes("leases", "the API server is overloaded");
    let lost = timeout(PATIENCE, a.lost()).await;
    let stepped_down = last_renewal.elapsed();
    assert!(
        matches!(lost, Ok(Error::LeaseNotRenewed { .. })),
        "{lost:?}"
    );
    assert!(
        stepped_down <= TIMING.renew_deadline && stepped_down < TIMING.lease_duration,
        "stepped down after {stepped_down:?}"
    );
}

/// Work that runs until it is stopped and records that it ran and that it was stopped.
fn work(
    started: &Arc<AtomicBool>,
    stopped: &Arc<AtomicBool>,
) -> impl Future<Output = Result<()>> + use<> {
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let (started, stopped) = (started.clone(), OnDrop(stopped.clone()));
    async move {
        let _stopped = stopped;
        started.store(true, Ordering::SeqCst);
        std::future::pending::<Result<()>>().await
    }
}

/// Waits (in virtual time) until `done` holds, or fails the test.
async fn until(what: &str, done: impl Fn() -> bool) {
    let waited = timeout(PATIENCE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(waited.await.is_ok(), "{what}");
}

#[tokio::test(start_paused = true)]
async fn on_shutdown_the_leader_stops_its_work_then_releases_and_the_standby_takes_over() {
    let api = crate::crd::fixtures::fake_api();
    let flags = || Arc::new(AtomicBool::new(false));
    let (a_started, a_stopped, b_started, b_stopped) = (flags(), flags(), flags(), flags());
    let (stop_a, a_stops) = tokio::sync::oneshot::channel::<()>();
    let a = candidate(&api, "a", 0);
    let a_work = work(&a_started, &a_stopped);
    let a_run = tokio::spawn(async move {
        a.lead(a_work, async {
            let _ = a_stops.await;
        })
        .await
    });
    until("a leads", || {
        spec(&api).holder_identity.as_deref() == Some("a")
    })
    .await;
    let b = candidate(&api, "b", 0);
    let b_work = work(&b_started, &b_stopped);
    let b_run = tokio::spawn(async move { b.lead(b_work, std::future::pending()).await });
    tokio::time::sleep(TIMING.lease_duration * 2).await;
    assert!(a_started.load(Ordering::SeqCst));
    assert!(!b_started.load(Ordering::SeqCst), "two leaders at once");

    let _ = stop_a.send(());
    let a_ended = timeout(PATIENCE, a_run).await;
    assert!(matches!(a_ended, Ok(Ok(Ok(())))), "{a_ended:?}");
    assert!(
        a_stopped.load(Ordering::SeqCst),
        "the leader's work was stopped"
    );
    until("b takes over", || {
        spec(&api).holder_identity.as_deref() == Some("b")
    })
    .await;
    until("the standby's work starts", || {
        b_started.load(Ordering::SeqCst)
    })
    .await;
    b_run.abort();
}
