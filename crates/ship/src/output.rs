//! Where signed batch lines go, and what a later run reads back from there to continue a chain.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use std::collections::{HashMap, HashSet};

use base64::Engine;
use teelog_attest::{BindingVerifier, TrustRoot};
use teelog_core::batch::{ParsedBatch, SignatureStatus, SignedHeader, MAX_BATCH_LINE};
use teelog_core::merkle::{sha256, Digest};
use teelog_core::timestamp::UnixNanos;
use teelog_core::verify::AttestationVerifier;
use teelog_core::{Header, PublicKey};
use teelog_store::lines::{Line, LineReader};
use teelog_store::{Store, StoreError};

use crate::signer::ShipError;

/// Where a signer writes its batch lines.
pub enum Output {
    /// Standard output: not durable, and not read back.
    Stdout(io::Stdout),
    /// `durable`: a regular file, which is fsynced per batch (pipes and devices cannot be).
    File {
        /// The open file, appended to.
        file: File,
        /// Its path, for messages.
        path: PathBuf,
        /// Whether it is a regular file.
        durable: bool,
    },
    /// An embedded store (the daemon's spool).
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

    /// The store, if the output is one.
    pub fn store(&self) -> Option<&Store> {
        match self {
            Output::Store(store) => Some(store),
            _ => None,
        }
    }

    /// The files of the output a later run can read, oldest first.
    fn readable_paths(&self) -> Result<Vec<PathBuf>, ShipError> {
        Ok(match self {
            Output::Stdout(_) | Output::File { durable: false, .. } => Vec::new(),
            Output::File { path, durable: true, .. } => vec![path.clone()],
            Output::Store(store) => teelog_store::segments(store.dir())?,
        })
    }

    /// The newest header of `stream` and `epoch` validly signed by `key`, from the newest part of
    /// the output that holds any (the whole file; store segments newest first until one has a
    /// match): where a signer continuing its own epoch stands. Only the newest is kept, and a
    /// line no newer than it is not verified, so that copies of a genuine line planted in the
    /// output cost neither memory nor a signature check each.
    pub(crate) fn own_newest(
        &self,
        stream: &str,
        key: &PublicKey,
        epoch: &str,
    ) -> Result<Option<(Header, Digest)>, ShipError> {
        for path in self.readable_paths()?.iter().rev() {
            let mut newest: Option<(Header, Digest)> = None;
            for_each_line(path, |line| {
                let Ok(batch) = ParsedBatch::parse(line) else { return };
                let header = &batch.header;
                let newer = newest.as_ref().is_none_or(|(h, _)| header.seq > h.seq);
                if newer
                    && header.stream == stream
                    && header.epoch == epoch
                    && batch.verify_with(key) == SignatureStatus::Valid
                {
                    newest = Some((batch.header.clone(), batch.header_hash));
                }
            })?;
            if newest.is_some() {
                return Ok(newest);
            }
        }
        Ok(None)
    }

    /// The newest header of `stream` in the output that `trust` vouches for (see [`HeadTrust`]).
    pub(crate) fn trusted_head(&self, stream: &str, trust: &HeadTrust) -> Result<TrustedHead, ShipError> {
        trusted_head(&self.readable_paths()?, stream, trust)
    }
}

/// Whom a signer believes about where a stream stands, when it links a new epoch to it
/// (docs/FORMAT.md §5.3). A header of the stream in the output is trusted if its SHA-256 is
/// `saved_head` (the head the signer's own state recorded), if it is validly signed by one of
/// `keys` (the signer's own, and keys the operator gave), or if it is validly signed by the key
/// an attestation document stored in the same output binds, where that document verifies
/// under the pinned AWS Nitro root or one of `roots`. Nothing else is: a planted line, however
/// well formed and however new, never becomes the head a new epoch links to.
#[derive(Debug, Clone, Default)]
pub struct HeadTrust {
    /// Keys whose valid signatures vouch for a header.
    pub keys: Vec<PublicKey>,
    /// Roots under which an attestation document in the output vouches for its key.
    pub roots: Vec<TrustRoot>,
    /// SHA-256 (hex) of the head the signer's own state recorded.
    pub saved_head: Option<String>,
}

/// What a signer found of its stream in its output.
#[derive(Debug, Default)]
pub struct TrustedHead {
    /// The newest trusted header (by `sealed_at`): its hash and `sealed_at`.
    pub head: Option<(Digest, UnixNanos)>,
    /// Headers of the stream read and not trusted.
    pub passed_over: u64,
    /// The newest of them, if it is newer than `head` (or there is no `head`).
    pub newest_passed_over: Option<Header>,
}

impl TrustedHead {
    fn trusted(&mut self, hash: Digest, at: UnixNanos) {
        if self.head.is_none_or(|(_, newest)| at > newest) {
            self.head = Some((hash, at));
        }
    }

    fn passed_over(&mut self, header: Header) {
        self.passed_over += 1;
        let newer = |h: &Header| (h.sealed_at_nanos(), h.seq);
        if self.newest_passed_over.as_ref().is_none_or(|n| newer(&header) > newer(n)) {
            self.newest_passed_over = Some(header);
        }
    }

