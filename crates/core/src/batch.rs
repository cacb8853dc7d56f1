//! Signed batches: the header, the builder that seals records into a batch line, and the parser
//! that checks one batch line on its own (signature and records; the chain is `verify`'s job).

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::canon::{canonicalize, Canonicalizer};
use crate::crypto::{PublicKey, SigAlg, SoftwareKey};
use crate::merkle::{leaf_hash, sha256, Digest, MerkleBuilder};
use crate::random::{RandomError, SecureRandom};
use crate::record::{canonicalize_record, refusal_notice, RecordError, Refused};
use crate::timestamp::{format_rfc3339, parse_rfc3339, UnixNanos};

/// The `v` of headers and envelopes this crate writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// Bytes of a leaf hash kept as that record's hint.
pub const HINT_LEN: usize = 8;

/// The longest batch line `teelog verify` reads by default. No signer writes a longer one.
pub const MAX_BATCH_LINE: usize = 8 << 20;

/// The default bound on a batch line: a signer seals a batch before its line would grow past it.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;

/// What a batch line holds besides its records and hints, at most: the header at its largest
/// (a 128-character stream, a 256-digit measurement, 16-digit `seq` and `count`: about 1,100
/// bytes), an ES384 signature in base64 (128), the member names and the newline.
pub const LINE_OVERHEAD: usize = 2048;

/// Prepended to the header bytes before signing, so that a teelog key's signature can never be
/// mistaken for a signature over anything else.
pub const SIGNING_CONTEXT: &[u8] = b"teelog/batch-header/v1\n";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The members of a batch header, in the order of [`Header`]'s fields (docs/FORMAT.md §4).
pub const HEADER_FIELDS: [&str; 15] = [
    "v",
    "stream",
    "epoch",
    "seq",
    "prev",
    "count",
    "root",
    "hints",
    "first_ts",
    "last_ts",
    "sealed_at",
    "measurement",
    "attestation",
    "key_id",
    "alg",
];

/// The signed part of a batch. Written as RFC 8785 canonical JSON; the signature covers
/// `SIGNING_CONTEXT || header bytes` exactly as they appear in the batch line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The format version: [`FORMAT_VERSION`].
    pub v: u64,
    /// The stream's name: 1 to 128 characters of `A-Z a-z 0-9 . _ : / -`.
    pub stream: String,
    /// 32 lower-case hex digits naming one run of one signing key.
    pub epoch: String,
    /// 1 for the first batch of an epoch, then +1 per batch.
    pub seq: u64,
    /// SHA-256 of the previous header's bytes: the previous batch of this epoch, or for seq 1 the
    /// last batch of the previous epoch; null only at the very start of a stream.
    pub prev: Option<String>,
    /// The number of records; 0 for a heartbeat.
    pub count: u64,
    /// RFC 6962 Merkle Tree Hash over the records' canonical bytes.
    pub root: String,
    /// SHA-256 of the record hints (the first 8 bytes of each leaf hash, concatenated), which
    /// authenticates the hints in the batch line so that a changed record can be located.
    pub hints: String,
    /// Earliest and latest record `ts`; null in a heartbeat (count 0).
    pub first_ts: Option<String>,
    /// See `first_ts`.
    pub last_ts: Option<String>,
    /// When the signer sealed the batch, by its own clock (RFC 3339, nine fractional digits).
    pub sealed_at: String,
    /// The code measurement of the signer, lower-case hex, or null for an unmeasured signer.
    pub measurement: Option<String>,
    /// SHA-256 of the attestation document binding the key, or null.
    pub attestation: Option<String>,
    /// SHA-256 of the signing key's SubjectPublicKeyInfo DER.
    pub key_id: String,
    /// The signature algorithm's JOSE name: `ES256` or `ES384`.
    pub alg: String,
}

/// A header field that is not of its one accepted spelling.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The field's name and what is wrong with it.
    #[error("header field {0:?}: {1}")]
    Field(&'static str, String),
    /// The header has no canonical bytes (a number beyond what JSON holds exactly, …).
    #[error("the header cannot be written as canonical JSON: {0}")]
    Unwritable(String),
}

fn field_err(name: &'static str, why: impl Into<String>) -> HeaderError {
    HeaderError::Field(name, why.into())
}

/// Whether `text` is written only in lower-case hex digits, the one spelling teelog accepts.
fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn check_hex(name: &'static str, value: &str, len: Option<usize>) -> Result<(), HeaderError> {
    let lower_hex = is_lower_hex(value);
    let len_ok = match len {
        Some(n) => value.len() == n,
        None => value.len().is_multiple_of(2) && value.len() <= 256,
    };
    if lower_hex && len_ok {
        Ok(())
    } else {
        let expected = match len {
            Some(n) => format!("expected {n} lower-case hex digits"),
            None => "expected an even number (at most 256) of lower-case hex digits".to_string(),
        };
        Err(field_err(name, format!("{value:?}: {expected}")))
    }
}

/// Stream names: 1 to 128 characters of `A-Z a-z 0-9 . _ : / -`.
pub fn check_stream_name(name: &str) -> Result<(), HeaderError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(field_err("stream", format!("{name:?}: use 1 to 128 characters of A-Z a-z 0-9 . _ : / -")))
    }
}

/// Epoch ids are 32 lower-case hex digits; accept any case from people and normalise.
pub fn normalize_epoch(text: &str) -> Result<String, HeaderError> {
    let lower = text.trim().to_ascii_lowercase();
    check_hex("epoch", &lower, Some(32))?;
    Ok(lower)
}

/// Measurements are lower-case hex; accept any case from people and normalise.
pub fn normalize_measurement(text: &str) -> Result<String, HeaderError> {
    let lower = text.trim().to_ascii_lowercase();
    check_hex("measurement", &lower, None)?;
    Ok(lower)
}

