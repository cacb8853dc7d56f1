//! Trusted time for the records of an evidence bundle (docs/FORMAT.md §16.1). A record's batch is
//! linked by a chain of headers — each one's `prev` the SHA-256 of the one before — to an anchor a
//! TSA dated: a gateway checkpoint whose RFC 3161 token covers a tip at or after the batch bounds
//! the batch's sealing from above. [`Linker`] finds the anchors and headers in the store for a
//! bundle; [`bounds`] checks them in a bundle, offline, and says per batch what they bound.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::batch::ParsedBatch;
use crate::checkpoint::{is_checkpoint_line, ParsedCheckpoint};
use crate::crypto::PublicKey;
use crate::evidence::{Bundle, ExportError, TimestampVerifier};
use crate::merkle::{sha256, Digest};
use crate::timestamp::{format_rfc3339, UnixNanos};
use crate::verify::{Finding, FindingKind};
use crate::Header;

/// The most headers between a batch and its anchor: a farther anchor is not used (the bound is
/// then reported missing), so that a bundle stays a few megabytes.
pub const MAX_CHAIN: u64 = 4096;
/// Header text and checkpoint lines an exporter holds while it looks for anchors.
const MAX_HELD_BYTES: usize = 256 << 20;

/// One end of a record's time window: a time, and what vouches for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeBound {
    /// The time (docs/FORMAT.md §2.3 spelling).
    pub at: String,
    /// What dates it: which part of the bundle, and through how many chained headers.
    pub by: String,
}

/// What the bundle's time parts say about one of its batches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BatchBounds {
    /// It was sealed no later than this (trusted time).
    pub(crate) upper: Option<(UnixNanos, String)>,
    /// Why there is no upper bound, if there is none.
    pub(crate) no_upper: Option<String>,
}

/// A header the bundle carries: a batch's (signed) or one of the chain (linked by its hash).
struct Node {
    place: String,
    header: Header,
    hash: Digest,
}

/// A place in the bundle's chains that a TSA token dates: the batches at or before it existed
/// no later than `time` (None when the token was not checked or did not verify).
struct Anchor {
    node: usize,
    time: Option<UnixNanos>,
    by: String,
}

