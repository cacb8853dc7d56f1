//! Trusted time for the records of an evidence bundle (docs/FORMAT.md §16.1, §16.2). A record's
//! batch is linked by a chain of headers — each one's `prev` the SHA-256 of the one before — to
//! anchors a TSA dated: a gateway checkpoint or a token whose RFC 3161 imprint is a header at or
//! after the batch bounds its sealing from above; a timestamp notice the shipper sealed into a
//! batch at or before it bounds it from below (the token existed before the batch that holds it
//! was signed). [`Linker`] finds the anchors and headers in the store for a bundle; `bounds`
//! checks them in a bundle, offline, and says per batch what they bound.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::batch::ParsedBatch;
use crate::checkpoint::{is_checkpoint_line, ParsedCheckpoint};
use crate::crypto::PublicKey;
use crate::evidence::{Bundle, BundleNotice, BundleToken, ExportError, TimestampVerifier};
use crate::merkle::{inclusion_proof, leaf_hash, root_from_inclusion_proof, sha256, Digest, MerkleBuilder};
use crate::timestamp::{format_rfc3339, UnixNanos};
use crate::verify::{Finding, FindingKind};
use crate::Header;

/// The most headers between a batch and an anchor: a farther one is not used (the bound is then
/// reported missing), so that a bundle stays a few megabytes.
pub const MAX_CHAIN: u64 = 4096;
/// Header text, checkpoint lines and notices an exporter holds while it looks for anchors.
const MAX_HELD_BYTES: usize = 256 << 20;
/// How a batch line holding a timestamp notice is told apart cheaply.
const NOTICE_MARK: &[u8] = b"\"teelog_notice\":\"timestamp\"";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One end of a record's time window: a time, and what vouches for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeBound {
    /// The time (docs/FORMAT.md §2.3 spelling).
    pub at: String,
    /// What dates it: which part of the bundle, and through how many chained headers.
    pub by: String,
}

/// The time `t` as a bound vouched for by `by`.
pub(crate) fn bound(t: UnixNanos, by: String) -> TimeBound {
    TimeBound { at: format_rfc3339(t), by }
}

/// One end of a batch's window: a time and what dates it, or why there is none.
pub(crate) type End = Result<(UnixNanos, String), String>;

/// What the bundle's time parts say about one of its batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchBounds {
    /// It was sealed no later than this (trusted time).
    pub(crate) upper: End,
    /// It was sealed no earlier than this (trusted time).
    pub(crate) lower: End,
}

impl Default for BatchBounds {
    fn default() -> Self {
        Self { upper: Err(String::new()), lower: Err(String::new()) }
    }
}

/// A header the bundle carries: a batch's (signed) or one of the chain (linked by its hash).
struct Node {
    place: String,
    /// Its index in `batches`, for a batch's header.
    batch: Option<usize>,
    header: Header,
    hash: Digest,
}

/// A header of the bundle that a TSA token dates: with `upper`, it and the headers before it in
/// its run existed no later than `time`; otherwise it and those after it were sealed no earlier.
/// `time` is None when the token was not checked or did not verify.
struct Anchor {
    node: usize,
    time: Option<UnixNanos>,
    by: String,
    upper: bool,
}

/// The headers of a bundle, checked and linked.
struct Graph {
    nodes: Vec<Node>,
    /// Per node, its run (headers of one epoch at consecutive seqs, each naming the one before):
    /// `usize::MAX` for a node refused.
    run: Vec<usize>,
    by_hash: HashMap<Digest, usize>,
    by_place: HashMap<(String, String, u64), usize>,
    batch_nodes: usize,
}

