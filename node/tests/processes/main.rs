//! The node's integration tests, one binary: real `flotilla-node` processes started by the
//! test kit (`flotilla-testkit`), one module per area. Test names read `module::behaviour`, e.g.
//! `faults::leader_kill_under_load_keeps_the_history_linearizable`.

mod admin;
mod auth;
mod cluster_smoke;
mod consistency;
mod dev_cluster;
mod disk_full;
mod durability;
mod exactly_once;
mod faults;
mod healing;
mod hibernation;
mod http_api;
mod integrity;
mod isolation;
mod leadership;
mod limits;
mod live_queries;
mod membership_faults;
mod metrics;
mod multi;
mod node_processes;
mod placement;
mod protocol;
mod queries;
mod query_props;
mod requests;
mod security;
mod slow_disk;
mod snapshot_memory;
mod snapshot_resume;
mod transactions;
mod txn_keyed;
mod txn_queries;
mod watch_gaps;