impl Header {
    /// Checks every field's syntax; the signature is checked separately.
    pub fn validate(&self) -> Result<(), HeaderError> {
        if self.v != FORMAT_VERSION {
            return Err(field_err(
                "v",
                format!("version {} is not supported (this is {FORMAT_VERSION})", self.v),
            ));
        }
        check_stream_name(&self.stream)?;
        check_hex("epoch", &self.epoch, Some(32))?;
        if self.seq == 0 {
            return Err(field_err("seq", "sequence numbers start at 1"));
        }
        if self.seq > crate::canon::MAX_EXACT_INTEGER {
            return Err(field_err("seq", format!("{} is above the largest seq, 2^53", self.seq)));
        }
        // Like every integer of canonical JSON (RFC 8785 keeps exact only those up to 2^53): a
        // larger count would be a header that no signer can write canonically.
        if self.count > crate::canon::MAX_EXACT_INTEGER {
            return Err(field_err("count", format!("{} is above the largest count, 2^53", self.count)));
        }
        if let Some(prev) = &self.prev {
            check_hex("prev", prev, Some(64))?;
        }
        check_hex("root", &self.root, Some(64))?;
        check_hex("hints", &self.hints, Some(64))?;
        match (&self.first_ts, &self.last_ts, self.count) {
            (None, None, 0) => {}
            (Some(first), Some(last), n) if n > 0 => {
                let first = parse_rfc3339(first).map_err(|e| field_err("first_ts", e.to_string()))?;
                let last = parse_rfc3339(last).map_err(|e| field_err("last_ts", e.to_string()))?;
                if first > last {
                    return Err(field_err("first_ts", "later than last_ts"));
                }
            }
            _ => return Err(field_err("first_ts", "must be null exactly when count is 0")),
        }
        parse_rfc3339(&self.sealed_at).map_err(|e| field_err("sealed_at", e.to_string()))?;
        if let Some(m) = &self.measurement {
            check_hex("measurement", m, None)?;
        }
        if let Some(a) = &self.attestation {
            check_hex("attestation", a, Some(64))?;
        }
        check_hex("key_id", &self.key_id, Some(64))?;
        self.sig_alg()?;
        Ok(())
    }

    /// The signature algorithm `alg` names.
    pub fn sig_alg(&self) -> Result<SigAlg, HeaderError> {
        SigAlg::from_name(&self.alg)
            .ok_or_else(|| field_err("alg", format!("{:?}: expected ES256 or ES384", self.alg)))
    }

    /// `sealed_at` as nanoseconds; `None` if it is not a timestamp ([`Header::validate`]
    /// refuses such a header).
    pub fn sealed_at_nanos(&self) -> Option<UnixNanos> {
        parse_rfc3339(&self.sealed_at).ok()
    }

    /// The canonical bytes that are signed and stored. Never empty: a header that cannot be
    /// written (which its types should rule out) is an error, not bytes to sign.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(512);
        let json = serde_json::to_vec(self).map_err(|e| HeaderError::Unwritable(e.to_string()))?;
        canonicalize(&json, &mut out).map_err(|e| HeaderError::Unwritable(e.to_string()))?;
        Ok(out)
    }
}

/// The message a batch signature covers.
pub fn signed_message(header_bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + header_bytes.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(header_bytes);
    m
}

/// What signs batch headers: a software key now, a TEE-held key with its attestation later.
pub trait HeaderSigner {
    /// The key its signatures verify under; its id goes into every header.
    fn public_key(&self) -> &PublicKey;
    /// The code measurement (lower-case hex) that headers carry: attested where the key is, else
    /// only asserted; `None` for an unmeasured signer.
    fn measurement(&self) -> Option<&str>;
    /// SHA-256 (hex) of the attestation document that binds the key, if there is one.
    fn attestation(&self) -> Option<&str>;
    /// An r || s signature over `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SealError>;
}

/// A signer whose key is in process memory: a software identity, or a test key.
pub struct SoftwareSigner {
    key: SoftwareKey,
    measurement: Option<String>,
    attestation: Option<String>,
}

impl SoftwareSigner {
    /// `measurement` must already be normalised (see [`normalize_measurement`]).
    pub fn new(key: SoftwareKey, measurement: Option<String>) -> Self {
        Self { key, measurement, attestation: None }
    }

    /// Names the attestation document (its SHA-256, hex) that binds this key.
    pub fn with_attestation(self, document_sha256: String) -> Self {
        Self { attestation: Some(document_sha256), ..self }
    }
}

impl HeaderSigner for SoftwareSigner {
    fn public_key(&self) -> &PublicKey {
        self.key.public()
    }
    fn measurement(&self) -> Option<&str> {
        self.measurement.as_deref()
    }
    fn attestation(&self) -> Option<&str> {
        self.attestation.as_deref()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SealError> {
        self.key.sign(message).map_err(|e| SealError::Signer(e.to_string()))
    }
}

/// Why a batch could not be sealed; the builder keeps its records and the chain head is not
/// advanced, so sealing can be retried.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The [`HeaderSigner`] did not sign; its own words.
    #[error("the signer failed: {0}")]
    Signer(String),
    /// The epoch has used every seq a JSON number holds exactly (2^53): a new epoch must start.
    #[error("sequence numbers of stream {0:?} are exhausted")]
    SeqExhausted(String),
    /// The header to sign is not a valid one.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The record hints could not be written.
    #[error("the record hints cannot be written: {0}")]
    Hints(String),
}

/// Where a stream's chain stands: the next batch's seq and the hash it must link to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The stream.
    pub stream: String,
    /// The epoch its next batch is sealed in (32 lower-case hex digits).
    pub epoch: String,
    /// The next batch's seq.
    pub next_seq: u64,
    /// SHA-256 (hex) of the header the next batch links to; `None` only at a stream's start.
    pub prev: Option<String>,
    /// When the header `prev` names was sealed, where known: a signer compares it with what it
    /// finds in its output, to link a new epoch to the newer (docs/FORMAT.md §5.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_sealed_at: Option<UnixNanos>,
}

