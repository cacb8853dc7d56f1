//! The gateway's verifier: batch lines are judged one at a time as they arrive, so that each can
//! be labelled valid or not before it is stored, and continuity is tracked per stream and epoch
//! with bounded memory. [`crate::Verifier`] stays the authority: it sees every batch at once, so
//! it can judge what this one can only suspect (an equivocation older than the recent history, a
//! gap that a late batch fills after all).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::batch::{Header, LineFields, ParsedBatch, RecordsStatus, SignatureStatus};
use crate::crypto::PublicKey;
use crate::merkle::{sha256, Digest};
use crate::timestamp::{format_rfc3339, UnixNanos};
use crate::verify::{
    attested_signature, backwards, backwards_across, check_alone, document_of, foreign_key, fork_at, goes_on,
    judge_measurement, key_in_another_instance, reused_key, time_objections, unlinked, AttestationVerifier,
    AttestedKey, BatchSignature, Candidate, DocumentError, Finding, FindingKind, InstanceRules, KnownKeys,
    Origin, PreparedBatch, VerifyOptions,
};

/// Header hashes remembered per epoch, to tell a resent batch from a second, different batch
/// signed for a recent seq.
const RECENT_PER_EPOCH: usize = 1024;
/// Gaps remembered per epoch, so that a batch arriving late is not reported again.
const GAPS_PER_EPOCH: usize = 256;
/// Attestation documents held that no validly signed batch has used yet (anyone can send one),
/// and their bytes; beyond either, the oldest is forgotten.
const MAX_UNUSED_DOCUMENTS: usize = 1024;
const MAX_UNUSED_DOCUMENT_BYTES: usize = 64 << 20;
/// Documents in use (a validly signed batch verified under them: one per signer start), per
/// stream and in total; beyond, the one whose batches are the oldest is forgotten, so that a
/// new epoch always finds room.
const DOCUMENTS_IN_USE_PER_STREAM: usize = EPOCHS_PER_STREAM;
const MAX_DOCUMENTS_IN_USE: usize = 4096;
/// Epochs remembered per stream (each restart of a signer starts one); the longest-silent one
/// is forgotten first.
const EPOCHS_PER_STREAM: usize = 64;
/// Keys other than its own remembered per epoch, so that each is reported once.
const MAX_FOREIGN_KEYS: usize = 8;

/// What one line turned out to be.
#[derive(Debug)]
pub enum Checked {
    /// An attestation document (docs/FORMAT.md §7a), kept for the batches that name it.
    Document {
        /// SHA-256 of the decoded document: what batches name it by.
        sha256: Digest,
    },
    /// A batch line, judged.
    Batch(BatchVerdict),
    /// Not a line the gateway can judge; stored anyway, flagged invalid.
    Malformed(Finding),
}

/// A line checked as far as it can be without the gate's state (parse, the records against the
/// Merkle root and hints, the layout, the signature under a trusted key), which a thread other
/// than the gate's can work out; [`Gate::admit`] judges the rest.
pub struct GatePrepared(GateStep);

enum GateStep {
    Malformed(String),
    Document { sha256: Digest, bytes: Vec<u8> },
    Batch(Box<PreparedBatch>),
}

/// Checks lines for one [`Gate`] without its state, on any thread ([`Gate::line_checker`]).
#[derive(Clone)]
pub struct GateChecker {
    trusted_keys: Arc<[PublicKey]>,
    attested: bool,
}

impl GateChecker {
    /// The part of `line`'s checks that needs no other line (see [`GatePrepared`]).
    pub fn prepare(&self, origin: Origin<'_>, line: &[u8]) -> GatePrepared {
        prepare(&self.trusted_keys, self.attested, origin, line)
    }
}

/// The checks of `line` that need no other line: with `trusted` keys, and `attested` when the
/// gate verifies attestation documents.
fn prepare(trusted: &[PublicKey], attested: bool, origin: Origin<'_>, line: &[u8]) -> GatePrepared {
    let fields = match LineFields::read(line) {
        Ok(fields) => fields,
        Err(e) => return GatePrepared(GateStep::Malformed(format!("not a batch line: {e}"))),
    };
    match document_of(&fields, line) {
        Some(Err(e)) => return GatePrepared(GateStep::Malformed(e)),
        Some(Ok(bytes)) => return GatePrepared(GateStep::Document { sha256: sha256(&bytes), bytes }),
        None => {}
    }
    let (Some(crate::batch::FORMAT_VERSION), Some(header), Some(sig), Some(hints), Some(records)) =
        (fields.v, fields.header, fields.sig, fields.hints, fields.records)
    else {
        let detail = "not a teelog batch line (v 1 with header, sig, hints and records)";
        return GatePrepared(GateStep::Malformed(detail.into()));
    };
    // The gate takes a batch's key from its document when it admits it: documents come and go.
    let none_known = KnownKeys::default();
    GatePrepared(match ParsedBatch::from_parts(header, sig, hints, records) {
        Ok(batch) => GateStep::Batch(Box::new(check_alone(
            batch,
            trusted,
            attested.then_some(&none_known),
            origin,
            line,
        ))),
        Err(e) => GateStep::Malformed(e.to_string()),
    })
}

/// The gateway's judgement of one batch line.
#[derive(Debug)]
pub struct BatchVerdict {
    /// The header's stream (as the line says, whether or not its signature holds).
    pub stream: String,
    /// The header's epoch.
    pub epoch: String,
    /// The header's seq.
    pub seq: u64,
    /// The header's record count.
    pub count: u64,
    /// The header's `sealed_at`, Unix nanoseconds.
    pub sealed_at: UnixNanos,
    /// The SHA-256 of the attestation document the batch names, if it names one.
    pub attestation: Option<Digest>,
    /// The batch is the first whose signature verifies under the document it names: the
    /// document is now in use, worth keeping across a restart.
    pub document_now_in_use: bool,
    /// Signed by a trusted (or attested) key, records intact, attestation trusted.
    pub signature_valid: bool,
    /// The same batch was seen just before (a resend): nothing new.
    pub duplicate: bool,
    /// What is wrong with it, or with the stream as far as it shows (gaps, forks, staleness).
    pub findings: Vec<Finding>,
}

/// One validly signed batch of an epoch, as remembered for the chain checks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    seq: u64,
    /// Header hash, hex.
    hash: String,
    prev: Option<String>,
    sealed_at: UnixNanos,
}

/// Where one epoch of a stream stands, as far as the gateway has seen it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct EpochTrack {
    last_seq: u64,
    /// The header hash (hex) of batch `last_seq`.
    head: String,
    /// The newest batches (and every second batch for a seq among them), oldest first; not
    /// saved, since after a restart only duplicates become harder to tell from equivocation.
    #[serde(skip)]
    recent: VecDeque<Seen>,
    /// Seq ranges (inclusive) reported missing that have not arrived yet.
    gaps: VecDeque<(u64, u64)>,
    /// `sealed_at` of batch `last_seq`.
    #[serde(default)]
    sealed_at: UnixNanos,
    /// The key of the first batch seen: an epoch is one run of one key.
    #[serde(default)]
    key_id: String,
    /// Other keys seen signing in it (reported once each).
    #[serde(default)]
    foreign_keys: Vec<String>,
    /// Its key is bound by an attestation document.
    #[serde(default)]
    attested: bool,
    /// The header (hex) its first batch continues from, once that batch is seen.
    #[serde(default)]
    starts_after: Option<String>,
    /// The epoch that continues from its head and has not been reported yet: this epoch must end
    /// there, so a later batch of it breaks that hand-over.
    #[serde(default)]
    continued_by: Option<String>,
    /// Its newest batch that passed the whole verdict, the only kind of head handed to signers.
    #[serde(default)]
    vouched: Vouched,
    /// Whether its first batch passed the whole verdict: only then does the epoch it continues
    /// from stop being a tip (state saved before this was kept had only such batches as heads).
    #[serde(default = "yes")]
    start_vouched: bool,
}

fn yes() -> bool {
    true
}

/// An epoch's newest batch that passed the whole verdict ([`Gate::tips`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
enum Vouched {
    /// Its head: what state saved before vouching was kept means (every head counted), and what
    /// a new epoch's track holds until its first batch is judged.
    #[default]
    Head,
    /// None of its batches.
    Nothing,
    /// This one.
    At { seq: u64, hash: String, sealed_at: UnixNanos },
}

impl EpochTrack {
    /// Batch `seen` is the newest of the epoch.
    fn advance(&mut self, seen: Seen) {
        self.last_seq = seen.seq;
        self.sealed_at = seen.sealed_at;
        self.head = seen.hash.clone();
        self.remember(seen);
    }

    fn remember(&mut self, seen: Seen) {
        self.recent.push_back(seen);
        if self.recent.len() > RECENT_PER_EPOCH {
            self.recent.pop_front();
        }
    }

    /// The remembered batches at `seq`.
    fn at(&self, seq: u64) -> impl Iterator<Item = &Seen> {
        self.recent.iter().filter(move |s| s.seq == seq)
    }

