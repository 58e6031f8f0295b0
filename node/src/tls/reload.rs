//! A value built from files and built again when one of them changes: each use looks at the
//! files' metadata (modification time, size, inode: a few `stat` calls) and rebuilds when it
//! differs from what was loaded. A certificate rotated on disk (including Kubernetes' atomic
//! symlink swap of a mounted Secret) is therefore used by the next connection, with no restart;
//! connections already open keep the configuration they started with, so nothing in flight is
//! dropped. A rebuild that fails (files half written, key and certificate not matching yet)
//! keeps the previous value and is tried again at the next change.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::TlsError;

type Build<T> = dyn Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync;

/// A value built from the contents of some files, rebuilt when they change.
pub struct Reloading<T> {
    what: &'static str,
    paths: Vec<PathBuf>,
    build: Box<Build<T>>,
    loaded: Mutex<Loaded<T>>,
}

struct Loaded<T> {
    stamps: Vec<Option<Stamp>>,
    value: Arc<T>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamps(paths: &[PathBuf]) -> Vec<Option<Stamp>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p).ok().map(|m| Stamp {
                modified: m.modified().ok(),
                len: m.len(),
                inode: m.ino(),
            })
        })
        .collect()
}

fn read(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, TlsError> {
    paths
        .iter()
        .map(|path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })
        })
        .collect()
}

impl<T> Reloading<T> {
    /// Reads `paths` and builds the first value; an error here is a configuration error.
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        build: impl Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = stamps(&paths);
        let value = Arc::new(build(&read(&paths)?)?);
        Ok(Reloading {
            what,
            paths,
            build: Box::new(build),
            loaded: Mutex::new(Loaded { stamps, value }),
        })
    }

    /// The current value, rebuilt first when a file changed since it was built.
    pub fn current(&self) -> Arc<T> {
        let now = stamps(&self.paths);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if now != loaded.stamps {
            loaded.stamps = now;
            match read(&self.paths).and_then(|files| (self.build)(&files)) {
                Ok(value) => {
                    tracing::info!(what = self.what, files = ?self.paths, "TLS material reloaded");
                    loaded.value = Arc::new(value);
                }
                Err(e) => tracing::warn!(
                    what = self.what,
                    error = %e,
                    "TLS files changed but cannot be used; keeping the previous ones"
                ),
            }
        }
        loaded.value.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(files: &[Vec<u8>]) -> Result<String, TlsError> {
        let text = String::from_utf8_lossy(&files[0]).to_string();
        if text.starts_with("bad") {
            return Err(TlsError::NoCertificate { what: "test" });
        }
        Ok(text)
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_bad_one_keeps_the_previous_value() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("f");
        std::fs::write(&path, "one").expect("writing");
        let r = Reloading::new("test", vec![path.clone()], parse).expect("loads");
        assert_eq!(*r.current(), "one");
        std::fs::write(&path, "second").expect("writing");
        assert_eq!(*r.current(), "second");
        std::fs::write(&path, "bad file").expect("writing");
        assert_eq!(*r.current(), "second");
        std::fs::remove_file(&path).expect("removing");
        assert_eq!(*r.current(), "second");
        std::fs::write(&path, "third!").expect("writing");
        assert_eq!(*r.current(), "third!");
    }

    #[test]
    fn a_missing_file_is_an_error_at_start() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        assert!(matches!(
            Reloading::new("test", vec![dir.path().join("absent")], parse),
            Err(TlsError::Read { .. })
        ));
    }
}
