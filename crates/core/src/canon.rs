//! RFC 8785 JSON Canonicalization Scheme (JCS), in one pass over the input.
//!
//! The scanner validates the JSON text and writes its canonical form: members sorted by the
//! UTF-16 code units of their names, strings escaped minimally, numbers in ECMAScript form,
//! no white space. Duplicate member names are rejected (I-JSON, RFC 7493). Integers beyond 2^53,
//! which JCS would silently change, are refused in plain JSON (unless they are already the exact
//! spelling of a double) and become strings of their digits in records.
//!
//! Buffers are kept between calls, so canonicalising a stream of records allocates nothing in the
//! steady state: this is the hot path of `teelog sign`.

use std::cmp::Ordering;

use crate::timestamp::{is_canonical_spelling, parse_rfc3339_bytes, write_rfc3339, UnixNanos};

/// Largest integer magnitude an IEEE 754 double represents exactly (2^53).
pub const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// Nesting limit: deeper input is refused before it can exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// Why an input has no canonical form; nothing was written to the output.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonError {
    /// Not JSON (RFC 8259): says what was expected and at which byte.
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// An object names a member twice: which one would count is ambiguous, so neither does.
    #[error("duplicate member name {0:?}")]
    DuplicateKey(String),
    /// An integer a double cannot hold exactly (plain JSON only; records keep it as a string).
    #[error("integer {0} is beyond ±2^53 and would be changed by canonical JSON; send it as a string")]
    InexactInteger(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Raised by a record hook (see `Canonicalizer::record`, crate-internal).
    #[error("{0}")]
    Record(String),
    /// A record whose canonical form alone would make a batch line longer than a verifier reads.
    #[error("its canonical form ({bytes} bytes) would make a batch line longer than {limit} bytes")]
    TooLarge {
        /// The canonical form's length.
        bytes: usize,
        /// The longest batch line a verifier reads.
        limit: usize,
    },
}

fn syntax(what: &str, at: usize) -> CanonError {
    CanonError::Syntax(format!("{what} at byte {at}"))
}

/// A member name: either a run of the input (it had no escapes, so raw equals decoded) or a
/// run of the level's arena (decoded from escapes).
#[derive(Clone, Copy)]
enum Key {
    Input(usize, usize),
    Arena(usize, usize),
}

struct Member {
    key: Key,
    /// The name's first eight bytes, big-endian: for ASCII names, comparing these first is
    /// comparing the names, unless they are equal.
    prefix: u64,
    ascii: bool,
    /// The canonical `"name":value` in the level's buffer.
    start: usize,
    end: usize,
}

#[derive(Default)]
struct Level {
    buf: Vec<u8>,
    members: Vec<Member>,
    arena: String,
}

/// What a record's top-level members need beyond canonicalisation (see `record.rs`).
pub(crate) struct RecordRules<'a> {
    /// The time to give a record without `ts`; asked only then.
    pub now: &'a dyn Fn() -> UnixNanos,
    /// Fields whose value must start with the given byte (`"` string, `{` object).
    pub typed: &'a [(&'a str, u8, &'a str)],
}

/// A reusable canonicaliser.
#[derive(Default)]
pub struct Canonicalizer {
    levels: Vec<Level>,
    scratch: String,
    /// Write an integer beyond ±2^53 as a string of its digits instead of refusing it.
    big_integers_as_strings: bool,
}

