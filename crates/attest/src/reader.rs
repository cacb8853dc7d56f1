//! A bounds-checked cursor over attacker-supplied binary structures (TDX quotes are
//! little-endian, TPM structures big-endian): every read names what it reads, and none runs past
//! the end. Public so that the TPM client reads its device's responses the same way.

use crate::AttestError;

/// The byte order of the integers of a format.
#[derive(Clone, Copy)]
pub enum Endian {
    /// Least significant byte first (TDX quotes).
    Little,
    /// Most significant byte first (TPM structures).
    Big,
}

/// A cursor over `bytes`: each read either returns what was asked or fails with the format's
/// error, naming the field and offset; it never panics or reads past the end.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    endian: Endian,
    /// The error type of the format being read.
    err: fn(String) -> AttestError,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`; `err` wraps a message into the format's error (e.g.
    /// [`AttestError::Tdx`]).
    pub fn new(bytes: &'a [u8], endian: Endian, err: fn(String) -> AttestError) -> Self {
        Self { bytes, pos: 0, endian, err }
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes (`what` names them in the error if fewer are left).
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], AttestError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| (self.err)(format!("truncated at {what} (offset {}, {n} bytes)", self.pos)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next `N` bytes, as an array.
    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], AttestError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// The next byte.
    pub fn u8(&mut self, what: &str) -> Result<u8, AttestError> {
        Ok(self.take(1, what)?[0])
    }

    /// The next two bytes, as an integer in the reader's byte order.
    pub fn u16(&mut self, what: &str) -> Result<u16, AttestError> {
        let b = self.array(what)?;
        Ok(match self.endian {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        })
    }

    /// The next four bytes, as an integer in the reader's byte order.
    pub fn u32(&mut self, what: &str) -> Result<u32, AttestError> {
        let b = self.array(what)?;
        Ok(match self.endian {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        })
    }

    /// A u16 size and that many bytes (a TPM2B).
    pub fn sized(&mut self, what: &str) -> Result<&'a [u8], AttestError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }

    /// Fails unless everything was read.
    pub fn end(&self, what: &str) -> Result<(), AttestError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err((self.err)(format!("{n} bytes after {what}"))),
        }
    }
}
