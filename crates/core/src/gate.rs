//! The gateway's verifier: batch lines are judged one at a time as they arrive, so that each can
//! be labelled valid or not before it is stored, and continuity is tracked per stream and epoch
//! with bounded memory. [`crate::Verifier`] stays the authority: it sees every batch at once, so
//! it can judge what this one can only suspect (an equivocation older than the recent history, a
//! gap that a late batch fills after all).

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::batch::{Header, LineFields, ParsedBatch, RecordsStatus, SignatureStatus};
use crate::merkle::{sha256, Digest};
use crate::timestamp::{format_rfc3339, UnixNanos};
use crate::verify::{
    attested_signature, judge_measurement, AttestationVerifier, AttestedKey, Finding, FindingKind, Origin,
    VerifyOptions,
};

/// Header hashes remembered per epoch, to tell a resent batch from a second, different batch
/// signed for a recent seq.
const RECENT_PER_EPOCH: usize = 1024;
/// Gaps remembered per epoch, so that a batch arriving late is not reported again.
const GAPS_PER_EPOCH: usize = 256;
/// Attestation documents held (one per signer start, normally); beyond, one no batch has named
/// is forgotten.
const MAX_DOCUMENTS: usize = 4096;
/// Epochs remembered per stream (each restart of a signer starts one); the longest-silent one
/// is forgotten first.
const EPOCHS_PER_STREAM: usize = 64;

/// What one line turned out to be.
#[derive(Debug)]
pub enum Checked {
    /// An attestation document (docs/FORMAT.md §7a), kept for the batches that name it.
    Document {
        sha256: Digest,
    },
    Batch(BatchVerdict),
    /// Not a line the gateway can judge; stored anyway, flagged invalid.
    Malformed(Finding),
}

#[derive(Debug)]
pub struct BatchVerdict {
    pub stream: String,
    pub epoch: String,
    pub seq: u64,
    pub count: u64,
    pub sealed_at: UnixNanos,
    /// The SHA-256 of the attestation document the batch names, if it names one.
    pub attestation: Option<Digest>,
    /// Signed by a trusted (or attested) key, records intact, attestation trusted.
    pub signature_valid: bool,
    /// The same batch was seen just before (a resend): nothing new.
    pub duplicate: bool,
    pub findings: Vec<Finding>,
}

/// Where one epoch of a stream stands, as far as the gateway has seen it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct EpochTrack {
    last_seq: u64,
    /// The header hash (hex) of batch `last_seq`.
    head: String,
    /// `(seq, header hash hex)` of the newest batches, oldest first; not saved, since after a
    /// restart only duplicates become harder to tell from equivocation.
    #[serde(skip)]
    recent: VecDeque<(u64, String)>,
    /// Seq ranges (inclusive) reported missing that have not arrived yet.
    gaps: VecDeque<(u64, u64)>,
    /// `sealed_at` of batch `last_seq`.
    #[serde(default)]
    sealed_at: UnixNanos,
}

impl EpochTrack {
    /// Batch `seq` with header hash `hash` is the newest of the epoch.
    fn advance(&mut self, seq: u64, hash: &str, sealed_at: UnixNanos) {
        self.last_seq = seq;
        self.sealed_at = sealed_at;
        self.head = hash.to_string();
        self.remember(seq, hash);
    }

    fn remember(&mut self, seq: u64, hash: &str) {
        self.recent.push_back((seq, hash.to_string()));
        if self.recent.len() > RECENT_PER_EPOCH {
            self.recent.pop_front();
        }
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
    /// The epoch that started the stream (its first batch links to nothing).
    genesis: Option<String>,
    newest_sealed_at: UnixNanos,
    newest: (String, u64),
    /// Reported stale and not heard from since.
    stale: bool,
}

/// The gateway's continuity state; saved by the gateway so that a restart continues where it was.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Continuity {
    streams: BTreeMap<String, StreamTrack>,
}

pub struct Gate {
    options: VerifyOptions,
    attestation: Option<Box<dyn AttestationVerifier + Send + Sync>>,
    /// Documents seen, by SHA-256, with the verdict on each once a batch has needed it.
    documents: HashMap<Digest, Document>,
    continuity: Continuity,
}

struct Document {
    bytes: Vec<u8>,
    verdict: Option<Result<AttestedKey, String>>,
}

impl Gate {
    pub fn new(options: VerifyOptions, continuity: Continuity) -> Self {
        Self { options, attestation: None, documents: HashMap::new(), continuity }
    }

    pub fn with_attestation(mut self, verifier: Box<dyn AttestationVerifier + Send + Sync>) -> Self {
        self.attestation = Some(verifier);
        self
    }

    pub fn continuity(&self) -> &Continuity {
        &self.continuity
    }