    /// Takes `seq` out of the open gaps; false if it was not missing.
    fn fill(&mut self, seq: u64) -> bool {
        let Some(i) = self.gaps.iter().position(|&(from, to)| (from..=to).contains(&seq)) else {
            return false;
        };
        let (from, to) = self.gaps[i];
        self.gaps.remove(i);
        if seq < to {
            self.gaps.insert(i, (seq + 1, to));
        }
        if from < seq {
            self.gaps.insert(i, (from, seq - 1));
        }
        true
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct StreamTrack {
    epochs: BTreeMap<String, EpochTrack>,
    /// The epochs that start an instance of the stream (their first batch links to nothing),
    /// oldest first; at most [`EPOCHS_PER_STREAM`].
    #[serde(default, alias = "genesis", deserialize_with = "one_or_many")]
    instances: Vec<String>,
    /// Instances reported as not allowed (not pinned, or more than allowed).
    #[serde(default)]
    unexpected_reported: Vec<String>,
    /// Instances reported because the key that starts them signs outside them.
    #[serde(default)]
    key_reported: Vec<String>,
    /// Instances (named as [`StreamTrack::roots`] names them) reported stale and silent since.
    #[serde(default)]
    stale_instances: Vec<String>,
}

/// The instances of a stream as saved: a list, or the one genesis epoch (or null) that state saved
/// before instances were followed holds.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(Option<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(list) => list,
        OneOrMany::One(one) => one.into_iter().collect(),
    })
}

/// The newest batch of an epoch that no other epoch continues from (see [`Gate::tips`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tip {
    /// The epoch.
    pub epoch: String,
    /// Its newest seq.
    pub seq: u64,
    /// That batch's header hash, hex.
    pub hash: String,
    /// That batch's `sealed_at`.
    pub sealed_at: UnixNanos,
}

/// The gateway's continuity state; saved by the gateway so that a restart continues where it was.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Continuity {
    streams: BTreeMap<String, StreamTrack>,
}

/// Judges lines one at a time, with memory bounded per stream and epoch; see the module's
/// documentation for what it can and cannot tell.
pub struct Gate {
    options: VerifyOptions,
    attestation: Option<Box<dyn AttestationVerifier + Send + Sync>>,
    documents: Documents,
    continuity: Continuity,
}

/// The attestation documents the gate holds, by SHA-256. What unauthenticated senders can fill
/// (documents no valid batch has used) is kept apart from the documents genuine epochs use, so
/// that a flood of the first can never push out the second or refuse a new epoch.
#[derive(Default)]
struct Documents {
    by_digest: HashMap<Digest, Document>,
    /// Unused documents, oldest first, and their bytes.
    unused: VecDeque<Digest>,
    unused_bytes: usize,
    in_use: usize,
}

struct Document {
    bytes: Vec<u8>,
    verdict: Option<Result<AttestedKey, DocumentError>>,
    /// Set once a validly signed batch verifies under it.
    used: Option<DocumentUse>,
}

/// Which stream uses a document (unknown for one restored after a restart, until a batch uses
/// it), and the newest `sealed_at` among its batches.
struct DocumentUse {
    stream: Option<String>,
    sealed_at: UnixNanos,
}

impl Documents {
    /// Holds `bytes` as an unused document, forgetting the oldest unused ones beyond the bounds.
    fn add(&mut self, digest: Digest, bytes: Vec<u8>) {
        if self.by_digest.contains_key(&digest) {
            return;
        }
        self.unused_bytes += bytes.len();
        self.unused.push_back(digest);
        self.by_digest.insert(digest, Document { bytes, verdict: None, used: None });
        while self.unused.len() > MAX_UNUSED_DOCUMENTS || self.unused_bytes > MAX_UNUSED_DOCUMENT_BYTES {
            let Some(oldest) = self.unused.pop_front() else { break };
            if let Some(gone) = self.by_digest.remove(&oldest) {
                self.unused_bytes -= gone.bytes.len();
            }
        }
    }

    /// Marks `digest` in use by a validly signed batch of `stream` sealed at `sealed_at`; true
    /// if it was not in use before. Beyond the bounds, the stalest other document in use (of
    /// the stream, then of all) is forgotten.
    fn use_by(&mut self, digest: Digest, stream: Option<&str>, sealed_at: UnixNanos) -> bool {
        let Some(document) = self.by_digest.get_mut(&digest) else { return false };
        if let Some(used) = &mut document.used {
            used.sealed_at = used.sealed_at.max(sealed_at);
            if used.stream.is_none() {
                used.stream = stream.map(str::to_string);
            }
            return false;
        }
        document.used = Some(DocumentUse { stream: stream.map(str::to_string), sealed_at });
        let size = document.bytes.len();
        if let Some(i) = self.unused.iter().position(|d| *d == digest) {
            self.unused.remove(i);
            self.unused_bytes -= size;
        }
        self.in_use += 1;
        let of_stream = |u: &DocumentUse| stream.is_some() && u.stream.as_deref() == stream;
        if stream.is_some() && self.count_in_use(of_stream) > DOCUMENTS_IN_USE_PER_STREAM {
            self.forget_stalest_in_use(digest, of_stream);
        }
        if self.in_use > MAX_DOCUMENTS_IN_USE {
            self.forget_stalest_in_use(digest, |_| true);
        }
        true
    }

    fn count_in_use(&self, filter: impl Fn(&DocumentUse) -> bool) -> usize {
        self.by_digest.values().filter(|d| d.used.as_ref().is_some_and(&filter)).count()
    }

    fn forget_stalest_in_use(&mut self, keep: Digest, filter: impl Fn(&DocumentUse) -> bool) {
        let stalest = self
            .by_digest
            .iter()
            .filter(|(digest, _)| **digest != keep)
            .filter_map(|(digest, d)| Some((digest, d.used.as_ref().filter(|u| filter(u))?.sealed_at)))
            .min_by_key(|(_, sealed_at)| *sealed_at)
            .map(|(digest, _)| *digest);
        if let Some(digest) = stalest {
            self.by_digest.remove(&digest);
            self.in_use -= 1;
        }
    }
}

impl Gate {
    /// A gate judging with `options`, continuing from `continuity` (the state a previous run
    /// saved, or the default for a first run).
    pub fn new(options: VerifyOptions, mut continuity: Continuity) -> Self {
        continuity.settle_vouched();
        Self { options, attestation: None, documents: Documents::default(), continuity }
    }

    /// The same gate, verifying attestation documents with `verifier`; without one, attested
    /// batches are judged by the trusted keys alone.
    pub fn with_attestation(mut self, verifier: Box<dyn AttestationVerifier + Send + Sync>) -> Self {
        self.attestation = Some(verifier);
        self
    }

    /// Where each stream stands now: what the gateway saves, to continue after a restart.
    pub fn continuity(&self) -> &Continuity {
        &self.continuity
    }

    /// The newest batch of every epoch remembered, per stream: its validly signed seq and
    /// header hash — what a gateway checkpoint (docs/FORMAT.md §17) lists. Unlike
    /// [`Gate::tips`], epochs that others continue from are listed too.
    pub fn epoch_heads(&self) -> BTreeMap<String, Vec<crate::checkpoint::Tip>> {
        let tips = |stream: &StreamTrack| {
            stream
                .epochs
                .iter()
                .filter(|(_, e)| e.last_seq > 0)
                .map(|(epoch, e)| crate::checkpoint::Tip {
                    epoch: epoch.clone(),
                    head: e.head.clone(),
                    seq: e.last_seq,
                })
                .collect()
        };
        self.continuity.streams.iter().map(|(name, stream)| (name.clone(), tips(stream))).collect()
    }

    /// Whether a validly signed batch of `stream` has been seen: only those streams' names are
    /// known not to come from whoever can reach the gateway.
    pub fn knows_stream(&self, stream: &str) -> bool {
        self.continuity.streams.contains_key(stream)
    }

    /// The bytes of a document held, by SHA-256.
    pub fn document(&self, sha256: &Digest) -> Option<&[u8]> {
        self.documents.by_digest.get(sha256).map(|d| d.bytes.as_slice())
    }

    /// Takes back the attestation line of a document that was in use before a restart (the
    /// gateway saves those), so that the epochs using it go on verifying whatever unused
    /// documents arrive meanwhile. None if `line` is not an attestation line.
    pub fn restore_document(&mut self, line: &[u8]) -> Option<Digest> {
        let fields = LineFields::read(line).ok()?;
        let bytes = document_of(&fields, line)?.ok()?;
        let digest = sha256(&bytes);
        self.documents.add(digest, bytes);
        // Its stream is known again once a batch uses it; until then only the total bounds it.
        self.documents.use_by(digest, None, 0);
        Some(digest)
    }

    /// The heads of `stream`'s epochs that no other epoch it knows continues from (its chain
    /// tips), newest `sealed_at` first: one for a stream with one signer and no fork, none for a
    /// stream no batch that passed has named. A head is an epoch's newest batch that passed the
    /// whole verdict (signature, records, attestation, measurement, time, chain and instance
    /// rules), and only an epoch whose first batch passed it takes the tip from the epoch it
    /// continues: a batch the gateway itself reports, signed by any key it trusts, never becomes
    /// what a signer links to. With `instance`, only the tips of that instance (docs/FORMAT.md
    /// §5.5: the chain from that genesis epoch).
    pub fn tips(&self, stream: &str, instance: Option<&str>) -> Vec<Tip> {
        let Some(track) = self.continuity.streams.get(stream) else { return Vec::new() };
        let continued: HashSet<&str> = track
            .epochs
            .values()
            .filter(|e| e.start_vouched)
            .filter_map(|e| e.starts_after.as_deref())
            .collect();
        let roots = instance.map(|_| track.roots());
        let in_instance = |epoch: &str| match (instance, &roots) {
            (Some(instance), Some(roots)) => roots.get(epoch).is_some_and(|root| root == instance),
            _ => true,
        };
        let mut tips: Vec<Tip> = track
            .epochs
            .iter()
            .filter(|(id, _)| in_instance(id))
            .filter_map(|(epoch, e)| {
                let (seq, hash, sealed_at) = match &e.vouched {
                    Vouched::Head if e.last_seq > 0 => (e.last_seq, &e.head, e.sealed_at),
                    Vouched::At { seq, hash, sealed_at } => (*seq, hash, *sealed_at),
                    Vouched::Head | Vouched::Nothing => return None,
                };
                let tip = Tip { epoch: epoch.clone(), seq, hash: hash.clone(), sealed_at };
                (!continued.contains(hash.as_str())).then_some(tip)
            })
            .collect();
        tips.sort_by(|a, b| (b.sealed_at, &b.epoch).cmp(&(a.sealed_at, &a.epoch)));
        tips
    }

