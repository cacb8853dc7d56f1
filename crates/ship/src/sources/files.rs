//! Following NDJSON files across rotation, from a position kept in the spool.
//!
//! Each configured file has a follower that polls it. Complete lines are submitted in chunks,
//! and once a chunk is in the spool the follower saves where the next line starts (the file's
//! device and inode, and the offset) in `<spool>/sources/`. A restart resumes there: a crash
//! may ship lines twice, never skip one. A partial last line waits for its newline.
//!
//! Rotation by rename + create (logrotate's default): the old file is read to its end through
//! the handle kept open, then the new one is followed from its start. By copytruncate (the file
//! shrinks below what was read): it is read again from its start. A missing file is waited for;
//! a deleted one is still read to its end while its path is watched.
//!
//! Not seen: a file rotated away while the daemon is down (the file then at the path is read
//! from its start), and a truncation overwritten past the old size before the next poll.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use teelog_store::lines::{Line, LineReader};
use tokio::sync::watch;

use super::Chunker;
use crate::metrics::ShipMetrics;
use crate::pipeline::{Origin, RecordBuf, SubmitError, Submitter};

/// A file's identity, which survives renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// A file as one `stat` saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub id: FileId,
    pub size: u64,
}

impl Seen {
    fn of(meta: &std::fs::Metadata) -> Self {
        Seen { id: FileId { dev: meta.dev(), ino: meta.ino() }, size: meta.len() }
    }
}

/// The open file, as far as the follower has got in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub id: FileId,
    /// Where the next line starts: everything before it is in the spool.
    pub offset: u64,
    /// How far the last read got: beyond `offset` by a partial line waiting for its newline.
    pub read_to: u64,
}

/// What a follower does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing is open and nothing is at the path: wait for it to appear.
    Wait,
    /// Open the file at the path.
    Open,
    /// The open file has grown: read it.
    Read,
    /// Read to its end, nothing new.
    Idle,
    /// The open file is shorter than what was read (copytruncate): read it again from its start.
    Truncated,
    /// The open file is read to its end and another file with data is at the path (rename +
    /// create): finish the old one, then follow the new one.
    Switch,
}

/// Decides the next step from the open file (with its size now) and what is at the path now.
pub fn next_step(open: Option<(Reading, u64)>, at_path: Option<Seen>) -> Step {
    let Some((reading, size)) = open else {
        return if at_path.is_some() { Step::Open } else { Step::Wait };
    };
    if size < reading.read_to {
        return Step::Truncated;
    }
    if size > reading.read_to {
        return Step::Read;
    }
    match at_path {
        // Until the new file has data the writer may not have reopened yet, and lines may
        // still arrive in the old one.
        Some(seen) if seen.id != reading.id && seen.size > 0 => Step::Switch,
        _ => Step::Idle,
    }
}

/// A follower's saved position: the next line of file `id` starts at `offset` and is line
/// `line + 1`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// For people reading the file; the identity is what counts.
    pub path: String,
    #[serde(flatten)]
    pub id: FileId,
    pub offset: u64,
    pub line: u64,
}

/// Where to start in a file just opened at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// From the saved position.
    At { offset: u64, line: u64 },
    /// From the start: no position is saved.
    Fresh,
    /// From the start: the position saved is in another file (rotated while the daemon was down).
    Replaced,
    /// From the start: the file is shorter than the position saved (truncated meanwhile).
    Truncated,
}

pub fn resume(saved: Option<&Cursor>, opened: Seen) -> Resume {
    match saved {
        None => Resume::Fresh,
        Some(cursor) if cursor.id != opened.id => Resume::Replaced,
        Some(cursor) if cursor.offset > opened.size => Resume::Truncated,
        Some(cursor) => Resume::At { offset: cursor.offset, line: cursor.line },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is {kind}, not a regular file; it is not followed (a symbolic link: name its target in sources.files)")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path}: {source}")]
    Submit { path: String, source: SubmitError },
}

