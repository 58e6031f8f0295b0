//! Latency samples to throughput and percentiles. Pure.

use std::time::Duration;

/// The `q`-quantile (0 < q <= 1) of sorted samples by nearest rank: the smallest sample with
/// at least `q` of all samples at or below it. `None` for no samples.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() || !q.is_finite() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).copied()
}

/// What one system did in one measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Operations that completed successfully inside the window.
    pub ops: u64,
    /// Operations that failed inside the window.
    pub errors: u64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Attempts run again by the operations counted in `ops` (transactions).
    pub retries: u64,
}

/// Summarises the latencies (microseconds) of successful operations in a window of `window`.
pub fn summarize(mut latencies_us: Vec<u64>, errors: u64, window: Duration) -> Summary {
    latencies_us.sort_unstable();
    let ms = |q| percentile(&latencies_us, q).map_or(0.0, |us| us as f64 / 1000.0);
    let secs = window.as_secs_f64();
    let ops = latencies_us.len() as u64;
    Summary {
        ops,
        errors,
        ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        retries: 0,
    }
}

/// Median of a few measurements (failover times); `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// `a / b`, or `None` when it means nothing (no measurement on either side).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0).then(|| a / b)
}

/// Sum and count of a Prometheus histogram named `*{name}`, added up over all its label sets.
pub fn histogram_sum_count(metrics: &str, name: &str) -> (f64, f64) {
    let mut sum = 0.0;
    let mut count = 0.0;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let metric = series.split('{').next().unwrap_or(series);
        if metric.ends_with(&format!("{name}_sum")) {
            sum += value;
        } else if metric.ends_with(&format!("{name}_count")) {
            count += value;
        }
    }
    (sum, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 0.50), Some(50));
        assert_eq!(percentile(&s, 0.99), Some(99));
        assert_eq!(percentile(&s, 1.0), Some(100));
        assert_eq!(percentile(&s, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[1, 2], 0.5), Some(1));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&s, f64::NAN), None);
    }

    #[test]
    fn a_slow_tail_shows_in_p99_not_in_p50() {
        let mut lat = vec![1_000u64; 990];
        lat.extend(std::iter::repeat_n(50_000, 10));
        let s = summarize(lat, 0, Duration::from_secs(2));
        assert_eq!(s.p50_ms, 1.0);
        assert_eq!(s.p99_ms, 1.0);
        let mut lat = vec![1_000u64; 980];
        lat.extend(std::iter::repeat_n(50_000, 20));
        let s = summarize(lat, 3, Duration::from_secs(2));
        assert_eq!(s.p50_ms, 1.0);
        assert_eq!(s.p99_ms, 50.0);
        assert_eq!(s.ops, 1000);
        assert_eq!(s.errors, 3);
        assert_eq!(s.ops_per_sec, 500.0);
    }

    #[test]
    fn unsorted_input_is_sorted_first() {
        let s = summarize(vec![3_000, 1_000, 2_000], 0, Duration::from_secs(1));
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.p99_ms, 3.0);
    }

    #[test]
    fn an_empty_window_is_zero_not_a_panic() {
        let s = summarize(vec![], 5, Duration::ZERO);
        assert_eq!(s.ops, 0);
        assert_eq!(s.ops_per_sec, 0.0);
        assert_eq!(s.p99_ms, 0.0);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn histograms_are_summed_over_label_sets() {
        let text = "# HELP x_seconds Time.\n# TYPE x_seconds histogram\n\
            x_seconds_sum{group=\"1\"} 0.5\nx_seconds_count{group=\"1\"} 10\n\
            x_seconds_bucket{group=\"1\",le=\"0.1\"} 10\n\
            x_seconds_sum{group=\"2\"} 1.5\nx_seconds_count{group=\"2\"} 30\n\
            other_seconds_sum 9\n# EOF\n";
        assert_eq!(histogram_sum_count(text, "x_seconds"), (2.0, 40.0));
        assert_eq!(histogram_sum_count(text, "missing"), (0.0, 0.0));
        assert_eq!(histogram_sum_count("garbage", "x"), (0.0, 0.0));
    }

    #[test]
    fn ratios_need_both_sides() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(0.0, 2.0), None);
        assert_eq!(ratio(f64::INFINITY, 2.0), None);
    }
}