    /// Judges one line (without its newline) that arrived at `now`: a batch sealed too far after
    /// `now` is a `time_anomaly`.
    pub fn check_line(&mut self, origin: Origin<'_>, line: &[u8], now: UnixNanos) -> Checked {
        let prepared = prepare(&self.options.trusted_keys, self.attestation.is_some(), origin, line);
        self.admit(origin, prepared, now)
    }

    /// What checks lines for this gate without its state, on any thread: see [`GatePrepared`].
    pub fn line_checker(&self) -> GateChecker {
        GateChecker {
            trusted_keys: self.options.trusted_keys.clone().into(),
            attested: self.attestation.is_some(),
        }
    }

    /// Judges a line that [`GateChecker::prepare`] (of this gate's
    /// [`line_checker`](Self::line_checker)) made `prepared` of, given the same `origin`; as
    /// [`check_line`](Self::check_line) judges it, when lines are admitted in the order they
    /// arrived.
    pub fn admit(&mut self, origin: Origin<'_>, prepared: GatePrepared, now: UnixNanos) -> Checked {
        match prepared.0 {
            GateStep::Malformed(detail) => Checked::Malformed(Finding::malformed(origin, &detail)),
            GateStep::Document { sha256, bytes } => {
                self.documents.add(sha256, bytes);
                Checked::Document { sha256 }
            }
            GateStep::Batch(batch) => Checked::Batch(self.check_batch(*batch, now)),
        }
    }

    fn check_batch(&mut self, batch: PreparedBatch, now: UnixNanos) -> BatchVerdict {
        let PreparedBatch { candidate, signature } = batch;
        let Candidate { origin, header, header_hash, records, unsigned, .. } = candidate;
        let h = &header;
        let mut findings = Vec::new();
        let mut finding = |kind, record_index, detail: &str| {
            findings.push(Finding::about(kind, h, record_index, &origin, detail))
        };
        let attestation =
            h.attestation.as_deref().and_then(|d| <[u8; 32]>::try_from(hex::decode(d).ok()?).ok());
        let (signature, attested) = match (signature, &h.attestation, &self.attestation) {
            (BatchSignature::Checked(status), _, _) => (Some(status), None),
            (BatchSignature::Attested { signed, .. }, Some(named), Some(verifier)) => {
                match attestation.and_then(|d| self.documents.by_digest.get_mut(&d)) {
                    None => {
                        let why =
                            format!("attestation document {named} has not been received before this batch");
                        finding(FindingKind::UntrustedAttestation, None, &why);
                        (None, None)
                    }
                    Some(document) => {
                        let verdict =
                            document.verdict.get_or_insert_with(|| verifier.verify_document(&document.bytes));
                        match verdict {
                            Err(why) => {
                                finding(FindingKind::UntrustedAttestation, None, &why.to_string());
                                (None, None)
                            }
                            Ok(key) => {
                                let (status, broken_link) = attested_signature(&signed, h, key);
                                if let (SignatureStatus::Valid, Some(detail)) = (&status, broken_link) {
                                    finding(FindingKind::ChainBreak, None, &detail);
                                }
                                (Some(status), Some(key.clone()))
                            }
                        }
                    }
                }
            }
            // Prepared for a gate with an attestation verifier by one without: not this gate's.
            (BatchSignature::Attested { .. }, _, _) => {
                finding(FindingKind::UntrustedAttestation, None, "no attestation verifier");
                (None, None)
            }
        };
        let mut valid = false;
        let mut document_now_in_use = false;
        match &signature {
            None => {}
            Some(SignatureStatus::Invalid(why)) => finding(FindingKind::InvalidSignature, None, why),
            Some(SignatureStatus::Valid) => {
                valid = true;
                let sealed_at = h.sealed_at_nanos().unwrap_or_default();
                if let (Some(digest), Some(_)) = (attestation, &attested) {
                    document_now_in_use = self.documents.use_by(digest, Some(&h.stream), sealed_at);
                }
                if let RecordsStatus::Tampered { record_index, detail } = records {
                    finding(FindingKind::RecordTampered, record_index, &detail);
                    valid = false;
                }
                for problem in &unsigned {
                    finding(FindingKind::UnsignedContent, None, problem);
                    valid = false;
                }
                for detail in time_objections(&self.options, Some(now), h, attested.as_ref()) {
                    finding(FindingKind::TimeAnomaly, None, &detail);
                }
                if let Some(detail) = judge_measurement(&self.options, h, attested.as_ref()).objection {
                    finding(FindingKind::UnexpectedMeasurement, None, &detail);
                }
            }
        }
        // Only a signed header says where a batch belongs in the chain.
        let duplicate = match &signature {
            Some(SignatureStatus::Valid) => {
                let arrival =
                    Arrival { header: h, hash: hex::encode(header_hash), attested: attested.is_some() };
                let judged = findings.len();
                let duplicate =
                    self.continuity.follow(&arrival, &self.options.instances, &origin, &mut findings);
                // A gap before it says batches are missing here, not that this one is wrong; a
                // fork stays a tip beside the other branch, so that no signer picks one of the
                // two by the order they arrived in.
                let about_it = |f: &&Finding| {
                    f.epoch.as_deref() == Some(h.epoch.as_str()) && f.seq.is_none_or(|s| s == h.seq)
                };
                let objected =
                    findings[..judged].iter().filter(about_it).any(|f| f.kind != FindingKind::SequenceGap)
                        || findings[judged..]
                            .iter()
                            .filter(about_it)
                            .any(|f| !matches!(f.kind, FindingKind::SequenceGap | FindingKind::ChainBreak));
                if !duplicate {
                    self.continuity.vouch(&arrival, valid && !objected);
                }
                duplicate
            }
            _ => false,
        };
        BatchVerdict {
            stream: h.stream.clone(),
            epoch: h.epoch.clone(),
            seq: h.seq,
            count: h.count,
            sealed_at: h.sealed_at_nanos().unwrap_or_default(),
            attestation,
            document_now_in_use,
            signature_valid: valid,
            duplicate,
            findings,
        }
    }

    /// A `stale_stream` finding for each instance of a stream (docs/FORMAT.md §5.5) newly silent
    /// for longer than `max_silence` at `now`: another instance going on does not show that this
    /// one's tail is all there. An instance is reported again only after it has been heard from
    /// since.
    pub fn stale_streams(&mut self, now: UnixNanos, max_silence: UnixNanos) -> Vec<Finding> {
        let mut out = Vec::new();
        for (name, track) in &mut self.continuity.streams {
            // Per instance, its newest batch: (sealed_at, epoch, seq).
            let mut newest: BTreeMap<String, (UnixNanos, &String, u64)> = BTreeMap::new();
            let roots = track.roots();
            for (id, epoch) in &track.epochs {
                let candidate = (epoch.sealed_at, id, epoch.last_seq);
                let root = roots.get(id.as_str()).cloned().unwrap_or_else(|| id.clone());
                let entry = newest.entry(root).or_insert(candidate);
                if candidate.0 > entry.0 {
                    *entry = candidate;
                }
            }
            let silent = |sealed_at: UnixNanos| now.saturating_sub(sealed_at);
            track.stale_instances.retain(|root| newest.get(root).is_some_and(|n| silent(n.0) > max_silence));
            for (root, (sealed_at, epoch, seq)) in &newest {
                if silent(*sealed_at) <= max_silence || track.stale_instances.contains(root) {
                    continue;
                }
                track.stale_instances.push(root.clone());
                out.push(Finding {
                    kind: FindingKind::StaleStream,
                    stream: Some(name.clone()),
                    epoch: Some(epoch.to_string()),
                    seq: Some(*seq),
                    record_index: None,
                    detail: format!(
                        "no batch of the instance from epoch {root} since the one sealed at {}, {} s before {}: the shipper may be cut off",
                        format_rfc3339(*sealed_at),
                        silent(*sealed_at) / 1_000_000_000,
                        format_rfc3339(now)
                    ),
                });
            }
        }
        out
    }
}

/// A validly signed batch as the chain rules need it.
struct Arrival<'a> {
    header: &'a Header,
    /// Header hash, hex.
    hash: String,
    /// Its key is bound by an attestation document.
    attested: bool,
}

impl Continuity {
    /// Makes every `Vouched::Head` of saved state explicit, once, before any batch moves a head:
    /// after that, and after [`vouch`](Self::vouch), `Head` means only "a new epoch's track".
    fn settle_vouched(&mut self) {
        for epoch in self.streams.values_mut().flat_map(|s| s.epochs.values_mut()) {
            if epoch.vouched == Vouched::Head {
                epoch.vouched = match epoch.last_seq {
                    0 => Vouched::Nothing,
                    seq => Vouched::At { seq, hash: epoch.head.clone(), sealed_at: epoch.sealed_at },
                };
            }
        }
    }

