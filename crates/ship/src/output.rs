//! Where signed batch lines go, and what a later run reads back from there to continue a chain.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use teelog_core::batch::{ParsedBatch, SignatureStatus};
use teelog_core::merkle::Digest;
use teelog_core::{ChainHead, Header, PublicKey};
use teelog_store::lines::{Line, LineReader};
use teelog_store::{Store, StoreError};

use crate::signer::ShipError;

pub enum Output {
    Stdout(io::Stdout),
    /// `durable`: a regular file, which is fsynced per batch (pipes and devices cannot be).
    File {
        file: File,
        path: PathBuf,
        durable: bool,
    },
    Store(Store),
}

impl Output {
    /// Appends to `path`, creating it if need be.
    pub fn file(path: &Path) -> Result<Self, ShipError> {
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io_err(path))?;
        let durable = file.metadata().is_ok_and(|m| m.is_file());
        Ok(Output::File { file, path: path.to_path_buf(), durable })
    }

    /// Whether batches survive in this output for the next run to find.
    pub fn is_readable(&self) -> bool {
        match self {
            Output::Stdout(_) => false,
            Output::File { durable, .. } => *durable,
            Output::Store(_) => true,
        }
    }

    /// Writes one line durably (where the output can be made durable).
    pub fn write(&mut self, line: &[u8]) -> Result<(), ShipError> {
        match self {
            Output::Stdout(out) => out.write_all(line).and_then(|()| out.flush()).map_err(io_err("stdout")),
            Output::File { file, path, durable } => file
                .write_all(line)
                .and_then(|()| if *durable { file.sync_data() } else { Ok(()) })
                .map_err(io_err(path)),
            Output::Store(store) => Ok(store.append(line)?),
        }
    }

    pub fn store(&self) -> Option<&Store> {
        match self {
            Output::Store(store) => Some(store),
            _ => None,
        }
    }

    /// Headers of `stream` from the newest part of the output that holds any (the whole file;
    /// store segments newest first until one has a match): of `epoch` and validly signed by
    /// `key` when continuing that epoch with that key, of any signer when starting a new one.
    pub(crate) fn signed_headers(
        &self,
        stream: &str,
        key: Option<&PublicKey>,
        epoch: Option<&str>,
    ) -> Result<Vec<(Header, Digest)>, ShipError> {
        let paths = match self {
            Output::Stdout(_) => return Ok(Vec::new()),
            Output::File { path, durable: true, .. } => vec![path.clone()],
            Output::File { .. } => return Ok(Vec::new()),
            Output::Store(store) => teelog_store::segments(store.dir())?,
        };
        // Continuing an epoch, only this key's own batches count. A new epoch links to the
        // newest header of the stream whoever signed it (a previous run's key, gone with its
        // TEE); a forged one there would only earn the new epoch a reported chain_break.
        newest_headers(&paths, stream, epoch.and(key), epoch)
    }
}

fn io_err(what: impl AsRef<Path>) -> impl FnOnce(io::Error) -> ShipError {
    let path = what.as_ref().to_path_buf();
    move |source| ShipError::Store(StoreError::Io { path, source })
}

/// Headers of `stream` from the newest of `paths` (oldest first) that holds any of `epoch`
/// (any epoch if `None`), signed by `key` when one is given.
fn newest_headers(
    paths: &[PathBuf],
    stream: &str,
    key: Option<&PublicKey>,
    epoch: Option<&str>,
) -> Result<Vec<(Header, Digest)>, ShipError> {
    for path in paths.iter().rev() {
        let found = scan_signed_headers(path, stream, key)?;
        if found.iter().any(|(h, _)| epoch.is_none_or(|e| h.epoch == e)) {
            return Ok(found);
        }
    }
    Ok(Vec::new())
}

/// The header a new epoch of `stream` in the store at `dir` links to: its newest, by `sealed_at`.
pub fn stream_head(dir: &Path, stream: &str) -> Result<Option<String>, ShipError> {
    let found = newest_headers(&teelog_store::segments(dir)?, stream, None, None)?;
    Ok(ChainHead::resume(stream, None, found).prev)
}

/// Headers of `stream` in one file, signed by `key` when one is given.
fn scan_signed_headers(
    path: &Path,
    stream: &str,
    key: Option<&PublicKey>,
) -> Result<Vec<(Header, Digest)>, ShipError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = LineReader::new(BufReader::new(file), usize::MAX >> 1);
    let mut found = Vec::new();
    while let Some((_, line)) = reader.next_line().map_err(io_err(path))? {
        let (Line::Complete(bytes) | Line::Unterminated(bytes)) = line else {
            continue;
        };
        let Ok(batch) = ParsedBatch::parse(bytes) else {
            continue;
        };
        let signed = key.is_none_or(|k| batch.verify_with(k) == SignatureStatus::Valid);
        if batch.header.stream == stream && signed {
            found.push((batch.header.clone(), batch.header_hash));
        }
    }
    Ok(found)
}
