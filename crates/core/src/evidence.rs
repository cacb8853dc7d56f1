//! Evidence bundles (docs/FORMAT.md §16): the proof that chosen records were signed in an attested
//! batch, without the rest of the log. [`Exporter`] picks records from batch lines fed to it and
//! makes a [`Bundle`]; [`check_bundle`] checks one offline with the rules the verifier applies to
//! whole batches. Other records of a batch appear only as hashes in the inclusion proofs.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::anchor::{bound, bounds, TimeBound};
use crate::batch::{LineFields, ParsedBatch, SignatureStatus, SignedHeader};
use crate::crypto::PublicKey;
use crate::merkle::{inclusion_proof, leaf_hash, root_from_inclusion_proof, sha256, Digest};
use crate::policy::Judgement;
use crate::timestamp::UnixNanos;
use crate::verify::{
    attested_signature, document_of, judge_measurement, time_objections, AttestationVerifier, AttestedKey,
    DocumentError, Finding, FindingKind, TrustBasis, VerifyOptions,
};

/// The bundle format's version, its first member.
pub const BUNDLE_VERSION: u64 = 1;
/// Attestation documents an exporter holds while it looks for the batches that name them.
const MAX_EXPORT_DOCUMENT_BYTES: usize = 64 << 20;
/// Records one bundle may carry, so that a search matching everything stays a bundle.
pub const MAX_BUNDLE_RECORDS: usize = 10_000;

/// An evidence bundle, as written to a file (one JSON object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The format's version, [`BUNDLE_VERSION`].
    pub teelog_evidence: u64,
    /// The signed headers the records are in.
    pub batches: Vec<BundleBatch>,
    /// The disclosed records.
    pub records: Vec<BundleRecord>,
    /// Headers (their JSON text, as signed) that link the batches to the checkpoints: each one's
    /// `prev` is the SHA-256 of the header of the seq before (docs/FORMAT.md §16.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// Stamped gateway checkpoint lines (docs/FORMAT.md §17.1, without the newline) whose tips the
    /// batches are linked to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<String>,
    /// RFC 3161 tokens over headers of the bundle, taken from the shipper's timestamp notices:
    /// each dates its header and those before it (docs/FORMAT.md §16.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<BundleToken>,
    /// Timestamp notices sealed in batches of the bundle, with their inclusion proofs: each
    /// proves its batch, and those after it, were sealed after its token's time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<BundleNotice>,
}

/// An RFC 3161 token over a header of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleToken {
    /// The header's SHA-256 (hex): the token's message imprint.
    pub head: String,
    /// The token (DER, standard base64).
    pub timestamp: String,
}

/// A timestamp notice (a record) in a batch of the bundle, and the path to its batch's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleNotice {
    /// The SHA-256 (hex) of the header of the batch holding it (in `batches` or `chain`).
    pub header: String,
    /// Its position in that batch, from 0.
    pub index: u64,
    /// Its canonical bytes.
    pub record: String,
    /// RFC 9162 inclusion proof: sibling hashes (hex) from the leaf up.
    pub proof: Vec<String>,
}

/// A signed batch header, exactly as signed, without its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleBatch {
    /// The header's JSON text, byte for byte as the batch line carries it (the signed bytes).
    pub header: String,
    /// The signature, standard base64 (as the batch line's `sig`).
    pub sig: String,
    /// The attestation document the header names, standard base64; absent when it names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
    /// An RFC 3161 timestamp token (DER, standard base64) over the SHA-256 of `header`: trusted
    /// time by which the batch existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

impl BundleBatch {
    /// Puts the timestamp token `token` (DER) over this batch's header in the bundle.
    pub fn set_timestamp(&mut self, token: &[u8]) {
        self.timestamp = Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, token));
    }
}

/// Verifies RFC 3161 timestamp tokens against the TSA roots the auditor trusts; the TSA
/// provider plugs in here, so that the core stays free of CMS.
pub trait TimestampVerifier {
    /// The time `token` says the TSA stamped `digest` at, or why it is not trusted.
    fn verify_token(&self, token: &[u8], digest: &[u8; 32]) -> Result<UnixNanos, String>;

    /// The same, as the interval the TSA's stated accuracy leaves: (earliest, latest). A bound
    /// from above takes the latest, one from below the earliest. By default the time alone.
    fn verify_token_interval(
        &self,
        token: &[u8],
        digest: &[u8; 32],
    ) -> Result<(UnixNanos, UnixNanos), String> {
        self.verify_token(token, digest).map(|t| (t, t))
    }
}