impl ChainHead {
    /// A new epoch, linking to `prev` (the last header of the previous epoch, if any), with an id
    /// drawn from `random`. Epoch ids must not repeat (a repeated one would make two runs one
    /// chain), so a generator that fails is an error.
    pub fn new_epoch(
        stream: &str,
        prev: Option<String>,
        random: &dyn SecureRandom,
    ) -> Result<Self, RandomError> {
        let mut id = [0u8; 16];
        random.fill(&mut id)?;
        Ok(Self {
            stream: stream.to_string(),
            epoch: hex::encode(id),
            next_seq: 1,
            prev,
            prev_sealed_at: None,
        })
    }

    /// A new epoch of `stream`, linked to the newer of two heads this signer trusts: the one its
    /// saved state recorded (which it sealed, or linked its last epoch to) and `found`, the
    /// newest header of the stream in its output that it can verify, with its `sealed_at`. A
    /// saved head of unknown time (state written before teelog recorded it) yields to `found`.
    pub fn new_epoch_after(
        stream: &str,
        saved: Option<&ChainHead>,
        found: Option<(Digest, UnixNanos)>,
        random: &dyn SecureRandom,
    ) -> Result<Self, RandomError> {
        let saved = saved.and_then(|s| s.prev.clone().map(|prev| (prev, s.prev_sealed_at)));
        let found = found.map(|(hash, at)| (hex::encode(hash), Some(at)));
        let newer = match (saved, found) {
            (Some(saved), Some(found)) => {
                if saved.1.is_some() && saved.1 >= found.1 {
                    saved
                } else {
                    found
                }
            }
            (one, other) => match one.or(other) {
                Some(head) => head,
                None => return Self::new_epoch(stream, None, random),
            },
        };
        Ok(Self { prev_sealed_at: newer.1, ..Self::new_epoch(stream, Some(newer.0), random)? })
    }

    /// Where to continue the saved epoch, given the headers of that epoch validly signed by this
    /// signer's own key found in its output. The saved state may be stale (the process died
    /// after a batch became durable but before the state was saved): the output then wins, so a
    /// seq is never signed twice.
    pub fn resume(saved: ChainHead, own: impl IntoIterator<Item = (Header, Digest)>) -> ChainHead {
        let newest = own
            .into_iter()
            .filter(|(h, _)| h.stream == saved.stream && h.epoch == saved.epoch && h.seq >= saved.next_seq)
            .max_by_key(|(h, _)| h.seq);
        match newest {
            Some((h, hash)) => ChainHead {
                next_seq: h.seq + 1,
                prev: Some(hex::encode(hash)),
                prev_sealed_at: h.sealed_at_nanos(),
                ..saved
            },
            None => saved,
        }
    }
}

/// Whether a record of `bytes` canonical bytes fits in a batch line of its own within
/// [`MAX_BATCH_LINE`]; a larger one is refused as [`RecordError::TooLarge`].
pub fn fits_alone(bytes: usize) -> bool {
    LINE_OVERHEAD + bytes + 2 * HINT_LEN <= MAX_BATCH_LINE
}

/// Summary of one sealed batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Its seq.
    pub seq: u64,
    /// Its number of records.
    pub count: u64,
    /// SHA-256 of its header's bytes: what the next batch's `prev` names.
    pub header_hash: Digest,
}

/// What became of an input given to [`BatchBuilder::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// It is a record of the open batch.
    Accepted,
    /// It was refused, for this reason; a notice saying so took its place (docs/FORMAT.md §2.4).
    Refused(RecordError),
}

/// An input as a signer takes it.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A JSON object, to be canonicalised as a record (docs/FORMAT.md §2.2).
    Json(&'a [u8]),
    /// A record teelog's own writers made in canonical form (the OTLP mapping, notices), with the
    /// `ts` it carries: taken as it is, so that it is canonicalised once, where it was made.
    Canonical {
        /// The record's canonical bytes.
        record: &'a [u8],
        /// Its `ts`.
        ts: UnixNanos,
    },
}

impl<'a> Input<'a> {
    /// The input's bytes, as received.
    pub fn bytes(self) -> &'a [u8] {
        match self {
            Input::Json(bytes) | Input::Canonical { record: bytes, .. } => bytes,
        }
    }
}

/// Whether `record` is what the canonicaliser makes of it, `ts` included: what a writer that
/// hands over [`Input::Canonical`] promises, checked in debug builds (every test).
fn is_canonical_record(canon: &mut Canonicalizer, record: &[u8], ts: UnixNanos) -> bool {
    let mut again = Vec::with_capacity(record.len());
    canonicalize_record(canon, record, &|| ts, &mut again).is_ok_and(|t| t == ts) && again == record
}

/// Accumulates canonical records and seals them into one batch line.
pub struct BatchBuilder {
    canon: Canonicalizer,
    records: Vec<u8>,
    hints: Vec<u8>,
    merkle: MerkleBuilder,
    first_ts: Option<UnixNanos>,
    last_ts: Option<UnixNanos>,
    /// [`take`](Self::take) seals before the line would grow past this many bytes.
    batch_bytes: usize,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            canon: Canonicalizer::default(),
            records: Vec::new(),
            hints: Vec::new(),
            merkle: MerkleBuilder::default(),
            first_ts: None,
            last_ts: None,
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

impl BatchBuilder {
    /// A builder whose lines stay within the default size ([`DEFAULT_BATCH_BYTES`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose batch lines stay within `bytes` (at most [`MAX_BATCH_LINE`]), except that a
    /// single record larger than that gets a line of its own within [`MAX_BATCH_LINE`].
    pub fn with_batch_bytes(bytes: usize) -> Self {
        Self { batch_bytes: bytes.min(MAX_BATCH_LINE), ..Self::default() }
    }

    /// An upper bound on the length of the batch line if it were sealed now, newline included.
    pub fn line_len(&self) -> usize {
        LINE_OVERHEAD + self.records.len() + 2 * self.hints.len()
    }

