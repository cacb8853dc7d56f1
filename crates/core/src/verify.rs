//! The chain verifier: a state machine fed batch lines in any order, which checks each batch as
//! it arrives (signature, records, measurement) and the chain once everything is in (order by
//! stream, epoch and seq; gaps, links, equivocation, epoch hand-overs).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::batch::{Header, LineFields, ParsedBatch, RecordsStatus, SignatureStatus, SignedHeader};
use crate::crypto::PublicKey;
use crate::merkle::{sha256, Digest};
use crate::policy::{Judgement, Policy};
use crate::seed::check_seed_batch;
use crate::timestamp::{format_rfc3339, UnixNanos};

/// The stream name under which seed-format (`SignedLogBatch`) batches are reported; their
/// epoch is the `AttestationCertThumbprint`.
pub const SEED_STREAM: &str = "seed";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    InvalidSignature,
    RecordTampered,
    UnexpectedMeasurement,
    SequenceGap,
    ChainBreak,
    Equivocation,
    Malformed,
    UntrustedAttestation,
    StaleStream,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::InvalidSignature => "invalid_signature",
            FindingKind::RecordTampered => "record_tampered",
            FindingKind::UnexpectedMeasurement => "unexpected_measurement",
            FindingKind::SequenceGap => "sequence_gap",
            FindingKind::ChainBreak => "chain_break",
            FindingKind::Equivocation => "equivocation",
            FindingKind::Malformed => "malformed",
            FindingKind::UntrustedAttestation => "untrusted_attestation",
            FindingKind::StaleStream => "stale_stream",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub stream: Option<String>,
    pub epoch: Option<String>,
    pub seq: Option<u64>,
    pub record_index: Option<u64>,
    pub detail: String,
}

impl Finding {
    /// A line at `origin` that is not a batch that can be judged.
    pub(crate) fn malformed(origin: Origin<'_>, detail: &str) -> Self {
        Finding {
            kind: FindingKind::Malformed,
            stream: None,
            epoch: None,
            seq: None,
            record_index: None,
            detail: format!("{origin}: {detail}"),
        }
    }

    /// A finding about the batch with header `h`, found in the line at `origin`.
    pub(crate) fn about(
        kind: FindingKind,
        h: &Header,
        record_index: Option<u64>,
        origin: &str,
        detail: &str,
    ) -> Self {
        Finding {
            kind,
            stream: Some(h.stream.clone()),
            epoch: Some(h.epoch.clone()),
            seq: Some(h.seq),
            record_index,
            detail: format!("{origin}: {detail}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub batches: u64,
    pub records: u64,
    pub duplicates: u64,
    pub findings: Vec<Finding>,
    /// Batches whose key a dev root vouches for (not hardware-backed); shown to people, not in
    /// the JSON report.
    #[serde(skip)]
    pub dev_attested: u64,
    /// Which code produced which batches, per stream in time order; present with a policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<TimelineEntry>>,
}

/// A run of consecutive batches of one stream signed by code with one measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    pub stream: String,
    pub platform: String,
    pub measurement: String,
    /// The policy's label for it, if the policy lists it.
    pub version: Option<String>,
    /// Whether the policy allows every batch of the run.
    pub allowed: bool,
    pub batches: u64,
    /// `sealed_at` of the first and last batch.
    pub from: String,
    pub to: String,
    /// `epoch:seq` of the first and last batch.
    pub first: String,
    pub last: String,
}

/// One accepted batch, as the timeline needs it.
#[derive(Debug, Clone)]
struct TimelinePoint {
    stream: String,
    epoch: String,
    seq: u64,
    sealed_at: UnixNanos,
    platform: String,
    measurement: String,
    judgement: Option<Judgement>,
}

/// Where a line came from, for messages: `file:line`.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub source: &'a str,
    pub line: u64,
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.line)
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub trusted_keys: Vec<PublicKey>,
    /// Lower-case hex; batches with another measurement are `unexpected_measurement`.
    pub expect_measurement: Option<String>,
    /// Measurements allowed per platform and time; with one, the report carries a timeline.
    pub policy: Option<Policy>,
    /// A stream whose newest valid batch was sealed longer before `now` than `max_silence` is
    /// `stale_stream`: signers send heartbeats, so silence means the tail may be cut off.
    pub freshness: Option<Freshness>,
}

