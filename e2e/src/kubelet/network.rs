//! The pod network of the stand-in: every pod and Service gets an address of its own on a
//! loopback /24 (127.A.B.0/24, chosen at random so that runs do not collide), and cluster DNS
//! names resolve to them.
//!
//! A pod keeps its address for as long as the network lives, which is what a StatefulSet
//! pod's DNS name gives on a real cluster. A process has no network namespace of its own
//! here, so what a container would do inside its namespace is translated when it starts:
//! a wildcard listen address (`0.0.0.0:PORT`) becomes the pod's address, and cluster DNS
//! names (`<pod>.<service>.<ns>.svc[.cluster.local]`, `<service>.<ns>.svc[...]`) in its
//! arguments and environment become the addresses they resolve to.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Addresses from `.2` to this are pods; Services get the ones above.
const LAST_POD_HOST: u8 = 199;

#[derive(Default)]
struct Allocations {
    pods: BTreeMap<(String, String), Ipv4Addr>,
    services: BTreeMap<(String, String), Ipv4Addr>,
}

/// The address plan; clones share it.
#[derive(Clone)]
pub struct Network {
    prefix: [u8; 3],
    allocations: Arc<Mutex<Allocations>>,
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Network {
    /// A network on a random 127.A.B.0/24.
    pub fn new() -> Self {
        Self {
            prefix: [
                127,
                rand::random_range(100..=250),
                rand::random_range(0..=255),
            ],
            allocations: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Allocations> {
        match self.allocations.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, host)
    }

    /// The address of pod `name` in `namespace`, allocated on first use.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        let mut allocations = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(ip) = allocations.pods.get(&key) {
            return Some(*ip);
        }
        let used = u8::try_from(allocations.pods.len()).ok()?;
        let host = used.checked_add(2).filter(|h| *h <= LAST_POD_HOST)?;
        let ip = self.address(host);
        allocations.pods.insert(key, ip);
        Some(ip)
    }

    /// The address of Service `name` in `namespace`, allocated on first use.
    pub fn service_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        let mut allocations = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(ip) = allocations.services.get(&key) {
            return Some(*ip);
        }
        let used = u8::try_from(allocations.services.len()).ok()?;
        let host = used.checked_add(LAST_POD_HOST + 1).filter(|h| *h < 255)?;
        let ip = self.address(host);
        allocations.services.insert(key, ip);
        Some(ip)
    }

    /// What cluster DNS answers for `host`: a pod behind a headless Service, or a Service.
    pub fn resolve(&self, host: &str) -> Option<Ipv4Addr> {
        let host = host.trim_end_matches('.');
        let name = host
            .strip_suffix(".svc.cluster.local")
            .or_else(|| host.strip_suffix(".svc"))?;
        match name.split('.').collect::<Vec<_>>().as_slice() {
            [pod, _service, namespace] => self.pod_ip(namespace, pod),
            [service, namespace] => self.service_ip(namespace, service),
            _ => None,
        }
    }

    /// `host:port` with a cluster DNS host replaced by its address; anything else unchanged.
    pub fn resolve_endpoint(&self, endpoint: &str) -> String {
        let Some((host, port)) = endpoint.rsplit_once(':') else {
            return endpoint.to_owned();
        };
        match self.resolve(host) {
            Some(ip) => format!("{ip}:{port}"),
            None => endpoint.to_owned(),
        }
    }

    /// A container's argument or environment value as it would act inside a pod with
    /// address `pod_ip`: wildcard listen addresses and cluster DNS names (in a
    /// comma-separated list of `host:port`) become addresses.
    pub fn translate(&self, value: &str, pod_ip: Ipv4Addr) -> String {
        value
            .split(',')
            .map(|part| {
                let part = match part
                    .strip_prefix("0.0.0.0:")
                    .or_else(|| part.strip_prefix("[::]:"))
                {
                    Some(port) => format!("{pod_ip}:{port}"),
                    None => part.to_owned(),
                };
                match self.resolve(&part) {
                    Some(ip) => ip.to_string(),
                    None => self.resolve_endpoint(&part),
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_resolve_to_stable_distinct_addresses() {
        let network = Network::new();
        let a = network.resolve("db-0.db-peers.ns.svc");
        let b = network.resolve("db-1.db-peers.ns.svc.cluster.local");
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(network.pod_ip("ns", "db-0"), a);
        assert_ne!(network.resolve("db.ns.svc"), a);
        assert_eq!(network.resolve("example.com"), None);
    }

    #[test]
    fn wildcard_addresses_and_dns_names_are_translated() {
        let network = Network::new();
        let ip = network.pod_ip("ns", "db-0").unwrap_or(Ipv4Addr::LOCALHOST);
        let other = network.pod_ip("ns", "db-1").unwrap_or(Ipv4Addr::LOCALHOST);
        assert_eq!(network.translate("0.0.0.0:7100", ip), format!("{ip}:7100"));
        assert_eq!(
            network.translate("db-0.db-peers.ns.svc:7100,db-1.db-peers.ns.svc:7100", ip),
            format!("{ip}:7100,{other}:7100")
        );
        assert_eq!(network.translate("serve", ip), "serve");
        assert_eq!(network.translate("", ip), "");
    }
}
