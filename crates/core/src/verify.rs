//! The chain verifier: a state machine fed batch lines in any order, which checks each batch as
//! it arrives (signature, records, measurement) and the chain once everything is in (order by
//! stream, epoch and seq; gaps, links, equivocation, epoch hand-overs).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::batch::{
    Header, LineFields, ParsedBatch, RecordsCheck, RecordsStatus, SignatureStatus, SignedHeader,
};
use crate::checkpoint::{CheckpointCheck, Stored};
use crate::crypto::PublicKey;
use crate::merkle::{sha256, Digest};
use crate::policy::{Judgement, Policy};
use crate::runs::{print_of, Arrival, EpochChain, Place, Print, Segment, Slot};
use crate::seed::check_seed_batch;
use crate::timestamp::{format_rfc3339, UnixNanos};

/// The stream name under which seed-format (`SignedLogBatch`) batches are reported; their
/// epoch is the `AttestationCertThumbprint`.
pub const SEED_STREAM: &str = "seed";

/// What a finding is about (docs/FORMAT.md §8 says when each is reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The header is not signed by a trusted (or attested) key: nothing in the batch is trusted.
    InvalidSignature,
    /// The records do not match the signed count or Merkle root.
    RecordTampered,
    /// The code measurement is not the one expected, or not one the policy allows.
    UnexpectedMeasurement,
    /// Seqs of an epoch are missing: batches were dropped.
    SequenceGap,
    /// A batch does not link to the one before it, or an epoch does not continue its stream.
    ChainBreak,
    /// Two different batches claim one seq: the stream was forked.
    Equivocation,
    /// A line that is not a batch that can be judged (or a file that cannot be read as one).
    Malformed,
    /// The attestation document a batch names is missing or does not verify.
    UntrustedAttestation,
    /// A stream has been silent for longer than the freshness bound: its tail may be cut off.
    StaleStream,
    /// A validly signed batch whose line departs from the layout its signed parts determine
    /// (extra white space, other hints): bytes no signature covers.
    UnsignedContent,
    /// A `sealed_at` out of order with what it follows, or too far ahead of the verification time.
    TimeAnomaly,
    /// No batch verified, and nothing else was found: "nothing found" is not "OK".
    NothingVerified,
    /// A stream the caller expects has no validly signed batch (or a pinned instance of it has
    /// none).
    MissingStream,
    /// A stream has an instance (a chain of its own, from a genesis epoch) that the caller did
    /// not pin, or more instances than it allows (docs/FORMAT.md §5.5).
    UnexpectedInstance,
    /// A gateway checkpoint that does not verify under the `--checkpoint-key`.
    InvalidCheckpoint,
    /// A batch a gateway checkpoint says was stored is missing: the tail was cut after the
    /// gateway saw it.
    TruncatedAfterCheckpoint,
    /// The batch stored at a checkpointed seq is not the one the checkpoint names.
    CheckpointMismatch,
    /// `--checkpoint-key` was given, but a stream (or the whole input) has no checkpoint that
    /// verifies: nothing shows its tail is whole.
    MissingCheckpoint,
}

impl FindingKind {
    /// Its snake_case name, as the JSON report spells it.
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
            FindingKind::UnsignedContent => "unsigned_content",
            FindingKind::TimeAnomaly => "time_anomaly",
            FindingKind::NothingVerified => "nothing_verified",
            FindingKind::MissingStream => "missing_stream",
            FindingKind::UnexpectedInstance => "unexpected_instance",
            FindingKind::InvalidCheckpoint => "invalid_checkpoint",
            FindingKind::TruncatedAfterCheckpoint => "truncated_after_checkpoint",
            FindingKind::CheckpointMismatch => "checkpoint_mismatch",
            FindingKind::MissingCheckpoint => "missing_checkpoint",
        }
    }
}

/// One thing wrong with the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is about.
    pub kind: FindingKind,
    /// The batch's stream, where the finding is about a batch or a stream.
    pub stream: Option<String>,
    /// The batch's epoch, where it is about a batch.
    pub epoch: Option<String>,
    /// The batch's seq, where it is about a batch (the first missing one for a gap).
    pub seq: Option<u64>,
    /// The first record found changed, where it is about records.
    pub record_index: Option<u64>,
    /// What was found, in words; starts with `file:line:` where it is about a line.
    pub detail: String,
}

impl Finding {
    /// A line at `origin` that is not a batch that can be judged.
    pub(crate) fn malformed(origin: Origin<'_>, detail: &str) -> Self {
        Self::unplaced(FindingKind::Malformed, format!("{origin}: {detail}"))
    }