    /// Records whether a validly signed batch that [`follow`](Self::follow) took in passed the
    /// whole verdict (`passed`), for [`Gate::tips`].
    fn vouch(&mut self, batch: &Arrival<'_>, passed: bool) {
        let h = batch.header;
        let Some(stream) = self.streams.get_mut(&h.stream) else { return };
        let Some(unplaced) = stream.epochs.get(&h.epoch).map(|e| e.gaps.iter().any(|&(from, _)| from == 1))
        else {
            return;
        };
        // An epoch whose beginning this gateway has not seen, in a stream with a head already,
        // cannot be placed in its chain: a genuine old batch replayed (of an epoch from before
        // the gateway, or one it has forgotten) must not become a second head beside the real one.
        // (Only then are the stream's other epochs looked at.)
        let another_head = || {
            stream.epochs.iter().any(|(id, e)| {
                *id != h.epoch
                    && match &e.vouched {
                        Vouched::At { .. } => true,
                        Vouched::Head => e.last_seq > 0,
                        Vouched::Nothing => false,
                    }
            })
        };
        let passed = passed && !(unplaced && another_head());
        let Some(epoch) = stream.epochs.get_mut(&h.epoch) else { return };
        if h.seq == 1 {
            epoch.start_vouched = passed;
        }
        // Only the epoch's head itself: a batch below it that arrived late says nothing of the
        // batches after it.
        let is_head = h.seq == epoch.last_seq && epoch.head == batch.hash;
        if passed && is_head {
            let sealed_at = h.sealed_at_nanos().unwrap_or_default();
            epoch.vouched = Vouched::At { seq: h.seq, hash: batch.hash.clone(), sealed_at };
        } else if epoch.vouched == Vouched::Head {
            epoch.vouched = Vouched::Nothing;
        }
    }

    /// Takes the validly signed batch `batch` into the chain state; chain findings go to `out`.
    /// True if it is a resend of a batch seen recently. The rules are the offline verifier's
    /// (docs/FORMAT.md §8), judged in arrival order with bounded memory (§15).
    fn follow(
        &mut self,
        batch: &Arrival<'_>,
        rules: &InstanceRules,
        origin: &str,
        out: &mut Vec<Finding>,
    ) -> bool {
        let h = batch.header;
        // An epoch that continues from this batch arrived before it: the key rule over the
        // epochs after it can only now see the whole line of keys.
        let awaited = self.streams.get(&h.stream).is_some_and(|stream| {
            stream.epochs.values().any(|e| e.starts_after.as_deref() == Some(batch.hash.as_str()))
        });
        // The batch may place an epoch in an instance: a new epoch, an epoch's first batch, or
        // the batch an epoch that arrived before it continues from.
        let places =
            h.seq == 1 || self.streams.get(&h.stream).is_none_or(|s| !s.epochs.contains_key(&h.epoch));
        let duplicate = self.take_in(batch, rules, origin, out);
        let chain_break = |epoch: String, why: String| Finding {
            kind: FindingKind::ChainBreak,
            stream: Some(h.stream.clone()),
            epoch: Some(epoch),
            seq: Some(1),
            record_index: None,
            detail: format!("{origin}: {why}"),
        };
        if let Some(stream) = self.streams.get(&h.stream).filter(|_| awaited && !duplicate) {
            out.extend(stream.recheck_descendants(&h.epoch).into_iter().map(|(d, why)| chain_break(d, why)));
        }
        if let Some(stream) = self.streams.get_mut(&h.stream).filter(|_| (places || awaited) && !duplicate) {
            out.extend(stream.instance_keys().into_iter().map(|(g, why)| chain_break(g, why)));
        }
        duplicate
    }

    /// [`follow`](Self::follow) but for the epochs before that arrived late.
    fn take_in(
        &mut self,
        batch: &Arrival<'_>,
        rules: &InstanceRules,
        origin: &str,
        out: &mut Vec<Finding>,
    ) -> bool {
        let h = batch.header;
        let mut finding = |kind, epoch: &str, seq, detail: String| {
            out.push(Finding {
                kind,
                stream: Some(h.stream.clone()),
                epoch: Some(epoch.to_string()),
                seq: Some(seq),
                record_index: None,
                detail: format!("{origin}: {detail}"),
            })
        };
        let seen = Seen {
            seq: h.seq,
            hash: batch.hash.clone(),
            prev: h.prev.clone(),
            sealed_at: h.sealed_at_nanos().unwrap_or_default(),
        };
        let known_stream = self.streams.contains_key(&h.stream);
        let stream = self.streams.entry(h.stream.clone()).or_default();
        // The first batch of an epoch (new here, or late): where the epoch comes from.
        let first_of_epoch = h.seq == 1
            && stream.epochs.get(&h.epoch).is_none_or(|e| e.gaps.iter().any(|&(from, _)| from == 1));
        let mut predecessor = None;
        if first_of_epoch {
            let problems;
            (predecessor, problems) = start(stream, known_stream, &seen, batch, rules);
            for (kind, epoch, detail) in problems {
                finding(kind, &epoch, 1, detail);
            }
        }
        let Some(epoch) = stream.epochs.get_mut(&h.epoch) else {
            // The first batch of an epoch this gateway sees.
            let mut track = EpochTrack {
                key_id: h.key_id.clone(),
                attested: batch.attested,
                starts_after: h.prev.clone().filter(|_| first_of_epoch),
                ..EpochTrack::default()
            };
            if h.seq > 1 && known_stream {
                finding(
                    FindingKind::SequenceGap,
                    &h.epoch,
                    1,
                    format!(
                        "the epoch's batches 1 to {} are missing: not received before seq {}",
                        h.seq - 1,
                        h.seq
                    ),
                );
                track.gaps.push_back((1, h.seq - 1));
            }
            track.advance(seen);
            stream.epochs.insert(h.epoch.clone(), track);
            stream.hand_over(predecessor, &h.epoch);
            return false;
        };
        if h.key_id != epoch.key_id && !epoch.foreign_keys.contains(&h.key_id) {
            finding(FindingKind::ChainBreak, &h.epoch, h.seq, foreign_key(&epoch.key_id, &h.key_id));
            if epoch.foreign_keys.len() < MAX_FOREIGN_KEYS {
                epoch.foreign_keys.push(h.key_id.clone());
            }
        }
        if h.seq <= epoch.last_seq {
            let filled = epoch.fill(h.seq);
            if !filled {
                let earlier: Vec<&Seen> = epoch.at(h.seq).collect();
                if earlier.is_empty() || earlier.iter().any(|s| s.hash == seen.hash) {
                    // A resend, or older than the recent history (only a full verification can
                    // tell which).
                    return true;
                }
                let others: Vec<&str> = earlier.iter().map(|s| s.hash.as_str()).collect();
                let detail = format!(
                    "header {} differs from header {}, signed earlier for the same seq",
                    seen.hash,
                    others.join(" / ")
                );
                finding(FindingKind::Equivocation, &h.epoch, h.seq, detail);
            }
            // Late or forked, it must fit between its neighbours like any batch; remembered, so
            // that a batch continuing it is judged against it too.
            for (kind, at, detail) in link_problems(epoch, &seen) {
                finding(kind, &h.epoch, at, detail);
            }
            epoch.remember(seen);
            if filled && first_of_epoch {
                epoch.starts_after.clone_from(&h.prev);
                stream.hand_over(predecessor, &h.epoch);
                for (descendant, why) in stream.recheck_descendants(&h.epoch) {
                    finding(FindingKind::ChainBreak, &descendant, 1, why);
                }
            }
            return false;
        }
        let expected = epoch.last_seq + 1;
        if h.seq > expected {
            let range = if h.seq - 1 == expected {
                format!("batch {expected} is")
            } else {
                format!("batches {expected} to {} are", h.seq - 1)
            };
            finding(
                FindingKind::SequenceGap,
                &h.epoch,
                expected,
                format!("{range} missing: not received before seq {}", h.seq),
            );
            epoch.gaps.push_back((expected, h.seq - 1));
            if epoch.gaps.len() > GAPS_PER_EPOCH {
                epoch.gaps.pop_front();
            }
        } else {
            for (kind, at, detail) in link_problems(epoch, &seen) {
                finding(kind, &h.epoch, at, detail);
            }
        }
        if let Some(successor) = epoch.continued_by.take() {
            finding(
                FindingKind::ChainBreak,
                &successor,
                1,
                format!("epoch {successor} {}", goes_on(epoch.last_seq, &h.epoch, h.seq)),
            );
        }
        epoch.advance(seen);
        false
    }
}

impl StreamTrack {
    /// For each epoch, the epoch its instance starts from, as far as the links remembered show:
    /// its first link followed back to an epoch that links to nothing known. Each epoch's
    /// predecessor is looked up once, so the cost stays that of one lookup per epoch.
    fn roots(&self) -> BTreeMap<&str, String> {
        let predecessor: HashMap<&str, &str> = self
            .epochs
            .iter()
            .filter_map(|(id, e)| {
                let (before, _) = holder(self, e.starts_after.as_deref()?)?;
                (before != id).then_some((id.as_str(), before.as_str()))
            })
            .collect();
        let root = |epoch: &str| {
            let mut current = epoch;
            // Each step goes to an earlier epoch; a cycle (only a forgery could make one) ends.
            for _ in 0..EPOCHS_PER_STREAM {
                match predecessor.get(current) {
                    Some(before) => current = before,
                    None => break,
                }
            }
            current.to_string()
        };
        self.epochs.keys().map(|id| (id.as_str(), root(id))).collect()
    }

