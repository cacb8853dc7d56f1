//! One epoch's validly signed batches as the offline verifier's chain checks need them, in memory
//! flat in the epoch's length (docs/PERFORMANCE.md, "Verifier memory"). Batches whose seqs follow
//! one another are checked against each other when they meet (link and time), and then collapse
//! into a run that keeps its first batch in full, the header hash of its last, and per batch
//! only 24 bytes: the first 16 bytes of its header hash and its `sealed_at`. Those are what tell a
//! later copy of a batch from a second header signed for its seq (equivocation), however late it
//! comes, and what a fork, a hand-over or a checkpoint that lands inside a run is judged against.
//! Everything else is kept only where something is wrong (a second header, a broken link).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::checkpoint::Stored;
use crate::merkle::Digest;
use crate::timestamp::UnixNanos;
use crate::verify::{backwards, unlinked, FindingKind};

/// The first 16 bytes of a header hash. Two different headers with one print take about 2^64
/// tries to find, beyond any signer; a link or a checkpoint compared by print is as good as one
/// compared by the whole hash.
pub(crate) type Print = [u8; 16];

/// The print of `hash`.
pub(crate) fn print_of(hash: &Digest) -> Print {
    let mut print = [0u8; 16];
    print.copy_from_slice(&hash[..16]);
    print
}

/// The print of a header hash named in lower-case hex, if it names one.
pub(crate) fn print_of_hex(text: &str) -> Option<Print> {
    let digest = <[u8; 32]>::try_from(hex::decode(text).ok()?).ok()?;
    Some(print_of(&digest))
}

/// A print as messages show it: hex, marked as cut short.
fn shown(print: &Print) -> String {
    format!("{}…", hex::encode(print))
}

/// A validly signed batch held in full: the first of a run, a second header at a seq, or one
/// whose link is judged again at the end.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub header_hash: Digest,
    /// The header its `prev` names, as bytes: a validated header's `prev` is 64 lower-case hex
    /// digits (crate::batch), which `hex::encode` gives back exactly. Boxed: most slots held
    /// start a stream and link to nothing.
    pub prev: Option<Box<Digest>>,
    pub origin: Place,
    pub sealed_at: UnixNanos,
}

/// Where a batch held was read, as [`crate::verify::Origin`] writes it (`source:line`): the
/// source's name one copy shared by every batch read from it, the line a number, so that a batch
/// held costs no text of its own.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    source: Arc<str>,
    /// None when `source` is the whole of a text that ends in no line number (lines count from 1).
    line: Option<NonZeroU64>,
}

impl Place {
    /// `origin` (`source:line`) with its source taken from `share`.
    pub fn new(origin: &str, share: impl FnOnce(&str) -> Arc<str>) -> Self {
        if let Some((source, line)) = origin.rsplit_once(':') {
            // Digits that read back as written: no sign, no leading zero.
            let plain = line.bytes().all(|b| b.is_ascii_digit()) && (line == "0" || !line.starts_with('0'));
            if let Some(line) = line.parse::<NonZeroU64>().ok().filter(|_| plain) {
                return Place { source: share(source), line: Some(line) };
            }
        }
        Place { source: Arc::from(origin), line: None }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.source),
            None => f.write_str(&self.source),
        }
    }
}

/// What is kept of every batch of a run: the print of its header hash and its `sealed_at`.
#[derive(Debug, Clone, Copy)]
struct Kept {
    print: Print,
    sealed_at: UnixNanos,
}

/// A run of batches of one code (platform and measurement) over consecutive seqs, for the
/// timeline: `code` indexes the verifier's table of codes.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub first: u64,
    pub last: u64,
    pub from: UnixNanos,
    pub to: UnixNanos,
    pub code: u32,
    /// The policy's label of the code at its first batch.
    pub version: Option<String>,
    /// Whether the policy allows every batch of it.
    pub allowed: bool,
    pub batches: u64,
}

impl Segment {
    /// `later` continues it (same code, the next seq).
    fn continued_by(&self, later: &Segment) -> bool {
        self.code == later.code && self.last.checked_add(1) == Some(later.first)
    }