/// The cursor file of `path`: its name, for people, and a hash of the whole path, so that two
/// files of the same name never share one.
fn cursor_file(spool: &Path, path: &Path) -> PathBuf {
    let digest = teelog_core::merkle::sha256(path.as_os_str().as_encoded_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let stem: String = name
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    spool.join("sources").join(format!("{stem}-{hash}.json"))
}

/// What stays the same for a follower while files come and go.
struct Target {
    path: PathBuf,
    name: String,
    cursor_file: PathBuf,
    max_line_bytes: usize,
    submitter: Submitter,
    metrics: Arc<ShipMetrics>,
}

struct OpenFile {
    file: File,
    reading: Reading,
    /// Lines before `reading.offset`.
    line: u64,
}

/// Follows one file; see the module documentation.
pub struct Follower {
    target: Target,
    open: Option<OpenFile>,
    /// The position saved by an earlier run, until the first file is opened.
    saved: Option<Cursor>,
    /// The last problem reported, so that one that persists is reported once.
    problem: Option<String>,
    /// The same for what is at the path, while the open file is still read.
    odd_path: Option<String>,
}

impl Follower {
    pub fn new(path: &Path, spool: &Path, max_line_bytes: usize, submitter: Submitter) -> Self {
        let cursor_file = cursor_file(spool, path);
        let name = path.display().to_string();
        let saved = match std::fs::read(&cursor_file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| {
                    tracing::warn!(target: "teelog::ship", "{}: {e}; {name} is read from its start", cursor_file.display());
                })
                .ok(),
            Err(_) => None,
        };
        let metrics = submitter.shared().metrics.clone();
        let target =
            Target { path: path.to_path_buf(), name, cursor_file, max_line_bytes, submitter, metrics };
        Self { target, open: None, saved, problem: None, odd_path: None }
    }

    /// Polls every `interval` until `stop` turns true, with a last look after it has.
    pub fn run(mut self, stop: watch::Receiver<bool>, interval: Duration) {
        tracing::info!(target: "teelog::ship", "following {}", self.target.name);
        loop {
            match self.poll(&stop) {
                Ok(()) => self.problem = None,
                Err(e @ FollowError::Submit { .. }) => {
                    tracing::error!(target: "teelog::ship", "{e}");
                    return;
                }
                // A read cut short by the stop: the next run resumes from the saved position.
                Err(_) if *stop.borrow() => return,
                Err(e) => {
                    let message = e.to_string();
                    if self.problem.as_ref() != Some(&message) {
                        tracing::warn!(target: "teelog::ship", "{message}; retrying");
                        self.problem = Some(message);
                    }
                }
            }
            if *stop.borrow() {
                return;
            }
            std::thread::sleep(interval);
        }
    }

    /// Looks at the path and the open file once, and does what that calls for.
    pub fn poll(&mut self, stop: &watch::Receiver<bool>) -> Result<(), FollowError> {
        let at_path = self.at_path();
        let open = match &self.open {
            Some(open) => Some((open.reading, open.file.metadata().map_err(|e| self.target.io(e))?.len())),
            None => None,
        };
        match next_step(open, at_path) {
            Step::Wait | Step::Idle => Ok(()),
            Step::Read => self.read(false, stop),
            Step::Open => {
                self.open_path()?;
                self.read(false, stop)
            }
            Step::Truncated => {
                if let Some(open) = &mut self.open {
                    tracing::warn!(target: "teelog::ship", "{}: truncated (copytruncate?); reading it again from the start", self.target.name);
                    open.reading.offset = 0;
                    open.reading.read_to = 0;
                    open.line = 0;
                    // Saved now: the file may be refilled past the old offset before the next save.
                    self.target.save(&open.reading, open.line);
                }
                self.read(false, stop)
            }
            Step::Switch => {
                // The old file is final: its last line counts even without a newline.
                self.read(true, stop)?;
                tracing::info!(target: "teelog::ship", "{}: rotated; following the new file", self.target.name);
                self.open = None;
                self.open_path()?;
                self.read(false, stop)
            }
        }
    }

    /// The regular file at the path, if there is one. Anything else there (a symbolic link,
    /// which could lead to a file the configuration did not name; a FIFO or a device, which
    /// could block the follower) is reported once and treated as no file.
    fn at_path(&mut self) -> Option<Seen> {
        let meta = std::fs::symlink_metadata(&self.target.path).ok()?;
        if let Err(e) = self.target.regular(&meta) {
            let message = e.to_string();
            if self.odd_path.as_ref() != Some(&message) {
                tracing::warn!(target: "teelog::ship", "{message}");
                self.odd_path = Some(message);
            }
            return None;
        }
        self.odd_path = None;
        Some(Seen::of(&meta))
    }

    fn open_path(&mut self) -> Result<(), FollowError> {
        let target = &self.target;
        // No-follow and non-blocking, then checked: what was looked at may have been replaced
        // since by a link or a FIFO, whose open would otherwise follow it or wait for a writer.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&target.path)
            .map_err(|e| target.io(e))?;
        let meta = file.metadata().map_err(|e| target.io(e))?;
        target.regular(&meta)?;
        let seen = Seen::of(&meta);
        let (offset, line) = match resume(self.saved.take().as_ref(), seen) {
            Resume::At { offset, line } => (offset, line),
            Resume::Fresh => (0, 0),
            Resume::Replaced => {
                tracing::warn!(target: "teelog::ship", "{}: not the file last read (rotated while stopped?); reading it from the start", target.name);
                (0, 0)
            }
            Resume::Truncated => {
                tracing::warn!(target: "teelog::ship", "{}: shorter than the position saved (truncated while stopped?); reading it from the start", target.name);
                (0, 0)
            }
        };
        let reading = Reading { id: seen.id, offset, read_to: offset };
        self.open = Some(OpenFile { file, reading, line });
        Ok(())
    }

    /// Reads the open file from its offset to its end, submitting complete lines (and with
    /// `last`, a final unterminated one) and saving the position after each acknowledged chunk.
    fn read(&mut self, last: bool, stop: &watch::Receiver<bool>) -> Result<(), FollowError> {
        let target = &self.target;
        let Some(open) = &mut self.open else { return Ok(()) };
        let start = open.reading.offset;
        let first = open.line;
        (&open.file).seek(SeekFrom::Start(start)).map_err(|e| target.io(e))?;
        // The rest of a rotated file is read to its end even when stopping (within the daemon's
        // bound on a stop), since the next run would not find it.
        let input = UntilStop { file: &open.file, stop: (!last).then_some(stop) };
        let mut reader = LineReader::new(BufReader::with_capacity(1 << 16, input), target.max_line_bytes);
        let mut chunker = Chunker::new(&target.name, target.max_line_bytes);
        // The end of the last line taken, and its number.
        let mut taken = (start, first);
        // How far this read got, partial lines included.
        let mut read_to = start;
        while let Some((n, line, end)) = reader.next_line_with_end().map_err(|e| target.io(e))? {
            read_to = start + end.offset;
            if !end.terminated && !last {
                break;
            }
            taken = (read_to, first + n);
            let full = match line {
                Line::Complete(bytes) | Line::Unterminated(bytes) => chunker.push(first + n, bytes),
                Line::TooLong => chunker.push_too_long(first + n, reader.skipped(), &target.metrics),
            };
            if let Some((records, origin)) = full {
                target.commit(records, origin, &mut open.reading, &mut open.line, taken)?;
                // A long backlog does not hold up a stop, since the next run resumes here; a
                // rotated file is finished, since the next run would not find it.
                if *stop.borrow() && !last {
                    return Ok(());
                }
            }
        }
        open.reading.read_to = read_to;
        if let Some((records, origin)) = chunker.take() {
            target.commit(records, origin, &mut open.reading, &mut open.line, taken)?;
        }
        Ok(())
    }
}