impl Graph {
    /// The headers of the bundle's batches and of its chain. A batch whose header does not parse
    /// is left out (its own check reports it); whether a batch's signature holds does not matter
    /// here, where a header counts by its hash.
    fn new(bundle: &Bundle, findings: &mut Vec<Finding>) -> Self {
        let mut nodes: Vec<Node> = Vec::new();
        for (i, batch) in bundle.batches.iter().enumerate() {
            if let Ok(header) = parse_header(&batch.header) {
                nodes.push(Node {
                    place: format!("batches[{i}]"),
                    batch: Some(i),
                    header,
                    hash: sha256(batch.header.as_bytes()),
                });
            }
        }
        let batch_nodes = nodes.len();
        for (k, text) in bundle.chain.iter().enumerate() {
            match parse_header(text) {
                Ok(header) => nodes.push(Node {
                    place: format!("chain[{k}]"),
                    batch: None,
                    header,
                    hash: sha256(text.as_bytes()),
                }),
                Err(why) => findings.push(Finding::unplaced(
                    FindingKind::Malformed,
                    format!("chain[{k}]: not a batch header (docs/FORMAT.md §4): {why}"),
                )),
            }
        }
        // A second header at a place is refused, not chosen.
        let mut by_place: HashMap<(String, String, u64), usize> = HashMap::new();
        // Ordered, so that findings come in one order whatever the bundle's.
        let mut per_epoch: BTreeMap<(&str, &str), BTreeMap<u64, usize>> = BTreeMap::new();
        for (n, node) in nodes.iter().enumerate() {
            let h = &node.header;
            let place = (h.stream.clone(), h.epoch.clone(), h.seq);
            match by_place.get(&place) {
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
                    by_place.insert(place, n);
                    per_epoch.entry((h.stream.as_str(), h.epoch.as_str())).or_default().insert(h.seq, n);
                }
            }
        }
        let mut run = vec![usize::MAX; nodes.len()];
        let mut runs = 0;
        for slot in per_epoch.values() {
            let mut before: Option<(u64, usize)> = None;
            for (&seq, &n) in slot {
                let linked = match before {
                    Some((s, b)) if s + 1 == seq => {
                        let prev = hex::encode(nodes[b].hash);
                        let linked = nodes[n].header.prev.as_deref() == Some(prev.as_str());
                        if !linked {
                            findings.push(about(
                                FindingKind::ChainBreak,
                                &nodes[n].header,
                                format!(
                                    "{}: its prev does not name {} (seq {s}), whose SHA-256 is {prev}: one of the two headers was changed",
                                    nodes[n].place, nodes[b].place
                                ),
                            ));
                        }
                        linked
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
        let by_hash = by_place.values().map(|&n| (nodes[n].hash, n)).collect();
        Self { nodes, run, by_hash, by_place, batch_nodes }
    }

    /// The node with header hash `hex`, if the bundle carries it.
    fn find(&self, hex: &str) -> Option<usize> {
        let hash: Digest = hex::decode(hex).ok()?.try_into().ok()?;
        self.by_hash.get(&hash).copied()
    }

    fn seq(&self, n: usize) -> u64 {
        self.nodes[n].header.seq
    }
}

/// `text` as a header, validated (docs/FORMAT.md §4).
fn parse_header(text: &str) -> Result<Header, String> {
    let header: Header = serde_json::from_str(text).map_err(|e| e.to_string())?;
    header.validate().map_err(|e| e.to_string())?;
    Ok(header)
}

/// Checks the bundle's time parts (docs/FORMAT.md §16.1, §16.2): each chain header parsed,
/// validated and linked by `prev` to the header of the seq before; each checkpoint's layout, its
/// signature under `checkpoint_keys` (when given), its token under `timestamps` and its tips
/// against the headers; each token's imprint; each notice's inclusion in its batch. Returns per
/// bundle batch what the anchors bound.
pub(crate) fn bounds(
    bundle: &Bundle,
    checkpoint_keys: &[PublicKey],
    timestamps: Option<&dyn TimestampVerifier>,
    findings: &mut Vec<Finding>,
) -> Vec<BatchBounds> {
    let graph = Graph::new(bundle, findings);
    let mut anchors: Vec<Anchor> = Vec::new();
    // Each anchoring part, by name, with whether it anchors anything in the bundle.
    let mut parts: Vec<(String, Vec<usize>)> = Vec::new();
    // The interval the TSA's accuracy leaves: an upper bound takes its end, a lower its start.
    let verify = |token: &[u8], digest: &Digest, name: &str, findings: &mut Vec<Finding>| match timestamps {
        None => None,
        Some(verifier) => match verifier.verify_token_interval(token, digest) {
            Ok(interval) => Some(interval),
            Err(why) => {
                findings.push(Finding::unplaced(
                    FindingKind::TimeAnomaly,
                    format!("{name}: the timestamp token does not verify under the --tsa-root: {why}"),
                ));
                None
            }
        },
    };
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
        if !checkpoint_keys.is_empty() {
            if let Err(why) = parsed.verify(checkpoint_keys) {
                findings.push(unplaced(
                    FindingKind::InvalidCheckpoint,
                    format!("the checkpoint of {} {why}", c.at),
                ));
            }
        }
        let time = verify(token, &parsed.body_hash(), &name, findings).map(|(_, latest)| latest);
        let mut landed = Vec::new();
        for tip in &c.tips {
            let Some(&n) = graph.by_place.get(&(c.stream.clone(), tip.epoch.clone(), tip.seq)) else {
                continue;
            };
            if hex::encode(graph.nodes[n].hash) != tip.head {
                findings.push(about(
                    FindingKind::CheckpointMismatch,
                    &graph.nodes[n].header,
                    format!(
                        "{name} names header {} at seq {}, but {} there has SHA-256 {}: the header or the checkpoint was changed",
                        tip.head,
                        tip.seq,
                        graph.nodes[n].place,
                        hex::encode(graph.nodes[n].hash)
                    ),
                ));
                continue;
            }
            landed.push(anchors.len());
            anchors.push(Anchor {
                node: n,
                time,
                by: format!("the TSA token of {name}, the gateway's checkpoint of {}", c.at),
                upper: true,
            });
        }
        parts.push((name, landed));
    }
    for (j, token) in bundle.tokens.iter().enumerate() {
        let name = format!("tokens[{j}]");
        let Some(n) = graph.find(&token.head) else {
            findings.push(Finding::unplaced(
                FindingKind::Malformed,
                format!("{name}: header {} is not in the bundle", token.head),
            ));
            continue;
        };
        let Ok(der) = base64::Engine::decode(&B64, &token.timestamp) else {
            findings
                .push(Finding::unplaced(FindingKind::Malformed, format!("{name}: timestamp: not base64")));
            continue;
        };
        let time = verify(&der, &graph.nodes[n].hash, &name, findings).map(|(_, latest)| latest);
        parts.push((name.clone(), vec![anchors.len()]));
        anchors.push(Anchor {
            node: n,
            time,
            by: format!("the TSA token of {name}, over {}", graph.nodes[n].place),
            upper: true,
        });
    }
    for (j, notice) in bundle.notices.iter().enumerate() {
        let name = format!("notices[{j}]");
        if let Some((node, token, head)) = check_notice(&graph, notice, &name, findings) {
            let time = verify(&token, &head, &name, findings).map(|(earliest, _)| earliest);
            parts.push((name.clone(), vec![anchors.len()]));
            anchors.push(Anchor {
                node,
                time,
                by: format!(
                    "the TSA token of the timestamp notice {name}, sealed in a batch at or before this one"
                ),
                upper: false,
            });
        }
    }
    // Every chain header and anchoring part is there to bound a batch: one that bounds none is
    // bytes that nothing checks, and is refused. Per run, what the batches in it span.
    let mut span: HashMap<usize, (u64, u64)> = HashMap::new();
    for b in (0..graph.batch_nodes).filter(|&b| graph.run[b] != usize::MAX) {
        let entry = span.entry(graph.run[b]).or_insert((u64::MAX, 0));
        *entry = (entry.0.min(graph.seq(b)), entry.1.max(graph.seq(b)));
    }
    let useful = |a: &Anchor| {
        let seq = graph.seq(a.node);
        span.get(&graph.run[a.node]).is_some_and(|(lo, hi)| if a.upper { *lo <= seq } else { seq <= *hi })
    };
    for (name, landed) in &parts {
        if !landed.iter().any(|&a| useful(&anchors[a])) {
            findings.push(Finding::unplaced(
                FindingKind::Malformed,
                format!("{name}: dates no batch of the bundle"),
            ));
        }
    }
    // Per run, the anchors that date a batch, by seq: uppers and lowers apart.
    let mut by_run: HashMap<(usize, bool), Vec<(u64, usize)>> = HashMap::new();
    for (i, a) in anchors.iter().enumerate().filter(|(_, a)| useful(a)) {
        by_run.entry((graph.run[a.node], a.upper)).or_default().push((graph.seq(a.node), i));
    }
    by_run.values_mut().for_each(|list| list.sort_unstable());
    for n in graph.batch_nodes..graph.nodes.len() {
        let (seq, run) = (graph.seq(n), graph.run[n]);
        let Some((lo, hi)) = span.get(&run) else {
            if run != usize::MAX {
                findings.push(unlinked(&graph.nodes[n]));
            }
            continue;
        };
        let highest_upper = by_run.get(&(run, true)).and_then(|l| l.last()).map(|(s, _)| *s);
        let lowest_lower = by_run.get(&(run, false)).and_then(|l| l.first()).map(|(s, _)| *s);
        let between = (*lo <= seq && highest_upper.is_some_and(|u| seq <= u))
            || (seq <= *hi && lowest_lower.is_some_and(|l| l <= seq));
        if !between {
            findings.push(unlinked(&graph.nodes[n]));
        }
    }
    // The best dated anchor of each run at or after (uppers) or at or before (lowers) each place:
    // the earliest time of the uppers from there on, the latest of the lowers up to there.
    let mut best: HashMap<(usize, bool), Vec<Option<Dated>>> = HashMap::new();
    for ((run, upper), list) in &by_run {
        let mut acc: Option<Dated> = None;
        let mut out = vec![None; list.len()];
        let order: Vec<usize> =
            if *upper { (0..list.len()).rev().collect() } else { (0..list.len()).collect() };
        for k in order {
            let a = list[k].1;
            if let Some(t) = anchors[a].time {
                let better = acc.is_none_or(|(b, _)| if *upper { t < b } else { t > b });
                if better {
                    acc = Some((t, a));
                }
            }
            out[k] = acc;
        }
        best.insert((*run, *upper), out);
    }
    let mut out = vec![BatchBounds::default(); bundle.batches.len()];
    for n in 0..graph.batch_nodes {
        let Some(i) = graph.nodes[n].batch else { continue };
        let (seq, run) = (graph.seq(n), graph.run[n]);
        let end = |upper: bool| -> End {
            let list = by_run.get(&(run, upper)).map(Vec::as_slice).unwrap_or_default();
            // The first anchor at or after the batch, or the last at or before it.
            let at = if upper {
                Some(list.partition_point(|(s, _)| *s < seq)).filter(|&k| k < list.len())
            } else {
                list.partition_point(|(s, _)| *s <= seq).checked_sub(1)
            };
            let (what, kind) = if upper {
                ("stamped checkpoint or token at or after this batch", "no upper bound")
            } else {
                ("timestamp notice sealed at or before this batch", "no lower bound")
            };
            let dated = at.and_then(|k| best.get(&(run, upper)).and_then(|b| b[k]));
            match (at, dated) {
                (_, Some((t, a))) => {
                    let links = graph.seq(anchors[a].node).abs_diff(seq);
                    Ok((t, format!("{}, {links} chained headers away", anchors[a].by)))
                }
                (None, None) => Err(format!("{kind}: the bundle links no {what}")),
                (Some(_), None) if timestamps.is_none() => {
                    Err(format!("{kind}: timestamp tokens are not checked without --tsa-root"))
                }
                (Some(_), None) => Err(format!("{kind}: the timestamp token of its {what} does not verify")),
            }
        };
        out[i] = BatchBounds { upper: end(true), lower: end(false) };
    }
    out
}

/// A verified time and the anchor (by index) that gives it.
type Dated = (UnixNanos, usize);

/// The finding on a chain header that links no batch to an anchor.
fn unlinked(node: &Node) -> Finding {
    about(
        FindingKind::Malformed,
        &node.header,
        format!(
            "{}: links no batch of the bundle to a checkpoint or token (seq {})",
            node.place, node.header.seq
        ),
    )
}

/// Checks notice `notice` (named `name`): its batch is a header of the bundle, the record is in
/// it (the proof leads to its root), it is a timestamp notice of an earlier batch of the same
/// epoch. Its batch's node, its token and the digest the token must cover, or None (with a
/// finding).
fn check_notice(
    graph: &Graph,
    notice: &BundleNotice,
    name: &str,
    findings: &mut Vec<Finding>,
) -> Option<(usize, Vec<u8>, Digest)> {
    let Some(n) = graph.find(&notice.header) else {
        findings.push(Finding::unplaced(
            FindingKind::Malformed,
            format!("{name}: header {} is not in the bundle", notice.header),
        ));
        return None;
    };
    let h = &graph.nodes[n].header;
    let proof: Option<Vec<Digest>> =
        notice.proof.iter().map(|p| hex::decode(p).ok().and_then(|d| d.try_into().ok())).collect();
    let root = proof.and_then(|p| {
        root_from_inclusion_proof(leaf_hash(notice.record.as_bytes()), notice.index, h.count, &p)
    });
    if root.map(hex::encode).as_deref() != Some(h.root.as_str()) {
        findings.push(Finding {
            record_index: Some(notice.index),
            ..about(
                FindingKind::RecordTampered,
                h,
                format!(
                    "{name}: the notice and its proof do not lead to the signed Merkle root of {} (record {} of {}): the notice, its index or the proof was changed",
                    graph.nodes[n].place, notice.index, h.count
                ),
            )
        });
        return None;
    }
    let checked = TimestampNotice::parse(notice.record.as_bytes()).and_then(|(parsed, token, head)| {
        if parsed.stamped_epoch != h.epoch || parsed.stamped_seq >= h.seq {
            Err(format!(
                "it stamps seq {} of epoch {}, not an earlier batch of its own epoch",
                parsed.stamped_seq, parsed.stamped_epoch
            ))
        } else {
            Ok((n, token, head))
        }
    });
    match checked {
        Ok(anchor) => Some(anchor),
        Err(why) => {
            findings.push(about(FindingKind::Malformed, h, format!("{name}: {why}")));
            None
        }
    }
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

/// A timestamp notice found in a batch of a target's epoch.
struct FoundNotice {
    stream: String,
    epoch: String,
    /// The seq and header hash of the batch holding it.
    seq: u64,
    notice: BundleNotice,
    stamped_seq: u64,
    stamped_head: String,
    timestamp: String,
}

/// Finds, in lines fed in any order, the anchors of a bundle's batches and the headers that link
/// them (docs/FORMAT.md §16.1, §16.2): per batch, the first stamped checkpoint whose tip of the
/// batch's epoch is at or after it, the first timestamp notice whose token stamps a header at or
/// after it, and the last notice sealed at or before it, each within [`MAX_CHAIN`] headers and
/// linked to the batch by headers of the input. What it holds is bounded by the windows of seqs
/// its batches leave open, and by `MAX_HELD_BYTES`.
pub struct Linker {
    targets: Vec<Target>,
    /// Per (stream, epoch) of a target, the seqs within [`MAX_CHAIN`] of one, as sorted disjoint
    /// ranges.
    windows: HashMap<(String, String), Vec<(u64, u64)>>,
    /// Header text by hash, for the seqs within a target's window.
    headers: HashMap<Digest, String>,
    candidates: Vec<Candidate>,
    notices: Vec<FoundNotice>,
    seen: HashSet<Digest>,
    held: usize,
    overflow: bool,
    timestamps: Option<Box<dyn TimestampVerifier>>,
}

impl Linker {
    /// A linker for the batches of `bundle`. With `timestamps`, a checkpoint or notice whose
    /// token does not verify under it is passed over.
    pub fn new(bundle: &Bundle, timestamps: Option<Box<dyn TimestampVerifier>>) -> Self {
        let targets = bundle
            .batches
            .iter()
            .filter_map(|b| {
                let header = parse_header(&b.header).ok()?;
                Some(Target {
                    stream: header.stream,
                    epoch: header.epoch,
                    seq: header.seq,
                    hash: sha256(b.header.as_bytes()),
                })
            })
            .collect::<Vec<Target>>();
        let mut windows: HashMap<(String, String), Vec<(u64, u64)>> = HashMap::new();
        for t in &targets {
            let range = (t.seq.saturating_sub(MAX_CHAIN), t.seq.saturating_add(MAX_CHAIN));
            windows.entry((t.stream.clone(), t.epoch.clone())).or_default().push(range);
        }
        for ranges in windows.values_mut() {
            ranges.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
            for &(lo, hi) in ranges.iter() {
                match merged.last_mut() {
                    Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                    _ => merged.push((lo, hi)),
                }
            }
            *ranges = merged;
        }
        Self {
            targets,
            windows,
            headers: HashMap::new(),
            candidates: Vec::new(),
            notices: Vec::new(),
            seen: HashSet::new(),
            held: 0,
            overflow: false,
            timestamps,
        }
    }

    /// Whether seq `seq` of (`stream`, `epoch`) may be on the way from a target to an anchor:
    /// within [`MAX_CHAIN`] of one.
    fn in_window(&self, stream: &str, epoch: &str, seq: u64) -> bool {
        // Looked up per line read, so by epoch and binary search, not over every target.
        let Some(ranges) = self.windows.get(&(stream.to_string(), epoch.to_string())) else { return false };
        let k = ranges.partition_point(|(_, hi)| *hi < seq);
        ranges.get(k).is_some_and(|(lo, _)| *lo <= seq)
    }

    fn hold(&mut self, bytes: usize) -> bool {
        if self.held + bytes > MAX_HELD_BYTES {
            self.overflow = true;
            return false;
        }
        self.held += bytes;
        true
    }

    fn token_holds(&self, token: &[u8], digest: &Digest) -> bool {
        self.timestamps.as_ref().is_none_or(|v| v.verify_token(token, digest).is_ok())
    }

    /// Takes one line (without its newline): a stamped checkpoint naming a tip in a window, or a
    /// batch in one (and the timestamp notices in it), is kept; everything else is passed over.
    pub fn push_line(&mut self, line: &[u8]) {
        if is_checkpoint_line(line) {
            let Ok(parsed) = ParsedCheckpoint::parse(line) else { return };
            let Some(token) = &parsed.timestamp else { return };
            let c = &parsed.checkpoint;
            if !c.tips.iter().any(|t| self.in_window(&c.stream, &t.epoch, t.seq))
                || !self.seen.insert(sha256(line))
                || !self.token_holds(token, &parsed.body_hash())
            {
                return;
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
        if !self.hold(text.len()) {
            return;
        }
        self.headers.insert(batch.header_hash, text);
        if memchr::memmem::find(line, NOTICE_MARK).is_some() {
            self.take_notices(&batch);
        }
    }

    /// Keeps the timestamp notices of `batch`, with their inclusion proofs, if its records are
    /// the signed ones.
    fn take_notices(&mut self, batch: &ParsedBatch<'_>) {
        let leaves: Vec<Digest> = batch.records().map(leaf_hash).collect();
        if hex::encode(MerkleBuilder::from_leaves(&leaves).root()) != batch.header.root {
            return;
        }
        for (index, record) in batch.records().enumerate() {
            if memchr::memmem::find(record, NOTICE_MARK).is_none() {
                continue;
            }
            let Ok((parsed, token, head)) = TimestampNotice::parse(record) else { continue };
            let Some(proof) = inclusion_proof(&leaves, index) else { continue };
            if parsed.stamped_epoch != batch.header.epoch
                || parsed.stamped_seq >= batch.header.seq
                || !self.token_holds(&token, &head)
                || !self.hold(record.len() + 64 * proof.len())
            {
                continue;
            }
            self.notices.push(FoundNotice {
                stream: batch.header.stream.clone(),
                epoch: batch.header.epoch.clone(),
                seq: batch.header.seq,
                notice: BundleNotice {
                    header: hex::encode(batch.header_hash),
                    index: index as u64,
                    record: String::from_utf8_lossy(record).into_owned(),
                    proof: proof.iter().map(hex::encode).collect(),
                },
                stamped_seq: parsed.stamped_seq,
                stamped_head: parsed.stamped_head,
                timestamp: parsed.timestamp,
            });
        }
    }

    /// The headers from the header `top` (hash, hex) at seq `top_seq` down to, and without, the
    /// header `bottom` at `bottom_seq`, following `prev`; None if the input does not link them.
    fn walk(
        &self,
        target: &Target,
        top: &str,
        top_seq: u64,
        bottom: &Digest,
        bottom_seq: u64,
    ) -> Option<Vec<(u64, &String)>> {
        let mut hash: Digest = hex::decode(top).ok()?.try_into().ok()?;
        let mut expected = top_seq;
        let mut out = Vec::new();
        loop {
            if hash == *bottom {
                return (expected == bottom_seq).then_some(out);
            }
            if expected <= bottom_seq {
                return None;
            }
            let text = self.headers.get(&hash)?;
            let header = parse_header(text).ok()?;
            if header.stream != target.stream || header.epoch != target.epoch || header.seq != expected {
                return None;
            }
            out.push((expected, text));
            hash = hex::decode(header.prev.as_deref()?).ok()?.try_into().ok()?;
            expected -= 1;
        }
    }

    /// Puts in `bundle` each batch's anchors and the chain headers that link them.
    pub fn finish(self, bundle: &mut Bundle) -> Result<(), ExportError> {
        if self.overflow {
            return Err(ExportError::TooLarge(MAX_HELD_BYTES >> 20));
        }
        let in_bundle: HashSet<Digest> = self.targets.iter().map(|t| t.hash).collect();
        let mut chain: BTreeMap<(String, String, u64), String> = BTreeMap::new();
        let mut used_checkpoints: Vec<usize> = Vec::new();
        let mut used_tokens: Vec<usize> = Vec::new();
        let mut used_notices: Vec<usize> = Vec::new();
        let mut link = |target: &Target, links: Vec<(u64, &String)>| {
            for (s, text) in links {
                if !in_bundle.contains(&sha256(text.as_bytes())) {
                    chain.insert((target.stream.clone(), target.epoch.clone(), s), text.clone());
                }
            }
        };
        let near = |t: &Target, seq: u64| seq >= t.seq && seq - t.seq <= MAX_CHAIN;
        for target in &self.targets {
            let mut tips: Vec<(u64, &str, usize, &str)> = self
                .candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| c.stream == target.stream)
                .flat_map(|(i, c)| {
                    c.tips
                        .iter()
                        .filter(|t| t.epoch == target.epoch && near(target, t.seq))
                        .map(move |t| (t.seq, c.at.as_str(), i, t.head.as_str()))
                })
                .collect();
            tips.sort();
            if let Some((i, links)) = tips.into_iter().find_map(|(seq, _, i, head)| {
                Some((i, self.walk(target, head, seq, &target.hash, target.seq)?))
            }) {
                link(target, links);
                if !used_checkpoints.contains(&i) {
                    used_checkpoints.push(i);
                }
            }
            let ours = |n: &&FoundNotice| n.stream == target.stream && n.epoch == target.epoch;
            // The first token over a header at or after the batch: an upper bound.
            let mut later: Vec<(u64, usize)> = self
                .notices
                .iter()
                .enumerate()
                .filter(|(_, n)| ours(n) && near(target, n.stamped_seq))
                .map(|(i, n)| (n.stamped_seq, i))
                .collect();
            later.sort();
            if let Some((i, links)) = later.into_iter().find_map(|(seq, i)| {
                Some((i, self.walk(target, &self.notices[i].stamped_head, seq, &target.hash, target.seq)?))
            }) {
                link(target, links);
                if !used_tokens.contains(&i) {
                    used_tokens.push(i);
                }
            }
            // The last notice sealed at or before the batch: a lower bound.
            let mut earlier: Vec<(u64, usize)> = self
                .notices
                .iter()
                .enumerate()
                .filter(|(_, n)| ours(n) && n.seq <= target.seq && target.seq - n.seq <= MAX_CHAIN)
                .map(|(i, n)| (u64::MAX - n.seq, i))
                .collect();
            earlier.sort();
            let target_hex = hex::encode(target.hash);
            if let Some((i, mut links)) = earlier.into_iter().find_map(|(_, i)| {
                let n = &self.notices[i];
                let holder: Digest = hex::decode(&n.notice.header).ok()?.try_into().ok()?;
                let mut links = self.walk(target, &target_hex, target.seq, &holder, n.seq)?;
                // The batch holding the notice is in the bundle too.
                links.push((n.seq, self.headers.get(&holder)?));
                Some((i, links))
            }) {
                links.retain(|(s, _)| *s != target.seq);
                link(target, links);
                if !used_notices.contains(&i) {
                    used_notices.push(i);
                }
            }
        }
        bundle.chain = chain.into_values().collect();
        bundle.checkpoints = used_checkpoints.into_iter().map(|i| self.candidates[i].line.clone()).collect();
        bundle.tokens = used_tokens
            .into_iter()
            .map(|i| BundleToken {
                head: self.notices[i].stamped_head.clone(),
                timestamp: self.notices[i].timestamp.clone(),
            })
            .collect();
        bundle.notices = used_notices.into_iter().map(|i| self.notices[i].notice.clone()).collect();
        Ok(())
    }
}

/// The `teelog_notice` of a timestamp notice (docs/FORMAT.md §16.2).
pub const TIMESTAMP_NOTICE: &str = "timestamp";

/// A timestamp notice: a record the shipper signs into its chain, holding an RFC 3161 token over
/// the header hash of an earlier batch of its epoch. Every member is fixed by the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampNotice {
    /// `INFO`.
    pub level: String,
    /// Says what it is, for people reading the log; fixed by the other members.
    pub message: String,
    /// The stamped batch's epoch.
    pub stamped_epoch: String,
    /// The stamped batch's header hash (hex): the token's message imprint.
    pub stamped_head: String,
    /// The stamped batch's seq.
    pub stamped_seq: u64,
    /// [`TIMESTAMP_NOTICE`].
    pub teelog_notice: String,
    /// The token (DER, standard base64).
    pub timestamp: String,
    /// When the signer took it (its clock), added by the signer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
}

impl TimestampNotice {
    /// The notice of `token`, a TSA's token over the header hash `head` of batch `seq` of `epoch`;
    /// the signer adds `ts`.
    pub fn new(epoch: &str, seq: u64, head: &Digest, token: &[u8]) -> Self {
        let head = hex::encode(head);
        Self {
            level: "INFO".into(),
            message: notice_message(epoch, seq, &head),
            stamped_epoch: epoch.into(),
            stamped_head: head,
            stamped_seq: seq,
            teelog_notice: TIMESTAMP_NOTICE.into(),
            timestamp: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, token),
            ts: None,
        }
    }

    /// The notice in `record` (canonical bytes), if it is one and every member has its one value;
    /// why not otherwise. The token itself is checked by the caller.
    pub fn parse(record: &[u8]) -> Result<(Self, Vec<u8>, Digest), String> {
        let notice: Self =
            serde_json::from_slice(record).map_err(|e| format!("not a timestamp notice: {e}"))?;
        let head: Digest = hex::decode(&notice.stamped_head)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or("stamped_head is not 64 hex digits")?;
        let token = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &notice.timestamp)
            .map_err(|e| format!("timestamp: not base64: {e}"))?;
        let expected = Self {
            ts: notice.ts.clone(),
            ..Self::new(&notice.stamped_epoch, notice.stamped_seq, &head, &token)
        };
        if notice != expected || notice.ts.is_none() {
            return Err("a member is not the one the format fixes (level, message, teelog_notice, ts)".into());
        }
        Ok((notice, token, head))
    }
}

fn notice_message(epoch: &str, seq: u64, head: &str) -> String {
    format!("teelog: RFC 3161 timestamp of seq {seq} of epoch {epoch} (header {head}); the batches after this one were sealed after its time")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, ChainHead, SoftwareSigner};
    use crate::crypto::{SigAlg, SoftwareKey};
    use crate::evidence::{check_bundle, Exporter, Selection};
    use crate::verify::VerifyOptions;

