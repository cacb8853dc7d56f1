//! Batch lines put back together from what Loki answered, trusting nothing of Loki but the lines
//! (docs/LOKI.md §1, "Rebuilding"). A batch entry's signed header says when its records were
//! stored (`sealed_at + index` ns, `count` of them), and its signed hints say which entry at
//! each of those times is the record. Labels, structured metadata and the order of Loki's
//! answers decide nothing. Entries that no batch entry holds are foreign entries.
//!
//! Sans-IO and bounded: fed the batch entries of a range, then the record entries in timestamp
//! order (as [`Pager`](crate::Pager) hands them out), it holds only the record entries of the
//! batches still open at that time, at most [`MAX_CANDIDATES`] per record time and
//! [`MAX_HELD_BYTES`] in all, and hands out each batch line once its last record time has
//! passed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use smallvec::{smallvec, SmallVec};
use teelog_core::batch::HINT_LEN;
use teelog_core::merkle::{leaf_hash, sha256, Digest, MerkleBuilder};
use teelog_core::timestamp::{format_rfc3339, UnixNanos};
use teelog_core::Header;

use crate::layout::{parse_batch_entry, parse_record_part, rebuild_unchecked, BatchEntry, Kind, LayoutError};

/// Entries held per record time. The entries a signed hint names are kept first, so a crowd of
/// planted entries cannot push the record out.
pub const MAX_CANDIDATES: usize = 4;
/// Bytes of record entries held at once. A batch line that verifies is far smaller (8 MiB by
/// default), so only planted entries can fill this.
pub const MAX_HELD_BYTES: usize = 64 << 20;
/// Foreign entries listed one by one per stream; the rest are counted.
pub const FOREIGN_LISTED: usize = 20;
/// Combinations tried when one hint names several entries (a hint collision).
const MAX_COMBINATIONS: u64 = 64;

type Hint = [u8; HINT_LEN];

/// What is kept per record time: nearly always one hint and one entry, which these hold
/// without an allocation of their own.
type Hints = SmallVec<[Hint; 1]>;
type Candidates = SmallVec<[Candidate; 1]>;
/// The candidates a record time offers a batch (at most [`MAX_CANDIDATES`]).
type Options = SmallVec<[usize; MAX_CANDIDATES]>;

fn hint(leaf: &Digest) -> Hint {
    let mut out = [0u8; HINT_LEN];
    out.copy_from_slice(&leaf[..HINT_LEN]);
    out
}

/// Where a batch's records end: `sealed_at + count`, exclusive.
fn span_end(sealed_at: UnixNanos, count: usize) -> Option<UnixNanos> {
    i64::try_from(count).ok().and_then(|n| sealed_at.checked_add(n))
}

/// Why an entry belongs to no signed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignReason {
    /// No batch entry has a record stored at this time.
    NoBatch,
    /// A batch has a record stored at this time, and its signed hint names another entry.
    NotTheRecord,
    /// More than [`MAX_CANDIDATES`] entries compete for this record time; this one was dropped.
    Crowded,
    /// [`MAX_HELD_BYTES`] of competing record entries were held already; this one was dropped.
    OverBudget,
    /// A batch entry stored at another time than its signed `sealed_at`.
    Misplaced {
        /// The time its header signs, Unix nanoseconds.
        sealed_at: UnixNanos,
    },
    /// A batch entry of another teelog stream.
    OtherStream,
    /// A record part entry that does not join with others into the record it names.
    Unjoined,
}

impl fmt::Display for ForeignReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForeignReason::NoBatch => {
                f.write_str("no batch entry of the range has a record stored at this time")
            }
            ForeignReason::NotTheRecord => f.write_str(
                "a batch has a record stored at this time, but its signed hint names another entry",
            ),
            ForeignReason::Crowded => write!(
                f,
                "more than {MAX_CANDIDATES} entries compete for this record time; the others were kept"
            ),
            ForeignReason::OverBudget => write!(
                f,
                "{} MiB of competing record entries were held already, so this one was not considered",
                MAX_HELD_BYTES >> 20
            ),
            ForeignReason::Misplaced { sealed_at } => write!(
                f,
                "a batch entry stored at another time than its signed sealed_at {}, where the shipper \
                 stores it; not verified here",
                format_rfc3339(*sealed_at)
            ),
            ForeignReason::OtherStream => {
                f.write_str("a batch entry of another teelog stream; not verified here")
            }
            ForeignReason::Unjoined => f.write_str(
                "a record part that is malformed, or whose other parts are missing, or that does not \
                 join with them into the record whose leaf hash it names",
            ),
        }
    }
}