#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub now: UnixNanos,
    pub max_silence: UnixNanos,
}

/// What a verified attestation document says about the key it binds.
#[derive(Debug, Clone)]
pub struct AttestedKey {
    pub key: PublicKey,
    /// The code measurement the document attests, lower-case hex.
    pub measurement: String,
    /// Which provider vouches for the key: one of [`PLATFORMS`](crate::policy::PLATFORMS) ("dev" for a dev root).
    pub platform: String,
    /// The header hash (hex) the document attests its epoch continues from, if it names one:
    /// the first batch of the epoch must link to exactly that.
    pub previous_head: Option<String>,
    /// What the trust in the key finally rests on: the anchor the document's chain reached.
    pub anchor: TrustBasis,
    /// When the platform attests the document was made, if it says (a Nitro document's
    /// `timestamp`); policy windows are judged at this time, and no batch of the key may be
    /// sealed before it.
    pub attested_at: Option<UnixNanos>,
}

/// What a batch's trust rests on, as `--json` reports it per stream and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustBasis {
    /// A vendor root pinned in teelog by the SHA-256 of its certificate (AWS Nitro G1, …).
    PinnedVendorRoot,
    /// A dev root the auditor passed with `--trust-root`: not hardware-backed.
    DevRoot,
    /// A TPM enrollment CA the auditor passed with `--trust-root`.
    TpmEnrollmentCa,
    /// A public key the auditor passed with `--pubkey`, with no attestation.
    BarePublicKey,
}

/// Verifies attestation documents (chain to pinned roots, signature, binding): the attestation
/// providers plug in here, so that the core stays free of any one TEE's formats.
pub trait AttestationVerifier {
    /// The key the document binds, or why the document is not trusted.
    fn verify_document(&self, document: &[u8]) -> Result<AttestedKey, String>;
}

/// A parsed batch, before its signature is checked.
struct Candidate {
    origin: String,
    header: Header,
    header_hash: Digest,
    records: RecordsStatus,
}

/// A validly signed batch as the chain check needs it.
#[derive(Debug, Clone)]
struct Slot {
    header_hash: Digest,
    prev: Option<String>,
    origin: String,
}

#[derive(Debug, Default)]
struct EpochState {
    seed: bool,
    /// Validly signed batches by seq; more than one distinct header at a seq is equivocation.
    slots: BTreeMap<u64, Vec<Slot>>,
    /// Seqs claimed only by batches whose signature failed (already reported).
    untrusted: BTreeSet<u64>,
}

pub struct Verifier {
    options: VerifyOptions,
    attestation: Option<Box<dyn AttestationVerifier>>,
    /// Attestation documents seen, by the SHA-256 of their bytes.
    documents: HashMap<Digest, Vec<u8>>,
    /// Batches bound to an attestation document, checked once every document is in.
    attested: Vec<(Candidate, SignedHeader)>,
    seen: HashSet<Digest>,
    epochs: BTreeMap<(String, String), EpochState>,
    findings: Vec<Finding>,
    batches: u64,
    records: u64,
    duplicates: u64,
    dev_attested: u64,
    timeline: Vec<TimelinePoint>,
}

impl Verifier {
    pub fn new(options: VerifyOptions) -> Self {
        Self {
            options,
            attestation: None,
            documents: HashMap::new(),
            attested: Vec::new(),
            seen: HashSet::new(),
            epochs: BTreeMap::new(),
            findings: Vec::new(),
            batches: 0,
            records: 0,
            duplicates: 0,
            dev_attested: 0,
            timeline: Vec::new(),
        }
    }

    /// Batches that name an attestation document get their key from it, verified by `verifier`.
    pub fn with_attestation(mut self, verifier: Box<dyn AttestationVerifier>) -> Self {
        self.attestation = Some(verifier);
        self
    }

    /// Reports a line that could not even be read as a line (too long, not UTF-8, torn).
    pub fn push_malformed(&mut self, origin: Origin<'_>, detail: &str) {
        self.findings.push(Finding::malformed(origin, detail));
    }