    /// A token is its digest and eight bytes of big-endian Unix nanoseconds.
    struct Tokens;

    impl TimestampVerifier for Tokens {
        fn verify_token(&self, token: &[u8], digest: &[u8; 32]) -> Result<UnixNanos, String> {
            match token.split_at_checked(32) {
                Some((d, t)) if d == digest => {
                    t.try_into().map(i64::from_be_bytes).map_err(|_| "length".into())
                }
                _ => Err("not over this digest".into()),
            }
        }
    }

    fn token(digest: &Digest, at: UnixNanos) -> Vec<u8> {
        [digest.as_slice(), &at.to_be_bytes()].concat()
    }

    const T0: UnixNanos = 1_800_000_000_000_000_000;

    /// A new P-256 key, PKCS#8.
    fn pkcs8() -> Vec<u8> {
        SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()
    }

    fn key(pkcs8: &[u8]) -> SoftwareKey {
        SoftwareKey::from_pkcs8(SigAlg::Es256, pkcs8).unwrap()
    }

    /// Batches 1..=n of one epoch signed by the key `pkcs8`, one record each, a second apart.
    fn chain(pkcs8: &[u8], n: u64) -> (Vec<Vec<u8>>, Vec<Digest>) {
        let signer = SoftwareSigner::new(key(pkcs8), None);
        let mut head = ChainHead {
            stream: "s".into(),
            epoch: "ab".repeat(16),
            next_seq: 1,
            prev: None,
            prev_sealed_at: None,
        };
        let (mut lines, mut hashes) = (Vec::new(), Vec::new());
        for seq in 1..=n {
            let mut builder = BatchBuilder::new();
            let at = T0 + seq as i64 * 1_000_000_000;
            builder.push_input(format!("{{\"n\":{seq}}}").as_bytes(), &|| at).unwrap();
            let mut line = Vec::new();
            let sealed = builder.seal(&mut head, &signer, at, &mut line).unwrap();
            line.pop();
            lines.push(line);
            hashes.push(sealed.header_hash);
        }
        (lines, hashes)
    }

