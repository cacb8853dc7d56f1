//! Rebuilding batch lines from Loki entries that an attacker with push access added to:
//! records are found by time and signed hint alone, the genuine lines come back byte for byte,
//! and every planted entry is counted as foreign.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use teelog_core::timestamp::UnixNanos;
use teelog_core::{BatchBuilder, ChainHead, SigAlg, SoftwareKey, SoftwareSigner};
use teelog_loki::assemble::{FOREIGN_LISTED, MAX_CANDIDATES, MAX_HELD_BYTES};
use teelog_loki::{split_batch_line, Assembled, BatchEntries, Finished, ForeignReason, Kind, LayoutError};

const SEALED_AT: i64 = 1_796_202_000_000_000_000;
const MS: i64 = 1_000_000;

/// A signed batch as the shipper stores it: the batch entry at `sealed_at`, record `i` at
/// `sealed_at + i`.
struct Stored {
    line: Vec<u8>,
    sealed_at: UnixNanos,
    entry: String,
    records: Vec<String>,
}

/// Batches of stream `app` with the given records, sealed 1 ms apart from `SEALED_AT`.
fn batches(contents: &[&[&str]]) -> Vec<Stored> {
    batches_of("app", contents)
}

fn batches_of(stream: &str, contents: &[&[&str]]) -> Vec<Stored> {
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    let signer = SoftwareSigner::new(key, None);
    let mut builder = BatchBuilder::new();
    let mut head = ChainHead::new_epoch(stream, None, &teelog_core::random::SystemRandom).unwrap();
    contents
        .iter()
        .enumerate()
        .map(|(b, records)| {
            for record in *records {
                builder.push_input(record.as_bytes(), &|| 0).unwrap();
            }
            let mut line = Vec::new();
            builder.seal(&mut head, &signer, SEALED_AT + b as i64 * MS, &mut line).unwrap();
            line.pop();
            let split = split_batch_line(&line).unwrap();
            Stored {
                sealed_at: split.sealed_at,
                entry: split.batch_entry.clone(),
                records: split.records.iter().map(|r| r.to_string()).collect(),
                line: line.clone(),
            }
        })
        .collect()
}

fn at(batch: &Stored, index: usize) -> UnixNanos {
    batch.sealed_at + index as i64
}

/// Feeds the batch entries, then the record entries, each sorted by time as the pager hands
/// them out (stably: entries of one time keep the order given).
fn assemble(
    from: UnixNanos,
    to: UnixNanos,
    batch_entries: &[(UnixNanos, String)],
    mut records: Entries,
) -> (Vec<Assembled>, Finished) {
    let mut batch_entries = batch_entries.to_vec();
    batch_entries.sort_by_key(|(timestamp, _)| *timestamp);
    let mut entries = BatchEntries::new("app", from, to);
    for (timestamp, line) in batch_entries {
        entries.push(timestamp, line).unwrap();
    }
    let mut assembler = entries.records();
    records.sort_by_key(|(timestamp, _)| *timestamp);
    let mut lines = Vec::new();
    for (timestamp, line) in records {
        assembler.push(timestamp, line);
        lines.extend(assembler.ready());
    }
    let mut finished = assembler.finish();
    lines.append(&mut finished.batches);
    lines.sort_by_key(|a| (a.header.seq, a.timestamp));
    (lines, finished)
}

/// Entries as Loki holds them: where, and the line.
type Entries = Vec<(UnixNanos, String)>;

/// The batch entries and the record entries of `batches`.
fn genuine(batches: &[Stored]) -> (Entries, Entries) {
    let entries = batches.iter().map(|b| (b.sealed_at, b.entry.clone())).collect();
    let records = batches
        .iter()
        .flat_map(|b| b.records.iter().enumerate().map(|(i, r)| (at(b, i), r.clone())))
        .collect();
    (entries, records)
}

fn reasons(finished: &Finished) -> Vec<(Kind, UnixNanos, ForeignReason)> {
    finished.foreign.listed.iter().map(|f| (f.kind, f.timestamp, f.reason)).collect()
}

const RANGE: (UnixNanos, UnixNanos) = (SEALED_AT, SEALED_AT + 1_000 * MS);