/// One disclosed record and the path from it to its batch's Merkle root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRecord {
    /// Index into `batches`.
    pub batch: usize,
    /// The record's position in its batch, from 0.
    pub index: u64,
    /// The record's canonical bytes, as hashed into the leaf.
    pub record: String,
    /// RFC 9162 inclusion proof: sibling hashes (hex) from the leaf up.
    pub proof: Vec<String>,
}

/// Which records to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Records of one batch: by stream, seq and (if several epochs have that seq) epoch; every
    /// record of it, or one index.
    Place {
        /// The batch's stream.
        stream: String,
        /// Its epoch, where several epochs have the seq.
        epoch: Option<String>,
        /// Its seq.
        seq: u64,
        /// One record of it, by index from 0; None for all.
        index: Option<u64>,
    },
    /// Every record in which a member named `key` (at any depth) has the value `value` (a
    /// string, or a number or literal as written), optionally of one stream.
    Match {
        /// Only records of this stream.
        stream: Option<String>,
        /// The member's name.
        key: String,
        /// Its value, as text.
        value: String,
    },
}

/// Why no bundle could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    /// No batch line held a record the selection names.
    #[error("no record matched the selection")]
    NothingMatched,
    /// More records match than one bundle carries.
    #[error("more than {MAX_BUNDLE_RECORDS} records match: narrow the selection (e.g. --stream)")]
    TooMany,
    /// A seq was selected without an epoch, and several epochs have it.
    #[error("the batch {place} was selected in several epochs ({epochs}): name one with --epoch")]
    Ambiguous {
        /// The stream and seq selected.
        place: String,
        /// The epochs that have it.
        epochs: String,
    },
    /// The index is beyond the selected batch.
    #[error("record index {index} is beyond batch {place}, which has {count} records")]
    NoSuchRecord {
        /// stream/epoch/seq of the batch.
        place: String,
        /// The index asked for.
        index: u64,
        /// The batch's record count.
        count: u64,
    },
    /// A selected batch names a document the input does not hold.
    #[error("attestation document {0} named by a selected batch is not in the input")]
    MissingDocument(String),
    /// The headers and checkpoints between the selected batches and their anchors are more
    /// than an exporter holds.
    #[error(
        "the headers linking the selected batches to their checkpoints exceed {0} MiB: select fewer records"
    )]
    TooLarge(usize),
}

/// Picks records from batch lines fed in any order, keeping only what a bundle needs.
pub struct Exporter {
    selection: Selection,
    /// Documents seen, by SHA-256, within a bound.
    documents: HashMap<Digest, Vec<u8>>,
    document_bytes: usize,
    /// Selected batches by header hash, in the order first seen.
    batches: Vec<(Digest, BundleBatch, Vec<BundleRecord>)>,
    index_count: Option<(u64, u64, String)>,
    too_many: bool,
}

impl Exporter {
    /// An exporter of the records `selection` names.
    pub fn new(selection: Selection) -> Self {
        Self {
            selection,
            documents: HashMap::new(),
            document_bytes: 0,
            batches: Vec::new(),
            index_count: None,
            too_many: false,
        }
    }

