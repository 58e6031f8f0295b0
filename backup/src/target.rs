//! Backup targets named by URL: a local directory path, `file:///path`, or
//! `s3://bucket/prefix` (credentials, region and endpoint from the environment:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
//! `AWS_ALLOW_HTTP`, ...).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::error::{BackupError, Result};

/// An opened target: the store and the prefix the URL names in it.
#[derive(Debug, Clone)]
pub struct Target {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    pub url: String,
}

impl Target {
    /// Opens the target `url` names (a local directory is created when missing).
    pub fn open(url: &str) -> Result<Target> {
        let bad = |reason: String| BackupError::BadTarget {
            url: url.to_string(),
            reason,
        };
        let local = |dir: &std::path::Path| -> Result<Target> {
            std::fs::create_dir_all(dir)?;
            // A deleted backup's empty directory goes with its last file.
            let store = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
            Ok(Target {
                store: Arc::new(store),
                prefix: Path::default(),
                url: url.to_string(),
            })
        };
        if !url.contains("://") {
            return local(std::path::Path::new(url));
        }
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not a local path".into()))?;
                local(&dir)
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("no bucket".into()))?;
                let store = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()?;
                let prefix =
                    Path::parse(parsed.path().trim_matches('/')).map_err(|e| bad(e.to_string()))?;
                Ok(Target {
                    store: Arc::new(store),
                    prefix,
                    url: url.to_string(),
                })
            }
            other => Err(bad(format!(
                "scheme {other}:// is not supported (a path, file:// or s3://)"
            ))),
        }
    }

    /// The path of `name` under this target's prefix.
    pub fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.prefix.clone(), |p, part| p.clone().join(*part))
    }

    /// The URL of the backup `id` under this target.
    pub fn child_url(&self, id: &str) -> String {
        format!("{}/{id}", self.url.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_and_file_urls_open_and_other_schemes_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a");
        Target::open(plain.to_str().unwrap()).unwrap();
        assert!(plain.is_dir());
        let url = format!("file://{}", dir.path().join("b").display());
        Target::open(&url).unwrap();
        assert!(dir.path().join("b").is_dir());
        assert!(matches!(
            Target::open("ftp://host/x"),
            Err(BackupError::BadTarget { .. })
        ));
        assert!(matches!(
            Target::open("s3:///nobucket"),
            Err(BackupError::BadTarget { .. })
        ));
    }
}
