//! What the kubelet stand-in runs for a pod: the container's command and arguments with
//! `$(VAR)` expanded from its environment, the environment itself (plain values, `fieldRef`
//! and `configMapKeyRef`), and its volumes as directories, translated into the pod's network
//! (see [`super::network`]) and mounted by rewriting mount paths to those directories.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PersistentVolumeClaim, Pod};
use kube::{Api, Client, ResourceExt};

use super::KubeletOptions;
use super::network::Network;

/// A process ready to start.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Expands `$(NAME)` from `vars`; `$$` is a literal `$`; unknown references stay as they
/// are (the kubelet's rules).
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[at..at + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn field_value(pod: &Pod, path: &str, ip: Ipv4Addr) -> Result<String, String> {
    let metadata = &pod.metadata;
    let value = match path {
        "metadata.name" => metadata.name.clone(),
        "metadata.namespace" => metadata.namespace.clone(),
        "metadata.uid" => metadata.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.hostIP" => Some(ip.to_string()),
        other => {
            let label = other
                .strip_prefix("metadata.labels['")
                .and_then(|l| l.strip_suffix("']"));
            match label {
                Some(label) => pod.labels().get(label).cloned(),
                None => return Err(format!("fieldRef {other} is not supported")),
            }
        }
    };
    Ok(value.unwrap_or_default())
}

async fn env_value(
    client: &Client,
    pod: &Pod,
    var: &EnvVar,
    vars: &BTreeMap<String, String>,
    ip: Ipv4Addr,
) -> Result<String, String> {
    let Some(source) = &var.value_from else {
        return Ok(expand(var.value.as_deref().unwrap_or_default(), vars));
    };
    if let Some(field) = &source.field_ref {
        return field_value(pod, &field.field_path, ip);
    }
    if let Some(key_ref) = &source.config_map_key_ref {
        let namespace = pod.namespace().unwrap_or_default();
        let configmap = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
            .get_opt(&key_ref.name)
            .await
            .map_err(|e| format!("reading ConfigMap {}: {e}", key_ref.name))?;
        let value = configmap
            .and_then(|c| c.data)
            .and_then(|d| d.get(&key_ref.key).cloned());
        return match value {
            Some(value) => Ok(value),
            None if key_ref.optional == Some(true) => Ok(String::new()),
            None => Err(format!(
                "CreateContainerConfigError: key {} of ConfigMap {} not found",
                key_ref.key, key_ref.name
            )),
        };
    }
    Err(format!("the source of {} is not supported", var.name))
}

/// Directories of the pod's volumes, by volume name. Claims get a directory per claim uid
/// (a new claim of the same name starts empty); `emptyDir` volumes one per pod.
async fn volume_dirs(
    client: &Client,
    options: &KubeletOptions,
    pod: &Pod,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let uid = pod.uid().unwrap_or_default();
    let mut dirs = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = if let Some(claim) = &volume.persistent_volume_claim {
            let found = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
                .get_opt(&claim.claim_name)
                .await
                .map_err(|e| format!("reading claim {}: {e}", claim.claim_name))?;
            match found {
                Some(c) if c.metadata.deletion_timestamp.is_none() => {
                    volume_dir(&options.root, &c.uid().unwrap_or_default())
                }
                _ => return Err(format!("claim {} is not bound", claim.claim_name)),
            }
        } else if volume.empty_dir.is_some() {
            options.root.join("pods").join(&uid).join(&volume.name)
        } else {
            // Other volume kinds are not mounted; a container that uses one fails below.
            continue;
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        dirs.insert(volume.name.clone(), dir);
    }
    Ok(dirs)
}

/// The directory of the claim with `uid`.
pub fn volume_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("volumes").join(uid)
}

/// Replaces a mount path at the start of `value` by the volume's directory.
fn mount(value: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount_path, dir) in mounts {
        if value == mount_path {
            return dir.display().to_string();
        }
        if let Some(rest) = value.strip_prefix(mount_path.as_str())
            && rest.starts_with('/')
        {
            return format!("{}{rest}", dir.display());
        }
    }
    value.to_owned()
}

fn the_container(pod: &Pod) -> Result<&Container, String> {
    match pod.spec.as_ref().map(|s| s.containers.as_slice()) {
        Some([container]) => Ok(container),
        _ => Err("only pods with exactly one container can run here".to_owned()),
    }
}

/// The process of `pod`'s container, with address `ip`.
pub async fn prepare(
    client: &Client,
    options: &KubeletOptions,
    network: &Network,
    pod: &Pod,
    ip: Ipv4Addr,
) -> Result<Launch, String> {
    let container = the_container(pod)?;
    let mut vars = BTreeMap::new();
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let value = env_value(client, pod, var, &vars, ip).await?;
        vars.insert(var.name.clone(), value.clone());
        env.push((var.name.clone(), value));
    }
    let dirs = volume_dirs(client, options, pod).await?;
    let mut mounts = Vec::new();
    for volume_mount in container.volume_mounts.iter().flatten() {
        let dir = dirs
            .get(&volume_mount.name)
            .ok_or_else(|| format!("volume {} cannot be mounted here", volume_mount.name))?;
        mounts.push((volume_mount.mount_path.clone(), dir.clone()));
    }
    let mut words: Vec<String> = container.command.clone().unwrap_or_default();
    words.extend(container.args.clone().unwrap_or_default());
    let mut words = words.iter().map(|w| expand(w, &vars));
    let command = words
        .next()
        .ok_or("the container names no command (image entrypoints are not known here)")?;
    let program = options
        .commands
        .get(&command)
        .cloned()
        .ok_or_else(|| format!("no executable for command {command:?}"))?;
    let translate = |value: &str| network.translate(&mount(value, &mounts), ip);
    let args = words.map(|w| translate(&w)).collect();
    let mut env: Vec<(String, String)> =
        env.iter().map(|(k, v)| (k.clone(), translate(v))).collect();
    env.extend(options.extra_env.iter().cloned());
    Ok(Launch { program, args, env })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_the_kubelet() {
        let vars = BTreeMap::from([("A".to_owned(), "x".to_owned())]);
        assert_eq!(expand("$(A).svc", &vars), "x.svc");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A) $", &vars), "$(A) $");
    }

    #[test]
    fn mount_paths_become_directories() {
        let mounts = vec![("/var/lib/data".to_owned(), PathBuf::from("/tmp/v1"))];
        assert_eq!(mount("/var/lib/data", &mounts), "/tmp/v1");
        assert_eq!(mount("/var/lib/data/x", &mounts), "/tmp/v1/x");
        assert_eq!(mount("/var/lib/database", &mounts), "/var/lib/database");
    }
}