    /// Feeds one line (without its newline). Blank lines are ignored.
    pub fn push_line(&mut self, origin: Origin<'_>, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let fields: LineFields<'_> = match serde_json::from_slice(line) {
            Ok(fields) => fields,
            Err(e) => return self.push_malformed(origin, &format!("not a batch line: {e}")),
        };
        let teelog = fields.v.is_some()
            || fields.header.is_some()
            || fields.sig.is_some()
            || fields.hints.is_some()
            || fields.records.is_some();
        let seed = fields.seed_sequence.is_some()
            || fields.seed_payload.is_some()
            || fields.seed_signature.is_some()
            || fields.seed_thumbprint.is_some();
        if let (Some(1), Some(document), false, false) =
            (fields.v, &fields.attestation, fields.header.is_some(), seed)
        {
            return match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, document) {
                Ok(bytes) => {
                    self.documents.insert(sha256(&bytes), bytes);
                }
                Err(e) => self.push_malformed(origin, &format!("attestation: not base64: {e}")),
            };
        }
        match (teelog, seed) {
            (true, false) => self.push_teelog(origin, line, fields),
            (false, true) => self.push_seed(origin, fields),
            _ => self.push_malformed(origin, "neither a teelog batch nor a SignedLogBatch"),
        }
    }

    fn push_teelog(&mut self, origin: Origin<'_>, line: &[u8], fields: LineFields<'_>) {
        let (Some(v), Some(header), Some(sig), Some(hints), Some(records)) =
            (fields.v, fields.header, fields.sig, fields.hints, fields.records)
        else {
            let needs = "a teelog batch needs \"v\", \"header\", \"sig\", \"hints\" and \"records\"";
            return self.push_malformed(origin, needs);
        };
        if v != crate::batch::FORMAT_VERSION {
            return self.push_malformed(origin, &format!("batch format version {v} is not supported"));
        }
        let batch = match ParsedBatch::from_parts(header, &sig, hints, records) {
            Ok(batch) => batch,
            Err(detail) => return self.push_malformed(origin, &detail),
        };
        let records_status = batch.records_status();
        // An intact copy is identified by its signed header and signature; a tampered one by all
        // of its bytes, so that each distinct tampering is reported once.
        let identity = match records_status {
            RecordsStatus::Intact => {
                let mut id = batch.header_hash.to_vec();
                id.extend_from_slice(batch.signature());
                sha256(&id)
            }
            RecordsStatus::Tampered { .. } => sha256(line),
        };
        if !self.seen.insert(identity) {
            self.duplicates += 1;
            return;
        }
        self.batches += 1;
        let candidate = Candidate {
            origin: origin.to_string(),
            header: batch.header.clone(),
            header_hash: batch.header_hash,
            records: records_status,
        };
        if candidate.header.attestation.is_some() && self.attestation.is_some() {
            self.attested.push((candidate, batch.signed_header()));
        } else {
            let signature = batch.signature_status(&self.options.trusted_keys);
            self.accept(candidate, signature, None);
        }
    }

    /// Records a checked batch: its findings, and if its signature holds, its place in the chain.
    /// `attested` is the platform and measurement the batch's attestation document vouches for.
    fn accept(&mut self, batch: Candidate, signature: SignatureStatus, attested: Option<(&str, &str)>) {
        let h = &batch.header;
        let key = (h.stream.clone(), h.epoch.clone());
        let finding = |kind, record_index, detail: String| {
            Finding::about(kind, h, record_index, &batch.origin, &detail)
        };
        if let SignatureStatus::Invalid(why) = signature {
            self.findings.push(finding(FindingKind::InvalidSignature, None, why));
            self.epochs.entry(key).or_default().untrusted.insert(h.seq);
            return;
        }
        if let RecordsStatus::Tampered { record_index, detail } = &batch.records {
            self.findings.push(finding(FindingKind::RecordTampered, *record_index, detail.clone()));
        } else {
            self.records += h.count;
        }
        let sealed_at = h.sealed_at_nanos().unwrap_or_default();
        let MeasurementCheck { platform, measurement, judgement, objection } =
            judge_measurement(&self.options, h, attested);
        if let Some(detail) = objection {
            self.findings.push(finding(FindingKind::UnexpectedMeasurement, None, detail));
        }
        // Only the timeline (with a policy) and the freshness check read these.
        if self.options.policy.is_some() || self.options.freshness.is_some() {
            self.timeline.push(TimelinePoint {
                stream: h.stream.clone(),
                epoch: h.epoch.clone(),
                seq: h.seq,
                sealed_at,
                platform,
                measurement,
                judgement,
            });
        }
        let slot =
            Slot { header_hash: batch.header_hash, prev: h.prev.clone(), origin: batch.origin.clone() };
        let slots = self.epochs.entry(key).or_default().slots.entry(h.seq).or_default();
        if !slots.iter().any(|s| s.header_hash == slot.header_hash) {
            slots.push(slot);
        }
    }

    /// Checks the batches bound to attestation documents, each document verified once.
    fn check_attested(&mut self) {
        let Some(verifier) = self.attestation.take() else { return };
        let mut verdicts: HashMap<String, Result<AttestedKey, String>> = HashMap::new();
        for (batch, signed) in std::mem::take(&mut self.attested) {
            let digest = batch.header.attestation.clone().unwrap_or_default();
            let verdict = verdicts.entry(digest.clone()).or_insert_with(|| {
                let document = <[u8; 32]>::try_from(hex::decode(&digest).unwrap_or_default())
                    .ok()
                    .and_then(|d| self.documents.get(&d));
                match document {
                    None => Err(format!("attestation document {digest} is not in the input")),
                    Some(bytes) => verifier.verify_document(bytes),
                }
            });
            match verdict {
                Err(why) => {
                    let h = &batch.header;
                    self.findings.push(Finding::about(
                        FindingKind::UntrustedAttestation,
                        h,
                        None,
                        &batch.origin,
                        why,
                    ));
                    let key = (h.stream.clone(), h.epoch.clone());
                    self.epochs.entry(key).or_default().untrusted.insert(h.seq);
                }
                Ok(attested) => {
                    let (platform, measurement) = (attested.platform.clone(), attested.measurement.clone());
                    let h = &batch.header;
                    let (signature, broken_link) = attested_signature(&signed, h, attested);
                    if signature == SignatureStatus::Valid {
                        if let Some(detail) = broken_link {
                            self.findings.push(Finding::about(
                                FindingKind::ChainBreak,
                                h,
                                None,
                                &batch.origin,
                                &detail,
                            ));
                        }
                        if platform == "dev" {
                            self.dev_attested += 1;
                        }
                    }
                    self.accept(batch, signature, Some((&platform, &measurement)));
                }
            }
        }
        self.attestation = Some(verifier);
    }

    fn push_seed(&mut self, origin: Origin<'_>, fields: LineFields<'_>) {
        let (Some(sequence), Some(payload), Some(sig), Some(thumbprint)) =
            (fields.seed_sequence, fields.seed_payload, fields.seed_signature, fields.seed_thumbprint)
        else {
            return self.push_malformed(
                origin,
                "a SignedLogBatch needs Sequence, PayloadBase64, SignatureBase64 and AttestationCertThumbprint",
            );
        };
        let checked =
            match check_seed_batch(sequence, &payload, &sig, &thumbprint, &self.options.trusted_keys) {
                Ok(checked) => checked,
                Err(detail) => return self.push_malformed(origin, &detail),
            };
        if !self.seen.insert(checked.identity) {
            self.duplicates += 1;
            return;
        }
        self.batches += 1;
        let key = (SEED_STREAM.to_string(), checked.thumbprint.clone());
        let finding = |kind, detail: String| Finding {
            kind,
            stream: Some(SEED_STREAM.to_string()),
            epoch: Some(checked.thumbprint.clone()),
            seq: Some(checked.sequence),
            record_index: None,
            detail: format!("{origin}: {detail}"),
        };
        let epoch = self.epochs.entry(key).or_default();
        epoch.seed = true;
        if let SignatureStatus::Invalid(why) = &checked.signature {
            self.findings.push(finding(FindingKind::InvalidSignature, why.clone()));
            epoch.untrusted.insert(checked.sequence);
            return;
        }
        if let RecordsStatus::Tampered { detail, .. } = &checked.records {
            self.findings.push(finding(FindingKind::RecordTampered, detail.clone()));
        } else {
            self.records += checked.record_count;
        }
        if let Some(expected) = &self.options.expect_measurement {
            if !checked.measurement.eq_ignore_ascii_case(expected) {
                let detail = format!("tee_measurement is {}, expected {expected}", checked.measurement);
                self.findings.push(finding(FindingKind::UnexpectedMeasurement, detail));
            }
        }
        let slot = Slot { header_hash: checked.payload_hash, prev: None, origin: origin.to_string() };
        let slots = epoch.slots.entry(checked.sequence).or_default();
        if !slots.iter().any(|s| s.header_hash == slot.header_hash) {
            slots.push(slot);
        }
    }

    /// Runs the chain checks and returns the report, findings ordered by stream, epoch, seq.
    pub fn finish(mut self) -> Report {
        self.check_attested();
        let mut by_stream: BTreeMap<&str, Vec<(&str, &EpochState)>> = BTreeMap::new();
        for ((stream, epoch), state) in &self.epochs {
            by_stream.entry(stream).or_default().push((epoch, state));
        }
        let mut chain_findings = Vec::new();
        for (stream, epochs) in by_stream {
            check_stream(stream, &epochs, &mut chain_findings);
        }
        if let Some(freshness) = self.options.freshness {
            chain_findings.extend(stale_streams(&self.timeline, freshness));
        }
        self.findings.extend(chain_findings);
        self.findings
            .sort_by(|a, b| (&a.stream, &a.epoch, a.seq, a.kind).cmp(&(&b.stream, &b.epoch, b.seq, b.kind)));
        Report {
            ok: self.findings.is_empty(),
            batches: self.batches,
            records: self.records,
            duplicates: self.duplicates,
            findings: self.findings,
            dev_attested: self.dev_attested,
            timeline: self.options.policy.is_some().then(|| build_timeline(&mut self.timeline)),
        }
    }
}

