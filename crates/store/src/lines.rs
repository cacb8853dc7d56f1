//! Reading NDJSON with a bound on line length, so that one hostile line cannot exhaust memory
//! and an over-long line is reported and skipped rather than ending the read.

use std::io::{self, BufRead, Read};

/// One line as read, without its newline.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Complete(&'a [u8]),
    /// The input ended without a newline after these bytes (a torn write, or a hand-made file).
    Unterminated(&'a [u8]),
    /// Longer than the limit; its bytes were skipped.
    TooLong,
}

pub struct LineReader<R> {
    inner: R,
    max_line_bytes: usize,
    line_no: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max_line_bytes: usize) -> Self {
        Self { inner, max_line_bytes, line_no: 0, buf: Vec::new() }
    }

    /// The next line and its 1-based number, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let limit = self.max_line_bytes as u64 + 1;
        let n = (&mut self.inner).take(limit).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            return Ok(Some((self.line_no, Line::Complete(&self.buf))));
        }
        if self.buf.len() as u64 >= limit {
            self.inner.skip_until(b'\n')?;
            return Ok(Some((self.line_no, Line::TooLong)));
        }
        Ok(Some((self.line_no, Line::Unterminated(&self.buf))))
    }
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
    fn a_line_of_exactly_the_limit_is_accepted() {
        let mut reader = LineReader::new(&b"abcd\nabcde\n"[..], 4);
        assert_eq!(reader.next_line().unwrap(), Some((1, Line::Complete(b"abcd"))));
        assert_eq!(reader.next_line().unwrap(), Some((2, Line::TooLong)));
    }
}