    /// Takes one line (without its newline). Lines that are neither batches nor attestation
    /// documents, and batches whose records do not match their signed root, are passed over:
    /// a bundle is checked on its own, and the store's verification says what is wrong with it.
    pub fn push_line(&mut self, line: &[u8]) {
        let Ok(fields) = LineFields::read(line) else { return };
        if let Some(Ok(document)) = document_of(&fields, line) {
            if self.document_bytes + document.len() <= MAX_EXPORT_DOCUMENT_BYTES {
                self.document_bytes += document.len();
                self.documents.entry(sha256(&document)).or_insert(document);
            }
            return;
        }
        let Ok(batch) = ParsedBatch::parse(line) else { return };
        if self.batches.iter().any(|(hash, _, _)| *hash == batch.header_hash) {
            return;
        }
        let picked = self.pick(&batch);
        if picked.is_empty() {
            return;
        }
        let leaves: Vec<Digest> = batch.records().map(leaf_hash).collect();
        if leaves.len() as u64 != batch.header.count
            || hex::encode(crate::merkle::MerkleBuilder::from_leaves(&leaves).root()) != batch.header.root
        {
            return;
        }
        let records: Vec<BundleRecord> = picked
            .into_iter()
            .filter_map(|(index, record)| {
                let proof = inclusion_proof(&leaves, index)?;
                Some(BundleRecord {
                    batch: 0,
                    index: index as u64,
                    record: String::from_utf8_lossy(record).into_owned(),
                    proof: proof.iter().map(hex::encode).collect(),
                })
            })
            .collect();
        let total: usize = self.batches.iter().map(|(_, _, r)| r.len()).sum::<usize>() + records.len();
        if total > MAX_BUNDLE_RECORDS {
            self.too_many = true;
            return;
        }
        let bundle_batch = BundleBatch {
            header: String::from_utf8_lossy(batch.header_bytes()).into_owned(),
            sig: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, batch.signature()),
            attestation: None,
            timestamp: None,
        };
        self.batches.push((batch.header_hash, bundle_batch, records));
    }

    /// The records of `batch` the selection names, with their index.
    fn pick<'b>(&mut self, batch: &'b ParsedBatch<'_>) -> Vec<(usize, &'b [u8])> {
        let h = &batch.header;
        match &self.selection {
            Selection::Place { stream, epoch, seq, index } => {
                if h.stream != *stream || h.seq != *seq || epoch.as_ref().is_some_and(|e| *e != h.epoch) {
                    return Vec::new();
                }
                let all = batch.records().enumerate();
                match index {
                    None => all.collect(),
                    Some(i) => {
                        let place = format!("{}/{}/{}", h.stream, h.epoch, h.seq);
                        if *i >= h.count {
                            self.index_count = Some((*i, h.count, place));
                        }
                        all.filter(|(n, _)| *n as u64 == *i).collect()
                    }
                }
            }
            Selection::Match { stream, key, value } => {
                if stream.as_ref().is_some_and(|s| *s != h.stream) {
                    return Vec::new();
                }
                batch.records().enumerate().filter(|(_, record)| has_member(record, key, value)).collect()
            }
        }
    }

    /// The bundle of the selected records, each batch with its attestation document.
    pub fn finish(self) -> Result<Bundle, ExportError> {
        if self.too_many {
            return Err(ExportError::TooMany);
        }
        if let (Selection::Place { epoch: None, .. }, true) = (&self.selection, self.batches.len() > 1) {
            let epochs: Vec<String> = self
                .batches
                .iter()
                .filter_map(|(_, b, _)| {
                    SignedHeader::from_parts(&b.header, &b.sig).ok().map(|(h, ..)| h.epoch)
                })
                .collect();
            let place = match &self.selection {
                Selection::Place { stream, seq, .. } => format!("{stream} seq {seq}"),
                Selection::Match { .. } => String::new(),
            };
            return Err(ExportError::Ambiguous { place, epochs: epochs.join(", ") });
        }
        if let Some((index, count, place)) = self.index_count.filter(|_| self.batches.is_empty()) {
            return Err(ExportError::NoSuchRecord { place, index, count });
        }
        let mut bundle = Bundle {
            teelog_evidence: BUNDLE_VERSION,
            batches: Vec::new(),
            records: Vec::new(),
            chain: Vec::new(),
            checkpoints: Vec::new(),
            tokens: Vec::new(),
            notices: Vec::new(),
        };
        for (n, (_, mut batch, records)) in self.batches.into_iter().enumerate() {
            let named =
                SignedHeader::from_parts(&batch.header, &batch.sig).ok().and_then(|(h, ..)| h.attestation);
            if let Some(named) = named {
                let document = hex::decode(&named)
                    .ok()
                    .and_then(|d| <[u8; 32]>::try_from(d).ok())
                    .and_then(|d| self.documents.get(&d))
                    .ok_or_else(|| ExportError::MissingDocument(named.clone()))?;
                batch.attestation =
                    Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, document));
            }
            bundle.batches.push(batch);
            bundle.records.extend(records.into_iter().map(|r| BundleRecord { batch: n, ..r }));
        }
        if bundle.records.is_empty() {
            return Err(ExportError::NothingMatched);
        }
        Ok(bundle)
    }
}