/// An entry that belongs to no signed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// Which stream of the layout it was read from.
    pub kind: Kind,
    /// Where Loki stored it, Unix nanoseconds.
    pub timestamp: UnixNanos,
    /// Why no batch holds it.
    pub reason: ForeignReason,
}

/// The first [`FOREIGN_LISTED`] foreign entries and how many there were in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignEntries {
    /// The first ones, in the order they were met.
    pub listed: Vec<Foreign>,
    /// All of them, listed or not.
    pub total: u64,
}

impl ForeignEntries {
    fn push(&mut self, foreign: Foreign) {
        self.total += 1;
        if self.listed.len() < FOREIGN_LISTED {
            self.listed.push(foreign);
        }
    }
}

/// A batch line put back together, for the verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// Where Loki stored the batch entry.
    pub timestamp: UnixNanos,
    /// The header as the batch entry says (its signature is the verifier's to check).
    pub header: Header,
    /// The batch line, rebuilt from its batch entry and the record entries its hints select;
    /// byte for byte the line that was pushed, if Loki kept it.
    pub line: Vec<u8>,
}

/// What a batch entry is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// Stored before the range, with records inside it: it claims them, and is not verified.
    LeadIn,
    /// Stored in the range: rebuilt and verified.
    Verify,
}

/// The lines met at the latest time, so that an entry that several label sets hold counts once.
#[derive(Debug, Default)]
struct SameTime {
    at: Option<UnixNanos>,
    seen: HashSet<Digest>,
}

impl SameTime {
    /// Whether `id` is new at `at`. Entries come in timestamp order, so only the latest time's
    /// lines are remembered: at most the two pages that time can span.
    fn first(&mut self, at: UnixNanos, id: Digest) -> bool {
        if self.at != Some(at) {
            self.at = Some(at);
            self.seen.clear();
        }
        self.seen.insert(id)
    }
}

/// The batch entries of a stream in `[from, to)`, and those stored shortly before `from`
/// whose records may lie inside it. Feed them with [`BatchEntries::push`], then go on to the
/// records with [`BatchEntries::records`].
#[derive(Debug)]
pub struct BatchEntries {
    stream: String,
    from: UnixNanos,
    to: UnixNanos,
    entries: Vec<(BatchEntry, Role)>,
    same_time: SameTime,
    foreign: ForeignEntries,
}

impl BatchEntries {
    /// For the entries of teelog stream `stream`.
    pub fn new(stream: &str, from: UnixNanos, to: UnixNanos) -> Self {
        Self {
            stream: stream.to_string(),
            from,
            to,
            entries: Vec::new(),
            same_time: SameTime::default(),
            foreign: ForeignEntries::default(),
        }
    }

    /// Adds an entry Loki stored at `timestamp`. An entry of the range that is not a batch
    /// entry is returned as an error, to report. One that is not where the shipper stores it
    /// (at its `sealed_at`, under its stream) is foreign: a copy someone planted there, which
    /// verifying would only turn into a duplicate or into a batch without its records. One
    /// stored before `from` is used only to claim its records inside the range; nothing about
    /// it is reported.
    pub fn push(&mut self, timestamp: UnixNanos, line: String) -> Result<(), LayoutError> {
        if !self.same_time.first(timestamp, sha256(line.as_bytes())) {
            return Ok(());
        }
        let inside = timestamp >= self.from;
        let entry = match parse_batch_entry(timestamp, line) {
            Ok(entry) => entry,
            Err(e) if inside => return Err(e),
            Err(_) => return Ok(()),
        };
        let misplaced = if entry.header.stream != self.stream {
            Some(ForeignReason::OtherStream)
        } else if entry.timestamp != entry.sealed_at {
            Some(ForeignReason::Misplaced { sealed_at: entry.sealed_at })
        } else {
            None
        };
        match (misplaced, inside) {
            (Some(reason), true) => self.foreign.push(Foreign { kind: Kind::Batch, timestamp, reason }),
            (None, true) => self.entries.push((entry, Role::Verify)),
            (Some(_), false) => {}
            (None, false) => {
                let reaches_in = entry
                    .hints
                    .as_ref()
                    .and_then(|h| span_end(entry.sealed_at, h.len()))
                    .is_some_and(|end| end > self.from);
                if reaches_in {
                    self.entries.push((entry, Role::LeadIn));
                }
            }
        }
        Ok(())
    }