    fn absorb(&mut self, later: Segment) {
        self.last = later.last;
        self.to = later.to;
        self.allowed &= later.allowed;
        self.batches += later.batches;
    }
}

/// Consecutive seqs of an epoch, each with the first header read for it.
#[derive(Debug)]
struct Run {
    first: u64,
    /// The batch at `first`, in full: a batch for the seq before must be the one it links to.
    head: Slot,
    /// The header hash of its last batch: a batch for the seq after must link to it.
    tail_hash: Digest,
    /// One per seq from `first` on.
    kept: VecDeque<Kept>,
    /// Its batches by code, in seq order; none when no timeline is wanted (boxed: most runs are
    /// held without): a pointer in the run, not a deque's four words.
    #[allow(clippy::box_collection)]
    segments: Option<Box<VecDeque<Segment>>>,
}

impl Run {
    fn last(&self) -> u64 {
        self.first + self.kept.len() as u64 - 1
    }

    fn at(&self, seq: u64) -> Option<&Kept> {
        self.kept.get(usize::try_from(seq.checked_sub(self.first)?).ok()?)
    }

    /// The sealed_at of its last batch.
    fn tail_sealed_at(&self) -> UnixNanos {
        self.kept.back().map_or(0, |k| k.sealed_at)
    }

    /// `self` followed by `later`, which starts at the seq after its last. The shorter side is
    /// moved into the longer, so that joining runs in any order costs O(n log n) in all.
    fn join(mut self, mut later: Run) -> Run {
        let glue = |front: &mut VecDeque<Segment>, back: &mut VecDeque<Segment>| {
            if let (Some(a), Some(b)) = (front.back_mut(), back.front()) {
                if a.continued_by(b) {
                    if let Some(b) = back.pop_front() {
                        a.absorb(b);
                    }
                }
            }
        };
        if let (Some(front), Some(back)) = (self.segments.as_deref_mut(), later.segments.as_deref_mut()) {
            glue(front, back);
        }
        if self.kept.len() >= later.kept.len() {
            // A short run grows by what it needs (most epochs stay a few batches long); a long
            // one by doubling.
            if self.kept.len() < 4 {
                self.kept.reserve_exact(later.kept.len());
            }
            self.kept.extend(later.kept);
            match (&mut self.segments, later.segments) {
                (Some(front), Some(back)) => front.extend(*back),
                (front, back) => *front = front.take().or(back),
            }
            self.tail_hash = later.tail_hash;
            self
        } else {
            for kept in self.kept.into_iter().rev() {
                later.kept.push_front(kept);
            }
            match (self.segments, &mut later.segments) {
                (Some(front), Some(back)) => {
                    for segment in front.into_iter().rev() {
                        back.push_front(segment);
                    }
                }
                (front, back) => *back = back.take().or(front),
            }
            later.first = self.first;
            later.head = self.head;
            later
        }
    }
}

/// An epoch's runs by first seq. Nearly every epoch is one run, held in place (a list of one
/// would cost an allocation of its own per epoch); a short sorted list costs no map node per
/// epoch; beyond [`FEW_RUNS`] (lines arriving shuffled), a map keeps each arrival logarithmic.
#[derive(Debug)]
enum Runs {
    One(Run),
    Few(Vec<Run>),
    Many(BTreeMap<u64, Run>),
}

const FEW_RUNS: usize = 16;

impl Default for Runs {
    fn default() -> Self {
        Runs::Few(Vec::new())
    }
}

impl Runs {
    /// The runs, where they are a list (one or a few).
    fn listed(&self) -> Option<&[Run]> {
        match self {
            Runs::One(run) => Some(std::slice::from_ref(run)),
            Runs::Few(runs) => Some(runs),
            Runs::Many(_) => None,
        }
    }

    fn containing(&self, seq: u64) -> Option<&Run> {
        let run = match (self, self.listed()) {
            (_, Some(runs)) => runs.partition_point(|r| r.first <= seq).checked_sub(1).map(|i| &runs[i]),
            (Runs::Many(runs), None) => runs.range(..=seq).next_back().map(|(_, r)| r),
            _ => None,
        };
        run.filter(|r| r.last() >= seq)
    }

