//! Reading NDJSON with a bound on line length, so that one hostile line cannot exhaust memory
//! and an over-long line is reported and skipped rather than ending the read.

use std::io::{self, BufRead, Read};

use sha2::{Digest, Sha256};

/// One line as read, without its newline.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line ended by a newline, within the limit.
    Complete(&'a [u8]),
    /// The input ended without a newline after these bytes (a torn write, or a hand-made file).
    Unterminated(&'a [u8]),
    /// Longer than the limit; its bytes were skipped.
    TooLong,
}

/// Where a line ended in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineEnd {
    /// Bytes of the input up to the end of this line, skipped bytes and newline included.
    pub offset: u64,
    /// Whether a newline ended it; a [`Line::TooLong`] without one may still be growing.
    pub terminated: bool,
}

/// What is known of a line too long to be returned: enough for a notice that names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Its length, without the newline.
    pub bytes: u64,
    /// The SHA-256 of those bytes.
    pub sha256: [u8; 32],
}

/// Reads lines of at most `max_line_bytes` from a [`BufRead`], lending each without copying
/// when it lies in the reader's buffer. A longer line is skipped (its length and SHA-256 kept,
/// see [`Skipped`]) in pieces, so memory stays bounded by the limit whatever the input.
pub struct LineReader<R> {
    inner: R,
    max_line_bytes: usize,
    line_no: u64,
    /// Bytes of the input taken by the lines returned so far, skipped bytes included.
    offset: u64,
    buf: Vec<u8>,
    /// Bytes of `inner`'s buffer lent out as the last line, consumed at the next call.
    lent: usize,
    /// The last line returned as [`Line::TooLong`].
    skipped: Skipped,
}

impl<R: BufRead> LineReader<R> {
    /// A reader of `inner` that returns lines of up to `max_line_bytes` (newline not counted).
    pub fn new(inner: R, max_line_bytes: usize) -> Self {
        Self {
            inner,
            max_line_bytes,
            line_no: 0,
            offset: 0,
            buf: Vec::new(),
            lent: 0,
            skipped: Skipped::default(),
        }
    }

    /// The next line and its 1-based number, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        Ok(self.next_line_with_end()?.map(|(n, line, _)| (n, line)))
    }

    /// [`next_line`](Self::next_line), also saying where the line ended: for a follower of a
    /// growing file, which resumes after the last complete line.
    pub fn next_line_with_end(&mut self) -> io::Result<Option<(u64, Line<'_>, LineEnd)>> {
        self.inner.consume(std::mem::take(&mut self.lent));
        let limit = self.max_line_bytes as u64 + 1;
        // A line whole in the reader's buffer is lent from there rather than copied: reading
        // is on the hot path of every command that takes NDJSON.
        let newline = {
            let buffered = fill_buf(&mut self.inner)?;
            if buffered.is_empty() {
                return Ok(None);
            }
            let window = buffered.len().min(self.max_line_bytes.saturating_add(1));
            memchr::memchr(b'\n', &buffered[..window])
        };
        if let Some(i) = newline {
            self.lent = i + 1;
            self.line_no += 1;
            self.offset += self.lent as u64;
            let end = LineEnd { offset: self.offset, terminated: true };
            // Already buffered: this reads nothing.
            let buffered = fill_buf(&mut self.inner)?;
            return Ok(Some((self.line_no, Line::Complete(&buffered[..i]), end)));
        }
        self.buf.clear();
        let n = (&mut self.inner).take(limit).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        self.offset += n as u64;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            let end = LineEnd { offset: self.offset, terminated: true };
            return Ok(Some((self.line_no, Line::Complete(&self.buf), end)));
        }
        if self.buf.len() as u64 >= limit {
            let terminated = self.skip_line()?;
            return Ok(Some((self.line_no, Line::TooLong, LineEnd { offset: self.offset, terminated })));
        }
        let end = LineEnd { offset: self.offset, terminated: false };
        Ok(Some((self.line_no, Line::Unterminated(&self.buf), end)))
    }

    /// The length and SHA-256 of the line last returned as [`Line::TooLong`] (as far as the
    /// input went, if it ended without a newline); zero before any.
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// Skips past the next newline, hashing what it skips after the bytes read into `buf`;
    /// false if the input ended first.
    fn skip_line(&mut self) -> io::Result<bool> {
        let mut hash = Sha256::new();
        hash.update(&self.buf);
        let mut bytes = self.buf.len() as u64;
        let found = loop {
            let buf = fill_buf(&mut self.inner)?;
            if buf.is_empty() {
                break false;
            }
            let (n, found) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let kept = n - usize::from(found);
            hash.update(&buf[..kept]);
            bytes += kept as u64;
            self.inner.consume(n);
            self.offset += n as u64;
            if found {
                break true;
            }
        };
        self.skipped = Skipped { bytes, sha256: hash.finalize().into() };
        Ok(found)
    }
}

