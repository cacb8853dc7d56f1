//! Batch files and stores read back through the library, as `teelog verify` reads them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use teelog_audit::{files, require_keys, verifier, AuditError, Expectations, Source};
use teelog_core::{BatchBuilder, ChainHead, FindingKind, SigAlg, SoftwareKey, SoftwareSigner};
use teelog_trust::{Trust, TrustFiles};

const SEALED_AT: i64 = 1_796_202_000_000_000_000;

/// Two signed batches in `dir/batches.ndjson`, and the signer's public key in `dir/key.pem`.
fn signed_file(dir: &Path) -> (PathBuf, PathBuf) {
    signed_batches(dir, 2)
}

/// `n` signed batches in `dir/batches.ndjson`, and the signer's public key in `dir/key.pem`.
fn signed_batches(dir: &Path, n: u32) -> (PathBuf, PathBuf) {
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    let key_path = dir.join("key.pem");
    std::fs::write(&key_path, key.public().to_pem()).unwrap();
    let signer = SoftwareSigner::new(key, None);
    let (mut head, mut builder, mut out) = (
        ChainHead::new_epoch("app", None, &teelog_core::random::SystemRandom).unwrap(),
        BatchBuilder::new(),
        Vec::new(),
    );
    for i in 0..n {
        builder.push_input(format!("{{\"message\":\"m{i}\"}}").as_bytes(), &|| 0).unwrap();
        builder.seal(&mut head, &signer, SEALED_AT + i64::from(i), &mut out).unwrap();
    }
    let path = dir.join("batches.ndjson");
    std::fs::write(&path, out).unwrap();
    (path, key_path)
}

fn expectations() -> Expectations {
    Expectations { now: SEALED_AT, max_skew: 1_000_000_000, ..Expectations::default() }
}

fn trust(pubkeys: Vec<PathBuf>) -> Trust {
    Trust::load(&TrustFiles { pubkeys, ..TrustFiles::default() }, 0).unwrap()
}

#[test]
fn a_file_verifies_with_its_key_and_without_it_the_auditor_is_told_which_key() {
    let dir = tempfile::tempdir().unwrap();
    let (file, key) = signed_file(dir.path());
    let sources = [Source::File(file)];

    let with_key = files::verify(
        verifier(trust(vec![key]), &expectations()).unwrap(),
        &sources,
        1 << 20,
        NonZeroUsize::MIN,
    )
    .unwrap();
    assert!(with_key.ok, "{:?}", with_key.findings);
    assert_eq!((with_key.batches, with_key.records), (2, 2));
    require_keys(&with_key, true).unwrap();

    let mut report = files::verify(
        verifier(trust(Vec::new()), &expectations()).unwrap(),
        &sources,
        1 << 20,
        NonZeroUsize::MIN,
    )
    .unwrap();
    assert!(!report.ok);
    assert!(!report.keys_needed.is_empty());
    let err = require_keys(&report, false).unwrap_err();
    assert!(
        matches!(&err, AuditError::KeysNeeded { keys } if keys.contains(&report.keys_needed[0])),
        "{err}"
    );
    // Where other batches verified (say, attested ones), an unknown key is a finding, not the
    // auditor's omission.
    report.trust.push(with_key.trust[0].clone());
    require_keys(&report, false).unwrap();
}

#[test]
fn long_lines_are_findings_and_unreadable_sources_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (file, key) = signed_file(dir.path());
    let run = |sources: &[Source], max: usize| {
        files::verify(
            verifier(trust(vec![key.clone()]), &expectations()).unwrap(),
            sources,
            max,
            NonZeroUsize::MIN,
        )
    };
    let report = run(&[Source::File(file)], 16).unwrap();
    assert!(report.findings.iter().all(|f| f.kind == FindingKind::Malformed) && report.findings.len() == 2);
    assert!(report.findings[0].detail.contains("longer than 16 bytes"), "{}", report.findings[0].detail);

    let absent = dir.path().join("absent.ndjson");
    let err = run(&[Source::File(absent.clone())], 1 << 20).unwrap_err();
    assert!(matches!(&err, AuditError::Read { name, .. } if name == &absent.display().to_string()), "{err}");
    assert!(matches!(run(&[], 1 << 20), Err(AuditError::NothingToVerify)));
    let empty_store = dir.path().join("store");
    std::fs::create_dir(&empty_store).unwrap();
    assert!(matches!(run(&[Source::Store(empty_store)], 1 << 20), Err(AuditError::NoSegments { .. })));
}

#[test]
fn expectations_are_checked_before_anything_is_read() {
    let blank = Expectations { measurement: Some("  ".into()), ..expectations() };
    assert!(matches!(verifier(trust(Vec::new()), &blank), Err(AuditError::EmptyMeasurement)));
    let bad_stream = Expectations { streams: vec!["no spaces".into()], ..expectations() };
    assert!(matches!(verifier(trust(Vec::new()), &bad_stream), Err(AuditError::StreamName { .. })));
    let bad_instance = Expectations { streams: vec!["app=00112233".into()], ..expectations() };
    let err = verifier(trust(Vec::new()), &bad_instance).err().expect("refused");
    assert!(err.to_string().contains("app=00112233"), "{err}");
    let none = Expectations { max_instances: Some(0), ..expectations() };
    assert!(matches!(verifier(trust(Vec::new()), &none), Err(AuditError::NoInstances)));
}