/// The measurement check of one validly signed batch.
pub(crate) struct MeasurementCheck {
    pub platform: String,
    pub measurement: String,
    pub judgement: Option<Judgement>,
    /// Why the measurement is not acceptable, if it is not.
    pub objection: Option<String>,
}

/// Judges the measurement of batch `h`: the one its attestation document vouches for
/// (`attested`: platform and measurement), else the one its header claims.
pub(crate) fn judge_measurement(
    options: &VerifyOptions,
    h: &Header,
    attested: Option<(&str, &str)>,
) -> MeasurementCheck {
    let claimed = h.measurement.as_deref().unwrap_or("(none)");
    let (platform, measurement) = attested.unwrap_or(("software", claimed));
    let sealed_at = h.sealed_at_nanos().unwrap_or_default();
    let judgement = options.policy.as_ref().map(|p| p.judge(platform, measurement, sealed_at));
    let objection = if measurement != claimed {
        Some(format!("the header claims measurement {claimed}, the attestation document {measurement}"))
    } else if let Some(expected) = options.expect_measurement.as_deref().filter(|e| *e != measurement) {
        Some(format!("signed by code measured {measurement}, expected {expected}"))
    } else {
        match &judgement {
            Some(Judgement::NotListed) => {
                Some(format!("measurement {measurement} ({platform}) is not in the policy"))
            }
            Some(Judgement::OutsideWindow { version, window }) => Some(format!(
                "measurement {measurement} ({platform}, {version}) is allowed {window}, not at {}",
                h.sealed_at
            )),
            _ => None,
        }
    };
    MeasurementCheck {
        platform: platform.to_string(),
        measurement: measurement.to_string(),
        judgement,
        objection,
    }
}