    /// A finding that belongs to no batch.
    pub(crate) fn unplaced(kind: FindingKind, detail: String) -> Self {
        Finding { kind, stream: None, epoch: None, seq: None, record_index: None, detail }
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

/// The verdict on the whole input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No finding at all (listed or omitted): every line verified and the chains are whole.
    pub ok: bool,
    /// Distinct batch lines (copies counted once), whether or not they verified.
    pub batches: u64,
    /// Records of the validly signed batches whose records are intact (first copies only).
    pub records: u64,
    /// Copies of batch lines seen before.
    pub duplicates: u64,
    /// The findings, ordered by stream, epoch and seq (malformed lines first).
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS_PER_KIND`] of one kind: counted, not listed, so that
    /// hostile input cannot make the report grow without bound.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub omitted_findings: BTreeMap<FindingKind, u64>,
    /// Torn last lines (a crash mid-write) whose bytes are the start of a batch line that
    /// verifies later in the input: the batch was written again, nothing was lost.
    pub torn_writes: u64,
    /// SHA-256 (hex) of attestation documents that no batch names: they are evidence of
    /// nothing (at most [`MAX_LISTED`]).
    pub unreferenced_documents: Vec<String>,
    /// What the trust in each epoch's batches rests on.
    pub trust: Vec<EpochTrust>,
    /// The instances of each stream (docs/FORMAT.md §5.5): its chains, each with its epochs;
    /// ordered by stream.
    pub instances: Vec<StreamInstance>,
    /// Gateway checkpoint lines read (docs/FORMAT.md §17): counted always, trusted only under a
    /// `--checkpoint-key`.
    #[serde(skip_serializing_if = "is_zero")]
    pub checkpoints: u64,
    /// Per epoch, the newest checkpointed batch a verified RFC 3161 token dates (with
    /// `--tsa-root`): it existed no later than the token's time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checkpoint_times: Vec<crate::checkpoint::StampedTip>,
    /// Batches whose key a dev root vouches for (not hardware-backed); shown to people, not in
    /// the JSON report.
    #[serde(skip)]
    pub dev_attested: u64,
    /// Key ids of batches with no attestation document when no `--pubkey` was given: the
    /// caller's usage error, not evidence of forgery (at most [`MAX_LISTED`]).
    #[serde(skip)]
    pub keys_needed: Vec<String>,
    /// Which code produced which batches, per stream in time order; present with a policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<TimelineEntry>>,
    /// Attested batches verified with neither a policy nor an expected measurement: whatever
    /// code a trusted root attests was accepted, which OK alone does not say.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub measurements_unjudged: bool,
}

/// What one epoch's validly signed batches rest on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpochTrust {
    /// The stream (shared with its instances: with many streams, a copy each would cost more
    /// than the streams' batches).
    pub stream: Arc<str>,
    /// The epoch.
    pub epoch: Arc<str>,
    /// What vouches for its key.
    pub basis: TrustBasis,
    /// aws-nitro, tpm, dev, … or software for a bare key (one copy for all epochs).
    pub platform: Arc<str>,
    /// The id (hex) of the key that signed them (one copy for all epochs it signs).
    pub key_id: Arc<str>,
    /// Its validly signed batches.
    pub batches: u64,
    /// The epoch is a seed-format `AttestationCertThumbprint`, which nothing signs.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub epoch_unsigned: bool,
}

/// One instance of a stream (docs/FORMAT.md §5.5): the epochs that descend, link by link, from
/// one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamInstance {
    /// The stream.
    pub stream: Arc<str>,
    /// The instance's name: the epoch its chain starts from.
    pub instance: Arc<str>,
    /// That epoch starts the instance (its first batch links to nothing). False when the chain
    /// starts from an epoch whose first batch, or the header it links to, is not in the input:
    /// then what came before is missing, which the findings say.
    pub genesis: bool,
    /// The caller pinned this instance (`--expect-stream STREAM=INSTANCE`, or the policy).
    pub pinned: bool,
    /// Its epochs, in the order their first validly signed batches were sealed.
    pub epochs: Vec<Arc<str>>,
}

/// Which instances each stream may have (docs/FORMAT.md §5.5).
#[derive(Debug, Clone, Default)]
pub struct InstanceRules {
    /// Per stream, the instances (genesis epochs) it must have and the only ones it may have.
    pub pinned: BTreeMap<String, BTreeSet<String>>,
    /// How many instances a stream without pins may have, per stream.
    pub limits: BTreeMap<String, u64>,
    /// How many instances a stream without pins or a limit of its own may have; `None` means one.
    pub max_instances: Option<u64>,
}

impl InstanceRules {
    /// The rules a policy's `[[stream]]` entries declare; none without a policy.
    pub fn of_policy(policy: Option<&Policy>) -> Self {
        policy.map_or_else(Self::default, |p| InstanceRules {
            pinned: p.pinned_instances(),
            limits: p.instance_limits(),
            max_instances: None,
        })
    }

    /// The genesis epochs among `instances` (of `stream`) that these rules do not allow, each
    /// with why: with pins, each one not pinned; without, all of them when there are more than
    /// allowed, since nothing tells which is the stream's own.
    pub(crate) fn unexpected<'a>(&self, stream: &str, instances: &[&'a str]) -> Vec<(&'a str, String)> {
        if let Some(pins) = self.pinned.get(stream) {
            let pinned = first_few(pins.iter().map(String::as_str), pins.len());
            return instances
                .iter()
                .filter(|g| !pins.contains(**g))
                .map(|g| (*g, format!(
                    "stream {stream:?} has an instance starting at epoch {g}, which is not one pinned for it ({pinned}): another signer writes to this stream, or a restart did not link to its previous head"
                )))
                .collect();
        }
        let allowed = self.limits.get(stream).copied().or(self.max_instances).unwrap_or(1).max(1);
        if instances.len() as u64 <= allowed {
            return Vec::new();
        }
        let named = first_few(instances.iter().copied(), instances.len());
        let detail = format!(
            "stream {stream:?} starts {} times (instances {named}), and {allowed} allowed: a restart did not link to its previous head, or other signers write to this stream; pin the instances it has with --expect-stream {stream}=EPOCH (or allow more with --instances N)",
            instances.len(),
        );
        instances.iter().map(|g| (*g, detail.clone())).collect()
    }
}

/// The first few of `len` names, comma-separated: a detail repeated for each of them must not
/// grow with their number.
fn first_few<'a>(names: impl Iterator<Item = &'a str>, len: usize) -> String {
    const NAMED: usize = 8;
    let mut text = names.take(NAMED).collect::<Vec<_>>().join(", ");
    if len > NAMED {
        text.push_str(&format!(", … ({len} in all)"));
    }
    text
}

/// An epoch as the key rule across instances sees it: the epoch, its key, and the genesis epoch
/// its chain reaches (None where it reaches none).
pub(crate) type KeyedEpoch<'a> = (&'a str, &'a str, Option<&'a str>);

/// Why genesis epoch `genesis`, signed by `key`, breaks the chain: the same key signs an epoch of
/// another instance. `others` are the stream's other epochs, each with its key and the genesis
/// epoch its chain reaches (None where it reaches none: its start is missing, which is reported
/// where it is). A new instance is a new signer with a key of its own; the same key starting
/// afresh is a restart that did not link to its head.
pub(crate) fn key_in_another_instance<'a>(
    genesis: &str,
    key: &str,
    others: impl IntoIterator<Item = KeyedEpoch<'a>>,
) -> Option<String> {
    let (epoch, _, instance) = others.into_iter().find(|(epoch, k, instance)| {
        *epoch != genesis && *k == key && instance.is_some_and(|i| i != genesis)
    })?;
    Some(format!(
        "key {key} starts this instance and also signs epoch {epoch} of instance {}: a restart links to its own head, and a new instance has a key of its own",
        instance.unwrap_or_default()
    ))
}

/// A run of consecutive batches of one stream signed by code with one measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    /// The stream.
    pub stream: String,
    /// Which provider attested (or `software`).
    pub platform: String,
    /// The measurement (hex).
    pub measurement: String,
    /// The policy's label for it, if the policy lists it.
    pub version: Option<String>,
    /// Whether the policy allows every batch of the run.
    pub allowed: bool,
    /// Batches in the run.
    pub batches: u64,
    /// `sealed_at` of the first batch.
    pub from: String,
    /// `sealed_at` of the last batch.
    pub to: String,
    /// `epoch:seq` of the first batch.
    pub first: String,
    /// `epoch:seq` of the last batch.
    pub last: String,
}

/// An epoch's batches as the freshness check needs them: the first read, and the newest credible
/// one (sealed no later than the verification time allows), each as (arrival, sealed_at, seq).
#[derive(Debug, Clone, Copy)]
struct Heard {
    first: (u64, UnixNanos, u64),
    newest: Option<(u64, UnixNanos, u64)>,
}

/// Where a line came from, for messages: `file:line`.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The file's path, `-` for stdin, or another source's name.
    pub source: &'a str,
    /// The line's number, from 1.
    pub line: u64,
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.line)
    }
}

/// What the caller trusts and expects.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Keys that batches without an attestation document may be signed with.
    pub trusted_keys: Vec<PublicKey>,
    /// Lower-case hex; batches with another measurement are `unexpected_measurement`.
    pub expect_measurement: Option<String>,
    /// Measurements allowed per platform and time; with one, the report carries a timeline.
    pub policy: Option<Policy>,
    /// A stream whose newest valid batch was sealed longer before `now` than `max_silence` is
    /// `stale_stream`: signers send heartbeats, so silence means the tail may be cut off.
    pub freshness: Option<Freshness>,
    /// The verification time: a batch sealed more than `max_skew` after it is `time_anomaly`
    /// (a signer's clock belongs to the host). `None` skips the check.
    pub now: Option<UnixNanos>,
    /// How far ahead of `now` a `sealed_at` may be; `None` means [`DEFAULT_MAX_SKEW`].
    pub max_skew: Option<UnixNanos>,
    /// Input without any validly signed batch is OK (for scripts that expect none); otherwise it
    /// is `nothing_verified`.
    pub allow_empty: bool,
    /// Streams that must be present: one without a validly signed batch is `missing_stream`.
    pub expect_streams: Vec<String>,
    /// The report carries a timeline even without a policy (for a report people read).
    pub timeline: bool,
    /// Which instances each stream may have; by default, one.
    pub instances: InstanceRules,
}

/// How far a `sealed_at` may lie after the verification time by default: 5 minutes.
pub const DEFAULT_MAX_SKEW: UnixNanos = 5 * 60 * 1_000_000_000;

impl VerifyOptions {
    /// How far ahead of the verification time a `sealed_at` may be: `--max-skew`, or
    /// [`DEFAULT_MAX_SKEW`].
    pub fn skew(&self) -> UnixNanos {
        self.max_skew.unwrap_or(DEFAULT_MAX_SKEW)
    }
}

/// Findings listed per kind; the rest are counted in [`Report::omitted_findings`].
pub const MAX_FINDINGS_PER_KIND: usize = 1000;
/// Entries of the report's lists (unreferenced documents, keys needed).
pub const MAX_LISTED: usize = 1000;
/// Identities of lines that did not verify, remembered to count their copies as duplicates;
/// beyond, each copy is reported again (within the findings cap).
const MAX_UNVERIFIED_IDENTITIES: usize = 1 << 16;
/// Documents that did not verify, kept to name why in the findings of the batches that cite them.
const MAX_FAILED_DOCUMENTS: usize = 4096;
/// Bytes of documents held until a batch names them.
const MAX_DOCUMENT_BYTES: usize = 64 << 20;
/// Bytes of batches held while they wait for an attestation document later in the input.
const MAX_PENDING_BYTES: usize = 32 << 20;
/// Torn last lines held until a batch that they begin turns up, and their bytes.
const MAX_TORN: usize = 256;
const MAX_TORN_BYTES: usize = 32 << 20;

/// The freshness bound: how long a stream may be silent, judged at a given time.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// The time silence is measured to, Unix nanoseconds.
    pub now: UnixNanos,
    /// The longest silence allowed, nanoseconds.
    pub max_silence: UnixNanos,
}

/// What a verified attestation document says about the key it binds.
#[derive(Debug, Clone)]
pub struct AttestedKey {
    /// The key the document binds.
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
/// providers plug in here, so that the core stays free of any one TEE's formats. A verdict must
/// depend on the document alone, so that it can be given as soon as the document is read.
pub trait AttestationVerifier {
    /// The key the document binds, or why the document is not trusted.
    fn verify_document(&self, document: &[u8]) -> Result<AttestedKey, DocumentError>;
}

/// Why an [`AttestationVerifier`] did not trust a document. Verdicts are kept and shared per
/// document, so the error is cheap to clone.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DocumentError {
    /// Not a kind of document this verifier reads.
    #[error("neither {expected}")]
    UnknownKind {
        /// The kinds it reads, as a phrase ("a Nitro (COSE_Sign1) document nor a TPM evidence
        /// bundle").
        expected: &'static str,
    },
    /// The document did not verify (malformed, a chain that does not reach a trusted root, a bad
    /// signature, debug mode, a refused TCB, …). The provider's own error is the source: downcast
    /// it (e.g. to `teelog_attest::AttestError`) to tell these apart.
    #[error(transparent)]
    Rejected(Arc<dyn std::error::Error + Send + Sync>),
    /// A teelog dev document whose chain does not reach any root given: most likely the auditor
    /// did not pass the dev root of the identity that made it (each `keygen --dev` makes a new
    /// one), rather than a forgery.
    #[error("{error}; this is a teelog dev document (module_id {}) whose bundle names a root with SHA-256 {root_sha256}: if you trust the identity that made it, pass its dev-root.pem with --trust-root", crate::display::escape_controls(module_id))]
    DevRootNotGiven {
        /// Why the chain was refused.
        error: Arc<dyn std::error::Error + Send + Sync>,
        /// The document's `module_id`, as it gives it.
        module_id: String,
        /// SHA-256 (hex) of the root certificate the document carries.
        root_sha256: String,
    },
    /// The document verified but binds no signing key.
    #[error("the document binds no key (no public_key)")]
    NoKey,
    /// The document verified but the key it binds is not one teelog can verify with.
    #[error("the document's public_key: {0}")]
    Key(crate::KeyError),
}

/// A parsed batch, before its signature is checked.
pub(crate) struct Candidate {
    pub(crate) origin: String,
    pub(crate) header: Header,
    pub(crate) header_hash: Digest,
    /// What tells copies of it apart: the signed header and low-S signature when the records are
    /// intact, all of the line's bytes when they are not.
    identity: Digest,
    pub(crate) records: RecordsStatus,
    /// Why bytes of its line are covered by no signature; findings only if the signature holds.
    pub(crate) unsigned: Vec<String>,
}

/// A line checked as far as it can be without the verifier's state (parse, the records against
/// the Merkle root and hints, the layout, the signature under a trusted key): the costly part of
/// a line, which a pool of threads can work out in any order. [`Verifier::admit`] takes it in.
pub struct Prepared(Step);

enum Step {
    Blank,
    /// Not a line that can be judged; says why.
    Malformed(String),
    /// An attestation document, a checkpoint or a seed-format batch: checked in
    /// [`Verifier::admit`], against what the lines before it left.
    Stateful,
    Batch(Box<PreparedBatch>),
}

/// A teelog batch line, checked on its own ([`check_alone`]).
pub(crate) struct PreparedBatch {
    pub(crate) candidate: Candidate,
    pub(crate) signature: BatchSignature,
}

pub(crate) enum BatchSignature {
    /// Checked under the trusted keys.
    Checked(SignatureStatus),
    /// To be checked under the key of the attestation document `digest` names, once it is known;
    /// `early` is its status under the key that document was known to bind, if it was.
    Attested {
        digest: Digest,
        signed: SignedHeader,
        header_len: usize,
        early: Option<(PublicKey, SignatureStatus)>,
    },
}

/// Checks lines for one [`Verifier`] without its state, on any thread
/// ([`Verifier::line_checker`]).
#[derive(Clone)]
pub struct LineChecker {
    trusted_keys: Arc<[PublicKey]>,
    attested: bool,
    known: Arc<KnownKeys>,
}

impl LineChecker {
    /// The part of `line`'s checks that needs no other line (see [`Prepared`]).
    pub fn prepare(&self, origin: Origin<'_>, line: &[u8]) -> Prepared {
        prepare(&self.trusted_keys, self.attested.then_some(&*self.known), origin, line)
    }
}

/// The keys that verified attestation documents bind, by the document's SHA-256: a batch that
/// names one of them has its signature checked with the line's other checks, on whichever
/// thread makes them. Admission uses that result only where the document is the batch's and
/// its key this one (a document's verdict depends on the document alone).
pub(crate) type KnownKeys = RwLock<HashMap<Digest, PublicKey>>;

/// What a line's members say it is.
enum LineKind {
    Document,
    Checkpoint,
    Teelog,
    Seed,
    Neither,
}

fn line_kind(fields: &LineFields<'_>) -> LineKind {
    let teelog = fields.v.is_some()
        || fields.header.is_some()
        || fields.sig.is_some()
        || fields.hints.is_some()
        || fields.records.is_some();
    let seed = fields.seed_sequence.is_some()
        || fields.seed_payload.is_some()
        || fields.seed_signature.is_some()
        || fields.seed_thumbprint.is_some();
    if fields.attestation.is_some() {
        return LineKind::Document;
    }
    if fields.checkpoint.is_some() || fields.timestamp.is_some() {
        return LineKind::Checkpoint;
    }
    match (teelog, seed) {
        (true, false) => LineKind::Teelog,
        (false, true) => LineKind::Seed,
        _ => LineKind::Neither,
    }
}

/// The checks of `line` that need no other line: with `trusted` keys, and the keys `attested`
/// documents are known to bind when a verifier of attestation documents is given (batches
/// naming a document whose key is not known yet wait for it).
fn prepare(trusted: &[PublicKey], attested: Option<&KnownKeys>, origin: Origin<'_>, line: &[u8]) -> Prepared {
    if crate::record::is_blank(line) {
        return Prepared(Step::Blank);
    }
    let fields = match LineFields::read(line) {
        Ok(fields) => fields,
        Err(e) => return Prepared(Step::Malformed(format!("not a batch line: {e}"))),
    };
    Prepared(match line_kind(&fields) {
        LineKind::Document | LineKind::Checkpoint | LineKind::Seed => Step::Stateful,
        LineKind::Teelog => match prepare_teelog(trusted, attested, origin, line, fields) {
            Ok(batch) => Step::Batch(Box::new(batch)),
            Err(detail) => Step::Malformed(detail),
        },
        LineKind::Neither => Step::Malformed("neither a teelog batch nor a SignedLogBatch".into()),
    })
}

/// A teelog batch line (`fields` of `line`) checked on its own, or why it is malformed.
fn prepare_teelog(
    trusted: &[PublicKey],
    attested: Option<&KnownKeys>,
    origin: Origin<'_>,
    line: &[u8],
    fields: LineFields<'_>,
) -> Result<PreparedBatch, String> {
    let (Some(v), Some(header), Some(sig), Some(hints), Some(records)) =
        (fields.v, fields.header, fields.sig, fields.hints, fields.records)
    else {
        return Err("a teelog batch needs \"v\", \"header\", \"sig\", \"hints\" and \"records\"".into());
    };
    if v != crate::batch::FORMAT_VERSION {
        return Err(format!("batch format version {v} is not supported"));
    }
    let batch = ParsedBatch::from_parts(header, sig, hints, records).map_err(|e| e.to_string())?;
    Ok(check_alone(batch, trusted, attested, origin, line))
}

/// What `batch`, parsed from `line`, shows on its own: its records against the signed count, root
/// and hints, its layout, and its signature under the `trusted` keys, or, when `attested` and
/// the batch names a document, what that signature is to be checked with (and its status under
/// the key the document binds, if `attested` knows it). The verifier and the gate both judge a
/// batch from this.
pub(crate) fn check_alone(
    batch: ParsedBatch<'_>,
    trusted: &[PublicKey],
    attested: Option<&KnownKeys>,
    origin: Origin<'_>,
    line: &[u8],
) -> PreparedBatch {
    let RecordsCheck { status, hints_problem } = batch.check_records();
    let unsigned: Vec<String> = [batch.layout_deviation(line), hints_problem].into_iter().flatten().collect();
    let identity = match status {
        RecordsStatus::Intact => batch.identity(),
        RecordsStatus::Tampered { .. } => sha256(line),
    };
    let named = batch.header.attestation.as_deref().and_then(parse_digest);
    let signature = match (named, attested) {
        (Some(digest), Some(known)) => {
            let key = known.read().ok().and_then(|keys| keys.get(&digest).cloned());
            let early = key.map(|key| {
                let status = batch.verify_with(&key);
                (key, status)
            });
            BatchSignature::Attested {
                digest,
                signed: batch.signed_header(),
                header_len: batch.header_len(),
                early,
            }
        }
        _ => BatchSignature::Checked(batch.signature_status(trusted)),
    };
    let candidate = Candidate {
        origin: origin.to_string(),
        header: batch.header,
        header_hash: batch.header_hash,
        identity,
        records: status,
        unsigned,
    };
    PreparedBatch { candidate, signature }
}

#[derive(Debug, Default)]
struct EpochState {
    /// Validly signed headers by seq, as runs (crate::runs); more than one distinct header at a
    /// seq is equivocation.
    chain: EpochChain,
    /// The keys of its validly signed batches, each with the lowest seq it signed: one, unless
    /// someone else's key signed in this epoch.
    keys: Keys,
    /// Set by its first validly signed batch.
    signer: Option<Signer>,
    /// For the freshness check, when one is asked for (boxed: most runs ask for none).
    heard: Option<Box<Heard>>,
}

/// What an epoch's batches rest on (as its first validly signed batch says), and what kind of
/// epoch it is: one struct, so that the flags take no word of their own in every epoch.
#[derive(Debug)]
struct Signer {
    basis: TrustBasis,
    platform: Arc<str>,
    /// The epoch is a seed-format `AttestationCertThumbprint`, which nothing signs.
    seed: bool,
    /// Its key is bound by an attestation document (a TEE key starts one epoch).
    attested: bool,
}

impl EpochState {
    fn seed(&self) -> bool {
        self.signer.as_ref().is_some_and(|s| s.seed)
    }

    fn attested(&self) -> bool {
        self.signer.as_ref().is_some_and(|s| s.attested)
    }

    /// Notes a validly signed batch (arrival, sealed_at, seq) for the freshness check, when there
    /// is one (`credible` is then whether it can show freshness).
    fn hear(&mut self, credible: Option<bool>, point: (u64, UnixNanos, u64)) {
        let Some(credible) = credible else { return };
        let heard = self.heard.get_or_insert_with(|| Box::new(Heard { first: point, newest: None }));
        if credible && heard.newest.is_none_or(|(_, newest, _)| point.1 > newest) {
            heard.newest = Some(point);
        }
    }

    /// The epoch's key: the one that signed its lowest validly signed seq.
    fn key(&self) -> Option<&str> {
        self.key_shared().map(|key| &**key)
    }

    fn key_shared(&self) -> Option<&Arc<str>> {
        self.keys().iter().min_by_key(|(_, seq)| *seq).map(|(key, _)| key)
    }

    fn keys(&self) -> &[(Arc<str>, u64)] {
        match &self.keys {
            Keys::One(one) => std::slice::from_ref(one),
            Keys::Many(keys) => keys,
        }
    }

    /// Key `key` signed a batch at `seq`.
    fn signed_by(&mut self, key: Arc<str>, seq: u64) {
        let keys = match &mut self.keys {
            Keys::One(one) => std::slice::from_mut(one),
            Keys::Many(keys) => keys.as_mut_slice(),
        };
        if let Some((_, lowest)) = keys.iter_mut().find(|(k, _)| *k == key) {
            *lowest = (*lowest).min(seq);
            return;
        }
        self.keys = match std::mem::take(&mut self.keys) {
            Keys::Many(keys) if keys.is_empty() => Keys::One((key, seq)),
            Keys::One(one) => Keys::Many(vec![one, (key, seq)]),
            Keys::Many(mut keys) => {
                keys.push((key, seq));
                Keys::Many(keys)
            }
        };
    }
}

/// A stream and an epoch as the verifier's map of epochs keys them: both in one allocation
/// (`stream`, a zero byte, `epoch`), which orders as the pair (stream, epoch) does, since a stream
/// name has no zero byte (crate::batch::check_stream_name, and the seed format's constant).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct EpochKey(Box<str>);

impl EpochKey {
    fn new(stream: &str, epoch: &str) -> Self {
        EpochKey([stream, epoch].join("\0").into_boxed_str())
    }

    fn stream(&self) -> &str {
        self.0.split_once('\0').map_or(&self.0, |(stream, _)| stream)
    }

    fn epoch(&self) -> &str {
        self.0.split_once('\0').map_or("", |(_, epoch)| epoch)
    }
}

/// An epoch's keys: one, held in place (a list of one would cost an allocation per epoch), or
/// a list (empty before the first batch, or more than one key).
#[derive(Debug)]
enum Keys {
    One((Arc<str>, u64)),
    Many(Vec<(Arc<str>, u64)>),
}

impl Default for Keys {
    fn default() -> Self {
        Keys::Many(Vec::new())
    }
}

/// `text` as one shared copy: key ids, platforms and the names of sources repeat in every epoch,
/// and with many streams a copy each would cost more than the epoch's batches. Only names from validly signed
/// batches (trusted or attested keys) are held, so the set stays small.
fn shared(names: &mut HashSet<Arc<str>>, text: &str) -> Arc<str> {
    if let Some(name) = names.get(text) {
        return name.clone();
    }
    let name: Arc<str> = Arc::from(text);
    names.insert(name.clone());
    name
}

/// An attestation document from the input. It is verified when a batch first names it, so that
/// documents nothing names cost no signature checks; past a bound on the bytes held, on arrival.
struct Document {
    bytes: Vec<u8>,
    verdict: Option<Result<AttestedKey, DocumentError>>,
    named: bool,
}

/// A last line without its newline that is not a whole line: a write cut short, unless nothing
/// in the input begins with it.
struct Torn {
    origin: String,
    bytes: Vec<u8>,
    /// The identity of the batch line it is the start of, once one turned up.
    completed_by: Option<Digest>,
    /// A batch of that identity verified intact.
    verified: bool,
}

/// The chain verifier: every line of the input is pushed as it is read ([`Verifier::push_line`]),
/// and [`Verifier::finish`] judges the chains once all are in. What it holds is bounded by this
/// module's limits, whatever the input.
pub struct Verifier {
    options: VerifyOptions,
    attestation: Option<Box<dyn AttestationVerifier>>,
    /// Attestation documents seen, by the SHA-256 of their bytes.
    documents: HashMap<Digest, Document>,
    document_bytes: usize,
    failed_documents: usize,
    /// Batches that name a document not read yet, checked once every line is in.
    pending: Vec<(Candidate, SignedHeader)>,
    pending_bytes: usize,
    /// Identities of the other batch lines, up to a bound.
    seen_unverified: HashSet<Digest>,
    /// Identities of seed-format batches that verified intact: copies of those are told apart
    /// by payload and signature, never by the unsigned thumbprint that places them (the one
    /// thing still kept per batch, and only for that legacy format).
    seed_seen: HashSet<Digest>,
    /// Key ids and platforms, one copy each (see [`shared`]).
    names: HashSet<Arc<str>>,
    torn: Vec<Torn>,
    torn_bytes: usize,
    /// Boxed: a map node holds eleven entries and is often little more than half full, so an
    /// entry in place would cost nearly twice its size.
    epochs: BTreeMap<EpochKey, Box<EpochState>>,
    findings: Vec<Finding>,
    listed: BTreeMap<FindingKind, usize>,
    omitted: BTreeMap<FindingKind, u64>,
    batches: u64,
    records: u64,
    duplicates: u64,
    dev_attested: u64,
    torn_writes: u64,
    keys_needed: BTreeSet<String>,
    /// The (platform, measurement) pairs the timeline's segments name, by index.
    codes: Vec<(String, String)>,
    code_index: HashMap<(String, String), u32>,
    checkpoints: CheckpointCheck,
    /// Shared with the [`LineChecker`]s handed out.
    known_keys: Arc<KnownKeys>,
}

impl Verifier {
    /// A verifier with no line yet, judging by `options`.
    pub fn new(options: VerifyOptions) -> Self {
        Self {
            options,
            attestation: None,
            documents: HashMap::new(),
            document_bytes: 0,
            failed_documents: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            seen_unverified: HashSet::new(),
            seed_seen: HashSet::new(),
            names: HashSet::new(),
            torn: Vec::new(),
            torn_bytes: 0,
            epochs: BTreeMap::new(),
            findings: Vec::new(),
            listed: BTreeMap::new(),
            omitted: BTreeMap::new(),
            batches: 0,
            records: 0,
            duplicates: 0,
            dev_attested: 0,
            torn_writes: 0,
            keys_needed: BTreeSet::new(),
            codes: Vec::new(),
            code_index: HashMap::new(),
            checkpoints: CheckpointCheck::default(),
            known_keys: Arc::default(),
        }
    }

    /// Gateway checkpoints (docs/FORMAT.md §17) signed by one of `keys` are trusted: every batch
    /// they name must be in the input; their timestamp tokens are checked with `timestamps`, if
    /// given. Without keys, checkpoint lines are counted, not trusted.
    pub fn with_checkpoint_keys(
        mut self,
        keys: Vec<PublicKey>,
        timestamps: Option<Box<dyn crate::evidence::TimestampVerifier>>,
    ) -> Self {
        self.checkpoints = CheckpointCheck::new(keys);
        if let Some(timestamps) = timestamps {
            self.checkpoints = std::mem::take(&mut self.checkpoints).with_timestamps(timestamps);
        }
        self
    }

    /// Whether checkpoints are judged (a checkpoint key was given): only then are they worth
    /// reading from where they are kept apart.
    pub fn judges_checkpoints(&self) -> bool {
        self.checkpoints.judging()
    }

    /// Feeds one line that must be a checkpoint (e.g. from a file the auditor kept apart from
    /// the storage); anything else is `malformed`.
    pub fn push_checkpoint(&mut self, origin: Origin<'_>, line: &[u8]) {
        if let Some(finding) = self.checkpoints.push(origin, line) {
            self.report(finding);
        }
    }

    /// Batches that name an attestation document get their key from it, verified by `verifier`.
    pub fn with_attestation(mut self, verifier: Box<dyn AttestationVerifier>) -> Self {
        self.attestation = Some(verifier);
        self
    }

    /// Keeps `finding`, unless [`MAX_FINDINGS_PER_KIND`] of its kind are kept already: then it
    /// is only counted.
    fn report(&mut self, finding: Finding) {
        let listed = self.listed.entry(finding.kind).or_default();
        if *listed < MAX_FINDINGS_PER_KIND {
            *listed += 1;
            self.findings.push(finding);
        } else {
            *self.omitted.entry(finding.kind).or_default() += 1;
        }
    }

    /// Reports a line that could not even be read as a line (too long, not UTF-8, a file that
    /// cannot be read).
    pub fn push_malformed(&mut self, origin: Origin<'_>, detail: &str) {
        self.report(Finding::malformed(origin, detail));
    }

    /// Feeds the last line of an input that ends without a newline. A whole line is checked
    /// like any other; anything else is a write cut short, which does no harm when a batch line
    /// later in the input begins with exactly these bytes (the batch was written again), and is
    /// `malformed` otherwise.
    pub fn push_unterminated(&mut self, origin: Origin<'_>, line: &[u8]) {
        let whole = serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok();
        if whole || crate::record::is_blank(line) {
            return self.push_line(origin, line);
        }
        if self.torn.len() >= MAX_TORN || self.torn_bytes + line.len() > MAX_TORN_BYTES {
            return self.push_malformed(origin, "a torn last line (more torn lines than the verifier holds)");
        }
        self.torn_bytes += line.len();
        self.torn.push(Torn {
            origin: origin.to_string(),
            bytes: line.to_vec(),
            completed_by: None,
            verified: false,
        });
    }

    /// Feeds one line (without its newline). Blank lines are ignored.
    pub fn push_line(&mut self, origin: Origin<'_>, line: &[u8]) {
        let known = self.attestation.is_some().then_some(&*self.known_keys);
        let prepared = prepare(&self.options.trusted_keys, known, origin, line);
        self.admit(origin, line, prepared);
    }

    /// What checks lines for this verifier without its state, on any thread: see [`Prepared`].
    pub fn line_checker(&self) -> LineChecker {
        LineChecker {
            trusted_keys: self.options.trusted_keys.clone().into(),
            attested: self.attestation.is_some(),
            known: self.known_keys.clone(),
        }
    }

    /// Takes in a line that [`LineChecker::prepare`] (of this verifier's
    /// [`line_checker`](Self::line_checker)) made `prepared` of, given the same `origin` and
    /// `line`. Lines must be admitted in input order: the report is then the one
    /// [`push_line`](Self::push_line) gives.
    pub fn admit(&mut self, origin: Origin<'_>, line: &[u8], prepared: Prepared) {
        match prepared.0 {
            Step::Blank => {}
            Step::Malformed(detail) => self.push_malformed(origin, &detail),
            Step::Stateful => self.push_stateful(origin, line),
            Step::Batch(batch) => self.admit_teelog(line, *batch),
        }
    }

    /// A line whose every check needs the verifier's state: an attestation document, a
    /// checkpoint or a seed-format batch (a line [`prepare`] classified as one).
    fn push_stateful(&mut self, origin: Origin<'_>, line: &[u8]) {
        let fields = match LineFields::read(line) {
            Ok(fields) => fields,
            Err(e) => return self.push_malformed(origin, &format!("not a batch line: {e}")),
        };
        match line_kind(&fields) {
            LineKind::Document => self.push_document(origin, line, &fields),
            LineKind::Checkpoint => self.push_checkpoint(origin, line),
            LineKind::Seed => self.push_seed(origin, fields),
            LineKind::Teelog | LineKind::Neither => {
                self.push_malformed(origin, "neither a teelog batch nor a SignedLogBatch")
            }
        }
    }

    /// An attestation line (`fields` of `line`), kept until a batch names its document.
    fn push_document(&mut self, origin: Origin<'_>, line: &[u8], fields: &LineFields<'_>) {
        let bytes = match document_of(fields, line) {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return self.push_malformed(origin, &e),
            None => return,
        };
        let digest = sha256(&bytes);
        if self.documents.contains_key(&digest) {
            return;
        }
        let Some(verifier) = &self.attestation else {
            // Without a verifier, attested batches are judged by the trusted keys alone; the
            // document is kept only to say whether a batch names it.
            self.documents.insert(digest, Document { bytes: Vec::new(), verdict: None, named: false });
            return;
        };
        if self.document_bytes + bytes.len() <= MAX_DOCUMENT_BYTES {
            self.document_bytes += bytes.len();
            self.documents.insert(digest, Document { bytes, verdict: None, named: false });
            return;
        }
        // Past the bound on bytes held, a document is judged on arrival and only its verdict
        // kept; past the bound on documents that failed too, input is flooding the verifier with
        // them, and judging each would cost it without limit: no more are judged or kept (a batch
        // naming one then finds it missing, never trusted).
        if self.failed_documents >= MAX_FAILED_DOCUMENTS {
            return;
        }
        let verdict = verifier.verify_document(&bytes);
        if verdict.is_err() {
            self.failed_documents += 1;
        }
        self.documents.insert(digest, Document { bytes: Vec::new(), verdict: Some(verdict), named: false });
    }

    /// A teelog batch checked on its own ([`prepare_teelog`]): its place among the torn lines,
    /// the attestation document it names, the chain.
    fn admit_teelog(&mut self, line: &[u8], batch: PreparedBatch) {
        let PreparedBatch { candidate, signature } = batch;
        self.complete_torn(line, candidate.identity);
        let (digest, signed, header_len, early) = match signature {
            BatchSignature::Checked(status) => return self.accept(candidate, None, Ok(status)),
            BatchSignature::Attested { digest, signed, header_len, early } => {
                (digest, signed, header_len, early)
            }
        };
        if self.documents.contains_key(&digest) {
            return self.accept_attested(candidate, &signed, digest, early);
        }
        // Lines come in any order: wait for the document, within a bound. What is held is the
        // parsed header, its bytes and the signature, not the records.
        let size = 2048 + header_len;
        if self.pending_bytes + size > MAX_PENDING_BYTES {
            let why = "its attestation document was not in the input before it, and the verifier holds no more batches waiting for one: put the attestation lines first";
            return self.accept(candidate, None, Err(why.to_string()));
        }
        self.pending_bytes += size;
        self.pending.push((candidate, signed));
    }

    /// Marks the torn lines that `line` (of batch `identity`) begins with.
    fn complete_torn(&mut self, line: &[u8], identity: Digest) {
        for torn in self.torn.iter_mut().filter(|t| t.completed_by.is_none()) {
            if line.len() > torn.bytes.len() && line.starts_with(&torn.bytes) {
                torn.completed_by = Some(identity);
            }
        }
    }

    /// Checks a batch against the document `digest` it names, now that every document it can
    /// have is in; `early` is its signature's status under a key checked before, if it was.
    fn accept_attested(
        &mut self,
        batch: Candidate,
        signed: &SignedHeader,
        digest: Digest,
        early: Option<(PublicKey, SignatureStatus)>,
    ) {
        let document = self.documents.get_mut(&digest);
        let verdict = match document {
            None => Err(format!(
                "attestation document {} is not in the input (or is one of more than {MAX_FAILED_DOCUMENTS} that did not verify)",
                hex::encode(digest)
            )),
            Some(document) => {
                document.named = true;
                match (&document.verdict, &self.attestation) {
                    (Some(verdict), _) => verdict.clone().map_err(|e| e.to_string()),
                    (None, Some(verifier)) => {
                        let verdict = verifier.verify_document(&document.bytes);
                        self.document_bytes -= document.bytes.len();
                        document.bytes = Vec::new();
                        document.verdict.insert(verdict).clone().map_err(|e| e.to_string())
                    }
                    (None, None) => Err("no attestation verifier".into()),
                }
            }
        };
        match verdict {
            Err(why) => self.accept(batch, None, Err(why)),
            Ok(attested) => {
                let status = match early {
                    Some((key, status)) if key == attested.key => status,
                    _ => signed.verify_with(&batch.header, &attested.key),
                };
                self.know_key(digest, &attested.key);
                let (signature, broken_link) = attested_judgement(status, &batch.header, &attested);
                if let (SignatureStatus::Valid, Some(detail)) = (&signature, broken_link) {
                    self.report(Finding::about(
                        FindingKind::ChainBreak,
                        &batch.header,
                        None,
                        &batch.origin,
                        &detail,
                    ));
                }
                self.accept(batch, Some(&attested), Ok(signature));
            }
        }
    }

    /// Remembers that document `digest` binds `key`, for the lines checked from now on.
    fn know_key(&mut self, digest: Digest, key: &PublicKey) {
        let known = self.known_keys.read().is_ok_and(|keys| keys.contains_key(&digest));
        if !known {
            if let Ok(mut keys) = self.known_keys.write() {
                keys.insert(digest, key.clone());
            }
        }
    }

    /// Counts the batch `identity` (of a line that verified intact, or not): true for its first
    /// copy, false for a duplicate. A teelog batch that verified intact is a copy of the one held
    /// at its `place` (stream and epoch, seq) with its header hash, which is all that is kept of
    /// it; a seed-format batch, whose epoch nothing signs, by identity. Lines that did not verify
    /// are told apart by identity, within a bound.
    fn count_copy(
        &mut self,
        place: Option<(&EpochKey, u64, &Digest)>,
        identity: Digest,
        verified_intact: bool,
    ) -> bool {
        let first = if verified_intact {
            for torn in self.torn.iter_mut().filter(|t| t.completed_by == Some(identity)) {
                torn.verified = true;
            }
            match place {
                Some((key, seq, hash)) => {
                    self.epochs.get_mut(key).is_none_or(|e| e.chain.first_intact_copy(seq, hash))
                }
                None => self.seed_seen.insert(identity),
            }
        } else if self.seen_unverified.contains(&identity) {
            false
        } else {
            if self.seen_unverified.len() < MAX_UNVERIFIED_IDENTITIES {
                self.seen_unverified.insert(identity);
            }
            true
        };
        if first {
            self.batches += 1;
        } else {
            self.duplicates += 1;
        }
        first
    }

    /// Remembers, when the caller gave no trusted key at all, which key a batch without an
    /// attestation document needed (a usage error to report, within a bound).
    fn note_key_needed(&mut self, key: impl FnOnce() -> String) {
        if self.options.trusted_keys.is_empty() && self.keys_needed.len() < MAX_LISTED {
            self.keys_needed.insert(key());
        }
    }

    /// Records a checked batch: its findings, and if its signature holds, its place in the chain.
    /// `attested` is what its verified attestation document says of its key; `signature` is the
    /// signature's status, or why the document it names is not trusted.
    fn accept(
        &mut self,
        batch: Candidate,
        attested: Option<&AttestedKey>,
        signature: Result<SignatureStatus, String>,
    ) {
        let h = &batch.header;
        let key = EpochKey::new(&h.stream, &h.epoch);
        let about =
            |kind, record_index, detail: &str| Finding::about(kind, h, record_index, &batch.origin, detail);
        let verified = matches!(signature, Ok(SignatureStatus::Valid));
        let intact = matches!(batch.records, RecordsStatus::Intact);
        if verified {
            // Reported for every copy that carries them, duplicates too.
            for problem in &batch.unsigned {
                let finding = about(FindingKind::UnsignedContent, None, problem);
                self.report(finding);
            }
        }
        if !self.count_copy(Some((&key, h.seq, &batch.header_hash)), batch.identity, verified && intact) {
            return;
        }
        let failure = match signature {
            Ok(SignatureStatus::Valid) => None,
            Ok(SignatureStatus::Invalid(why)) => Some((FindingKind::InvalidSignature, why)),
            Err(why) => Some((FindingKind::UntrustedAttestation, why)),
        };
        if let Some((kind, why)) = failure {
            if kind == FindingKind::InvalidSignature && attested.is_none() {
                self.note_key_needed(|| h.key_id.clone());
            }
            let finding = about(kind, None, &why);
            self.report(finding);
            return;
        }
        if let RecordsStatus::Tampered { record_index, detail } = &batch.records {
            let finding = about(FindingKind::RecordTampered, *record_index, detail);
            self.report(finding);
        } else {
            self.records += h.count;
        }
        let sealed_at = h.sealed_at_nanos().unwrap_or_default();
        for detail in time_objections(&self.options, self.options.now, h, attested) {
            let finding = about(FindingKind::TimeAnomaly, None, &detail);
            self.report(finding);
        }
        let MeasurementCheck { platform, measurement, judgement, objection } =
            judge_measurement(&self.options, h, attested);
        if let Some(detail) = objection {
            let finding = about(FindingKind::UnexpectedMeasurement, None, &detail);
            self.report(finding);
        }
        if attested.is_some_and(|a| a.anchor == TrustBasis::DevRoot) {
            self.dev_attested += 1;
        }
        let segment = self.segment(h.seq, sealed_at, &platform, &measurement, judgement.as_ref());
        let slot = Slot {
            header_hash: batch.header_hash,
            // Validated (crate::batch): 64 lower-case hex digits.
            prev: h.prev.as_deref().and_then(parse_digest).map(Box::new),
            origin: Place::new(&batch.origin, |source| shared(&mut self.names, source)),
            sealed_at,
        };
        let arrival = self.batches;
        let credible = self.credible(sealed_at);
        let (key_id, platform) = (shared(&mut self.names, &h.key_id), shared(&mut self.names, &platform));
        let epoch = self.epochs.entry(key).or_default();
        epoch.signed_by(key_id, h.seq);
        let signer = epoch.signer.get_or_insert_with(|| Signer {
            basis: attested.map_or(TrustBasis::BarePublicKey, |a| a.anchor),
            platform,
            seed: false,
            attested: false,
        });
        signer.attested |= attested.is_some();
        epoch.hear(credible, (arrival, sealed_at, h.seq));
        let shown = epoch.chain.insert(Arrival { seq: h.seq, slot, chained: true, intact, segment });
        for (seq, detail) in shown {
            let finding = Finding { seq: Some(seq), detail, ..about(FindingKind::TimeAnomaly, None, "") };
            self.report(finding);
        }
    }

    /// The timeline's segment of one batch, when the report carries a timeline.
    fn segment(
        &mut self,
        seq: u64,
        sealed_at: UnixNanos,
        platform: &str,
        measurement: &str,
        judgement: Option<&Judgement>,
    ) -> Option<Segment> {
        (self.options.policy.is_some() || self.options.timeline).then(|| Segment {
            first: seq,
            last: seq,
            from: sealed_at,
            to: sealed_at,
            code: self.code(platform, measurement),
            version: judgement.and_then(|j| j.version().map(str::to_string)),
            allowed: judgement.is_none_or(Judgement::allowed),
            batches: 1,
        })
    }

    /// With a freshness bound, whether a batch sealed at `sealed_at` can show freshness (one
    /// sealed in the future, beyond the skew, cannot).
    fn credible(&self, sealed_at: UnixNanos) -> Option<bool> {
        let skew = self.options.skew();
        self.options.freshness.map(|f| sealed_at <= f.now.saturating_add(skew))
    }

    /// The index of the code (`platform`, `measurement`) in the timeline's table.
    fn code(&mut self, platform: &str, measurement: &str) -> u32 {
        let key = (platform.to_string(), measurement.to_string());
        if let Some(index) = self.code_index.get(&key) {
            return *index;
        }
        let index = u32::try_from(self.codes.len()).unwrap_or(u32::MAX);
        self.codes.push(key.clone());
        self.code_index.insert(key, index);
        index
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
                Err(e) => return self.push_malformed(origin, &e.to_string()),
            };
        let verified_intact =
            checked.signature == SignatureStatus::Valid && checked.records == RecordsStatus::Intact;
        let key = EpochKey::new(SEED_STREAM, &checked.thumbprint);
        let (seq, hash) = (checked.sequence, checked.payload_hash);
        if !self.count_copy(None, checked.identity, verified_intact) {
            return;
        }
        let finding = |kind, detail: String| Finding {
            kind,
            stream: Some(SEED_STREAM.to_string()),
            epoch: Some(checked.thumbprint.clone()),
            seq: Some(checked.sequence),
            record_index: None,
            detail: format!(
                "{origin}: {detail} (epoch is the AttestationCertThumbprint, which nothing signs)"
            ),
        };
        if let SignatureStatus::Invalid(why) = &checked.signature {
            self.note_key_needed(|| format!("of the SignedLogBatch thumbprint {}", checked.thumbprint));
            self.report(finding(FindingKind::InvalidSignature, why.clone()));
            return;
        }
        if let RecordsStatus::Tampered { detail, .. } = &checked.records {
            self.report(finding(FindingKind::RecordTampered, detail.clone()));
        } else {
            self.records += checked.record_count;
        }
        if let Some(expected) = &self.options.expect_measurement {
            if !checked.measurement.eq_ignore_ascii_case(expected) {
                let detail = format!("tee_measurement is {}, expected {expected}", checked.measurement);
                self.report(finding(FindingKind::UnexpectedMeasurement, detail));
            }
        }
        // Judged as every batch is: by the policy (a bare key's signer, so "software"), the
        // verification time and freshness, on the signed timestamp_utc; without one, the batch
        // dates from nothing, which no window and no freshness bound accepts.
        let sealed_at = checked.sealed_at.unwrap_or_default();
        if let (Some(now), Some(stamped)) = (self.options.now, checked.sealed_at) {
            let skew = self.options.skew();
            if stamped > now.saturating_add(skew) {
                let detail = format!(
                    "timestamp_utc {} is later than the verification time {} by more than {} s (--max-skew)",
                    format_rfc3339(stamped),
                    format_rfc3339(now),
                    skew / 1_000_000_000
                );
                self.report(finding(FindingKind::TimeAnomaly, detail));
            }
        }
        let judgement =
            self.options.policy.as_ref().map(|p| p.judge("software", &checked.measurement, sealed_at));
        if let Some(detail) =
            policy_objection("software", &checked.measurement, sealed_at, judgement.as_ref())
        {
            self.report(finding(FindingKind::UnexpectedMeasurement, detail));
        }
        let segment = self.segment(seq, sealed_at, "software", &checked.measurement, judgement.as_ref());
        let credible = self.credible(sealed_at);
        let arrival = self.batches;
        let intact = checked.records == RecordsStatus::Intact;
        let origin = Place::new(&origin.to_string(), |source| shared(&mut self.names, source));
        let slot = Slot { header_hash: hash, prev: None, origin, sealed_at: 0 };
        let (key_id, software) =
            (shared(&mut self.names, &checked.key_id), shared(&mut self.names, "software"));
        let epoch = self.epochs.entry(key).or_default();
        epoch.signed_by(key_id, seq);
        let signer = epoch.signer.get_or_insert(Signer {
            basis: TrustBasis::BarePublicKey,
            platform: software,
            seed: false,
            attested: false,
        });
        signer.seed = true;
        epoch.hear(credible, (arrival, sealed_at, seq));
        epoch.chain.insert(Arrival { seq, slot, chained: false, intact, segment });
    }

    /// Runs the chain checks and returns the report, findings ordered by stream, epoch, seq.
    pub fn finish(mut self) -> Report {
        for (batch, signed) in std::mem::take(&mut self.pending) {
            let digest = batch.header.attestation.as_deref().and_then(parse_digest).unwrap_or_default();
            self.accept_attested(batch, &signed, digest, None);
        }
        for torn in std::mem::take(&mut self.torn) {
            if torn.verified {
                self.torn_writes += 1;
            } else {
                self.report(Finding::unplaced(
                    FindingKind::Malformed,
                    format!(
                        "{}: the last line ends without a newline and is not a whole line (a torn write), and no batch line that verifies begins with its {} bytes",
                        torn.origin,
                        torn.bytes.len()
                    ),
                ));
            }
        }
        let mut unreferenced: Vec<String> =
            self.documents.iter().filter(|(_, d)| !d.named).map(|(digest, _)| hex::encode(digest)).collect();
        unreferenced.sort_unstable();
        unreferenced.truncate(MAX_LISTED);

        // What looks up epochs across streams goes first, while they are all held: the
        // checkpoints, and whether each stream and instance expected has a batch that verified.
        let checkpoint_lines = self.checkpoints.lines();
        let checkpoint_times = self.checkpoints.stamped();
        let stored = |stream: &str, epoch: &str, seq: u64| {
            stored_at(self.epochs.get(&EpochKey::new(stream, epoch)).map(Box::as_ref), seq)
        };
        // A stream per epoch with batches; the check takes each stream once.
        let signed_streams =
            self.epochs.iter().filter(|(_, e)| !e.chain.is_empty()).map(|(key, _)| key.stream());
        let checkpoint_findings = std::mem::take(&mut self.checkpoints).finish(&stored, signed_streams);
        let anything_verified = self.epochs.values().any(|e| !e.chain.is_empty());
        let missing = self.missing_streams();

        // Then each stream's epochs in turn (the map is ordered by stream, then epoch): judged,
        // and turned into the stream's part of the report, its state freed as it goes, so that
        // the state of every stream and the report of every stream are never held at once.
        let mut done = StreamsDone {
            findings: Vec::new(),
            stale: Vec::new(),
            instances: Vec::new(),
            trust: Vec::new(),
            timeline: (self.options.policy.is_some() || self.options.timeline).then(Vec::new),
        };
        let mut group: Vec<(EpochKey, Box<EpochState>)> = Vec::new();
        let mut entries = std::mem::take(&mut self.epochs).into_iter().peekable();
        while let Some((key, state)) = entries.next() {
            let last = entries.peek().is_none_or(|(next, _)| next.stream() != key.stream());
            group.push((key, state));
            if last {
                self.stream_done(&mut group, &mut done);
            }
        }
        drop(group);
        let StreamsDone { findings: mut chain_findings, stale, instances, trust, timeline } = done;
        chain_findings.extend(checkpoint_findings);
        chain_findings.extend(stale);
        let nothing_else = chain_findings.is_empty() && self.findings.is_empty() && self.omitted.is_empty();
        if !anything_verified && nothing_else && !self.options.allow_empty {
            chain_findings.push(Finding::unplaced(
                FindingKind::NothingVerified,
                "no batch in the input verified, so nothing is proven: check the input's path, or pass --allow-empty where none is expected".into(),
            ));
        }
        chain_findings.extend(missing);
        for finding in chain_findings {
            self.report(finding);
        }
        self.findings
            .sort_by(|a, b| (&a.stream, &a.epoch, a.seq, a.kind).cmp(&(&b.stream, &b.epoch, b.seq, b.kind)));
        let measurements_unjudged = self.options.policy.is_none()
            && self.options.expect_measurement.is_none()
            && trust.iter().any(|t| t.basis != TrustBasis::BarePublicKey);
        Report {
            ok: self.findings.is_empty() && self.omitted.is_empty(),
            batches: self.batches,
            records: self.records,
            duplicates: self.duplicates,
            findings: self.findings,
            omitted_findings: self.omitted,
            torn_writes: self.torn_writes,
            unreferenced_documents: unreferenced,
            trust,
            instances,
            checkpoints: checkpoint_lines,
            checkpoint_times,
            dev_attested: self.dev_attested,
            keys_needed: self.keys_needed.into_iter().collect(),
            timeline,
            measurements_unjudged,
        }
    }

    /// The streams (`--expect-stream`) and pinned instances expected but without a batch that
    /// verified.
    fn missing_streams(&self) -> Vec<Finding> {
        let mut missing = Vec::new();
        let verified_in = |stream: &str| {
            let epochs = self.epochs.range(EpochKey::new(stream, "")..);
            epochs.take_while(|(key, _)| key.stream() == stream).any(|(_, e)| !e.chain.is_empty())
        };
        for stream in &self.options.expect_streams {
            if !verified_in(stream) {
                missing.push(Finding {
                    kind: FindingKind::MissingStream,
                    stream: Some(stream.clone()),
                    epoch: None,
                    seq: None,
                    record_index: None,
                    detail: format!(
                        "stream {stream:?} was expected (--expect-stream), but no batch of it verified"
                    ),
                });
            }
        }
        for (stream, pins) in &self.options.instances.pinned {
            let present = |epoch: &String| {
                self.epochs.get(&EpochKey::new(stream, epoch)).is_some_and(|e| !e.chain.is_empty())
            };
            for epoch in pins.iter().filter(|e| !present(e)) {
                missing.push(Finding {
                    kind: FindingKind::MissingStream,
                    stream: Some(stream.clone()),
                    epoch: Some(epoch.clone()),
                    seq: None,
                    record_index: None,
                    detail: format!(
                        "instance {epoch} of stream {stream:?} was expected (--expect-stream {stream}={epoch}), but no batch of its first epoch verified: the stream may have been replaced by another instance, or cut"
                    ),
                });
            }
        }
        missing
    }

    /// Judges one stream, `group` holding all its epochs in epoch order, and adds its part of the
    /// report to `done`: its chain findings, its instances, its epochs' trust, its timeline and
    /// its freshness. The epochs' state is freed here, and `group` left empty.
    fn stream_done(&self, group: &mut Vec<(EpochKey, Box<EpochState>)>, done: &mut StreamsDone) {
        // The stream's and epochs' names, one shared copy each for its trust and instances.
        let Some((first, _)) = group.first() else { return };
        let stream: Arc<str> = Arc::from(first.stream());
        let epochs: Vec<(Arc<str>, Box<EpochState>)> =
            group.drain(..).map(|(key, s)| (Arc::from(key.epoch()), s)).collect();
        let views: Vec<(&str, &EpochState)> = epochs.iter().map(|(e, s)| (&**e, &**s)).collect();
        let name = |epoch: &str| match epochs.binary_search_by(|(e, _)| (**e).cmp(epoch)) {
            Ok(i) => epochs[i].0.clone(),
            Err(_) => Arc::from(epoch),
        };
        let instances = check_stream(&stream, &views, &name, &self.options.instances, &mut done.findings);
        if let Some(freshness) = self.options.freshness {
            let instance_of: HashMap<&str, &str> =
                instances.iter().flat_map(|i| i.epochs.iter().map(move |e| (&**e, &*i.instance))).collect();
            let mut heard: Vec<Beat<'_>> = Vec::new();
            for (epoch, state) in &views {
                let Some(h) = state.heard.as_deref() else { continue };
                for (arrival, sealed_at, seq) in std::iter::once(h.first).chain(h.newest) {
                    heard.push(Beat { stream: &stream, epoch, seq, sealed_at, arrival });
                }
            }
            heard.sort_by_key(|b| b.arrival);
            let instance = |_: &str, epoch: &str| instance_of.get(epoch).copied();
            done.stale.extend(stale_streams(&heard, freshness, self.options.skew(), instance));
        }
        if let Some(timeline) = &mut done.timeline {
            build_timeline(&stream, &views, &self.codes, timeline);
        }
        drop(views);
        done.instances.extend(instances);
        for (epoch, state) in epochs {
            let Some(signer) = &state.signer else { continue };
            done.trust.push(EpochTrust {
                key_id: state.key_shared().cloned().unwrap_or_else(|| Arc::from("")),
                stream: stream.clone(),
                epoch,
                basis: signer.basis,
                platform: signer.platform.clone(),
                batches: state.chain.batches(),
                epoch_unsigned: signer.seed,
            });
        }
    }
}

/// The streams' parts of the report, as [`Verifier::finish`] judges them one by one.
struct StreamsDone {
    findings: Vec<Finding>,
    /// Freshness findings, reported after the chain and checkpoint findings.
    stale: Vec<Finding>,
    instances: Vec<StreamInstance>,
    trust: Vec<EpochTrust>,
    /// With a policy or a timeline asked for.
    timeline: Option<Vec<TimelineEntry>>,
}

/// The document of an attestation line: exactly `{"v":1,"attestation":"<standard base64>"}`
/// (docs/FORMAT.md §7a), or why a line with an `attestation` member is not one; None for a line
/// without that member.
pub(crate) fn document_of(fields: &LineFields<'_>, line: &[u8]) -> Option<Result<Vec<u8>, String>> {
    let document = fields.attestation.as_deref()?;
    let bytes = match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, document) {
        Ok(bytes) => bytes,
        Err(e) => return Some(Err(format!("attestation: not base64: {e}"))),
    };
    let exact = crate::batch::attestation_line(&bytes);
    Some(if exact.strip_suffix(b"\n") == Some(line) {
        Ok(bytes)
    } else {
        Err("an attestation line is exactly {\"v\":1,\"attestation\":\"<standard base64>\"}, with no other member, space or spelling".into())
    })
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What `epoch` holds at `seq`, for the checkpoint check.
fn stored_at(epoch: Option<&EpochState>, seq: u64) -> Stored {
    match epoch {
        Some(epoch) => epoch.chain.stored(seq),
        None => Stored::Missing { from: 1, epoch_present: false },
    }
}

/// A SHA-256 named in hex.
fn parse_digest(hex_text: &str) -> Option<Digest> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut digest).ok()?;
    Some(digest)
}

/// Why the `sealed_at` of the validly signed batch `h` cannot be believed, judged on the batch
/// alone: later than `now` (the verification or arrival time, if known) by more than the allowed
/// skew, or before the attestation document that binds its key was made.
pub(crate) fn time_objections(
    options: &VerifyOptions,
    now: Option<UnixNanos>,
    h: &Header,
    attested: Option<&AttestedKey>,
) -> Vec<String> {
    let sealed_at = h.sealed_at_nanos().unwrap_or_default();
    let mut objections = Vec::new();
    if let Some(now) = now {
        let skew = options.skew();
        if sealed_at > now.saturating_add(skew) {
            objections.push(format!(
                "sealed at {}, later than the verification time {} by more than {} s (--max-skew): the signer's clock is wrong or the batch was made to look fresh",
                h.sealed_at,
                format_rfc3339(now),
                skew / 1_000_000_000
            ));
        }
    }
    if let Some(made) = attested.and_then(|a| a.attested_at).filter(|&made| sealed_at < made) {
        objections.push(format!(
            "sealed at {}, before its attestation document was made ({}): the key cannot have signed it then",
            h.sealed_at,
            format_rfc3339(made)
        ));
    }
    objections
}

/// The measurement check of one validly signed batch.
pub(crate) struct MeasurementCheck {
    pub platform: String,
    pub measurement: String,
    pub judgement: Option<Judgement>,
    /// Why the measurement is not acceptable, if it is not.
    pub objection: Option<String>,
}

/// Judges the measurement of batch `h`: the one its attestation document vouches for, else the
/// one its header claims. The policy's windows are judged at the time the platform attests the
/// document was made where it says (the signer's clock belongs to the host), else at `sealed_at`.
pub(crate) fn judge_measurement(
    options: &VerifyOptions,
    h: &Header,
    attested: Option<&AttestedKey>,
) -> MeasurementCheck {
    let claimed = h.measurement.as_deref().unwrap_or("(none)");
    let (platform, measurement) =
        attested.map_or(("software", claimed), |a| (a.platform.as_str(), a.measurement.as_str()));
    let at = attested.and_then(|a| a.attested_at).unwrap_or_else(|| h.sealed_at_nanos().unwrap_or_default());
    let judgement = options.policy.as_ref().map(|p| p.judge(platform, measurement, at));
    let objection = if measurement != claimed {
        Some(format!("the header claims measurement {claimed}, the attestation document {measurement}"))
    } else if let Some(expected) = options.expect_measurement.as_deref().filter(|e| *e != measurement) {
        Some(format!("signed by code measured {measurement}, expected {expected}"))
    } else {
        policy_objection(platform, measurement, at, judgement.as_ref())
    };
    MeasurementCheck {
        platform: platform.to_string(),
        measurement: measurement.to_string(),
        judgement,
        objection,
    }
}

/// Why the policy's `judgement` of `measurement` on `platform` at `at` does not allow it, if it
/// does not.
fn policy_objection(
    platform: &str,
    measurement: &str,
    at: UnixNanos,
    judgement: Option<&Judgement>,
) -> Option<String> {
    match judgement? {
        Judgement::NotListed => Some(format!("measurement {measurement} ({platform}) is not in the policy")),
        Judgement::OutsideWindow { version, window } => Some(format!(
            "measurement {measurement} ({platform}, {version}) is allowed {window}, not at {}",
            format_rfc3339(at)
        )),
        _ => None,
    }
}

/// The signature of batch `h` under the key its verified attestation document binds, and, for
/// the first batch of an epoch, why its link contradicts the head the document attests.
pub(crate) fn attested_signature(
    signed: &SignedHeader,
    h: &Header,
    attested: &AttestedKey,
) -> (SignatureStatus, Option<String>) {
    attested_judgement(signed.verify_with(h, &attested.key), h, attested)
}

/// [`attested_signature`], given the `status` of the signature under the document's key.
fn attested_judgement(
    status: SignatureStatus,
    h: &Header,
    attested: &AttestedKey,
) -> (SignatureStatus, Option<String>) {
    let signature = match status {
        SignatureStatus::Invalid(_) if attested.key.id_hex() != h.key_id => {
            SignatureStatus::Invalid(format!(
                "signed by key {}, but its attestation document binds key {}",
                h.key_id,
                attested.key.id_hex()
            ))
        }
        status => status,
    };
    let broken_link = match (h.seq, attested.previous_head.as_deref(), h.prev.as_deref()) {
        (1, Some(head), prev) if prev != Some(head) => Some(format!(
            "the attestation document attests that this epoch continues from header {head}, but it links to {}",
            prev.unwrap_or("nothing")
        )),
        (1, None, Some(prev)) => Some(format!(
            "the attestation document attests no previous head, so it can only start a stream (or an instance of one, §5.5), but this epoch continues from header {prev}"
        )),
        _ => None,
    };
    (signature, broken_link)
}

/// A finding for each instance of a stream (`instance` names it, given stream and epoch) whose
/// newest validly signed batch is older than allowed: another instance going on does not show
/// that this one's tail is all there. A batch sealed in the future (beyond `skew`) proves nothing
/// about freshness: an instance with only such batches is stale too.
fn stale_streams<'a>(
    points: &'a [Beat<'a>],
    freshness: Freshness,
    skew: UnixNanos,
    instance: impl Fn(&str, &str) -> Option<&'a str>,
) -> Vec<Finding> {
    let latest_credible = freshness.now.saturating_add(skew);
    // Per stream and instance: the newest credible batch, or else any batch to name.
    let mut newest: BTreeMap<(&str, Option<&str>), (&Beat<'_>, bool)> = BTreeMap::new();
    for p in points {
        let credible = p.sealed_at <= latest_credible;
        let entry = newest.entry((p.stream, instance(p.stream, p.epoch))).or_insert((p, credible));
        if credible && (!entry.1 || p.sealed_at > entry.0.sealed_at) {
            *entry = (p, true);
        }
    }
    let seconds = |ns: UnixNanos| ns / 1_000_000_000;
    newest
        .into_iter()
        .filter(|(_, (p, credible))| !credible || freshness.now.saturating_sub(p.sealed_at) > freshness.max_silence)
        .map(|((_, instance), (p, credible))| {
            let of = instance.map_or(String::new(), |i| format!(" of the instance from epoch {i}"));
            Finding {
            kind: FindingKind::StaleStream,
            stream: Some(p.stream.to_string()),
            epoch: Some(p.epoch.to_string()),
            seq: Some(p.seq),
            record_index: None,
            detail: if credible {
                format!(
                    "the newest batch{of} was sealed at {}, {} s before {}, longer than the {} s allowed: batches after it may have been cut off",
                    format_rfc3339(p.sealed_at),
                    seconds(freshness.now.saturating_sub(p.sealed_at)),
                    format_rfc3339(freshness.now),
                    seconds(freshness.max_silence)
                )
            } else {
                format!(
                    "every batch{of} claims to be sealed after {} (this one at {}), so none shows it is alive: batches may have been cut off",
                    format_rfc3339(latest_credible),
                    format_rfc3339(p.sealed_at)
                )
            },
        }})
        .collect()
}

/// A batch the freshness check looks at: per epoch, the first read and the newest credible one,
/// in the order they were read (`arrival`).
struct Beat<'a> {
    stream: &'a str,
    epoch: &'a str,
    seq: u64,
    sealed_at: UnixNanos,
    arrival: u64,
}

/// Runs of batches of `stream` with one (platform, measurement), in `sealed_at` order, added to
/// `runs`. Each epoch
/// keeps its batches as segments of one code over consecutive seqs (crate::runs); these are put
/// in order of their first batch's `sealed_at` and joined where neighbours share a code. Where
/// the epochs of a stream follow one another in time this is the run of every batch by
/// `sealed_at`; instances that interleave in time show one entry per segment, not per batch.
fn build_timeline(
    stream: &str,
    epochs: &[(&str, &EpochState)],
    codes: &[(String, String)],
    runs: &mut Vec<TimelineEntry>,
) {
    let mut segments: Vec<(&str, &Segment)> =
        epochs.iter().flat_map(|(epoch, state)| state.chain.segments().map(move |s| (*epoch, s))).collect();
    segments.sort_by(|a, b| (a.1.from, a.0, a.1.first).cmp(&(b.1.from, b.0, b.1.first)));
    let mut last_code = None;
    for (epoch, s) in segments {
        let (platform, measurement) = codes.get(s.code as usize).cloned().unwrap_or_default();
        let to = format_rfc3339(s.to);
        let last = format!("{epoch}:{}", s.last);
        match runs.last_mut() {
            Some(run) if run.stream == stream && last_code == Some(s.code) => {
                run.batches += s.batches;
                run.allowed &= s.allowed;
                run.to = to;
                run.last = last;
            }
            _ => runs.push(TimelineEntry {
                stream: stream.to_string(),
                platform,
                measurement,
                version: s.version.clone(),
                allowed: s.allowed,
                batches: s.batches,
                from: format_rfc3339(s.from),
                to,
                first: format!("{epoch}:{}", s.first),
                last,
            }),
        }
        last_code = Some(s.code);
    }
}

/// The chain rules over one stream's epochs; returns its instances, their names shared through
/// `name`.
fn check_stream(
    stream: &Arc<str>,
    epochs: &[(&str, &EpochState)],
    name: &dyn Fn(&str) -> Arc<str>,
    rules: &InstanceRules,
    out: &mut Vec<Finding>,
) -> Vec<StreamInstance> {
    let finding = |kind, epoch: &str, seq, detail: String| Finding {
        kind,
        stream: Some(stream.to_string()),
        epoch: Some(epoch.to_string()),
        seq: Some(seq),
        record_index: None,
        detail,
    };
    // The first batches of the epochs, and the headers they continue from, found among every
    // header of the stream (by print, which is all that is kept of most): the targets of epoch
    // hand-over links.
    let firsts: BTreeMap<&str, Vec<&Slot>> = epochs
        .iter()
        .filter(|(_, state)| !state.seed())
        .map(|(epoch, state)| (*epoch, state.chain.heads_at(1)))
        .collect();
    let wanted: HashSet<Print> =
        firsts.values().flatten().filter_map(|s| s.prev.as_deref().map(print_of)).collect();
    let mut index: HashMap<Print, (&str, u64, UnixNanos)> = HashMap::new();
    if !wanted.is_empty() {
        for (epoch, state) in epochs {
            for (seq, print, sealed_at) in state.chain.prints().filter(|(_, p, _)| wanted.contains(p)) {
                index.insert(print, (epoch, seq, sealed_at));
            }
        }
    }
    // Looked up for every hand-over: a scan each time would be quadratic in the epochs.
    let by_name: HashMap<&str, &EpochState> = epochs.iter().copied().collect();
    let mut genesis: Vec<&str> = Vec::new();
    // The epochs whose first batch continues from each header: more than one forks the stream.
    let mut successors: HashMap<&Digest, Vec<&str>> = HashMap::new();
    for (epoch, slots) in &firsts {
        for prev in slots.iter().filter_map(|s| s.prev.as_deref()) {
            let list = successors.entry(prev).or_default();
            if !list.contains(epoch) {
                list.push(epoch);
            }
        }
    }
    // Each epoch's predecessor: the epoch its first batch continues from.
    let mut predecessor: HashMap<&str, &str> = HashMap::new();

    for (epoch, state) in epochs {
        // Equivocation, gaps, and links and times inside the epoch.
        state
            .chain
            .judge(!state.seed(), &mut |kind, seq, detail| out.push(finding(kind, epoch, seq, detail)));
        if state.seed() {
            continue;
        }

        // One epoch, one key: the key of its lowest seq.
        if let Some(own) = state.key() {
            for (key, seq) in state.keys().iter().filter(|(key, _)| &**key != own) {
                out.push(finding(FindingKind::ChainBreak, epoch, *seq, foreign_key(own, key)));
            }
        }

        // Hand-over: seq 1 either starts the stream or names the previous epoch's last header.
        for slot in firsts.get(epoch).into_iter().flatten() {
            let Some(link) = slot.prev.as_deref() else {
                // Two first batches of one epoch are equivocation, not two starts.
                if genesis.last() != Some(epoch) {
                    genesis.push(epoch);
                }
                continue;
            };
            let prev = hex::encode(link);
            let detail = match index.get(&print_of(link)) {
                None => Some(format!(
                    "{}: this epoch starts after header {prev}, which is not in the input: the end of the previous epoch is missing",
                    slot.origin
                )),
                Some((target_epoch, _, _)) if target_epoch == epoch => {
                    Some(format!("{}: the first batch links into its own epoch", slot.origin))
                }
                Some((target_epoch, target_seq, target_sealed_at)) => {
                    predecessor.insert(epoch, target_epoch);
                    if slot.sealed_at < *target_sealed_at {
                        out.push(finding(
                            FindingKind::TimeAnomaly,
                            epoch,
                            1,
                            format!("{}: {}", slot.origin, backwards_across(slot.sealed_at, *target_sealed_at)),
                        ));
                    }
                    let target_last =
                        by_name.get(target_epoch).and_then(|s| s.chain.highest()).unwrap_or(0);
                    let forks: Vec<&str> =
                        successors.get(link).into_iter().flatten().copied().filter(|e| e != epoch).collect();
                    if !forks.is_empty() {
                        Some(format!("{}: {}", slot.origin, fork_at(&prev, &forks)))
                    } else if target_last > *target_seq {
                        Some(format!(
                            "{}: this epoch {}",
                            slot.origin,
                            goes_on(*target_seq, target_epoch, target_last)
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
    check_key_reuse(epochs, &predecessor, &mut |epoch, detail| {
        out.push(finding(FindingKind::ChainBreak, epoch, 1, detail))
    });
    check_instances(stream, epochs, &predecessor, &genesis, name, rules, out)
}

/// The instances of a stream (docs/FORMAT.md §5.5): each epoch's chain followed back through
/// `predecessor` to the epoch it starts from. Reports the instances `rules` do not allow, and a
/// key that starts an instance (`genesis` holds those epochs) and signs outside it.
fn check_instances(
    stream: &Arc<str>,
    epochs: &[(&str, &EpochState)],
    predecessor: &HashMap<&str, &str>,
    genesis: &[&str],
    name: &dyn Fn(&str) -> Arc<str>,
    rules: &InstanceRules,
    out: &mut Vec<Finding>,
) -> Vec<StreamInstance> {
    let start = |epoch: &str, detail: String| Finding {
        kind: FindingKind::UnexpectedInstance,
        stream: Some(stream.to_string()),
        epoch: Some(epoch.to_string()),
        seq: Some(1),
        record_index: None,
        detail,
    };
    // Each epoch's root, found once: a walk stops at an epoch whose root is known, and gives its
    // root to every epoch it passed, so the work stays linear in the epochs. Links are hashes, so
    // only a forgery could make a cycle; the bound on a walk's length ends one all the same.
    let mut root_of: HashMap<&str, &str> = HashMap::new();
    for (epoch, _) in epochs {
        let mut path = vec![*epoch];
        let mut current = *epoch;
        let root = loop {
            if let Some(root) = root_of.get(current) {
                break *root;
            }
            match predecessor.get(current) {
                Some(before) if path.len() <= epochs.len() => {
                    current = before;
                    path.push(current);
                }
                _ => break current,
            }
        };
        for step in path {
            root_of.insert(step, root);
        }
    }
    let roots: Vec<(&str, &EpochState, String)> = epochs
        .iter()
        .map(|(epoch, state)| (*epoch, *state, root_of.get(epoch).copied().unwrap_or(epoch).to_string()))
        .collect();
    for (epoch, detail) in rules.unexpected(stream, genesis) {
        out.push(start(epoch, detail));
    }
    // Per key, the epochs it signs with the instance each belongs to (None: its start is missing).
    let geneses: HashSet<&str> = genesis.iter().copied().collect();
    let key_of: HashMap<&str, &str> = epochs.iter().filter_map(|(e, s)| Some((*e, s.key()?))).collect();
    let mut by_key: HashMap<&str, Vec<KeyedEpoch<'_>>> = HashMap::new();
    for (epoch, state, root) in &roots {
        if let Some(key) = state.key() {
            let instance = geneses.contains(root.as_str()).then_some(root.as_str());
            by_key.entry(key).or_default().push((epoch, key, instance));
        }
    }
    for g in genesis {
        let Some(key) = key_of.get(g).copied() else { continue };
        let others = by_key.get(key).into_iter().flatten().copied();
        if let Some(why) = key_in_another_instance(g, key, others) {
            out.push(Finding { kind: FindingKind::ChainBreak, ..start(g, why) });
        }
    }
    let mut by_root: BTreeMap<&str, Vec<(UnixNanos, &str)>> = BTreeMap::new();
    for (epoch, state, root) in &roots {
        if state.seed() {
            continue;
        }
        // The earliest of its lowest seq's batches, whatever order they came in.
        let lowest = state.chain.lowest().map(|seq| state.chain.heads_at(seq));
        let first_sealed = lowest.and_then(|v| v.iter().map(|s| s.sealed_at).min());
        let first_sealed = first_sealed.unwrap_or_default();
        by_root.entry(root.as_str()).or_default().push((first_sealed, epoch));
    }
    by_root
        .into_iter()
        .map(|(root, mut members)| {
            members.sort_unstable();
            StreamInstance {
                stream: stream.clone(),
                instance: name(root),
                genesis: geneses.contains(root),
                pinned: rules.pinned.get(&**stream).is_some_and(|pins| pins.contains(root)),
                epochs: members.into_iter().map(|(_, e)| name(e)).collect(),
            }
        })
        .collect()
}

/// The key rule across epochs for every epoch of a stream that continues from another.
fn check_key_reuse(
    epochs: &[(&str, &EpochState)],
    predecessor: &HashMap<&str, &str>,
    report: &mut dyn FnMut(&str, String),
) {
    let key_of: HashMap<&str, &str> =
        epochs.iter().filter_map(|(epoch, state)| Some((*epoch, state.key()?))).collect();
    for (epoch, state) in epochs {
        let Some(key) = key_of.get(epoch) else { continue };
        // Each step goes to an earlier epoch; a cycle (links are hashes, so only a forgery
        // could make one) ends the walk.
        let mut current = *epoch;
        let ancestors = std::iter::from_fn(|| {
            current = predecessor.get(current)?;
            Some((current, key_of.get(current).copied()))
        })
        .take(epochs.len());
        if let Some(why) = reused_key(key, state.attested(), ancestors) {
            report(epoch, why);
        }
    }
}

/// The key rule across epochs (docs/FORMAT.md §8): a key that handed its stream over to another
/// key is retired and never starts an epoch again, and a key bound by an attestation document (a
/// TEE key, made for one start) starts one epoch only. `ancestors` are the epochs this one
/// continues from, nearest first, each with its key where known.
pub(crate) fn reused_key<'a>(
    key: &str,
    attested: bool,
    ancestors: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Option<String> {
    let mut handed_over = false;
    for (before, ancestor_key) in ancestors {
        match ancestor_key {
            Some(k) if k == key && handed_over => return Some(format!(
                "key {key} signed epoch {before}, after which the stream passed to another key: a retired key cannot start a new epoch"
            )),
            Some(k) if k == key && attested => return Some(format!(
                "key {key} already signed epoch {before}: a key bound by an attestation document starts one epoch only"
            )),
            Some(k) if k != key => handed_over = true,
            _ => {}
        }
    }
    None
}

/// Why an epoch that continues from header `prev` forks the stream: `others` continue from it too.
pub(crate) fn fork_at(prev: &str, others: &[&str]) -> String {
    format!("epoch(s) {} continue from header {prev} as well: the stream forks there", others.join(", "))
}

/// Why a batch whose `prev` is `prev` does not continue from batch `seq`, whose header (or
/// headers, where it was equivocated) is `headers`.
pub(crate) fn unlinked(prev: Option<&str>, seq: u64, headers: &[String]) -> String {
    format!("prev is {}, but batch {seq} has header {}", prev.unwrap_or("null"), headers.join(" / "))
}

/// Why a batch sealed at `sealed_at` cannot follow batch `seq`, sealed at `before`.
pub(crate) fn backwards(sealed_at: UnixNanos, seq: u64, before: UnixNanos) -> String {
    format!(
        "sealed at {}, before batch {seq} (sealed at {}): sealed_at never goes backwards along a chain",
        format_rfc3339(sealed_at),
        format_rfc3339(before)
    )
}

/// Why an epoch's first batch, sealed at `sealed_at`, cannot continue from a header sealed at
/// `target`.
pub(crate) fn backwards_across(sealed_at: UnixNanos, target: UnixNanos) -> String {
    format!(
        "sealed at {}, before the header it continues from (sealed at {}): sealed_at never goes backwards across a hand-over",
        format_rfc3339(sealed_at),
        format_rfc3339(target)
    )
}

/// Why continuing from batch `seq` of epoch `target` breaks the chain: that epoch goes on to
/// batch `last`. Follows the subject ("this epoch", "epoch …").
pub(crate) fn goes_on(seq: u64, target: &str, last: u64) -> String {
    format!("continues from batch {seq} of epoch {target}, but that epoch goes on to batch {last}")
}

/// Why a batch signed by `key` breaks an epoch whose key is `own`: an epoch is one run of one key.
pub(crate) fn foreign_key(own: &str, key: &str) -> String {
    format!("the epoch is signed by key {own}, and key {key} signs here: an epoch is one run of one key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_keys_order_as_stream_then_epoch() {
        let pairs =
            [("a", "ff"), ("a", "00"), ("a-", "00"), ("ab", "00"), ("a/b", "7"), ("b", ""), ("a", "")];
        let mut by_pair = pairs.to_vec();
        by_pair.sort();
        let mut by_key: Vec<EpochKey> = pairs.iter().map(|(s, e)| EpochKey::new(s, e)).collect();
        by_key.sort();
        let back: Vec<(&str, &str)> = by_key.iter().map(|k| (k.stream(), k.epoch())).collect();
        assert_eq!(back, by_pair);
    }
}
