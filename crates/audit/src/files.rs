//! Batch files and the embedded store, read line by line into the verifier. Whoever controls the
//! storage controls these bytes: a line too long, a last line cut short and a segment that is no
//! regular file are findings, and the rest is read.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, Read};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use teelog_core::{Origin, Report, Verifier};
use teelog_store::lines::{Line, LineReader};
use teelog_store::StoreError;

use crate::pool::PooledVerifier;
use crate::AuditError;

/// Where batch lines are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input, read to its end.
    Stdin,
    /// A batch file (NDJSON).
    File(PathBuf),
    /// An embedded store directory: its segments, oldest first.
    Store(PathBuf),
}

/// What takes the lines read: the verifier, or an evidence exporter.
pub trait LineSink {
    /// A whole line, without its newline.
    fn push_line(&mut self, origin: Origin<'_>, line: &[u8]);
    /// A whole line that can be kept without copying it (a pool's threads check it where it
    /// lies in the reader's buffer).
    fn push_shared(&mut self, origin: Origin<'_>, line: SharedLine) {
        self.push_line(origin, &line)
    }
    /// The last line of an input, without its newline.
    fn push_unterminated(&mut self, origin: Origin<'_>, line: &[u8]);
    /// Something that could not be read as a line.
    fn push_malformed(&mut self, origin: Origin<'_>, detail: &str);
    /// Whether gateway checkpoints are worth reading from where they are kept apart (Loki's
    /// `checkpoint` entries): only for a verifier that judges them.
    fn wants_checkpoints(&self) -> bool {
        false
    }
}

impl LineSink for Verifier {
    fn push_line(&mut self, origin: Origin<'_>, line: &[u8]) {
        Verifier::push_line(self, origin, line)
    }
    fn push_unterminated(&mut self, origin: Origin<'_>, line: &[u8]) {
        Verifier::push_unterminated(self, origin, line)
    }
    fn push_malformed(&mut self, origin: Origin<'_>, detail: &str) {
        Verifier::push_malformed(self, origin, detail)
    }
    fn wants_checkpoints(&self) -> bool {
        self.judges_checkpoints()
    }
}

/// An exporter takes whole lines only: what is not one is the verifier's to report.
impl LineSink for teelog_core::evidence::Exporter {
    fn push_line(&mut self, _: Origin<'_>, line: &[u8]) {
        teelog_core::evidence::Exporter::push_line(self, line)
    }
    fn push_unterminated(&mut self, _: Origin<'_>, line: &[u8]) {
        teelog_core::evidence::Exporter::push_line(self, line)
    }
    fn push_malformed(&mut self, _: Origin<'_>, _: &str) {}
}

/// The linker of an evidence bundle takes whole lines, the gateway's checkpoints among them.
impl LineSink for teelog_core::anchor::Linker {
    fn push_line(&mut self, _: Origin<'_>, line: &[u8]) {
        teelog_core::anchor::Linker::push_line(self, line)
    }
    fn push_unterminated(&mut self, _: Origin<'_>, line: &[u8]) {
        teelog_core::anchor::Linker::push_line(self, line)
    }
    fn push_malformed(&mut self, _: Origin<'_>, _: &str) {}
    fn wants_checkpoints(&self) -> bool {
        true
    }
}

/// Feeds every line of `sources` to `verifier`, checked on `threads` threads, lines longer than
/// `max_line_bytes` as malformed, and returns its report.
pub fn verify(
    verifier: Verifier,
    sources: &[Source],
    max_line_bytes: usize,
    threads: NonZeroUsize,
) -> Result<Report, AuditError> {
    let mut verifier = PooledVerifier::new(verifier, threads).map_err(AuditError::Threads)?;
    read(&mut verifier, sources, max_line_bytes)?;
    Ok(verifier.finish())
}

/// Feeds every line of `sources` to `sink`, lines longer than `max_line_bytes` as malformed.
pub fn read(sink: &mut impl LineSink, sources: &[Source], max_line_bytes: usize) -> Result<(), AuditError> {
    if sources.is_empty() {
        return Err(AuditError::NothingToVerify);
    }
    for source in sources {
        match source {
            Source::Stdin => feed(sink, std::io::stdin().lock(), "stdin", max_line_bytes)?,
            Source::File(path) => {
                let name = path.display().to_string();
                let file =
                    File::open(path).map_err(|source| AuditError::Read { name: name.clone(), source })?;
                feed(sink, file, &name, max_line_bytes)?;
            }
            Source::Store(dir) => {
                let dir_name = dir.display().to_string();
                let segments = teelog_store::segments(dir).map_err(AuditError::StoreDir)?;
                if segments.is_empty() {
                    return Err(AuditError::NoSegments { dir: dir_name });
                }
                for path in &segments {
                    let name = path.display().to_string();
                    match teelog_store::open_segment_to_read(path) {
                        Ok(file) => feed(sink, file, &name, max_line_bytes)?,
                        // Whoever controls the store can plant one; it is a finding, and the rest
                        // is read.
                        Err(e @ StoreError::NotRegular { .. }) => {
                            sink.push_malformed(Origin { source: &name, line: 0 }, &e.to_string())
                        }
                        Err(source) => return Err(AuditError::Store { name, source }),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Feeds the lines of `input`, named `name` in findings, to `sink`.
pub fn feed(
    sink: &mut impl LineSink,
    input: impl Read,
    name: &str,
    max_line_bytes: usize,
) -> Result<(), AuditError> {
    let (chunks, lent) = Chunks::new(input);
    let mut reader = LineReader::new(chunks, max_line_bytes);
    loop {
        let next =
            reader.next_line().map_err(|source| AuditError::Read { name: name.to_string(), source })?;
        let Some((n, line)) = next else { return Ok(()) };
        let origin = Origin { source: name, line: n };
        match line {
            Line::Complete(bytes) => match SharedLine::lent(&lent, bytes) {
                Some(shared) => sink.push_shared(origin, shared),
                None => sink.push_line(origin, bytes),
            },
            Line::Unterminated(bytes) => sink.push_unterminated(origin, bytes),
            Line::TooLong => sink.push_malformed(
                origin,
                &format!("line is longer than {max_line_bytes} bytes (--max-line-bytes)"),
            ),
        }
    }
}

/// Bytes read at once: batch lines are up to a few MB, and a line that straddles two chunks is
/// copied (by the line reader, and again by whoever keeps it).
const CHUNK_BYTES: usize = 4 << 20;
/// Chunks kept for reuse once no line holds them any more.
const SPARE_CHUNKS: usize = 6;

/// The chunk lines are lent from, seen from outside the reader.
type Lent = Rc<Cell<Option<Arc<Vec<u8>>>>>;

/// A line kept where it was read: a share of the reader's chunk, or a buffer of its own.
#[derive(Clone)]
pub struct SharedLine {
    chunk: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl SharedLine {
    /// `line` as a share of the `lent` chunk, when it lies in it.
    fn lent(lent: &Cell<Option<Arc<Vec<u8>>>>, line: &[u8]) -> Option<Self> {
        let chunk = lent.take();
        let shared = chunk.as_ref().and_then(|chunk| {
            let start = (line.as_ptr() as usize).checked_sub(chunk.as_ptr() as usize)?;
            (start + line.len() <= chunk.len())
                .then(|| Self { chunk: chunk.clone(), range: start..start + line.len() })
        });
        lent.set(chunk);
        shared
    }
}

impl From<Vec<u8>> for SharedLine {
    fn from(line: Vec<u8>) -> Self {
        let range = 0..line.len();
        Self { chunk: Arc::new(line), range }
    }
}

impl std::ops::Deref for SharedLine {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.chunk[self.range.clone()]
    }
}

/// A buffered reader whose buffer lines can share ([`SharedLine`]): each refill reads into a
/// chunk no line holds (a spare one, or a new one), so that what was lent stays as it is.
struct Chunks<R> {
    inner: R,
    chunk: Arc<Vec<u8>>,
    pos: usize,
    /// The current chunk, for the feeder: the line reader holding this one is borrowed as long
    /// as the line it lent is.
    lent: Lent,
    spare: Vec<Arc<Vec<u8>>>,
}

impl<R: Read> Chunks<R> {
    fn new(inner: R) -> (Self, Lent) {
        let lent = Rc::new(Cell::new(None));
        let chunks =
            Self { inner, chunk: Arc::new(Vec::new()), pos: 0, lent: lent.clone(), spare: Vec::new() };
        (chunks, lent)
    }

    /// Reads the next chunk: as much as the input gives up to its size, so that few lines
    /// straddle two.
    fn refill(&mut self) -> std::io::Result<()> {
        self.lent.set(None);
        let mut buf = match Arc::try_unwrap(std::mem::take(&mut self.chunk)) {
            Ok(free) => free,
            // Lines still hold it: it waits among the spares, and one no line holds is reused.
            Err(held) => {
                let free = self.spare.iter().position(|chunk| Arc::strong_count(chunk) == 1);
                let free =
                    free.map(|i| self.spare.swap_remove(i)).and_then(|chunk| Arc::try_unwrap(chunk).ok());
                if self.spare.len() >= SPARE_CHUNKS {
                    self.spare.remove(0);
                }
                self.spare.push(held);
                free.unwrap_or_default()
            }
        };
        // Read into the chunk's spare capacity, not zeroed first; a file gives it in one read.
        buf.clear();
        buf.reserve(CHUNK_BYTES);
        let limit = buf.capacity() as u64;
        let read = (&mut self.inner).take(limit).read_to_end(&mut buf);
        // What was read is handed on first; an error that lasts comes again at the next read.
        let result = if buf.is_empty() { read.map(drop) } else { Ok(()) };
        self.chunk = Arc::new(buf);
        self.pos = 0;
        self.lent.set(Some(self.chunk.clone()));
        result
    }
}

impl<R: Read> Read for Chunks<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = std::io::Read::read(&mut self.fill_buf()?, out)?;
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Chunks<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos >= self.chunk.len() {
            self.refill()?;
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.chunk.len());
    }
}