/// Whether the JSON `record` has a member `key`, at any depth, whose value is `value`: a string
/// equal to it, or a number or literal written as it.
fn has_member(record: &[u8], key: &str, value: &str) -> bool {
    use serde_json::Value;
    fn walk(v: &Value, key: &str, text: &str, literal: Option<&Value>) -> bool {
        match v {
            Value::Object(members) => members.iter().any(|(k, v)| {
                let here = k == key
                    && match v {
                        Value::String(s) => s == text,
                        Value::Number(_) | Value::Bool(_) => literal == Some(v),
                        _ => false,
                    };
                here || walk(v, key, text, literal)
            }),
            Value::Array(items) => items.iter().any(|v| walk(v, key, text, literal)),
            _ => false,
        }
    }
    let literal = serde_json::from_str::<Value>(value).ok();
    serde_json::from_slice::<Value>(record).is_ok_and(|v| walk(&v, key, value, literal.as_ref()))
}

/// What a bundle proves about one of its records, once checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvenRecord {
    /// Its batch's stream, epoch and seq, and its index in the batch.
    pub stream: String,
    /// See `stream`.
    pub epoch: String,
    /// See `stream`.
    pub seq: u64,
    /// See `stream`.
    pub index: u64,
    /// Records in the batch (all but this one disclosed only as hashes).
    pub batch_records: u64,
    /// The record's canonical bytes.
    pub record: String,
    /// The signing key's id.
    pub key_id: String,
    /// When the signer says it sealed the batch (its clock).
    pub sealed_at: String,
    /// The platform that vouches for the key ("software" for a bare key).
    pub platform: String,
    /// The code measurement, as attested (or as the header claims, for a bare key).
    pub measurement: String,
    /// The policy's label for the measurement, when a policy was given and lists it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the trust in the key rests on.
    pub basis: TrustBasis,
    /// SHA-256 of the attestation document that binds the key, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// When the platform attests the document was made, where it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attested_at: Option<String>,
    /// When a TSA the auditor trusts stamped the batch's header: it was sealed no later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stamped_at: Option<String>,
    /// The batch was sealed no earlier than this, trusted time (the latest of the timestamp
    /// notices sealed at or before it, and the time the platform attests its key's document was
    /// made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_earlier_than: Option<TimeBound>,
    /// The batch was sealed no later than this, trusted time (the earliest of `stamped_at` and
    /// the checkpoints and tokens linked to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_later_than: Option<TimeBound>,
    /// Why a bound of the record's time window is missing, if one is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unbounded: Vec<String>,
}

/// The verdict on a bundle: what it proves, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    /// Every record proven, nothing found.
    pub ok: bool,
    /// Records whose every check passed.
    pub proven: Vec<ProvenRecord>,
    /// Findings; `record_index` is the record's index in its batch, and the detail names the
    /// bundle record (`records[i]`) or batch (`batches[i]`).
    pub findings: Vec<Finding>,
}

