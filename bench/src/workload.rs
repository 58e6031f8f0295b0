//! The client side: the same workloads driven against either system from this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_client::{Client, Consistency};

use crate::args::Workload;
use crate::etcd::EtcdClient;
use crate::flotilla::DATABASE;
use crate::stats::{Summary, summarize};

/// Size of every written value.
pub const VALUE_BYTES: usize = 1024;
/// Collection of the benchmark's documents (Flotilla) and key prefix (etcd).
const COLLECTION: &str = "bench";
/// Longest one operation may take before it counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// A JSON document of exactly [`VALUE_BYTES`] bytes; the same bytes are etcd's value.
pub fn value() -> String {
    let overhead = r#"{"v":""}"#.len();
    format!(r#"{{"v":"{}"}}"#, "x".repeat(VALUE_BYTES - overhead))
}

/// Document id of key number `i`.
pub fn key(i: usize) -> String {
    format!("key-{i:06}")
}

/// A system under test, as seen by one client.
#[derive(Clone)]
pub enum Target {
    Flotilla(Client),
    Etcd(EtcdClient),
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Flotilla(_) => "flotilla",
            Target::Etcd(_) => "etcd",
        }
    }

    pub async fn put(&self, key: &str, value: &str) -> Result<(), String> {
        match self {
            Target::Flotilla(c) => c
                .put(DATABASE, COLLECTION, key, value, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Target::Etcd(c) => c
                .put(
                    format!("{COLLECTION}/{key}").into_bytes(),
                    value.as_bytes().to_vec(),
                )
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// A linearizable read.
    pub async fn get(&self, key: &str) -> Result<(), String> {
        match self {
            Target::Flotilla(c) => c
                .get(DATABASE, COLLECTION, key, Consistency::Linearizable)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Target::Etcd(c) => c
                .get(format!("{COLLECTION}/{key}").into_bytes())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

/// A small deterministic generator (xorshift64*), one per client task.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as usize
    }
}

/// Writes every key once (so that gets find documents), `concurrency` at a time.
pub async fn preload(target: &Target, keys: usize, concurrency: usize) -> anyhow::Result<()> {
    let value = Arc::new(value());
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        let (target, value) = (target.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..keys).step_by(concurrency.max(1)) {
                let mut tries = 0;
                while let Err(e) = target.put(&key(i), &value).await {
                    tries += 1;
                    if tries >= 5 {
                        return Err(anyhow::anyhow!("preloading {}: {e}", key(i)));
                    }
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Runs `workload` with `clients` concurrent clients: `warmup`, then a measured `window`.
/// Only operations that started and ended inside the window count.
pub async fn run(
    target: &Target,
    workload: Workload,
    clients: usize,
    keys: usize,
    warmup: Duration,
    window: Duration,
) -> Summary {
    let value = Arc::new(value());
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = Vec::new();
    for c in 0..clients.max(1) {
        let (target, value) = (target.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64 + 1);
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let k = key(rng.below(keys));
                let write = match workload {
                    Workload::Put => true,
                    Workload::Get => false,
                    Workload::Mixed => rng.below(10) == 0,
                };
                let op = async {
                    if write {
                        target.put(&k, &value).await
                    } else {
                        target.get(&k).await
                    }
                };
                let result = tokio::time::timeout(OP_TIMEOUT, op).await;
                let done = Instant::now();
                if began < start || done > end {
                    continue;
                }
                match result {
                    Ok(Ok(())) => latencies.push(done.duration_since(began).as_micros() as u64),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, err)) = t.await {
            all.extend(lat);
            errors += err;
        }
    }
    summarize(all, errors, window)
}

/// Retries a put until one succeeds; the time from `since` to that success.
pub async fn time_until_write(
    target: &Target,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let value = value();
    let mut n = 0usize;
    while since.elapsed() < limit {
        n += 1;
        if target.put(&key(n % 1000), &value).await.is_ok() {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_one_kib_of_json() {
        let v = value();
        assert_eq!(v.len(), VALUE_BYTES);
        let parsed: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert!(parsed["v"].is_string());
    }

    #[test]
    fn keys_sort_in_numeric_order() {
        assert!(key(9) < key(10));
        assert_eq!(key(7), "key-000007");
    }

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
}
