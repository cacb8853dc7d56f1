//! Every single mutation of a signed log is detected, with the right kind of finding.
//!
//! The log: stream "app", epoch A (4 batches, key A) then, after a "restart", epoch B (3 batches,
//! key B) whose first batch links to A's last. Each property applies one mutation and checks the
//! verifier's findings: the expected kind is there, at the expected seq, and nothing unrelated is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::collections::BTreeSet;
use teelog_core::batch::HEADER_FIELDS;

use base64::Engine;
use proptest::prelude::*;
use serde_json::value::RawValue;
use teelog_core::canon::canonicalize;
use teelog_core::{
    BatchBuilder, ChainHead, FindingKind, Origin, Report, SigAlg, SoftwareKey, SoftwareSigner, Verifier,
    VerifyOptions,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const MEASUREMENT: &str = "abcd";
const RECORDS_PER_BATCH: usize = 5;

struct Log {
    lines: Vec<String>,
    keys: Vec<teelog_core::PublicKey>,
    /// (epoch index, seq) of each line.
    ids: Vec<(usize, u64)>,
    signers: Vec<SoftwareSigner>,
    heads: Vec<ChainHead>,
}

fn signer() -> SoftwareSigner {
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    SoftwareSigner::new(key, Some(MEASUREMENT.into()))
}

fn record_text(epoch: usize, seq: u64, i: usize) -> String {
    format!(
        r#"{{"ts":"2026-12-02T09:00:{:02}Z","level":"info","message":"epoch {epoch} batch {seq} record {i}","attributes":{{"amount":{},"user":"u{i}"}}}}"#,
        seq,
        100 * seq as usize + i
    )
}

fn seal(
    builder: &mut BatchBuilder,
    head: &mut ChainHead,
    signer: &SoftwareSigner,
    records: &[String],
) -> String {
    for r in records {
        builder.push_input(r.as_bytes(), &|| 0).unwrap();
    }
    let mut line = Vec::new();
    builder.seal(head, signer, 1_796_202_000_000_000_000, &mut line).unwrap();
    String::from_utf8(line).unwrap().trim_end().to_string()
}

fn make_log() -> Log {
    let signers = vec![signer(), signer()];
    let mut lines = Vec::new();
    let mut ids = Vec::new();
    let mut builder = BatchBuilder::new();
    let mut a = ChainHead::new_epoch("app", None, &teelog_core::random::SystemRandom).unwrap();
    for seq in 1..=4 {
        let records: Vec<String> = (0..RECORDS_PER_BATCH).map(|i| record_text(0, seq, i)).collect();
        lines.push(seal(&mut builder, &mut a, &signers[0], &records));
        ids.push((0, seq));
    }
    let mut b = ChainHead::new_epoch("app", a.prev.clone(), &teelog_core::random::SystemRandom).unwrap();
    for seq in 1..=3 {
        let records: Vec<String> = (0..RECORDS_PER_BATCH).map(|i| record_text(1, seq, i)).collect();
        lines.push(seal(&mut builder, &mut b, &signers[1], &records));
        ids.push((1, seq));
    }
    let keys = signers.iter().map(|s| teelog_core::HeaderSigner::public_key(s).clone()).collect();
    Log { lines, keys, ids, signers, heads: vec![a, b] }
}

fn verify(lines: &[String], keys: &[teelog_core::PublicKey]) -> Report {
    let mut verifier = Verifier::new(VerifyOptions {
        trusted_keys: keys.to_vec(),
        expect_measurement: Some(MEASUREMENT.into()),
        policy: None,
        freshness: None,
        ..VerifyOptions::default()
    });
    for (i, line) in lines.iter().enumerate() {
        verifier.push_line(Origin { source: "log", line: i as u64 + 1 }, line.as_bytes());
    }
    verifier.finish()
}

/// A batch line split into the text before the records, the records, and the closing `]}`.
fn split(line: &str) -> (String, Vec<String>) {
    let (prefix, rest) = line.split_once(",\"records\":[").unwrap();
    let array = format!("[{}", rest.strip_suffix('}').unwrap());
    let records: Vec<&RawValue> = serde_json::from_str(&array).unwrap();
    (format!("{prefix},\"records\":["), records.iter().map(|r| r.get().to_string()).collect())
}

fn join(prefix: &str, records: &[String]) -> String {
    format!("{prefix}{}]}}", records.join(","))
}

fn canonical(value: &serde_json::Value) -> String {
    let mut out = Vec::new();
    canonicalize(value.to_string().as_bytes(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Replaces the header of a line (keeping everything else) with `header` in canonical form.
fn with_header(line: &str, header: &serde_json::Value) -> String {
    let start = "{\"v\":1,\"header\":".len();
    let end = line.find(",\"sig\":\"").unwrap();
    format!("{}{}{}", &line[..start], canonical(header), &line[end..])
}

fn header_of(line: &str) -> serde_json::Value {
    let start = "{\"v\":1,\"header\":".len();
    let end = line.find(",\"sig\":\"").unwrap();
    serde_json::from_str(&line[start..end]).unwrap()
}

fn kinds(report: &Report) -> BTreeSet<FindingKind> {
    report.findings.iter().map(|f| f.kind).collect()
}

/// Asserts `expected` was found at `seq` (if given) and every finding is of an allowed kind.
fn assert_detected(report: &Report, expected: FindingKind, seq: Option<u64>, allowed: &[FindingKind]) {
    assert!(!report.ok, "mutation went unnoticed");
    assert!(
        report.findings.iter().any(|f| f.kind == expected && (seq.is_none() || f.seq == seq)),
        "expected {expected:?} at {seq:?}, got {:#?}",
        report.findings
    );
    for f in &report.findings {
        assert!(f.kind == expected || allowed.contains(&f.kind), "unexpected {f:#?}");
    }
}

#[test]
fn the_untouched_log_verifies_in_any_order_and_with_duplicates() {
    let log = make_log();
    let report = verify(&log.lines, &log.keys);
    assert!(report.ok, "{:#?}", report.findings);
    assert_eq!((report.batches, report.records, report.duplicates), (7, 35, 0));

    let mut shuffled: Vec<String> = log.lines.iter().rev().cloned().collect();
    shuffled.push(log.lines[2].clone());
    shuffled.push(log.lines[2].clone());
    let report = verify(&shuffled, &log.keys);
    assert!(report.ok, "{:#?}", report.findings);
    assert_eq!((report.batches, report.duplicates), (7, 2));
}

#[test]
fn a_tail_cut_at_a_restart_is_a_chain_break() {
    let log = make_log();
    // Drop A's last batch: B's first batch now links to a header that is not there.
    let mut lines = log.lines.clone();
    lines.remove(3);
    assert_detected(&verify(&lines, &log.keys), FindingKind::ChainBreak, Some(1), &[]);
}

#[test]
fn equivocation_reports_both_batches() {
    let log = make_log();
    let mut head = ChainHead { next_seq: 2, prev: None, ..log.heads[0].clone() };
    // Re-sign seq 2 of epoch A with other records, linked correctly to seq 1.
    let first_hash = teelog_core::merkle::sha256(canonical(&header_of(&log.lines[0])).as_bytes());
    head.prev = Some(hex::encode(first_hash));
    let other = seal(&mut BatchBuilder::new(), &mut head, &log.signers[0], &[record_text(9, 2, 0)]);
    let mut lines = log.lines.clone();
    lines.push(other);
    let report = verify(&lines, &log.keys);
    assert_detected(&report, FindingKind::Equivocation, Some(2), &[]);
    assert_eq!(report.findings.iter().filter(|f| f.kind == FindingKind::Equivocation).count(), 2);
}

#[test]
fn a_batch_with_a_wrong_link_is_a_chain_break() {
    let log = make_log();
    let mut head = ChainHead { next_seq: 5, prev: Some("00".repeat(32)), ..log.heads[0].clone() };
    let mut lines = log.lines.clone();
    lines.push(seal(&mut BatchBuilder::new(), &mut head, &log.signers[0], &[record_text(0, 5, 0)]));
    // Epoch A now goes on past the batch B links to, and seq 5 does not link to seq 4.
    assert_detected(&verify(&lines, &log.keys), FindingKind::ChainBreak, Some(5), &[]);
}

#[test]
fn a_foreign_key_and_a_wrong_measurement_are_caught() {
    let log = make_log();
    let report = verify(&log.lines, &log.keys[..1]);
    assert_detected(&report, FindingKind::InvalidSignature, None, &[]);
    assert_eq!(report.findings.len(), 3, "all of epoch B: {:#?}", report.findings);

    let mut verifier = Verifier::new(VerifyOptions {
        trusted_keys: log.keys.clone(),
        expect_measurement: Some("ef".into()),
        policy: None,
        freshness: None,
        ..VerifyOptions::default()
    });
    for (i, line) in log.lines.iter().enumerate() {
        verifier.push_line(Origin { source: "log", line: i as u64 + 1 }, line.as_bytes());
    }
    let report = verifier.finish();
    assert_detected(&report, FindingKind::UnexpectedMeasurement, None, &[]);
    assert_eq!(report.findings.len(), 7);
}

#[derive(Debug, Clone)]
enum RecordMutation {
    /// Change one top-level or attribute field of one record.
    Field {
        record: usize,
        field: usize,
    },
    Insert {
        at: usize,
        from_batch: usize,
        from_record: usize,
    },
    Delete {
        record: usize,
    },
    Swap {
        a: usize,
        b: usize,
    },
    /// One byte of white space inside a record.
    Whitespace {
        record: usize,
    },
}

fn record_mutation() -> impl Strategy<Value = RecordMutation> {
    let r = 0..RECORDS_PER_BATCH;
    prop_oneof![
        (r.clone(), 0..6usize).prop_map(|(record, field)| RecordMutation::Field { record, field }),
        (0..=RECORDS_PER_BATCH, 0..7usize, r.clone())
            .prop_map(|(at, from_batch, from_record)| RecordMutation::Insert { at, from_batch, from_record }),
        r.clone().prop_map(|record| RecordMutation::Delete { record }),
        (r.clone(), r.clone())
            .prop_filter("distinct", |(a, b)| a != b)
            .prop_map(|(a, b)| RecordMutation::Swap { a, b }),
        r.prop_map(|record| RecordMutation::Whitespace { record }),
    ]
}

/// Where the verifier must locate the change, when it can say exactly.
fn expected_index(mutation: &RecordMutation) -> Option<u64> {
    match *mutation {
        RecordMutation::Field { record, .. }
        | RecordMutation::Delete { record }
        | RecordMutation::Whitespace { record } => Some(record as u64),
        RecordMutation::Swap { a, b } => Some(a.min(b) as u64),
        // An inserted copy of the record already at that position shows up one later.
        RecordMutation::Insert { .. } => None,
    }
}

fn assert_located(report: &Report, mutation: &RecordMutation) {
    let finding = report.findings.iter().find(|f| f.kind == FindingKind::RecordTampered).unwrap();
    match (expected_index(mutation), mutation) {
        (Some(index), _) => assert_eq!(finding.record_index, Some(index), "{finding:#?}"),
        (None, RecordMutation::Insert { at, .. }) => {
            let found = finding.record_index.expect("an insertion is located");
            assert!(found == *at as u64 || found == *at as u64 + 1, "{finding:#?}");
        }
        (None, _) => unreachable!(),
    }
}

fn mutate_records(log: &Log, batch: usize, mutation: &RecordMutation) -> String {
    let (prefix, mut records) = split(&log.lines[batch]);
    match *mutation {
        RecordMutation::Field { record, field } => {
            let mut value: serde_json::Value = serde_json::from_str(&records[record]).unwrap();
            let target = match field {
                0 => &mut value["ts"],
                1 => &mut value["level"],
                2 => &mut value["message"],
                3 => &mut value["attributes"]["amount"],
                4 => &mut value["attributes"]["user"],
                _ => &mut value["attributes"],
            };
            *target = match target.take() {
                serde_json::Value::Number(n) => serde_json::json!(n.as_u64().unwrap() + 1),
                serde_json::Value::String(s) => serde_json::json!(format!("{s}x")),
                other => serde_json::json!({ "extra": other }),
            };
            records[record] = canonical(&value);
        }
        RecordMutation::Insert { at, from_batch, from_record } => {
            let (_, donor) = split(&log.lines[from_batch]);
            records.insert(at, donor[from_record].clone());
        }
        RecordMutation::Delete { record } => {
            records.remove(record);
        }
        RecordMutation::Swap { a, b } => records.swap(a, b),
        RecordMutation::Whitespace { record } => records[record] = records[record].replacen('{', "{ ", 1),
    }
    join(&prefix, &records)
}

fn mutate_header_field(header: &mut serde_json::Value, field: &str, salt: u8) {
    let flip_hex = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        let i = usize::from(salt) % b.len();
        b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let value = &mut header[field];
    *value = match field {
        "v" => serde_json::json!(2),
        "stream" => serde_json::json!("other"),
        "seq" | "count" => serde_json::json!(value.as_u64().unwrap() + 1 + u64::from(salt % 3)),
        "first_ts" | "last_ts" | "sealed_at" => {
            // Earlier for first_ts, later for the others, so that first_ts <= last_ts still holds.
            let t = teelog_core::timestamp::parse_rfc3339(value.as_str().unwrap()).unwrap();
            let delta = 1 + i64::from(salt);
            let t = if field == "first_ts" { t - delta } else { t + delta };
            serde_json::json!(teelog_core::timestamp::format_rfc3339(t))
        }
        "alg" => serde_json::json!("ES384"),
        "attestation" | "prev" if value.is_null() => serde_json::json!("ab".repeat(32)),
        _ => serde_json::json!(flip_hex(value.as_str().unwrap())),
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_record_mutation_is_record_tampered(batch in 0..7usize, mutation in record_mutation()) {
        let log = make_log();
        let mut lines = log.lines.clone();
        let mutated = mutate_records(&log, batch, &mutation);
        prop_assume!(mutated != lines[batch]);
        lines[batch] = mutated;
        let report = verify(&lines, &log.keys);
        assert_detected(&report, FindingKind::RecordTampered, Some(log.ids[batch].1), &[]);
        assert_located(&report, &mutation);
    }

    #[test]
    fn altered_hints_cannot_misdirect_the_locator(batch in 0..7usize, mutation in record_mutation(), salt in 0..16usize) {
        let log = make_log();
        let mut lines = log.lines.clone();
        let mutated = mutate_records(&log, batch, &mutation);
        prop_assume!(mutated != lines[batch]);
        // The attacker also edits the hints; the header's digest of them no longer matches.
        let start = mutated.rfind(",\"hints\":\"").unwrap() + 10 + salt;
        let mut bytes = mutated.into_bytes();
        bytes[start] = if bytes[start] == b'0' { b'1' } else { b'0' };
        lines[batch] = String::from_utf8(bytes).unwrap();
        let report = verify(&lines, &log.keys);
        assert_detected(&report, FindingKind::RecordTampered, Some(log.ids[batch].1), &[]);
        prop_assert_eq!(report.findings[0].record_index, None);
        prop_assert!(report.findings[0].detail.contains("hints were altered"));
    }

    #[test]
    fn any_header_field_change_is_an_invalid_signature(batch in 0..7usize, field in 0..HEADER_FIELDS.len(), salt in any::<u8>()) {
        let log = make_log();
        let mut lines = log.lines.clone();
        let mut header = header_of(&lines[batch]);
        mutate_header_field(&mut header, HEADER_FIELDS[field], salt);
        lines[batch] = with_header(&lines[batch], &header);
        let report = verify(&lines, &log.keys);
        match HEADER_FIELDS[field] {
            "v" => assert_detected(&report, FindingKind::Malformed, None, &[FindingKind::SequenceGap, FindingKind::ChainBreak]),
            // The batch now claims another place in the chain, so its real place is empty.
            "stream" | "epoch" | "seq" => assert_detected(&report, FindingKind::InvalidSignature, None, &[FindingKind::SequenceGap, FindingKind::ChainBreak]),
            // A forged batch leaves its place empty (a gap before the next one), and a forged
            // last batch of epoch A also leaves B's hand-over link without a target.
            _ => assert_detected(&report, FindingKind::InvalidSignature, Some(log.ids[batch].1), &[FindingKind::SequenceGap, FindingKind::ChainBreak]),
        }
    }

    #[test]
    fn any_signature_bit_flip_is_an_invalid_signature(batch in 0..7usize, byte in 0..64usize, bit in 0..8u8) {
        let log = make_log();
        let mut lines = log.lines.clone();
        let start = lines[batch].find(",\"sig\":\"").unwrap() + 8;
        let end = start + lines[batch][start..].find('"').unwrap();
        let mut sig = B64.decode(&lines[batch][start..end]).unwrap();
        sig[byte] ^= 1 << bit;
        lines[batch].replace_range(start..end, &B64.encode(&sig));
        assert_detected(&verify(&lines, &log.keys), FindingKind::InvalidSignature, Some(log.ids[batch].1), &[FindingKind::SequenceGap, FindingKind::ChainBreak]);
    }

    #[test]
    fn a_dropped_batch_is_a_gap_or_a_chain_break(batch in 0..6usize) {
        // The stream's very last batch is excluded: only heartbeats and a freshness bound reveal
        // a cut tail (see docs/FORMAT.md §1).
        let log = make_log();
        let mut lines = log.lines.clone();
        lines.remove(batch);
        let (epoch, seq) = log.ids[batch];
        let report = verify(&lines, &log.keys);
        if epoch == 0 && seq == 4 {
            assert_detected(&report, FindingKind::ChainBreak, Some(1), &[]);
        } else {
            assert_detected(&report, FindingKind::SequenceGap, Some(seq), &[]);
        }
    }

    #[test]
    fn a_batch_changed_and_re_appended_is_record_tampered(batch in 0..7usize, mutation in record_mutation()) {
        let log = make_log();
        let mut lines = log.lines.clone();
        let mutated = mutate_records(&log, batch, &mutation);
        prop_assume!(mutated != lines[batch]);
        lines.remove(batch);
        lines.push(mutated);
        let report = verify(&lines, &log.keys);
        assert_detected(&report, FindingKind::RecordTampered, Some(log.ids[batch].1), &[]);
        assert_located(&report, &mutation);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_malformed(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut verifier = Verifier::new(VerifyOptions::default());
        verifier.push_line(Origin { source: "fuzz", line: 1 }, &bytes);
        let report = verifier.finish();
        prop_assert!(report.findings.iter().all(|f| matches!(f.kind, FindingKind::Malformed | FindingKind::NothingVerified)));
    }

    #[test]
    fn truncating_a_line_anywhere_is_malformed(batch in 0..7usize, cut in 1usize..2000) {
        let log = make_log();
        let mut lines = log.lines.clone();
        let keep = lines[batch].len().saturating_sub(cut).max(1);
        lines[batch].truncate(keep);
        let report = verify(&lines, &log.keys);
        prop_assert!(kinds(&report).contains(&FindingKind::Malformed));
    }
}