    /// Whether a validly signed batch of `stream` has been seen: only those streams' names are
    /// known not to come from whoever can reach the gateway.
    pub fn knows_stream(&self, stream: &str) -> bool {
        self.continuity.streams.contains_key(stream)
    }

    /// The bytes of a document seen before, by SHA-256.
    pub fn document(&self, sha256: &Digest) -> Option<&[u8]> {
        self.documents.get(sha256).map(|d| d.bytes.as_slice())
    }

    /// Judges one line (without its newline).
    pub fn check_line(&mut self, origin: Origin<'_>, line: &[u8]) -> Checked {
        let malformed = |detail: &str| Checked::Malformed(Finding::malformed(origin, detail));
        let fields: LineFields<'_> = match serde_json::from_slice(line) {
            Ok(fields) => fields,
            Err(e) => return malformed(&format!("not a batch line: {e}")),
        };
        if let (Some(1), Some(document), None) = (fields.v, &fields.attestation, fields.header) {
            return match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, document) {
                Ok(bytes) => {
                    let digest = sha256(&bytes);
                    if !self.documents.contains_key(&digest) && self.documents.len() >= MAX_DOCUMENTS {
                        // Make room by forgetting one no batch has named yet.
                        let unused =
                            self.documents.iter().find(|(_, d)| d.verdict.is_none()).map(|(k, _)| *k);
                        match unused {
                            Some(key) => {
                                self.documents.remove(&key);
                            }
                            None => {
                                return malformed(
                                    "attestation: too many documents held; this one is not kept",
                                )
                            }
                        }
                    }
                    self.documents.entry(digest).or_insert(Document { bytes, verdict: None });
                    Checked::Document { sha256: digest }
                }
                Err(e) => malformed(&format!("attestation: not base64: {e}")),
            };
        }
        let (Some(crate::batch::FORMAT_VERSION), Some(header), Some(sig), Some(hints), Some(records)) =
            (fields.v, fields.header, fields.sig, fields.hints, fields.records)
        else {
            return malformed("not a teelog batch line (v 1 with header, sig, hints and records)");
        };
        match ParsedBatch::from_parts(header, sig, hints, records) {
            Ok(batch) => Checked::Batch(self.check_batch(origin, line, &batch)),
            Err(e) => malformed(&e.to_string()),
        }
    }

    fn check_batch(&mut self, origin: Origin<'_>, line: &[u8], batch: &ParsedBatch<'_>) -> BatchVerdict {
        let h = &batch.header;
        let origin = origin.to_string();
        let mut findings = Vec::new();
        let mut finding = |kind, record_index, detail: &str| {
            findings.push(Finding::about(kind, h, record_index, &origin, detail))
        };
        let attestation =
            h.attestation.as_deref().and_then(|d| <[u8; 32]>::try_from(hex::decode(d).ok()?).ok());
        let (signature, attested) = match (&h.attestation, &self.attestation) {
            (Some(named), Some(verifier)) => match attestation.and_then(|d| self.documents.get_mut(&d)) {
                None => {
                    let why = format!("attestation document {named} has not been received before this batch");
                    finding(FindingKind::UntrustedAttestation, None, &why);
                    (None, None)
                }
                Some(document) => {
                    let verdict =
                        document.verdict.get_or_insert_with(|| verifier.verify_document(&document.bytes));
                    match verdict {
                        Err(why) => {
                            finding(FindingKind::UntrustedAttestation, None, why);
                            (None, None)
                        }
                        Ok(key) => {
                            let (status, broken_link) = attested_signature(&batch.signed_header(), h, key);
                            if let (SignatureStatus::Valid, Some(detail)) = (&status, broken_link) {
                                finding(FindingKind::ChainBreak, None, &detail);
                            }
                            (Some(status), Some(key.clone()))
                        }
                    }
                }
            },
            _ => (Some(batch.signature_status(&self.options.trusted_keys)), None),
        };
        let mut valid = false;
        match &signature {
            None => {}
            Some(SignatureStatus::Invalid(why)) => finding(FindingKind::InvalidSignature, None, why),
            Some(SignatureStatus::Valid) => {
                valid = true;
                let checked = batch.check_records();
                if let RecordsStatus::Tampered { record_index, detail } = checked.status {
                    finding(FindingKind::RecordTampered, record_index, &detail);
                    valid = false;
                }
                for problem in [batch.layout_deviation(line), checked.hints_problem].into_iter().flatten() {
                    finding(FindingKind::UnsignedContent, None, &problem);
                    valid = false;
                }
                if let Some(detail) = judge_measurement(&self.options, h, attested.as_ref()).objection {
                    finding(FindingKind::UnexpectedMeasurement, None, &detail);
                }
            }
        }
        // Only a signed header says where a batch belongs in the chain.
        let duplicate = match &signature {
            Some(SignatureStatus::Valid) => {
                self.continuity.follow(h, &hex::encode(batch.header_hash), &origin, &mut findings)
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
            signature_valid: valid,
            duplicate,
            findings,
        }
    }

    /// A `stale_stream` finding for each stream newly silent for longer than `max_silence` at
    /// `now`; a stream is reported again only after it has been heard from since.
    pub fn stale_streams(&mut self, now: UnixNanos, max_silence: UnixNanos) -> Vec<Finding> {
        let mut out = Vec::new();
        for (name, track) in &mut self.continuity.streams {
            let silent = now.saturating_sub(track.newest_sealed_at);
            if track.stale || silent <= max_silence {
                continue;
            }
            track.stale = true;
            out.push(Finding {
                kind: FindingKind::StaleStream,
                stream: Some(name.clone()),
                epoch: Some(track.newest.0.clone()),
                seq: Some(track.newest.1),
                record_index: None,
                detail: format!(
                    "no batch since the one sealed at {}, {} s before {}: the shipper may be cut off",
                    format_rfc3339(track.newest_sealed_at),
                    silent / 1_000_000_000,
                    format_rfc3339(now)
                ),
            });
        }
        out
    }
}