/// Checks `bundle` offline: each batch's signature under its attested key (or a trusted key),
/// each record's inclusion proof to its batch's signed root, the measurement against `options`
/// (its expected measurement or policy) and the time rules. `now` is the verification time.
pub fn check_bundle(
    bundle: &Bundle,
    options: &VerifyOptions,
    attestation: Option<&dyn AttestationVerifier>,
    timestamps: Option<&dyn TimestampVerifier>,
    checkpoint_keys: &[PublicKey],
    now: Option<UnixNanos>,
) -> BundleReport {
    let mut findings = Vec::new();
    let unplaced = |kind, detail: String| Finding {
        kind,
        stream: None,
        epoch: None,
        seq: None,
        record_index: None,
        detail,
    };
    if bundle.teelog_evidence != BUNDLE_VERSION {
        findings.push(unplaced(
            FindingKind::Malformed,
            format!(
                "evidence bundle version {} is not supported (this teelog reads {BUNDLE_VERSION})",
                bundle.teelog_evidence
            ),
        ));
        return BundleReport { ok: false, proven: Vec::new(), findings };
    }
    // What export makes at most: a bundle beyond it is refused whole, so that no part of the
    // check, and no list of findings, grows with what a forger packs in.
    let parts = [
        ("batches", bundle.batches.len()),
        ("records", bundle.records.len()),
        ("tokens", bundle.tokens.len()),
        ("notices", bundle.notices.len()),
        ("checkpoints", bundle.checkpoints.len()),
    ];
    if let Some((part, count)) = parts.into_iter().find(|(_, count)| *count > MAX_BUNDLE_RECORDS) {
        findings.push(unplaced(
            FindingKind::Malformed,
            format!("{count} {part}: a bundle holds at most {MAX_BUNDLE_RECORDS}"),
        ));
        return BundleReport { ok: false, proven: Vec::new(), findings };
    }
    let mut first_copy: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, batch) in bundle.batches.iter().enumerate() {
        if let Some(first) = first_copy.insert((&batch.header, &batch.sig), i) {
            findings.push(unplaced(FindingKind::Malformed, format!("batches[{i}] repeats batches[{first}]")));
        }
    }
    // A document carried by several batches is judged once.
    let attestation = attestation.map(JudgedOnce::new);
    let attestation = attestation.as_ref().map(|a| a as &dyn AttestationVerifier);
    let batches: Vec<Option<CheckedBatch>> = bundle
        .batches
        .iter()
        .enumerate()
        .map(|(i, batch)| check_batch(i, batch, options, (attestation, timestamps), now, &mut findings))
        .collect();
    let windows = bounds(bundle, checkpoint_keys, timestamps, &mut findings);
    let named: HashSet<usize> = bundle.records.iter().map(|r| r.batch).collect();
    for i in (0..bundle.batches.len()).filter(|i| !named.contains(i)) {
        findings.push(unplaced(
            FindingKind::Malformed,
            format!("batches[{i}]: no record of the bundle is in it"),
        ));
    }
    let mut proven = Vec::new();
    for (i, item) in bundle.records.iter().enumerate() {
        let Some(batch) = bundle.batches.get(item.batch) else {
            findings.push(unplaced(
                FindingKind::Malformed,
                format!("records[{i}]: batch {} is not in the bundle", item.batch),
            ));
            continue;
        };
        let Some(Some(checked)) = batches.get(item.batch) else {
            // The batch's own findings say why; nothing in it is proven.
            continue;
        };
        let h = &checked.header;
        let about = |kind, detail: String| Finding {
            kind,
            stream: Some(h.stream.clone()),
            epoch: Some(h.epoch.clone()),
            seq: Some(h.seq),
            record_index: Some(item.index),
            detail: format!("records[{i}]: {detail}"),
        };
        let proof: Option<Vec<Digest>> = item
            .proof
            .iter()
            .map(|p| hex::decode(p).ok().and_then(|d| <[u8; 32]>::try_from(d).ok()))
            .collect();
        let Some(proof) = proof else {
            findings.push(about(
                FindingKind::Malformed,
                "the proof holds something other than 64-digit hex hashes".into(),
            ));
            continue;
        };
        let leaf = leaf_hash(item.record.as_bytes());
        let root = root_from_inclusion_proof(leaf, item.index, h.count, &proof);
        if root.map(hex::encode).as_deref() != Some(h.root.as_str()) {
            findings.push(about(
                FindingKind::RecordTampered,
                format!(
                    "the record and its proof do not lead to the signed Merkle root of batches[{}] (record {} of {}): the record, its index or the proof was changed",
                    item.batch, item.index, h.count
                ),
            ));
            continue;
        }
        if !checked.objections.is_empty() {
            continue;
        }
        let window = windows.get(item.batch).cloned().unwrap_or_default();
        let stamped = checked.stamped_at.map(|t| (t, format!("the TSA token of batches[{}]", item.batch)));
        let attested = checked.attested.as_ref().and_then(|a| a.attested_at).map(|t| {
            (t, format!("the time the {} platform attests the key's attestation document was made (the key signs only after it)", checked.platform))
        });
        let mut unbounded = Vec::new();
        let no_later_than = earliest([window.upper.clone().ok(), stamped]);
        let no_earlier_than = latest([window.lower.clone().ok(), attested]);
        if no_later_than.is_none() {
            unbounded.extend(window.upper.clone().err());
        }
        if no_earlier_than.is_none() {
            unbounded.extend(
                window
                    .lower
                    .clone()
                    .err()
                    .map(|why| format!("{why}, and the platform attests no time for the key")),
            );
        }
        // The signer's clock against trusted time, as for the batch's own token (check_batch).
        let skew = options.skew();
        let sealed_at = h.sealed_at_nanos().unwrap_or_default();
        let fmt = crate::timestamp::format_rfc3339;
        let mut objection = match (&no_earlier_than, &no_later_than) {
            (Some((lo, lo_by)), Some((hi, hi_by))) if lo > hi => Some(format!(
                "the window is empty: sealed no earlier than {} ({lo_by}) but no later than {} ({hi_by})",
                fmt(*lo),
                fmt(*hi)
            )),
            _ => None,
        };
        if let Ok((hi, by)) = &window.upper {
            if sealed_at > hi.saturating_add(skew) {
                objection.get_or_insert(format!(
                    "sealed at {}, after {} ({by}): the signer's clock ran ahead",
                    h.sealed_at,
                    fmt(*hi)
                ));
            }
        }
        if let Ok((lo, by)) = &window.lower {
            if sealed_at.saturating_add(skew) < *lo {
                objection.get_or_insert(format!(
                    "sealed at {}, before {} ({by}): the signer's clock ran behind",
                    h.sealed_at,
                    fmt(*lo)
                ));
            }
        }
        if let Some(detail) = objection {
            findings.push(about(FindingKind::TimeAnomaly, detail));
            continue;
        }
        let (no_later_than, no_earlier_than) =
            (no_later_than.map(|(t, by)| bound(t, by)), no_earlier_than.map(|(t, by)| bound(t, by)));
        proven.push(ProvenRecord {
            stream: h.stream.clone(),
            epoch: h.epoch.clone(),
            seq: h.seq,
            index: item.index,
            batch_records: h.count,
            record: item.record.clone(),
            key_id: h.key_id.clone(),
            sealed_at: h.sealed_at.clone(),
            platform: checked.platform.clone(),
            measurement: checked.measurement.clone(),
            version: checked.judgement.as_ref().and_then(Judgement::version).map(str::to_string),
            basis: checked.attested.as_ref().map_or(TrustBasis::BarePublicKey, |a| a.anchor),
            document: batch.attestation.as_ref().and(h.attestation.clone()),
            stamped_at: checked.stamped_at.map(crate::timestamp::format_rfc3339),
            no_earlier_than,
            no_later_than,
            unbounded,
            attested_at: checked
                .attested
                .as_ref()
                .and_then(|a| a.attested_at)
                .map(crate::timestamp::format_rfc3339),
        });
    }
    if bundle.records.is_empty() {
        findings.push(unplaced(FindingKind::NothingVerified, "the bundle holds no record".into()));
    }
    BundleReport { ok: findings.is_empty(), proven, findings }
}

