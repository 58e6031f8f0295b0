//! Storage metrics: the time of each fsync (durable commit) per file, of snapshot builds and
//! installs and of log compaction, which the store observes (`store::measure`), and the
//! documents each shard here holds, read at each scrape from the count every write keeps.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Labels;
use crate::meta::MetaState;
use crate::store::StorageMetrics;
use crate::store::measure::{latency_histogram, snapshot_histogram};
use crate::types::GroupId;

/// The storage families, and the histograms handed to the store.
pub struct StorageFamilies {
    pub store: StorageMetrics,
    pub fsync_seconds: Family<Labels, Histogram>,
    pub documents: Family<Labels, Gauge>,
    /// Free bytes on the data volume, as last measured.
    pub volume_free: Gauge,
    /// 1 while the data volume counts as full (see `store::space`).
    pub full: Gauge,
    /// Writes refused because the volume was full.
    pub refused_full: Counter,
}

impl StorageFamilies {
    pub fn register(registry: &mut Registry, log_commit: Histogram) -> StorageFamilies {
        let fsync_seconds = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        // One statement each: the family's guard lives until the end of its statement.
        let fsync_of = |name: &str| {
            let labels = vec![("file".to_owned(), name.to_owned())];
            fsync_seconds.get_or_create(&labels).clone()
        };
        let log_fsync = fsync_of("flotilla.redb");
        let state_fsync = fsync_of("state.redb");
        let store = StorageMetrics {
            log_commit,
            log_fsync,
            state_fsync,
            snapshot_build: snapshot_histogram(),
            snapshot_install: snapshot_histogram(),
            log_compaction: latency_histogram(),
        };
        let documents = Family::<Labels, Gauge>::default();
        registry.register(
            "storage_fsync_duration_seconds",
            "Time of each durable commit of a storage file, which writes its pages and fsyncs it \
             (flotilla.redb: every batch of Raft log appends; state.redb: every 2 s, at \
             snapshots and at shutdown)",
            fsync_seconds.clone(),
        );
        registry.register(
            "snapshot_build_duration_seconds",
            "Time to build a snapshot of a Raft group and store it durably",
            store.snapshot_build.clone(),
        );
        registry.register(
            "snapshot_install_duration_seconds",
            "Time to install a snapshot received from a group's leader, durably",
            store.snapshot_install.clone(),
        );
        registry.register(
            "storage_compaction_duration_seconds",
            "Time to purge the Raft log entries a snapshot covers (log compaction)",
            store.log_compaction.clone(),
        );
        registry.register(
            "shard_documents",
            "Documents this node's replica of each database shard holds",
            documents.clone(),
        );
        let volume_free = Gauge::default();
        registry.register(
            "storage_volume_free_bytes",
            "Free bytes on the volume of the node's data directory, as last measured",
            volume_free.clone(),
        );
        let full = Gauge::default();
        registry.register(
            "storage_full",
            "1 while the data volume's free space is below the reserve (--storage-reserve-bytes): \
             the node refuses writes that add data and hands its leaderships over",
            full.clone(),
        );
        let refused_full = Counter::default();
        registry.register(
            "storage_full_refusals",
            "Writes this node refused as leader because its data volume was full",
            refused_full.clone(),
        );
        StorageFamilies {
            store,
            fsync_seconds,
            documents,
            volume_free,
            full,
            refused_full,
        }
    }

    /// Records a measurement of the data volume.
    pub fn observe_volume(&self, free: u64, full: bool) {
        self.volume_free
            .set(i64::try_from(free).unwrap_or(i64::MAX));
        self.full.set(i64::from(full));
    }

    /// Sets the documents of each shard here from `counts` (group, documents), named by the
    /// database and shard the meta state gives the group; shards no longer here go.
    pub fn observe_documents(&self, meta: &MetaState, counts: &[(GroupId, u64)]) {
        let counts: std::collections::HashMap<GroupId, u64> = counts.iter().copied().collect();
        self.documents.clear();
        for (name, database) in &meta.databases {
            for (shard, record) in database.shards.iter().enumerate() {
                let Some(n) = counts.get(&record.group_id) else {
                    continue;
                };
                let labels = vec![
                    ("database".to_owned(), name.clone()),
                    ("shard".to_owned(), shard.to_string()),
                ];
                self.documents
                    .get_or_create(&labels)
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
        }
    }
}
