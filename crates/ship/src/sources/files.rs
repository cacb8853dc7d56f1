//! Following NDJSON files across rotation, from a position kept in the spool.
//!
//! Each configured file has a follower that polls it. Complete lines are submitted in chunks,
//! and once a chunk is in the spool the follower saves where the next line starts (the file's
//! device and inode, the offset, and a fingerprint of the bytes before it) in `<spool>/sources/`,
//! with the same for the last files read at the path before it. A restart resumes there if the
//! fingerprint still matches: a crash may ship lines twice, never skip one. A partial last line
//! waits for its newline.
//!
//! Rotation by rename + create (logrotate's default): the old file is read to its end through
//! the handle kept open, the new one is followed from its start, and the old one is still read
//! for late lines until it has been quiet for a while. By copytruncate (the file shrinks below
//! what was read, or its bytes before the position change): it is read again from its start. A
//! missing file is waited for; a deleted one is still read to its end while its path is watched.
//! A file reached through two configured paths is read by one follower only, and a symbolic
//! link, FIFO or device at the path is never opened.
//!
//! A file rotated away while the daemon was down, or still being read when it stopped, is found
//! again at the next start in the path's directory by its identity and read on.
//!
//! Not seen: a rotated file moved out of the path's directory, and a truncation refilled with
//! the same bytes around the old position before the next poll (docs/SHIP.md).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use teelog_store::lines::{Line, LineReader};
use tokio::sync::watch;

use super::Chunker;
use crate::metrics::ShipMetrics;
use crate::pipeline::{Origin, RecordBuf, SubmitError, Submitter};

/// A file's identity, which survives renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    /// The device the file is on.
    pub dev: u64,
    /// Its inode number on that device.
    pub ino: u64,
}

/// A file as one `stat` saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Which file.
    pub id: FileId,
    /// Its length in bytes then.
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
    /// Which file.
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

/// Where a follower stands in one file: its next line starts at `offset` and is line `line + 1`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Place {
    /// Which file.
    #[serde(flatten)]
    pub id: FileId,
    /// Where its next line starts, in bytes.
    pub offset: u64,
    /// Lines read before `offset`.
    pub line: u64,
    /// [`fingerprint`] of the file at `offset`: what tells this file from another that took its
    /// inode number, and a position moved by hand from the one read to. Absent in positions
    /// saved by earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// A follower's saved position: the file at the path, and the files read at the path before it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// For people reading the file; the identity is what counts.
    pub path: String,
    /// Where the follower stands in the file at the path.
    #[serde(flatten)]
    pub place: Place,
    /// Files read at the path before this one (rotated away, or a path flipping between files),
    /// newest first, at most 8: one of them back at the path resumes where it was
    /// read to, so that none of its lines is signed twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<Place>,
}

/// Files remembered besides the one at the path.
const PREVIOUS: usize = 8;
/// Bytes hashed at each end of a fingerprint.
const FINGERPRINT_BYTES: u64 = 4096;
/// The most a saved position (a few places and fingerprints of JSON) is read to.
const MAX_CURSOR_BYTES: u64 = 1 << 20;
/// A rotated file is still read until it has not grown for this long (its writer may not have
/// reopened the path yet).
const LATE_WRITES: Duration = Duration::from_secs(5);

/// The SHA-256 (hex) of the first bytes of `file` and of the bytes just before `offset` (up to
/// 4 KiB each).
pub fn fingerprint(file: &File, offset: u64) -> std::io::Result<String> {
    let n = offset.min(FINGERPRINT_BYTES);
    let mut bytes = vec![0u8; 2 * n as usize];
    let (head, tail) = bytes.split_at_mut(n as usize);
    file.read_exact_at(head, 0)?;
    file.read_exact_at(tail, offset - n)?;
    Ok(hex::encode(teelog_core::merkle::sha256(&bytes)))
}

/// Where to start in a file just opened at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// From the position saved for it.
    At {
        /// Where its next line starts.
        offset: u64,
        /// Lines read before it.
        line: u64,
    },
    /// From the start: no position is saved.
    Fresh,
    /// From the start: no position is saved for this file (rotated while the daemon was down).
    Replaced,
    /// From the start: the file is shorter than the position saved (truncated meanwhile).
    Truncated,
    /// From the start: its bytes before the position saved are not the ones read (another file
    /// took its inode number, it was rewritten, or the position was moved).
    Changed,
    /// From the start: the position saved has no fingerprint to check it by (saved by an early
    /// version, or its fingerprint deleted): trusting it could skip lines, reading again only
    /// signs some twice.
    Unverified,
}