    fn containing_mut(&mut self, seq: u64) -> Option<&mut Run> {
        let run = match self {
            Runs::One(run) => Some(run).filter(|r| r.first <= seq),
            Runs::Few(runs) => {
                let i = runs.partition_point(|r| r.first <= seq).checked_sub(1)?;
                runs.get_mut(i)
            }
            Runs::Many(runs) => runs.range_mut(..=seq).next_back().map(|(_, r)| r),
        };
        run.filter(|r| r.last() >= seq)
    }

    fn take_starting_at(&mut self, seq: u64) -> Option<Run> {
        match self {
            Runs::One(run) if run.first == seq => match std::mem::take(self) {
                Runs::One(run) => Some(run),
                _ => None,
            },
            Runs::One(_) => None,
            Runs::Few(runs) => {
                let i = runs.binary_search_by_key(&seq, |r| r.first).ok()?;
                Some(runs.remove(i))
            }
            Runs::Many(runs) => runs.remove(&seq),
        }
    }

    fn take_ending_at(&mut self, seq: u64) -> Option<Run> {
        let first = self.containing(seq).filter(|r| r.last() == seq)?.first;
        self.take_starting_at(first)
    }

    fn put(&mut self, run: Run) {
        let sorted_into = |runs: &mut Vec<Run>, run: Run| {
            let i = runs.partition_point(|r| r.first < run.first);
            runs.insert(i, run);
        };
        *self = match std::mem::take(self) {
            Runs::Few(runs) if runs.is_empty() => Runs::One(run),
            Runs::One(one) => {
                let mut runs = vec![one];
                sorted_into(&mut runs, run);
                Runs::Few(runs)
            }
            Runs::Few(mut runs) if runs.len() < FEW_RUNS => {
                sorted_into(&mut runs, run);
                Runs::Few(runs)
            }
            Runs::Few(runs) => {
                let mut map: BTreeMap<u64, Run> = runs.into_iter().map(|r| (r.first, r)).collect();
                map.insert(run.first, run);
                Runs::Many(map)
            }
            Runs::Many(mut runs) => {
                runs.insert(run.first, run);
                Runs::Many(runs)
            }
        };
    }

    fn iter(&self) -> impl Iterator<Item = &Run> {
        let many = match self {
            Runs::Many(runs) => Some(runs),
            _ => None,
        };
        self.listed().unwrap_or_default().iter().chain(many.into_iter().flat_map(|m| m.values()))
    }
}

/// A batch that did not link to the batch before it when the two met; judged again at the end,
/// when any second header at that seq is in too.
#[derive(Debug)]
struct Unlinked {
    seq: u64,
    slot: Slot,
}

/// One epoch's validly signed headers, by seq.
#[derive(Debug, Default)]
pub(crate) struct EpochChain {
    runs: Runs,
    /// Distinct headers.
    batches: u64,
    /// Boxed, so that a sound epoch pays a pointer for it.
    rare: Option<Box<Rare>>,
}

/// What an epoch holds only where something is wrong.
#[derive(Debug, Default)]
struct Rare {
    /// Headers read for a seq after the first one read for it (equivocation), in full.
    forks: BTreeMap<u64, Vec<Slot>>,
    unlinked: Vec<Unlinked>,
    /// Headers (seq, print) read so far only in lines whose records were tampered with: an intact
    /// copy of one is a first copy, not a duplicate.
    tampered: BTreeSet<(u64, Print)>,
    /// Timeline segments of second headers at a seq whose code differs from the first's.
    odd_segments: Vec<Segment>,
}

/// What [`EpochChain::insert`] is told of a batch besides its header.
pub(crate) struct Arrival {
    pub seq: u64,
    pub slot: Slot,
    /// Seqs link and keep time (not a seed-format epoch).
    pub chained: bool,
    /// Its records are intact.
    pub intact: bool,
    /// Its timeline segment, when a timeline is wanted.
    pub segment: Option<Segment>,
}

