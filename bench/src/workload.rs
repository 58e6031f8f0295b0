//! The client side: the same workloads driven against either system from this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_client::{Client, Consistency};

use crate::args::Workload;
use crate::drive::drive;
use crate::etcd::EtcdClient;
use crate::flotilla::DATABASE;
use crate::stats::Summary;

/// Size of every written value.
pub const VALUE_BYTES: usize = 1024;
/// Collection of the benchmark's documents (Flotilla) and key prefix (etcd).
const COLLECTION: &str = "bench";

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
    let target = target.clone();
    drive(clients, warmup, window, move |_, r| {
        let (target, value) = (target.clone(), value.clone());
        async move {
            let k = key((r % keys.max(1) as u64) as usize);
            let write = match workload {
                Workload::Put => true,
                Workload::Get => false,
                Workload::Mixed => (r >> 32) % 10 == 0,
            };
            if write {
                target.put(&k, &value).await
            } else {
                target.get(&k).await
            }
        }
    })
    .await
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
}
