//! A Raft snapshot as it is kept and moved: one immutable file in the node's snapshot
//! directory, never held in memory whole. It is written once ([`SnapshotWriter`]), then read in
//! pieces: by the state machine installing it, and by the network sending it in chunks
//! ([`SnapshotFile::chunks`]), each read checked against the checksum of the whole file.
//!
//! A file is either kept (the stored snapshot of its group, or about to be) or pending (being
//! received, or built and not yet stored). A pending file is removed when its last handle goes,
//! so a snapshot Raft declines to install, or a build that fails, leaves nothing behind. A kept
//! file is removed by whoever stores the snapshot that replaces it; a file already open stays
//! readable after that (the file system keeps it until its last handle closes).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Stream;

/// What a snapshot file reports when its content no longer matches its checksum: the checksum
/// written and the one computed over what was read.
pub type OnDamage = Arc<dyn Fn(u32, u32) + Send + Sync>;

/// A snapshot file, opened. Cheap to clone: the clones share one handle.
#[derive(Clone)]
pub struct SnapshotFile {
    inner: Arc<Inner>,
}

struct Inner {
    file: File,
    path: PathBuf,
    len: u64,
    checksum: u32,
    kept: AtomicBool,
    on_damage: Option<OnDamage>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.kept.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("path", &self.inner.path)
            .field("len", &self.inner.len)
            .field("checksum", &format_args!("{:#010x}", self.inner.checksum))
            .finish()
    }
}

impl SnapshotFile {
    /// Opens the kept snapshot file at `path`, whose content should have `checksum`; when a
    /// read finds it does not, `on_damage` is told.
    pub fn open_kept(path: &Path, checksum: u32, on_damage: Option<OnDamage>) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(SnapshotFile {
            inner: Arc::new(Inner {
                file,
                path: path.to_path_buf(),
                len,
                checksum,
                kept: AtomicBool::new(true),
                on_damage,
            }),
        })
    }

    pub fn len(&self) -> u64 {
        self.inner.len
    }

    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// The CRC-32C of the whole file, as written.
    pub fn checksum(&self) -> u32 {
        self.inner.checksum
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Marks the file kept (it is, or is about to be, its group's stored snapshot) or pending
    /// again (storing it failed): a pending file goes with its last handle.
    pub fn set_kept(&self, kept: bool) {
        self.inner.kept.store(kept, Ordering::Release);
    }

    /// A reader from the start of the file (its handles share no position).
    pub fn reader(&self) -> Reader {
        Reader {
            file: self.clone(),
            at: 0,
        }
    }

    /// The whole file, read into memory (for tests).
    #[cfg(test)]
    pub fn bytes(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        io::Read::read_to_end(&mut self.reader(), &mut out)?;
        Ok(out)
    }

    /// Reads the whole file and compares it with its checksum: the checksum computed.
    pub fn verify(&self) -> io::Result<u32> {
        let mut crc = 0;
        let mut buf = vec![0; 1 << 20];
        let mut at = 0;
        while at < self.inner.len {
            let n = self.read_piece(at, &mut buf)?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            at += n as u64;
        }
        self.check(crc)?;
        Ok(crc)
    }

    /// The file in pieces of at most `piece` bytes, read as they are asked for. The last piece
    /// comes only when the checksum over all of them matches; otherwise the stream ends with an
    /// error (and the damage is reported), so a damaged snapshot is never sent whole.
    pub fn chunks(&self, piece: usize) -> impl Stream<Item = io::Result<Vec<u8>>> + Send + 'static {
        let file = self.clone();
        let piece = piece.max(1);
        futures::stream::unfold(Some((0u64, 0u32)), move |state| {
            let file = file.clone();
            async move {
                let (at, crc) = state?;
                if at >= file.len() {
                    return None;
                }
                let read = tokio::task::spawn_blocking(move || {
                    let want = (file.len() - at).min(piece as u64) as usize;
                    let mut buf = vec![0; want];
                    let mut got = 0;
                    while got < want {
                        let n = file.read_piece(at + got as u64, &mut buf[got..])?;
                        got += n;
                    }
                    let crc = crc32c::crc32c_append(crc, &buf);
                    let next = at + want as u64;
                    if next >= file.len() {
                        file.check(crc)?;
                    }
                    Ok::<_, io::Error>((buf, next, crc))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                match read {
                    Ok((buf, next, crc)) => Some((Ok(buf), Some((next, crc)))),
                    Err(e) => Some((Err(e), None)),
                }
            }
        })
    }

    /// Reads at `at` into `buf`: the bytes read (0 only at the end of the file).
    fn read_piece(&self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.file.read_at(buf, at)?;
        if n == 0 && !buf.is_empty() && at < self.inner.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "snapshot file {} ends at {at} bytes, {} expected",
                    self.inner.path.display(),
                    self.inner.len
                ),
            ));
        }
        Ok(n)
    }

    fn check(&self, computed: u32) -> io::Result<()> {
        if computed == self.inner.checksum {
            return Ok(());
        }
        if let Some(report) = &self.inner.on_damage {
            report(self.inner.checksum, computed);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "snapshot file {} is damaged: checksum {computed:#010x}, written {:#010x}",
                self.inner.path.display(),
                self.inner.checksum
            ),
        ))
    }
}