    /// Distinct batch entries of the range (not those before it).
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|(_, role)| *role == Role::Verify).count()
    }

    /// Whether no batch entry is waiting to be verified.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the records of these batches are stored: per batch, the time of its first record
    /// and how many it has, in time order (a batch without hints tells nothing). Only for
    /// planning how to read them: nothing is believed from it.
    pub fn record_spans(&self) -> Vec<(UnixNanos, u64)> {
        let mut spans: Vec<(UnixNanos, u64)> = self
            .entries
            .iter()
            .filter_map(|(entry, _)| Some((entry.sealed_at, entry.hints.as_ref()?.len() as u64)))
            .collect();
        spans.sort_unstable();
        spans
    }

    /// Goes on to the record entries.
    pub fn records(self) -> Assembler {
        let mut ready = Vec::new();
        let mut pending = Vec::new();
        for (entry, role) in self.entries {
            match entry.hints.as_ref().and_then(|h| span_end(entry.sealed_at, h.len())) {
                Some(end) => pending.push(Batch { entry, role, end }),
                // Without its signed hints a batch entry cannot tell its records from planted
                // entries: it is rebuilt without any, and the verifier says what is wrong with it.
                None if role == Role::Verify => ready.push(Assembled {
                    timestamp: entry.timestamp,
                    line: rebuild_unchecked(entry.line.as_bytes(), &[]),
                    header: entry.header,
                }),
                None => {}
            }
        }
        // The next batch to open is the last.
        pending.sort_by_key(|b| Reverse(b.entry.sealed_at));
        Assembler {
            to: self.to,
            pending,
            open: Vec::new(),
            wanted: BTreeMap::new(),
            held: BTreeMap::new(),
            held_bytes: 0,
            now: UnixNanos::MIN,
            same_time: SameTime::default(),
            ready,
            foreign: self.foreign,
            records: 0,
        }
    }
}

#[derive(Debug)]
struct Batch {
    entry: BatchEntry,
    role: Role,
    /// `sealed_at + count`: its records are stored before this time.
    end: UnixNanos,
}

impl Batch {
    fn hints(&self) -> &[Hint] {
        self.entry.hints.as_deref().unwrap_or_default()
    }
}

#[derive(Debug)]
struct Candidate {
    line: String,
    leaf: Digest,
    /// The strongest role of the batches that took it.
    claim: Option<Role>,
}

/// Rebuilds batch lines from record entries fed in timestamp order; see the module docs.
#[derive(Debug)]
pub struct Assembler {
    to: UnixNanos,
    /// Batches whose first record time has not come yet, latest `sealed_at` first.
    pending: Vec<Batch>,
    /// Batches whose record times have begun and not all passed.
    open: Vec<Batch>,
    /// The signed hints of the open batches by record time.
    wanted: BTreeMap<UnixNanos, Hints>,
    /// Record entries at the times of open batches; never an empty list.
    held: BTreeMap<UnixNanos, Candidates>,
    held_bytes: usize,
    /// The latest record time fed.
    now: UnixNanos,
    same_time: SameTime,
    ready: Vec<Assembled>,
    foreign: ForeignEntries,
    records: u64,
}

