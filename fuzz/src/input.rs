//! Fuzz input read as a sequence of choices, so that the same bytes always make the same
//! structure and libFuzzer's mutations move between nearby structures. When the bytes run out
//! every choice is its smallest value.

pub struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    /// Choices drawn from the fuzzer's `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.u16()) % n.max(1)
    }

    /// Up to `max` bytes, the length chosen first.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = self.below(max + 1).min(self.data.len());
        let (taken, rest) = self.data.split_at(len);
        self.data = rest;
        taken
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Splits `data` into exactly `n` parts at [`SEPARATOR`]s; missing parts are empty and the last
/// keeps any further separators. For targets that take several files at once.
pub fn split_parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts.resize(n, &[]);
    parts
}

/// What [`split_parts`] splits at: bytes that none of the files it splits contain.
pub const SEPARATOR: &[u8] = b"\n\x00--teelog-fuzz--\x00\n";

/// `parts` joined so that [`split_parts`] gives them back.
pub fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEPARATOR)
}
