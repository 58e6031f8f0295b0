//! Opening the node's two database files: through the test backends when asked (power loss,
//! slow syncs), and checked whole by redb when the node did not stop cleanly last time.

use std::io;
use std::path::Path;
use std::time::Duration;

use redb::Database;

use super::{StoreError, power_loss, slow_disk};

/// The file a node writes when it stops cleanly (every write durable, the writers stopped) and
/// removes when it opens its storage: opened without it, the data files are checked whole
/// (see [`Storage::open_with`]).
pub(super) const CLEAN_STOP: &str = "clean-stop";

/// Opens (or creates) the database file at `path`, through the power-loss backend when asked;
/// with `check`, runs redb's integrity check of the whole file (and its repair, when it can)
/// first, logging its progress.
pub(super) fn open_file(
    builder: &mut redb::Builder,
    path: &Path,
    test: TestModes,
    check: bool,
) -> Result<Database, StoreError> {
    if !check {
        return create(builder, path, test);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tracing::warn!(
        file = name,
        "the node did not stop cleanly: checking the whole file"
    );
    let started = std::time::Instant::now();
    let last = std::cell::Cell::new(started);
    let logged = name.clone();
    builder
        .set_check_integrity_on_open(true)
        .set_repair_callback(move |session| {
            if last.get().elapsed() >= Duration::from_secs(5) {
                last.set(std::time::Instant::now());
                tracing::info!(
                    file = logged,
                    progress = format!("{:.0} %", session.progress() * 100.0),
                    "checking the file"
                );
            }
        });
    match create(builder, path, test) {
        Ok(db) => {
            tracing::info!(
                file = name,
                seconds = started.elapsed().as_secs_f64(),
                "file checked: whole"
            );
            Ok(db)
        }
        Err(StoreError::Redb(e)) => Err(StoreError::Integrity {
            file: name,
            error: e.to_string(),
        }),
        Err(e) => Err(e),
    }
}

/// Opens (or creates) the database file at `path`, through the power-loss backend when asked.
pub(super) fn create(
    builder: &redb::Builder,
    path: &Path,
    test: TestModes,
) -> Result<Database, StoreError> {
    if !test.power_loss && !test.storage_faults {
        return Ok(builder.create(path)?);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let trigger = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(slow_disk::SLOW_SYNC);
    let db = match (test.power_loss, test.storage_faults) {
        (true, true) => builder.create_with_backend(slow_disk::SlowSyncBackend::new(
            power_loss::PowerLossBackend::new(file)?,
            trigger,
        ))?,
        (true, false) => builder.create_with_backend(power_loss::PowerLossBackend::new(file)?)?,
        _ => builder.create_with_backend(slow_disk::SlowSyncBackend::new(
            redb::backends::FileBackend::new(file).map_err(io::Error::other)?,
            trigger,
        ))?,
    };
    Ok(db)
}

/// How a node's storage behaves in tests (both off in production).
#[derive(Debug, Clone, Copy, Default)]
pub struct TestModes {
    /// Unsynced writes live in memory, lost at a kill (see [`super::power_loss`]).
    pub power_loss: bool,
    /// Faults injected by trigger files in the data directory: failing applies (see
    /// [`super::faults`]) and slow syncs (see [`super::slow_disk`]).
    pub storage_faults: bool,
}