/// What an assembler leaves when every record entry is in.
#[derive(Debug)]
pub struct Finished {
    /// The batch lines not handed out by [`Assembler::ready`] yet.
    pub batches: Vec<Assembled>,
    /// The entries no batch holds.
    pub foreign: ForeignEntries,
    /// Record entries put into a batch line of the range.
    pub records: u64,
}

impl Assembler {
    /// Adds a record entry Loki stored at `timestamp`. Entries must come in timestamp order;
    /// one that comes late for its batch is foreign.
    pub fn push(&mut self, timestamp: UnixNanos, line: String) {
        let leaf = leaf_hash(line.as_bytes());
        if !self.same_time.first(timestamp, leaf) {
            return;
        }
        self.advance(timestamp);
        let Some(hints) = self.wanted.get(&timestamp) else {
            return self.foreign_record(timestamp, ForeignReason::NoBatch);
        };
        let named = |leaf: &Digest| hints.contains(&hint(leaf));
        let held = self.held.get(&timestamp).map_or(&[][..], Candidates::as_slice);
        if held.iter().any(|c| c.leaf == leaf) {
            return; // the same line, come again out of order
        }
        // When the time is crowded, an entry a signed hint names takes the place of one no hint
        // names, so that planted entries cannot push the record out.
        let mut freed = 0;
        let replace = if held.len() < MAX_CANDIDATES {
            None
        } else {
            let unnamed = held.iter().position(|c| c.claim.is_none() && !named(&c.leaf));
            match unnamed.filter(|_| named(&leaf)) {
                Some(at) => {
                    freed = held[at].line.len();
                    Some(at)
                }
                None => return self.foreign_record(timestamp, ForeignReason::Crowded),
            }
        };
        if self.held_bytes - freed + line.len() > MAX_HELD_BYTES {
            return self.foreign_record(timestamp, ForeignReason::OverBudget);
        }
        let candidates = self.held.entry(timestamp).or_default();
        if let Some(at) = replace {
            candidates.remove(at);
        }
        candidates.push(Candidate { line, leaf, claim: None });
        self.held_bytes = self.held_bytes - freed + candidates.last().map_or(0, |c| c.line.len());
        if replace.is_some() {
            self.foreign_record(timestamp, ForeignReason::Crowded);
        }
    }

