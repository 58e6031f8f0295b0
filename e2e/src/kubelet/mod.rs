//! A stand-in for the parts of Kubernetes that make pods real, driven through the API of
//! `flotilla_kubefake::FakeApiServer` (or any API server): the StatefulSet controller
//! ([`statefulset`]), a kubelet that runs each pod's container as a local process
//! ([`pods`], [`container`]), cluster DNS and pod addresses on loopback ([`network`]),
//! kube-proxy for Services with a cluster IP ([`proxy`]), the machines pods are
//! scheduled on, as Node objects with labels such as their zone ([`machines`]), which a
//! test may lose, and a storage driver that provisions and expands volumes ([`volumes`]).
//!
//! Everything runs in one background task that goes over the API objects a few times a
//! second. Dropping the [`Kubelet`] stops that task and kills every process it started.

pub mod container;
pub mod machines;
pub mod network;
pub mod pods;
pub mod proxy;
pub mod statefulset;
pub mod volumes;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use machines::Machine;
use network::Network;

/// How often the stand-in goes over the objects.
const SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// How the stand-in runs pods.
#[derive(Clone, Debug)]
pub struct KubeletOptions {
    /// The executable of each container command (`flotilla-node` -> its path); a container
    /// whose command is not here does not start.
    pub commands: BTreeMap<String, PathBuf>,
    /// Environment variables added to every container after its own (settings a test
    /// needs that the pod spec does not carry).
    pub extra_env: Vec<(String, String)>,
    /// Period of readiness probes, whatever the pod spec says (short, for tests).
    pub probe_period: Duration,
    /// Longest graceful stop of a deleted pod before it is killed.
    pub max_grace: Duration,
    /// Where volumes and container logs live.
    pub root: PathBuf,
    /// The machines (Kubernetes Nodes) pods are scheduled on; one unlabelled machine,
    /// [`statefulset::NODE_NAME`], when empty.
    pub machines: Vec<Machine>,
}

