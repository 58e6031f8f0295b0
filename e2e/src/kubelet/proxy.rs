//! The Services of the stand-in, as kube-proxy makes them: every Service with a cluster IP
//! listens on its own loopback address and port, and each connection goes to one of the
//! ready pods its selector picks (round robin), on the port its `targetPort` names.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::network::Network;

type Endpoints = Arc<Mutex<Vec<SocketAddr>>>;

struct Listener {
    address: SocketAddr,
    endpoints: Endpoints,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every Service port served, by `(namespace, service, port name)`.
#[derive(Default)]
pub struct Proxies {
    listeners: Mutex<BTreeMap<(String, String, String), Listener>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn target_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<u16> {
    let number = match target {
        None => port,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(name)) => {
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name))?
                .container_port
        }
    };
    u16::try_from(number).ok()
}

async fn serve(listener: tokio::net::TcpListener, endpoints: Endpoints) {
    let next = AtomicUsize::new(0);
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let candidates = locked(&endpoints).clone();
        if candidates.is_empty() {
            continue; // no ready endpoint: the connection is refused by closing it
        }
        let start = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            for i in 0..candidates.len() {
                let target = candidates[(start + i) % candidates.len()];
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            }
        });
    }
}

impl Proxies {
    /// The address of a Service's port (by port name, or number as text).
    pub fn address(&self, namespace: &str, service: &str, port: &str) -> Option<SocketAddr> {
        locked(&self.listeners)
            .get(&(namespace.to_owned(), service.to_owned(), port.to_owned()))
            .map(|l| l.address)
    }

    /// Serves every Service with a cluster IP; forgets those that are gone.
    pub async fn sync(&self, client: &Client, network: &Network) -> Result<(), kube::Error> {
        let services = Api::<Service>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let mut wanted: HashMap<(String, String, String), (SocketAddr, Vec<SocketAddr>)> =
            HashMap::new();
        for service in &services {
            let (Some(namespace), Some(spec)) = (service.namespace(), service.spec.as_ref()) else {
                continue;
            };
            let name = service.name_any();
            let headless = spec.cluster_ip.as_deref() == Some("None");
            let (false, Some(selector), Some(ip)) = (
                headless,
                spec.selector.as_ref(),
                network.service_ip(&namespace, &name),
            ) else {
                continue;
            };
            let selected: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
                .filter(|p| is_ready(p))
                .collect();
            for port in spec.ports.iter().flatten() {
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                let endpoints = selected
                    .iter()
                    .filter_map(|pod| {
                        let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
                        let target = target_port(pod, port.target_port.as_ref(), port.port)?;
                        Some(SocketAddr::new(ip, target))
                    })
                    .collect();
                let key_name = port.name.clone().unwrap_or_else(|| number.to_string());
                wanted.insert(
                    (namespace.clone(), name.clone(), key_name),
                    (SocketAddr::new(ip.into(), number), endpoints),
                );
            }
        }
        let mut listeners = locked(&self.listeners);
        listeners.retain(|key, l| wanted.get(key).is_some_and(|(a, _)| *a == l.address));
        for (key, (address, endpoints)) in wanted {
            if let Some(listener) = listeners.get(&key) {
                *locked(&listener.endpoints) = endpoints;
                continue;
            }
            let socket = match std::net::TcpListener::bind(address)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(tokio::net::TcpListener::from_std)
            {
                Ok(socket) => socket,
                Err(error) => {
                    eprintln!(
                        "service {}/{} cannot listen on {address}: {error}",
                        key.0, key.1
                    );
                    continue;
                }
            };
            let shared: Endpoints = Arc::new(Mutex::new(endpoints));
            let task = tokio::spawn(serve(socket, shared.clone()));
            listeners.insert(
                key,
                Listener {
                    address,
                    endpoints: shared,
                    task,
                },
            );
        }
        Ok(())
    }
}
