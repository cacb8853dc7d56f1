//! Batch files and the embedded store, read line by line into the verifier. Whoever controls the
//! storage controls these bytes: a line too long, a last line cut short and a segment that is no
//! regular file are findings, and the rest is read.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::num::NonZeroUsize;
use std::path::PathBuf;

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
                feed(sink, BufReader::with_capacity(1 << 20, file), &name, max_line_bytes)?;
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
                        Ok(file) => {
                            feed(sink, BufReader::with_capacity(1 << 20, file), &name, max_line_bytes)?
                        }
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
    input: impl BufRead,
    name: &str,
    max_line_bytes: usize,
) -> Result<(), AuditError> {
    let mut reader = LineReader::new(input, max_line_bytes);
    loop {
        let next =
            reader.next_line().map_err(|source| AuditError::Read { name: name.to_string(), source })?;
        let Some((n, line)) = next else { return Ok(()) };
        let origin = Origin { source: name, line: n };
        match line {
            Line::Complete(bytes) => sink.push_line(origin, bytes),
            Line::Unterminated(bytes) => sink.push_unterminated(origin, bytes),
            Line::TooLong => sink.push_malformed(
                origin,
                &format!("line is longer than {max_line_bytes} bytes (--max-line-bytes)"),
            ),
        }
    }
}