#[test]
fn genuine_lines_come_back_byte_for_byte_past_planted_entries() {
    let stored = batches(&[&[r#"{"m":"a"}"#, r#"{"m":"a"}"#, r#"{"m":"b"}"#], &[], &[r#"{"m":"c"}"#]]);
    let (entries, mut records) = genuine(&stored);
    let mut planted = vec![
        // A twin at a record's time, stored before the record.
        (at(&stored[0], 1), r#"{"m":"planted twin"}"#.to_string()),
        // A record's bytes at another record's time of its batch.
        (at(&stored[0], 2), r#"{"m":"a"}"#.to_string()),
        // An entry at a time no batch has a record at: before, between and after the batches.
        (SEALED_AT - 1 + MS, r#"{"m":"between"}"#.to_string()),
        (at(&stored[2], 1), r#"{"m":"just past"}"#.to_string()),
    ];
    // The same entry from two label sets counts once.
    planted.push(planted[0].clone());
    planted.append(&mut records);
    let (lines, finished) = assemble(RANGE.0, RANGE.1, &entries, planted);
    let got: Vec<&[u8]> = lines.iter().map(|a| a.line.as_slice()).collect();
    let want: Vec<&[u8]> = stored.iter().map(|b| b.line.as_slice()).collect();
    assert_eq!(got, want);
    assert_eq!(
        lines.iter().map(|a| a.timestamp).collect::<Vec<_>>(),
        [SEALED_AT, SEALED_AT + MS, SEALED_AT + 2 * MS]
    );
    assert_eq!(finished.records, 4);
    assert_eq!(
        reasons(&finished),
        [
            (Kind::Record, at(&stored[0], 1), ForeignReason::NotTheRecord),
            (Kind::Record, at(&stored[0], 2), ForeignReason::NotTheRecord),
            (Kind::Record, SEALED_AT - 1 + MS, ForeignReason::NoBatch),
            (Kind::Record, at(&stored[2], 1), ForeignReason::NoBatch),
        ]
    );
    assert_eq!(finished.foreign.total, 4);

    // Entries at or after the end of the range may belong to a batch after it: not reported.
    let past = (at(&stored[2], 1), "x".to_string());
    let (_, finished) =
        assemble(RANGE.0, past.0, &entries, genuine(&stored).1.into_iter().chain([past]).collect());
    assert_eq!(finished.foreign.total, 0);
}

#[test]
fn a_crowd_at_a_record_time_cannot_push_the_record_out() {
    let stored = batches(&[&[r#"{"m":"a"}"#, r#"{"m":"b"}"#]]);
    let (entries, records) = genuine(&stored);
    let crowd = 10;
    let planted: Entries =
        (0..crowd).map(|i| (at(&stored[0], 1), format!(r#"{{"m":"planted {i}"}}"#))).collect();
    let (lines, finished) =
        assemble(RANGE.0, RANGE.1, &entries, planted.into_iter().chain(records).collect());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].line, stored[0].line);
    // MAX_CANDIDATES are held and the rest dropped as they come, until the record comes and
    // takes the place of one held; at the end the others held are not the record.
    let mut want = vec![ForeignReason::Crowded; crowd - MAX_CANDIDATES + 1];
    want.extend([ForeignReason::NotTheRecord; MAX_CANDIDATES - 1]);
    let got: Vec<ForeignReason> = reasons(&finished).into_iter().map(|(_, _, r)| r).collect();
    assert_eq!(got, want);
    assert!(reasons(&finished).iter().all(|(k, t, _)| (*k, *t) == (Kind::Record, at(&stored[0], 1))));

    // However many come, the first FOREIGN_LISTED are listed and the rest counted.
    let (entries, records) = genuine(&stored);
    let planted = (0..1000).map(|i| (at(&stored[0], 1), format!(r#"{{"m":"planted {i}"}}"#)));
    let (lines, finished) = assemble(RANGE.0, RANGE.1, &entries, planted.chain(records).collect());
    assert_eq!(lines[0].line, stored[0].line);
    assert_eq!((finished.foreign.listed.len(), finished.foreign.total), (FOREIGN_LISTED, 1000));
}

/// Two records whose leaf hashes share their first 8 bytes, so one signed hint names both
/// (docs/vectors/hint-collision.json).
fn colliding() -> [String; 2] {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/hint-collision.json");
    let vector: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let record = |i: usize| vector["records"][i].as_str().unwrap().to_string();
    [record(0), record(1)]
}

#[test]
fn a_hint_collision_is_settled_by_the_signed_root() {
    use teelog_core::merkle::leaf_hash;
    let colliding = colliding();
    let (a, b) = (leaf_hash(colliding[0].as_bytes()), leaf_hash(colliding[1].as_bytes()));
    assert_eq!(a[..8], b[..8]);
    assert_ne!(a, b);
    for (record, planted) in [(0, 1), (1, 0)] {
        let stored = batches(&[&[r#"{"m":"a"}"#, &colliding[record], r#"{"m":"b"}"#]]);
        assert_eq!(stored[0].records[1], colliding[record]);
        let (entries, records) = genuine(&stored);
        // The twin is stored first, so the first entry the hint names is the wrong one.
        let twin = (at(&stored[0], 1), colliding[planted].clone());
        let planted = [twin.clone()].into_iter().chain(records).collect();
        let (lines, finished) = assemble(RANGE.0, RANGE.1, &entries, planted);
        assert_eq!(lines[0].line, stored[0].line);
        assert_eq!(reasons(&finished), [(Kind::Record, twin.0, ForeignReason::NotTheRecord)]);
    }
}

#[test]
fn held_bytes_are_bounded_and_the_record_still_fits() {
    let stored = batches(&[&[r#"{"m":"a"}"#, r#"{"m":"b"}"#, r#"{"m":"c"}"#, r#"{"m":"d"}"#]]);
    let (entries, records) = genuine(&stored);
    // A quarter of the budget at each record time, stored before each record: the fourth does
    // not fit, the records do.
    let big = "x".repeat(MAX_HELD_BYTES / 4);
    let planted: Entries = (0..4).map(|i| (at(&stored[0], i), big.clone())).collect();
    let (lines, finished) =
        assemble(RANGE.0, RANGE.1, &entries, planted.into_iter().chain(records).collect());
    assert_eq!(lines[0].line, stored[0].line);
    let listed = reasons(&finished);
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0], (Kind::Record, at(&stored[0], 3), ForeignReason::OverBudget));
    assert!(listed[1..].iter().all(|(_, _, r)| *r == ForeignReason::NotTheRecord));
}

#[test]
fn batch_entries_are_judged_by_their_line_alone() {
    let stored = batches(&[&[r#"{"m":"a"}"#, r#"{"m":"b"}"#], &[r#"{"m":"c"}"#], &[r#"{"m":"d"}"#]]);
    let (mut entries, records) = genuine(&stored);
    let mut batch_entries = BatchEntries::new("app", stored[1].sealed_at, RANGE.1);
    // Not a batch entry: an error to report inside the range, nothing before it.
    assert!(matches!(
        batch_entries.push(stored[1].sealed_at, "{}".into()),
        Err(LayoutError::NotABatchEntry(_))
    ));
    batch_entries.push(stored[0].sealed_at, "{}".into()).unwrap();
    assert!(batch_entries.is_empty());

    // Batch 0, before the range, claims its record inside it without being rebuilt. A copy of
    // batch 2 stored elsewhere, and a batch entry of another stream, are foreign and not
    // rebuilt; the same entry from two label sets is one.
    let from = at(&stored[0], 1);
    let others = batches_of("db", &[&[], &[r#"{"m":"e"}"#]]);
    let other = &others[1];
    entries.push((stored[2].sealed_at + 7, stored[2].entry.clone()));
    entries.push((other.sealed_at, other.entry.clone()));
    entries.push(entries[1].clone());
    let records_in_range: Vec<_> = records.into_iter().filter(|(t, _)| *t >= from).collect();
    let (lines, finished) = assemble(from, RANGE.1, &entries, records_in_range.clone());
    let seqs: Vec<(u64, UnixNanos)> = lines.iter().map(|a| (a.header.seq, a.timestamp)).collect();
    assert_eq!(seqs, [(2, stored[1].sealed_at), (3, stored[2].sealed_at)]);
    assert!(lines.iter().all(|a| a.line == stored[a.header.seq as usize - 1].line));
    assert_eq!(
        reasons(&finished),
        [
            (Kind::Batch, other.sealed_at, ForeignReason::OtherStream),
            (
                Kind::Batch,
                stored[2].sealed_at + 7,
                ForeignReason::Misplaced { sealed_at: stored[2].sealed_at }
            ),
        ]
    );
    assert_eq!(finished.records, 2);

    // A batch entry before the range stored elsewhere than its sealed_at claims nothing.
    entries[0].0 -= 1;
    let (_, finished) = assemble(from, RANGE.1, &entries, records_in_range);
    assert_eq!(reasons(&finished)[2], (Kind::Record, from, ForeignReason::NoBatch));
}

#[test]
fn without_its_signed_hints_a_batch_takes_no_records() {
    let stored = batches(&[&[r#"{"m":"a"}"#, r#"{"m":"b"}"#]]);
    let (mut entries, records) = genuine(&stored);
    let hints_at = entries[0].1.find("\"hints\":\"").unwrap() + 9;
    let altered = if &entries[0].1[hints_at..hints_at + 1] == "0" { "1" } else { "0" };
    entries[0].1.replace_range(hints_at..hints_at + 1, altered);
    let (lines, finished) = assemble(RANGE.0, RANGE.1, &entries, records);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].line.ends_with(b",\"records\":[]}"));
    assert_eq!(finished.foreign.total, 2);
    assert!(reasons(&finished).iter().all(|(_, _, r)| *r == ForeignReason::NoBatch));
}

#[test]
fn a_line_is_ready_once_its_record_times_have_passed() {
    let stored = batches(&[&[r#"{"m":"a"}"#, r#"{"m":"b"}"#], &[r#"{"m":"c"}"#]]);
    let (entries, records) = genuine(&stored);
    let mut batch_entries = BatchEntries::new("app", RANGE.0, RANGE.1);
    for (timestamp, line) in entries {
        batch_entries.push(timestamp, line).unwrap();
    }
    let mut assembler = batch_entries.records();
    assembler.push(records[0].0, records[0].1.clone());
    assembler.push(records[1].0, records[1].1.clone());
    assert_eq!(assembler.ready().count(), 0);
    assembler.push(records[2].0, records[2].1.clone());
    let ready: Vec<Assembled> = assembler.ready().collect();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].line, stored[0].line);
    let finished = assembler.finish();
    assert_eq!(finished.batches.len(), 1);
    assert_eq!(finished.batches[0].line, stored[1].line);
}

mod planted {
    use std::collections::BTreeSet;
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    fn stored() -> &'static [Stored] {
        static STORED: OnceLock<Vec<Stored>> = OnceLock::new();
        STORED.get_or_init(|| {
            batches(&[&[r#"{"m":"a"}"#, r#"{"m":"b"}"#, r#"{"m":"a"}"#], &[], &[r#"{"m":"c"}"#]])
        })
    }

    const LINES: [&str; 6] = [r#"{"m":"a"}"#, r#"{"m":"b"}"#, r#"{"m":"c"}"#, r#"{"m":"z"}"#, "x", ""];

    proptest! {
        /// Whatever is planted around the batches, in timestamp order the genuine lines come
        /// back byte for byte and every planted entry is counted once as foreign; in any order
        /// nothing panics.
        #[test]
        fn genuine_lines_survive_any_planting(
            planted in proptest::collection::vec((0i64..8, 0usize..LINES.len()), 0..60),
            spread in 0i64..3,
            sorted in any::<bool>(),
        ) {
            let stored = stored();
            let (entries, genuine_records) = genuine(stored);
            // Around each batch's record times, and spread over the others.
            let planted: Entries = planted
                .iter()
                .map(|(offset, line)| (stored[(*offset as usize) % 3].sealed_at + offset % 4 + spread, LINES[*line].to_string()))
                .collect();
            let mut records: Entries = planted.iter().cloned().chain(genuine_records.iter().cloned()).collect();
            if !sorted {
                records.reverse();
                let mut batch_entries = BatchEntries::new("app", RANGE.0, RANGE.1);
                for (timestamp, line) in &entries {
                    batch_entries.push(*timestamp, line.clone()).unwrap();
                }
                let mut assembler = batch_entries.records();
                for (timestamp, line) in records {
                    assembler.push(timestamp, line);
                }
                assembler.finish();
                return Ok(());
            }
            let (lines, finished) = assemble(RANGE.0, RANGE.1, &entries, records);
            let got: Vec<&[u8]> = lines.iter().map(|a| a.line.as_slice()).collect();
            let want: Vec<&[u8]> = stored.iter().map(|b| b.line.as_slice()).collect();
            prop_assert_eq!(got, want);
            let genuine: BTreeSet<&(UnixNanos, String)> = genuine_records.iter().collect();
            let foreign: BTreeSet<&(UnixNanos, String)> = planted.iter().filter(|e| !genuine.contains(e)).collect();
            prop_assert_eq!(finished.foreign.total, foreign.len() as u64);
            prop_assert_eq!(finished.records, genuine_records.len() as u64);
        }
    }
}
