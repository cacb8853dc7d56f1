//! Gateway checkpoints (docs/FORMAT.md §17): a gateway's signed statement of the chain tips it has
//! durably stored, per stream and epoch, at a time. The gateway writes them beside the batches; a
//! verifier given the gateway's key ([`CheckpointCheck`]) then reports every checkpointed batch
//! that the storage no longer holds, so that a tail cut after the gateway saw it is a finding and
//! not a quietly shorter chain.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::batch::{check_hex, check_stream_name, HeaderError};
use crate::canon::{canonicalize, MAX_EXACT_INTEGER};
use crate::crypto::{KeyError, PublicKey, SoftwareKey};
use crate::evidence::TimestampVerifier;
use crate::merkle::{sha256, Digest};
use crate::timestamp::{format_rfc3339, parse_rfc3339, UnixNanos};
use crate::verify::{Finding, FindingKind, Origin};

/// The `v` of checkpoints this crate writes and reads.
pub const CHECKPOINT_VERSION: u64 = 1;
/// Prepended to the body before signing, so that a checkpoint signature is never mistaken for a
/// signature over anything else (a batch header included).
pub const CHECKPOINT_CONTEXT: &[u8] = b"teelog/checkpoint/v1\n";
/// The most tips one checkpoint may list (a gateway remembers 64 epochs per stream).
pub const MAX_TIPS: usize = 1024;
/// Distinct (stream, epoch) tips a verifier holds; beyond, the rest is reported, not held.
const MAX_HELD_EPOCHS: usize = 1 << 16;
/// Different heads one checkpointed (stream, epoch, seq) may be held with (a gateway key that
/// signed two of them is itself a finding, but each is checked).
const MAX_HEADS_PER_TIP: usize = 8;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One chain tip: the newest batch of an epoch that the gateway had durably stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tip {
    /// The epoch (32 lower-case hex digits).
    pub epoch: String,
    /// The header hash of batch `seq` of the epoch (64 lower-case hex digits).
    pub head: String,
    /// The epoch's newest seq the gateway stored.
    pub seq: u64,
}

/// The signed body of a checkpoint, canonical JSON (members in this, their sorted, order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// `ES256` or `ES384`: the gateway key's algorithm.
    pub alg: String,
    /// When the gateway made it (docs/FORMAT.md §2.3 spelling), by the gateway's clock.
    pub at: String,
    /// SHA-256 (hex) of the gateway key's DER SubjectPublicKeyInfo.
    pub key_id: String,
    /// The stream whose tips it lists.
    pub stream: String,
    /// One per epoch, ordered by epoch, each epoch once.
    pub tips: Vec<Tip>,
    /// `1`.
    pub v: u64,
}

/// Why a line is not a checkpoint, or a checkpoint cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The line is not `{"v":1,"checkpoint":{…},"sig":"…"}` exactly; says where it departs.
    #[error("not a checkpoint line: {0}")]
    Layout(String),
    /// A member of the body is not of its one spelling.
    #[error("checkpoint member {0:?}: {1}")]
    Field(&'static str, String),
    /// The gateway key could not sign.
    #[error("cannot sign the checkpoint: {0}")]
    Key(#[from] KeyError),
}

impl From<HeaderError> for CheckpointError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::Field(name, why) => CheckpointError::Field(name, why),
            HeaderError::Unwritable(why) => CheckpointError::Layout(why),
        }
    }
}