/// The signature of batch `h` under the key its verified attestation document binds, and, for
/// the first batch of an epoch, why its link contradicts the head the document attests.
pub(crate) fn attested_signature(
    signed: &SignedHeader,
    h: &Header,
    attested: &AttestedKey,
) -> (SignatureStatus, Option<String>) {
    let signature = match signed.verify_with(h, &attested.key) {
        SignatureStatus::Invalid(_) if attested.key.id_hex() != h.key_id => {
            SignatureStatus::Invalid(format!(
                "signed by key {}, but its attestation document binds key {}",
                h.key_id,
                attested.key.id_hex()
            ))
        }
        status => status,
    };
    let attested_head = attested.previous_head.as_deref().filter(|_| h.seq == 1);
    let broken_link = attested_head.filter(|head| h.prev.as_deref() != Some(*head)).map(|head| {
        format!(
            "the attestation document attests that this epoch continues from header {head}, but it links to {}",
            h.prev.as_deref().unwrap_or("nothing")
        )
    });
    (signature, broken_link)
}

/// A finding for each stream whose newest validly signed batch is older than allowed.
fn stale_streams(points: &[TimelinePoint], freshness: Freshness) -> Vec<Finding> {
    let mut newest: BTreeMap<&str, &TimelinePoint> = BTreeMap::new();
    for p in points {
        let entry = newest.entry(&p.stream).or_insert(p);
        if p.sealed_at > entry.sealed_at {
            *entry = p;
        }
    }
    let seconds = |ns: UnixNanos| ns / 1_000_000_000;
    newest
        .into_values()
        .filter(|p| freshness.now.saturating_sub(p.sealed_at) > freshness.max_silence)
        .map(|p| Finding {
            kind: FindingKind::StaleStream,
            stream: Some(p.stream.clone()),
            epoch: Some(p.epoch.clone()),
            seq: Some(p.seq),
            record_index: None,
            detail: format!(
                "the newest batch was sealed at {}, {} s before {}, longer than the {} s allowed: batches after it may have been cut off",
                format_rfc3339(p.sealed_at),
                seconds(freshness.now.saturating_sub(p.sealed_at)),
                format_rfc3339(freshness.now),
                seconds(freshness.max_silence)
            ),
        })
        .collect()
}

