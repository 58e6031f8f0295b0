//! Runs one operation from many concurrent workers for a warm-up and a measured window, and
//! summarises what finished inside the window. Every workload of the benchmark (puts, gets,
//! queries, transactions, against any system) goes through [`drive`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::{Summary, summarize};

/// Longest one operation may take before it counts as failed.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// A small deterministic generator (xorshift64*), one per worker.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What a successful operation reports beyond its latency.
pub trait Done {
    /// Attempts it ran again (a transaction after a conflict).
    fn retries(&self) -> u64 {
        0
    }
}

impl Done for () {}

/// An operation that succeeded after running `0` more attempts.
pub struct Retried(pub u64);

impl Done for Retried {
    fn retries(&self) -> u64 {
        self.0
    }
}

/// Longest a measured window is kept open past its planned end while no operation has
/// finished inside it (an operation slower than the window would otherwise leave a row of
/// zeros, not a measurement).
pub const MAX_WINDOW_EXTENSION: Duration = Duration::from_secs(30);

/// One operation's start, end and outcome.
struct Run {
    began: Instant,
    done: Instant,
    /// Attempts run again; `None` for a failure.
    retries: Option<u64>,
}

/// Runs `op(worker, random)` in a loop on `workers` concurrent tasks: `warmup`, then a
/// measured `window`. Only operations that started and ended inside the window count; an
/// error or an operation over [`OP_TIMEOUT`] counts as failed. When no operation that started
/// inside the window has finished by its planned end, the window stays open until the first
/// one finishes (at most [`MAX_WINDOW_EXTENSION`] longer), and the rates are over the window
/// as it was. Time is tokio's (so tests can pause it). Each worker draws its random numbers
/// from its own seeded [`Rng`], so runs are repeatable.
pub async fn drive<F, Fut, T>(workers: usize, warmup: Duration, window: Duration, op: F) -> Summary
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, String>> + Send,
    T: Done,
{
    let op = Arc::new(op);
    let start = Instant::now() + warmup;
    let planned_end = start + window;
    let last_end = planned_end + MAX_WINDOW_EXTENSION;
    // Set once an operation that started inside the window has finished.
    let finished = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..workers.max(1) {
        let (op, finished) = (op.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(w as u64 + 1);
            let mut runs = Vec::new();
            loop {
                let began = Instant::now();
                if began >= last_end || (began >= planned_end && finished.load(Ordering::SeqCst)) {
                    break;
                }
                let result = tokio::time::timeout(OP_TIMEOUT, op(w, rng.next())).await;
                let done = Instant::now();
                if began < start {
                    continue;
                }
                finished.store(true, Ordering::SeqCst);
                let retries = match result {
                    Ok(Ok(d)) => Some(d.retries()),
                    _ => None,
                };
                runs.push(Run {
                    began,
                    done,
                    retries,
                });
            }
            runs
        }));
    }
    let mut runs = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            runs.extend(r);
        }
    }
    let end = window_end(&runs, planned_end);
    let (mut latencies, mut errors, mut retries) = (Vec::new(), 0, 0);
    for run in runs.iter().filter(|r| r.done <= end) {
        match run.retries {
            Some(n) => {
                latencies.push(run.done.duration_since(run.began).as_micros() as u64);
                retries += n;
            }
            None => errors += 1,
        }
    }
    let mut summary = summarize(latencies, errors, end.duration_since(start));
    summary.retries = retries;
    summary
}

/// Where the window closed: at its planned end, or later at the first finish of an operation
/// that started inside it when none finished by then.
fn window_end(runs: &[Run], planned_end: Instant) -> Instant {
    match runs.iter().map(|r| r.done).min() {
        Some(first) if first > planned_end => first,
        _ => planned_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn the_generator_stays_in_range_and_spreads() {
        let mut rng = Rng::new(1);
        let mut seen = [0usize; 10];
        for _ in 0..10_000 {
            seen[rng.below(10)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 800), "{seen:?}");
        assert_eq!(Rng::new(5).below(0), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn only_operations_inside_the_window_count() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let summary = drive(
            2,
            Duration::from_millis(100),
            Duration::from_secs(1),
            move |w, _| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if w == 1 {
                        Err("refused".into())
                    } else {
                        Ok(Retried(2))
                    }
                }
            },
        )
        .await;
        // Worker 0 succeeds about 100 times in the window, worker 1 fails as often; the
        // warm-up's operations are not counted.
        assert!((95..=100).contains(&summary.ops), "{summary:?}");
        assert!((95..=100).contains(&summary.errors), "{summary:?}");
        assert!(calls.load(Ordering::Relaxed) > summary.ops + summary.errors);
        assert!((summary.p50_ms - 10.0).abs() < 1.0, "{summary:?}");
        // Retries are counted for the window's operations only.
        assert_eq!(summary.retries, 2 * summary.ops);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_shorter_than_one_operation_waits_for_the_first_to_finish() {
        let summary = drive(
            2,
            Duration::from_millis(50),
            Duration::from_millis(400),
            |_, _| async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                Ok(())
            },
        )
        .await;
        // The warm-up's operations end after the planned window and started before it: not
        // counted. The first operations inside the window end 700 ms after they began, past
        // the planned end: the window closes there, with both of them in it.
        assert_eq!(summary.ops, 2, "{summary:?}");
        assert_eq!(summary.errors, 0, "{summary:?}");
        assert!((summary.p50_ms - 700.0).abs() < 1.0, "{summary:?}");
    }
}