impl Canonicalizer {
    /// A canonicaliser with empty buffers. [`Canonicalizer::canonicalize`] refuses integers
    /// beyond ±2^53 unless they are already the exact spelling of a double.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the canonical form of one JSON text to `out`; on error `out` is unchanged.
    pub fn canonicalize(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CanonError> {
        let mark = out.len();
        let result = self.run(input, out, None).map(|_| ());
        if result.is_err() {
            out.truncate(mark);
        }
        result
    }

    /// Canonicalises a record: a JSON object whose `ts` becomes the canonical RFC 3339 spelling
    /// (from RFC 3339 text or integer Unix nanoseconds; `rules.now` where absent). Returns `ts`.
    pub(crate) fn record(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        rules: &RecordRules<'_>,
    ) -> Result<UnixNanos, CanonError> {
        let mark = out.len();
        let result = self.run(input, out, Some(rules));
        if result.is_err() {
            out.truncate(mark);
        }
        result.and_then(|ts| ts.ok_or_else(|| CanonError::Record("a record must be a JSON object".into())))
    }

    fn run(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        rules: Option<&RecordRules<'_>>,
    ) -> Result<Option<UnixNanos>, CanonError> {
        // Outside strings the grammar admits only ASCII, so UTF-8 is checked in strings alone,
        // and only where the scan saw a non-ASCII byte.
        // In records, integers beyond ±2^53 become strings rather than a reason to refuse.
        self.big_integers_as_strings = rules.is_some();
        let mut p = Parser { input, pos: 0 };
        p.skip_ws();
        let mut ts = None;
        match rules {
            Some(rules) => {
                if p.peek() != Some(b'{') {
                    return Err(CanonError::Record("a record must be a JSON object".into()));
                }
                ts = self.object(&mut p, 0, out, Some(rules))?;
            }
            None => self.value(&mut p, 0, out)?,
        }
        p.skip_ws();
        if p.pos != input.len() {
            return Err(syntax("trailing characters", p.pos));
        }
        Ok(ts)
    }

    fn value(&mut self, p: &mut Parser<'_>, depth: usize, out: &mut Vec<u8>) -> Result<(), CanonError> {
        match p.peek() {
            Some(b'{') => self.object(p, depth, out, None).map(|_| ()),
            Some(b'[') => self.array(p, depth, out),
            Some(b'"') => {
                let start = p.pos;
                match p.string(&mut self.scratch)? {
                    Scanned::Plain => out.extend_from_slice(&p.input[start..p.pos]),
                    Scanned::Decoded => write_string(&self.scratch, out),
                }
                Ok(())
            }
            Some(b't') => p.literal(b"true", out),
            Some(b'f') => p.literal(b"false", out),
            Some(b'n') => p.literal(b"null", out),
            Some(b'-' | b'0'..=b'9') => p.number(out, self.big_integers_as_strings),
            Some(_) => Err(syntax("unexpected character", p.pos)),
            None => Err(syntax("unexpected end of input", p.pos)),
        }
    }

    fn array(&mut self, p: &mut Parser<'_>, depth: usize, out: &mut Vec<u8>) -> Result<(), CanonError> {
        if depth >= MAX_DEPTH {
            return Err(CanonError::TooDeep);
        }
        p.pos += 1;
        out.push(b'[');
        p.skip_ws();
        if p.peek() == Some(b']') {
            p.pos += 1;
            out.push(b']');
            return Ok(());
        }
        loop {
            p.skip_ws();
            self.value(p, depth + 1, out)?;
            p.skip_ws();
            match p.next() {
                Some(b',') => out.push(b','),
                Some(b']') => break,
                _ => return Err(syntax("expected ',' or ']'", p.pos.saturating_sub(1))),
            }
        }
        out.push(b']');
        Ok(())
    }

    /// Returns the record timestamp when `rules` is given and the object has a `ts`.
    fn object(
        &mut self,
        p: &mut Parser<'_>,
        depth: usize,
        out: &mut Vec<u8>,
        rules: Option<&RecordRules<'_>>,
    ) -> Result<Option<UnixNanos>, CanonError> {
        if depth >= MAX_DEPTH {
            return Err(CanonError::TooDeep);
        }
        if self.levels.len() <= depth {
            self.levels.resize_with(depth + 1, Level::default);
        }
        // Taken out while in use so that nested objects can borrow `self`; no allocation.
        let mut level = std::mem::take(&mut self.levels[depth]);
        level.buf.clear();
        level.members.clear();
        level.arena.clear();
        let mut result = self.object_members(p, depth, &mut level, rules);
        if let (Ok(None), Some(rules)) = (&result, rules) {
            // A record without `ts` gets the time it was received.
            let now = (rules.now)();
            result = Ok(Some(now));
            let start = level.buf.len();
            level.buf.extend_from_slice(b"\"ts\":\"");
            write_rfc3339(now, &mut level.buf);
            level.buf.push(b'"');
            let a = level.arena.len();
            level.arena.push_str("ts");
            level.members.push(Member::new(
                key_bytes(p.input, &level.arena, Key::Arena(a, a + 2)),
                Key::Arena(a, a + 2),
                start,
                level.buf.len(),
            ));
        }
        let result = result.and_then(|ts| {
            emit_sorted(p.input, &mut level, out)?;
            Ok(ts)
        });
        self.levels[depth] = level;
        result
    }

    fn object_members(
        &mut self,
        p: &mut Parser<'_>,
        depth: usize,
        level: &mut Level,
        rules: Option<&RecordRules<'_>>,
    ) -> Result<Option<UnixNanos>, CanonError> {
        let mut ts = None;
        p.pos += 1;
        p.skip_ws();
        if p.peek() == Some(b'}') {
            p.pos += 1;
            return Ok(None);
        }
        loop {
            p.skip_ws();
            if p.peek() != Some(b'"') {
                return Err(syntax("expected a member name", p.pos));
            }
            let raw_start = p.pos;
            let start = level.buf.len();
            let key = match p.string(&mut self.scratch)? {
                Scanned::Plain => {
                    level.buf.extend_from_slice(&p.input[raw_start..p.pos]);
                    Key::Input(raw_start + 1, p.pos - 1)
                }
                Scanned::Decoded => {
                    write_string(&self.scratch, &mut level.buf);
                    let a = level.arena.len();
                    level.arena.push_str(&self.scratch);
                    Key::Arena(a, level.arena.len())
                }
            };
            p.skip_ws();
            if p.next() != Some(b':') {
                return Err(syntax("expected ':'", p.pos.saturating_sub(1)));
            }
            level.buf.push(b':');
            p.skip_ws();
            let name = key_bytes(p.input, &level.arena, key);
            match rules {
                Some(_) if name == b"ts" => ts = Some(self.record_ts(p, &mut level.buf)?),
                Some(rules) => {
                    if let Some((field, first, expected)) =
                        rules.typed.iter().find(|(f, _, _)| f.as_bytes() == name)
                    {
                        if p.peek() != Some(*first) {
                            return Err(CanonError::Record(format!("field {field:?} must be {expected}")));
                        }
                    }
                    self.value(p, depth + 1, &mut level.buf)?;
                }
                None => self.value(p, depth + 1, &mut level.buf)?,
            }
            level.members.push(Member::new(name, key, start, level.buf.len()));
            p.skip_ws();
            match p.next() {
                Some(b',') => {}
                Some(b'}') => return Ok(ts),
                _ => return Err(syntax("expected ',' or '}'", p.pos.saturating_sub(1))),
            }
        }
    }

    /// Reads a record's `ts` value and writes its canonical spelling.
    fn record_ts(&mut self, p: &mut Parser<'_>, out: &mut Vec<u8>) -> Result<UnixNanos, CanonError> {
        let bad_type = || {
            CanonError::Record("field \"ts\" must be an RFC 3339 string or integer Unix nanoseconds".into())
        };
        let nanos = match p.peek() {
            Some(b'"') => {
                let start = p.pos;
                let text = match p.string(&mut self.scratch)? {
                    Scanned::Plain => &p.input[start + 1..p.pos - 1],
                    Scanned::Decoded => self.scratch.as_bytes(),
                };
                let nanos = parse_rfc3339_bytes(text)
                    .map_err(|e| CanonError::Record(format!("field \"ts\": {e}")))?;
                if is_canonical_spelling(text) {
                    // Already exactly what `write_rfc3339` would write.
                    out.push(b'"');
                    out.extend_from_slice(text);
                    out.push(b'"');
                    return Ok(nanos);
                }
                nanos
            }
            Some(b'-' | b'0'..=b'9') => {
                let text = p.number_text()?;
                ascii(text).parse::<UnixNanos>().map_err(|_| bad_type())?
            }
            _ => return Err(bad_type()),
        };
        out.push(b'"');
        write_rfc3339(nanos, out);
        out.push(b'"');
        Ok(nanos)
    }
}

/// A member name's UTF-8 bytes.
fn key_bytes<'a>(input: &'a [u8], arena: &'a str, key: Key) -> &'a [u8] {
    match key {
        Key::Input(s, e) => &input[s..e],
        Key::Arena(s, e) => &arena.as_bytes()[s..e],
    }
}

impl Member {
    fn new(name: &[u8], key: Key, start: usize, end: usize) -> Self {
        // Built in a register: a variable-length copy into a buffer read back as a u64 stalls
        // store-to-load forwarding, which once cost a fifth of the whole scan.
        let prefix =
            name.iter().take(8).enumerate().fold(0u64, |acc, (i, &b)| acc | u64::from(b) << (56 - 8 * i));
        Self { key, prefix, ascii: name.is_ascii(), start, end }
    }
}

fn emit_sorted(input: &[u8], level: &mut Level, out: &mut Vec<u8>) -> Result<(), CanonError> {
    let Level { buf, members, arena } = level;
    let key = |m: &Member| key_bytes(input, arena, m.key);
    members.sort_unstable_by(|a, b| {
        if a.ascii && b.ascii {
            a.prefix.cmp(&b.prefix).then_with(|| key(a).cmp(key(b)))
        } else {
            compare_utf16(key(a), key(b))
        }
    });
    if let Some(pair) = members.windows(2).find(|w| key(&w[0]) == key(&w[1])) {
        return Err(CanonError::DuplicateKey(String::from_utf8_lossy(key(&pair[0])).into_owned()));
    }
    out.push(b'{');
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&buf[m.start..m.end]);
    }
    out.push(b'}');
    Ok(())
}