impl EpochChain {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The headers read for `seq` after the first.
    fn forks_at(&self, seq: u64) -> &[Slot] {
        self.rare.as_ref().and_then(|r| r.forks.get(&seq)).map_or(&[], Vec::as_slice)
    }

    /// Every seq with more than one header, with the headers read after the first.
    fn forks(&self) -> impl Iterator<Item = (&u64, &Vec<Slot>)> {
        self.rare.iter().flat_map(|r| r.forks.iter())
    }

    /// Distinct validly signed headers.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    pub fn is_empty(&self) -> bool {
        self.batches == 0
    }

    /// Whether the header with hash `print` is held at `seq`.
    fn holds(&self, seq: u64, print: &Print) -> bool {
        self.runs.containing(seq).and_then(|r| r.at(seq)).is_some_and(|k| k.print == *print)
            || self.forks_at(seq).iter().any(|s| print_of(&s.header_hash) == *print)
    }

    /// Whether an intact copy of the header `hash` at `seq` is its first intact copy (a
    /// duplicate otherwise).
    pub fn first_intact_copy(&mut self, seq: u64, hash: &Digest) -> bool {
        let print = print_of(hash);
        !self.holds(seq, &print) || self.rare.as_mut().is_some_and(|r| r.tampered.remove(&(seq, print)))
    }

    /// Takes in a header; a copy of one held changes nothing. Returns the findings its meeting
    /// with the batches next to it shows at once (time going backwards: no later line can undo
    /// that), as (seq, detail).
    pub fn insert(&mut self, arrival: Arrival) -> Vec<(u64, String)> {
        let Arrival { seq, slot, chained, intact, segment } = arrival;
        let print = print_of(&slot.header_hash);
        if self.holds(seq, &print) {
            return Vec::new();
        }
        self.batches += 1;
        if !intact {
            self.rare().tampered.insert((seq, print));
        }
        if let Some(run) = self.runs.containing_mut(seq) {
            // A second header for a seq: kept whole, judged at the end.
            let mut odd = None;
            if let Some(segment) = segment {
                match run
                    .segments
                    .iter_mut()
                    .flat_map(|s| s.iter_mut())
                    .find(|s| (s.first..=s.last).contains(&seq))
                {
                    Some(s) if s.code == segment.code => {
                        s.batches += 1;
                        s.allowed &= segment.allowed;
                    }
                    _ => odd = Some(segment),
                }
            }
            let rare = self.rare();
            rare.odd_segments.extend(odd);
            rare.forks.entry(seq).or_default().push(slot);
            return Vec::new();
        }
        let single = Run {
            first: seq,
            tail_hash: slot.header_hash,
            kept: VecDeque::from([Kept { print, sealed_at: slot.sealed_at }]),
            head: slot,
            segments: segment.map(|s| Box::new(VecDeque::from([s]))),
        };
        let before = seq.checked_sub(1).and_then(|s| self.runs.take_ending_at(s));
        let after = seq.checked_add(1).and_then(|s| self.runs.take_starting_at(s));
        let mut shown = Vec::new();
        let mut run = single;
        if let Some(before) = before {
            if chained {
                self.meet(&before, &run, &mut shown);
            }
            run = before.join(run);
        }
        if let Some(after) = after {
            if chained {
                self.meet(&run, &after, &mut shown);
            }
            run = run.join(after);
        }
        self.runs.put(run);
        shown
    }

    /// Checks the first batch of `later` against the last of `earlier`, the seq before it.
    fn meet(&mut self, earlier: &Run, later: &Run, shown: &mut Vec<(u64, String)>) {
        let head = &later.head;
        if head.prev.as_deref() != Some(&earlier.tail_hash) {
            self.rare().unlinked.push(Unlinked { seq: later.first, slot: head.clone() });
        }
        let before = earlier.tail_sealed_at();
        if head.sealed_at < before {
            shown.push((
                later.first,
                format!("{}: {}", head.origin, backwards(head.sealed_at, later.first - 1, before)),
            ));
        }
    }

    fn kept_at(&self, seq: u64) -> Option<&Kept> {
        self.runs.containing(seq)?.at(seq)
    }

    /// The lowest seq held.
    pub fn lowest(&self) -> Option<u64> {
        self.runs.iter().next().map(|r| r.first)
    }

    /// The highest seq held.
    pub fn highest(&self) -> Option<u64> {
        self.runs.iter().last().map(Run::last)
    }

    /// The batches held in full at the lowest seq of a run that starts at `seq`: there, every
    /// header is (the first read, and any second ones). Empty where no run starts at `seq`.
    pub fn heads_at(&self, seq: u64) -> Vec<&Slot> {
        let Some(run) = self.runs.containing(seq).filter(|r| r.first == seq) else { return Vec::new() };
        std::iter::once(&run.head).chain(self.forks_at(seq).iter()).collect()
    }

    /// Every header held, as (seq, print, sealed_at).
    pub fn prints(&self) -> impl Iterator<Item = (u64, Print, UnixNanos)> + '_ {
        let kept = self
            .runs
            .iter()
            .flat_map(|r| (r.first..).zip(r.kept.iter()).map(|(s, k)| (s, k.print, k.sealed_at)));
        let forks =
            self.forks().flat_map(|(s, f)| f.iter().map(|x| (*s, print_of(&x.header_hash), x.sealed_at)));
        kept.chain(forks)
    }

    /// What is held at `seq`, for the checkpoint check.
    pub fn stored(&self, seq: u64) -> Stored {
        if self.is_empty() {
            return Stored::Missing { from: 1, epoch_present: false };
        }
        match self.kept_at(seq) {
            Some(kept) => {
                let forks = self.forks_at(seq).iter().map(|s| print_of(&s.header_hash));
                Stored::Present(std::iter::once(kept.print).chain(forks).collect())
            }
            None => {
                let below = self.runs.iter().take_while(|r| r.first < seq).last().map_or(0, Run::last);
                Stored::Missing { from: below + 1, epoch_present: true }
            }
        }
    }

    /// Every header at `seq`, as messages name them (whole where held whole).
    fn headers_at(&self, seq: u64) -> Vec<String> {
        let Some(run) = self.runs.containing(seq) else { return Vec::new() };
        let first = if run.first == seq {
            hex::encode(run.head.header_hash)
        } else if run.last() == seq {
            hex::encode(run.tail_hash)
        } else {
            run.at(seq).map(|k| shown(&k.print)).unwrap_or_default()
        };
        std::iter::once(first).chain(self.forks_at(seq).iter().map(|s| hex::encode(s.header_hash))).collect()
    }

    /// Whether `prev` names a header held at `seq`.
    fn links_to(&self, prev: Option<&Digest>, seq: u64) -> bool {
        let Some(prev) = prev else { return false };
        self.kept_at(seq).is_some_and(|k| k.print == print_of(prev))
            || self.forks_at(seq).iter().any(|s| s.header_hash == *prev)
    }

    /// The latest `sealed_at` among the headers at `seq`.
    fn latest_at(&self, seq: u64) -> Option<UnixNanos> {
        let forks = self.forks_at(seq).iter().map(|s| s.sealed_at);
        self.kept_at(seq).map(|k| k.sealed_at).into_iter().chain(forks).max()
    }

    /// The rules within the epoch, once every line is in: equivocation, gaps, and (where `chained`)
    /// the links and times the meetings of batches could not settle alone.
    pub fn judge(&self, chained: bool, report: &mut dyn FnMut(FindingKind, u64, String)) {
        // Equivocation: two different validly signed batches at one seq; report every one.
        for (seq, forks) in self.forks() {
            // The first header read at the seq is held whole only where a run starts with it.
            let head = self.runs.containing(*seq).filter(|r| r.first == *seq).map(|r| &r.head);
            let named = |s: &Slot| format!("header {} at {}", hex::encode(s.header_hash), s.origin);
            let first = head.map_or_else(
                || {
                    format!(
                        "header {} (read first)",
                        self.headers_at(*seq).first().cloned().unwrap_or_default()
                    )
                },
                named,
            );
            let all: Vec<String> = std::iter::once(first).chain(forks.iter().map(named)).collect();
            let detail = |origin: &str| {
                format!(
                    "{origin}: {} different batches are signed for this seq: {}",
                    all.len(),
                    all.join("; ")
                )
            };
            let first_origin = head.map_or_else(
                || {
                    let before = forks.first().map_or(String::new(), |f| f.origin.to_string());
                    format!("batch {seq} as read first (before {before})")
                },
                |h| h.origin.to_string(),
            );
            report(FindingKind::Equivocation, *seq, detail(&first_origin));
            for fork in forks {
                report(FindingKind::Equivocation, *seq, detail(&fork.origin.to_string()));
            }
        }

        // Gaps: every seq from 1 to the highest validly signed one must be validly signed (a
        // forged line neither fills a gap nor makes one up to a seq of its choosing). Walks the
        // runs, never the numbers between them: a seq near 2^53 costs nothing.
        let mut last = 0u64;
        for run in self.runs.iter() {
            if run.first > last.saturating_add(1) {
                let (first, end) = (last + 1, run.first - 1);
                let range = if first == end {
                    format!("batch {first} is")
                } else {
                    format!("batches {first} to {end} are")
                };
                report(FindingKind::SequenceGap, first, format!("{range} missing"));
            }
            last = last.max(run.last());
        }
        if !chained {
            return;
        }

        // Links and times within the epoch: seq n must name a header of seq n-1, and be sealed no
        // earlier than any. The first header read at each seq met its neighbours on arrival;
        // what is left is any that did not link then, and the second headers.
        let unlinked_detail = |slot: &Slot, seq: u64| {
            let prev = slot.prev.as_deref().map(hex::encode);
            format!("{}: {}", slot.origin, unlinked(prev.as_deref(), seq - 1, &self.headers_at(seq - 1)))
        };
        for Unlinked { seq, slot } in self.rare.iter().flat_map(|r| r.unlinked.iter()) {
            if !self.links_to(slot.prev.as_deref(), seq - 1) {
                report(FindingKind::ChainBreak, *seq, unlinked_detail(slot, *seq));
            }
        }
        for (seq, forks) in self.forks() {
            let seq = *seq;
            // The second headers, against the seq before.
            if seq > 1 && self.kept_at(seq - 1).is_some() {
                let before = self.latest_at(seq - 1).unwrap_or(0);
                for fork in forks {
                    if !self.links_to(fork.prev.as_deref(), seq - 1) {
                        report(FindingKind::ChainBreak, seq, unlinked_detail(fork, seq));
                    }
                    if fork.sealed_at < before {
                        let detail = backwards(fork.sealed_at, seq - 1, before);
                        report(FindingKind::TimeAnomaly, seq, format!("{}: {detail}", fork.origin));
                    }
                }
            }
            // The first header of the seq after, against a second header here sealed later
            // than the first (the first it met on arrival).
            let (Some(next), Some(first)) = (seq.checked_add(1), self.kept_at(seq)) else { continue };
            let latest = self.latest_at(seq).unwrap_or(0);
            match self.kept_at(next) {
                Some(after) if after.sealed_at >= first.sealed_at && after.sealed_at < latest => {
                    let detail = backwards(after.sealed_at, seq, latest);
                    report(FindingKind::TimeAnomaly, next, format!("batch {next} as read first: {detail}"));
                }
                _ => {}
            }
        }
    }

    /// The timeline segments, in seq order within each run.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        let odd = self.rare.iter().flat_map(|r| r.odd_segments.iter());
        self.runs.iter().flat_map(|r| r.segments.iter().flat_map(|s| s.iter())).chain(odd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_shows_the_origin_it_was_made_of() {
        let mut shared = Vec::new();
        for origin in [
            "store/a.ndjson:12",
            "c:\\logs\\x:0",
            "a:b:7",
            "x:007",
            "x:+3",
            "x:",
            "-",
            ":",
            "s:18446744073709551616",
        ] {
            let place = Place::new(origin, |source| {
                shared.push(source.to_string());
                Arc::from(source)
            });
            assert_eq!(place.to_string(), origin);
        }
        // Only sources that end in a line number (from 1) are shared; the rest are kept whole.
        assert_eq!(shared, ["store/a.ndjson", "a:b"]);
    }
}
