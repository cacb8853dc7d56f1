//! The gateway's `Gate` and the offline `Verifier` judge the chain by the same rules: fed the same
//! generated stream — with drops, duplicates, forks, restarts, key changes, clocks going back,
//! forged and tampered lines — in the same order, they report the same findings. When lines
//! arrive out of order the gate, which judges each line as it comes, may report more (a gap a late
//! batch fills), never less. docs/FORMAT.md §15 lists the differences. The stream has up to three
//! instances (signers), judged under instance rules of every kind: one allowed, a number, pins.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use teelog_core::batch::ParsedBatch;
use teelog_core::gate::{Checked, Continuity, Gate};
use teelog_core::merkle::Digest;
use teelog_core::verify::InstanceRules;
use teelog_core::{
    BatchBuilder, ChainHead, FindingKind, HeaderSigner, Origin, SigAlg, SoftwareKey, SoftwareSigner,
    Verifier, VerifyOptions,
};

const SECOND: i64 = 1_000_000_000;
const START: i64 = 1_796_292_000 * SECOND;

#[derive(Debug, Clone, Copy)]
enum Link {
    /// The epoch continues from the last batch of its instance's previous epoch (an honest
    /// restart).
    Previous,
    /// It starts an instance (again, if its instance has epochs already).
    Unlinked,
    /// It continues from the first batch of its instance's previous epoch, cutting off the rest.
    EarlierBatch,
    /// It continues from the last batch of the previous epoch of another instance.
    OtherInstance,
}

#[derive(Debug, Clone)]
struct EpochPlan {
    batches: u64,
    link: Link,
    /// Which of three instances (signers) it belongs to.
    instance: usize,
    /// Which of three signing keys signs it: mostly its instance's own, else any (reusing one
    /// across epochs or instances breaks the key rules).
    key: usize,
    /// The batch (index) sealed ten seconds before the one before it, if any.
    backwards: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Drop(usize),
    Duplicate(usize),
    Tamper(usize),
    /// A second batch for the seq of the line, signed by its epoch's key.
    Fork(usize),
    /// A line claiming the seq of the line plus an offset, signed by a stranger.
    Forge(usize, u64),
    /// The line swaps places with the next one.
    Swap(usize),
}

/// One batch built, with what a fault needs to make another like it.
struct Built {
    line: Vec<u8>,
    hash: Digest,
    epoch: String,
    seq: u64,
    prev: Option<String>,
    key: usize,
    sealed_at: i64,
}

fn signer() -> SoftwareSigner {
    let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).expect("key");
    SoftwareSigner::new(SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).expect("key"), None)
}

