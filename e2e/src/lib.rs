//! End-to-end tests of Flotilla that need more than node processes: the container image and a
//! docker compose cluster ([`image`], [`docker`], [`compose`]), and Kubernetes without a cluster:
//! the fake API server of `flotilla-kubefake` and a kubelet stand-in that runs each pod as a
//! real `flotilla-node` process ([`kubelet`]).
//!
//! Everything here shells out to the `docker` and `docker compose` / `docker-compose` command
//! lines, the way a user would, and cleans up what it created when dropped:
//! [`docker::Container`] removes its container and anonymous volumes, [`compose::Project`] runs
//! `down --volumes`. Names are unique per run ([`flotilla_testkit::unique_name`]) so that runs
//! never collide. Node process clusters, network namespaces, workloads, the linearizability
//! checker, waiting and HTTP probes come from the test kit (`flotilla-testkit`).

pub mod compose;
pub mod docker;
pub mod image;
pub mod kubelet;
