//! The certificates of a TLS dev cluster (`flotilla-node dev --tls`): a CA made for the run,
//! a certificate per node (its client, HTTP and peer ports, for 127.0.0.1 and localhost; also
//! presented to peers, whose port asks for one signed by the CA) and one for clients, written
//! as PEM under `DATA_DIR/tls/`. They are made again on every start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// Where a certificate and its key were written.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files of a TLS dev cluster.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The CA certificate: what clients trust, and what the nodes verify each other against.
    pub ca: PathBuf,
    /// One per node, in node order.
    pub nodes: Vec<CertFiles>,
    /// For the command line and other clients (common name `dev-client`).
    pub client: CertFiles,
}

/// Makes a CA and certificates for `nodes` nodes and one client, and writes them under `dir`
/// (created if missing; keys readable by their owner only).
pub fn write(dir: &Path, nodes: usize) -> anyhow::Result<DevCerts> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Flotilla dev cluster CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let ca_path = dir.join("ca.crt");
    write_file(&ca_path, ca.pem().as_bytes(), false)?;
    let issue = |name: &str| -> anyhow::Result<CertFiles> {
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let mut params = CertificateParams::new(hosts)?;
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        write_file(&files.cert, cert.pem().as_bytes(), false)?;
        write_file(&files.key, key.serialize_pem().as_bytes(), true)?;
        Ok(files)
    };
    let nodes = (0..nodes)
        .map(|i| issue(&format!("node-{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = issue("dev-client")?;
    Ok(DevCerts {
        ca: ca_path,
        nodes,
        client,
    })
}

/// Writes `bytes` to `path` (replacing it), readable by its owner only when `secret`.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        // A key left by an earlier run keeps its mode through a truncating open: start anew.
        let _ = std::fs::remove_file(path);
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificates_of_a_dev_cluster_make_working_tls_configurations() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let certs = write(dir.path(), 2).expect("certificates");
        assert_eq!(certs.nodes.len(), 2);
        let read = |p: &Path| std::fs::read(p).expect("a written file");
        let (ca, node) = (read(&certs.ca), &certs.nodes[1]);
        crate::tls::server_config(
            &read(&node.cert),
            &read(&node.key),
            Some(&ca),
            crate::tls::ClientAuth::Required,
            &[b"h2"],
        )
        .expect("a server configuration");
        crate::tls::client_config(
            &ca,
            Some((&read(&certs.client.cert), &read(&certs.client.key))),
        )
        .expect("a client configuration");
        let mode = std::fs::metadata(&certs.client.key)
            .expect("the key")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