/// Checks the bundle's chain headers and checkpoints (docs/FORMAT.md §16.1): each chain header
/// parsed and validated, linked by `prev` to the header of the seq before, each checkpoint's
/// layout, its signature under `checkpoint_keys` (when given) and its token under `timestamps`,
/// and its tip equal to the hash of the header at that seq. `batches` holds, per bundle batch,
/// its header and hash if its signature held. Returns per batch what the anchors bound.
pub(crate) fn bounds(
    bundle: &Bundle,
    batches: &[Option<(&Header, Digest)>],
    checkpoint_keys: &[PublicKey],
    timestamps: Option<&dyn TimestampVerifier>,
    findings: &mut Vec<Finding>,
) -> Vec<BatchBounds> {
    let mut nodes: Vec<Node> = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        if let Some((header, hash)) = batch {
            nodes.push(Node { place: format!("batches[{i}]"), header: (*header).clone(), hash: *hash });
        }
    }
    let batch_nodes = nodes.len();
    for (k, text) in bundle.chain.iter().enumerate() {
        let parsed = serde_json::from_str::<Header>(text)
            .map_err(|e| e.to_string())
            .and_then(|h| h.validate().map(|()| h).map_err(|e| e.to_string()));
        match parsed {
            Ok(header) => {
                nodes.push(Node { place: format!("chain[{k}]"), header, hash: sha256(text.as_bytes()) })
            }
            Err(why) => findings.push(Finding::unplaced(
                FindingKind::Malformed,
                format!("chain[{k}]: not a batch header (docs/FORMAT.md §4): {why}"),
            )),
        }
    }
    // Per (stream, epoch), the nodes by seq; a second header at a seq is refused, not chosen.
    let mut index: HashMap<(&str, &str), BTreeMap<u64, usize>> = HashMap::new();
    let mut placed = vec![false; nodes.len()];
    for (n, node) in nodes.iter().enumerate() {
        let h = &node.header;
        let slot = index.entry((h.stream.as_str(), h.epoch.as_str())).or_default();
        match slot.get(&h.seq) {
            Some(&other) => {
                let what = if nodes[other].hash == node.hash {
                    "repeats"
                } else {
                    "is another header at the seq of"
                };
                findings.push(about(
                    FindingKind::Malformed,
                    h,
                    format!("{}: {what} {} (seq {})", node.place, nodes[other].place, h.seq),
                ));
            }
            None => {
                slot.insert(h.seq, n);
                placed[n] = true;
            }
        }
    }
    // Runs: headers of one epoch at consecutive seqs, each naming the one before in `prev`.
    let mut run = vec![usize::MAX; nodes.len()];
    let mut runs = 0;
    for slot in index.values() {
        let mut before: Option<(u64, usize)> = None;
        for (&seq, &n) in slot {
            let linked = match before {
                Some((s, b)) if s + 1 == seq => {
                    let prev = hex::encode(nodes[b].hash);
                    if nodes[n].header.prev.as_deref() == Some(prev.as_str()) {
                        true
                    } else {
                        findings.push(about(
                            FindingKind::ChainBreak,
                            &nodes[n].header,
                            format!(
                                "{}: its prev does not name {} (seq {s}), whose SHA-256 is {prev}: one of the two headers was changed",
                                nodes[n].place, nodes[b].place
                            ),
                        ));
                        false
                    }
                }
                _ => false,
            };
            if !linked {
                runs += 1;
            }
            run[n] = runs;
            before = Some((seq, n));
        }
    }
    let mut anchors: Vec<Anchor> = Vec::new();
    for (j, line) in bundle.checkpoints.iter().enumerate() {
        let name = format!("checkpoints[{j}]");
        let unplaced = |kind, detail: String| Finding::unplaced(kind, format!("{name}: {detail}"));
        let parsed = match ParsedCheckpoint::parse(line.as_bytes()) {
            Ok(parsed) => parsed,
            Err(e) => {
                findings.push(unplaced(FindingKind::Malformed, e.to_string()));
                continue;
            }
        };
        let c = &parsed.checkpoint;
        let Some(token) = &parsed.timestamp else {
            findings.push(unplaced(
                FindingKind::Malformed,
                "carries no timestamp token: it dates nothing".into(),
            ));
            continue;
        };
        let mut time = None;
        if !checkpoint_keys.is_empty() {
            if let Err(why) = parsed.verify(checkpoint_keys) {
                findings.push(unplaced(
                    FindingKind::InvalidCheckpoint,
                    format!("the checkpoint of {} {why}", c.at),
                ));
            }
        }
        if let Some(verifier) = timestamps {
            match verifier.verify_token(token, &parsed.body_hash()) {
                Ok(at) => time = Some(at),
                Err(why) => findings.push(unplaced(
                    FindingKind::TimeAnomaly,
                    format!(
                        "the timestamp token of the checkpoint of {} does not verify under the --tsa-root: {why}",
                        c.at
                    ),
                )),
            }
        }
        let mut landed = false;
        for tip in &c.tips {
            let Some(&n) = index.get(&(c.stream.as_str(), tip.epoch.as_str())).and_then(|s| s.get(&tip.seq))
            else {
                continue;
            };
            landed = true;
            if hex::encode(nodes[n].hash) != tip.head {
                findings.push(about(
                    FindingKind::CheckpointMismatch,
                    &nodes[n].header,
                    format!(
                        "{name} names header {} at seq {}, but {} there has SHA-256 {}: the header or the checkpoint was changed",
                        tip.head,
                        tip.seq,
                        nodes[n].place,
                        hex::encode(nodes[n].hash)
                    ),
                ));
                continue;
            }
            anchors.push(Anchor {
                node: n,
                time,
                by: format!("the TSA token of {name}, the gateway's checkpoint of {}", c.at),
            });
        }
        if !landed {
            findings.push(unplaced(
                FindingKind::Malformed,
                "names no header the bundle carries at its seq: it dates nothing here".into(),
            ));
        }
    }
    // A chain header is there to link a batch to an anchor: one that links nothing is bytes that
    // nothing checks, and is refused.
    let mut reach: HashMap<usize, (u64, u64)> = HashMap::new();
    for (n, node) in nodes.iter().enumerate().take(batch_nodes).filter(|(n, _)| placed[*n]) {
        let entry = reach.entry(run[n]).or_insert((u64::MAX, 0));
        entry.0 = entry.0.min(node.header.seq);
    }
    for anchor in &anchors {
        if let Some(entry) = reach.get_mut(&run[anchor.node]) {
            entry.1 = entry.1.max(nodes[anchor.node].header.seq);
        }
    }
    for (n, node) in nodes.iter().enumerate().skip(batch_nodes).filter(|(n, _)| placed[*n]) {
        let seq = node.header.seq;
        if !reach.get(&run[n]).is_some_and(|(lo, hi)| *lo <= seq && seq <= *hi) {
            findings.push(about(
                FindingKind::Malformed,
                &node.header,
                format!("{}: links no batch of the bundle to a checkpoint (seq {seq})", node.place),
            ));
        }
    }
    let mut out = vec![BatchBounds::default(); batches.len()];
    for (n, node) in nodes.iter().enumerate().take(batch_nodes) {
        let Some(i) = node.place.strip_prefix("batches[").and_then(|p| p.strip_suffix(']')) else { continue };
        let Ok(i) = i.parse::<usize>() else { continue };
        let reaching: Vec<&Anchor> = anchors
            .iter()
            .filter(|a| placed[n] && run[a.node] == run[n] && nodes[a.node].header.seq >= node.header.seq)
            .collect();
        let best = reaching.iter().filter_map(|a| a.time.map(|t| (t, *a))).min_by_key(|(t, _)| *t);
        out[i] = match best {
            Some((t, a)) => {
                let links = nodes[a.node].header.seq - node.header.seq;
                BatchBounds {
                    upper: Some((t, format!("{}, {links} chained headers after the batch", a.by))),
                    no_upper: None,
                }
            }
            None if reaching.is_empty() => BatchBounds {
                upper: None,
                no_upper: Some("the bundle carries no stamped checkpoint linked to this batch".into()),
            },
            None if timestamps.is_none() => BatchBounds {
                upper: None,
                no_upper: Some("the checkpoint's timestamp token is not checked without --tsa-root".into()),
            },
            None => BatchBounds {
                upper: None,
                no_upper: Some("the timestamp token of its checkpoint does not verify".into()),
            },
        };
    }
    out
}

