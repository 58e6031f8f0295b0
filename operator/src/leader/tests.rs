//! Leader election against the in-process fake API, in real time with short leases.

use super::*;
use flotilla_kubefake::FakeApi;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::time::timeout;

const NAMESPACE: &str = "ops";
const NAME: &str = "flotilla-operator";
/// Long enough for any step of these tests; none of them waits this long when it passes.
const PATIENCE: Duration = Duration::from_secs(20);

fn candidate(api: &FakeApi, identity: &str, duration_seconds: u64) -> Election {
    Election::new(api.client(), NAMESPACE, NAME, identity).with_timing(Timing {
        duration_seconds,
        grace_seconds: 1,
        release_poll: Duration::from_millis(50),
    })
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

/// Waits until `done` holds of the lease, or fails the test.
async fn until(api: &FakeApi, what: &str, done: impl Fn(&LeaseSpec) -> bool) {
    let waited = timeout(PATIENCE, async {
        while !done(&spec(api)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if waited.await.is_err() {
        panic!("{what}: the lease is {:?}", spec(api));
    }
}

#[tokio::test]
async fn the_first_candidate_creates_and_takes_a_free_lease() {
    let api = crate::crd::fixtures::fake_api();
    let _leadership = acquired(&candidate(&api, "a", 2)).await;
    let spec = spec(&api);
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_duration_seconds, Some(2));
    assert!(spec.renew_time.is_some());
}

#[tokio::test]
async fn a_renewed_lease_stays_with_its_holder_beyond_its_duration() {
    let api = crate::crd::fixtures::fake_api();
    let a = acquired(&candidate(&api, "a", 2)).await;
    let first_renewal = spec(&api).renew_time;
    let standby = candidate(&api, "b", 2);
    tokio::select! {
        lost = a.lost() => panic!("the holder lost its lease: {lost}"),
        _ = standby.acquire() => panic!("the standby took a lease its holder renews"),
        // Twice the lease's duration: had it not been renewed, it would have ended.
        () = tokio::time::sleep(Duration::from_secs(4)) => {}
    }
    let spec = spec(&api);
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_ne!(
        spec.renew_time, first_renewal,
        "the holder renewed the lease"
    );
}

#[tokio::test]
async fn a_released_lease_goes_to_the_standby_at_once_not_when_it_would_have_ended() {
    let api = crate::crd::fixtures::fake_api();
    // A lease that would last a minute: only the release lets the standby in in time.
    let a = acquired(&candidate(&api, "a", 60)).await;
    let b = candidate(&api, "b", 60);
    let standby = tokio::spawn(async move { b.acquire().await });
    tokio::task::yield_now().await;
    let released = a.release().await;
    assert!(released.is_ok(), "{released:?}");
    let taken = timeout(PATIENCE, standby).await;
    assert!(matches!(taken, Ok(Ok(_))), "the standby did not take over");
    let spec = spec(&api);
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(2), "taken by a, then by b");
}

#[tokio::test]
async fn a_lease_whose_holder_vanished_is_taken_over_once_it_ends() {
    let api = crate::crd::fixtures::fake_api();
    api.put(&Lease {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("crashed".to_owned()),
            lease_duration_seconds: Some(2),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        }),
    });
    let _b = acquired(&candidate(&api, "b", 2)).await;
    let spec = spec(&api);
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(5));
}

#[tokio::test]
async fn a_holder_whose_lease_was_taken_steps_down() {
    let api = crate::crd::fixtures::fake_api();
    let a = acquired(&candidate(&api, "a", 2)).await;
    let mut lease = api.get::<Lease>(NAMESPACE, NAME).unwrap_or_default();
    lease.metadata.namespace = Some(NAMESPACE.to_owned());
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("other".to_owned());
        spec.lease_duration_seconds = Some(60);
    }
    api.put(&lease);
    let lost = timeout(PATIENCE, a.lost()).await;
    assert!(matches!(lost, Ok(Error::LeadershipLost)), "{lost:?}");
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

#[tokio::test]
async fn on_shutdown_the_leader_stops_its_work_then_releases_and_the_standby_takes_over() {
    let api = crate::crd::fixtures::fake_api();
    let flags = || Arc::new(AtomicBool::new(false));
    let (a_started, a_stopped, b_started, b_stopped) = (flags(), flags(), flags(), flags());
    let (stop_a, a_stops) = tokio::sync::oneshot::channel::<()>();
    let a = candidate(&api, "a", 60);
    let a_work = work(&a_started, &a_stopped);
    let a_run = tokio::spawn(async move {
        a.lead(a_work, async {
            let _ = a_stops.await;
        })
        .await
    });
    until(&api, "a leads", |s| {
        s.holder_identity.as_deref() == Some("a")
    })
    .await;
    let b = candidate(&api, "b", 60);
    let b_work = work(&b_started, &b_stopped);
    let b_run = tokio::spawn(async move { b.lead(b_work, std::future::pending()).await });
    tokio::task::yield_now().await;
    assert!(a_started.load(Ordering::SeqCst));
    assert!(!b_started.load(Ordering::SeqCst), "two leaders at once");

    let _ = stop_a.send(());
    let a_ended = timeout(PATIENCE, a_run).await;
    assert!(matches!(a_ended, Ok(Ok(Ok(())))), "{a_ended:?}");
    assert!(
        a_stopped.load(Ordering::SeqCst),
        "the leader's work was stopped"
    );
    until(&api, "b takes over", |s| {
        s.holder_identity.as_deref() == Some("b")
    })
    .await;
    let waited = timeout(PATIENCE, async {
        while !b_started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    });
    assert!(waited.await.is_ok(), "the standby's work never started");
    b_run.abort();
}
