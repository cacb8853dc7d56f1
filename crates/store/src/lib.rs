//! The embedded store: a directory of append-only NDJSON segment files, one batch line per
//! append, fsynced before `append` returns, rotated by size.
//!
//! A crash can leave the last line of the newest segment torn (no newline). That line is never
//! repaired or removed — it is evidence, and the verifier reports it as malformed — and it never
//! corrupts later appends: a store reopened over a torn segment starts a new segment.
#![forbid(unsafe_code)]

pub mod lines;
pub mod reader;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".ndjson";

/// Segments rotate once they reach this size (64 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Why the store could not be opened, appended to or read; file errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The directory or segment file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another process holds the directory's lock: two writers would interleave their lines.
    #[error("{0}: another process is writing to this store")]
    Locked(PathBuf),
    /// [`Store::append`] was given something other than exactly one line: nothing was written.
    #[error("a stored line must end with one newline and contain no other")]
    NotOneLine,
    /// A segment's name is taken by a directory, symlink, FIFO or device; it is not followed,
    /// so that storage cannot make the reader block or read another file.
    #[error("{path}: {what}, not a regular file: not read (a store holds regular segment files only)")]
    NotRegular {
        /// The segment's path.
        path: PathBuf,
        /// What it is instead, e.g. "a symbolic link".
        what: &'static str,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// How a [`Store`] writes.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// A line that would take a segment past this many bytes starts a new segment; lines are
    /// never split, so a line longer than this has a segment of its own.
    pub segment_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { segment_bytes: DEFAULT_SEGMENT_BYTES }
    }
}

/// Why [`lock_dir`] did not take the lock.
#[derive(Debug)]
pub enum DirLockError {
    /// Another process holds the lock.
    Held,
    /// The lock file could not be created or locked.
    Io {
        /// The lock file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

/// Takes the exclusive advisory lock on the directory `dir` itself; it is held until the
/// returned handle is dropped, and released by the kernel if the process dies. On the directory,
/// not on a file in it: whoever controls the storage could unlink a lock file while it is held,
/// and a second process would then lock a new one and write beside the first (two signers on
/// one chain state). A directory in use cannot be removed.
pub fn lock_dir(dir: &Path) -> Result<File, DirLockError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| DirLockError::Io { path: dir.to_path_buf(), source };
    // O_DIRECTORY: anything else there (a FIFO would block the open) is refused.
    let lock = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(dir).map_err(io)?;
    lock.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => DirLockError::Held,
        fs::TryLockError::Error(source) => io(source),
    })?;
    Ok(lock)
}

/// Replaces `path` with `bytes` durably: write a temporary file, fsync, rename, fsync the
/// directory; a crash leaves the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let parent = parent_dir(path);
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| (tmp.clone(), e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| (tmp.clone(), e))?;
    fs::rename(&tmp, path).map_err(|e| (path.to_path_buf(), e))?;
    File::open(parent).and_then(|d| d.sync_all()).map_err(|e| (parent.to_path_buf(), e))
}

/// The directory `path` is in: `.` for a bare file name, whose `parent()` is the empty path
/// (which cannot be opened to be fsynced).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes a new secret file (a private key): created, never replaced, mode 0600, fsynced.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The segment files of a store, oldest first.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    Ok(indexed_segments(dir)?.into_iter().map(|(_, p)| p).collect())
}

/// Opens a segment for reading: a regular file only. A symbolic link is not followed and a FIFO
/// or device is not read: whoever controls the store's directory could otherwise make a reader
/// hang (a FIFO, `/dev/zero`) or read a file that is not part of the store.
pub fn open_segment_to_read(path: &Path) -> Result<File, StoreError> {
    match open_regular(path, OpenOptions::new().read(true)) {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(what)) => Err(StoreError::NotRegular { path: path.to_path_buf(), what }),
        Err(source) => Err(StoreError::Io { path: path.to_path_buf(), source }),
    }
}