/// A file read that fails once the daemon stops, so that no file (one written faster than it
/// is read, one endless line) holds the stop; what was not committed is read again next run.
struct UntilStop<'a> {
    file: &'a File,
    stop: Option<&'a watch::Receiver<bool>>,
}

impl Read for UntilStop<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.is_some_and(|stop| *stop.borrow()) {
            return Err(std::io::Error::other("stopping"));
        }
        self.file.read(buf)
    }
}

impl Target {
    fn io(&self, source: std::io::Error) -> FollowError {
        FollowError::Io { path: self.name.clone(), source }
    }

    /// Ok for a regular file; else what it is, as an error naming the path.
    fn regular(&self, meta: &std::fs::Metadata) -> Result<(), FollowError> {
        let kind = meta.file_type();
        let kind = if kind.is_file() {
            return Ok(());
        } else if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_dir() {
            "a directory"
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&kind) {
            "a FIFO"
        } else {
            "a device or socket"
        };
        Err(FollowError::NotRegular { path: self.name.clone(), kind })
    }

    /// Submits a chunk, waits until it is in the spool, then moves the position past it.
    fn commit(
        &self,
        records: RecordBuf,
        origin: Origin,
        reading: &mut Reading,
        line: &mut u64,
        taken: (u64, u64),
    ) -> Result<(), FollowError> {
        self.submitter
            .submit_sealed_blocking(records, origin)
            .map_err(|source| FollowError::Submit { path: self.name.clone(), source })?;
        (reading.offset, *line) = taken;
        self.save(reading, *line);
        Ok(())
    }