    /// Forgets the newest header passed over if it is not newer than the trusted head.
    fn settle(&mut self) {
        let Some((_, head)) = self.head else { return };
        if self
            .newest_passed_over
            .as_ref()
            .is_some_and(|h| h.sealed_at_nanos().unwrap_or(UnixNanos::MIN) <= head)
        {
            self.newest_passed_over = None;
        }
    }
}

/// Headers waiting for the document they name, kept at most this many (the newest): a store
/// full of planted headers must not fill memory.
const MAX_PENDING: usize = 64;

/// A header naming a document not yet read, with what it takes to check it once it is.
struct Pending {
    header: Header,
    hash: Digest,
    at: UnixNanos,
    signed: SignedHeader,
}

/// See [`HeadTrust`]; `paths` are the output's files, oldest first. They are read newest first
/// until one holds a trusted header and no header waits for a document in an older one.
pub fn trusted_head(paths: &[PathBuf], stream: &str, trust: &HeadTrust) -> Result<TrustedHead, ShipError> {
    let mut roots = vec![TrustRoot::aws_nitro()];
    roots.extend(trust.roots.iter().cloned());
    let verifier = BindingVerifier { roots, allow_debug: false, now: unix_seconds() };
    // Documents read so far that a header named: the key each binds, if it verifies.
    let mut documents: HashMap<String, Option<PublicKey>> = HashMap::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut found = TrustedHead::default();
    for path in paths.iter().rev() {
        for_each_line(path, |line| {
            let Ok(batch) = ParsedBatch::parse(line) else { return };
            if batch.header.stream != stream {
                return;
            }
            let at = batch.header.sealed_at_nanos().unwrap_or(UnixNanos::MIN);
            let by_hash = trust.saved_head.as_deref() == Some(hex::encode(batch.header_hash).as_str());
            let by_key = trust.keys.iter().any(|k| batch.verify_with(k) == SignatureStatus::Valid);
            if by_hash || by_key {
                return found.trusted(batch.header_hash, at);
            }
            let named = batch.header.attestation.clone();
            match named.as_ref().map(|d| documents.get(d)) {
                Some(Some(Some(key))) if batch.verify_with(key) == SignatureStatus::Valid => {
                    found.trusted(batch.header_hash, at)
                }
                Some(None) => {
                    let signed = batch.signed_header();
                    pending.push(Pending { header: batch.header, hash: batch.header_hash, at, signed });
                    if pending.len() > MAX_PENDING {
                        pending.sort_by_key(|p| std::cmp::Reverse(p.at));
                        if let Some(oldest) = pending.pop() {
                            found.passed_over(oldest.header);
                        }
                    }
                }
                _ => found.passed_over(batch.header),
            }
        })?;
        if !pending.is_empty() {
            let wanted: HashSet<String> =
                pending.iter().filter_map(|p| p.header.attestation.clone()).collect();
            for_each_line(path, |line| {
                let Some(document) = attestation_document(line) else { return };
                let name = hex::encode(sha256(&document));
                if wanted.contains(&name) && !documents.contains_key(&name) {
                    let key = verifier.verify_document(&document).ok().map(|attested| attested.key);
                    documents.insert(name, key);
                }
            })?;
            for p in std::mem::take(&mut pending) {
                let named = p.header.attestation.as_ref().and_then(|d| documents.get(d));
                match named {
                    None => pending.push(p),
                    Some(Some(key)) if p.signed.verify_with(&p.header, key) == SignatureStatus::Valid => {
                        found.trusted(p.hash, p.at)
                    }
                    Some(_) => found.passed_over(p.header),
                }
            }
        }
        let head = found.head.map(|(_, at)| at);
        if head.is_some() && pending.iter().all(|p| Some(p.at) <= head) {
            break;
        }
    }
    for p in pending {
        found.passed_over(p.header);
    }
    found.settle();
    Ok(found)
}

/// The document of an attestation line (`{"v":1,"attestation":"<base64>"}`), if `line` is one.
fn attestation_document(line: &[u8]) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AttestationLine {
        v: u64,
        attestation: String,
    }
    let parsed: AttestationLine = serde_json::from_slice(line).ok()?;
    (parsed.v == 1).then_some(())?;
    base64::engine::general_purpose::STANDARD.decode(parsed.attestation).ok()
}

fn unix_seconds() -> u64 {
    u64::try_from(teelog_deliver::clock::now().div_euclid(1_000_000_000)).unwrap_or(0)
}

/// Calls `f` with each line of the file at `path` that is at most a batch line long; longer
/// lines are skipped, so that a planted one cannot fill memory. Only a regular file is read: a
/// symbolic link, FIFO or device planted in the output stops the signer rather than making it
/// hang or read something else (skipping it could hide the signer's own batches from it).
fn for_each_line(path: &Path, mut f: impl FnMut(&[u8])) -> Result<(), ShipError> {
    let file = teelog_store::open_segment_to_read(path)?;
    let mut reader = LineReader::new(BufReader::new(file), MAX_BATCH_LINE);
    while let Some((_, line)) = reader.next_line().map_err(io_err(path))? {
        if let Line::Complete(bytes) | Line::Unterminated(bytes) = line {
            f(bytes);
        }
    }
    Ok(())
}

fn io_err(what: impl AsRef<Path>) -> impl FnOnce(io::Error) -> ShipError {
    let path = what.as_ref().to_path_buf();
    move |source| ShipError::Store(StoreError::Io { path, source })
}