impl Checkpoint {
    /// Checks every member's syntax; the signature is checked separately.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        let field = |name, why: String| Err(CheckpointError::Field(name, why));
        if self.v != CHECKPOINT_VERSION {
            return field("v", format!("version {} is not supported (this is {CHECKPOINT_VERSION})", self.v));
        }
        if crate::crypto::SigAlg::from_name(&self.alg).is_none() {
            return field("alg", format!("{:?}: expected ES256 or ES384", self.alg));
        }
        let at = parse_rfc3339(&self.at).map_err(|e| CheckpointError::Field("at", e.to_string()))?;
        if format_rfc3339(at) != self.at {
            return field("at", format!("{:?} is not in its one spelling, {}", self.at, format_rfc3339(at)));
        }
        check_hex("key_id", &self.key_id, Some(64))?;
        check_stream_name(&self.stream)?;
        if self.tips.is_empty() || self.tips.len() > MAX_TIPS {
            return field("tips", format!("{} tips: expected 1 to {MAX_TIPS}", self.tips.len()));
        }
        for (i, tip) in self.tips.iter().enumerate() {
            check_hex("tips.epoch", &tip.epoch, Some(32))?;
            check_hex("tips.head", &tip.head, Some(64))?;
            if tip.seq == 0 || tip.seq > MAX_EXACT_INTEGER {
                return field("tips.seq", format!("{}: expected 1 to 2^53", tip.seq));
            }
            if i > 0 && self.tips[i - 1].epoch >= tip.epoch {
                return field("tips", "not ordered by epoch, each epoch once".into());
            }
        }
        Ok(())
    }

    /// `at` in Unix nanoseconds ([`validate`](Self::validate) makes sure it is one).
    pub fn at_nanos(&self) -> UnixNanos {
        parse_rfc3339(&self.at).unwrap_or_default()
    }

    /// The canonical bytes that are signed and stored.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, CheckpointError> {
        let json = serde_json::to_vec(self).map_err(|e| CheckpointError::Layout(e.to_string()))?;
        let mut out = Vec::with_capacity(json.len());
        canonicalize(&json, &mut out).map_err(|e| CheckpointError::Layout(e.to_string()))?;
        Ok(out)
    }
}

/// The message a checkpoint signature covers: the context, then the body bytes.
pub fn signed_message(body: &[u8]) -> Vec<u8> {
    [CHECKPOINT_CONTEXT, body].concat()
}

/// The checkpoint line (with its newline) of `body`, its r || s signature and, if it was stamped,
/// the RFC 3161 token over SHA-256 of `body`.
pub fn checkpoint_line(body: &[u8], sig: &[u8], timestamp: Option<&[u8]>) -> Vec<u8> {
    let mut line = Vec::with_capacity(body.len() + 160 + timestamp.map_or(0, |t| t.len() * 4 / 3 + 20));
    line.extend_from_slice(b"{\"v\":1,\"checkpoint\":");
    line.extend_from_slice(body);
    line.extend_from_slice(b",\"sig\":\"");
    line.extend_from_slice(B64.encode(sig).as_bytes());
    if let Some(token) = timestamp {
        line.extend_from_slice(b"\",\"timestamp\":\"");
        line.extend_from_slice(B64.encode(token).as_bytes());
    }
    line.extend_from_slice(b"\"}\n");
    line
}

/// A signed checkpoint body, before it becomes a line (with a timestamp token, if one is got).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The canonical body.
    pub body: Vec<u8>,
    /// Its r || s signature.
    pub sig: Vec<u8>,
}

impl SignedCheckpoint {
    /// SHA-256 of the body: what a timestamp token covers.
    pub fn body_hash(&self) -> Digest {
        sha256(&self.body)
    }

    /// The checkpoint line, with its newline; `timestamp` is an RFC 3161 token over
    /// [`body_hash`](Self::body_hash).
    pub fn line(&self, timestamp: Option<&[u8]>) -> Vec<u8> {
        checkpoint_line(&self.body, &self.sig, timestamp)
    }
}

/// Signs a checkpoint of `stream` at `at` listing `tips` (sorted here) with the gateway's `key`.
pub fn sign(
    key: &SoftwareKey,
    stream: &str,
    at: UnixNanos,
    mut tips: Vec<Tip>,
) -> Result<SignedCheckpoint, CheckpointError> {
    tips.sort();
    let checkpoint = Checkpoint {
        alg: key.public().alg().name().to_string(),
        at: format_rfc3339(at),
        key_id: key.public().id_hex(),
        stream: stream.to_string(),
        tips,
        v: CHECKPOINT_VERSION,
    };
    checkpoint.validate()?;
    let body = checkpoint.to_canonical_bytes()?;
    let sig = key.sign(&signed_message(&body))?;
    Ok(SignedCheckpoint { body, sig })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    v: u64,
    #[serde(borrow)]
    checkpoint: &'a RawValue,
    #[serde(borrow)]
    sig: &'a str,
    #[serde(borrow, default)]
    timestamp: Option<&'a str>,
}