    /// A position that cannot be saved costs duplicates after a restart, not lost lines: it is
    /// reported, and following goes on.
    fn save(&self, reading: &Reading, line: u64) {
        let cursor = Cursor { path: self.name.clone(), id: reading.id, offset: reading.offset, line };
        let json = serde_json::to_vec(&cursor).unwrap_or_default();
        let saved = teelog_deliver::delivery::save_position(&self.cursor_file, &json);
        if let Err((path, e)) = saved {
            tracing::warn!(target: "teelog::ship", "cannot save the position in {}: {}: {e}", self.name, path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileId = FileId { dev: 1, ino: 10 };
    const B: FileId = FileId { dev: 1, ino: 11 };

    fn reading(id: FileId, offset: u64, read_to: u64) -> Reading {
        Reading { id, offset, read_to }
    }

    fn seen(id: FileId, size: u64) -> Option<Seen> {
        Some(Seen { id, size })
    }

    #[test]
    fn a_missing_file_is_waited_for_then_opened() {
        assert_eq!(next_step(None, None), Step::Wait);
        assert_eq!(next_step(None, seen(A, 0)), Step::Open);
    }

    #[test]
    fn growth_is_read_and_a_partial_line_waits_for_more() {
        assert_eq!(next_step(Some((reading(A, 10, 10), 15)), seen(A, 15)), Step::Read);
        // 10..14 is a line without its newline: read once, then waited on.
        assert_eq!(next_step(Some((reading(A, 10, 14), 14)), seen(A, 14)), Step::Idle);
        assert_eq!(next_step(Some((reading(A, 10, 14), 20)), seen(A, 20)), Step::Read);
    }

    #[test]
    fn rename_and_create_finishes_the_old_file_first() {
        // Renamed away and still growing: the open handle is read to its end first.
        assert_eq!(next_step(Some((reading(A, 10, 10), 30)), seen(B, 5)), Step::Read);
        // Read to its end, but the new file is still empty: the writer may not have reopened.
        assert_eq!(next_step(Some((reading(A, 30, 30), 30)), seen(B, 0)), Step::Idle);
        assert_eq!(next_step(Some((reading(A, 30, 30), 30)), seen(B, 5)), Step::Switch);
        // A partial last line does not hold up the switch: it is read as the old file's last.
        assert_eq!(next_step(Some((reading(A, 30, 34), 34)), seen(B, 5)), Step::Switch);
    }

    #[test]
    fn copytruncate_starts_again_from_zero() {
        assert_eq!(next_step(Some((reading(A, 30, 30), 0)), seen(A, 0)), Step::Truncated);
        assert_eq!(next_step(Some((reading(A, 30, 30), 12)), seen(A, 12)), Step::Truncated);
        assert_eq!(next_step(Some((reading(A, 30, 34), 31)), seen(A, 31)), Step::Truncated);
    }

    #[test]
    fn a_deleted_file_is_read_to_its_end_and_its_path_watched() {
        assert_eq!(next_step(Some((reading(A, 10, 10), 20)), None), Step::Read);
        assert_eq!(next_step(Some((reading(A, 20, 20), 20)), None), Step::Idle);
        assert_eq!(next_step(Some((reading(A, 20, 20), 20)), seen(B, 3)), Step::Switch);
    }

    #[test]
    fn a_restart_resumes_only_in_the_same_file() {
        let cursor = Cursor { path: "app.log".into(), id: A, offset: 100, line: 7 };
        assert_eq!(resume(None, Seen { id: A, size: 0 }), Resume::Fresh);
        assert_eq!(resume(Some(&cursor), Seen { id: A, size: 150 }), Resume::At { offset: 100, line: 7 });
        assert_eq!(resume(Some(&cursor), Seen { id: A, size: 100 }), Resume::At { offset: 100, line: 7 });
        assert_eq!(resume(Some(&cursor), Seen { id: A, size: 99 }), Resume::Truncated);
        assert_eq!(resume(Some(&cursor), Seen { id: B, size: 500 }), Resume::Replaced);
    }

    #[test]
    fn cursor_files_are_named_for_people_and_never_shared() {
        let spool = Path::new("/spool");
        let a = cursor_file(spool, Path::new("/var/log/app/out.ndjson"));
        let b = cursor_file(spool, Path::new("/var/log/app2/out.ndjson"));
        assert_ne!(a, b);
        assert!(a.starts_with("/spool/sources"));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("out.ndjson-") && name.ends_with(".json"), "{name}");
        let odd = cursor_file(spool, Path::new("/tmp/a b:c"));
        assert!(odd.file_name().unwrap().to_str().unwrap().starts_with("a_b_c-"));
    }

    #[test]
    fn a_cursor_reads_back_as_written() {
        let cursor = Cursor { path: "app.log".into(), id: B, offset: 4096, line: 12 };
        let json = serde_json::to_string(&cursor).unwrap();
        assert_eq!(json, r#"{"path":"app.log","dev":1,"ino":11,"offset":4096,"line":12}"#);
        assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), cursor);
    }
}