    /// Records in the open batch (notices included).
    pub fn len(&self) -> u64 {
        self.merkle.len()
    }

    /// Whether the open batch has no record: sealing it makes a heartbeat.
    pub fn is_empty(&self) -> bool {
        self.merkle.is_empty()
    }

    /// Sets the bound of [`with_batch_bytes`](Self::with_batch_bytes) for the batches to come.
    pub fn set_batch_bytes(&mut self, bytes: usize) {
        self.batch_bytes = bytes.min(MAX_BATCH_LINE);
    }

    /// Canonicalises one input record and adds it; a refused record leaves the batch unchanged.
    /// A record is refused as [`RecordError::TooLarge`] if the line would grow past
    /// [`MAX_BATCH_LINE`] (signers use [`take`](Self::take), which seals first).
    pub fn push_input(&mut self, line: &[u8], now: &dyn Fn() -> UnixNanos) -> Result<(), RecordError> {
        let mark = self.records.len();
        let (start, ts) = self.append(Input::Json(line), now)?;
        if self.line_len() + 2 * HINT_LEN > MAX_BATCH_LINE {
            let bytes = self.records.len() - start;
            self.records.truncate(mark);
            return Err(RecordError::TooLarge { bytes, limit: MAX_BATCH_LINE });
        }
        self.commit(start, ts);
        Ok(())
    }

    /// Takes one input into the batch, as a signer must: canonicalised as a record, or, where
    /// the canonicaliser refuses it (or it would not fit in any batch line), a signed notice in
    /// its place that says why and gives its length and SHA-256 (`source` says where it came
    /// from). Where it would carry the line past the batch's byte bound, `seal` is called
    /// first, and must seal the open batch (leaving this builder empty). Nothing is ever lost
    /// without a notice, and no line grows past [`MAX_BATCH_LINE`].
    pub fn take<E>(
        &mut self,
        input: Input<'_>,
        source: &dyn Fn() -> String,
        now: &dyn Fn() -> UnixNanos,
        seal: impl FnOnce(&mut Self) -> Result<(), E>,
    ) -> Result<Taken, E> {
        let mark = self.records.len();
        let refused = match self.append(input, now) {
            Ok((start, ts)) => {
                let bytes = self.records.len() - start;
                if self.fits() {
                    self.commit(start, ts);
                    return Ok(Taken::Accepted);
                }
                if fits_alone(bytes) {
                    // Alone it fits: the open batch is sealed without it.
                    self.seal_first(mark, start, ts, seal)?;
                    return Ok(Taken::Accepted);
                }
                self.records.truncate(mark);
                RecordError::TooLarge { bytes, limit: MAX_BATCH_LINE }
            }
            Err(e) => e,
        };
        let ts = now();
        let notice = Refused {
            source: &source(),
            reason: &refused.to_string(),
            bytes: input.bytes().len() as u64,
            sha256: sha256(input.bytes()),
        };
        let start = self.append_with(|out| refusal_notice(&notice, ts, out));
        if self.fits() {
            self.commit(start, ts);
        } else {
            // A notice is small: it fits in any empty batch.
            self.seal_first(mark, start, ts, seal)?;
        }
        Ok(Taken::Refused(refused))
    }

    /// Moves the record appended at `records[start..]` (after the batch that ended at `mark`)
    /// out, has `seal` seal the batch, and makes the record the first of the next. Only at a
    /// batch's end is a record copied.
    fn seal_first<E>(
        &mut self,
        mark: usize,
        start: usize,
        ts: UnixNanos,
        seal: impl FnOnce(&mut Self) -> Result<(), E>,
    ) -> Result<(), E> {
        let record = self.records.split_off(start);
        self.records.truncate(mark);
        seal(self)?;
        let start = self.append_with(|out| out.extend_from_slice(&record));
        self.commit(start, ts);
        Ok(())
    }

    /// Whether the record just appended keeps the line within the batch's bound; a batch's
    /// first record may go up to [`MAX_BATCH_LINE`].
    fn fits(&self) -> bool {
        let len = self.line_len() + 2 * HINT_LEN;
        len <= self.batch_bytes || (self.is_empty() && len <= MAX_BATCH_LINE)
    }

    /// Appends the canonical form of `input` (after a comma if need be), not yet committed:
    /// where it starts, and its `ts`. Nothing is appended if it is refused.
    fn append(
        &mut self,
        input: Input<'_>,
        now: &dyn Fn() -> UnixNanos,
    ) -> Result<(usize, UnixNanos), RecordError> {
        let input = match input {
            Input::Json(input) => input,
            Input::Canonical { record, ts } => {
                debug_assert!(
                    is_canonical_record(&mut self.canon, record, ts),
                    "not in canonical form: {}",
                    String::from_utf8_lossy(record)
                );
                return Ok((self.append_with(|out| out.extend_from_slice(record)), ts));
            }
        };
        let mark = self.records.len();
        if !self.is_empty() {
            self.records.push(b',');
        }
        let start = self.records.len();
        match canonicalize_record(&mut self.canon, input, now, &mut self.records) {
            Ok(ts) => Ok((start, ts)),
            Err(e) => {
                self.records.truncate(mark);
                Err(e)
            }
        }
    }

    /// Appends a record `write` makes in canonical form, as [`append`](Self::append) does.
    fn append_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> usize {
        if !self.is_empty() {
            self.records.push(b',');
        }
        let start = self.records.len();
        write(&mut self.records);
        start
    }

    /// Makes the record at `records[start..]` one of the batch.
    fn commit(&mut self, start: usize, ts: UnixNanos) {
        let leaf = leaf_hash(&self.records[start..]);
        self.merkle.push_leaf_hash(leaf);
        self.hints.extend_from_slice(&leaf[..HINT_LEN]);
        self.first_ts = Some(self.first_ts.map_or(ts, |t| t.min(ts)));
        self.last_ts = Some(self.last_ts.map_or(ts, |t| t.max(ts)));
    }