    fn export(lines: &[Vec<u8>], seq: u64) -> Bundle {
        let mut exporter =
            Exporter::new(Selection::Place { stream: "s".into(), epoch: None, seq, index: None });
        lines.iter().for_each(|l| exporter.push_line(l));
        let mut bundle = exporter.finish().unwrap();
        let mut linker = Linker::new(&bundle, None);
        lines.iter().for_each(|l| linker.push_line(l));
        linker.finish(&mut bundle).unwrap();
        bundle
    }

    #[test]
    fn planted_headers_and_checkpoints_are_passed_over_for_the_linked_ones() {
        let (signer, gateway) = (pkcs8(), key(&pkcs8()));
        let (mut lines, hashes) = chain(&signer, 5);
        // Another key's chain of the same stream and epoch: its headers are at the same seqs,
        // and a checkpoint (nearer, tip seq 3) names its head.
        let (planted, planted_hashes) = chain(&pkcs8(), 5);
        lines.extend(planted.into_iter().skip(1));
        let checkpoint = |seq: u64, head: &Digest, at: UnixNanos| {
            let tips = vec![crate::checkpoint::Tip { epoch: "ab".repeat(16), head: hex::encode(head), seq }];
            let signed = crate::checkpoint::sign(&gateway, "s", at, tips).unwrap();
            let mut line = signed.line(Some(&token(&signed.body_hash(), at)));
            line.pop();
            line
        };
        lines.push(checkpoint(3, &planted_hashes[2], T0 + 10_000_000_000));
        lines.push(checkpoint(5, &hashes[4], T0 + 20_000_000_000));
        let bundle = export(&lines, 1);
        assert_eq!(bundle.chain.len(), 4, "headers 2 to 5 of the batch's own chain");
        assert_eq!(bundle.checkpoints.len(), 1);
        let options =
            VerifyOptions { trusted_keys: vec![key(&signer).public().clone()], ..VerifyOptions::default() };
        let report = check_bundle(&bundle, &options, None, Some(&Tokens), &[gateway.public().clone()], None);
        assert!(report.ok, "{:?}", report.findings);
        let bound = report.proven[0].no_later_than.as_ref().unwrap();
        assert_eq!(bound.at, format_rfc3339(T0 + 20_000_000_000));
        // The planted checkpoint put in by hand names a header the bundle does not carry at its
        // seq: a finding.
        let mut planted_in = bundle.clone();
        let planted_line = checkpoint(3, &planted_hashes[2], T0 + 10_000_000_000);
        planted_in.checkpoints.push(String::from_utf8(planted_line).unwrap());
        let report = check_bundle(&planted_in, &options, None, Some(&Tokens), &[], None);
        assert!(
            report.findings.iter().any(|f| f.kind == FindingKind::CheckpointMismatch),
            "{:?}",
            report.findings
        );
    }

