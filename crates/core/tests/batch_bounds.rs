//! A signer's batch lines stay within their byte bound whatever the input does to its size, and
//! a record it cannot sign becomes a notice in the stream, never a silent loss.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use teelog_core::batch::{
    Input, ParsedBatch, RecordsCheck, RecordsStatus, SignatureStatus, Taken, DEFAULT_BATCH_BYTES,
    LINE_OVERHEAD, MAX_BATCH_LINE,
};
use teelog_core::canon::CanonError;
use teelog_core::merkle::sha256;
use teelog_core::{BatchBuilder, ChainHead, HeaderSigner, SigAlg, SoftwareKey, SoftwareSigner};

fn signer() -> SoftwareSigner {
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es384, &SoftwareKey::generate_pkcs8(SigAlg::Es384).unwrap()).unwrap();
    // The longest measurement a header may carry, so that the header is at its largest.
    SoftwareSigner::new(key, Some("ab".repeat(128))).with_attestation("cd".repeat(32))
}

/// A record of about `bytes` input bytes whose canonical form is about 4.4 times longer:
/// `1e20` is written `100000000000000000000`.
fn expanding(bytes: usize) -> Vec<u8> {
    let mut record = b"{\"n\":[1e20".to_vec();
    while record.len() + 7 < bytes {
        record.extend_from_slice(b",1e20");
    }
    record.extend_from_slice(b"]}");
    record
}

struct Signed {
    lines: Vec<Vec<u8>>,
    taken: Vec<Taken>,
}

/// Takes `inputs` as a signer does, sealing when the builder asks and at the end.
fn sign(builder: &mut BatchBuilder, inputs: &[Vec<u8>]) -> Signed {
    let signer = signer();
    let mut chain =
        ChainHead::new_epoch(&"s".repeat(128), Some("00".repeat(32)), &teelog_core::random::SystemRandom)
            .unwrap();
    let mut lines = Vec::new();
    let mut taken = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let result = builder.take(Input::Json(input), &|| format!("test:{}", i + 1), &|| 7, |b| {
            let mut line = Vec::new();
            b.seal(&mut chain, &signer, 9, &mut line)?;
            lines.push(line);
            Ok::<(), teelog_core::SealError>(())
        });
        taken.push(result.unwrap());
    }
    if !builder.is_empty() {
        let mut line = Vec::new();
        builder.seal(&mut chain, &signer, 9, &mut line).unwrap();
        lines.push(line);
    }
    for line in &lines {
        let batch = ParsedBatch::parse(&line[..line.len() - 1]).expect("a batch line");
        assert_eq!(batch.verify_with(signer.public_key()), SignatureStatus::Valid);
        assert_eq!(
            batch.check_records(),
            RecordsCheck { status: RecordsStatus::Intact, hints_problem: None }
        );
        assert_eq!(batch.layout_deviation(&line[..line.len() - 1]), None);
    }
    Signed { lines, taken }
}

#[test]
fn expanding_records_never_carry_a_line_past_its_bound() {
    // Inputs of up to the default 1 MiB input line limit, each growing 4.4 times.
    let inputs: Vec<Vec<u8>> = [700_000, 1 << 20, 300_000, 1 << 20, 5_000, 900_000].map(expanding).to_vec();
    let mut builder = BatchBuilder::new();
    let signed = sign(&mut builder, &inputs);
    assert!(signed.taken.iter().all(|t| *t == Taken::Accepted), "{:?}", signed.taken);
    let records: usize = signed
        .lines
        .iter()
        .map(|l| ParsedBatch::parse(&l[..l.len() - 1]).unwrap().header.count as usize)
        .sum();
    assert_eq!(records, inputs.len());
    for line in &signed.lines {
        let count = ParsedBatch::parse(&line[..line.len() - 1]).unwrap().header.count;
        // A batch of several records stays within the bound; one record alone within what a
        // verifier reads.
        let bound = if count > 1 { DEFAULT_BATCH_BYTES } else { MAX_BATCH_LINE };
        assert!(line.len() <= bound, "a line of {} bytes, {count} records", line.len());
    }
    // The 1 MiB record alone is over the 4 MiB bound: it had a line of its own.
    assert!(signed.lines.iter().any(|l| l.len() > DEFAULT_BATCH_BYTES));
}