/// Reads a small file that host storage holds (a chain state, a cursor, a saved position): a
/// regular file of at most `max_bytes` only, so that a FIFO, device or link planted in its place
/// is refused by name rather than hanging the reader, holding its stop or redirecting it.
/// A missing file is `NotFound`, as from `fs::read`.
pub fn read_host_file(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidData, message);
    let file = open_regular(path, OpenOptions::new().read(true))?
        .map_err(|what| invalid(format!("{what}, not a regular file: not read")))?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(invalid(format!("larger than the {max_bytes} bytes such a file has: not read")));
    }
    Ok(bytes)
}

/// Opens `path` with `options`, not following a symbolic link and not waiting on a FIFO; the
/// file if it is a regular one, else what it is instead.
fn open_regular(path: &Path, options: &mut OpenOptions) -> io::Result<Result<File, &'static str>> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = match options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Err("a symbolic link")),
        Err(e) => return Err(e),
    };
    let kind = file.metadata()?.file_type();
    Ok(if kind.is_file() {
        Ok(file)
    } else if kind.is_fifo() {
        Err("a FIFO")
    } else if kind.is_char_device() || kind.is_block_device() {
        Err("a device")
    } else if kind.is_socket() {
        Err("a socket")
    } else {
        Err("a directory or other special file")
    })
}