    /// Signs what has been pushed (nothing: a heartbeat) as the next batch of `chain`, appends the
    /// batch line (with its newline) to `out`, advances `chain` and empties the builder.
    pub fn seal(
        &mut self,
        chain: &mut ChainHead,
        signer: &dyn HeaderSigner,
        sealed_at: UnixNanos,
        out: &mut Vec<u8>,
    ) -> Result<Sealed, SealError> {
        let key = signer.public_key();
        let header = Header {
            v: FORMAT_VERSION,
            stream: chain.stream.clone(),
            epoch: chain.epoch.clone(),
            seq: chain.next_seq,
            prev: chain.prev.clone(),
            count: self.len(),
            root: hex::encode(self.merkle.root()),
            hints: hex::encode(sha256(&self.hints)),
            first_ts: self.first_ts.map(format_rfc3339),
            last_ts: self.last_ts.map(format_rfc3339),
            sealed_at: format_rfc3339(sealed_at),
            measurement: signer.measurement().map(str::to_string),
            attestation: signer.attestation().map(str::to_string),
            key_id: key.id_hex(),
            alg: key.alg().name().to_string(),
        };
        let next_seq = chain
            .next_seq
            .checked_add(1)
            .filter(|&n| n <= crate::canon::MAX_EXACT_INTEGER)
            .ok_or_else(|| SealError::SeqExhausted(chain.stream.clone()))?;
        let header_bytes = header.to_canonical_bytes()?;
        let sig = signer.sign(&signed_message(&header_bytes))?;
        let line_start = out.len();
        out.reserve(header_bytes.len() + self.records.len() + 160);
        out.extend_from_slice(b"{\"v\":1,\"header\":");
        out.extend_from_slice(&header_bytes);
        out.extend_from_slice(b",\"sig\":\"");
        out.extend_from_slice(B64.encode(&sig).as_bytes());
        out.extend_from_slice(b"\",\"hints\":\"");
        // Straight into the line: building a String char by char cost 2 % of signing.
        let at = out.len();
        out.resize(at + 2 * self.hints.len(), 0);
        if let Err(e) = hex::encode_to_slice(&self.hints, &mut out[at..]) {
            // Never a line with zero bytes for hints: nothing of it is written.
            out.truncate(line_start);
            return Err(SealError::Hints(e.to_string()));
        }
        out.extend_from_slice(b"\",\"records\":[");
        out.extend_from_slice(&self.records);
        out.extend_from_slice(b"]}\n");

        let header_hash = sha256(&header_bytes);
        let sealed = Sealed { seq: header.seq, count: header.count, header_hash };
        chain.next_seq = next_seq;
        chain.prev = Some(hex::encode(header_hash));
        chain.prev_sealed_at = Some(sealed_at);
        self.records.clear();
        self.hints.clear();
        self.merkle.reset();
        self.first_ts = None;
        self.last_ts = None;
        Ok(sealed)
    }
}

fn hint_of(record: &[u8]) -> [u8; HINT_LEN] {
    let mut hint = [0u8; HINT_LEN];
    hint.copy_from_slice(&leaf_hash(record)[..HINT_LEN]);
    hint
}

/// Compares the signed hints with those of the records present: the index of the first record
/// that differs from what was signed, and what happened there.
fn locate(signed: &[[u8; HINT_LEN]], present: &[[u8; HINT_LEN]]) -> (Option<u64>, String) {
    if signed.len() != present.len() {
        let at =
            signed.iter().zip(present).position(|(a, b)| a != b).unwrap_or(signed.len().min(present.len()));
        let how = if present.len() > signed.len() {
            format!(
                "{} record(s) inserted, the first difference at record {at}",
                present.len() - signed.len()
            )
        } else {
            format!(
                "{} signed record(s) deleted, the first difference at record {at}",
                signed.len() - present.len()
            )
        };
        return (Some(at as u64), how);
    }
    let changed: Vec<usize> =
        signed.iter().zip(present).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect();
    let Some(&first) = changed.first() else {
        return (None, "every record matches its signed hint, so the change cannot be located".into());
    };
    let shown: Vec<String> = changed.iter().take(10).map(usize::to_string).collect();
    let more = if changed.len() > 10 { format!(" and {} more", changed.len() - 10) } else { String::new() };
    let mut sorted_signed = signed.to_vec();
    let mut sorted_present = present.to_vec();
    sorted_signed.sort_unstable();
    sorted_present.sort_unstable();
    let how = if sorted_signed == sorted_present {
        format!("records were reordered (positions {}{more})", shown.join(", "))
    } else if changed.len() == 1 {
        format!("record {first} was modified")
    } else {
        format!("records {}{more} were modified", shown.join(", "))
    };
    (Some(first as u64), how)
}

/// The line that stores an attestation document alongside the batches that name it.
pub fn attestation_line(document: &[u8]) -> Vec<u8> {
    format!("{{\"v\":1,\"attestation\":\"{}\"}}\n", B64.encode(document)).into_bytes()
}

/// A line as the verifier meets it: a teelog batch or the seed's `SignedLogBatch`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineFields<'a> {
    pub v: Option<u64>,
    #[serde(borrow)]
    pub header: Option<Raw<'a>>,
    /// Borrowed, so that its exact spelling can be checked (a string with escapes is refused).
    pub sig: Option<&'a str>,
    pub hints: Option<&'a str>,
    #[serde(borrow)]
    pub records: Option<Vec<Raw<'a>>>,
    /// An attestation document line: `{"v":1,"attestation":"<base64>"}`.
    pub attestation: Option<String>,
    /// A gateway checkpoint line (docs/FORMAT.md §17): its signed body.
    #[serde(borrow)]
    pub checkpoint: Option<&'a RawValue>,
    /// A checkpoint's RFC 3161 token (no other line has one).
    #[serde(borrow)]
    pub timestamp: Option<&'a RawValue>,
    #[serde(rename = "Sequence")]
    pub seed_sequence: Option<u64>,
    #[serde(rename = "PayloadBase64")]
    pub seed_payload: Option<String>,
    #[serde(rename = "SignatureBase64")]
    pub seed_signature: Option<String>,
    #[serde(rename = "AttestationCertThumbprint")]
    pub seed_thumbprint: Option<String>,
}

