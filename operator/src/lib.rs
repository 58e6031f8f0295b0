//! Flotilla's Kubernetes operator: the `Cluster` and `DatabaseGroup` custom resources,
//! the objects a cluster needs, and the decisions that keep it healthy.
//!
//! The decisions are pure: [`desired`] builds the objects a `Cluster` should have and
//! [`plan`] chooses the next step from what was observed. The controllers only observe,
//! call them, and execute.

pub mod crd;
pub mod error;

pub use error::{Error, Result};
pub mod admin;
pub mod controllers;
pub mod desired;
pub mod http;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod pki;
pub mod plan;
pub mod plugin;
pub mod render;
pub mod status_report;

/// Selects ring as the process's TLS crypto provider. kube's client takes the process default,
/// and a build that links more than one provider (the workspace's S3 client brings aws-lc-rs)
/// has none until one is chosen. Call it before the first client is built; later calls do
/// nothing.
pub fn use_ring_crypto() {
    // An error only says a provider was installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
