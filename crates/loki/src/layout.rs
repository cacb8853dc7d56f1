//! How teelog batch lines are stored as Loki entries, and how they are put back together
//! (docs/LOKI.md). Everything verification needs is inside the lines, which Loki stores byte for
//! byte; labels and structured metadata only help to find them.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use teelog_core::batch::{check_stream_name, ParsedBatch, HINT_LEN};
use teelog_core::merkle::sha256;
use teelog_core::timestamp::{parse_rfc3339, UnixNanos};
use teelog_core::Header;

use crate::labels::{LabelError, LabelSet};
use crate::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};

/// The default `job` label.
pub const DEFAULT_JOB: &str = "teelog";
/// Loki's default `max_line_size`: `256KB`, which Loki parses in binary units (its sizes are
/// dskit `flagext.ByteSize`: `KB` is 1024 bytes), so 262,144 bytes.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 << 10;

/// Index label: the configured job.
pub const LABEL_JOB: &str = "job";
/// Index label: the header's `stream`.
pub const LABEL_STREAM: &str = "teelog_stream";
/// Index label: the entry's [`Kind`].
pub const LABEL_KIND: &str = "teelog_kind";

/// Structured metadata of record and batch entries: the batch's epoch.
pub const META_EPOCH: &str = "teelog_epoch";
/// Structured metadata of record and batch entries: the batch's seq.
pub const META_SEQ: &str = "teelog_seq";
/// Structured metadata of record entries: the record's index in its batch.
pub const META_INDEX: &str = "teelog_index";
/// Structured metadata of batch entries: the batch's record count.
pub const META_COUNT: &str = "teelog_count";
/// Structured metadata of attestation entries: hex SHA-256 of the decoded document.
pub const META_ATTESTATION_SHA256: &str = "teelog_attestation_sha256";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const ENTRY_PREFIX: &[u8] = b"{\"v\":1,\"header\":";
const RECORDS_OPEN: &[u8] = b",\"records\":[";

/// Which stream of a teelog stream an entry belongs to (the `teelog_kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One entry per record: the record's canonical bytes.
    Record,
    /// One entry per batch: the batch line without its records.
    Batch,
    /// Attestation document lines.
    Attestation,
    /// The batch entries of batches the gateway found invalid (signature, records or
    /// attestation), laid out as [`Kind::Batch`] but apart, so that a forged or tampered copy of
    /// a batch never lands among the entries the audit reads: they stay there as evidence.
    RejectedBatch,
    /// The records of those batches, laid out as [`Kind::Record`].
    RejectedRecord,
    /// Records longer than the line limit, in parts (docs/LOKI.md §1, "Long records").
    RecordPart,
    /// The long records of rejected batches, in parts.
    RejectedRecordPart,
    /// The gateway's checkpoints (docs/FORMAT.md §17) of the stream, at their `at`; read by an
    /// audit that judges them (`--checkpoint-key`).
    Checkpoint,
}

impl Kind {
    /// The kinds a shipper's genuine entries are stored under: what the audit reads.
    pub const AUDITED: [Kind; 4] = [Kind::Record, Kind::Batch, Kind::Attestation, Kind::RecordPart];

    /// Its `teelog_kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Record => "record",
            Kind::Batch => "batch",
            Kind::Attestation => "attestation",
            Kind::RejectedBatch => "rejected_batch",
            Kind::RejectedRecord => "rejected_record",
            Kind::RecordPart => "record_part",
            Kind::RejectedRecordPart => "rejected_record_part",
            Kind::Checkpoint => "checkpoint",
        }
    }
}

/// Where a batch line goes: among the entries the audit reads, or apart as evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A batch nobody judged (the shipper's own), or one the gateway found valid.
    Audited,
    /// A batch the gateway found invalid: [`Kind::RejectedBatch`] and [`Kind::RejectedRecord`].
    Rejected,
}

