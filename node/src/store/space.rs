//! Free space on the data directory's volume, and when the node counts it as full.
//!
//! A node must never meet `ENOSPC` in the middle of a write: redb treats a failed write as a
//! broken database, and a Raft group whose log append fails stops. So the node keeps a reserve:
//! once the free space falls below it, the volume counts as full and the node stops taking what
//! grows its data (new documents, index builds, restores) while the reserve still holds what
//! Raft itself must write (elections, commit progress, deletes, transaction resolutions). The
//! volume counts as full until the free space is back above the reserve and half as much again,
//! so that a volume at the edge does not flip at every write.

use std::io;
use std::path::Path;

/// Default reserve: free bytes below which the volume counts as full.
pub const DEFAULT_RESERVE: u64 = 256 << 20;

/// A volume's size and free space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volume {
    pub total: u64,
    /// Bytes an unprivileged writer may still use.
    pub free: u64,
}

/// Reads the size and free space of the volume holding `dir`.
// The widths of statvfs's fields differ between platforms: u64 here, not everywhere.
#[allow(clippy::useless_conversion)]
pub fn measure(dir: &Path) -> io::Result<Volume> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    let block = u64::from(stat.fragment_size()).max(1);
    Ok(Volume {
        total: u64::from(stat.blocks()).saturating_mul(block),
        free: u64::from(stat.blocks_available()).saturating_mul(block),
    })
}

/// The reserve kept on a volume of `total` bytes when `configured` was asked for: at most a
/// tenth of the volume, so that a small volume is not full from the start.
pub fn reserve_for(total: u64, configured: u64) -> u64 {
    configured.min(total / 10)
}

/// Whether the volume counts as full after a measurement of `free` bytes, given whether it
/// counted as full before: full below the reserve; full again only above the reserve and half
/// as much again.
pub fn is_full(was_full: bool, free: u64, reserve: u64) -> bool {
    if was_full {
        free < reserve.saturating_add(reserve / 2)
    } else {
        free < reserve
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_is_full_below_its_reserve_and_stays_full_until_well_above_it() {
        let reserve = 100;
        assert!(!is_full(false, 100, reserve));
        assert!(is_full(false, 99, reserve));
        // Freed a little: still full, so that it does not flip at every write.
        assert!(is_full(true, 100, reserve));
        assert!(is_full(true, 149, reserve));
        assert!(!is_full(true, 150, reserve));
        assert!(!is_full(false, 150, reserve));
    }

    #[test]
    fn the_reserve_is_at_most_a_tenth_of_the_volume() {
        assert_eq!(reserve_for(10 << 30, DEFAULT_RESERVE), DEFAULT_RESERVE);
        assert_eq!(reserve_for(100 << 20, DEFAULT_RESERVE), 10 << 20);
        assert_eq!(reserve_for(0, DEFAULT_RESERVE), 0);
        assert!(!is_full(false, 0, reserve_for(0, DEFAULT_RESERVE)));
    }

    #[test]
    fn the_volume_of_a_directory_is_measured() {
        let dir = std::env::temp_dir();
        let volume = match measure(&dir) {
            Ok(v) => v,
            Err(e) => panic!("statvfs {}: {e}", dir.display()),
        };
        assert!(volume.total > 0);
        assert!(volume.free <= volume.total);
        assert!(measure(Path::new("/no/such/flotilla/dir")).is_err());
    }
}
