//! Reading a store from a position onwards while it is being written: how a spool's sinks
//! follow it. Positions only ever name the start of a line.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::{indexed_segments, io_err, segment_path, StoreError};

/// A byte offset in one segment; positions order as the store's lines do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// The segment's number (`segment-<n>.ndjson`), counting from 1.
    pub segment: u64,
    /// Bytes from the segment's start; always the start of a line.
    pub offset: u64,
}

impl std::fmt::Display for Position {
    /// As a person looks for it: the segment file and the byte in it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = crate::segment_path(std::path::Path::new(""), self.segment);
        write!(f, "{} byte {}", file.display(), self.offset)
    }
}

/// Whole lines read from a store, and the position just after them.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The lines, each with its newline.
    pub bytes: Vec<u8>,
    /// Where the next read starts: just after the last line.
    pub next: Position,
    /// Lines passed over for being longer than the reader takes: where each starts, and its
    /// length up to its newline.
    pub too_long: Vec<(Position, u64)>,
}

impl Chunk {
    /// The lines, one at a time, each with its newline.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.split_inclusive(|&b| b == b'\n')
    }
}

/// Reads the whole lines from `from` up to `until` (a position the writer reported, so that
/// only durable lines are read), about `max_bytes` of them but always at least one.
///
/// A line longer than `max_line` bytes (newline not counted) is none its writer wrote, but
/// planted: it is passed over, never held, and named in [`Chunk::too_long`]. A segment that
/// ends in a torn line (a crash mid-write; the writer then moved on to a new segment) is left
/// at its last newline. A position inside a segment that no longer exists moves on to the next
/// one.
pub fn read_lines(
    dir: &Path,
    from: Position,
    until: Position,
    max_bytes: usize,
    max_line: u64,
) -> Result<Chunk, StoreError> {
    let mut chunk = Chunk { bytes: Vec::new(), next: from, too_long: Vec::new() };
    while chunk.next < until && (chunk.bytes.is_empty() || chunk.bytes.len() < max_bytes) {
        let at = chunk.next;
        let path = segment_path(dir, at.segment);
        let end = if at.segment == until.segment { until.offset } else { file_len(&path)? };
        if at.offset >= end {
            if at.segment >= until.segment {
                break;
            }
            chunk.next = next_segment(dir, at.segment, until)?;
            continue;
        }
        let want = (end - at.offset).min((max_bytes.saturating_sub(chunk.bytes.len())).max(1 << 16) as u64);
        let start = chunk.bytes.len();
        read_at(&path, at.offset, want, &mut chunk.bytes)?;
        // Keep whole lines only; a line longer than `want` is read on to its end, and no further.
        let mut whole = chunk.bytes[start..].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut read = want;
        while whole == 0 && at.offset + read < end {
            if read > max_line {
                chunk.bytes.truncate(start);
                break;
            }
            let more = (end - at.offset - read).min(1 << 20);
            let before = chunk.bytes.len() - start;
            read_at(&path, at.offset + read, more, &mut chunk.bytes)?;
            read += more;
            whole =
                chunk.bytes[start + before..].iter().position(|&b| b == b'\n').map_or(0, |i| before + i + 1);
        }
        if whole == 0 && read > max_line {
            // Past the longest line there can be: passed over to its newline, nothing held.
            match newline_after(&path, at.offset + read, end)? {
                Some(newline) => {
                    chunk.too_long.push((at, newline - at.offset));
                    chunk.next = Position { segment: at.segment, offset: newline + 1 };
                    continue;
                }
                None => whole = 0,
            }
        }
        // A whole line longer than `max_line` read within `want`: passed over too.
        if let Some(long) = too_long_line(&chunk.bytes[start..start + whole], max_line) {
            let (kept, skipped) = long;
            chunk.too_long.push((Position { segment: at.segment, offset: at.offset + kept as u64 }, skipped));
            chunk.bytes.truncate(start + kept);
            chunk.next = Position { segment: at.segment, offset: at.offset + kept as u64 + skipped + 1 };
            continue;
        }
        chunk.bytes.truncate(start + whole);
        if whole == 0 {
            // Only a torn line is left here (the writer reported the end past it, so it is
            // final): go on with the next segment.
            chunk.next =
                if at.segment >= until.segment { until } else { next_segment(dir, at.segment, until)? };
            continue;
        }
        chunk.next = Position { segment: at.segment, offset: at.offset + whole as u64 };
    }
    Ok(chunk)
}

/// The offset of the first newline in `path` from `from` up to `end`, read a block at a time and
/// not kept.
fn newline_after(path: &Path, from: u64, end: u64) -> Result<Option<u64>, StoreError> {
    let mut block = Vec::with_capacity(1 << 20);
    let mut at = from;
    while at < end {
        block.clear();
        let n = (end - at).min(1 << 20);
        read_at(path, at, n, &mut block)?;
        if let Some(i) = memchr::memchr(b'\n', &block) {
            return Ok(Some(at + i as u64));
        }
        if block.is_empty() {
            break;
        }
        at += block.len() as u64;
    }
    Ok(None)
}

/// In whole lines just read, the first longer than `max_line`: the bytes before it, and its
/// length (newline not counted).
fn too_long_line(lines: &[u8], max_line: u64) -> Option<(usize, u64)> {
    let mut start = 0;
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let len = line.len() as u64 - 1;
        if len > max_line {
            return Some((start, len));
        }
        start += line.len();
    }
    None
}