/// Why a line cannot be stored as Loki entries, or an entry read back cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Loki stores text: a line that is not UTF-8 cannot be kept byte for byte.
    #[error("the line is not valid UTF-8 (at byte {0}), so it is not a teelog line")]
    NotUtf8(usize),
    /// The line does not parse as a teelog batch line; says why.
    #[error("not a teelog batch line: {0}")]
    NotABatch(String),
    /// A valid batch line in another spelling than teelog writes, which the entries could not
    /// rebuild byte for byte.
    #[error(
        "stream {stream:?} seq {seq}: the batch line is valid but not laid out exactly as \
         docs/FORMAT.md §7 writes it (white space or member order differ), so it cannot be \
         stored as Loki entries that rebuild it byte for byte"
    )]
    NotCanonical {
        /// The batch's stream.
        stream: String,
        /// Its seq.
        seq: u64,
    },
    /// An entry read back from a batch stream that is not a batch entry.
    #[error("not a batch entry of the teelog Loki layout: {0}")]
    NotABatchEntry(String),
    /// A line given as an attestation line that is not one.
    #[error("not an attestation line ({{\"v\":1,\"attestation\":\"<base64>\"}}): {0}")]
    NotAnAttestation(String),
    /// An entry would be longer than the layout's line limit; lines are never cut.
    #[error(
        "stream {stream:?} epoch {epoch} seq {seq}: {part} is {len} bytes, over the {limit}-byte \
         line limit; raise Loki's max_line_size and the layout's max_line_bytes together (lines \
         are never truncated: that would break the signature)"
    )]
    LineTooLong {
        /// The batch's stream.
        stream: String,
        /// Its epoch.
        epoch: String,
        /// Its seq.
        seq: u64,
        /// Which entry: the batch entry or a record.
        part: String,
        /// The entry's length in bytes.
        len: usize,
        /// The layout's `max_line_bytes`.
        limit: usize,
    },
    /// An attestation line longer than the layout's line limit.
    #[error(
        "stream {stream:?}: an attestation line of {len} bytes is over the {limit}-byte line \
         limit; raise Loki's max_line_size and the layout's max_line_bytes together"
    )]
    AttestationTooLong {
        /// The stream it is pushed for.
        stream: String,
        /// Its length in bytes.
        len: usize,
        /// The layout's `max_line_bytes`.
        limit: usize,
    },
    /// A record's entry time (`sealed_at` + its index, in ns) does not fit in Loki's range.
    #[error("stream {stream:?} seq {seq}: sealed_at plus the record index is past the year 2262")]
    TimestampOverflow {
        /// The batch's stream.
        stream: String,
        /// Its seq.
        seq: u64,
    },
    /// A line given as a checkpoint line that is not one.
    #[error("{0}")]
    NotACheckpoint(teelog_core::checkpoint::CheckpointError),
    /// A checkpoint line longer than the layout's line limit.
    #[error(
        "stream {stream:?}: a checkpoint line of {len} bytes is over the {limit}-byte line limit; \
         raise Loki's max_line_size and the layout's max_line_bytes together"
    )]
    CheckpointTooLong {
        /// The stream it is about.
        stream: String,
        /// Its length in bytes.
        len: usize,
        /// The layout's `max_line_bytes`.
        limit: usize,
    },
    /// The stream an attestation line is pushed for is not a valid stream name.
    #[error("attestation line: {0}")]
    Stream(String),
    /// A label name or value Loki would refuse.
    #[error(transparent)]
    Label(#[from] LabelError),
    /// The encoded request is larger than one snappy block holds.
    #[error("the push request is {0} bytes, too large for one snappy block: push fewer batches at a time")]
    PushTooLarge(usize),
}

/// What a layout is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutOptions {
    /// The `job` label (default `teelog`).
    pub job: String,
    /// Static labels added to every stream, e.g. the deployment. Keep them few and bounded.
    pub extra_labels: Vec<(String, String)>,
    /// The longest line pushed; must not exceed Loki's `max_line_size`.
    pub max_line_bytes: usize,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        Self { job: DEFAULT_JOB.into(), extra_labels: Vec::new(), max_line_bytes: DEFAULT_MAX_LINE_BYTES }
    }
}

/// A validated layout: the static labels and the line limit.
#[derive(Debug, Clone)]
pub struct Layout {
    base: LabelSet,
    max_line_bytes: usize,
}

impl Layout {
    /// A layout with the job and extra labels of `options`, checked as Loki checks labels; the
    /// extra labels may not take teelog's own names.
    pub fn new(options: LayoutOptions) -> Result<Self, LabelError> {
        let mut base = LabelSet::new();
        base.insert(LABEL_JOB, &options.job)?;
        for (name, value) in &options.extra_labels {
            insert_extra(&mut base, name, value)?;
        }
        Ok(Self { base, max_line_bytes: options.max_line_bytes })
    }

