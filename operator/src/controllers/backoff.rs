//! Per-object exponential backoff of failed reconciles: 5 s, 10 s, 20 s, ... up to
//! 5 minutes; a successful reconcile starts over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const FIRST: Duration = Duration::from_secs(5);
const MAX: Duration = Duration::from_secs(300);

/// Consecutive failures per object.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        match self.failures.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records a failure of `key` and returns how long to wait before the retry.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures();
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        let factor = 1_u32
            .checked_shl(count.saturating_sub(1))
            .unwrap_or(u32::MAX);
        FIRST.saturating_mul(factor).min(MAX)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| backoff.failed("a").as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        for _ in 0..100 {
            backoff.failed("a");
        }
        assert_eq!(backoff.failed("a"), MAX);
    }

    #[test]
    fn a_success_starts_over_and_objects_back_off_independently() {
        let backoff = Backoff::default();
        backoff.failed("a");
        backoff.failed("a");
        assert_eq!(backoff.failed("b"), FIRST);
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a"), FIRST);
    }
}