#[test]
fn many_lines_checked_on_three_threads_give_the_report_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let (file, key) = signed_batches(dir.path(), 400);
    // Far more lines than the pool holds in flight, among them copies, a tampered batch, lines
    // too long or no batch, and a torn last line (which no later line completes).
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut input = String::new();
    for (i, line) in lines.iter().enumerate() {
        let line = if i == 123 { line.replace("\"m123\"", "\"mXYZ\"") } else { line.to_string() };
        input.push_str(&line);
        input.push('\n');
        if i % 50 == 7 {
            input.push_str(lines[i / 2]);
            input.push_str("\nnot a batch\n");
            input.push_str(&"x".repeat(5000));
            input.push('\n');
        }
    }
    input.push_str(&lines[399][..40]);
    let mixed = dir.path().join("mixed.ndjson");
    std::fs::write(&mixed, input).unwrap();
    let run = |threads: usize| {
        let verifier = verifier(trust(vec![key.clone()]), &expectations()).unwrap();
        let sources = [Source::File(mixed.clone())];
        files::verify(verifier, &sources, 4096, NonZeroUsize::new(threads).unwrap()).unwrap()
    };
    let one = run(1);
    let kinds: Vec<FindingKind> = one.findings.iter().map(|f| f.kind).collect();
    assert_eq!((one.batches, one.duplicates), (400, 8), "{kinds:?}");
    // The tampered batch, and 8 lines too long, 8 that are no batch and the torn one: malformed.
    assert_eq!(one.findings.len(), 1 + 2 * 8 + 1, "{kinds:?}");
    assert!(
        kinds.contains(&FindingKind::RecordTampered) && kinds.contains(&FindingKind::Malformed),
        "{kinds:?}"
    );
    assert_eq!(run(3), one);
}

/// Every line `files::feed` hands on, kept as it was given (shared lines held to the end).
#[derive(Default)]
struct Kept {
    lines: Vec<(u64, &'static str, files::SharedLine)>,
    shared: usize,
}

impl files::LineSink for Kept {
    fn push_line(&mut self, origin: teelog_core::Origin<'_>, line: &[u8]) {
        self.lines.push((origin.line, "line", line.to_vec().into()));
    }
    fn push_shared(&mut self, origin: teelog_core::Origin<'_>, line: files::SharedLine) {
        self.shared += 1;
        self.lines.push((origin.line, "line", line));
    }
    fn push_unterminated(&mut self, origin: teelog_core::Origin<'_>, line: &[u8]) {
        self.lines.push((origin.line, "unterminated", line.to_vec().into()));
    }
    fn push_malformed(&mut self, origin: teelog_core::Origin<'_>, _: &str) {
        self.lines.push((origin.line, "malformed", Vec::new().into()));
    }
}

/// Gives at most `step` bytes a read, as a pipe does.
struct Trickle<'a>(&'a [u8], usize);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(out.len()).min(self.1);
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn lines_kept_without_a_copy_stay_intact_while_later_ones_are_read() {
    // Lines from a few bytes to past the reader's 4 MiB chunk, each of its own bytes, so that a
    // chunk written over while a line still held it would show; the last one unterminated.
    let lengths = [0, 1, 700_000, 3_000_000, 5_000_000, 17, 900_000, 4_194_303, 4_194_304, 2, 6_000_000, 33];
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for (i, &len) in lengths.iter().enumerate() {
        let line: Vec<u8> = (0..len).map(|j| b'a' + ((i * 7 + j / 1000) % 26) as u8).collect();
        input.extend_from_slice(&line);
        let last = i == lengths.len() - 1;
        if !last {
            input.push(b'\n');
        }
        let kind = match (last, len > 5_500_000) {
            (true, _) => "unterminated",
            (false, true) => "malformed",
            (false, false) => "line",
        };
        expected.push((i as u64 + 1, kind, if kind == "malformed" { Vec::new() } else { line }));
    }
    for step in [usize::MAX, 1 << 20, 65_536, 4093] {
        let mut kept = Kept::default();
        files::feed(&mut kept, Trickle(&input, step), "input", 5_500_000).unwrap();
        let got: Vec<(u64, &str, Vec<u8>)> =
            kept.lines.iter().map(|(n, kind, line)| (*n, *kind, line.to_vec())).collect();
        assert_eq!(got.len(), expected.len(), "step {step}");
        for (got, want) in got.iter().zip(&expected) {
            assert!(got == want, "step {step}: line {} ({}) differs", want.0, want.1);
        }
        // Most lines are kept where they were read, not copied.
        assert!(kept.shared >= 6, "step {step}: {} shared", kept.shared);
    }
}