    /// The instances not reported yet whose key signs outside them (see
    /// [`key_in_another_instance`]): (genesis epoch, why) for each.
    fn instance_keys(&mut self) -> Vec<(String, String)> {
        let root_of = self.roots();
        let roots: Vec<(&str, &str, &str)> = self
            .epochs
            .iter()
            .filter_map(|(id, e)| Some((id.as_str(), e.key_id.as_str(), root_of.get(id.as_str())?.as_str())))
            .collect();
        let instance = |root: &str| self.instances.iter().any(|g| g == root);
        let found: Vec<(String, String)> = self
            .instances
            .iter()
            .filter(|g| !self.key_reported.contains(g))
            .filter_map(|g| {
                let key = self.epochs.get(g)?.key_id.as_str();
                let others = roots.iter().map(|(e, k, r)| (*e, *k, instance(r).then_some(*r)));
                let why = key_in_another_instance(g, key, others)?;
                Some((g.clone(), why))
            })
            .collect();
        self.key_reported.extend(found.iter().map(|(g, _)| g.clone()));
        found
    }

    /// Epoch `epoch` starts an instance: the findings (kind, epoch, detail) for the instances
    /// `rules` do not allow, each reported once.
    fn new_instance(
        &mut self,
        stream: &str,
        epoch: &str,
        rules: &InstanceRules,
    ) -> Vec<(FindingKind, String, String)> {
        if !self.instances.iter().any(|g| g == epoch) {
            self.instances.push(epoch.to_string());
        }
        if self.instances.len() > EPOCHS_PER_STREAM {
            let gone = self.instances.remove(0);
            self.unexpected_reported.retain(|g| *g != gone);
            self.key_reported.retain(|g| *g != gone);
        }
        let instances: Vec<&str> = self.instances.iter().map(String::as_str).collect();
        let problems: Vec<(FindingKind, String, String)> = rules
            .unexpected(stream, &instances)
            .into_iter()
            .filter(|(g, _)| !self.unexpected_reported.iter().any(|r| r == g))
            .map(|(g, why)| (FindingKind::UnexpectedInstance, g.to_string(), why))
            .collect();
        self.unexpected_reported.extend(problems.iter().map(|(_, g, _)| g.clone()));
        problems
    }

    /// The key rule across epochs for an epoch signed by `key` (bound by an attestation document
    /// if `attested`) that continues from epoch `from`. The epochs before are found through each
    /// one's first link, so an epoch whose predecessor arrived after it is found all the same.
    fn reused_key_after(&self, from: (&String, &EpochTrack), key: &str, attested: bool) -> Option<String> {
        let mut current = Some(from);
        let ancestors = std::iter::from_fn(|| {
            let (id, track) = current?;
            current = track.starts_after.as_deref().and_then(|prev| holder(self, prev));
            Some((id.as_str(), Some(track.key_id.as_str())))
        })
        .take(EPOCHS_PER_STREAM);
        reused_key(key, attested, ancestors)
    }

    /// The key rule again for the epochs that descend from `epoch`, whose first batch has just
    /// arrived late and linked it to the epochs before: (epoch, why) for each that breaks it.
    fn recheck_descendants(&self, epoch: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut visited = BTreeSet::new();
        let mut frontier = vec![epoch.to_string()];
        while let Some(id) = frontier.pop() {
            let Some(track) = self.epochs.get(&id) else { continue };
            let holds = |hash: &str| track.head == hash || track.recent.iter().any(|s| s.hash == hash);
            for (child_id, child) in &self.epochs {
                let continues_here = child.starts_after.as_deref().is_some_and(holds);
                if !continues_here || visited.len() >= EPOCHS_PER_STREAM || !visited.insert(child_id.clone())
                {
                    continue;
                }
                if let Some(why) = self.reused_key_after((&id, track), &child.key_id, child.attested) {
                    found.push((child_id.clone(), why));
                }
                frontier.push(child_id.clone());
            }
        }
        found
    }

    /// Epoch `successor` continues from the head of epoch `predecessor` (if known); beyond the
    /// bound on epochs, the longest-silent other one is forgotten.
    fn hand_over(&mut self, predecessor: Option<String>, successor: &str) {
        if let Some(target) = predecessor.and_then(|t| self.epochs.get_mut(&t)) {
            target.continued_by = Some(successor.to_string());
        }
        if self.epochs.len() > EPOCHS_PER_STREAM {
            let stalest = self
                .epochs
                .iter()
                .filter(|(id, _)| *id != successor)
                .min_by_key(|(_, e)| e.sealed_at)
                .map(|(id, _)| id.clone());
            if let Some(id) = stalest {
                self.epochs.remove(&id);
            }
        }
    }
}

/// The checks on the first batch `seen` of an epoch: the epoch it continues from (if known) and
/// the findings (kind, epoch, detail; all at seq 1). An epoch that links to nothing starts an
/// instance, which `rules` may not allow; an epoch of a stream seen before that links to a header
/// continues from the head of another epoch (see [`continues`]).
fn start(
    stream: &mut StreamTrack,
    known_stream: bool,
    seen: &Seen,
    batch: &Arrival<'_>,
    rules: &InstanceRules,
) -> (Option<String>, Vec<(FindingKind, String, String)>) {
    let h = batch.header;
    match h.prev.as_deref() {
        None => (None, stream.new_instance(&h.stream, &h.epoch, rules)),
        Some(prev) if known_stream => continues(stream, &h.epoch, prev, seen, batch),
        // Nothing is known of the stream before this batch.
        Some(_) => (None, Vec::new()),
    }
}

/// What is wrong with how the batch `seen` sits between its remembered neighbours in `epoch`:
/// each (kind, seq, detail). A batch must name the header of the one before it (any of them, if
/// that seq was equivocated) and be sealed no earlier; the one after must name one of the
/// headers at `seen`'s seq (its own or another's) and be sealed no earlier than `seen`.
fn link_problems(epoch: &EpochTrack, seen: &Seen) -> Vec<(FindingKind, u64, String)> {
    let mut problems = Vec::new();
    let before: Vec<&Seen> = if seen.seq > 1 { epoch.at(seen.seq - 1).collect() } else { Vec::new() };
    if !before.is_empty() {
        if !before.iter().any(|b| seen.prev.as_deref() == Some(b.hash.as_str())) {
            problems.push((FindingKind::ChainBreak, seen.seq, unlinked_from(seen, &before)));
        }
        if let Some(latest) = before.iter().map(|b| b.sealed_at).max().filter(|&b| seen.sealed_at < b) {
            problems.push((
                FindingKind::TimeAnomaly,
                seen.seq,
                backwards(seen.sealed_at, seen.seq - 1, latest),
            ));
        }
    }
    let mut here: Vec<&Seen> = epoch.at(seen.seq).collect();
    here.push(seen);
    for after in epoch.at(seen.seq + 1) {
        if !here.iter().any(|h| after.prev.as_deref() == Some(h.hash.as_str())) {
            problems.push((FindingKind::ChainBreak, after.seq, unlinked_from(after, &here)));
        }
        if after.sealed_at < seen.sealed_at {
            problems.push((
                FindingKind::TimeAnomaly,
                after.seq,
                backwards(after.sealed_at, seen.seq, seen.sealed_at),
            ));
        }
    }
    problems
}

/// Why `batch` does not continue from any of `before` (the batches one seq lower).
fn unlinked_from(batch: &Seen, before: &[&Seen]) -> String {
    let heads: Vec<String> = before.iter().map(|b| b.hash.clone()).collect();
    unlinked(batch.prev.as_deref(), batch.seq - 1, &heads)
}

/// The epoch that an epoch `epoch` of a known stream continues from, and the findings (kind,
/// epoch, detail; all at seq 1): its first batch `seen` must continue from the head of an epoch
/// no other epoch continues from (else each of them forks the stream), sealed no later than
/// `seen`, and the key rule across epochs must hold.
fn continues(
    stream: &StreamTrack,
    epoch: &str,
    prev: &str,
    seen: &Seen,
    batch: &Arrival<'_>,
) -> (Option<String>, Vec<(FindingKind, String, String)>) {
    let mut problems = Vec::new();
    let Some((target_id, target)) = stream.epochs.iter().find(|(_, e)| e.head == prev) else {
        let inside = holder(stream, prev)
            .and_then(|(id, e)| e.recent.iter().find(|s| s.hash == prev).map(|s| (id, s.seq, e.last_seq)));
        problems.push((FindingKind::ChainBreak, epoch.to_string(), match inside {
            Some((target, seq, last)) => format!("this epoch {}", goes_on(seq, target, last)),
            None => format!("this epoch continues from header {prev}, which is not the newest batch of any epoch of the stream seen here: the previous epoch's tail may have been dropped"),
        }));
        return (None, problems);
    };
    let forks: Vec<&str> = stream
        .epochs
        .iter()
        .filter(|(id, e)| e.starts_after.as_deref() == Some(prev) && id.as_str() != epoch)
        .map(|(id, _)| id.as_str())
        .collect();
    for (i, fork) in forks.iter().enumerate() {
        let mut others = forks.clone();
        others[i] = epoch;
        problems.push((FindingKind::ChainBreak, fork.to_string(), fork_at(prev, &others)));
    }
    if !forks.is_empty() {
        problems.push((FindingKind::ChainBreak, epoch.to_string(), fork_at(prev, &forks)));
    }
    if seen.sealed_at < target.sealed_at {
        problems.push((
            FindingKind::TimeAnomaly,
            epoch.to_string(),
            backwards_across(seen.sealed_at, target.sealed_at),
        ));
    }
    if let Some(why) = stream.reused_key_after((target_id, target), &batch.header.key_id, batch.attested) {
        problems.push((FindingKind::ChainBreak, epoch.to_string(), why));
    }
    (Some(target_id.clone()), problems)
}