fn seal(head: &mut ChainHead, signer: &dyn HeaderSigner, text: &str, sealed_at: i64) -> (Vec<u8>, Digest) {
    let mut builder = BatchBuilder::new();
    let record = format!(r#"{{"ts":"2026-12-03T10:00:00Z","message":"{text}"}}"#);
    builder.push_input(record.as_bytes(), &|| 0).expect("record");
    let mut line = Vec::new();
    let sealed = builder.seal(head, signer, sealed_at, &mut line).expect("seal");
    line.pop();
    (line, sealed.header_hash)
}

/// The lines of the honest history the plans describe.
fn build(plans: &[EpochPlan], keys: &[SoftwareSigner]) -> Vec<Built> {
    let mut built: Vec<Built> = Vec::new();
    let mut clock = START;
    // Per instance, the header hashes of its latest epoch.
    let mut latest: [Vec<Digest>; 3] = Default::default();
    for (e, plan) in plans.iter().enumerate() {
        let other = &latest[(plan.instance + 1) % 3];
        let previous = &latest[plan.instance];
        let prev = match plan.link {
            Link::Previous => previous.last(),
            Link::EarlierBatch => previous.first(),
            Link::OtherInstance => other.last(),
            Link::Unlinked => None,
        };
        let mut head =
            ChainHead::new_epoch("app", prev.map(hex::encode), &teelog_core::random::SystemRandom).unwrap();
        let previous = &mut latest[plan.instance];
        previous.clear();
        for b in 0..plan.batches {
            clock += if plan.backwards == Some(b) { -10 * SECOND } else { SECOND };
            let (seq, prev) = (head.next_seq, head.prev.clone());
            let (line, hash) = seal(&mut head, &keys[plan.key], &format!("e{e} b{b}"), clock);
            previous.push(hash);
            built.push(Built {
                line,
                hash,
                epoch: head.epoch.clone(),
                seq,
                prev,
                key: plan.key,
                sealed_at: clock,
            });
        }
        // Later epochs start later than anything before, whatever the clock did.
        clock += 20 * SECOND;
    }
    built
}

/// The lines in arrival order after the faults, and whether they arrive in order: the honest
/// batches in the order they were sealed, no seq after a higher one of its epoch (first copies;
/// forged lines aside), and no batch before the one it links to.
fn arrive(
    built: &[Built],
    faults: &[Fault],
    keys: &[SoftwareSigner],
    stranger: &SoftwareSigner,
) -> (Vec<Vec<u8>>, bool) {
    let mut lines: Vec<Vec<u8>> = built.iter().map(|b| b.line.clone()).collect();
    for (n, fault) in faults.iter().enumerate() {
        // The first line (the genesis batch) always arrives first: a gateway's knowledge of a
        // stream starts with the first batch it receives (a documented difference).
        let pick = |i: usize, len: usize| if len > 1 { 1 + i % (len - 1) } else { 0 };
        match *fault {
            Fault::Drop(i) if lines.len() > 1 => {
                lines.remove(pick(i, lines.len()));
            }
            Fault::Duplicate(i) => lines.push(lines[i % lines.len()].clone()),
            Fault::Tamper(i) if lines.len() > 1 => {
                let i = pick(i, lines.len());
                let text = String::from_utf8(lines[i].clone()).unwrap();
                lines[i] = text.replacen(" b", " X", 1).into_bytes();
            }
            Fault::Fork(i) | Fault::Forge(i, _) => {
                let b = &built[i % built.len()];
                let mut head = ChainHead {
                    stream: "app".into(),
                    epoch: b.epoch.clone(),
                    next_seq: b.seq,
                    prev: b.prev.clone(),
                    prev_sealed_at: None,
                };
                let (signer, text) = match *fault {
                    Fault::Forge(_, offset) => {
                        head.next_seq += offset;
                        (stranger, format!("forged {n}"))
                    }
                    _ => (&keys[b.key], format!("fork {n}")),
                };
                lines.push(seal(&mut head, signer, &text, b.sealed_at + 1).0);
            }
            Fault::Swap(i) if lines.len() > 2 => {
                let i = pick(i, lines.len() - 1);
                lines.swap(i, i + 1);
            }
            _ => {}
        }
    }
    // Honest batches by their header (a tampered one keeps its header).
    let mut sealed_order = lines.iter().filter_map(|line| {
        let hash = ParsedBatch::parse(line).ok()?.header_hash;
        built.iter().position(|b| b.hash == hash)
    });
    let mut seen = BTreeSet::new();
    let mut last = None;
    let in_order = sealed_order.all(|i| {
        let first = seen.insert(i);
        let later = last.is_none_or(|l| i > l);
        if first {
            last = Some(i);
        }
        !first || later
    });
    // Nor may a fork take a seq after a higher one of its epoch has arrived: that fills a gap late.
    let stranger_key = stranger.public_key().id_hex();
    let mut highest: std::collections::BTreeMap<String, u64> = Default::default();
    let mut taken = BTreeSet::new();
    let forks_in_order = lines.iter().filter_map(|line| ParsedBatch::parse(line).ok()).all(|batch| {
        let h = batch.header;
        if h.key_id == stranger_key || !taken.insert((h.epoch.clone(), h.seq)) {
            return true;
        }
        let top = highest.entry(h.epoch).or_default();
        let fine = h.seq > *top;
        *top = (*top).max(h.seq);
        fine
    });
    // And no batch before the one it links to, where that one arrives at all.
    let headers: Vec<_> = lines.iter().filter_map(|line| ParsedBatch::parse(line).ok()).collect();
    let first_at = |hash: &str| headers.iter().position(|b| hex::encode(b.header_hash) == hash);
    let links_in_order = headers
        .iter()
        .enumerate()
        .all(|(i, batch)| batch.header.prev.as_deref().and_then(first_at).is_none_or(|target| target < i));
    (lines, in_order && forks_in_order && links_in_order)
}

type Place = (&'static str, String, u64);

fn place(f: &teelog_core::Finding) -> Place {
    (f.kind.name(), f.epoch.clone().unwrap_or_default(), f.seq.unwrap_or_default())
}

/// Which instances the judges allow.
#[derive(Debug, Clone, Copy)]
enum Rules {
    /// At most this many (0: the default, one).
    AtMost(u64),
    /// At most this many for the stream alone, one for others.
    StreamLimit(u64),
    /// The instances whose bit is set, counting the epochs that start one in the order they were
    /// sealed.
    Pinned(u8),
}

impl Rules {
    fn of(self, built: &[Built]) -> InstanceRules {
        match self {
            Rules::AtMost(0) => InstanceRules::default(),
            Rules::AtMost(n) => InstanceRules { max_instances: Some(n), ..InstanceRules::default() },
            Rules::StreamLimit(n) => InstanceRules {
                limits: BTreeMap::from([("app".to_string(), n)]),
                max_instances: Some(1),
                ..InstanceRules::default()
            },
            Rules::Pinned(mask) => {
                let geneses = built.iter().filter(|b| b.seq == 1 && b.prev.is_none());
                let pins = geneses.enumerate().filter(|(i, _)| mask & (1 << (i % 8)) != 0);
                let pins = pins.map(|(_, b)| b.epoch.clone()).collect();
                InstanceRules {
                    pinned: BTreeMap::from([("app".to_string(), pins)]),
                    ..InstanceRules::default()
                }
            }
        }
    }
}

/// What each side finds in `lines`, as (kind, epoch, seq). A pinned instance none of whose first
/// epoch's batches arrived is the verifier's finding at the end of the input (`missing_stream`),
/// which a gateway, never at an end, does not make.
fn judge(
    lines: &[Vec<u8>],
    keys: &[SoftwareSigner],
    now: i64,
    instances: &InstanceRules,
) -> (BTreeSet<Place>, BTreeSet<Place>) {
    let options = || VerifyOptions {
        trusted_keys: keys.iter().map(|k| k.public_key().clone()).collect(),
        now: Some(now),
        allow_empty: true,
        instances: instances.clone(),
        ..VerifyOptions::default()
    };
    let mut gate = Gate::new(options(), Continuity::default());
    let mut verifier = Verifier::new(options());
    let mut by_gate = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let origin = Origin { source: "in", line: i as u64 + 1 };
        verifier.push_line(origin, line);
        let findings = match gate.check_line(origin, line, now) {
            Checked::Batch(verdict) => verdict.findings,
            Checked::Malformed(finding) => vec![finding],
            Checked::Document { .. } => Vec::new(),
        };
        by_gate.extend(findings.iter().map(place));
    }
    let report = verifier.finish();
    let by_verifier =
        report.findings.iter().filter(|f| f.kind != FindingKind::MissingStream).map(place).collect();
    (by_gate, by_verifier)
}

fn epoch_plan() -> impl Strategy<Value = EpochPlan> {
    let link = prop_oneof![
        6 => Just(Link::Previous),
        2 => Just(Link::Unlinked),
        1 => Just(Link::EarlierBatch),
        1 => Just(Link::OtherInstance),
    ];
    let instance = prop_oneof![3 => Just(0usize), 1 => Just(1), 1 => Just(2)];
    let key = proptest::option::weighted(0.25, 0..3usize);
    (1..6u64, link, instance, key, proptest::option::weighted(0.15, 1..5u64)).prop_map(
        |(batches, link, instance, key, backwards)| EpochPlan {
            batches,
            link,
            instance,
            key: key.unwrap_or(instance),
            backwards,
        },
    )
}

fn rules() -> impl Strategy<Value = Rules> {
    prop_oneof![
        2 => (0..4u64).prop_map(Rules::AtMost),
        1 => (1..4u64).prop_map(Rules::StreamLimit),
        1 => any::<u8>().prop_map(Rules::Pinned),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        3 => any::<usize>().prop_map(Fault::Drop),
        2 => any::<usize>().prop_map(Fault::Duplicate),
        1 => any::<usize>().prop_map(Fault::Tamper),
        2 => any::<usize>().prop_map(Fault::Fork),
        2 => (any::<usize>(), 0..3u64).prop_map(|(i, o)| Fault::Forge(i, o)),
        2 => any::<usize>().prop_map(Fault::Swap),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn the_gate_finds_what_the_verifier_finds(
        plans in proptest::collection::vec(epoch_plan(), 1..7),
        faults in proptest::collection::vec(fault(), 0..6),
        late in 0..120i64,
        rules in rules(),
    ) {
        let keys = [signer(), signer(), signer()];
        let stranger = signer();
        let built = build(&plans, &keys);
        let (lines, in_order) = arrive(&built, &faults, &keys, &stranger);
        // Sometimes the clock of the batches runs ahead of the judges' (a time_anomaly).
        let now = built.iter().map(|b| b.sealed_at).max().unwrap_or(START) + (late - 60) * 6 * SECOND;
        let (by_gate, by_verifier) = judge(&lines, &keys, now, &rules.of(&built));
        if !in_order {
            // Out of order, the gate judges before everything is in: a gap it reports may be
            // filled later (and then starts elsewhere), so gaps match by epoch; nothing the
            // verifier finds is missed.
            let epochs_with_gaps: BTreeSet<&String> =
                by_gate.iter().filter(|(k, _, _)| *k == "sequence_gap").map(|(_, e, _)| e).collect();
            for found in &by_verifier {
                let seen = match found.0 {
                    "sequence_gap" => epochs_with_gaps.contains(&found.1),
                    _ => by_gate.contains(found),
                };
                prop_assert!(seen, "the gate missed {found:?}\ngate: {by_gate:#?}\nverifier: {by_verifier:#?}");
            }
        } else {
            prop_assert_eq!(&by_gate, &by_verifier);
        }
    }
}

/// The verifier's report on `lines` in the order given: its findings as sorted places (copies
/// of a place kept: one finding per header is one per header in any order) and its counts.
fn verify_in_order(
    lines: &[&Vec<u8>],
    keys: &[SoftwareSigner],
    now: i64,
    instances: &InstanceRules,
) -> (Vec<Place>, [u64; 3]) {
    let mut verifier = Verifier::new(VerifyOptions {
        trusted_keys: keys.iter().map(|k| k.public_key().clone()).collect(),
        now: Some(now),
        allow_empty: true,
        instances: instances.clone(),
        ..VerifyOptions::default()
    });
    for (i, line) in lines.iter().enumerate() {
        verifier.push_line(Origin { source: "in", line: i as u64 + 1 }, line);
    }
    let report = verifier.finish();
    let mut places: Vec<Place> = report.findings.iter().map(place).collect();
    places.sort();
    (places, [report.batches, report.records, report.duplicates])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The verifier keeps an epoch as runs of seqs that met (crates/core/src/runs.rs): whatever
    /// order the lines come in — forks and copies long after their seq, links before what they
    /// link to — it finds what it finds in them in order, and counts the same.
    #[test]
    fn the_verifier_finds_the_same_in_any_order(
        plans in proptest::collection::vec(epoch_plan(), 1..7),
        faults in proptest::collection::vec(fault(), 0..6),
        order in proptest::collection::vec(any::<u32>(), 40),
        rules in rules(),
    ) {
        let keys = [signer(), signer(), signer()];
        let stranger = signer();
        let built = build(&plans, &keys);
        let (lines, _) = arrive(&built, &faults, &keys, &stranger);
        let now = built.iter().map(|b| b.sealed_at).max().unwrap_or(START);
        let rules = rules.of(&built);
        let in_order: Vec<&Vec<u8>> = lines.iter().collect();
        let mut shuffled: Vec<(u32, &Vec<u8>)> =
            lines.iter().enumerate().map(|(i, l)| (order[i % order.len()], l)).collect();
        shuffled.sort_by_key(|(k, _)| *k);
        let shuffled: Vec<&Vec<u8>> = shuffled.into_iter().map(|(_, l)| l).collect();
        let reversed: Vec<&Vec<u8>> = lines.iter().rev().collect();
        let expected = verify_in_order(&in_order, &keys, now, &rules);
        prop_assert_eq!(&verify_in_order(&shuffled, &keys, now, &rules), &expected, "shuffled");
        prop_assert_eq!(&verify_in_order(&reversed, &keys, now, &rules), &expected, "reversed");
    }
}