/// A checkpoint line taken apart and checked for its one layout; its signature is not checked yet.
#[derive(Debug, Clone)]
pub struct ParsedCheckpoint {
    /// The body, validated.
    pub checkpoint: Checkpoint,
    body: Vec<u8>,
    sig: Vec<u8>,
    /// The RFC 3161 token over SHA-256 of the body, if the gateway had it stamped.
    pub timestamp: Option<Vec<u8>>,
}

impl ParsedCheckpoint {
    /// Parses `line` (without its newline). Every byte is fixed framing, the canonical body or
    /// the signature's one base64 spelling: nothing in a checkpoint line is unsigned.
    pub fn parse(line: &[u8]) -> Result<Self, CheckpointError> {
        let raw: RawLine<'_> =
            serde_json::from_slice(line).map_err(|e| CheckpointError::Layout(e.to_string()))?;
        if raw.v != CHECKPOINT_VERSION {
            return Err(CheckpointError::Layout(format!(
                "checkpoint line version {} is not supported",
                raw.v
            )));
        }
        let body = raw.checkpoint.get().as_bytes();
        let checkpoint: Checkpoint =
            serde_json::from_slice(body).map_err(|e| CheckpointError::Layout(format!("the body: {e}")))?;
        checkpoint.validate()?;
        if checkpoint.to_canonical_bytes()? != body {
            return Err(CheckpointError::Layout(
                "the body is not in canonical form (docs/FORMAT.md §2.2)".into(),
            ));
        }
        let sig =
            B64.decode(raw.sig).map_err(|e| CheckpointError::Layout(format!("sig: not base64: {e}")))?;
        let timestamp = raw
            .timestamp
            .map(|t| {
                B64.decode(t).map_err(|e| CheckpointError::Layout(format!("timestamp: not base64: {e}")))
            })
            .transpose()?;
        let exact = checkpoint_line(body, &sig, timestamp.as_deref());
        if exact.strip_suffix(b"\n") != Some(line) {
            return Err(CheckpointError::Layout(
                "the line is not exactly {\"v\":1,\"checkpoint\":<body>,\"sig\":\"<standard base64>\"} (with ,\"timestamp\":\"<standard base64>\" before the end, if stamped)".into(),
            ));
        }
        Ok(Self { checkpoint, body: body.to_vec(), sig, timestamp })
    }

    /// Whether the signature verifies under one of `keys` (the one its `key_id` names); why not
    /// otherwise.
    pub fn verify(&self, keys: &[PublicKey]) -> Result<(), String> {
        let c = &self.checkpoint;
        let Some(key) = keys.iter().find(|k| k.id_hex() == c.key_id) else {
            return Err(format!("signed by key {}, which is not a --checkpoint-key", c.key_id));
        };
        if key.alg().name() != c.alg {
            return Err(format!("says {} but key {} is {}", c.alg, c.key_id, key.alg().curve()));
        }
        if key.verify_p1363(&signed_message(&self.body), &self.sig) {
            Ok(())
        } else {
            Err(format!("its signature does not verify under key {}", c.key_id))
        }
    }

    /// SHA-256 of the body: what a timestamp over the checkpoint would cover.
    pub fn body_hash(&self) -> Digest {
        sha256(&self.body)
    }
}

/// Whether `line` is meant as a checkpoint line (whatever else is wrong with it): it has a
/// top-level `checkpoint` member. The gateway writes them starting so.
pub fn is_checkpoint_line(line: &[u8]) -> bool {
    line.starts_with(b"{\"v\":1,\"checkpoint\":")
}

/// What the verified input holds at a checkpointed (stream, epoch, seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Validly signed batches at that seq, by the print of their header hash (the first 16
    /// bytes: all the verifier keeps of most batches; docs/PERFORMANCE.md).
    Present(Vec<[u8; 16]>),
    /// None at that seq: the seqs from `from` up to it are all missing (`from` is 1 when nothing
    /// of the epoch below it is there).
    Missing {
        /// The first seq of the run of missing seqs that ends at the checkpointed one.
        from: u64,
        /// Whether the input has any validly signed batch of the epoch at all.
        epoch_present: bool,
    },
}