    #[test]
    fn a_bundle_of_many_unlinked_headers_is_refused_in_linear_time() {
        let signer = pkcs8();
        let (lines, _) = chain(&signer, 2);
        let mut bundle = export(&lines, 1);
        let header = ParsedBatch::parse(&lines[1]).unwrap();
        let text = String::from_utf8(header.header_bytes().to_vec()).unwrap();
        // 50,000 headers at seqs far from the batch, none linked to it or to an anchor.
        bundle.chain = (0..50_000u64)
            .map(|i| text.replacen("\"seq\":2", &format!("\"seq\":{}", 10 + 2 * i), 1))
            .collect();
        bundle.tokens = (0..9_000)
            .map(|i| BundleToken {
                head: hex::encode(sha256(bundle.chain[i].as_bytes())),
                timestamp: "AAAA".into(),
            })
            .collect();
        let options =
            VerifyOptions { trusted_keys: vec![key(&signer).public().clone()], ..VerifyOptions::default() };
        let started = std::time::Instant::now();
        let report = check_bundle(&bundle, &options, None, Some(&Tokens), &[], None);
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
        assert!(!report.ok);
        let malformed = report.findings.iter().filter(|f| f.kind == FindingKind::Malformed).count();
        assert!(malformed >= 50_000, "every unlinked header and useless token is named: {malformed}");
    }
}