    /// The labels of one stream of `stream`, plus per-call `extra` labels (e.g. the gateway's
    /// `signature_valid`).
    pub fn labels(&self, stream: &str, kind: Kind, extra: &[(&str, &str)]) -> Result<LabelSet, LabelError> {
        let mut labels = self.base.clone();
        labels.insert(LABEL_STREAM, stream)?;
        labels.insert(LABEL_KIND, kind.as_str())?;
        for (name, value) in extra {
            insert_extra(&mut labels, name, value)?;
        }
        Ok(labels)
    }

    /// The selector of every stream of this layout, all teelog streams and kinds: the job and
    /// the extra labels.
    pub fn base_selector(&self) -> String {
        self.base.to_string()
    }

    /// The exact LogQL stream selector for one kind of entries of `stream`, without per-call
    /// labels, so that it matches whatever the gateway added (query one selector at a time).
    pub fn selector(&self, stream: &str, kind: Kind) -> Result<String, LabelError> {
        Ok(self.labels(stream, kind, &[])?.to_string())
    }

    /// The selector of one kind of entries of every teelog stream: the job, the extra labels and
    /// `teelog_kind`.
    pub fn kind_selector(&self, kind: Kind) -> Result<String, LabelError> {
        let mut labels = self.base.clone();
        labels.insert(LABEL_KIND, kind.as_str())?;
        Ok(labels.to_string())
    }
}

fn insert_extra(labels: &mut LabelSet, name: &str, value: &str) -> Result<(), LabelError> {
    if name == LABEL_STREAM || name == LABEL_KIND {
        return Err(LabelError::Reserved { name: name.into(), why: "the teelog layout sets it itself" });
    }
    labels.insert(name, value)
}

/// A batch line taken apart into its Loki entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitBatch<'a> {
    /// The signed header (validated, signature not checked).
    pub header: Header,
    /// `header.sealed_at` in Unix nanoseconds.
    pub sealed_at: UnixNanos,
    /// `{"v":1,"header":…,"sig":"…","hints":"…"}`: the line without its records.
    pub batch_entry: String,
    /// Each record's canonical bytes, in batch order, borrowed from the line.
    pub records: Vec<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    #[serde(borrow)]
    v: &'a RawValue,
    #[serde(borrow)]
    header: &'a RawValue,
    #[serde(borrow)]
    sig: &'a RawValue,
    #[serde(borrow)]
    hints: &'a RawValue,
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatchEntry<'a> {
    #[serde(borrow)]
    v: &'a RawValue,
    #[serde(borrow, rename = "header")]
    _header: &'a RawValue,
    #[serde(borrow, rename = "sig")]
    _sig: &'a RawValue,
    #[serde(borrow, rename = "hints")]
    _hints: &'a RawValue,
}

fn utf8(line: &[u8]) -> Result<&str, LayoutError> {
    std::str::from_utf8(line).map_err(|e| LayoutError::NotUtf8(e.valid_up_to()))
}

/// The stored form of a line ends in `\n`; Loki lines do not.
fn strip_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// Splits a batch line (with or without its final `\n`) into the batch entry and the records.
///
/// The line must be exactly as `BatchBuilder` writes it, so that [`rebuild_batch_line`] gives
/// it back byte for byte; anything else is refused rather than stored in a form that would not
/// verify.
pub fn split_batch_line(line: &[u8]) -> Result<SplitBatch<'_>, LayoutError> {
    let line = strip_newline(line);
    let text = utf8(line)?;
    let parsed = ParsedBatch::parse(line).map_err(|e| LayoutError::NotABatch(e.to_string()))?;
    let raw: RawBatch<'_> = serde_json::from_str(text).map_err(|e| LayoutError::NotABatch(e.to_string()))?;
    let header = parsed.header;
    let not_canonical = || LayoutError::NotCanonical { stream: header.stream.clone(), seq: header.seq };
    if raw.v.get() != "1" {
        return Err(not_canonical());
    }
    let batch_entry = format!(
        "{{\"v\":1,\"header\":{},\"sig\":{},\"hints\":{}}}",
        raw.header.get(),
        raw.sig.get(),
        raw.hints.get()
    );
    let records: Vec<&str> = raw.records.iter().map(|r| r.get()).collect();
    let record_bytes: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
    if rebuild_unchecked(batch_entry.as_bytes(), &record_bytes) != line {
        return Err(not_canonical());
    }
    let sealed_at = parse_rfc3339(&header.sealed_at).map_err(|e| LayoutError::NotABatch(e.to_string()))?;
    Ok(SplitBatch { header, sealed_at, batch_entry, records })
}