/// A checkpointed tip as held until every line is in.
#[derive(Debug, Clone)]
struct Held {
    seq: u64,
    /// The heads checkpointed at `seq`, with where each checkpoint was and its time.
    heads: Vec<(String, String, String)>,
}

/// The newest checkpointed batch of an epoch that an RFC 3161 token dates: it, and through its
/// `prev` links every batch before it, existed no later than the token's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StampedTip {
    /// The stream.
    pub stream: String,
    /// The epoch.
    pub epoch: String,
    /// The checkpointed seq.
    pub seq: u64,
    /// Its header hash (hex).
    pub head: String,
    /// The token's `genTime` (§2.3 spelling): trusted time, from a TSA the auditor gave.
    pub no_later_than: String,
}

/// Collects the checkpoint lines of a verifier's input and, given the gateway keys, judges them
/// against the batches once everything is in.
#[derive(Default)]
pub struct CheckpointCheck {
    keys: Vec<PublicKey>,
    /// Checks the checkpoints' timestamp tokens (the auditor's TSA roots); none: not checked.
    timestamps: Option<Box<dyn TimestampVerifier>>,
    /// Per (stream, epoch), the highest checkpointed seq a verified token dates: (seq, head,
    /// genTime), the earliest time for one seq.
    stamped: BTreeMap<(String, String), (u64, String, UnixNanos)>,
    /// Checkpoint lines read (copies included).
    lines: u64,
    /// Lines that verified, so that a copy (the store's and a kept one) is judged once.
    seen: HashSet<Digest>,
    /// Per (stream, epoch), the highest checkpointed seq: the chain rules extend it downwards.
    tips: BTreeMap<(String, String), Held>,
    /// Streams with a checkpoint that verifies.
    streams: BTreeSet<String>,
    /// Tips not held for want of room.
    overflow: u64,
}