/// A finding about the header `h` of the bundle.
fn about(kind: FindingKind, h: &Header, detail: String) -> Finding {
    Finding {
        kind,
        stream: Some(h.stream.clone()),
        epoch: Some(h.epoch.clone()),
        seq: Some(h.seq),
        record_index: None,
        detail,
    }
}

/// A batch of the bundle, whose anchors the linker looks for.
struct Target {
    stream: String,
    epoch: String,
    seq: u64,
    hash: Digest,
}

/// A stamped checkpoint that names a tip where a target's anchor may be.
struct Candidate {
    line: String,
    stream: String,
    at: String,
    tips: Vec<crate::checkpoint::Tip>,
}

/// Finds, in lines fed in any order, the anchors of a bundle's batches and the headers that link
/// them: per batch, the first stamped checkpoint whose tip of the batch's epoch is at or after
/// it (within [`MAX_CHAIN`] headers) and whose tip the headers of the input link back to the
/// batch. What it holds is bounded by the windows of seqs its batches leave open.
pub struct Linker {
    targets: Vec<Target>,
    /// Header text by hash, for the seqs within a target's window.
    headers: HashMap<Digest, String>,
    candidates: Vec<Candidate>,
    seen: HashSet<Digest>,
    held: usize,
    overflow: bool,
    timestamps: Option<Box<dyn TimestampVerifier>>,
}

impl Linker {
    /// A linker for the batches of `bundle`. With `timestamps`, a checkpoint whose token does not
    /// verify under it is passed over.
    pub fn new(bundle: &Bundle, timestamps: Option<Box<dyn TimestampVerifier>>) -> Self {
        let targets = bundle
            .batches
            .iter()
            .filter_map(|b| {
                let header = serde_json::from_str::<Header>(&b.header).ok()?;
                Some(Target {
                    stream: header.stream,
                    epoch: header.epoch,
                    seq: header.seq,
                    hash: sha256(b.header.as_bytes()),
                })
            })
            .collect();
        Self {
            targets,
            headers: HashMap::new(),
            candidates: Vec::new(),
            seen: HashSet::new(),
            held: 0,
            overflow: false,
            timestamps,
        }
    }

    /// Whether seq `seq` of (`stream`, `epoch`) may be on the way from a target to its anchor.
    fn in_window(&self, stream: &str, epoch: &str, seq: u64) -> bool {
        self.targets
            .iter()
            .any(|t| t.stream == stream && t.epoch == epoch && seq >= t.seq && seq - t.seq <= MAX_CHAIN)
    }

