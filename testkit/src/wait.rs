//! Waiting on a condition with a deadline, polling, and saying what is being waited for.
//!
//! [`until`] and [`until_async`] return an [`Error::Timeout`] with the last state seen and report
//! progress as they wait (long waits of the end-to-end tests). [`wait_until`], [`wait_for`] and
//! [`within`] are for test bodies: they panic saying what did not happen, which is how a test
//! reports its failure.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::progress;

/// How often an unchanged "still waiting" state is reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Polls `check` every `poll` until it returns `Ok(Some(value))`, or fails with
/// [`Error::Timeout`] after `timeout`. `Ok(None)` and `Err(state)` both mean "not yet"; the state
/// (or error) is reported when it changes, and at least every 10 seconds, and is given in the
/// timeout error.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: impl FnMut() -> std::result::Result<Option<T>, String>,
) -> Result<T> {
    let mut waiter = Waiter::new(what, timeout);
    loop {
        match check() {
            Ok(Some(value)) => return Ok(waiter.done(value)),
            Ok(None) => waiter.not_yet("not yet".into())?,
            Err(state) => waiter.not_yet(state)?,
        }
        std::thread::sleep(poll);
    }
}

/// [`until`] for an async check, sleeping on the tokio timer.
pub async fn until_async<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<T>, String>>,
{
    let mut waiter = Waiter::new(what, timeout);
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(waiter.done(value)),
            Ok(None) => waiter.not_yet("not yet".into())?,
            Err(state) => waiter.not_yet(state)?,
        }
        tokio::time::sleep(poll).await;
    }
}

struct Waiter<'a> {
    what: &'a str,
    timeout: Duration,
    start: Instant,
    last: Option<String>,
    reported: Instant,
}

impl<'a> Waiter<'a> {
    fn new(what: &'a str, timeout: Duration) -> Self {
        progress(format!("waiting for {what} (at most {timeout:?})"));
        let now = Instant::now();
        Waiter {
            what,
            timeout,
            start: now,
            last: None,
            reported: now,
        }
    }

    fn not_yet(&mut self, state: String) -> Result<()> {
        let waited = self.start.elapsed();
        if waited >= self.timeout {
            return Err(Error::Timeout {
                what: self.what.to_string(),
                waited,
                last: state,
            });
        }
        if self.last.as_deref() != Some(state.as_str()) || self.reported.elapsed() >= REPORT_EVERY {
            progress(format!(
                "  {}: {state} ({:.1}s)",
                self.what,
                waited.as_secs_f64()
            ));
            self.reported = Instant::now();
            self.last = Some(state);
        }
        Ok(())
    }

    fn done<T>(&self, value: T) -> T {
        progress(format!(
            "  {}: done after {:.1}s",
            self.what,
            self.start.elapsed().as_secs_f64()
        ));
        value
    }
}

/// Polls `condition` until it holds, at most `timeout`; panics saying `what` did not happen.
pub async fn wait_until<F>(timeout: Duration, what: &str, mut condition: F)
where
    F: AsyncFnMut() -> bool,
{
    wait_for(timeout, what, async || condition().await.then_some(())).await
}

/// Polls `probe` until it returns `Some`, at most `timeout`, and returns the value; panics
/// saying `what` did not happen.
pub async fn wait_for<T, F>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Runs `future` with a deadline; panics saying `what` did not finish.
pub async fn within<T>(timeout: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {timeout:?}"))
}
