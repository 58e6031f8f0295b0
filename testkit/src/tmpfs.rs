//! A small tmpfs mounted over a directory, so that a test can fill a node's data volume for
//! real (`ENOSPC` from the kernel) and free it again. Mounting needs root (`CAP_SYS_ADMIN`) and
//! the `mount` command; [`Tmpfs::available`] says whether this machine can. Dropping the value
//! unmounts it (lazily, so that a process still holding files there does not keep it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::command::Cmd;
use crate::error::{Error, Result};

/// The file that takes up space on a filled volume.
const BALLAST: &str = "ballast";

/// A tmpfs mounted at a directory.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Whether tmpfs volumes can be mounted here: `Err` says why not.
    pub fn available() -> Result<()> {
        static PROBE: std::sync::OnceLock<std::result::Result<(), String>> =
            std::sync::OnceLock::new();
        PROBE
            .get_or_init(|| {
                let dir = std::env::temp_dir()
                    .join(format!("flotilla-tmpfs-probe-{}", std::process::id()));
                let _ = std::fs::create_dir_all(&dir);
                let made = Tmpfs::mount(&dir, 1 << 20).map(drop);
                let _ = std::fs::remove_dir(&dir);
                made.map_err(|e| {
                    format!("a tmpfs cannot be mounted here (needs root and mount): {e}")
                })
            })
            .clone()
            .map_err(Error::Unavailable)
    }

    /// Mounts a tmpfs of `bytes` over `dir` (made when missing; what it held is hidden until
    /// the tmpfs is unmounted).
    pub fn mount(dir: &Path, bytes: u64) -> Result<Tmpfs> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Unavailable(format!("creating {}: {e}", dir.display())))?;
        Cmd::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes}"))
            .arg("tmpfs")
            .arg(dir.display().to_string())
            .timeout(Duration::from_secs(20))
            .output()?;
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Free bytes on the volume.
    // The widths of statvfs's fields differ between platforms: u64 here, not everywhere.
    #[allow(clippy::useless_conversion)]
    pub fn free(&self) -> u64 {
        match nix::sys::statvfs::statvfs(&self.dir) {
            Ok(s) => u64::from(s.blocks_available()) * u64::from(s.fragment_size()),
            Err(e) => panic!("statvfs {}: {e}", self.dir.display()),
        }
    }

    /// Fills the volume with a ballast file until about `leave` bytes are free (what is free
    /// already below that stays as it is).
    pub fn fill(&self, leave: u64) {
        let path = self.dir.join(BALLAST);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let chunk = vec![0xa5u8; 64 << 10];
        while self.free() > leave {
            let n = (self.free() - leave).min(chunk.len() as u64) as usize;
            match file.write_all(&chunk[..n.max(1)]) {
                Ok(()) => {}
                // Full already: another writer took the rest.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("writing {}: {e}", path.display()),
            }
        }
        crate::progress(format!(
            "{}: filled, {} bytes free",
            self.dir.display(),
            self.free()
        ));
    }

    /// Removes the ballast: the space it took is free again.
    pub fn empty(&self) {
        let path = self.dir.join(BALLAST);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", path.display()),
        }
        crate::progress(format!(
            "{}: emptied, {} bytes free",
            self.dir.display(),
            self.free()
        ));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Cmd::new("umount")
            .args(["-l", &self.dir.display().to_string()])
            .timeout(Duration::from_secs(20))
            .output();
    }
}