#[test]
fn the_bound_holds_for_many_small_records_and_any_setting() {
    for bound in [1, 3_000, 100_000, 1 << 20] {
        let inputs: Vec<Vec<u8>> = (0..400).map(|i| expanding(50 + i * 7)).collect();
        let mut builder = BatchBuilder::with_batch_bytes(bound);
        let signed = sign(&mut builder, &inputs);
        for line in &signed.lines {
            let count = ParsedBatch::parse(&line[..line.len() - 1]).unwrap().header.count;
            assert!(
                line.len() <= bound || count == 1,
                "{bound}: a line of {} bytes, {count} records",
                line.len()
            );
        }
        // Sealed no earlier than the bound asks: each line but the last was within one record
        // (at most 13 kB canonical) and the overhead's estimate of it.
        if bound > 10_000 {
            for line in &signed.lines[..signed.lines.len() - 1] {
                assert!(
                    line.len() + 13_000 + LINE_OVERHEAD > bound,
                    "{bound}: sealed early at {}",
                    line.len()
                );
            }
        }
    }
}

#[test]
fn a_record_too_large_for_any_line_becomes_a_notice() {
    // 2 MiB of input, 8.8 MiB canonical.
    let huge = expanding(2 << 20);
    let inputs =
        vec![b"{\"message\":\"before\"}".to_vec(), huge.clone(), b"{\"message\":\"after\"}".to_vec()];
    let mut builder = BatchBuilder::new();
    let signed = sign(&mut builder, &inputs);
    assert_eq!(signed.taken[0], Taken::Accepted);
    assert!(
        matches!(signed.taken[1], Taken::Refused(CanonError::TooLarge { limit: MAX_BATCH_LINE, .. })),
        "{:?}",
        signed.taken[1]
    );
    assert_eq!(signed.taken[2], Taken::Accepted);
    assert_eq!(signed.lines.len(), 1);
    let line = &signed.lines[0];
    let value: serde_json::Value = serde_json::from_slice(line).unwrap();
    let records = value["records"].as_array().unwrap();
    assert_eq!(records.len(), 3);
    let notice = &records[1];
    assert_eq!(notice["teelog_notice"], "record_refused");
    assert_eq!(notice["refused_source"], "test:2");
    assert_eq!(notice["refused_bytes"], huge.len() as u64);
    assert_eq!(notice["refused_sha256"], hex::encode(sha256(&huge)));
    assert!(notice["refused_reason"]
        .as_str()
        .unwrap()
        .contains("would make a batch line longer than 8388608 bytes"));
}

#[test]
fn refused_records_leave_notices_in_order() {
    let inputs: Vec<Vec<u8>> = [
        r#"{"message":"one"}"#,
        r#"{"a":1,"a":2}"#,
        "not json",
        r#"{"message":"two","big":123456789012345678901234567890}"#,
        r#"{"ts":"noon"}"#,
    ]
    .map(|s| s.as_bytes().to_vec())
    .to_vec();
    let mut builder = BatchBuilder::new();
    let signed = sign(&mut builder, &inputs);
    let kinds: Vec<bool> = signed.taken.iter().map(|t| *t == Taken::Accepted).collect();
    assert_eq!(kinds, [true, false, false, true, false]);
    let value: serde_json::Value = serde_json::from_slice(&signed.lines[0]).unwrap();
    let records = value["records"].as_array().unwrap();
    assert_eq!(records.len(), 5);
    for (i, record) in records.iter().enumerate() {
        let refused = record["teelog_notice"] == "record_refused";
        assert_eq!(refused, !kinds[i], "record {i}: {record}");
        if refused {
            assert_eq!(record["refused_source"], format!("test:{}", i + 1));
            assert_eq!(record["refused_sha256"], hex::encode(sha256(&inputs[i])));
            assert_eq!(record["refused_bytes"], inputs[i].len() as u64);
            assert_eq!(record["level"], "WARN");
        }
    }
    // Beyond 2^53 an integer is kept as a string, not refused.
    assert_eq!(records[3]["big"], "123456789012345678901234567890");
}