/// Canonicalises one JSON text into `out` (a convenience for one-off use).
pub fn canonicalize(input: &[u8], out: &mut Vec<u8>) -> Result<(), CanonError> {
    Canonicalizer::new().canonicalize(input, out)
}

enum Scanned {
    Plain,
    Decoded,
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Result<(), CanonError> {
        if self.input[self.pos..].starts_with(word) {
            self.pos += word.len();
            out.extend_from_slice(word);
            Ok(())
        } else {
            Err(syntax("unexpected character", self.pos))
        }
    }

    /// Scans a string starting at its opening quote. A string without escapes is `Plain`: its
    /// raw text, quotes included, is already canonical. Otherwise its value is in `decoded`.
    fn string(&mut self, decoded: &mut String) -> Result<Scanned, CanonError> {
        let open = self.pos;
        self.pos += 1;
        let plain = self.pos;
        let Some(Special { at, non_ascii }) = find_special(&self.input[self.pos..]) else {
            return Err(syntax("unterminated string", open));
        };
        self.pos += at;
        if non_ascii {
            check_utf8(self.input, plain, self.pos)?;
        }
        match self.input[self.pos] {
            b'"' => {
                self.pos += 1;
                return Ok(Scanned::Plain);
            }
            b'\\' => {}
            _ => return Err(syntax("control character in string", self.pos)),
        }
        decoded.clear();
        decoded.push_str(check_utf8(self.input, plain, self.pos)?);
        loop {
            match self.next() {
                None => return Err(syntax("unterminated string", open)),
                Some(b'"') => return Ok(Scanned::Decoded),
                Some(b'\\') => {
                    let at = self.pos - 1;
                    let c = match self.next() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape(at)?,
                        _ => return Err(syntax("invalid escape", at)),
                    };
                    decoded.push(c);
                }
                Some(b) if b < 0x20 => return Err(syntax("control character in string", self.pos - 1)),
                Some(_) => {
                    // Copy the run of plain bytes up to the next quote, backslash or control.
                    let start = self.pos - 1;
                    let run = self.input[self.pos..]
                        .iter()
                        .position(|&b| NEEDS_ESCAPE[usize::from(b)])
                        .unwrap_or(self.input.len() - self.pos);
                    self.pos += run;
                    decoded.push_str(check_utf8(self.input, start, self.pos)?);
                }
            }
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32, CanonError> {
        let digits =
            self.input.get(self.pos..self.pos + 4).ok_or_else(|| syntax("truncated \\u escape", at))?;
        let text = std::str::from_utf8(digits).map_err(|_| syntax("invalid \\u escape", at))?;
        let v = u32::from_str_radix(text, 16).map_err(|_| syntax("invalid \\u escape", at))?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(syntax("invalid \\u escape", at));
        }
        self.pos += 4;
        Ok(v)
    }

