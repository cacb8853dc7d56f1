//! Several signers on one stream (docs/FORMAT.md §5.5): the verifier follows each instance on its
//! own, lists them, and holds them to the caller's rules (one by default, a number, or pins).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::collections::{BTreeMap, BTreeSet};

use teelog_core::verify::InstanceRules;
use teelog_core::{
    BatchBuilder, ChainHead, FindingKind, Freshness, HeaderSigner, Origin, Report, SigAlg, SoftwareKey,
    SoftwareSigner, Verifier, VerifyOptions,
};

const SECOND: i64 = 1_000_000_000;
const START: i64 = 1_796_292_000 * SECOND;

fn signer() -> SoftwareSigner {
    let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap();
    SoftwareSigner::new(SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).unwrap(), None)
}

/// `n` batches of a new epoch of stream "app" linked to `prev`, sealed a second apart from
/// `*clock` on.
fn epoch(prev: Option<String>, key: &SoftwareSigner, n: u64, clock: &mut i64) -> (ChainHead, Vec<Vec<u8>>) {
    let mut head = ChainHead::new_epoch("app", prev, &teelog_core::random::SystemRandom).unwrap();
    let mut builder = BatchBuilder::new();
    let lines = (0..n)
        .map(|i| {
            builder.push_input(format!(r#"{{"message":"b{i}"}}"#).as_bytes(), &|| 0).unwrap();
            *clock += SECOND;
            let mut line = Vec::new();
            builder.seal(&mut head, key, *clock, &mut line).unwrap();
            line.pop();
            line
        })
        .collect();
    (head, lines)
}

/// Two signers (a and b) on stream "app", each its own instance, interleaved; a restarts once,
/// linking to its own head.
struct Replicas {
    keys: [SoftwareSigner; 2],
    /// The epochs that start the instances of a and b.
    genesis: [String; 2],
    /// a's second epoch.
    restart: String,
    /// a's head after its restart.
    head: ChainHead,
    lines: Vec<Vec<u8>>,
}

fn replicas() -> Replicas {
    let keys = [signer(), signer()];
    let mut clock = START;
    let (a1, a1_lines) = epoch(None, &keys[0], 2, &mut clock);
    let (b1, b1_lines) = epoch(None, &keys[1], 3, &mut clock);
    let (a2, a2_lines) = epoch(a1.prev.clone(), &keys[0], 2, &mut clock);
    let lines = [a1_lines, b1_lines, a2_lines].concat();
    Replicas { genesis: [a1.epoch, b1.epoch], restart: a2.epoch.clone(), head: a2, keys, lines }
}

fn verify(r: &Replicas, lines: &[Vec<u8>], options: VerifyOptions) -> Report {
    let options =
        VerifyOptions { trusted_keys: r.keys.iter().map(|k| k.public_key().clone()).collect(), ..options };
    let mut verifier = Verifier::new(options);
    for (i, line) in lines.iter().enumerate() {
        verifier.push_line(Origin { source: "in", line: i as u64 + 1 }, line);
    }
    verifier.finish()
}

fn pinned(pins: &[&String]) -> VerifyOptions {
    let pins = pins.iter().map(|p| p.to_string()).collect();
    VerifyOptions {
        instances: InstanceRules { pinned: BTreeMap::from([("app".into(), pins)]), ..Default::default() },
        ..VerifyOptions::default()
    }
}

fn at_most(n: u64) -> VerifyOptions {
    VerifyOptions {
        instances: InstanceRules { max_instances: Some(n), ..Default::default() },
        ..Default::default()
    }
}

/// The findings as (kind, epoch).
fn found(report: &Report) -> BTreeSet<(FindingKind, String)> {
    report.findings.iter().map(|f| (f.kind, f.epoch.clone().unwrap_or_default())).collect()
}

#[test]
fn declared_or_pinned_instances_verify_and_are_listed_with_their_epochs() {
    let r = replicas();
    for options in [at_most(2), pinned(&[&r.genesis[0], &r.genesis[1]])] {
        let pins = !options.instances.pinned.is_empty();
        let report = verify(&r, &r.lines, options);
        assert!(report.ok, "{:#?}", report.findings);
        let listed: Vec<(&str, bool, bool, Vec<&str>)> = report
            .instances
            .iter()
            .map(|i| (&*i.instance, i.genesis, i.pinned, i.epochs.iter().map(|e| &**e).collect()))
            .collect();
        let mut expected = vec![
            (r.genesis[0].as_str(), true, pins, vec![r.genesis[0].as_str(), r.restart.as_str()]),
            (r.genesis[1].as_str(), true, pins, vec![r.genesis[1].as_str()]),
        ];
        expected.sort();
        assert_eq!(listed, expected);
    }
}

#[test]
fn a_second_instance_not_declared_is_unexpected_for_both() {
    let r = replicas();
    let report = verify(&r, &r.lines, VerifyOptions::default());
    let expected: BTreeSet<_> =
        r.genesis.iter().map(|g| (FindingKind::UnexpectedInstance, g.clone())).collect();
    assert_eq!(found(&report), expected);
    // A limit for another stream does not apply to this one; its own does, over the default.
    let limit = |stream: &str, n| VerifyOptions {
        instances: InstanceRules {
            limits: BTreeMap::from([(stream.to_string(), n)]),
            max_instances: Some(1),
            ..InstanceRules::default()
        },
        ..VerifyOptions::default()
    };
    assert_eq!(found(&verify(&r, &r.lines, limit("db", 2))), expected);
    assert!(verify(&r, &r.lines, limit("app", 2)).ok);
    // Listed all the same, so that an auditor sees what the stream holds.
    assert_eq!(report.instances.len(), 2);
}

#[test]
fn an_instance_not_pinned_is_unexpected_and_a_pinned_one_absent_is_missing() {
    let r = replicas();
    let report = verify(&r, &r.lines, pinned(&[&r.genesis[0]]));
    assert_eq!(found(&report), BTreeSet::from([(FindingKind::UnexpectedInstance, r.genesis[1].clone())]));

    // The stream replaced by another instance of the same code: b's chain alone, where a's is
    // pinned.
    let b_only: Vec<Vec<u8>> = r.lines[2..5].to_vec();
    let report = verify(&r, &b_only, pinned(&[&r.genesis[0]]));
    let expected = BTreeSet::from([
        (FindingKind::UnexpectedInstance, r.genesis[1].clone()),
        (FindingKind::MissingStream, r.genesis[0].clone()),
    ]);
    assert_eq!(found(&report), expected);
}

#[test]
fn a_forked_restart_is_a_chain_break_however_many_instances_are_allowed() {
    let mut r = replicas();
    let mut clock = START + 100 * SECOND;
    // a restarts again, twice from the same head.
    let (_, once) = epoch(r.head.prev.clone(), &r.keys[0], 1, &mut clock);
    let (_, twice) = epoch(r.head.prev.clone(), &r.keys[0], 1, &mut clock);
    r.lines.extend([once, twice].concat());
    let report = verify(&r, &r.lines, at_most(3));
    let kinds: BTreeSet<FindingKind> = report.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, BTreeSet::from([FindingKind::ChainBreak]), "{:#?}", report.findings);
    assert_eq!(report.findings.len(), 2, "both epochs fork the instance: {:#?}", report.findings);
}

#[test]
fn a_key_that_starts_an_instance_and_signs_in_another_is_a_restart_that_did_not_link() {
    let r = replicas();
    let mut clock = START + 100 * SECOND;
    // a's key starts afresh: a third "instance", allowed in number, but signed by a's key.
    let (again, lines) = epoch(None, &r.keys[0], 1, &mut clock);
    let all = [r.lines.clone(), lines].concat();
    let report = verify(&r, &all, at_most(3));
    let expected = BTreeSet::from([
        (FindingKind::ChainBreak, again.epoch.clone()),
        (FindingKind::ChainBreak, r.genesis[0].clone()),
    ]);
    assert_eq!(found(&report), expected, "{:#?}", report.findings);
}

#[test]
fn freshness_is_judged_per_instance() {
    let r = replicas();
    let mut clock = START + 3600 * SECOND;
    // b goes on an hour later; a's newest batch stays an hour old.
    let mut b_head = ChainHead::new_epoch("app", None, &teelog_core::random::SystemRandom).unwrap();
    let b_lines: Vec<Vec<u8>> = r.lines[2..5].to_vec();
    let b_last = teelog_core::batch::ParsedBatch::parse(&b_lines[2]).unwrap();
    b_head.epoch = r.genesis[1].clone();
    b_head.next_seq = 4;
    b_head.prev = Some(hex::encode(b_last.header_hash));
    let mut builder = BatchBuilder::new();
    clock += SECOND;
    let mut fresh = Vec::new();
    builder.seal(&mut b_head, &r.keys[1], clock, &mut fresh).unwrap();
    fresh.pop();
    let all = [r.lines.clone(), vec![fresh]].concat();
    let options = VerifyOptions {
        freshness: Some(Freshness { now: clock + SECOND, max_silence: 600 * SECOND }),
        ..at_most(2)
    };
    let report = verify(&r, &all, options);
    let stale: Vec<(FindingKind, String)> =
        report.findings.iter().map(|f| (f.kind, f.epoch.clone().unwrap_or_default())).collect();
    assert_eq!(stale, vec![(FindingKind::StaleStream, r.restart.clone())]);
    assert!(report.findings[0].detail.contains(&format!("instance from epoch {}", r.genesis[0])));
}

#[test]
fn many_instances_cost_findings_of_bounded_size() {
    let keys: Vec<SoftwareSigner> = (0..20).map(|_| signer()).collect();
    let mut clock = START;
    let lines: Vec<Vec<u8>> = keys.iter().flat_map(|k| epoch(None, k, 1, &mut clock).1).collect();
    let options = VerifyOptions {
        trusted_keys: keys.iter().map(|k| k.public_key().clone()).collect(),
        ..VerifyOptions::default()
    };
    let mut verifier = Verifier::new(options);
    for (i, line) in lines.iter().enumerate() {
        verifier.push_line(Origin { source: "in", line: i as u64 + 1 }, line);
    }
    let report = verifier.finish();
    assert_eq!(report.findings.len(), 20);
    assert!(report.findings.iter().all(|f| f.kind == FindingKind::UnexpectedInstance));
    let detail = &report.findings[0].detail;
    assert!(detail.len() < 1000 && detail.contains("(20 in all)"), "{detail}");
    assert_eq!(report.instances.len(), 20);
}