/// Deletes the segments before `keep_from` (lines every reader has passed).
pub fn remove_segments_before(dir: &Path, keep_from: u64) -> Result<u64, StoreError> {
    let mut removed = 0;
    for (index, path) in indexed_segments(dir)? {
        if index < keep_from {
            fs::remove_file(&path).map_err(io_err(&path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Bytes held in segments from `from` onwards: how far behind a reader at `from` is.
pub fn bytes_from(dir: &Path, from: Position) -> Result<u64, StoreError> {
    let mut total = 0;
    for (index, path) in indexed_segments(dir)? {
        if index >= from.segment {
            let len = file_len(&path)?;
            total += if index == from.segment { len.saturating_sub(from.offset) } else { len };
        }
    }
    Ok(total)
}

fn next_segment(dir: &Path, after: u64, until: Position) -> Result<Position, StoreError> {
    let next = indexed_segments(dir)?.into_iter().map(|(i, _)| i).find(|&i| i > after);
    Ok(match next {
        Some(segment) if segment <= until.segment => Position { segment, offset: 0 },
        _ => until,
    })
}

fn file_len(path: &Path) -> Result<u64, StoreError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(StoreError::Io { path: path.to_path_buf(), source }),
    }
}

fn read_at(path: &Path, offset: u64, len: u64, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let mut file = match crate::open_segment_to_read(path) {
        Ok(file) => file,
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
    file.take(len).read_to_end(out).map_err(io_err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreOptions};
    use std::io::Write;

    #[test]
    fn positions_read_as_file_and_byte() {
        let at = Position { segment: 3, offset: 1024 };
        assert_eq!(at.to_string(), "segment-000000000003.ndjson byte 1024");
    }

    fn all(dir: &Path, mut from: Position, until: Position, max: usize) -> (Vec<String>, usize) {
        let mut lines = Vec::new();
        let mut reads = 0;
        loop {
            let chunk = read_lines(dir, from, until, max, u64::MAX).unwrap();
            if chunk.next == from {
                return (lines, reads);
            }
            reads += 1;
            lines.extend(chunk.lines().map(|l| String::from_utf8(l.to_vec()).unwrap()));
            from = chunk.next;
        }
    }

    #[test]
    fn follows_lines_across_segments_and_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions { segment_bytes: 12 }).unwrap();
        for line in ["aaaa\n", "bbbb\n", "cccc\n"] {
            store.append(line.as_bytes()).unwrap();
        }
        let mid = store.position();
        assert_eq!(all(dir.path(), Position::default(), mid, 1).0, ["aaaa\n", "bbbb\n", "cccc\n"]);
        // A torn write, then the writer moves on to a new segment.
        drop(store);
        let last = crate::segments(dir.path()).unwrap().pop().unwrap();
        fs::OpenOptions::new().append(true).open(&last).unwrap().write_all(b"{\"to").unwrap();
        let mut store = Store::open(dir.path(), StoreOptions { segment_bytes: 12 }).unwrap();
        store.append(b"dddd\n").unwrap();
        let end = store.position();
        let (lines, reads) = all(dir.path(), mid, end, 1 << 20);
        assert_eq!((lines, reads), (vec!["dddd\n".to_string()], 1));
        // A reader never passes what the writer reported.
        assert_eq!(all(dir.path(), Position::default(), mid, 1 << 20).0.len(), 3);
        assert!(bytes_from(dir.path(), mid).unwrap() > 0);
        assert_eq!(remove_segments_before(dir.path(), end.segment).unwrap(), 2);
        assert_eq!(all(dir.path(), Position::default(), end, 1 << 20).0, ["dddd\n"]);
    }

    #[test]
    fn a_long_line_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let long = format!("{}\n", "x".repeat(300_000));
        store.append(long.as_bytes()).unwrap();
        store.append(b"short\n").unwrap();
        let chunk = read_lines(dir.path(), Position::default(), store.position(), 10, u64::MAX).unwrap();
        assert_eq!(chunk.bytes, long.as_bytes());
        assert_eq!(chunk.next.offset, long.len() as u64);
    }

    #[test]
    fn a_line_longer_than_any_its_writer_writes_is_passed_over_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let (long, longer) = (format!("{}\n", "x".repeat(2_000_000)), format!("{}\n", "y".repeat(3_000_000)));
        for line in ["before\n", &longer, "after\n", "short\n", &long, "last\n"] {
            store.append_lines(line.as_bytes()).unwrap();
        }
        let end = store.position();
        // In one read (the long line is read past its end in 1 MiB blocks), and in reads small
        // enough that the long line is found within what was read.
        for max in [1, 1 << 24] {
            let (mut at, mut lines, mut skipped) = (Position::default(), Vec::new(), Vec::new());
            while at < end {
                let chunk = read_lines(dir.path(), at, end, max, 100_000).unwrap();
                assert!(chunk.bytes.len() <= (1 << 16).max(max) + 100_001, "{}", chunk.bytes.len());
                lines.extend(chunk.lines().map(|l| String::from_utf8(l.to_vec()).unwrap()));
                skipped.extend(chunk.too_long.iter().map(|(at, len)| (at.offset, *len)));
                assert!(chunk.next > at);
                at = chunk.next;
            }
            assert_eq!(lines, ["before\n", "after\n", "short\n", "last\n"], "max {max}");
            assert_eq!(skipped, [(7, 3_000_000), (7 + 3_000_001 + 6 + 6, 2_000_000)], "max {max}");
        }
    }
}
