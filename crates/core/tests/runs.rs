//! The offline verifier keeps an epoch as runs of consecutive seqs with 24 bytes per batch
//! (crates/core/src/runs.rs): the cases that compaction could miss — a fork or a copy long after
//! its seq was folded into a run, a batch that links to a second header read after it, lines in
//! reverse — are still found, and counted, as they were when every header was kept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use teelog_core::merkle::Digest;
use teelog_core::{
    BatchBuilder, ChainHead, FindingKind, HeaderSigner, Origin, Report, SigAlg, SoftwareKey, SoftwareSigner,
    Verifier, VerifyOptions,
};

const SECOND: i64 = 1_000_000_000;
const START: i64 = 1_796_292_000 * SECOND;
const EPOCH: &str = "0123456789abcdef0123456789abcdef";

fn signer() -> SoftwareSigner {
    let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap();
    SoftwareSigner::new(SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).unwrap(), None)
}

/// One batch of one record, sealed at `sealed_at` as the next of `head`.
fn seal(head: &mut ChainHead, signer: &SoftwareSigner, text: &str, sealed_at: i64) -> (Vec<u8>, Digest) {
    let mut builder = BatchBuilder::new();
    let record = format!(r#"{{"ts":"2026-12-03T10:00:00Z","message":"{text}"}}"#);
    builder.push_input(record.as_bytes(), &|| 0).unwrap();
    let mut line = Vec::new();
    let sealed = builder.seal(head, signer, sealed_at, &mut line).unwrap();
    line.pop();
    (line, sealed.header_hash)
}

/// Batches 1..=n of one epoch, a second apart: lines and header hashes, by seq from 1.
fn chain(signer: &SoftwareSigner, n: u64) -> (Vec<Vec<u8>>, Vec<Digest>) {
    let mut head = ChainHead {
        stream: "app".into(),
        epoch: EPOCH.into(),
        next_seq: 1,
        prev: None,
        prev_sealed_at: None,
    };
    (1..=n).map(|seq| seal(&mut head, signer, &format!("batch {seq}"), START + seq as i64 * SECOND)).unzip()
}

/// A second batch for `seq` (linked to `prev`), sealed `offset` ns after the first one.
fn other(signer: &SoftwareSigner, seq: u64, prev: Option<&Digest>, offset: i64) -> (Vec<u8>, Digest) {
    let mut head = ChainHead {
        stream: "app".into(),
        epoch: EPOCH.into(),
        next_seq: seq,
        prev: prev.map(hex::encode),
        prev_sealed_at: None,
    };
    seal(&mut head, signer, &format!("other {seq}"), START + seq as i64 * SECOND + offset)
}

fn verify(lines: &[&Vec<u8>], signer: &SoftwareSigner) -> Report {
    let mut verifier = Verifier::new(VerifyOptions {
        trusted_keys: vec![signer.public_key().clone()],
        ..VerifyOptions::default()
    });
    for (i, line) in lines.iter().enumerate() {
        verifier.push_line(Origin { source: "in", line: i as u64 + 1 }, line);
    }
    verifier.finish()
}

/// The findings as (kind, seq) with how many of each.
fn found(report: &Report) -> BTreeMap<(FindingKind, u64), usize> {
    let mut out = BTreeMap::new();
    for f in &report.findings {
        *out.entry((f.kind, f.seq.unwrap_or(0))).or_default() += 1;
    }
    out
}

#[test]
fn a_fork_and_a_copy_long_after_their_seq_are_told_apart() {
    let key = signer();
    let (lines, hashes) = chain(&key, 300);
    // A copy of batch 100, read after 200 more: a duplicate, nothing else.
    let mut input: Vec<&Vec<u8>> = lines.iter().collect();
    input.push(&lines[99]);
    let report = verify(&input, &key);
    assert!(report.ok, "{:#?}", report.findings);
    assert_eq!((report.batches, report.duplicates, report.records), (300, 1, 300));

    // A second header for seq 100, linked as it should be and read last: equivocation, both
    // batches named, and the batch after it untouched.
    let (fork, fork_hash) = other(&key, 100, Some(&hashes[98]), 1);
    input.push(&fork);
    let report = verify(&input, &key);
    assert_eq!(found(&report), BTreeMap::from([((FindingKind::Equivocation, 100), 2)]));
    assert_eq!((report.batches, report.duplicates), (301, 1));
    let detail = &report.findings[0].detail;
    assert!(detail.contains(&hex::encode(fork_hash)), "{detail}");
    assert!(detail.contains(&hex::encode(&hashes[99][..16])), "{detail}");

    // A second header for seq 100 that links to nothing and goes back in time: that too.
    let (wild, _) = other(&key, 100, Some(&hashes[10]), -5 * SECOND);
    input.push(&wild);
    let report = verify(&input, &key);
    assert_eq!(
        found(&report),
        BTreeMap::from([
            ((FindingKind::Equivocation, 100), 3),
            ((FindingKind::ChainBreak, 100), 1),
            ((FindingKind::TimeAnomaly, 100), 1),
        ])
    );
}

#[test]
fn a_batch_linked_to_a_second_header_read_after_it_is_no_chain_break() {
    let key = signer();
    let (lines, hashes) = chain(&key, 10);
    // 11 continues from a second header for 10, which comes last: when 11 met 10 it did not
    // link, but a header it links to is there once everything is in.
    let (fork10, fork10_hash) = other(&key, 10, Some(&hashes[8]), 1);
    let (after, _) = other(&key, 11, Some(&fork10_hash), SECOND);
    let mut input: Vec<&Vec<u8>> = lines.iter().collect();
    input.push(&after);
    let report = verify(&input, &key);
    assert_eq!(found(&report), BTreeMap::from([((FindingKind::ChainBreak, 11), 1)]), "without the fork");
    input.push(&fork10);
    let report = verify(&input, &key);
    assert_eq!(found(&report), BTreeMap::from([((FindingKind::Equivocation, 10), 2)]));
}

#[test]
fn lines_in_any_order_give_what_they_give_in_order() {
    let key = signer();
    let (lines, hashes) = chain(&key, 400);
    let (fork, _) = other(&key, 120, Some(&hashes[118]), 1);
    // Sealed before batch 199: time going backwards inside a run.
    let (early, _) = other(&key, 200, Some(&hashes[198]), -2 * SECOND);
    let (unlinked, _) = other(&key, 301, Some(&hashes[10]), 0);
    let mut input: Vec<&Vec<u8>> =
        lines.iter().enumerate().filter(|(i, _)| ![49, 50, 199, 300].contains(i)).map(|(_, l)| l).collect();
    input.extend([&fork, &early, &unlinked, &lines[7], &lines[250]]);
    let expected = BTreeMap::from([
        ((FindingKind::SequenceGap, 50), 1),
        ((FindingKind::Equivocation, 120), 2),
        ((FindingKind::TimeAnomaly, 200), 1),
        // 201 and 302 link to the batches 200 and 301 replaced.
        ((FindingKind::ChainBreak, 201), 1),
        ((FindingKind::ChainBreak, 301), 1),
        ((FindingKind::ChainBreak, 302), 1),
    ]);
    let in_order = verify(&input, &key);
    assert_eq!(found(&in_order), expected);
    let counts = |r: &Report| (r.batches, r.records, r.duplicates);
    assert_eq!(counts(&in_order), (399, 399, 2));
    let reversed: Vec<&Vec<u8>> = input.iter().rev().copied().collect();
    let report = verify(&reversed, &key);
    assert_eq!((found(&report), counts(&report)), (expected.clone(), counts(&in_order)), "reversed");
    // Odd lines first, then even ones: every batch arrives apart from both neighbours.
    let interleaved: Vec<&Vec<u8>> =
        input.iter().step_by(2).chain(input.iter().skip(1).step_by(2)).copied().collect();
    let report = verify(&interleaved, &key);
    assert_eq!((found(&report), counts(&report)), (expected, counts(&in_order)), "interleaved");
}

#[test]
fn an_intact_copy_after_a_tampered_one_is_a_first_copy() {
    let key = signer();
    let (lines, _) = chain(&key, 5);
    let tampered =
        String::from_utf8(lines[2].clone()).unwrap().replacen("batch 3", "batch X", 1).into_bytes();
    let input: Vec<&Vec<u8>> = vec![&lines[0], &lines[1], &tampered, &lines[3], &lines[4], &lines[2]];
    let report = verify(&input, &key);
    assert_eq!(found(&report), BTreeMap::from([((FindingKind::RecordTampered, 3), 1)]));
    // Both lines are batches of their own; the intact one's record counts.
    assert_eq!((report.batches, report.records, report.duplicates), (6, 5, 0));
}