/// State shared by the background task and the handle.
pub struct Shared {
    pub network: Network,
    held: Mutex<HashSet<(String, String)>>,
    /// Machines that are gone: their pods' processes are killed and nothing on them is
    /// looked after any more.
    lost: Mutex<HashSet<String>>,
    /// Whether the storage driver holds off growing claims (see [`Kubelet::hold_volume_growth`]).
    growth_held: std::sync::atomic::AtomicBool,
    root: PathBuf,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Shared {
    /// Whether the pod may not start now.
    pub fn is_held(&self, namespace: &str, pod: &str) -> bool {
        locked(&self.held).contains(&(namespace.to_owned(), pod.to_owned()))
    }

    /// Whether the machine (Kubernetes Node) is lost.
    pub fn is_lost(&self, machine: &str) -> bool {
        locked(&self.lost).contains(machine)
    }

    /// Where the output of the pod's container goes.
    pub fn log_path(&self, namespace: &str, pod: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{namespace}_{pod}.log"))
    }
}

/// The running stand-in.
pub struct Kubelet {
    shared: Arc<Shared>,
    proxies: Arc<proxy::Proxies>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Kubelet {
    /// Starts the stand-in against the API server of `client`. Must be called within a
    /// Tokio runtime.
    pub fn start(client: kube::Client, options: KubeletOptions) -> std::io::Result<Self> {
        std::fs::create_dir_all(options.root.join("logs"))?;
        std::fs::create_dir_all(options.root.join("volumes"))?;
        let shared = Arc::new(Shared {
            network: Network::new(),
            held: Mutex::default(),
            lost: Mutex::default(),
            growth_held: std::sync::atomic::AtomicBool::new(false),
            root: options.root.clone(),
        });
        let proxies = Arc::new(proxy::Proxies::default());
        let task = tokio::spawn(run(client, options, shared.clone(), proxies.clone()));
        Ok(Self {
            shared,
            proxies,
            task: Some(task),
        })
    }

    /// The pod network (addresses and cluster DNS).
    pub fn network(&self) -> &Network {
        &self.shared.network
    }

    /// The address of a Service's port (by port name), once it is served.
    pub fn service_address(
        &self,
        namespace: &str,
        service: &str,
        port: &str,
    ) -> Option<SocketAddr> {
        self.proxies.address(namespace, service, port)
    }

    /// Keeps the pod from starting (as if its node were down) until [`Kubelet::release`].
    pub fn hold(&self, namespace: &str, pod: &str) {
        locked(&self.shared.held).insert((namespace.to_owned(), pod.to_owned()));
    }

    /// Lets a held pod start.
    pub fn release(&self, namespace: &str, pod: &str) {
        locked(&self.shared.held).remove(&(namespace.to_owned(), pod.to_owned()));
    }

    /// Keeps the storage driver from growing claims whose request grew (new claims are still
    /// provisioned), as a slow resizer would, until [`Kubelet::release_volume_growth`]: the
    /// state in between can then be looked at.
    pub fn hold_volume_growth(&self) {
        self.shared
            .growth_held
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets the storage driver grow claims again.
    pub fn release_volume_growth(&self) {
        self.shared
            .growth_held
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Loses a machine for good, as when a Kubernetes Node's host dies: the processes of
    /// its pods are killed, its Node turns NotReady (`Ready: Unknown`, as the node
    /// controller marks a Node whose kubelet stopped reporting), and its pods are never
    /// looked after again: a pod deleted there stays Terminating until it is deleted with
    /// no grace period. No new pod is scheduled on it.
    pub fn lose_machine(&self, machine: &str) {
        locked(&self.shared.lost).insert(machine.to_owned());
    }

    /// The last `lines` lines of the pod's container output (every run of it).
    pub fn log_tail(&self, namespace: &str, pod: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.shared.log_path(namespace, pod)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the stand-in and kills every process it started.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Pods that ever had output, as `(namespace, pod)`.
    pub fn logged_pods(&self) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(self.shared.root.join("logs")) else {
            return Vec::new();
        };
        let mut pods: Vec<(String, String)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let (namespace, pod) = name.strip_suffix(".log")?.split_once('_')?;
                Some((namespace.to_owned(), pod.to_owned()))
            })
            .collect();
        pods.sort();
        pods
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        // Dropping the task's future drops the running pods, which kills their processes.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn run(
    client: kube::Client,
    options: KubeletOptions,
    shared: Arc<Shared>,
    proxies: Arc<proxy::Proxies>,
) {
    let mut runtime = pods::Runtime::default();
    let mut last_error = String::new();
    let machines = if options.machines.is_empty() {
        vec![Machine::new(statefulset::NODE_NAME, &[])]
    } else {
        options.machines.clone()
    };
    let mut registered = false;
    loop {
        let pass = async {
            if !registered {
                machines::register(&client, &machines).await?;
                registered = true;
            }
            let available: Vec<Machine> = machines
                .iter()
                .filter(|m| !shared.is_lost(&m.name))
                .cloned()
                .collect();
            let lost: Vec<&Machine> = machines
                .iter()
                .filter(|m| shared.is_lost(&m.name))
                .collect();
            machines::mark_lost(&client, &lost).await?;
            statefulset::sync(&client, &available).await?;
            runtime.sync(&client, &options, &shared).await?;
            let growth_held = shared.growth_held.load(std::sync::atomic::Ordering::SeqCst);
            volumes::sync(&client, growth_held).await?;
            proxies.sync(&client, &shared.network).await
        };
        match pass.await {
            Ok(()) => last_error.clear(),
            Err(error) => {
                let error = error.to_string();
                if error != last_error {
                    eprintln!("kubelet stand-in: {error}");
                    last_error = error;
                }
            }
        }
        tokio::time::sleep(SYNC_INTERVAL).await;
    }
}