    fn unicode_escape(&mut self, at: usize) -> Result<char, CanonError> {
        let first = self.hex4(at)?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(syntax("unpaired surrogate in \\u escape", at));
                }
                self.pos += 2;
                let second = self.hex4(at)?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(syntax("unpaired surrogate in \\u escape", at));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(syntax("unpaired surrogate in \\u escape", at)),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| syntax("invalid \\u escape", at))
    }

    /// Scans a number per the JSON grammar and returns its text (ASCII).
    fn number_text(&mut self) -> Result<&[u8], CanonError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while p.peek().is_some_and(|b| b.is_ascii_digit()) {
                p.pos += 1;
            }
            p.pos - from
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(syntax("invalid number", start)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(syntax("invalid number", start));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(syntax("invalid number", start));
            }
        }
        Ok(&self.input[start..self.pos])
    }

    /// `big_integers_as_strings`: write an integer beyond ±2^53 as a string of its digits
    /// instead of refusing it.
    fn number(&mut self, out: &mut Vec<u8>, big_integers_as_strings: bool) -> Result<(), CanonError> {
        let start = self.pos;
        let digits = self.number_text()?;
        let integer = !digits.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
        if integer {
            let magnitude = digits.strip_prefix(b"-").unwrap_or(digits);
            // Up to 15 digits is below 2^53 and already canonical (but for "-0").
            if magnitude.len() <= 15 {
                if magnitude == b"0" {
                    out.push(b'0');
                } else {
                    out.extend_from_slice(digits);
                }
                return Ok(());
            }
        }
        let text = ascii(digits);
        if integer {
            // Beyond 2^53 an integer survives only if it is already the spelling of a double
            // (as JCS itself writes large doubles); anything else would be silently changed.
            let exact = match text.parse::<i64>() {
                Ok(v) => v.unsigned_abs() <= MAX_EXACT_INTEGER,
                Err(_) => false,
            };
            let double_spelling = || {
                let mut spelled = Vec::new();
                text.parse::<f64>().is_ok_and(|v| {
                    v.is_finite() && {
                        write_number(v, &mut spelled);
                        spelled == text.as_bytes()
                    }
                })
            };
            if exact {
                out.extend_from_slice(text.as_bytes());
                return Ok(());
            }
            if big_integers_as_strings {
                // Digits and an optional '-': nothing to escape.
                out.push(b'"');
                out.extend_from_slice(text.as_bytes());
                out.push(b'"');
                return Ok(());
            }
            if double_spelling() {
                out.extend_from_slice(text.as_bytes());
                return Ok(());
            }
            return Err(CanonError::InexactInteger(text.to_string()));
        }
        let value: f64 = text.parse().map_err(|_| syntax("invalid number", start))?;
        if !value.is_finite() {
            return Err(syntax("number out of range", start));
        }
        write_number(value, out);
        Ok(())
    }
}