impl Continuity {
    /// Takes the validly signed header `h` (hash `hash`) into the chain state; chain findings go
    /// to `out`. True if it is a resend of a batch seen recently.
    fn follow(&mut self, h: &Header, hash: &str, origin: &str, out: &mut Vec<Finding>) -> bool {
        let mut finding = |kind, seq, detail: String| {
            out.push(Finding {
                kind,
                stream: Some(h.stream.clone()),
                epoch: Some(h.epoch.clone()),
                seq: Some(seq),
                record_index: None,
                detail: format!("{origin}: {detail}"),
            })
        };
        let known_stream = self.streams.contains_key(&h.stream);
        let stream = self.streams.entry(h.stream.clone()).or_default();
        let sealed_at = h.sealed_at_nanos().unwrap_or_default();
        if sealed_at >= stream.newest_sealed_at {
            stream.newest_sealed_at = sealed_at;
            stream.newest = (h.epoch.clone(), h.seq);
            stream.stale = false;
        }
        if let Some(epoch) = stream.epochs.get_mut(&h.epoch) {
            if h.seq <= epoch.last_seq {
                if epoch.fill(h.seq) {
                    // Late, but now known: a second batch for this seq is then equivocation.
                    epoch.remember(h.seq, hash);
                    return false;
                }
                return match epoch.recent.iter().find(|(seq, _)| *seq == h.seq) {
                    Some((_, seen)) if seen == hash => true,
                    Some((_, seen)) => {
                        let seen = seen.clone();
                        finding(
                            FindingKind::Equivocation,
                            h.seq,
                            format!(
                                "header {hash} differs from header {seen}, signed earlier for the same seq"
                            ),
                        );
                        false
                    }
                    // Older than the recent history: only a full verification can tell.
                    None => true,
                };
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
                    expected,
                    format!("{range} missing: not received before seq {}", h.seq),
                );
                epoch.gaps.push_back((expected, h.seq - 1));
                if epoch.gaps.len() > GAPS_PER_EPOCH {
                    epoch.gaps.pop_front();
                }
            } else if h.prev.as_deref() != Some(epoch.head.as_str()) {
                finding(
                    FindingKind::ChainBreak,
                    h.seq,
                    format!(
                        "prev is {}, but batch {} has header {}",
                        h.prev.as_deref().unwrap_or("null"),
                        h.seq - 1,
                        epoch.head
                    ),
                );
            }
            epoch.advance(h.seq, hash, sealed_at);
            return false;
        }
        // The first batch of an epoch this gateway sees.
        if h.seq == 1 {
            match h.prev.as_deref() {
                None if known_stream => {
                    let first = stream
                        .genesis
                        .as_deref()
                        .map_or(String::new(), |g| format!(" (it started with epoch {g})"));
                    finding(
                        FindingKind::ChainBreak,
                        1,
                        format!(
                            "stream {:?} starts again{first}: a restart did not link to the previous head",
                            h.stream
                        ),
                    );
                }
                None => stream.genesis = Some(h.epoch.clone()),
                Some(prev) if known_stream => {
                    let continued = stream.epochs.values().any(|e| e.head == prev);
                    if !continued {
                        finding(
                            FindingKind::ChainBreak,
                            1,
                            format!("this epoch continues from header {prev}, which is not the newest batch of any epoch of the stream seen here: the previous epoch's tail may have been dropped"),
                        );
                    }
                }
                Some(_) => {}
            }
        } else if known_stream {
            finding(
                FindingKind::SequenceGap,
                1,
                format!(
                    "the epoch's batches 1 to {} are missing: not received before seq {}",
                    h.seq - 1,
                    h.seq
                ),
            );
        }
        let mut epoch = EpochTrack::default();
        if h.seq > 1 && known_stream {
            epoch.gaps.push_back((1, h.seq - 1));
        }
        epoch.advance(h.seq, hash, sealed_at);
        stream.epochs.insert(h.epoch.clone(), epoch);
        if stream.epochs.len() > EPOCHS_PER_STREAM {
            let stalest = stream
                .epochs
                .iter()
                .filter(|(id, _)| **id != h.epoch)
                .min_by_key(|(_, e)| e.sealed_at)
                .map(|(id, _)| id.clone());
            if let Some(id) = stalest {
                stream.epochs.remove(&id);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, ChainHead, HeaderSigner, SigAlg, SoftwareKey, SoftwareSigner};

    fn signer() -> SoftwareSigner {
        let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).expect("key");
        SoftwareSigner::new(SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).expect("key"), None)
    }

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
                builder.seal(head, signer, 1_796_292_000_000_000_000 + i as i64, &mut line).expect("seal");
                line.pop();
                line
            })
            .collect()
    }

    fn gate(signers: &[&SoftwareSigner]) -> Gate {
        let trusted_keys = signers.iter().map(|s| s.public_key().clone()).collect();
        Gate::new(VerifyOptions { trusted_keys, ..VerifyOptions::default() }, Continuity::default())
    }

    /// The finding kinds for each line, in order.
    fn kinds(gate: &mut Gate, lines: &[Vec<u8>]) -> Vec<Vec<&'static str>> {
        lines
            .iter()
            .enumerate()
            .map(|(i, line)| match gate.check_line(Origin { source: "test", line: i as u64 + 1 }, line) {
                Checked::Batch(v) => v.findings.iter().map(|f| f.kind.name()).collect(),
                Checked::Malformed(f) => vec![f.kind.name()],
                Checked::Document { .. } => vec!["document"],
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
        match gate.check_line(Origin { source: "again", line: 1 }, &lines[4]) {
            Checked::Batch(v) => assert!(v.duplicate && v.signature_valid && v.findings.is_empty(), "{v:?}"),
            other => panic!("{other:?}"),
        }
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
    fn a_restart_that_does_not_link_to_the_head_is_a_chain_break() {
        let a = signer();
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let mut lines = epoch(&mut head, &a, 2);
        // The next epoch starts afresh instead of continuing from the head.
        let mut again = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        lines.extend(epoch(&mut again, &a, 1));
        let mut gate_from_start = gate(&[&a]);
        let found = kinds(&mut gate_from_start, &lines);
        assert_eq!(found, vec![vec![], vec![], vec!["chain_break"]]);
        // A gateway that joined mid-stream (at seq 2) sees the fresh start as a break too.
        let mut joined_late = gate(&[&a]);
        let found = kinds(&mut joined_late, &lines[1..]);
        assert_eq!(found, vec![vec![], vec!["chain_break"]]);
    }

    #[test]
    fn a_batch_that_fills_a_gap_is_remembered() {
        let a = signer();
        let mut head = ChainHead::new_epoch("app", None, &crate::random::SystemRandom).unwrap();
        let lines = epoch(&mut head, &a, 3);
        let forked = fork_after(&head, &lines[0], &a);
        let mut gate = gate(&[&a]);
        let found = kinds(&mut gate, &[lines[0].clone(), lines[2].clone(), lines[1].clone(), forked]);
        assert_eq!(found, vec![vec![], vec!["sequence_gap"], vec![], vec!["equivocation"]]);
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
        fn verify_document(&self, document: &[u8]) -> Result<AttestedKey, String> {
            if document == b"forged" {
                return Err("the document's chain does not reach a trusted root".into());
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
        forged_gate.check_line(Origin { source: "t", line: 1 }, forged.strip_suffix(b"\n").unwrap());
        let named_forged = SoftwareSigner::new(
            SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap())
                .unwrap(),
            Some("abcd".into()),
        )
        .with_attestation(hex::encode(crate::merkle::sha256(b"forged")));
        let mut other = ChainHead::new_epoch("db", None, &crate::random::SystemRandom).unwrap();
        let forged_batches = epoch(&mut other, &named_forged, 1);
        match forged_gate.check_line(Origin { source: "t", line: 2 }, &forged_batches[0]) {
            Checked::Batch(v) => {
                assert!(!v.signature_valid);
                assert_eq!(v.findings[0].kind, FindingKind::UntrustedAttestation, "{v:?}");
            }
            other => panic!("{other:?}"),
        }
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
        match Gate::new(options, Continuity::default()).check_line(Origin { source: "t", line: 1 }, &lines[0])
        {
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