/// The earliest of the times given, with what dates it.
fn earliest(times: [Option<(UnixNanos, String)>; 2]) -> Option<(UnixNanos, String)> {
    times.into_iter().flatten().min_by_key(|(t, _)| *t)
}

/// The latest of the times given, with what dates it.
fn latest(times: [Option<(UnixNanos, String)>; 2]) -> Option<(UnixNanos, String)> {
    times.into_iter().flatten().max_by_key(|(t, _)| *t)
}

/// A bundle batch whose signature holds.
struct CheckedBatch {
    header: crate::Header,
    attested: Option<AttestedKey>,
    /// When a trusted TSA stamped its header.
    stamped_at: Option<UnixNanos>,
    platform: String,
    measurement: String,
    judgement: Option<Judgement>,
    /// Findings on it that leave its signature standing (measurement, time): its records are
    /// not proven.
    objections: Vec<FindingKind>,
}

/// Checks batch `i` of a bundle; None (with findings) if its signature does not hold.
/// An attestation verifier that judges each document once, by its SHA-256.
struct JudgedOnce<'a> {
    inner: &'a dyn AttestationVerifier,
    verdicts: RefCell<HashMap<Digest, Result<AttestedKey, DocumentError>>>,
}

impl<'a> JudgedOnce<'a> {
    fn new(inner: &'a dyn AttestationVerifier) -> Self {
        Self { inner, verdicts: RefCell::new(HashMap::new()) }
    }
}

impl AttestationVerifier for JudgedOnce<'_> {
    fn verify_document(&self, document: &[u8]) -> Result<AttestedKey, DocumentError> {
        let digest = sha256(document);
        if let Some(verdict) = self.verdicts.borrow().get(&digest) {
            return verdict.clone();
        }
        let verdict = self.inner.verify_document(document);
        self.verdicts.borrow_mut().insert(digest, verdict.clone());
        verdict
    }
}