/// Runs of batches with one (platform, measurement), per stream in `sealed_at` order.
fn build_timeline(points: &mut [TimelinePoint]) -> Vec<TimelineEntry> {
    points.sort_by(|a, b| {
        (&a.stream, a.sealed_at, &a.epoch, a.seq).cmp(&(&b.stream, b.sealed_at, &b.epoch, b.seq))
    });
    let mut runs: Vec<TimelineEntry> = Vec::new();
    for p in points.iter() {
        let allowed = p.judgement.as_ref().is_none_or(Judgement::allowed);
        let at = format_rfc3339(p.sealed_at);
        let place = format!("{}:{}", p.epoch, p.seq);
        match runs.last_mut() {
            Some(run)
                if run.stream == p.stream
                    && run.platform == p.platform
                    && run.measurement == p.measurement =>
            {
                run.batches += 1;
                run.allowed &= allowed;
                run.to = at;
                run.last = place;
            }
            _ => runs.push(TimelineEntry {
                stream: p.stream.clone(),
                platform: p.platform.clone(),
                measurement: p.measurement.clone(),
                version: p.judgement.as_ref().and_then(|j| j.version().map(str::to_string)),
                allowed,
                batches: 1,
                from: at.clone(),
                to: at,
                first: place.clone(),
                last: place,
            }),
        }
    }
    runs
}