    /// The batch lines whose record times have all passed, to verify now.
    pub fn ready(&mut self) -> std::vec::Drain<'_, Assembled> {
        self.ready.drain(..)
    }

    /// Closes every batch: no more record entries come.
    pub fn finish(mut self) -> Finished {
        self.advance(UnixNanos::MAX);
        Finished { batches: self.ready, foreign: self.foreign, records: self.records }
    }

    fn foreign_record(&mut self, timestamp: UnixNanos, reason: ForeignReason) {
        // Past the range, it may belong to a batch sealed after it.
        if timestamp < self.to {
            self.foreign.push(Foreign { kind: Kind::Record, timestamp, reason });
        }
    }

    /// Moves to time `now`: opens the batches whose record times have begun, closes those whose
    /// record times have all passed, and lets go of the entries no open batch can take.
    fn advance(&mut self, now: UnixNanos) {
        // An entry that comes out of order does not move time back.
        let now = now.max(self.now);
        self.now = now;
        while self.pending.last().is_some_and(|b| b.entry.sealed_at <= now) {
            let Some(batch) = self.pending.pop() else { break };
            // Hints first: the time after the last record is at most `end`, which did not overflow.
            for (hint, at) in batch.hints().iter().zip(batch.entry.sealed_at..) {
                self.wanted.entry(at).or_default().push(*hint);
            }
            self.open.push(batch);
        }
        if self.open.iter().any(|b| b.end <= now) {
            let (closing, open): (Vec<Batch>, Vec<Batch>) =
                std::mem::take(&mut self.open).into_iter().partition(|b| b.end <= now);
            self.open = open;
            for batch in closing {
                self.close(batch);
            }
        }
        let floor = self.open.iter().map(|b| b.entry.sealed_at).min().unwrap_or(now);
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() >= floor {
                break;
            }
            let (at, candidates) = entry.remove_entry();
            for candidate in candidates {
                self.held_bytes -= candidate.line.len();
                if candidate.claim.is_none() {
                    self.foreign_record(at, ForeignReason::NotTheRecord);
                }
            }
        }
    }

    /// Takes a batch's records from the entries held at its record times and, for a batch of
    /// the range, rebuilds its line.
    fn close(&mut self, batch: Batch) {
        let start = batch.entry.sealed_at;
        let hints = batch.hints();
        // For each record time with entries: those the signed hint names or, when none is, the
        // first one (the record as altered, for the verifier to report and locate).
        let mut slots: Vec<(UnixNanos, Options)> = Vec::new();
        for ((at, candidates), signed) in self
            .held
            .range(start..batch.end)
            .filter_map(|(at, c)| Some(((at, c), hints.get(index(start, *at)?)?)))
        {
            let named: Options =
                (0..candidates.len()).filter(|i| hint(&candidates[*i].leaf) == *signed).collect();
            slots.push((*at, if named.is_empty() { smallvec![0] } else { named }));
        }
        let picks = self.choose(&batch, &slots);
        for ((at, _), pick) in slots.iter().zip(&picks) {
            if let Some(candidate) = self.held.get_mut(at).and_then(|c| c.get_mut(*pick)) {
                if batch.role == Role::Verify && candidate.claim != Some(Role::Verify) {
                    self.records += 1;
                }
                candidate.claim = candidate.claim.max(Some(batch.role));
            }
        }
        for (signed, at) in hints.iter().zip(start..) {
            if let Some(wanted) = self.wanted.get_mut(&at) {
                if let Some(i) = wanted.iter().position(|h| h == signed) {
                    wanted.swap_remove(i);
                }
                if wanted.is_empty() {
                    self.wanted.remove(&at);
                }
            }
        }
        if batch.role == Role::Verify {
            let records: Vec<&[u8]> = slots
                .iter()
                .zip(&picks)
                .filter_map(|((at, _), pick)| self.held.get(at)?.get(*pick).map(|c| c.line.as_bytes()))
                .collect();
            let line = rebuild_unchecked(batch.entry.line.as_bytes(), &records);
            self.ready.push(Assembled { timestamp: batch.entry.timestamp, header: batch.entry.header, line });
        }
    }

    /// One entry per slot: the first option of each, unless a slot has several (one hint naming
    /// several entries: a pair of records with one hint takes about 2^32 hashes to make, and
    /// someone who gets one logged can plant the other) and another combination hashes to the
    /// signed Merkle root.
    fn choose(&self, batch: &Batch, slots: &[(UnixNanos, Options)]) -> Vec<usize> {
        let first: Vec<usize> = slots.iter().map(|(_, options)| options[0]).collect();
        let combinations = slots.iter().try_fold(1u64, |n, (_, options)| n.checked_mul(options.len() as u64));
        if combinations == Some(1) || slots.len() != batch.hints().len() {
            return first;
        }
        for k in 0..combinations.unwrap_or(u64::MAX).min(MAX_COMBINATIONS) {
            let mut rest = k;
            let mut merkle = MerkleBuilder::new();
            let mut pick = Vec::with_capacity(slots.len());
            for (at, options) in slots {
                let n = options.len() as u64;
                let chosen = options[usize::try_from(rest % n).unwrap_or(0)];
                rest /= n;
                if let Some(candidate) = self.held.get(at).and_then(|c| c.get(chosen)) {
                    merkle.push_leaf_hash(candidate.leaf);
                }
                pick.push(chosen);
            }
            if hex::encode(merkle.root()) == batch.entry.header.root {
                return pick;
            }
        }
        first
    }
}

/// Record time `at`'s index in a batch sealed at `start`.
fn index(start: UnixNanos, at: UnixNanos) -> Option<usize> {
    at.checked_sub(start).and_then(|i| usize::try_from(i).ok())
}

/// Distinct texts kept per part of one record: the rest are foreign.
const PART_CANDIDATES: usize = 2;