impl<'a> LineFields<'a> {
    /// The members of `line`: read at once when it is in the layout a signer writes
    /// ([`crate::scan`]), by `serde_json` otherwise (whose verdict is the same on those lines).
    pub(crate) fn read(line: &'a [u8]) -> serde_json::Result<Self> {
        match crate::scan::batch_line(line) {
            Some(fields) => Ok(fields),
            None => serde_json::from_slice(line),
        }
    }
}

/// A JSON value's bytes exactly as the line carries them (what `serde_json` lends as a
/// [`RawValue`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Raw<'a>(pub(crate) &'a [u8]);

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(deserializer).map(|raw| Raw(raw.get().as_bytes()))
    }
}

/// Whether a header's signature verifies under a given key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// It does: the header is the key holder's.
    Valid,
    /// It does not (another key id, another algorithm, a bad signature); says which.
    Invalid(String),
}

/// Whether a line's records are the ones its header commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordsStatus {
    /// The count and the Merkle root match.
    Intact,
    /// The records do not match the signed count or root.
    Tampered {
        /// The first record found changed, where the signed hints locate it.
        record_index: Option<u64>,
        /// What was found: dropped, added, modified or reordered records.
        detail: String,
    },
}

fn verify_header(header: &Header, header_bytes: &[u8], sig: &[u8], key: &PublicKey) -> SignatureStatus {
    if key.id_hex() != header.key_id {
        return SignatureStatus::Invalid(format!(
            "signed by key {}, not by key {}",
            header.key_id,
            key.id_hex()
        ));
    }
    if key.alg().name() != header.alg {
        return SignatureStatus::Invalid(format!(
            "header says {} but key {} is {}",
            header.alg,
            header.key_id,
            key.alg().curve()
        ));
    }
    if key.verify_p1363(&signed_message(header_bytes), sig) {
        SignatureStatus::Valid
    } else {
        SignatureStatus::Invalid(format!("signature does not verify under key {}", key.id_hex()))
    }
}

/// The signed bytes of a header and their signature, kept until the key is known.
#[derive(Debug, Clone)]
pub struct SignedHeader {
    header_bytes: Vec<u8>,
    sig: Vec<u8>,
}

impl SignedHeader {
    /// A header as signed (its JSON text, byte for byte) and its signature (standard base64),
    /// taken apart without the batch's records: what an evidence bundle carries. Gives the
    /// validated header and its hash as well.
    pub fn from_parts(header_json: &str, sig: &str) -> Result<(Header, Digest, Self), BatchError> {
        let header: Header = serde_json::from_str(header_json).map_err(BatchError::HeaderJson)?;
        header.validate()?;
        let sig = B64.decode(sig).map_err(BatchError::Signature)?;
        let header_bytes = header_json.as_bytes().to_vec();
        Ok((header, sha256(&header_bytes), Self { header_bytes, sig }))
    }

    /// Verifies the signature over the header's bytes under `key`; `header` is the parse of
    /// those bytes, whose `key_id` and `alg` must name `key`.
    pub fn verify_with(&self, header: &Header, key: &PublicKey) -> SignatureStatus {
        verify_header(header, &self.header_bytes, &self.sig, key)
    }
}

/// A teelog batch line taken apart, before any check.
pub struct ParsedBatch<'a> {
    /// The header, parsed and validated; its signature is not checked yet.
    pub header: Header,
    /// SHA-256 of the header's bytes as they appear in the line.
    pub header_hash: Digest,
    header_bytes: &'a [u8],
    sig: Vec<u8>,
    hints: &'a str,
    records: Vec<Raw<'a>>,
}

/// What the records of a batch line say against its signed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsCheck {
    /// Whether the records match the header.
    pub status: RecordsStatus,
    /// Why the line's `hints` are not exactly the ones the header's `hints` digest commits to,
    /// if they are not: they are unsigned bytes otherwise.
    pub hints_problem: Option<String>,
}

/// Why a line could not be taken apart as a batch.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The line is not a JSON object of the batch line's members (or has others).
    #[error("{0}")]
    Json(serde_json::Error),
    /// A JSON line without the members of a batch (`v`, `header`, `sig`, `hints`, `records`).
    #[error("not a teelog batch line")]
    NotABatch,
    /// The header is not a JSON object of the header's fields.
    #[error("header: {0}")]
    HeaderJson(serde_json::Error),
    /// A header field is not of its one accepted spelling.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The signature is not standard base64.
    #[error("sig: not base64: {0}")]
    Signature(base64::DecodeError),
}

impl<'a> ParsedBatch<'a> {
    /// Parses a whole line, which must be a teelog batch.
    pub fn parse(line: &'a [u8]) -> Result<Self, BatchError> {
        let fields = LineFields::read(line).map_err(BatchError::Json)?;
        match (fields.v, fields.header, fields.sig, fields.hints, fields.records) {
            (Some(FORMAT_VERSION), Some(header), Some(sig), Some(hints), Some(records)) => {
                Self::from_parts(header, sig, hints, records)
            }
            _ => Err(BatchError::NotABatch),
        }
    }

    pub(crate) fn from_parts(
        header_raw: Raw<'a>,
        sig_text: &'a str,
        hints: &'a str,
        records: Vec<Raw<'a>>,
    ) -> Result<Self, BatchError> {
        let header_bytes = header_raw.0;
        let header: Header = serde_json::from_slice(header_bytes).map_err(BatchError::HeaderJson)?;
        header.validate()?;
        let sig = B64.decode(sig_text).map_err(BatchError::Signature)?;
        Ok(Self { header_hash: sha256(header_bytes), header, header_bytes, sig, hints, records })
    }