/// The segment files of a store with their indexes, oldest first.
pub fn indexed_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(index) = segment_index(name) {
            found.push((index, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn segment_index(name: &str) -> Option<u64> {
    name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{index:012}{SEGMENT_SUFFIX}"))
}

/// A store opened for appending. Holds an exclusive lock on the directory while it lives.
pub struct Store {
    dir: PathBuf,
    options: StoreOptions,
    segment: File,
    segment_path: PathBuf,
    index: u64,
    len: u64,
    _lock: File,
}

impl Store {
    /// Opens (creating it if need be) the store in `dir` for appending, and locks it against
    /// other writers. Appends continue the newest segment, unless it ends in a torn line, which
    /// is left as evidence: then they start a new segment.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock_dir(dir).map_err(|e| match e {
            DirLockError::Held => StoreError::Locked(dir.to_path_buf()),
            DirLockError::Io { path, source } => StoreError::Io { path, source },
        })?;

        let existing = segments(dir)?;
        let last = existing.last().and_then(|p| Some((segment_index(p.file_name()?.to_str()?)?, p.clone())));
        let (index, reuse) = match last {
            None => (1, false),
            Some((index, path)) => {
                if ends_cleanly(&path)? {
                    (index, true)
                } else {
                    // A torn last line stays where it is; later lines go to a fresh segment.
                    (index + 1, false)
                }
            }
        };
        let path = segment_path(dir, index);
        let segment = open_segment(dir, &path, !reuse)?;
        let len = segment.metadata().map_err(io_err(&path))?.len();
        Ok(Self { dir: dir.to_path_buf(), options, segment, segment_path: path, index, len, _lock: lock })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the next append goes: everything before it is durable.
    pub fn position(&self) -> reader::Position {
        reader::Position { segment: self.index, offset: self.len }
    }

    /// Appends one line (ending in `\n`) and fsyncs it. On error nothing of the line remains.
    pub fn append(&mut self, line: &[u8]) -> Result<(), StoreError> {
        if line.last() != Some(&b'\n') || memchr::memchr(b'\n', &line[..line.len() - 1]).is_some() {
            return Err(StoreError::NotOneLine);
        }
        self.append_lines(line)
    }

    /// Appends whole lines (each ending in `\n`) with one fsync, into one segment. On error
    /// nothing of them remains.
    pub fn append_lines(&mut self, lines: &[u8]) -> Result<(), StoreError> {
        if lines.last() != Some(&b'\n') {
            return Err(StoreError::NotOneLine);
        }
        if self.len > 0 && self.len + lines.len() as u64 > self.options.segment_bytes {
            self.rotate()?;
        }
        let result = self.segment.write_all(lines).and_then(|()| self.segment.sync_data());
        if let Err(source) = result {
            // Cut back to the last whole line so that the next append starts clean; if even
            // that fails, move on to a new segment and leave the partial line as evidence.
            if self.segment.set_len(self.len).and_then(|()| self.segment.sync_data()).is_err() {
                self.rotate()?;
            }
            return Err(StoreError::Io { path: self.segment_path.clone(), source });
        }
        self.len += lines.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        self.index += 1;
        self.segment_path = segment_path(&self.dir, self.index);
        self.segment = open_segment(&self.dir, &self.segment_path, true)?;
        self.len = 0;
        Ok(())
    }
}

/// Opens a segment to append to (creating it if `new`): a regular file only, as for reading.
fn open_segment(dir: &Path, path: &Path, new: bool) -> Result<File, StoreError> {
    let file = open_regular(path, OpenOptions::new().append(true).create(new))
        .map_err(io_err(path))?
        .map_err(|what| StoreError::NotRegular { path: path.to_path_buf(), what })?;
    if new {
        // Make the new directory entry durable too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    }
    Ok(file)
}

fn ends_cleanly(path: &Path) -> Result<bool, StoreError> {
    let mut file = open_segment_to_read(path)?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1)).map_err(io_err(path))?;
    file.read_exact(&mut last).map_err(io_err(path))?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path) -> Vec<String> {
        segments(dir).unwrap().iter().map(|p| fs::read_to_string(p).unwrap()).collect()
    }

    #[test]
    fn a_bare_file_name_is_written_in_the_current_directory() {
        // `teelog evidence export --out b.json` wrote the file, then failed to fsync "".
        assert_eq!(parent_dir(Path::new("b.json")), Path::new("."));
        assert_eq!(parent_dir(Path::new("out/b.json")), Path::new("out"));
        assert_eq!(parent_dir(Path::new("/b.json")), Path::new("/"));
    }

    #[test]
    fn appends_rotates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions { segment_bytes: 10 }).unwrap();
        store.append(b"aaaa\n").unwrap();
        store.append(b"bbbb\n").unwrap();
        store.append(b"cccc\n").unwrap();
        assert!(matches!(store.append(b"x"), Err(StoreError::NotOneLine)));
        assert!(matches!(store.append(b"x\ny\n"), Err(StoreError::NotOneLine)));
        drop(store);
        let mut store = Store::open(dir.path(), StoreOptions { segment_bytes: 10 }).unwrap();
        store.append(b"dddd\n").unwrap();
        assert_eq!(read(dir.path()), ["aaaa\nbbbb\n", "cccc\ndddd\n"]);
    }

    #[test]
    fn a_torn_segment_is_left_alone_and_writing_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.append(b"whole\n").unwrap();
        drop(store);
        let first = segments(dir.path()).unwrap().remove(0);
        OpenOptions::new().append(true).open(&first).unwrap().write_all(b"{\"tor").unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.append(b"after\n").unwrap();
        assert_eq!(read(dir.path()), ["whole\n{\"tor", "after\n"]);
    }

    #[test]
    fn a_fifo_or_link_planted_as_the_newest_segment_or_a_small_file_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("segment-000000000003.ndjson");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let err = Store::open(dir.path(), StoreOptions::default()).err().unwrap().to_string();
        assert!(err.contains("segment-000000000003.ndjson: a FIFO, not a regular file"), "{err}");
        let err = read_host_file(&fifo, 100).unwrap_err().to_string();
        assert!(err.contains("a FIFO, not a regular file"), "{err}");
        std::fs::remove_file(&fifo).unwrap();

        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "kept\n").unwrap();
        std::os::unix::fs::symlink(&victim, &fifo).unwrap();
        let err = Store::open(dir.path(), StoreOptions::default()).err().unwrap().to_string();
        assert!(err.contains("a symbolic link, not a regular file"), "{err}");
        assert!(read_host_file(&fifo, 100).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"kept\n", "nothing written through the link");

        assert_eq!(read_host_file(&victim, 100).unwrap(), b"kept\n");
        assert!(read_host_file(&victim, 4).unwrap_err().to_string().contains("larger than the 4 bytes"));
        let missing = read_host_file(&dir.path().join("none"), 100).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert!(matches!(Store::open(dir.path(), StoreOptions::default()), Err(StoreError::Locked(_))));
    }
}