impl<R: Read> LineReader<io::BufReader<R>> {
    /// The rest of a line begun in the buffer (call it when no whole line is), read from the
    /// input a byte at a time, so that nothing after its newline is taken from the input: a
    /// source that stops hands over what it read, and leaves the rest to the next reader.
    /// `None` if no line was begun; an error for one longer than `max_line_bytes`.
    pub fn finish_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.inner.consume(std::mem::take(&mut self.lent));
        let begun = self.inner.buffer().len();
        if begun == 0 {
            return Ok(None);
        }
        self.buf.clear();
        self.buf.extend_from_slice(self.inner.buffer());
        self.inner.consume(begun);
        let mut byte = [0u8];
        let terminated = loop {
            if self.buf.len() > self.max_line_bytes {
                let message = format!("a line longer than {} bytes was begun", self.max_line_bytes);
                return Err(io::Error::new(io::ErrorKind::InvalidData, message));
            }
            match self.inner.get_mut().read(&mut byte) {
                Ok(0) => break false,
                Ok(_) if byte[0] == b'\n' => break true,
                Ok(_) => self.buf.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.line_no += 1;
        self.offset += (self.buf.len() + usize::from(terminated)) as u64;
        let line = if terminated { Line::Complete(&self.buf) } else { Line::Unterminated(&self.buf) };
        Ok(Some((self.line_no, line)))
    }

    /// Whether a whole next line is already buffered, so that reading it cannot wait for the
    /// input: a source that is about to wait can first hand over the lines it holds.
    pub fn next_line_buffered(&self) -> bool {
        let buffered = self.inner.buffer();
        buffered.get(self.lent..).is_some_and(|rest| memchr::memchr(b'\n', rest).is_some())
    }
}

/// `fill_buf`, retried when interrupted.
fn fill_buf(inner: &mut impl BufRead) -> io::Result<&[u8]> {
    loop {
        match inner.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            // The end of the input: asking again would read again (a terminal's second Ctrl-D).
            Ok([]) => return Ok(&[]),
            Ok(_) => break,
        }
    }
    // Asked again so that the borrow returned is not one the loop holds; it reads nothing.
    inner.fill_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_too_long_and_unterminated_lines() {
        let input: &[u8] = b"ab\n0123456789\n\ncd\nlast";
        let mut reader = LineReader::new(input, 4);
        assert_eq!(reader.next_line().unwrap(), Some((1, Line::Complete(b"ab"))));
        assert_eq!(reader.next_line().unwrap(), Some((2, Line::TooLong)));
        assert_eq!(reader.next_line().unwrap(), Some((3, Line::Complete(b""))));
        assert_eq!(reader.next_line().unwrap(), Some((4, Line::Complete(b"cd"))));
        assert_eq!(reader.next_line().unwrap(), Some((5, Line::Unterminated(b"last"))));
        assert_eq!(reader.next_line().unwrap(), None);
    }