    /// Where `line` (the line this batch was parsed from) departs from the one layout of
    /// docs/FORMAT.md §7, if it does. Every byte outside the signed header and the hashed records
    /// must be the fixed framing, the signature's one base64 spelling or the hints (checked by
    /// [`check_records`](Self::check_records)): white space, another member order or another
    /// spelling would be bytes that nothing signs.
    pub fn layout_deviation(&self, line: &[u8]) -> Option<String> {
        let mut cursor = LayoutCursor { line, at: 0 };
        let checked = (|| {
            cursor.fixed(b"{\"v\":1,\"header\":", "the line's opening")?;
            cursor.part(self.header_bytes, "the header")?;
            cursor.fixed(b",\"sig\":\"", "the sig member")?;
            cursor.fixed(B64.encode(&self.sig).as_bytes(), "the signature in its one base64 spelling")?;
            cursor.fixed(b"\",\"hints\":\"", "the hints member")?;
            cursor.part(self.hints.as_bytes(), "the hints")?;
            cursor.fixed(b"\",\"records\":[", "the records member")?;
            for (i, record) in self.records.iter().enumerate() {
                if i > 0 {
                    cursor.fixed(b",", "a single comma between records")?;
                }
                cursor.part(record.0, "a record")?;
            }
            cursor.fixed(b"]}", "the line's end")
        })();
        match checked {
            Err(what) => Some(format!(
                "byte {} of the line is not {what} where docs/FORMAT.md §7 puts it: the line holds bytes no signature covers",
                cursor.at
            )),
            Ok(()) => (cursor.at != line.len())
                .then(|| format!("{} bytes follow the batch line's end", line.len() - cursor.at)),
        }
    }

    /// Checks the signature against the trusted key the header names.
    pub fn signature_status(&self, trusted: &[PublicKey]) -> SignatureStatus {
        match trusted.iter().find(|k| k.id_hex() == self.header.key_id) {
            None => SignatureStatus::Invalid(format!(
                "signed by key {}, which is not a trusted key",
                self.header.key_id
            )),
            Some(key) => self.verify_with(key),
        }
    }

    /// Checks the signature against one given key.
    pub fn verify_with(&self, key: &PublicKey) -> SignatureStatus {
        verify_header(&self.header, self.header_bytes, &self.sig, key)
    }

    /// An owned copy of the signed parts, for checking once the key is known.
    pub fn signed_header(&self) -> SignedHeader {
        SignedHeader { header_bytes: self.header_bytes.to_vec(), sig: self.sig.clone() }
    }

    /// Checks the records against the signed count and Merkle root, and the hints against the
    /// signed hints digest; when the records do not match, locates the changed ones with the
    /// hints.
    pub fn check_records(&self) -> RecordsCheck {
        let header = &self.header;
        let count_ok = self.records.len() as u64 == header.count;
        if count_ok {
            let mut merkle = MerkleBuilder::new();
            let mut hints = Vec::with_capacity(self.records.len() * HINT_LEN);
            for record in &self.records {
                let leaf = leaf_hash(record.0);
                merkle.push_leaf_hash(leaf);
                hints.extend_from_slice(&leaf[..HINT_LEN]);
            }
            if hex::encode(merkle.root()) == header.root {
                let hints_problem = if hex::encode(sha256(&hints)) != header.hints {
                    Some("the header's hints digest does not match its own records".to_string())
                } else if !is_hex_of(self.hints.as_bytes(), &hints) {
                    Some("the line's hints are not the records' hints that the header signs".to_string())
                } else {
                    None
                };
                return RecordsCheck { status: RecordsStatus::Intact, hints_problem };
            }
        }
        let what = if count_ok {
            "the records do not hash to the signed Merkle root".to_string()
        } else {
            format!("{} records present, the signed header says {}", self.records.len(), header.count)
        };
        match self.signed_hints() {
            Some(signed) => {
                let present: Vec<[u8; HINT_LEN]> = self.records.iter().map(|r| hint_of(r.0)).collect();
                let (record_index, how) = locate(&signed, &present);
                let status = RecordsStatus::Tampered { record_index, detail: format!("{what}: {how}") };
                RecordsCheck { status, hints_problem: None }
            }
            None => RecordsCheck {
                status: RecordsStatus::Tampered {
                    record_index: None,
                    detail: format!(
                        "{what}, and the record hints were altered too, so the change cannot be located"
                    ),
                },
                // Said in the record_tampered detail.
                hints_problem: None,
            },
        }
    }

    /// The hints of the line, if they are the ones the header signed, in their one spelling.
    pub fn signed_hints(&self) -> Option<Vec<[u8; HINT_LEN]>> {
        if !is_lower_hex(self.hints) {
            return None;
        }
        let bytes = hex::decode(self.hints).ok()?;
        let expected_len = self.header.count.checked_mul(HINT_LEN as u64)?;
        if bytes.len() as u64 != expected_len || hex::encode(sha256(&bytes)) != self.header.hints {
            return None;
        }
        Some(bytes.chunks_exact(HINT_LEN).map(|c| c.try_into().unwrap_or_default()).collect())
    }

    /// The signature's bytes (r || s), decoded.
    pub fn signature(&self) -> &[u8] {
        &self.sig
    }

    /// The signed header's bytes, as the line carries them.
    pub fn header_bytes(&self) -> &[u8] {
        self.header_bytes
    }

    /// Each record's canonical bytes, in batch order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.records.iter().map(|r| r.0)
    }

    /// Bytes of the signed header.
    pub fn header_len(&self) -> usize {
        self.header_bytes.len()
    }

    /// What identifies this batch among copies of it: the signed header and its signature in
    /// the one low-S form, so that a copy whose signature was malleated is the same batch.
    pub fn identity(&self) -> Digest {
        let alg = self.header.sig_alg().unwrap_or(SigAlg::Es256);
        let mut id = self.header_hash.to_vec();
        id.extend_from_slice(&crate::crypto::normalize_signature(alg, &self.sig));
        sha256(&id)
    }
}