/// Where to resume in `opened`, given the places known (see [`Place`]); `fingerprint_at` is the
/// opened file's fingerprint at an offset.
pub fn resume(known: &[Place], opened: Seen, fingerprint_at: impl FnOnce(u64) -> Option<String>) -> Resume {
    let Some(place) = known.iter().find(|p| p.id == opened.id) else {
        return if known.is_empty() { Resume::Fresh } else { Resume::Replaced };
    };
    if place.offset > opened.size {
        return Resume::Truncated;
    }
    match &place.fingerprint {
        Some(saved) if fingerprint_at(place.offset).as_ref() != Some(saved) => Resume::Changed,
        None if place.offset > 0 => Resume::Unverified,
        _ => Resume::At { offset: place.offset, line: place.line },
    }
}

/// Why a followed path is not read (for now); the follower says so and tries again.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The file could not be opened, inspected or read.
    #[error("{path}: {source}")]
    Io {
        /// The path followed.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// What is at the path is no regular file (a link, FIFO, device, directory).
    #[error("{path} is {kind}, not a regular file; it is not followed (a symbolic link: name its target in sources.files)")]
    NotRegular {
        /// The path followed.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// Another follower reads the same file (by device and inode) through another path.
    #[error("{path} is the same file as {other}, which is followed already; it is not read twice")]
    Followed {
        /// The path followed.
        path: String,
        /// The path that already reads it.
        other: String,
    },
    /// The signer no longer takes records.
    #[error("{path}: {source}")]
    Submit {
        /// The path followed.
        path: String,
        /// Why the record was not taken.
        source: SubmitError,
    },
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

/// The files the followers of one daemon hold open, by identity, with the path each was opened
/// at: a file reached through two configured paths (two spellings, a hard link, a path that
/// flipped to another's file) is read by one follower only.
#[derive(Clone, Default)]
pub struct Followed(Arc<Mutex<HashMap<FileId, String>>>);

/// A file's entry in [`Followed`], removed when dropped.
struct Registration {
    followed: Followed,
    id: FileId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.followed.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl Followed {
    fn register(&self, id: FileId, name: &str) -> Result<Registration, FollowError> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(other) = held.get(&id) {
            return Err(FollowError::Followed { path: name.to_string(), other: other.clone() });
        }
        held.insert(id, name.to_string());
        Ok(Registration { followed: self.clone(), id })
    }
}

/// What stays the same for a follower while files come and go.
struct Target {
    path: PathBuf,
    name: String,
    cursor_file: PathBuf,
    max_line_bytes: usize,
    submitter: Submitter,
    metrics: Arc<ShipMetrics>,
    followed: Followed,
}

struct OpenFile {
    file: File,
    reading: Reading,
    /// Lines before `reading.offset`.
    line: u64,
    /// The file's fingerprint at `reading.offset`, as last saved.
    fingerprint: Option<String>,
    _registration: Registration,
}

impl OpenFile {
    fn place(&self) -> Place {
        let (id, offset, line) = (self.reading.id, self.reading.offset, self.line);
        Place { id, offset, line, fingerprint: self.fingerprint.clone() }
    }
}

/// A rotated file still read for late lines, and since when it has not grown.
struct Draining {
    open: OpenFile,
    quiet_since: Instant,
}

/// Follows one file; see the module documentation.
pub struct Follower {
    target: Target,
    open: Option<OpenFile>,
    draining: Option<Draining>,
    /// Places in files not open (saved by an earlier run, or rotated away), newest first.
    places: Vec<Place>,
    /// The last problem reported, so that one that persists is reported once.
    problem: Option<String>,
    /// The same for what is at the path, while the open file is still read.
    odd_path: Option<String>,
}

impl Follower {
    /// A follower of `path`, its cursor kept under `spool`, records of at most `max_line_bytes`
    /// going to `submitter`; `followed` is the registry shared by all followers, so that one file
    /// is read by one of them only.
    pub fn new(
        path: &Path,
        spool: &Path,
        max_line_bytes: usize,
        submitter: Submitter,
        followed: Followed,
    ) -> Self {
        let cursor_file = cursor_file(spool, path);
        let name = path.display().to_string();
        let saved: Option<Cursor> = match teelog_store::read_host_file(&cursor_file, MAX_CURSOR_BYTES) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| {
                    tracing::warn!(target: "teelog::ship", "{}: {e}; {name} is read from its start", cursor_file.display());
                })
                .ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(target: "teelog::ship", "{}: {e}; {name} is read from its start", cursor_file.display());
                None
            }
        };
        let places = saved.map(|c| std::iter::once(c.place).chain(c.previous).collect()).unwrap_or_default();
        let metrics = submitter.shared().metrics.clone();
        let target = Target {
            path: path.to_path_buf(),
            name,
            cursor_file,
            max_line_bytes,
            submitter,
            metrics,
            followed,
        };
        Self { target, open: None, draining: None, places, problem: None, odd_path: None }
    }

    /// Polls every `interval` until `stop` turns true, with a last look after it has.
    pub fn run(mut self, stop: watch::Receiver<bool>, interval: Duration) {
        tracing::info!(target: "teelog::ship", "following {}", self.target.name);
        self.draining = self.find_rotated();
        loop {
            match self.poll(&stop) {
                Ok(()) => self.problem = None,
                Err(e @ FollowError::Submit { .. }) => {
                    tracing::error!(target: "teelog::ship", "{e}");
                    return;
                }
                // A read cut short by the stop: the next run resumes from the saved position.
                Err(_) if *stop.borrow() => break,
                Err(e) => {
                    let message = e.to_string();
                    if self.problem.as_ref() != Some(&message) {
                        tracing::warn!(target: "teelog::ship", "{message}; retrying");
                        self.problem = Some(message);
                    }
                }
            }
            if *stop.borrow() {
                break;
            }
            std::thread::sleep(interval);
        }
        // The next run would not find a rotated file: what is left of it is read now.
        if let Err(e) = self.finish_draining(&stop) {
            tracing::warn!(target: "teelog::ship", "{e}");
        }
    }

    /// Looks at the path and the open file once, and does what that calls for.
    pub fn poll(&mut self, stop: &watch::Receiver<bool>) -> Result<(), FollowError> {
        let at_path = self.at_path();
        self.drain(stop)?;
        let open = match &self.open {
            Some(open) => Some((open.reading, open.file.metadata().map_err(|e| self.target.io(e))?.len())),
            None => None,
        };
        match next_step(open, at_path) {
            Step::Wait | Step::Idle => Ok(()),
            Step::Read if self.rewritten() => self
                .read_again("its bytes before the position read changed (copytruncate and refilled?)", stop),
            Step::Read => self.read(Which::Open, false, stop),
            Step::Open => {
                self.open_path()?;
                self.read(Which::Open, false, stop)
            }
            Step::Truncated => self.read_again("truncated (copytruncate?)", stop),
            Step::Switch => {
                self.read(Which::Open, false, stop)?;
                tracing::info!(target: "teelog::ship", "{}: rotated; following the new file, and the old one for late lines", self.target.name);
                // One rotated file is read for late lines at a time: an older one is finished.
                self.finish_draining(stop)?;
                self.draining = self.open.take().map(|open| Draining { open, quiet_since: Instant::now() });
                self.open_path()?;
                self.read(Which::Open, false, stop)
            }
        }
    }

    /// Whether the open file's bytes before the position read are no longer the ones read.
    fn rewritten(&self) -> bool {
        let Some(open) = &self.open else { return false };
        let Some(saved) = &open.fingerprint else { return false };
        fingerprint(&open.file, open.reading.offset).ok().as_ref() != Some(saved)
    }

    /// Reads the open file again from its start, saying why.
    fn read_again(&mut self, why: &str, stop: &watch::Receiver<bool>) -> Result<(), FollowError> {
        if let Some(open) = &mut self.open {
            tracing::warn!(target: "teelog::ship", "{}: {why}; reading it again from the start", self.target.name);
            open.reading = Reading { id: open.reading.id, offset: 0, read_to: 0 };
            open.line = 0;
            open.fingerprint = None;
            // Saved now: the file may be refilled past the old offset before the next save.
            self.save(None, None);
        }
        self.read(Which::Open, false, stop)
    }

    /// Reads the late lines of a rotated file, and finishes it once it has been quiet for
    /// [`LATE_WRITES`].
    fn drain(&mut self, stop: &watch::Receiver<bool>) -> Result<(), FollowError> {
        let Some(draining) = &mut self.draining else { return Ok(()) };
        let size = draining.open.file.metadata().map_err(|e| self.target.io(e))?.len();
        if size != draining.open.reading.read_to {
            draining.quiet_since = Instant::now();
            return self.read(Which::Draining, false, stop);
        }
        if draining.quiet_since.elapsed() >= LATE_WRITES {
            return self.finish_draining(stop);
        }
        Ok(())
    }

    /// Reads the rotated file to its end (its last line counts even without a newline) and
    /// closes it, remembering its place.
    fn finish_draining(&mut self, stop: &watch::Receiver<bool>) -> Result<(), FollowError> {
        if self.draining.is_none() {
            return Ok(());
        }
        self.read(Which::Draining, true, stop)?;
        if let Some(draining) = self.draining.take() {
            self.remember(draining.open.place());
        }
        Ok(())
    }

    /// A file this follower read before, rotated away from the path (while the daemon was down,
    /// or while it was still being read when the daemon stopped) and found again by its identity
    /// in the path's directory, where rename-rotation leaves it, with bytes past its saved place
    /// and the bytes before it the ones read: it is read on as a rotated file is, so that a stop
    /// in its middle or a rotation while down loses none of its lines. The newest such place.
    fn find_rotated(&mut self) -> Option<Draining> {
        let at_path = self.at_path().map(|seen| seen.id);
        let dir = self.target.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut found: Option<(usize, PathBuf)> = None;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            // Not followed: a link's target is whatever the directory's owner chose.
            let Ok(meta) = entry.metadata() else { continue };
            let seen = Seen::of(&meta);
            if !meta.is_file() || Some(seen.id) == at_path {
                continue;
            }
            let newest = self.places.iter().position(|p| p.id == seen.id && p.offset < seen.size);
            if let Some(index) = newest.filter(|&i| found.as_ref().is_none_or(|(f, _)| i < *f)) {
                found = Some((index, entry.path()));
            }
        }
        let (index, path) = found?;
        let place = self.places[index].clone();
        // Replaced since it was looked at, by a link or a FIFO: not opened.
        let file = teelog_store::open_segment_to_read(&path).ok()?;
        let meta = file.metadata().ok()?;
        let same = Seen::of(&meta).id == place.id;
        // Without a fingerprint nothing tells it from another file that took the inode number.
        let read_before =
            place.fingerprint.is_some() && fingerprint(&file, place.offset).ok() == place.fingerprint;
        if !(same && read_before) {
            return None;
        }
        let registration = self.target.followed.register(place.id, &self.target.name).ok()?;
        tracing::warn!(target: "teelog::ship", "{}: {} was rotated away from it with {} bytes not read yet; reading them now", self.target.name, path.display(), meta.len() - place.offset);
        self.places.remove(index);
        let reading = Reading { id: place.id, offset: place.offset, read_to: place.offset };
        let open = OpenFile {
            file,
            reading,
            line: place.line,
            fingerprint: place.fingerprint,
            _registration: registration,
        };
        Some(Draining { open, quiet_since: Instant::now() })
    }

    fn remember(&mut self, place: Place) {
        self.places.retain(|p| p.id != place.id);
        self.places.insert(0, place);
        self.places.truncate(PREVIOUS);
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
        // The rotated file being drained is back at the path: it goes on from where it is.
        if self.draining.as_ref().is_some_and(|d| d.open.reading.id == seen.id) {
            self.open = self.draining.take().map(|d| d.open);
            return Ok(());
        }
        let registration = target.followed.register(seen.id, &target.name)?;
        let (offset, line) = match resume(&self.places, seen, |at| fingerprint(&file, at).ok()) {
            Resume::At { offset, line } => (offset, line),
            Resume::Fresh => (0, 0),
            Resume::Replaced => {
                tracing::warn!(target: "teelog::ship", "{}: not a file read before (rotated while stopped?); reading it from the start", target.name);
                (0, 0)
            }
            Resume::Truncated => {
                tracing::warn!(target: "teelog::ship", "{}: shorter than the position saved (truncated while stopped?); reading it from the start", target.name);
                (0, 0)
            }
            Resume::Changed => {
                tracing::warn!(target: "teelog::ship", "{}: its bytes before the position saved are not the ones read (another file, rewritten, or the position moved); reading it from the start", target.name);
                (0, 0)
            }
            Resume::Unverified => {
                tracing::warn!(target: "teelog::ship", "{}: the position saved has no fingerprint to check it by; reading it from the start", target.name);
                (0, 0)
            }
        };
        self.places.retain(|p| p.id != seen.id);
        let fingerprint = (offset > 0).then(|| fingerprint(&file, offset).ok()).flatten();
        let reading = Reading { id: seen.id, offset, read_to: offset };
        self.open = Some(OpenFile { file, reading, line, fingerprint, _registration: registration });
        Ok(())
    }

    /// Saves where the follower stands: `current`, the place of the file at the path (the open
    /// file's unless given), and the places of the others.
    fn save(&self, current: Option<Place>, other: Option<Place>) {
        let Some(current) = current.or_else(|| self.open.as_ref().map(OpenFile::place)) else { return };
        let draining = self.draining.as_ref().map(|d| d.open.place());
        let previous =
            other.into_iter().chain(draining).chain(self.places.iter().cloned()).take(PREVIOUS).collect();
        let cursor = Cursor { path: self.target.name.clone(), place: current, previous };
        let json = serde_json::to_vec(&cursor).unwrap_or_default();
        // A position that cannot be saved costs duplicates after a restart, not lost lines: it
        // is reported, and following goes on.
        if let Err((path, e)) = teelog_deliver::delivery::save_position(&self.target.cursor_file, &json) {
            tracing::warn!(target: "teelog::ship", "cannot save the position in {}: {}: {e}", self.target.name, path.display());
        }
    }

    /// Reads the open or the rotated file from its offset to its end (see [`read_file`]).
    fn read(&mut self, which: Which, last: bool, stop: &watch::Receiver<bool>) -> Result<(), FollowError> {
        match which {
            Which::Open => {
                let Some(mut open) = self.open.take() else { return Ok(()) };
                let result = read_file(&self.target, &mut open, last, stop, &mut |open| {
                    self.save(Some(open.place()), None);
                });
                self.open = Some(open);
                result
            }
            Which::Draining => {
                let Some(mut draining) = self.draining.take() else { return Ok(()) };
                let result = read_file(&self.target, &mut draining.open, last, stop, &mut |rotated| {
                    self.save(None, Some(rotated.place()));
                });
                self.draining = Some(draining);
                result
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    /// The file at the path.
    Open,
    /// The rotated file still read for late lines.
    Draining,
}

/// Reads `open` from its offset to its end, submitting complete lines (and with `last`, a final
/// unterminated one), and calling `saved` after each chunk is in the spool and the position
/// moved past it.
fn read_file(
    target: &Target,
    open: &mut OpenFile,
    last: bool,
    stop: &watch::Receiver<bool>,
    saved: &mut dyn FnMut(&OpenFile),
) -> Result<(), FollowError> {
    let start = open.reading.offset;
    let first = open.line;
    // A handle of its own (the same open file), so that the position can move while it reads.
    let handle = open.file.try_clone().map_err(|e| target.io(e))?;
    (&handle).seek(SeekFrom::Start(start)).map_err(|e| target.io(e))?;
    // The rest of a rotated file is read to its end even when stopping (within the daemon's
    // bound on a stop), since the next run would not find it.
    let input = UntilStop { file: &handle, stop: (!last).then_some(stop) };
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
            target.commit(records, origin, open, taken)?;
            saved(open);
            // A long backlog does not hold up a stop, since the next run resumes here; a
            // rotated file is finished, since the next run would not find it.
            if *stop.borrow() && !last {
                return Ok(());
            }
        }
    }
    open.reading.read_to = read_to;
    if let Some((records, origin)) = chunker.take() {
        target.commit(records, origin, open, taken)?;
        saved(open);
    }
    Ok(())
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

    /// Submits a chunk, waits until it is in the spool, then moves the position past it (`taken`:
    /// the end of its last line, and that line's number).
    fn commit(
        &self,
        records: RecordBuf,
        origin: Origin,
        open: &mut OpenFile,
        taken: (u64, u64),
    ) -> Result<(), FollowError> {
        self.submitter
            .submit_sealed_blocking(records, origin)
            .map_err(|source| FollowError::Submit { path: self.name.clone(), source })?;
        (open.reading.offset, open.line) = taken;
        open.fingerprint = fingerprint(&open.file, taken.0).ok();
        Ok(())
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
    fn a_restart_resumes_only_in_a_file_read_before_and_unchanged() {
        let place = |id, offset, fingerprint: Option<&str>| Place {
            id,
            offset,
            line: 7,
            fingerprint: fingerprint.map(str::to_string),
        };
        let same = |_| Some("f".to_string());
        let known = [place(A, 100, Some("f"))];
        assert_eq!(resume(&[], Seen { id: A, size: 0 }, same), Resume::Fresh);
        assert_eq!(resume(&known, Seen { id: A, size: 150 }, same), Resume::At { offset: 100, line: 7 });
        assert_eq!(resume(&known, Seen { id: A, size: 100 }, same), Resume::At { offset: 100, line: 7 });
        assert_eq!(resume(&known, Seen { id: A, size: 99 }, same), Resume::Truncated);
        assert_eq!(resume(&known, Seen { id: B, size: 500 }, same), Resume::Replaced);
        // The inode number taken by another file, or the position moved: its bytes differ.
        assert_eq!(resume(&known, Seen { id: A, size: 150 }, |_| Some("g".into())), Resume::Changed);
        // A position without a fingerprint (an early version's, or one deleted) is not trusted.
        assert_eq!(resume(&[place(A, 100, None)], Seen { id: A, size: 150 }, |_| None), Resume::Unverified);
        assert_eq!(
            resume(&[place(A, 0, None)], Seen { id: A, size: 150 }, |_| None),
            Resume::At { offset: 0, line: 7 }
        );
        // A file the path flipped away from and back to goes on where it was.
        let flipped = [place(B, 40, Some("f")), place(A, 100, Some("f"))];
        assert_eq!(resume(&flipped, Seen { id: A, size: 150 }, same), Resume::At { offset: 100, line: 7 });
    }

    #[test]
    fn a_fingerprint_covers_the_start_and_the_bytes_before_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut text = vec![b'a'; 10_000];
        std::fs::write(&path, &text).unwrap();
        let before = fingerprint(&File::open(&path).unwrap(), 9_000).unwrap();
        assert_eq!(fingerprint(&File::open(&path).unwrap(), 9_000).unwrap(), before);
        text[8_999] = b'b';
        std::fs::write(&path, &text).unwrap();
        assert_ne!(fingerprint(&File::open(&path).unwrap(), 9_000).unwrap(), before);
        text[8_999] = b'a';
        text[0] = b'b';
        std::fs::write(&path, &text).unwrap();
        assert_ne!(fingerprint(&File::open(&path).unwrap(), 9_000).unwrap(), before);
        assert_ne!(fingerprint(&File::open(&path).unwrap(), 8_000).unwrap(), before, "another offset");
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
        let place = Place { id: B, offset: 4096, line: 12, fingerprint: Some("ab".into()) };
        let old = Place { id: A, offset: 10, line: 1, fingerprint: None };
        let cursor = Cursor { path: "app.log".into(), place, previous: vec![old] };
        let json = serde_json::to_string(&cursor).unwrap();
        assert_eq!(
            json,
            r#"{"path":"app.log","dev":1,"ino":11,"offset":4096,"line":12,"fingerprint":"ab","previous":[{"dev":1,"ino":10,"offset":10,"line":1}]}"#
        );
        assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), cursor);
        // As earlier versions saved it.
        let old: Cursor =
            serde_json::from_str(r#"{"path":"app.log","dev":1,"ino":11,"offset":4096,"line":12}"#).unwrap();
        assert_eq!((old.place.offset, old.place.fingerprint, old.previous.len()), (4096, None, 0));
    }
}