/// Record part entries (docs/LOKI.md §1, "Long records") joined back into records. Parts are
/// grouped by their time and the leaf hash they name; a record comes out only when its parts,
/// joined in order, hash to that leaf. What comes out is a record entry like any other: the
/// batch's signed hint still decides whether it is the record.
#[derive(Debug)]
pub struct PartJoiner {
    /// Parts stored at or after this may belong to a batch after the range: never foreign.
    to: UnixNanos,
    /// By (time, leaf, part count): each part's distinct texts.
    groups: BTreeMap<(UnixNanos, Digest, usize), BTreeMap<usize, Vec<String>>>,
    held_bytes: usize,
    foreign: ForeignEntries,
}

/// Records joined from their parts, by the time they are stored at, and the parts that joined
/// into none.
#[derive(Debug, Default)]
pub struct JoinedRecords {
    /// Whole records (their Loki lines), by the time their parts are stored at.
    pub records: BTreeMap<UnixNanos, Vec<String>>,
    /// Parts that joined into no record.
    pub foreign: ForeignEntries,
}

impl PartJoiner {
    /// A joiner for a range that ends (exclusive) at `to`.
    pub fn new(to: UnixNanos) -> Self {
        Self { to, groups: BTreeMap::new(), held_bytes: 0, foreign: ForeignEntries::default() }
    }

    fn foreign_part(&mut self, timestamp: UnixNanos, reason: ForeignReason) {
        if timestamp < self.to {
            self.foreign.push(Foreign { kind: Kind::RecordPart, timestamp, reason });
        }
    }

    /// Takes one `record_part` entry stored at `timestamp`.
    pub fn push(&mut self, timestamp: UnixNanos, line: &str) {
        let Some((j, n, leaf, chunk)) = parse_record_part(line) else {
            return self.foreign_part(timestamp, ForeignReason::Unjoined);
        };
        if self.held_bytes + chunk.len() > MAX_HELD_BYTES {
            return self.foreign_part(timestamp, ForeignReason::OverBudget);
        }
        let texts = self.groups.entry((timestamp, leaf, n)).or_default().entry(j).or_default();
        if texts.iter().any(|t| t == chunk) {
            return;
        }
        if texts.len() == PART_CANDIDATES {
            return self.foreign_part(timestamp, ForeignReason::Unjoined);
        }
        texts.push(chunk.to_string());
        self.held_bytes += chunk.len();
    }

    /// The records whose parts are all here and join into the leaf they name.
    pub fn finish(mut self) -> JoinedRecords {
        let mut records: BTreeMap<UnixNanos, Vec<String>> = BTreeMap::new();
        for ((timestamp, leaf, n), parts) in std::mem::take(&mut self.groups) {
            let count: usize = parts.values().map(Vec::len).sum();
            let joined = if parts.len() == n { join(&parts, &leaf) } else { None };
            let used = match joined {
                Some(record) => {
                    records.entry(timestamp).or_default().push(record);
                    n
                }
                None => 0,
            };
            for _ in used..count {
                self.foreign_part(timestamp, ForeignReason::Unjoined);
            }
        }
        JoinedRecords { records, foreign: self.foreign }
    }
}

/// The record that `parts` (every index present) join into with leaf hash `leaf`, trying at
/// most [`MAX_COMBINATIONS`] choices where a part has more than one text.
fn join(parts: &BTreeMap<usize, Vec<String>>, leaf: &Digest) -> Option<String> {
    let choices: Vec<&Vec<String>> = parts.values().collect();
    let doubled: Vec<usize> = (0..choices.len()).filter(|i| choices[*i].len() > 1).collect();
    let tries =
        1u64.checked_shl(u32::try_from(doubled.len()).ok()?).unwrap_or(u64::MAX).min(MAX_COMBINATIONS);
    for pick in 0..tries {
        let mut record = String::new();
        for (i, texts) in choices.iter().enumerate() {
            let bit = doubled.iter().position(|d| *d == i).map_or(0, |b| usize::from(pick >> b & 1 == 1));
            record.push_str(texts.get(bit).map_or("", String::as_str));
        }
        if leaf_hash(record.as_bytes()) == *leaf {
            return Some(record);
        }
    }
    None
}
