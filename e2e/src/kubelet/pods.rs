//! The kubelet of the stand-in: runs each pod as a process, restarts it when it exits
//! (`restartPolicy: Always`), probes its readiness over HTTP, reports status (phase, pod IP,
//! Ready), stops it gracefully when the pod is deleted (SIGTERM, then SIGKILL after the grace
//! period) and then finishes the pod's deletion, and releases claims no pod uses any more.
//! Pods on a lost machine are left alone, their processes killed, as a dead host leaves them.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flotilla_testkit::http;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::container::{self, Launch, volume_dir};
use super::statefulset::PVC_PROTECTION;
use super::{KubeletOptions, Shared};

/// Longest delay before a crashed container is started again.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(5);

/// A pod this kubelet runs.
struct RunningPod {
    namespace: String,
    name: String,
    ip: Ipv4Addr,
    launch: Launch,
    child: Option<Child>,
    restarts: i32,
    restart_at: Option<Instant>,
    stop_deadline: Option<Instant>,
    ready: Arc<AtomicBool>,
    probe: Option<tokio::task::JoinHandle<()>>,
    started: String,
    written: Option<Value>,
}

impl RunningPod {
    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child
            && let Ok(pid) = i32::try_from(child.id())
        {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Whether the process has exited (reaping it).
    fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            None | Some(Ok(Some(_)) | Err(_)) => true,
            Some(Ok(None)) => false,
        }
    }
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if let Some(probe) = &self.probe {
            probe.abort();
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The kubelet's pods, by uid.
#[derive(Default)]
pub struct Runtime {
    pods: HashMap<String, RunningPod>,
    /// Pods waiting to start, with the reason last reported.
    waiting: HashMap<String, String>,
}

fn spawn(shared: &Shared, namespace: &str, name: &str, launch: &Launch) -> Result<Child, String> {
    let log = shared.log_path(namespace, name);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let stderr = file
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(stderr);
    for inherited in ["PATH", "RUST_LOG", "RUST_BACKTRACE"] {
        if let Some(value) = std::env::var_os(inherited) {
            command.env(inherited, value);
        }
    }
    command
        .spawn()
        .map_err(|e| format!("starting {}: {e}", launch.program.display()))
}

/// Status code of `GET path` on `addr`, if it answers within `timeout`.
async fn http_status(addr: (Ipv4Addr, u16), path: &str, timeout: Duration) -> Option<u16> {
    let addr = format!("{}:{}", addr.0, addr.1);
    http::get_within(&addr, path, timeout)
        .await
        .ok()
        .map(|(status, _)| status)
}

/// Probes the container's readiness probe until aborted; a pod without one is ready once
/// it runs.
fn start_probe(
    options: &KubeletOptions,
    pod: &Pod,
    ip: Ipv4Addr,
    ready: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let container = pod.spec.as_ref().and_then(|s| s.containers.first());
    let probe = container.and_then(|c| c.readiness_probe.clone());
    let http = probe.as_ref().and_then(|p| p.http_get.clone());
    let port = http.as_ref().and_then(|h| match &h.port {
        IntOrString::Int(port) => u16::try_from(*port).ok(),
        IntOrString::String(name) => container
            .and_then(|c| c.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(name)))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    });
    let path = http.and_then(|h| h.path).unwrap_or_else(|| "/".to_owned());
    let period = options.probe_period;
    let failure_threshold = probe
        .as_ref()
        .and_then(|p| p.failure_threshold)
        .and_then(|f| u32::try_from(f).ok())
        .unwrap_or(3)
        .max(1);
    tokio::spawn(async move {
        let Some(port) = port else {
            ready.store(true, Ordering::Relaxed);
            return;
        };
        let mut failures = 0;
        loop {
            let ok = http_status((ip, port), &path, period.max(Duration::from_millis(500)))
                .await
                .is_some_and(|code| (200..400).contains(&code));
            if ok {
                failures = 0;
                ready.store(true, Ordering::Relaxed);
            } else {
                failures += 1;
                if failures >= failure_threshold {
                    ready.store(false, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(period).await;
        }
    })
}

fn timestamp() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn running_status(pod: &RunningPod, container: &str) -> Value {
    let ready = pod.ready.load(Ordering::Relaxed) && pod.stop_deadline.is_none();
    let running = pod.child.is_some() && pod.restart_at.is_none();
    let condition = |type_: &str, status: bool| json!({"type": type_, "status": if status { "True" } else { "False" }});
    let state = if running {
        json!({"running": {"startedAt": pod.started}})
    } else {
        json!({"waiting": {"reason": "CrashLoopBackOff"}})
    };
    json!({
        "phase": "Running",
        "hostIP": pod.ip.to_string(),
        "podIP": pod.ip.to_string(),
        "podIPs": [{"ip": pod.ip.to_string()}],
        "startTime": pod.started,
        "conditions": [
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "containerStatuses": [{
            "name": container,
            "ready": ready,
            "started": running,
            "restartCount": pod.restarts,
            "image": "",
            "imageID": "",
            "state": state,
        }],
    })
}

async fn write_status(api: &Api<Pod>, name: &str, status: &Value) -> Result<(), kube::Error> {
    match api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

async fn finish_deletion(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

impl Runtime {
    /// One pass over every pod and claim.
    pub async fn sync(
        &mut self,
        client: &Client,
        options: &KubeletOptions,
        shared: &Shared,
    ) -> Result<(), kube::Error> {
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let present: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        self.pods.retain(|uid, _| present.contains(uid));
        self.waiting.retain(|uid, _| present.contains(uid));
        for pod in &pods {
            self.sync_pod(client, options, shared, pod).await?;
        }
        release_claims(client, options, &pods).await
    }

    async fn sync_pod(
        &mut self,
        client: &Client,
        options: &KubeletOptions,
        shared: &Shared,
        pod: &Pod,
    ) -> Result<(), kube::Error> {
        let (Some(uid), Some(namespace)) = (pod.uid(), pod.namespace()) else {
            return Ok(());
        };
        let machine = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if machine.is_some_and(|m| shared.is_lost(m)) {
            // The host is gone and its processes with it; nobody reports or finishes
            // anything for this pod any more.
            self.pods.remove(&uid);
            return Ok(());
        }
        let name = pod.name_any();
        let api = Api::<Pod>::namespaced(client.clone(), &namespace);
        let container_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_default();

        if pod.metadata.deletion_timestamp.is_some() {
            let Some(running) = self.pods.get_mut(&uid) else {
                return finish_deletion(&api, &name).await;
            };
            if running.stop_deadline.is_none() {
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map_or(options.max_grace, Duration::from_secs)
                    .min(options.max_grace);
                running.stop_deadline = Some(Instant::now() + grace);
                running.signal(Signal::SIGTERM);
                let status = running_status(running, &container_name);
                write_status(&api, &name, &status).await?;
            }
            if running.exited() {
                self.pods.remove(&uid);
                return finish_deletion(&api, &name).await;
            }
            if running.stop_deadline.is_some_and(|d| Instant::now() >= d) {
                running.signal(Signal::SIGKILL);
            }
            return Ok(());
        }

        if !self.pods.contains_key(&uid) {
            if shared.is_held(&namespace, &name) {
                return self
                    .report_waiting(&api, &uid, &name, "Held: the node is unavailable")
                    .await;
            }
            let Some(ip) = shared.network.pod_ip(&namespace, &name) else {
                return self
                    .report_waiting(&api, &uid, &name, "no pod address left")
                    .await;
            };
            let launch = match container::prepare(client, options, &shared.network, pod, ip).await {
                Ok(launch) => launch,
                Err(reason) => return self.report_waiting(&api, &uid, &name, &reason).await,
            };
            let child = match spawn(shared, &namespace, &name, &launch) {
                Ok(child) => child,
                Err(reason) => return self.report_waiting(&api, &uid, &name, &reason).await,
            };
            let ready = Arc::new(AtomicBool::new(false));
            let probe = start_probe(options, pod, ip, ready.clone());
            self.waiting.remove(&uid);
            self.pods.insert(
                uid.clone(),
                RunningPod {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    ip,
                    launch,
                    child: Some(child),
                    restarts: 0,
                    restart_at: None,
                    stop_deadline: None,
                    ready,
                    probe: Some(probe),
                    started: timestamp(),
                    written: None,
                },
            );
        }
        let Some(running) = self.pods.get_mut(&uid) else {
            return Ok(());
        };
        if running.restart_at.is_none() && running.exited() {
            running.ready.store(false, Ordering::Relaxed);
            let backoff = Duration::from_millis(500)
                .saturating_mul(1 << running.restarts.clamp(0, 4))
                .min(MAX_RESTART_BACKOFF);
            running.restart_at = Some(Instant::now() + backoff);
        }
        if running.restart_at.is_some_and(|at| Instant::now() >= at) {
            running.child = spawn(shared, &running.namespace, &running.name, &running.launch).ok();
            running.restarts += 1;
            running.restart_at = None;
            running.started = timestamp();
        }
        let status = running_status(running, &container_name);
        if running.written.as_ref() != Some(&status) {
            write_status(&api, &name, &status).await?;
            running.written = Some(status);
        }
        Ok(())
    }

    async fn report_waiting(
        &mut self,
        api: &Api<Pod>,
        uid: &str,
        name: &str,
        reason: &str,
    ) -> Result<(), kube::Error> {
        if self.waiting.get(uid).map(String::as_str) == Some(reason) {
            return Ok(());
        }
        self.waiting.insert(uid.to_owned(), reason.to_owned());
        let status = json!({
            "phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": reason}],
        });
        write_status(api, name, &status).await
    }
}

/// Lets go of deleted claims no pod uses any more, and removes the directories of claims
/// that are gone.
async fn release_claims(
    client: &Client,
    options: &KubeletOptions,
    pods: &[Pod],
) -> Result<(), kube::Error> {
    let claims = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    for claim in &claims {
        let protected = claim.finalizers().iter().any(|f| f == PVC_PROTECTION);
        if claim.metadata.deletion_timestamp.is_none() || !protected {
            continue;
        }
        let namespace = claim.namespace().unwrap_or_default();
        let name = claim.name_any();
        let used = pods.iter().any(|pod| {
            pod.namespace().as_deref() == Some(namespace.as_str())
                && pod
                    .spec
                    .iter()
                    .flat_map(|s| s.volumes.iter().flatten())
                    .any(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .is_some_and(|c| c.claim_name == name)
                    })
        });
        if !used {
            let rest: Vec<&String> = claim
                .finalizers()
                .iter()
                .filter(|f| *f != PVC_PROTECTION)
                .collect();
            let released = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": rest}})),
                )
                .await;
            match released {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
    }
    let live: HashSet<String> = claims.iter().filter_map(|c| c.uid()).collect();
    if let Ok(entries) = std::fs::read_dir(volume_dir(&options.root, "")) {
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().to_string();
            if !live.contains(&uid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}
