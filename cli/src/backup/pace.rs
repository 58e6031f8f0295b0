//! How fast a backup reads (`backup create --max-rate`): the shard reads are drained no
//! faster than a number of MiB per second, so that a backup taken beside production writes
//! spends a bounded share of the nodes' CPU and disk. The pace only slows the drain; the cut's
//! fences are lifted before it starts (see [`super::cut`]), so a slow backup never holds a
//! commit back. A read that fell behind (a slow replica) may catch up in a burst of at most
//! [`BURST`] of reading.

use std::time::{Duration, Instant};

/// The most reading time a backup saves up while it is slower than its pace.
pub const BURST: Duration = Duration::from_secs(1);

/// What a backup reads with: its rate limit and, for tests, how its reads are opened.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// Testing only: opens shard N's read N times this after the cut began.
    pub stagger: Option<Duration>,
    /// At most this many bytes per second (none: as fast as the nodes send).
    pub max_bytes_per_sec: Option<f64>,
}

impl Reading {
    /// The pace of a backup starting now, when it has a rate limit.
    pub fn pace(&self) -> Option<Pace> {
        self.max_bytes_per_sec
            .map(|rate| Pace::new(rate, Instant::now()))
    }
}

/// Counts `bytes` read under `pace` and waits as long as it asks (not at all without one).
pub async fn throttle(pace: &mut Option<Pace>, bytes: u64) {
    if let Some(pace) = pace.as_mut() {
        tokio::time::sleep(pace.after(bytes, Instant::now())).await;
    }
}

/// A rate limit over bytes read.
#[derive(Debug, Clone)]
pub struct Pace {
    bytes_per_sec: f64,
    /// When the pace's reading started (moved forward when it saved more than [`BURST`]).
    since: Instant,
    /// Bytes read since `since`.
    bytes: u64,
}

impl Pace {
    /// A pace of `bytes_per_sec` (positive) from `now`.
    pub fn new(bytes_per_sec: f64, now: Instant) -> Self {
        Self {
            bytes_per_sec,
            since: now,
            bytes: 0,
        }
    }

    /// Counts `bytes` read at `now`; answers how long to wait before reading on.
    pub fn after(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.since);
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec);
        // Ahead of its pace by more than a burst: the time saved beyond it is forgotten.
        let saved = elapsed.saturating_sub(due);
        if saved > BURST {
            let forget = saved - BURST;
            self.since += forget;
        }
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec);
        due.saturating_sub(now.saturating_duration_since(self.since))
    }
}

/// Parses `--max-rate`: MiB per second, a positive number; answers bytes per second.
pub fn parse_mib_per_sec(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(mib) if mib.is_finite() && mib > 0.0 => Ok(mib * f64::from(1u32 << 20)),
        _ => Err(format!(
            "{text:?}: a positive number of MiB per second, e.g. 32 or 0.5"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1048576.0;

    #[test]
    fn reading_at_the_pace_never_waits_and_reading_faster_waits_the_difference() {
        let t0 = Instant::now();
        let mut pace = Pace::new(MIB, t0);
        // 1 MiB at once: a second's worth, to be waited out.
        assert_eq!(pace.after(1 << 20, t0), Duration::from_secs(1));
        // Read on after that second: nothing more to wait.
        assert_eq!(pace.after(0, t0 + Duration::from_secs(1)), Duration::ZERO);
        // Half a MiB half a second later: exactly on pace.
        assert_eq!(
            pace.after(1 << 19, t0 + Duration::from_millis(1500)),
            Duration::ZERO
        );
        // Two MiB at once: two seconds more.
        assert_eq!(
            pace.after(2 << 20, t0 + Duration::from_millis(1500)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn a_read_that_fell_behind_catches_up_by_at_most_a_burst() {
        let t0 = Instant::now();
        let mut pace = Pace::new(MIB, t0);
        // Ten idle seconds (a slow replica), then 3 MiB at once: one second of it is saved,
        // the other two are waited out.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pace.after(3 << 20, later), Duration::from_secs(2));
        // A burst within the saved second does not wait.
        let mut pace = Pace::new(MIB, t0);
        assert_eq!(pace.after(1 << 19, later), Duration::ZERO);
    }

    #[test]
    fn the_rate_is_a_positive_number_of_mib_per_second() {
        assert_eq!(parse_mib_per_sec("2"), Ok(2.0 * MIB));
        assert_eq!(parse_mib_per_sec("0.5"), Ok(0.5 * MIB));
        for bad in ["0", "-1", "fast", "inf", "NaN", ""] {
            assert!(parse_mib_per_sec(bad).is_err(), "{bad}");
        }
    }
}