/// The epoch of `stream` that holds the batch with header `hash` (its head, or a recent batch).
fn holder<'a>(stream: &'a StreamTrack, hash: &str) -> Option<(&'a String, &'a EpochTrack)> {
    let mut epochs = stream.epochs.iter();
    epochs
        .clone()
        .find(|(_, e)| e.head == hash)
        .or_else(|| epochs.find(|(_, e)| e.recent.iter().any(|s| s.hash == hash)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    use crate::{BatchBuilder, ChainHead, HeaderSigner, SigAlg, SoftwareKey, SoftwareSigner};

    /// When the test lines arrive: a minute after the first is sealed.
    const NOW: UnixNanos = 1_796_292_060_000_000_000;

    fn signer() -> SoftwareSigner {
        let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).expect("key");
        SoftwareSigner::new(SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).expect("key"), None)
    }

    /// Batches sealed so far: each is sealed a nanosecond after the one before.
    static SEALED: AtomicI64 = AtomicI64::new(0);

    /// Lines of `n` batches of one epoch, each with two records.
    fn epoch(head: &mut ChainHead, signer: &SoftwareSigner, n: u64) -> Vec<Vec<u8>> {
        let mut builder = BatchBuilder::new();
        (0..n)
            .map(|i| {
                for r in 0..2 {
                    let record = format!(r#"{{"ts":"2026-12-03T10:00:00Z","message":"b{i} r{r}"}}"#);
                    builder.push_input(record.as_bytes(), &|| 0).expect("record");
                }
                let mut line = Vec::new();
                let sealed_at = 1_796_292_000_000_000_000 + SEALED.fetch_add(1, Ordering::Relaxed);
                builder.seal(head, signer, sealed_at, &mut line).expect("seal");
                line.pop();
                line
            })
            .collect()
    }

    fn gate(signers: &[&SoftwareSigner]) -> Gate {
        let trusted_keys = signers.iter().map(|s| s.public_key().clone()).collect();
        Gate::new(VerifyOptions { trusted_keys, ..VerifyOptions::default() }, Continuity::default())
    }

    /// Stream "app"'s tips: epoch and seq.
    fn app_tips(gate: &Gate) -> Vec<(String, u64)> {
        gate.tips("app", None).iter().map(|t| (t.epoch.clone(), t.seq)).collect()
    }

    /// The finding kinds for each line, in order.
    fn kinds(gate: &mut Gate, lines: &[Vec<u8>]) -> Vec<Vec<&'static str>> {
        lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                match gate.check_line(Origin { source: "test", line: i as u64 + 1 }, line, NOW) {
                    Checked::Batch(v) => v.findings.iter().map(|f| f.kind.name()).collect(),
                    Checked::Malformed(f) => vec![f.kind.name()],
                    Checked::Document { .. } => vec!["document"],
                }
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_and_its_epoch_hand_over_have_no_findings() {
        let (a, b) = (signer(), signer());
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let mut lines = epoch(&mut head, &a, 3);
        let mut next = ChainHead::new_epoch("app", head.prev.clone(), &crate::random::SystemRandom).unwrap();
        lines.extend(epoch(&mut next, &b, 2));
        let mut gate = gate(&[&a, &b]);
        assert!(kinds(&mut gate, &lines).iter().all(Vec::is_empty));
        // A resend is a duplicate, not a finding.
        match gate.check_line(Origin { source: "again", line: 1 }, &lines[4], NOW) {
            Checked::Batch(v) => assert!(v.duplicate && v.signature_valid && v.findings.is_empty(), "{v:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_tips_are_the_heads_no_epoch_continues_from() {
        let (a, b, stranger) = (signer(), signer(), signer());
        let mut gate = gate(&[&a, &b]);
        assert_eq!(gate.tips("app", None), Vec::new(), "nothing of the stream yet");
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let first = epoch(&mut head, &a, 3);
        kinds(&mut gate, &first);
        assert_eq!(app_tips(&gate), vec![(head.epoch.clone(), 3)]);
        assert_eq!(gate.tips("app", None)[0].hash, head.prev.clone().unwrap());
        // Handed over: only the new epoch is a tip. A stranger's batch is no head at all.
        let mut next = ChainHead::new_epoch("app", head.prev.clone(), &crate::random::SystemRandom).unwrap();
        kinds(&mut gate, &epoch(&mut next, &b, 2));
        let mut forged = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        kinds(&mut gate, &epoch(&mut forged, &stranger, 1));
        assert_eq!(app_tips(&gate), vec![(next.epoch.clone(), 2)]);
        // A second epoch continuing from the same head forks the stream: both are tips, newest
        // first.
        let mut fork = ChainHead::new_epoch("app", head.prev.clone(), &crate::random::SystemRandom).unwrap();
        kinds(&mut gate, &epoch(&mut fork, &a, 1));
        assert_eq!(app_tips(&gate), vec![(fork.epoch.clone(), 1), (next.epoch.clone(), 2)]);
        assert!(gate.tips("other", None).is_empty());
    }

    #[test]
    fn gaps_breaks_bad_signatures_and_tampering_are_found_per_batch() {
        let (a, stranger) = (signer(), signer());
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut head, &a, 5);
        let mut gate = gate(&[&a]);
        // seq 3 is held back: a gap at 4; it arriving late is not reported again.
        let found =
            kinds(&mut gate, &[lines[0].clone(), lines[1].clone(), lines[3].clone(), lines[2].clone()]);
        assert_eq!(found, vec![vec![], vec![], vec!["sequence_gap"], vec![]]);

        let tampered = String::from_utf8(lines[4].clone()).unwrap().replace("b4 r1", "b4 rX").into_bytes();
        let mut other = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let foreign = epoch(&mut other, &stranger, 1);
        let found = kinds(&mut gate, &[tampered, foreign[0].clone(), b"{\"v\":1}".to_vec()]);
        assert_eq!(found, vec![vec!["record_tampered"], vec!["invalid_signature"], vec!["malformed"]]);
    }

    #[test]
    fn lines_checked_on_other_threads_in_any_order_and_admitted_in_order_are_judged_as_one_by_one() {
        let (a, stranger) = (signer(), signer());
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut head, &a, 5);
        let tampered = String::from_utf8(lines[4].clone()).unwrap().replace("b4 r1", "b4 rX").into_bytes();
        let mut other = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let foreign = epoch(&mut other, &stranger, 1);
        let input = [
            &lines[0],
            &lines[2],
            &lines[1],
            &tampered,
            &foreign[0],
            &b"{\"v\":1}".to_vec(),
            &lines[3],
            &lines[3],
        ];
        let origin = |i: usize| Origin { source: "test", line: i as u64 + 1 };

        let mut one_by_one = gate(&[&a]);
        let expected: Vec<String> = input
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{:?}", one_by_one.check_line(origin(i), l, NOW)))
            .collect();
        let mut apart = gate(&[&a]);
        let checker = apart.line_checker();
        // Each line on a thread of its own, the last one started first.
        let prepared: Vec<GatePrepared> = std::thread::scope(|s| {
            let threads: Vec<_> = input
                .iter()
                .enumerate()
                .rev()
                .map(|(i, l)| {
                    let checker = &checker;
                    s.spawn(move || checker.prepare(origin(i), l))
                })
                .collect();
            threads.into_iter().rev().map(|t| t.join().unwrap()).collect()
        });
        let found: Vec<String> = prepared
            .into_iter()
            .enumerate()
            .map(|(i, p)| format!("{:?}", apart.admit(origin(i), p, NOW)))
            .collect();
        assert_eq!(found, expected);
        for kind in ["SequenceGap", "RecordTampered", "InvalidSignature", "Malformed", "duplicate: true"] {
            assert!(expected.iter().any(|e| e.contains(kind)), "{kind} not among {expected:#?}");
        }
    }

    /// The findings of one line, as (kind, epoch).
    fn placed(gate: &mut Gate, line: &[u8]) -> BTreeSet<(FindingKind, String)> {
        match gate.check_line(Origin { source: "t", line: 1 }, line, NOW) {
            Checked::Batch(v) => {
                v.findings.iter().map(|f| (f.kind, f.epoch.clone().unwrap_or_default())).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_restart_that_does_not_link_to_the_head_is_a_chain_break() {
        let a = signer();
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let mut lines = epoch(&mut head, &a, 2);
        // The next epoch starts afresh instead of continuing from the head.
        let mut again = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        lines.extend(epoch(&mut again, &a, 1));
        let mut gate_from_start = gate(&[&a]);
        let found = kinds(&mut gate_from_start, &lines[..2]);
        assert_eq!(found, vec![Vec::<&str>::new(); 2]);
        // Both starts are reported, as the offline verifier reports them: a second instance where
        // one is allowed, and one key starting both (a restart, not another signer).
        let expected: BTreeSet<_> = [FindingKind::UnexpectedInstance, FindingKind::ChainBreak]
            .into_iter()
            .flat_map(|kind| [(kind, again.epoch.clone()), (kind, head.epoch.clone())])
            .collect();
        assert_eq!(placed(&mut gate_from_start, &lines[2]), expected);
        // A gateway that joined mid-stream (at seq 2) never saw the first start: to it the fresh
        // one starts the only instance it knows (FORMAT.md §15.1, where knowledge starts).
        let mut joined_late = gate(&[&a]);
        let found = kinds(&mut joined_late, &lines[1..]);
        assert_eq!(found, vec![Vec::<&str>::new(); 2]);
    }

    #[test]
    fn instances_of_other_signers_are_followed_each_on_its_own() {
        let (a, b) = (signer(), signer());
        let mut first = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let mut second = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let a1 = epoch(&mut first, &a, 2);
        let b1 = epoch(&mut second, &b, 2);
        // Instance a restarts with its own key again (a software identity that lost its
        // state but kept its key), linking to its head.
        let mut restart =
            ChainHead::new_epoch("app", first.prev.clone(), &crate::random::SystemRandom).unwrap();
        let a2 = epoch(&mut restart, &a, 1);
        let interleaved = [&a1[0], &b1[0], &a1[1], &b1[1], &a2[0]].map(|l| l.to_vec());
        let rules = |pins: &[&str], max| {
            let pinned = if pins.is_empty() {
                BTreeMap::new()
            } else {
                BTreeMap::from([("app".to_string(), pins.iter().map(|p| p.to_string()).collect())])
            };
            let options = VerifyOptions {
                trusted_keys: vec![a.public_key().clone(), b.public_key().clone()],
                instances: InstanceRules { pinned, max_instances: max, ..InstanceRules::default() },
                ..VerifyOptions::default()
            };
            Gate::new(options, Continuity::default())
        };
        let none = vec![Vec::<&str>::new(); 5];
        assert_eq!(kinds(&mut rules(&[], Some(2)), &interleaved), none);
        assert_eq!(kinds(&mut rules(&[&first.epoch, &second.epoch], None), &interleaved), none);
        // One allowed: the second start is reported against both; pinned: the other one only.
        let found = kinds(&mut rules(&[], None), &interleaved);
        assert_eq!(found[1], vec!["unexpected_instance", "unexpected_instance"]);
        assert!(found.iter().enumerate().all(|(i, k)| i == 1 || k.is_empty()), "{found:?}");
        let mut pinned = rules(&[&first.epoch], None);
        assert_eq!(placed(&mut pinned, &a1[0]), BTreeSet::new());
        assert_eq!(
            placed(&mut pinned, &b1[0]),
            BTreeSet::from([(FindingKind::UnexpectedInstance, second.epoch.clone())])
        );
        // A second restart of instance a from the same head forks it, whatever instances allow.
        let mut fork = ChainHead::new_epoch("app", first.prev.clone(), &crate::random::SystemRandom).unwrap();
        let forked = epoch(&mut fork, &a, 1);
        let mut allowed = rules(&[], Some(2));
        kinds(&mut allowed, &interleaved);
        assert_eq!(kinds(&mut allowed, &forked), vec![vec!["chain_break", "chain_break"]]);
    }

    #[test]
    fn silence_is_judged_per_instance() {
        let (a, b) = (signer(), signer());
        let mut first = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let mut second = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let options = VerifyOptions {
            trusted_keys: vec![a.public_key().clone(), b.public_key().clone()],
            instances: InstanceRules { max_instances: Some(2), ..InstanceRules::default() },
            ..VerifyOptions::default()
        };
        let mut gate = Gate::new(options, Continuity::default());
        let a_lines = epoch(&mut first, &a, 1);
        let b_lines = epoch(&mut second, &b, 1);
        assert_eq!(kinds(&mut gate, &[a_lines[0].clone(), b_lines[0].clone()]), vec![Vec::<&str>::new(); 2]);
        let b_sealed = ParsedBatch::parse(&b_lines[0]).unwrap().header.sealed_at_nanos().unwrap();
        // b goes on; a falls silent.
        let later = epoch(&mut second, &b, 1);
        let later_sealed = b_sealed + 30_000_000_000;
        let mut builder = crate::BatchBuilder::new();
        let mut fresh = Vec::new();
        builder.seal(&mut second, &b, later_sealed, &mut fresh).unwrap();
        fresh.pop();
        assert_eq!(kinds(&mut gate, &[later[0].clone(), fresh]), vec![Vec::<&str>::new(); 2]);
        let stale = gate.stale_streams(later_sealed + 5_000_000_000, 10_000_000_000);
        let at: Vec<_> = stale.iter().map(|f| (f.kind, f.epoch.clone().unwrap_or_default())).collect();
        assert_eq!(at, vec![(FindingKind::StaleStream, first.epoch.clone())]);
        assert!(
            stale[0].detail.contains(&format!("instance from epoch {}", first.epoch)),
            "{}",
            stale[0].detail
        );
        // Once, until it is heard from again.
        assert!(gate.stale_streams(later_sealed + 6_000_000_000, 10_000_000_000).is_empty());
    }

    #[test]
    fn state_saved_before_instances_are_followed_is_read() {
        let saved = r#"{"streams":{"app":{"epochs":{},"genesis":"00112233445566778899aabbccddeeff","genesis_reported":false,"newest_sealed_at":0,"newest":["",0],"stale":false}}}"#;
        let state: Continuity = serde_json::from_str(saved).expect("old state");
        assert_eq!(state.streams["app"].instances, vec!["00112233445566778899aabbccddeeff".to_string()]);
        let none = saved.replace(r#""00112233445566778899aabbccddeeff""#, "null");
        let state: Continuity = serde_json::from_str(&none).expect("old state");
        assert!(state.streams["app"].instances.is_empty());
    }

    #[test]
    fn a_batch_that_fills_a_gap_is_remembered() {
        let a = signer();
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut head, &a, 3);
        let forked = fork_after(&head, &lines[0], &a);
        let mut gate = gate(&[&a]);
        let found = kinds(&mut gate, &[lines[0].clone(), lines[2].clone(), lines[1].clone(), forked]);
        // The fork is sealed after batch 3, which therefore follows a batch 2 sealed later than it.
        assert_eq!(found, vec![vec![], vec!["sequence_gap"], vec![], vec!["equivocation", "time_anomaly"]]);
    }

    #[test]
    fn a_second_batch_for_a_recent_seq_is_equivocation() {
        let a = signer();
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut head, &a, 2);
        let forked = fork_after(&head, &lines[0], &a);
        let mut gate = gate(&[&a]);
        let found = kinds(&mut gate, &[lines[0].clone(), lines[1].clone(), forked]);
        assert_eq!(found, vec![vec![], vec![], vec!["equivocation"]]);
    }

    /// A second batch for seq 2 of `head`'s epoch, after `first` (its batch 1).
    fn fork_after(head: &ChainHead, first: &[u8], signer: &SoftwareSigner) -> Vec<u8> {
        let prev = Some(hex::encode(ParsedBatch::parse(first).expect("batch").header_hash));
        let mut fork = ChainHead {
            stream: "app".into(),
            epoch: head.epoch.clone(),
            next_seq: 2,
            prev,
            prev_sealed_at: None,
        };
        epoch(&mut fork, signer, 1).remove(0)
    }

    /// Vouches for one key with measurement `abcd`, for any document.
    struct Vouch(crate::PublicKey);

    impl AttestationVerifier for Vouch {
        fn verify_document(&self, document: &[u8]) -> Result<AttestedKey, DocumentError> {
            if document == b"forged" {
                return Err(DocumentError::Rejected(std::sync::Arc::new(std::io::Error::other(
                    "the document's chain does not reach a trusted root",
                ))));
            }
            Ok(AttestedKey {
                key: self.0.clone(),
                measurement: "abcd".into(),
                platform: "dev".into(),
                previous_head: None,
                anchor: crate::verify::TrustBasis::DevRoot,
                attested_at: None,
            })
        }
    }

    #[test]
    fn attested_batches_need_their_document_first_and_a_trusted_one() {
        let document = b"a document".to_vec();
        let key =
            SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap())
                .unwrap();
        let attested = SoftwareSigner::new(key, Some("abcd".into()))
            .with_attestation(hex::encode(crate::merkle::sha256(&document)));
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut head, &attested, 2);
        let document_line = crate::batch::attestation_line(&document);
        let document_line = document_line.strip_suffix(b"\n").unwrap().to_vec();
        let gate = || {
            Gate::new(VerifyOptions::default(), Continuity::default())
                .with_attestation(Box::new(Vouch(attested.public_key().clone())))
        };
        // Before its document, a batch cannot be trusted (nor placed in the chain); after it,
        // the next one verifies.
        let found = kinds(&mut gate(), &[lines[0].clone(), document_line.clone(), lines[1].clone()]);
        assert_eq!(found, vec![vec!["untrusted_attestation"], vec!["document"], vec![]]);
        assert_eq!(kinds(&mut gate(), &[document_line, lines[0].clone()]), vec![vec!["document"], vec![]]);
        // A forged document (the same digest is named, so the batch points at it).
        let mut forged_gate = gate();
        let forged = crate::batch::attestation_line(b"forged");
        forged_gate.check_line(Origin { source: "t", line: 1 }, forged.strip_suffix(b"\n").unwrap(), NOW);
        let named_forged = SoftwareSigner::new(
            SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap())
                .unwrap(),
            Some("abcd".into()),
        )
        .with_attestation(hex::encode(crate::merkle::sha256(b"forged")));
        let mut other = ChainHead::new_epoch("db", None, &crate::random::SystemRandom).unwrap();
        let forged_batches = epoch(&mut other, &named_forged, 1);
        match forged_gate.check_line(Origin { source: "t", line: 2 }, &forged_batches[0], NOW) {
            Checked::Batch(v) => {
                assert!(!v.signature_valid);
                assert_eq!(v.findings[0].kind, FindingKind::UntrustedAttestation, "{v:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_flood_of_documents_and_forged_batches_neither_pushes_out_a_document_in_use_nor_refuses_a_new_one() {
        let attested_signer = |document: &[u8]| {
            let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap();
            SoftwareSigner::new(SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).unwrap(), Some("abcd".into()))
                .with_attestation(hex::encode(crate::merkle::sha256(document)))
        };
        let line_of = |document: &[u8]| {
            let mut line = crate::batch::attestation_line(document);
            line.pop();
            line
        };
        let genuine = attested_signer(b"genuine document");
        let mut gate = Gate::new(VerifyOptions::default(), Continuity::default())
            .with_attestation(Box::new(Vouch(genuine.public_key().clone())));
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut head, &genuine, 2);
        let found = kinds(&mut gate, &[line_of(b"genuine document"), lines[0].clone()]);
        assert_eq!(found, vec![vec!["document"], vec![]]);

        // More documents than the gate holds unused, some named by batches a stranger signed.
        let stranger_lines: Vec<Vec<u8>> = (0..MAX_UNUSED_DOCUMENTS + 100)
            .flat_map(|i| {
                let document = format!("junk {i}").into_bytes();
                let mut lines = vec![line_of(&document)];
                if i % 10 == 0 {
                    let mut other =
                        ChainHead::new_epoch(&format!("s{i}"), None, &crate::random::SystemRandom).unwrap();
                    lines.extend(epoch(&mut other, &attested_signer(&document), 1));
                }
                lines
            })
            .collect();
        let found = kinds(&mut gate, &stranger_lines);
        assert!(found.iter().flatten().all(|k| ["document", "invalid_signature"].contains(k)), "{found:?}");
        // A batch that does not verify under a document does not put it in use.
        assert_eq!(gate.documents.in_use, 1);
        assert!(
            gate.documents.by_digest.len() <= MAX_UNUSED_DOCUMENTS + 1,
            "{}",
            gate.documents.by_digest.len()
        );
        assert!(gate.documents.unused_bytes <= MAX_UNUSED_DOCUMENT_BYTES);

        // The epoch in use goes on verifying, and a new stream's document finds room.
        let next = attested_signer(b"next document");
        let mut next_head = ChainHead::new_epoch("db", None, &crate::random::SystemRandom).unwrap();
        let next_lines = epoch(&mut next_head, &next, 1);
        let mut gate = Gate { attestation: Some(Box::new(Vouch(next.public_key().clone()))), ..gate };
        assert_eq!(
            kinds(&mut gate, &[line_of(b"next document"), next_lines[0].clone()]),
            vec![vec!["document"], vec![]]
        );
        gate.attestation = Some(Box::new(Vouch(genuine.public_key().clone())));
        match gate.check_line(Origin { source: "t", line: 9 }, &lines[1], NOW) {
            Checked::Batch(v) => assert!(v.signature_valid, "{v:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn documents_restored_after_a_restart_are_all_kept_until_the_total_bound() {
        let mut gate = Gate::new(VerifyOptions::default(), Continuity::default());
        let restored: Vec<Digest> = (0..DOCUMENTS_IN_USE_PER_STREAM + 10)
            .filter_map(|i| {
                let mut line = crate::batch::attestation_line(format!("document {i}").as_bytes());
                line.pop();
                gate.restore_document(&line)
            })
            .collect();
        assert_eq!(restored.len(), DOCUMENTS_IN_USE_PER_STREAM + 10);
        // Their streams are not known yet, so no one stream's bound applies to them.
        assert!(restored.iter().all(|d| gate.document(d).is_some()));
        assert_eq!(gate.documents.in_use, restored.len());
    }

    #[test]
    fn a_batch_the_gate_objects_to_never_becomes_a_tip() {
        let measured = |m: &str| {
            let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).expect("key");
            SoftwareSigner::new(SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).expect("key"), Some(m.into()))
        };
        // Both keys are trusted, but only code "aa" is allowed.
        let (honest, outsider) = (measured("aa"), measured("bb"));
        let options = VerifyOptions {
            trusted_keys: vec![honest.public_key().clone(), outsider.public_key().clone()],
            expect_measurement: Some("aa".into()),
            ..VerifyOptions::default()
        };
        let mut gate = Gate::new(options, Continuity::default());
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        assert!(kinds(&mut gate, &epoch(&mut head, &honest, 2)).iter().all(Vec::is_empty));
        // The outsider links an epoch of its own to the head: reported, and the head stays.
        let mut taken = ChainHead::new_epoch("app", head.prev.clone(), &crate::random::SystemRandom).unwrap();
        let found = kinds(&mut gate, &epoch(&mut taken, &outsider, 2));
        assert!(found.iter().all(|k| k.contains(&"unexpected_measurement")), "{found:?}");
        assert_eq!(app_tips(&gate), vec![(head.epoch.clone(), 2)]);
        // Nor can it add to the honest epoch with a changed record.
        let mut next = epoch(&mut head.clone(), &honest, 1).remove(0);
        // The first record's message, "b0 r0", becomes "b9 r0".
        let at = next.windows(4).position(|w| w == b"b0 r").expect("a record");
        next[at + 1] = b'9';
        let found = kinds(&mut gate, &[next]);
        assert!(found[0].contains(&"record_tampered"), "{found:?}");
        assert_eq!(app_tips(&gate), vec![(head.epoch.clone(), 2)]);
        // The honest signer's next epoch takes the tip over as before.
        let mut after = ChainHead::new_epoch("app", head.prev.clone(), &crate::random::SystemRandom).unwrap();
        let found = kinds(&mut gate, &epoch(&mut after, &honest, 1));
        assert!(found.iter().all(|k| !k.contains(&"unexpected_measurement")), "{found:?}");
        assert_eq!(app_tips(&gate), vec![(after.epoch.clone(), 1)]);
    }

    #[test]
    fn a_replayed_old_batch_of_an_epoch_the_gate_never_placed_is_no_second_head() {
        let a = signer();
        let mut old = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let old_lines = epoch(&mut old, &a, 3);
        let mut now = ChainHead::new_epoch("app", old.prev.clone(), &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut now, &a, 2);
        // The gateway came after the old epoch (or forgot it): it knows the stream from `now`.
        let mut gate = gate(&[&a]);
        kinds(&mut gate, &lines[..1]);
        assert_eq!(app_tips(&gate), vec![(now.epoch.clone(), 1)]);
        // Someone replays a genuine old batch: a gap is reported, and the head stays the one.
        assert_eq!(kinds(&mut gate, &old_lines[1..2]), vec![vec!["sequence_gap"]]);
        assert_eq!(app_tips(&gate), vec![(now.epoch.clone(), 1)]);
        kinds(&mut gate, &old_lines[2..]);
        kinds(&mut gate, &lines[1..]);
        assert_eq!(app_tips(&gate), vec![(now.epoch.clone(), 2)]);
        // Its first batch arriving late places it: it is continued from, still no head.
        kinds(&mut gate, &old_lines[..1]);
        assert_eq!(app_tips(&gate), vec![(now.epoch.clone(), 2)]);
    }

    #[test]
    fn a_measurement_not_expected_is_found_but_the_batch_stays_valid() {
        let a = signer();
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut head, &a, 1);
        let options = VerifyOptions {
            trusted_keys: vec![a.public_key().clone()],
            expect_measurement: Some("ffff".into()),
            ..VerifyOptions::default()
        };
        match Gate::new(options, Continuity::default()).check_line(
            Origin { source: "t", line: 1 },
            &lines[0],
            NOW,
        ) {
            Checked::Batch(v) => {
                assert!(v.signature_valid);
                assert_eq!(v.findings[0].kind, FindingKind::UnexpectedMeasurement, "{v:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_restarts_keep_the_state_bounded() {
        let a = signer();
        let mut gate = gate(&[&a]);
        let mut prev = None;
        for _ in 0..EPOCHS_PER_STREAM + 6 {
            let mut head = ChainHead::new_epoch("app", prev.take(), &crate::random::SystemRandom).unwrap();
            let lines = epoch(&mut head, &a, 1);
            assert_eq!(kinds(&mut gate, &lines), vec![Vec::<&str>::new()], "each epoch continues the last");
            prev = head.prev.clone();
        }
        assert_eq!(gate.continuity().streams["app"].epochs.len(), EPOCHS_PER_STREAM);
    }

    #[test]
    fn the_state_survives_a_restart_and_silence_is_reported_once() {
        let a = signer();
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut head, &a, 3);
        let mut first = gate(&[&a]);
        kinds(&mut first, &lines[..2]);
        let saved = serde_json::to_string(first.continuity()).expect("state");
        let state: Continuity = serde_json::from_str(&saved).expect("state");
        let mut second = Gate::new(
            VerifyOptions { trusted_keys: vec![a.public_key().clone()], ..Default::default() },
            state,
        );
        assert_eq!(kinds(&mut second, &lines[2..]), vec![Vec::<&str>::new()]);
        let sealed = 1_796_292_000_000_000_002;
        assert!(second.stale_streams(sealed + 5_000_000_000, 10_000_000_000).is_empty());
        let stale = second.stale_streams(sealed + 11_000_000_000, 10_000_000_000);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].kind, FindingKind::StaleStream);
        assert!(second.stale_streams(sealed + 20_000_000_000, 10_000_000_000).is_empty());
    }
}