/// A number's text: the scanner admitted only ASCII.
fn ascii(number: &[u8]) -> &str {
    std::str::from_utf8(number).unwrap_or_default()
}

/// RFC 8785 §3.2.3: member names sort by their UTF-16 code units. UTF-8 byte order equals code
/// point order, which differs from UTF-16 order only when a non-ASCII character is involved.
fn compare_utf16(a: &[u8], b: &[u8]) -> Ordering {
    // Names are runs of validated UTF-8 between character boundaries.
    compare_names(&String::from_utf8_lossy(a), &String::from_utf8_lossy(b))
}

/// The order of member names in canonical form (RFC 8785 §3.2.3, by UTF-16 code units), for
/// writers that emit canonical form directly.
pub fn compare_names(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
    }
}

/// RFC 8785 §3.2.2.2: escape only `"`, `\` and control characters, the short forms where JSON
/// has them, otherwise `\u00xx` in lower case.
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(Special { at, .. }) = find_special(&bytes[start..]) {
        let i = start + at;
        let b = bytes[i];
        out.extend_from_slice(&bytes[start..i]);
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            _ => 0,
        };
        if short == 0 {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `input[start..end]` as text, or where it stops being UTF-8.
fn check_utf8(input: &[u8], start: usize, end: usize) -> Result<&str, CanonError> {
    std::str::from_utf8(&input[start..end]).map_err(|e| syntax("invalid UTF-8", start + e.valid_up_to()))
}

/// Where a plain run inside a string ends.
#[derive(Debug, PartialEq, Eq)]
struct Special {
    at: usize,
    /// Whether a byte at or near the run is non-ASCII, so that the run must be checked as UTF-8.
    /// It may be set by bytes just past `at`, never unset by one before it.
    non_ascii: bool,
}

/// The index of the first byte that ends a plain run inside a string (`"`, `\` or a control
/// character), eight bytes at a time: strings are most of a record, so this is the scanner's
/// inner loop. The classic has-zero-byte bit trick finds the lowest such byte exactly; the
/// words' high bits, gathered on the way, say whether the run was all ASCII.
fn find_special(bytes: &[u8]) -> Option<Special> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    let mut base = 0;
    let mut high = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        high |= w;
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let found = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGH;
        if found != 0 {
            let at = base + (found.trailing_zeros() / 8) as usize;
            return Some(Special { at, non_ascii: high & HIGH != 0 });
        }
        base += 8;
    }
    let rest = chunks.remainder();
    let i = rest.iter().position(|&b| NEEDS_ESCAPE[usize::from(b)])?;
    let non_ascii = high & HIGH != 0 || !rest[..i].is_ascii();
    Some(Special { at: base + i, non_ascii })
}