/// Puts a batch line back together from its batch entry and its records in index order.
///
/// Only the batch entry's shape is checked: whether the records are all there and intact is
/// the verifier's finding to make (`record_tampered`, naming the record), not an error here.
pub fn rebuild_batch_line(batch_entry: &[u8], records: &[&[u8]]) -> Result<Vec<u8>, LayoutError> {
    let text = utf8(batch_entry)?;
    let raw: RawBatchEntry<'_> =
        serde_json::from_str(text).map_err(|e| LayoutError::NotABatchEntry(e.to_string()))?;
    if raw.v.get() != "1" || !batch_entry.starts_with(ENTRY_PREFIX) || !batch_entry.ends_with(b"\"}") {
        return Err(LayoutError::NotABatchEntry(
            "expected exactly {\"v\":1,\"header\":…,\"sig\":\"…\",\"hints\":\"…\"}".into(),
        ));
    }
    Ok(rebuild_unchecked(batch_entry, records))
}

/// A batch entry read back from Loki, taken apart. Only its line counts: the time Loki stored it
/// at and its metadata are no evidence of anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// Where Loki stored it, in Unix nanoseconds (the shipper stores it at its `sealed_at`).
    pub timestamp: UnixNanos,
    /// The entry's line, as Loki returned it.
    pub line: String,
    /// The header (validated; its signature is the verifier's to check).
    pub header: Header,
    /// `header.sealed_at` in Unix nanoseconds: record `i` is stored at `sealed_at + i`.
    pub sealed_at: UnixNanos,
    /// One hint per record, if the line's hints are those the header's `hints` digest signs.
    pub hints: Option<Vec<[u8; HINT_LEN]>>,
}

/// Takes apart a batch entry Loki stored at `timestamp`.
pub fn parse_batch_entry(timestamp: UnixNanos, line: String) -> Result<BatchEntry, LayoutError> {
    let without_records = rebuild_batch_line(line.as_bytes(), &[])?;
    let parsed =
        ParsedBatch::parse(&without_records).map_err(|e| LayoutError::NotABatchEntry(e.to_string()))?;
    let sealed_at =
        parse_rfc3339(&parsed.header.sealed_at).map_err(|e| LayoutError::NotABatchEntry(e.to_string()))?;
    let hints = parsed.signed_hints();
    Ok(BatchEntry { timestamp, line, header: parsed.header, sealed_at, hints })
}

/// How a record part entry begins: `teelog-part J/N LEAF ` then the part's bytes, where part J
/// of N (from 0) are the record's bytes in order, cut at character boundaries, and LEAF is the
/// record's leaf hash (hex) as the Merkle tree takes it.
pub const PART_PREFIX: &str = "teelog-part ";
/// The most parts a record is cut into: an 8 MiB batch line in parts of at least 4 KiB.
pub const MAX_PARTS: usize = 4096;
/// `PART_PREFIX`, two numbers of up to 4 digits, the leaf hash and the separators.
const PART_HEAD_BYTES: usize = PART_PREFIX.len() + 4 + 1 + 4 + 1 + 64 + 1;

/// The part entries of a record longer than `limit`, or None when `limit` leaves no room for
/// them.
pub fn record_parts(record: &str, limit: usize) -> Option<Vec<String>> {
    let room = limit.checked_sub(PART_HEAD_BYTES).filter(|&r| r >= 4)?;
    let mut chunks = Vec::new();
    let mut rest = record;
    while !rest.is_empty() {
        let mut cut = room.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        chunks.push(chunk);
        rest = tail;
    }
    if chunks.len() > MAX_PARTS {
        return None;
    }
    let leaf = hex::encode(teelog_core::merkle::leaf_hash(record.as_bytes()));
    let n = chunks.len();
    Some(chunks.iter().enumerate().map(|(j, chunk)| format!("{PART_PREFIX}{j}/{n} {leaf} {chunk}")).collect())
}

