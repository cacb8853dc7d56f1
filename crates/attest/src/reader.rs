//! A bounds-checked cursor over attacker-supplied binary structures (TDX quotes are
//! little-endian, TPM structures big-endian): every read names what it reads, and none runs past
//! the end. Public so that the TPM client reads its device's responses the same way.

use crate::AttestError;

#[derive(Clone, Copy)]
pub enum Endian {
    Little,
    Big,
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    endian: Endian,
    /// The error type of the format being read.
    err: fn(String) -> AttestError,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], endian: Endian, err: fn(String) -> AttestError) -> Self {
        Self { bytes, pos: 0, endian, err }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], AttestError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| (self.err)(format!("truncated at {what} (offset {}, {n} bytes)", self.pos)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], AttestError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, AttestError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &str) -> Result<u16, AttestError> {
        let b = self.array(what)?;
        Ok(match self.endian {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        })
    }

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