/// Reads a snapshot file in order (see [`SnapshotFile::reader`]).
pub struct Reader {
    file: SnapshotFile,
    at: u64,
}

impl io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.file.len() || buf.is_empty() {
            return Ok(0);
        }
        let room = (self.file.len() - self.at).min(buf.len() as u64) as usize;
        let n = self.file.read_piece(self.at, &mut buf[..room])?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Writes a new snapshot file, counting its checksum; the file is pending until
/// [`SnapshotWriter::finish`] hands it over, and removed if the writer is dropped before.
pub struct SnapshotWriter {
    out: Option<BufWriter<File>>,
    path: PathBuf,
    len: u64,
    checksum: u32,
}

impl SnapshotWriter {
    /// Creates the file `name` in `dir` (which must exist); it must not exist yet.
    pub fn create(dir: &Path, name: &str) -> io::Result<Self> {
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(SnapshotWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            path,
            len: 0,
            checksum: 0,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// Makes the file durable (its content and its name in the directory) and opens it, still
    /// pending: it is removed with its last handle unless it is kept.
    pub fn finish(mut self, on_damage: Option<OnDamage>) -> io::Result<SnapshotFile> {
        let Some(out) = self.out.take() else {
            return Err(io::Error::other("snapshot writer already finished"));
        };
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        drop(file);
        let opened = SnapshotFile::open_kept(&self.path, self.checksum, on_damage)?;
        opened.set_kept(false);
        // The handle owns the file now.
        self.path = PathBuf::new();
        Ok(opened)
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(out) = self.out.as_mut() else {
            return Err(io::Error::other("snapshot writer already finished"));
        };
        let n = out.write(buf)?;
        self.checksum = crc32c::crc32c_append(self.checksum, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.out = None;
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use futures::TryStreamExt;

    use super::*;

    fn written(dir: &Path, bytes: &[u8]) -> SnapshotFile {
        let mut w = SnapshotWriter::create(dir, "s.snap").expect("create");
        w.write_all(bytes).expect("write");
        assert_eq!(w.checksum(), crate::codec::checksum(bytes));
        w.finish(None).expect("finish")
    }

    #[test]
    fn a_pending_file_goes_with_its_last_handle_and_a_kept_one_stays() {
        let dir = tempfile::tempdir().expect("dir");
        let file = written(dir.path(), b"hello");
        let path = file.path().to_path_buf();
        let clone = file.clone();
        drop(file);
        assert!(path.exists(), "a clone still holds it");
        drop(clone);
        assert!(!path.exists(), "a pending file is removed");

        let file = written(dir.path(), b"hello");
        file.set_kept(true);
        let path = file.path().to_path_buf();
        drop(file);
        assert!(path.exists(), "a kept file stays");
    }

    #[test]
    fn a_writer_dropped_before_it_finished_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = SnapshotWriter::create(dir.path(), "s.snap").expect("create");
        w.write_all(b"half").expect("write");
        drop(w);
        assert!(!dir.path().join("s.snap").exists());
    }

    #[tokio::test]
    async fn chunks_and_the_reader_give_the_file_back_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let file = written(dir.path(), &bytes);
        let chunks: Vec<Vec<u8>> = file.chunks(3_000).try_collect().await.expect("chunks");
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks.concat(), bytes);
        let mut back = Vec::new();
        file.reader().read_to_end(&mut back).expect("read");
        assert_eq!(back, bytes);
        assert_eq!(
            file.verify().expect("verify"),
            crate::codec::checksum(&bytes)
        );
    }

    #[tokio::test]
    async fn a_damaged_file_is_never_sent_whole_and_the_damage_is_reported() {
        let dir = tempfile::tempdir().expect("dir");
        let bytes = vec![7u8; 10_000];
        let file = written(dir.path(), &bytes);
        file.set_kept(true);
        let path = file.path().to_path_buf();
        let sum = file.checksum();
        drop(file);
        let mut damaged = std::fs::read(&path).expect("read");
        damaged[5_000] ^= 0x04;
        std::fs::write(&path, &damaged).expect("write");
        let reported = Arc::new(std::sync::Mutex::new(None));
        let seen = reported.clone();
        let on_damage: OnDamage = Arc::new(move |_, c| *seen.lock().expect("lock") = Some(c));
        let file = SnapshotFile::open_kept(&path, sum, Some(on_damage)).expect("open");
        let pieces: Vec<io::Result<Vec<u8>>> =
            futures::StreamExt::collect(file.chunks(3_000)).await;
        assert_eq!(
            pieces.len(),
            4,
            "three pieces, then the error instead of the last"
        );
        assert!(pieces[..3].iter().all(|p| p.is_ok()));
        let err = pieces[3].as_ref().expect_err("the last piece is held back");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(
            *reported.lock().expect("lock"),
            Some(crate::codec::checksum(&damaged))
        );
        assert!(file.verify().is_err());
    }
}