/// A record part entry taken apart: (J, N, leaf hash, the part's text).
pub fn parse_record_part(line: &str) -> Option<(usize, usize, teelog_core::merkle::Digest, &str)> {
    let rest = line.strip_prefix(PART_PREFIX)?;
    let (numbers, rest) = rest.split_once(' ')?;
    let (leaf, chunk) = rest.split_once(' ')?;
    let (j, n) = numbers.split_once('/')?;
    let number = |s: &str| -> Option<usize> {
        (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (j, n) = (number(j)?, number(n)?);
    if j >= n || n > MAX_PARTS || leaf.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(leaf, &mut digest).ok()?;
    Some((j, n, digest, chunk))
}

pub(crate) fn rebuild_unchecked(batch_entry: &[u8], records: &[&[u8]]) -> Vec<u8> {
    let head = &batch_entry[..batch_entry.len().saturating_sub(1)];
    let body: usize = records.iter().map(|r| r.len() + 1).sum();
    let mut line = Vec::with_capacity(head.len() + RECORDS_OPEN.len() + body + 2);
    line.extend_from_slice(head);
    line.extend_from_slice(RECORDS_OPEN);
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        line.extend_from_slice(record);
    }
    line.extend_from_slice(b"]}");
    line
}

/// An attestation document line to push, with the timestamp to store it at (the `sealed_at`
/// of the first batch that names it, so that it sorts with that batch).
#[derive(Debug, Clone, Copy)]
pub struct AttestationInput<'a> {
    /// The teelog stream whose batches name the document.
    pub stream: &'a str,
    /// The attestation line, without its newline.
    pub line: &'a [u8],
    /// When to store it (Unix nanoseconds).
    pub timestamp: UnixNanos,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationLine {
    v: u64,
    attestation: String,
}

/// Collects the entries of one push request, grouped per stream.
pub struct PushBuilder<'l> {
    layout: &'l Layout,
    streams: BTreeMap<String, Vec<EntryAdapter>>,
}

fn pair(name: &str, value: impl Into<String>) -> LabelPairAdapter {
    LabelPairAdapter { name: name.into(), value: value.into() }
}

fn entry(timestamp: UnixNanos, line: &str, metadata: Vec<LabelPairAdapter>) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(Timestamp::from_unix_nanos(timestamp)),
        line: line.into(),
        structured_metadata: metadata,
    }
}