    #[test]
    fn a_buffered_next_line_is_told_from_one_the_input_must_give() {
        let input: &[u8] = b"a\nb\npart";
        let mut reader = LineReader::new(io::BufReader::new(input), 16);
        assert_eq!(reader.next_line().unwrap(), Some((1, Line::Complete(b"a"))));
        assert!(reader.next_line_buffered());
        assert_eq!(reader.next_line().unwrap(), Some((2, Line::Complete(b"b"))));
        // Only a partial line is left: reading it waits for the input.
        assert!(!reader.next_line_buffered());
    }

    #[test]
    fn a_skipped_line_is_measured_and_hashed_whole() {
        // A reader buffer smaller than the line, so that the skip spans several reads.
        let line = b"0123456789abcdefghij";
        let input = [&line[..], b"\nok\n", &line[..7]].concat();
        let mut reader = LineReader::new(io::BufReader::with_capacity(3, &input[..]), 4);
        assert_eq!(reader.next_line().unwrap(), Some((1, Line::TooLong)));
        let expected: [u8; 32] = Sha256::digest(line).into();
        assert_eq!(reader.skipped(), Skipped { bytes: 20, sha256: expected });
        assert_eq!(reader.next_line().unwrap(), Some((2, Line::Complete(b"ok"))));
        assert_eq!(reader.next_line().unwrap(), Some((3, Line::TooLong)));
        let expected: [u8; 32] = Sha256::digest(&line[..7]).into();
        assert_eq!(reader.skipped(), Skipped { bytes: 7, sha256: expected });
    }

    #[test]
    fn offsets_count_every_byte_and_say_where_a_line_ended() {
        let input: &[u8] = b"ab\n0123456789\ncd\n0123456789";
        let mut reader = LineReader::new(input, 4);
        let mut seen = Vec::new();
        while let Some((n, _, end)) = reader.next_line_with_end().unwrap() {
            seen.push((n, end.offset, end.terminated));
        }
        assert_eq!(seen, [(1, 3, true), (2, 14, true), (3, 17, true), (4, 27, false)]);
    }

    #[test]
    fn lines_across_buffer_boundaries_read_as_lines_within_one() {
        let input: &[u8] = b"ab\n0123456789\n\ncd\nabcd\nxyz\n0123456789\nlast";
        let read_all = |reader: &mut LineReader<&mut dyn BufRead>| {
            let mut seen = Vec::new();
            while let Some((n, line, end)) = reader.next_line_with_end().unwrap() {
                seen.push((n, format!("{line:?}"), end));
            }
            seen
        };
        let mut whole = input;
        let expected = read_all(&mut LineReader::new(&mut whole, 4));
        assert_eq!(expected.len(), 8);
        // Small buffers split lines, newlines and over-long lines at every position.
        for capacity in 1..=16 {
            let mut buffered = io::BufReader::with_capacity(capacity, input);
            assert_eq!(read_all(&mut LineReader::new(&mut buffered, 4)), expected, "capacity {capacity}");
        }
    }

    /// Input that ends, then would go on (a terminal after Ctrl-D), interrupted in between.
    struct EndThenMore {
        reads: usize,
    }

    impl Read for EndThenMore {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let chunk: &[u8] = match self.reads {
                1 => b"ab\n",
                2 => b"",
                3 => return Err(io::Error::new(io::ErrorKind::Interrupted, "signal")),
                _ => b"late\n",
            };
            buf[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
    }

    #[test]
    fn the_end_of_the_input_is_read_once() {
        let mut reader = LineReader::new(io::BufReader::new(EndThenMore { reads: 0 }), 100);
        assert_eq!(reader.next_line().unwrap(), Some((1, Line::Complete(b"ab"))));
        assert_eq!(reader.next_line().unwrap(), None);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let mut reader = LineReader::new(&b"abcd\nabcde\n"[..], 4);
        assert_eq!(reader.next_line().unwrap(), Some((1, Line::Complete(b"abcd"))));
        assert_eq!(reader.next_line().unwrap(), Some((2, Line::TooLong)));
    }
}