impl CheckpointCheck {
    /// A check that trusts checkpoints signed by `keys`; with none, checkpoint lines are only
    /// checked for their layout and counted.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self { keys, ..Self::default() }
    }

    /// The same check, verifying the checkpoints' timestamp tokens with `timestamps`.
    pub fn with_timestamps(mut self, timestamps: Box<dyn TimestampVerifier>) -> Self {
        self.timestamps = Some(timestamps);
        self
    }

    /// What verified tokens date: per epoch, the newest checkpointed batch and the time by which
    /// it existed.
    pub fn stamped(&self) -> Vec<StampedTip> {
        self.stamped
            .iter()
            .map(|((stream, epoch), (seq, head, at))| StampedTip {
                stream: stream.clone(),
                epoch: epoch.clone(),
                seq: *seq,
                head: head.clone(),
                no_later_than: format_rfc3339(*at),
            })
            .collect()
    }

    /// Whether checkpoints are judged (a key was given).
    pub fn judging(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checkpoint lines read.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Takes one checkpoint line (without its newline) at `origin`; a finding if it is not one
    /// or, when judging, does not verify.
    pub fn push(&mut self, origin: Origin<'_>, line: &[u8]) -> Option<Finding> {
        self.lines += 1;
        let parsed = match ParsedCheckpoint::parse(line) {
            Ok(parsed) => parsed,
            Err(e) => return Some(Finding::malformed(origin, &e.to_string())),
        };
        if !self.judging() || self.seen.contains(&sha256(line)) {
            return None;
        }
        let c = &parsed.checkpoint;
        if let Err(why) = parsed.verify(&self.keys) {
            return Some(Finding {
                kind: FindingKind::InvalidCheckpoint,
                stream: Some(c.stream.clone()),
                epoch: None,
                seq: None,
                record_index: None,
                detail: format!("{origin}: the checkpoint of {} {why}", c.at),
            });
        }
        // Only lines that verify are remembered: they need the gateway's key, while anyone can
        // write lines that do not.
        self.seen.insert(sha256(line));
        let mut finding = None;
        if let (Some(timestamps), Some(token)) = (&self.timestamps, &parsed.timestamp) {
            match timestamps.verify_token_interval(token, &parsed.body_hash()) {
                Ok((_, latest)) => self.date(c, latest),
                Err(why) => {
                    finding = Some(Finding {
                        kind: FindingKind::TimeAnomaly,
                        stream: Some(c.stream.clone()),
                        epoch: None,
                        seq: None,
                        record_index: None,
                        detail: format!(
                            "{origin}: the timestamp token of the checkpoint of {} does not verify under the --tsa-root: {why}",
                            c.at
                        ),
                    })
                }
            }
        }
        self.streams.insert(c.stream.clone());
        let held_epochs = self.tips.len();
        for tip in &c.tips {
            let key = (c.stream.clone(), tip.epoch.clone());
            let head = (tip.head.clone(), origin.to_string(), c.at.clone());
            match self.tips.get_mut(&key) {
                Some(held) if held.seq > tip.seq => {}
                Some(held) if held.seq == tip.seq => {
                    if !held.heads.iter().any(|(h, ..)| *h == tip.head)
                        && held.heads.len() < MAX_HEADS_PER_TIP
                    {
                        held.heads.push(head);
                    }
                }
                Some(held) => *held = Held { seq: tip.seq, heads: vec![head] },
                None if held_epochs >= MAX_HELD_EPOCHS => self.overflow += 1,
                None => {
                    self.tips.insert(key, Held { seq: tip.seq, heads: vec![head] });
                }
            }
        }
        finding
    }

    /// Notes that the tips of `c` existed no later than `at` (a verified token's time).
    fn date(&mut self, c: &Checkpoint, at: UnixNanos) {
        for tip in &c.tips {
            let key = (c.stream.clone(), tip.epoch.clone());
            let newer = match self.stamped.get(&key) {
                Some((seq, _, when)) => tip.seq > *seq || (tip.seq == *seq && at < *when),
                None => self.stamped.len() < MAX_HELD_EPOCHS,
            };
            if newer {
                self.stamped.insert(key, (tip.seq, tip.head.clone(), at));
            }
        }
    }

    /// The findings once every line is in: each checkpointed batch the input lacks
    /// (`truncated_after_checkpoint`) or holds with another header (`checkpoint_mismatch`), each
    /// stream with batches but no checkpoint that verifies, and input without any
    /// (`missing_checkpoint`). `stored` says what the input holds at a (stream, epoch, seq);
    /// `streams` are the streams with validly signed batches. Nothing when not judging.
    pub fn finish<'s>(
        self,
        stored: &dyn Fn(&str, &str, u64) -> Stored,
        streams: impl IntoIterator<Item = &'s str>,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        if !self.judging() {
            return out;
        }
        for ((stream, epoch), held) in &self.tips {
            let finding = |kind, seq, detail: String| Finding {
                kind,
                stream: Some(stream.clone()),
                epoch: Some(epoch.clone()),
                seq: Some(seq),
                record_index: None,
                detail,
            };
            let (_, origin, at) = &held.heads[0];
            match stored(stream, epoch, held.seq) {
                Stored::Present(prints) => {
                    let stored: Vec<String> = prints.iter().map(|p| format!("{}…", hex::encode(p))).collect();
                    for (head, origin, at) in &held.heads {
                        if !crate::runs::print_of_hex(head).is_some_and(|p| prints.contains(&p)) {
                            out.push(finding(
                                FindingKind::CheckpointMismatch,
                                held.seq,
                                format!(
                                    "{origin}: the gateway's checkpoint of {at} names header {head} at seq {}, but the batch stored there has header {}: the stored batch is not the one the gateway received",
                                    held.seq,
                                    stored.join(", ")
                                ),
                            ));
                        }
                    }
                }
                Stored::Missing { from, epoch_present } => {
                    let what = if epoch_present {
                        format!("seq {from} to {} are missing", held.seq)
                    } else {
                        "no batch of the epoch is in the input".to_string()
                    };
                    out.push(finding(
                        FindingKind::TruncatedAfterCheckpoint,
                        from,
                        format!(
                            "{origin}: the gateway's checkpoint of {at} says it had stored this epoch up to seq {} (header {}), but {what}: batches were removed after the gateway stored them",
                            held.seq, held.heads[0].0
                        ),
                    ));
                }
            }
        }
        if self.overflow > 0 {
            out.push(Finding::unplaced(
                FindingKind::InvalidCheckpoint,
                format!(
                    "the checkpoints name more than {MAX_HELD_EPOCHS} epochs; {} tips beyond were not checked",
                    self.overflow
                ),
            ));
        }
        let mut unchecked: Vec<&str> = streams.into_iter().filter(|s| !self.streams.contains(*s)).collect();
        unchecked.dedup();
        for stream in &unchecked {
            out.push(Finding {
                kind: FindingKind::MissingCheckpoint,
                stream: Some(stream.to_string()),
                epoch: None,
                seq: None,
                record_index: None,
                detail: format!(
                    "stream {stream:?} has batches but no checkpoint that verifies under the --checkpoint-key: nothing shows that its tail is whole"
                ),
            });
        }
        if self.streams.is_empty() && unchecked.is_empty() {
            out.push(Finding::unplaced(
                FindingKind::MissingCheckpoint,
                "--checkpoint-key was given, but the input has no checkpoint that verifies under it: nothing shows that any tail is whole".into(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SigAlg;

    fn new_key() -> SoftwareKey {
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap()
    }

    fn tip(epoch: char, seq: u64, head: char) -> Tip {
        Tip { epoch: epoch.to_string().repeat(32), head: head.to_string().repeat(64), seq }
    }

    #[test]
    fn a_signed_checkpoint_parses_and_verifies_and_every_byte_counts() {
        let key = new_key();
        let line =
            sign(&key, "payments", 1_700_000_000_000_000_000, vec![tip('b', 3, 'c'), tip('a', 9, 'd')])
                .unwrap()
                .line(None);
        let line = line.strip_suffix(b"\n").unwrap();
        assert!(is_checkpoint_line(line));
        let parsed = ParsedCheckpoint::parse(line).unwrap();
        assert_eq!(parsed.checkpoint.tips[0].epoch, "a".repeat(32), "tips are sorted by epoch");
        assert_eq!(parsed.verify(&[key.public().clone()]), Ok(()));
        let other = new_key();
        assert!(parsed.verify(&[other.public().clone()]).unwrap_err().contains("not a --checkpoint-key"));
        // Any byte changed: either the layout is refused or the signature fails.
        for i in 0..line.len() {
            let mut changed = line.to_vec();
            changed[i] ^= if changed[i] == b'1' { 0x03 } else { 0x01 };
            if let Ok(p) = ParsedCheckpoint::parse(&changed) {
                assert!(p.verify(&[key.public().clone()]).is_err(), "byte {i} changed and still verifies");
            }
        }
        let spaced = String::from_utf8(line.to_vec()).unwrap().replacen(",\"sig\"", ", \"sig\"", 1);
        assert!(ParsedCheckpoint::parse(spaced.as_bytes()).is_err());
    }

    /// Takes a token that is the digest it dates followed by the time, big-endian.
    struct StubTsa;

    impl TimestampVerifier for StubTsa {
        fn verify_token(&self, token: &[u8], digest: &[u8; 32]) -> Result<UnixNanos, String> {
            match token.split_at_checked(32) {
                Some((covered, time)) if covered == digest => {
                    Ok(i64::from_be_bytes(time.try_into().map_err(|_| "no time")?))
                }
                _ => Err("not over this checkpoint".into()),
            }
        }
    }

    #[test]
    fn a_stamped_checkpoint_dates_its_tips_and_a_token_that_fails_is_a_finding() {
        let key = new_key();
        let origin = Origin { source: "store", line: 1 };
        let stamped = |seq, at: i64, over_itself: bool| {
            let signed = sign(&key, "s", 0, vec![tip('a', seq, 'c')]).unwrap();
            let covered = if over_itself { signed.body_hash() } else { [0; 32] };
            let token = [covered.as_slice(), &at.to_be_bytes()].concat();
            let line = signed.line(Some(&token));
            let parsed = ParsedCheckpoint::parse(line.strip_suffix(b"\n").unwrap()).unwrap();
            assert_eq!(parsed.timestamp.as_deref(), Some(token.as_slice()));
            line
        };
        let mut check = CheckpointCheck::new(vec![key.public().clone()]).with_timestamps(Box::new(StubTsa));
        for (seq, at) in [(4, 500), (5, 900), (5, 700), (3, 100)] {
            assert_eq!(check.push(origin, stamped(seq, at, true).strip_suffix(b"\n").unwrap()), None);
        }
        let dated = check.stamped();
        assert_eq!(dated.len(), 1);
        // The newest seq, by the earliest token that dates it.
        assert_eq!((dated[0].seq, dated[0].no_later_than.as_str()), (5, "1970-01-01T00:00:00.000000700Z"));
        let bad = check.push(origin, stamped(6, 1000, false).strip_suffix(b"\n").unwrap());
        assert_eq!(bad.map(|f| f.kind), Some(FindingKind::TimeAnomaly));
        assert_eq!(check.stamped()[0].seq, 5, "a token that fails dates nothing");
    }

    #[test]
    fn bodies_out_of_their_one_spelling_are_refused() {
        let mut c = Checkpoint {
            alg: "ES256".into(),
            at: "2026-12-07T00:00:00.000000000Z".into(),
            key_id: "0".repeat(64),
            stream: "s".into(),
            tips: vec![tip('a', 1, 'b')],
            v: 1,
        };
        assert_eq!(c.validate(), Ok(()));
        c.at = "2026-12-07T00:00:00Z".into();
        assert!(matches!(c.validate(), Err(CheckpointError::Field("at", _))));
        c.at = "2026-12-07T00:00:00.000000000Z".into();
        c.tips = vec![tip('b', 1, 'b'), tip('a', 1, 'b')];
        assert!(matches!(c.validate(), Err(CheckpointError::Field("tips", _))));
        c.tips = vec![tip('a', 0, 'b')];
        assert!(matches!(c.validate(), Err(CheckpointError::Field("tips.seq", _))));
        c.tips = Vec::new();
        assert!(matches!(c.validate(), Err(CheckpointError::Field("tips", _))));
    }

    #[test]
    fn missing_cut_and_replaced_heads_are_findings_and_nothing_found_is_one_too() {
        let key = new_key();
        let keys = vec![key.public().clone()];
        let line = sign(&key, "s", 0, vec![tip('a', 5, 'c'), tip('b', 2, 'd'), tip('e', 1, 'f')])
            .unwrap()
            .line(None);
        let origin = Origin { source: "store", line: 1 };
        let mut check = CheckpointCheck::new(keys.clone());
        assert_eq!(check.push(origin, line.strip_suffix(b"\n").unwrap()), None);
        let stored = |_: &str, epoch: &str, _: u64| match &epoch[..1] {
            "a" => Stored::Missing { from: 4, epoch_present: true },
            "b" => Stored::Present(vec![[0xdd; 16]]),
            _ => Stored::Present(vec![[0xee; 16]]),
        };
        let findings = check.finish(&stored, ["s", "t"]);
        let kinds: Vec<_> =
            findings.iter().map(|f| (f.kind, f.epoch.clone().map(|e| e[..1].to_string()), f.seq)).collect();
        assert_eq!(
            kinds,
            vec![
                (FindingKind::TruncatedAfterCheckpoint, Some("a".into()), Some(4)),
                (FindingKind::CheckpointMismatch, Some("e".into()), Some(1)),
                (FindingKind::MissingCheckpoint, None, None),
            ]
        );
        assert_eq!(findings[2].stream.as_deref(), Some("t"));
        // A key given and no checkpoint at all: said so.
        let empty = CheckpointCheck::new(keys).finish(&stored, []);
        assert_eq!(empty.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![FindingKind::MissingCheckpoint]);
        // Without a key: counted, never judged.
        let mut counted = CheckpointCheck::new(Vec::new());
        assert_eq!(counted.push(origin, line.strip_suffix(b"\n").unwrap()), None);
        assert_eq!(counted.lines(), 1);
        assert!(counted.finish(&stored, ["s"]).is_empty());
    }
}