    fn hold(&mut self, bytes: usize) -> bool {
        if self.held + bytes > MAX_HELD_BYTES {
            self.overflow = true;
            return false;
        }
        self.held += bytes;
        true
    }

    /// Takes one line (without its newline): a stamped checkpoint naming a tip in a window, or a
    /// batch in one, is kept; everything else is passed over.
    pub fn push_line(&mut self, line: &[u8]) {
        if is_checkpoint_line(line) {
            let Ok(parsed) = ParsedCheckpoint::parse(line) else { return };
            let Some(token) = &parsed.timestamp else { return };
            let c = &parsed.checkpoint;
            if !c.tips.iter().any(|t| self.in_window(&c.stream, &t.epoch, t.seq))
                || !self.seen.insert(sha256(line))
            {
                return;
            }
            if let Some(verifier) = &self.timestamps {
                if verifier.verify_token(token, &parsed.body_hash()).is_err() {
                    return;
                }
            }
            if self.hold(line.len()) {
                self.candidates.push(Candidate {
                    line: String::from_utf8_lossy(line).into_owned(),
                    stream: c.stream.clone(),
                    at: c.at.clone(),
                    tips: c.tips.clone(),
                });
            }
            return;
        }
        let Ok(batch) = ParsedBatch::parse(line) else { return };
        let h = &batch.header;
        if !self.in_window(&h.stream, &h.epoch, h.seq) || self.headers.contains_key(&batch.header_hash) {
            return;
        }
        let text = String::from_utf8_lossy(batch.header_bytes()).into_owned();
        if self.hold(text.len()) {
            self.headers.insert(batch.header_hash, text);
        }
    }

    /// The headers from `target` (excluded) up to the header `head` at `seq`, following `prev`
    /// back from it, by seq; None if the input does not link them.
    fn walk_back(&self, target: &Target, head: &str, seq: u64) -> Option<Vec<(u64, &String)>> {
        let mut hash: Digest = hex::decode(head).ok()?.try_into().ok()?;
        let mut expected = seq;
        let mut out = Vec::new();
        loop {
            if hash == target.hash {
                return (expected == target.seq).then_some(out);
            }
            if expected <= target.seq {
                return None;
            }
            let text = self.headers.get(&hash)?;
            let header: Header = serde_json::from_str(text).ok()?;
            header.validate().ok()?;
            if header.stream != target.stream || header.epoch != target.epoch || header.seq != expected {
                return None;
            }
            out.push((expected, text));
            hash = hex::decode(header.prev.as_deref()?).ok()?.try_into().ok()?;
            expected -= 1;
        }
    }

    /// Puts in `bundle` each batch's anchor and the chain headers that link it.
    pub fn finish(self, bundle: &mut Bundle) -> Result<(), ExportError> {
        if self.overflow {
            return Err(ExportError::TooLarge(MAX_HELD_BYTES >> 20));
        }
        let in_bundle: HashSet<Digest> = self.targets.iter().map(|t| t.hash).collect();
        let mut chain: BTreeMap<(String, String, u64), String> = BTreeMap::new();
        let mut used: Vec<usize> = Vec::new();
        for target in &self.targets {
            let mut near: Vec<(u64, &str, usize, &str)> = self
                .candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| c.stream == target.stream)
                .flat_map(|(i, c)| {
                    c.tips
                        .iter()
                        .filter(|t| {
                            t.epoch == target.epoch && t.seq >= target.seq && t.seq - target.seq <= MAX_CHAIN
                        })
                        .map(move |t| (t.seq, c.at.as_str(), i, t.head.as_str()))
                })
                .collect();
            near.sort();
            for (seq, _, i, head) in near {
                let Some(links) = self.walk_back(target, head, seq) else { continue };
                for (s, text) in links {
                    if !in_bundle.contains(&sha256(text.as_bytes())) {
                        chain.insert((target.stream.clone(), target.epoch.clone(), s), text.clone());
                    }
                }
                if !used.contains(&i) {
                    used.push(i);
                }
                break;
            }
        }
        bundle.chain = chain.into_values().collect();
        bundle.checkpoints = used.into_iter().map(|i| self.candidates[i].line.clone()).collect();
        Ok(())
    }
}

/// The time `t` as a bound vouched for by `by`.
pub(crate) fn bound(t: UnixNanos, by: String) -> TimeBound {
    TimeBound { at: format_rfc3339(t), by }
}