fn check_stream(stream: &str, epochs: &[(&str, &EpochState)], out: &mut Vec<Finding>) {
    let finding = |kind, epoch: &str, seq, detail: String| Finding {
        kind,
        stream: Some(stream.to_string()),
        epoch: Some(epoch.to_string()),
        seq: Some(seq),
        record_index: None,
        detail,
    };
    // Every validly signed header of the stream, by hash: the targets of epoch hand-over links.
    let mut index: HashMap<String, (&str, u64)> = HashMap::new();
    for (epoch, state) in epochs {
        for (seq, slots) in &state.slots {
            for slot in slots {
                index.insert(hex::encode(slot.header_hash), (epoch, *seq));
            }
        }
    }
    let mut genesis: Vec<&str> = Vec::new();
    let mut linked_to: HashMap<&str, &str> = HashMap::new();

    for (epoch, state) in epochs {
        // Equivocation: two different validly signed batches at one seq; report every one.
        for (seq, slots) in &state.slots {
            if slots.len() > 1 {
                let all: Vec<String> = slots
                    .iter()
                    .map(|s| format!("header {} at {}", hex::encode(s.header_hash), s.origin))
                    .collect();
                for slot in slots {
                    out.push(finding(
                        FindingKind::Equivocation,
                        epoch,
                        *seq,
                        format!(
                            "{}: {} different batches are signed for this seq: {}",
                            slot.origin,
                            slots.len(),
                            all.join("; ")
                        ),
                    ));
                }
            }
        }

        // Gaps: every seq from 1 to the highest one seen must be present.
        let highest = state.slots.keys().chain(&state.untrusted).max().copied().unwrap_or(0);
        let mut missing_from = None;
        for seq in 1..=highest.saturating_add(1) {
            let present = seq > highest || state.slots.contains_key(&seq) || state.untrusted.contains(&seq);
            match (present, missing_from) {
                (false, None) => missing_from = Some(seq),
                (true, Some(first)) => {
                    let range = if first == seq - 1 {
                        format!("batch {first} is")
                    } else {
                        format!("batches {first} to {} are", seq - 1)
                    };
                    out.push(finding(FindingKind::SequenceGap, epoch, first, format!("{range} missing")));
                    missing_from = None;
                }
                _ => {}
            }
            if seq > highest {
                break;
            }
        }
        if state.seed {
            continue;
        }

        // Links inside the epoch: seq n must name the header of seq n-1.
        for (seq, slots) in &state.slots {
            if *seq == 1 {
                continue;
            }
            let Some(previous) = state.slots.get(&(seq - 1)) else {
                continue;
            };
            for slot in slots {
                let linked = slot
                    .prev
                    .as_deref()
                    .is_some_and(|p| previous.iter().any(|s| hex::encode(s.header_hash) == p));
                if !linked {
                    out.push(finding(
                        FindingKind::ChainBreak,
                        epoch,
                        *seq,
                        format!(
                            "{}: prev is {}, but batch {} has header {}",
                            slot.origin,
                            slot.prev.as_deref().unwrap_or("null"),
                            seq - 1,
                            previous
                                .iter()
                                .map(|s| hex::encode(s.header_hash))
                                .collect::<Vec<_>>()
                                .join(" / ")
                        ),
                    ));
                }
            }
        }

        // Hand-over: seq 1 either starts the stream or names the previous epoch's last header.
        for slot in state.slots.get(&1).into_iter().flatten() {
            let Some(prev) = slot.prev.as_deref() else {
                genesis.push(epoch);
                continue;
            };
            let detail = match index.get(prev) {
                None => Some(format!(
                    "{}: this epoch starts after header {prev}, which is not in the input: the end of the previous epoch is missing",
                    slot.origin
                )),
                Some((target_epoch, _)) if target_epoch == epoch => {
                    Some(format!("{}: the first batch links into its own epoch", slot.origin))
                }
                Some((target_epoch, target_seq)) => {
                    let target_last = epochs
                        .iter()
                        .find(|(e, _)| e == target_epoch)
                        .and_then(|(_, s)| s.slots.keys().next_back().copied())
                        .unwrap_or(0);
                    if let Some(other) = linked_to.insert(prev, epoch) {
                        Some(format!("{}: epochs {other} and {epoch} both continue from header {prev}", slot.origin))
                    } else if target_last > *target_seq {
                        Some(format!(
                            "{}: this epoch continues from batch {target_seq} of epoch {target_epoch}, but that epoch goes on to batch {target_last}",
                            slot.origin
                        ))
                    } else {
                        None
                    }
                }
            };
            if let Some(detail) = detail {
                out.push(finding(FindingKind::ChainBreak, epoch, 1, detail));
            }
        }
    }
    if genesis.len() > 1 {
        for epoch in &genesis {
            out.push(finding(
                FindingKind::ChainBreak,
                epoch,
                1,
                format!(
                    "stream {stream:?} starts more than once (epochs {}): a restart did not link to the previous head",
                    genesis.join(", ")
                ),
            ));
        }
    }
}