/// Walks a batch line in the order of its layout (docs/FORMAT.md §7).
struct LayoutCursor<'l> {
    line: &'l [u8],
    at: usize,
}

impl LayoutCursor<'_> {
    /// The next bytes must be `expected`.
    fn fixed(&mut self, expected: &[u8], what: &'static str) -> Result<(), &'static str> {
        if !self.line.get(self.at..).is_some_and(|rest| rest.starts_with(expected)) {
            return Err(what);
        }
        self.at += expected.len();
        Ok(())
    }

    /// The next bytes must be `piece` itself, a part parsed out of this line right here (an
    /// equal copy elsewhere would leave these bytes unchecked).
    fn part(&mut self, piece: &[u8], what: &'static str) -> Result<(), &'static str> {
        if offset_in(self.line, piece) != Some(self.at) {
            return Err(what);
        }
        self.at += piece.len();
        Ok(())
    }
}

/// Each byte's two lower-case hex digits, as one little-endian u16.
const HEX_PAIRS: [u16; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [0u16; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = u16::from_le_bytes([DIGITS[b >> 4], DIGITS[b & 15]]);
        b += 1;
    }
    pairs
};

/// Whether `text` is exactly the lower-case hex of `bytes`; no allocation and one comparison per
/// byte, as it runs for every record.
fn is_hex_of(text: &[u8], bytes: &[u8]) -> bool {
    text.len() == 2 * bytes.len()
        && text
            .chunks_exact(2)
            .zip(bytes)
            .all(|(pair, &b)| u16::from_le_bytes([pair[0], pair[1]]) == HEX_PAIRS[usize::from(b)])
}

/// Where `piece` starts within `line`, if it is a part of it.
fn offset_in(line: &[u8], piece: &[u8]) -> Option<usize> {
    let (base, start) = (line.as_ptr() as usize, piece.as_ptr() as usize);
    (start >= base && start + piece.len() <= base + line.len()).then(|| start - base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_are_the_members_a_header_has() {
        let header = Header {
            v: 1,
            stream: "s".into(),
            epoch: "e".into(),
            seq: 1,
            prev: None,
            count: 0,
            root: String::new(),
            hints: String::new(),
            first_ts: None,
            last_ts: None,
            sealed_at: String::new(),
            measurement: None,
            attestation: None,
            key_id: String::new(),
            alg: String::new(),
        };
        let value = serde_json::to_value(&header).expect("a header serialises");
        let mut members: Vec<&str> =
            value.as_object().expect("an object").keys().map(String::as_str).collect();
        let mut expected = HEADER_FIELDS.to_vec();
        members.sort_unstable();
        expected.sort_unstable();
        assert_eq!(members, expected);
    }

    /// A generator that always fails, or always gives the same bytes.
    struct Fixed(Option<u8>);

    impl SecureRandom for Fixed {
        fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
            dest.fill(self.0.ok_or(RandomError)?);
            Ok(())
        }
    }

    #[test]
    fn epoch_ids_come_from_the_generator_given_and_a_failed_draw_is_an_error() {
        let head = ChainHead::new_epoch("app", None, &Fixed(Some(0xab))).unwrap();
        assert_eq!(head.epoch, "ab".repeat(16));
        assert_eq!(ChainHead::new_epoch("app", None, &Fixed(None)), Err(RandomError));
        let found = Some(([7u8; 32], 5));
        assert_eq!(ChainHead::new_epoch_after("app", None, found, &Fixed(None)), Err(RandomError));
        let after = ChainHead::new_epoch_after("app", None, found, &Fixed(Some(1))).unwrap();
        assert_eq!((after.epoch, after.prev), ("01".repeat(16), Some("07".repeat(32))));
        // The system's generator draws different ids.
        let a = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let b = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        assert_ne!(a.epoch, b.epoch);
    }

    #[test]
    fn a_count_beyond_2_53_is_refused_like_a_seq_beyond_it() {
        // Found by the batch_line fuzz target: such a header validated, yet has no canonical bytes.
        let line = include_bytes!("../../../fuzz/regressions/batch_line/count-beyond-2-53");
        let err = ParsedBatch::parse(line.trim_ascii_end()).err().unwrap();
        assert!(err.to_string().contains("header field \"count\""), "{err}");
        let key =
            SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap())
                .unwrap();
        let mut head = ChainHead::new_epoch("app", None, &Fixed(Some(3))).unwrap();
        let mut line = Vec::new();
        BatchBuilder::new().seal(&mut head, &SoftwareSigner::new(key, None), 1, &mut line).unwrap();
        let mut header = ParsedBatch::parse(line.trim_ascii_end()).unwrap().header;
        for (count, valid) in [(1 << 53, true), ((1 << 53) + 1, false), (u64::MAX, false)] {
            header.count = count;
            header.first_ts = Some(header.sealed_at.clone());
            header.last_ts = Some(header.sealed_at.clone());
            assert_eq!(header.validate().is_ok(), valid, "count {count}");
            assert_eq!(header.to_canonical_bytes().is_ok(), valid, "count {count}");
        }
    }

    #[test]
    fn the_signed_header_bytes_are_its_canonical_bytes() {
        let key =
            SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap())
                .unwrap();
        let signer = SoftwareSigner::new(key, None);
        let mut head = ChainHead::new_epoch("app", None, &Fixed(Some(2))).unwrap();
        let mut line = Vec::new();
        BatchBuilder::new().seal(&mut head, &signer, 1_000_000_000, &mut line).unwrap();
        let parsed = ParsedBatch::parse(line.trim_ascii_end()).unwrap();
        let bytes = parsed.header.to_canonical_bytes().unwrap();
        assert!(!bytes.is_empty());
        assert_eq!(parsed.header_len(), bytes.len());
        assert_eq!(serde_json::from_slice::<Header>(&bytes).unwrap(), parsed.header);
    }
}