fn check_batch(
    i: usize,
    batch: &BundleBatch,
    options: &VerifyOptions,
    (attestation, timestamps): (Option<&dyn AttestationVerifier>, Option<&dyn TimestampVerifier>),
    now: Option<UnixNanos>,
    findings: &mut Vec<Finding>,
) -> Option<CheckedBatch> {
    let (header, _, signed) = match SignedHeader::from_parts(&batch.header, &batch.sig) {
        Ok(parts) => parts,
        Err(e) => {
            findings.push(Finding::unplaced(FindingKind::Malformed, format!("batches[{i}]: {e}")));
            return None;
        }
    };
    let about = |kind, detail: String| Finding::about(kind, &header, None, &format!("batches[{i}]"), &detail);
    let document = match (&header.attestation, &batch.attestation) {
        (None, None) => None,
        (None, Some(_)) => {
            findings.push(about(
                FindingKind::Malformed,
                "carries an attestation document its header does not name".into(),
            ));
            return None;
        }
        (Some(named), None) => {
            findings.push(about(
                FindingKind::UntrustedAttestation,
                format!("its header names attestation document {named}, which the bundle does not carry"),
            ));
            return None;
        }
        (Some(named), Some(text)) => {
            let bytes = match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text) {
                Ok(bytes) => bytes,
                Err(e) => {
                    findings.push(about(FindingKind::Malformed, format!("attestation: not base64: {e}")));
                    return None;
                }
            };
            if hex::encode(sha256(&bytes)) != *named {
                findings.push(about(
                    FindingKind::UntrustedAttestation,
                    format!("the attestation document carried is not the one its header names ({named})"),
                ));
                return None;
            }
            Some(bytes)
        }
    };
    let (status, attested) = match (document, attestation) {
        (Some(_), None) => {
            findings
                .push(about(FindingKind::UntrustedAttestation, "no attestation verifier was given".into()));
            return None;
        }
        (Some(bytes), Some(verifier)) => match verifier.verify_document(&bytes) {
            Err(why) => {
                findings.push(about(FindingKind::UntrustedAttestation, why.to_string()));
                return None;
            }
            Ok(key) => {
                let (status, broken_link) = attested_signature(&signed, &header, &key);
                if let (SignatureStatus::Valid, Some(detail)) = (&status, broken_link) {
                    findings.push(about(FindingKind::ChainBreak, detail));
                }
                (status, Some(key))
            }
        },
        (None, _) => {
            let key = options.trusted_keys.iter().find(|k| k.id_hex() == header.key_id);
            match key {
                None => (
                    SignatureStatus::Invalid(format!(
                        "signed by key {}, which is not a trusted key",
                        header.key_id
                    )),
                    None,
                ),
                Some(key) => (signed.verify_with(&header, key), None),
            }
        }
    };
    if let SignatureStatus::Invalid(why) = status {
        findings.push(about(FindingKind::InvalidSignature, why));
        return None;
    }
    let mut objections = Vec::new();
    for detail in time_objections(options, now, &header, attested.as_ref()) {
        findings.push(about(FindingKind::TimeAnomaly, detail));
        objections.push(FindingKind::TimeAnomaly);
    }
    let check = judge_measurement(options, &header, attested.as_ref());
    if let Some(detail) = check.objection {
        findings.push(about(FindingKind::UnexpectedMeasurement, detail));
        objections.push(FindingKind::UnexpectedMeasurement);
    }
    // Trusted time: the TSA stamped the header, so the batch was sealed no later. A token that
    // does not verify, or a batch claiming to be sealed after it, is a time_anomaly.
    let mut stamped_at = None;
    if let (Some(text), Some(verifier)) = (&batch.timestamp, timestamps) {
        let verdict = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
            .map_err(|e| format!("not base64: {e}"))
            .and_then(|token| verifier.verify_token_interval(&token, &sha256(batch.header.as_bytes())))
            .map(|(_, latest)| latest);
        let skew = options.skew();
        let sealed_at = header.sealed_at_nanos().unwrap_or_default();
        let objection = match verdict {
            Err(why) => Some(format!("its timestamp token is not trusted: {why}")),
            Ok(at) if sealed_at > at.saturating_add(skew) => Some(format!(
                "sealed at {}, after a TSA stamped its header ({}): the signer's clock ran ahead",
                header.sealed_at,
                crate::timestamp::format_rfc3339(at)
            )),
            Ok(at) => {
                stamped_at = Some(at);
                None
            }
        };
        if let Some(detail) = objection {
            findings.push(about(FindingKind::TimeAnomaly, detail));
            objections.push(FindingKind::TimeAnomaly);
        }
    }
    Some(CheckedBatch {
        header,
        attested,
        stamped_at,
        platform: check.platform,
        measurement: check.measurement,
        judgement: check.judgement,
        objections,
    })
}