impl<'l> PushBuilder<'l> {
    /// An empty push under `layout`.
    pub fn new(layout: &'l Layout) -> Self {
        Self { layout, streams: BTreeMap::new() }
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Adds one batch line: its batch entry and one entry per record. `extra` labels go on both
    /// streams. Nothing is added when an error is returned.
    pub fn add_batch(&mut self, line: &[u8], extra: &[(&str, &str)]) -> Result<(), LayoutError> {
        self.add_placed_batch(line, Placement::Audited, extra)
    }

    /// [`PushBuilder::add_batch`], with the streams `placement` gives.
    pub fn add_placed_batch(
        &mut self,
        line: &[u8],
        placement: Placement,
        extra: &[(&str, &str)],
    ) -> Result<(), LayoutError> {
        let (batch_kind, record_kind, part_kind) = match placement {
            Placement::Audited => (Kind::Batch, Kind::Record, Kind::RecordPart),
            Placement::Rejected => (Kind::RejectedBatch, Kind::RejectedRecord, Kind::RejectedRecordPart),
        };
        let split = split_batch_line(line)?;
        let h = &split.header;
        let limit = self.layout.max_line_bytes;
        let too_long = |part: String, len: usize| LayoutError::LineTooLong {
            stream: h.stream.clone(),
            epoch: h.epoch.clone(),
            seq: h.seq,
            part,
            len,
            limit,
        };
        if split.batch_entry.len() > limit {
            return Err(too_long(
                "the batch entry (header, signature and hints)".into(),
                split.batch_entry.len(),
            ));
        }
        let seq = h.seq.to_string();
        let mut records = Vec::with_capacity(split.records.len());
        let mut parts = Vec::new();
        for (index, record) in split.records.iter().enumerate() {
            // A distinct timestamp per record keeps every (timestamp, line) of the stream unique,
            // so Loki never folds two records into one; a re-pushed batch repeats them exactly,
            // which Loki does fold.
            let timestamp = i64::try_from(index)
                .ok()
                .and_then(|i| split.sealed_at.checked_add(i))
                .ok_or_else(|| LayoutError::TimestampOverflow { stream: h.stream.clone(), seq: h.seq })?;
            let metadata =
                vec![pair(META_EPOCH, &h.epoch), pair(META_SEQ, &seq), pair(META_INDEX, index.to_string())];
            if record.len() <= limit {
                records.push(entry(timestamp, record, metadata));
                continue;
            }
            // Too long for one line: in parts, at the record's own time, that the audit joins.
            let lines = record_parts(record, limit)
                .ok_or_else(|| too_long(format!("record {index}"), record.len()))?;
            parts.extend(lines.iter().map(|line| entry(timestamp, line, metadata.clone())));
        }
        let batch_metadata = vec![
            pair(META_EPOCH, &h.epoch),
            pair(META_SEQ, &seq),
            pair(META_COUNT, split.records.len().to_string()),
        ];
        let batch = entry(split.sealed_at, &split.batch_entry, batch_metadata);
        let batch_labels = self.layout.labels(&h.stream, batch_kind, extra)?.to_string();
        let record_labels = self.layout.labels(&h.stream, record_kind, extra)?.to_string();
        self.streams.entry(batch_labels).or_default().push(batch);
        if !records.is_empty() {
            self.streams.entry(record_labels).or_default().extend(records);
        }
        if !parts.is_empty() {
            let part_labels = self.layout.labels(&h.stream, part_kind, extra)?.to_string();
            self.streams.entry(part_labels).or_default().extend(parts);
        }
        Ok(())
    }

    /// Adds one attestation document line as it is (less a final `\n`).
    pub fn add_attestation(
        &mut self,
        input: AttestationInput<'_>,
        extra: &[(&str, &str)],
    ) -> Result<(), LayoutError> {
        check_stream_name(input.stream).map_err(|e| LayoutError::Stream(e.to_string()))?;
        let line = strip_newline(input.line);
        let text = utf8(line)?;
        let parsed: AttestationLine =
            serde_json::from_str(text).map_err(|e| LayoutError::NotAnAttestation(e.to_string()))?;
        if parsed.v != 1 {
            return Err(LayoutError::NotAnAttestation(format!("version {} is not supported", parsed.v)));
        }
        let document = B64
            .decode(&parsed.attestation)
            .map_err(|e| LayoutError::NotAnAttestation(format!("attestation: not standard base64: {e}")))?;
        if line.len() > self.layout.max_line_bytes {
            return Err(LayoutError::AttestationTooLong {
                stream: input.stream.into(),
                len: line.len(),
                limit: self.layout.max_line_bytes,
            });
        }
        let labels = self.layout.labels(input.stream, Kind::Attestation, extra)?.to_string();
        let metadata = vec![pair(META_ATTESTATION_SHA256, hex::encode(sha256(&document)))];
        self.streams.entry(labels).or_default().push(entry(input.timestamp, text, metadata));
        Ok(())
    }

    /// Adds a gateway checkpoint line under its stream's `checkpoint` entries, at its `at`. Its
    /// layout is checked (not its signature: that is the auditor's, under their key).
    pub fn add_checkpoint(&mut self, line: &[u8], extra: &[(&str, &str)]) -> Result<(), LayoutError> {
        let line = strip_newline(line);
        let text = utf8(line)?;
        let parsed =
            teelog_core::checkpoint::ParsedCheckpoint::parse(line).map_err(LayoutError::NotACheckpoint)?;
        let c = &parsed.checkpoint;
        if line.len() > self.layout.max_line_bytes {
            return Err(LayoutError::CheckpointTooLong {
                stream: c.stream.clone(),
                len: line.len(),
                limit: self.layout.max_line_bytes,
            });
        }
        let labels = self.layout.labels(&c.stream, Kind::Checkpoint, extra)?.to_string();
        self.streams.entry(labels).or_default().push(entry(c.at_nanos(), text, Vec::new()));
        Ok(())
    }

    /// The push request, one stream per label set, each stream's entries in timestamp order
    /// (stable, so that Loki accepts them even with `unordered_writes` off).
    pub fn finish(self) -> PushRequest {
        let streams = self
            .streams
            .into_iter()
            .map(|(labels, mut entries)| {
                entries.sort_by_key(|e| e.timestamp.and_then(Timestamp::to_unix_nanos));
                StreamAdapter { labels, entries, hash: 0 }
            })
            .collect();
        PushRequest { streams }
    }
}

/// The push request for some batch lines and attestation lines, with no per-call labels.
pub fn batch_to_push(
    layout: &Layout,
    batches: &[&[u8]],
    attestations: &[AttestationInput<'_>],
) -> Result<PushRequest, LayoutError> {
    let mut builder = PushBuilder::new(layout);
    for line in batches {
        builder.add_batch(line, &[])?;
    }
    for attestation in attestations {
        builder.add_attestation(*attestation, &[])?;
    }
    Ok(builder.finish())
}