/// Bytes that end a plain run inside a string: control characters, `"` and `\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// RFC 8785 §3.2.2.3: numbers as ECMAScript's Number.prototype.toString writes them.
fn write_number(n: f64, out: &mut Vec<u8>) {
    if n == 0.0 {
        // Covers -0, which ECMAScript prints as "0".
        out.push(b'0');
    } else if n.fract() == 0.0 && n.abs() < MAX_EXACT_INTEGER as f64 {
        // Integral doubles below 2^53 print as plain integers; skip the float formatter.
        out.extend_from_slice(itoa::Buffer::new().format(n as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(n).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(input: &str) -> Result<String, CanonError> {
        let mut out = Vec::new();
        canonicalize(input.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).expect("canonical output is UTF-8"))
    }

    // RFC 8785 §3.2.4: the worked example.
    #[test]
    fn rfc8785_section_3_2_4_example() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50,
                      2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        assert_eq!(
            canon(input).unwrap(),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    // RFC 8785 §3.2.3: sorting by UTF-16 code units.
    #[test]
    fn rfc8785_sorting_example() {
        let input = "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}";
        assert_eq!(
            canon(input).unwrap(),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    // RFC 8785 Appendix B: IEEE 754 values and their canonical text.
    #[test]
    fn rfc8785_appendix_b_numbers() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, expected) in cases {
            let mut out = Vec::new();
            write_number(f64::from_bits(bits), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "bits {bits:016x}");
            // And the same through the parser, from the shortest round-trip text.
            let text = format!("{:e}", f64::from_bits(bits));
            assert_eq!(canon(&text).unwrap(), expected, "text {text}");
        }
    }

    #[test]
    fn find_special_agrees_with_the_table() {
        let alphabet = [b'a', b'"', b'\\', 0x1f, 0x20, 0x7f, 0x80, 0xc3, 0xa9, 0xff, 0x00, b'!', 0xa2, 0xdc];
        let mut seed = 12345u32;
        for len in 0..40 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        alphabet[(seed >> 16) as usize % alphabet.len()]
                    })
                    .collect();
                let expected = bytes.iter().position(|&b| NEEDS_ESCAPE[usize::from(b)]);
                let found = find_special(&bytes);
                assert_eq!(found.as_ref().map(|s| s.at), expected, "{bytes:02x?}");
                if let (Some(found), Some(at)) = (found, expected) {
                    if !bytes[..at].is_ascii() {
                        assert!(found.non_ascii, "missed non-ASCII before {at} in {bytes:02x?}");
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_utf8_is_refused_where_it_is() {
        let mut out = Vec::new();
        let mut canonicalizer = Canonicalizer::new();
        for (bad, why) in [
            (&b"\"\xff\""[..], "invalid UTF-8 at byte 1"),
            (b"{\"caf\xc3\":1}", "invalid UTF-8 at byte 5"),
            (b"[\"long enough to need words \xe2\x82\"]", "invalid UTF-8 at byte 28"),
            (b"[\"esc\\n then \xc0\xaf\"]", "invalid UTF-8 at byte 13"),
            (b"[\"\xc3\xa9\", \xc3\xa9]", "unexpected character at byte 7"),
        ] {
            let err = canonicalizer.canonicalize(bad, &mut out).unwrap_err();
            assert_eq!(err.to_string(), format!("not valid JSON: {why}"), "{bad:02x?}");
        }
        canonicalizer.canonicalize("[\"caf\u{e9} \u{1f600}\\t\u{e9}\"]".as_bytes(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "[\"caf\u{e9} \u{1f600}\\t\u{e9}\"]");
    }

    #[test]
    fn integers_and_literals() {
        assert_eq!(canon("-0").unwrap(), "0");
        assert_eq!(canon("-0.0").unwrap(), "0");
        assert_eq!(canon("1.0").unwrap(), "1");
        assert_eq!(canon("9007199254740992").unwrap(), "9007199254740992");
        assert_eq!(canon("-9007199254740992").unwrap(), "-9007199254740992");
        assert_eq!(canon(" [true , false,null ] ").unwrap(), "[true,false,null]");
        assert_eq!(canon("{}").unwrap(), "{}");
        assert_eq!(canon("[]").unwrap(), "[]");
    }

    #[test]
    fn literal_non_ascii_and_del_are_not_escaped() {
        assert_eq!(canon("\"\\u00e9\\u007f\\u2028\"").unwrap(), "\"é\u{7f}\u{2028}\"");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(canon(r#"{"a":1,"a":2}"#), Err(CanonError::DuplicateKey("a".into())));
        assert_eq!(canon(r#"{"a":1,"\u0061":2}"#), Err(CanonError::DuplicateKey("a".into())));
        assert!(matches!(canon("12345678901234567890"), Err(CanonError::InexactInteger(_))));
        assert!(matches!(canon("-9007199254740993"), Err(CanonError::InexactInteger(_))));
        // A large integer that is exactly how JCS spells a double stays as it is.
        assert_eq!(canon("33685569120962456").unwrap(), "33685569120962456");
        assert_eq!(canon("1e21").unwrap(), "1e+21");
        assert_eq!(canon(&"[".repeat(MAX_DEPTH + 2)), Err(CanonError::TooDeep));
        for bad in [
            "",
            "{} x",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "{,}",
            "\"a",
            "\"\t\"",
            "tru",
            "nul",
            "1e400",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u+123\"",
            "{\"a\":1 \"b\":2}",
            "[1 2]",
        ] {
            assert!(matches!(canon(bad), Err(CanonError::Syntax(_))), "{bad:?} gave {:?}", canon(bad));
        }
        assert!(matches!(canonicalize(b"\"\xff\"", &mut Vec::new()), Err(CanonError::Syntax(_))));
    }

    #[test]
    fn output_is_a_fixed_point_and_errors_leave_output_alone() {
        let once = canon(r#"{"b":[1.0,{"z":null,"a":"x\u0001"}],"a":-0.0}"#).unwrap();
        assert_eq!(once, r#"{"a":0,"b":[1,{"a":"x\u0001","z":null}]}"#);
        assert_eq!(canon(&once).unwrap(), once);
        let mut out = b"kept".to_vec();
        assert!(Canonicalizer::new().canonicalize(br#"{"a":[1,2,{"b":"#, &mut out).is_err());
        assert_eq!(out, b"kept");
    }
}
