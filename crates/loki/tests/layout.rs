//! The storage layout on real batch lines made by `teelog_core::BatchBuilder`: splitting and
//! rebuilding is the identity, the pushed entries are what docs/LOKI.md says, and what comes
//! back from Loki rebuilds lines that verify.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use teelog_core::batch::attestation_line;
use teelog_core::{
    BatchBuilder, ChainHead, FindingKind, HeaderSigner, Origin, SigAlg, SoftwareKey, SoftwareSigner,
    Verifier, VerifyOptions,
};
use teelog_loki::layout::{
    DEFAULT_MAX_LINE_BYTES, META_ATTESTATION_SHA256, META_COUNT, META_EPOCH, META_INDEX, META_SEQ,
};
use teelog_loki::proto::{EntryAdapter, StreamAdapter};
use teelog_loki::{
    batch_to_push, parse_query_response, rebuild_batch_line, split_batch_line, AttestationInput,
    BatchEntries, Kind, LabelError, Layout, LayoutError, LayoutOptions, PartJoiner, PushBuilder,
};

const SEALED_AT: i64 = 1_796_202_000_000_000_000;

fn signer() -> SoftwareSigner {
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    SoftwareSigner::new(key, Some("abcd".into()))
}

/// Batches of `sizes[i]` records each (0 = heartbeat), sealed 1 ms apart; lines end in `\n`.
fn batches(signer: &SoftwareSigner, stream: &str, sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut builder = BatchBuilder::new();
    let mut head = ChainHead::new_epoch(stream, None, &teelog_core::random::SystemRandom).unwrap();
    sizes
        .iter()
        .enumerate()
        .map(|(b, &n)| {
            for i in 0..n {
                // Records 0 and 1 are identical: their entries differ only by timestamp.
                let message =
                    if i < 2 { "same".to_string() } else { format!("batch {b} record {i} \"é\" \\") };
                let record =
                    serde_json::json!({"ts": "2026-12-02T09:00:00Z", "level": "info", "message": message})
                        .to_string();
                builder.push_input(record.as_bytes(), &|| 0).unwrap();
            }
            let mut line = Vec::new();
            builder.seal(&mut head, signer, SEALED_AT + b as i64 * 1_000_000, &mut line).unwrap();
            line
        })
        .collect()
}

fn trimmed(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap()
}

fn metadata(entry: &EntryAdapter) -> BTreeMap<&str, &str> {
    entry.structured_metadata.iter().map(|p| (p.name.as_str(), p.value.as_str())).collect()
}

fn ts(entry: &EntryAdapter) -> i64 {
    entry.timestamp.unwrap().to_unix_nanos().unwrap()
}

fn stream<'a>(streams: &'a [StreamAdapter], kind: &str) -> &'a StreamAdapter {
    let matching: Vec<&StreamAdapter> =
        streams.iter().filter(|s| s.labels.contains(&format!("teelog_kind=\"{kind}\""))).collect();
    assert_eq!(matching.len(), 1, "one {kind} stream");
    matching[0]
}

#[test]
fn split_then_rebuild_is_the_identity_including_heartbeats() {
    let signer = signer();
    for line in batches(&signer, "app", &[3, 0, 1, 40, 0]) {
        let split = split_batch_line(&line).unwrap();
        assert_eq!(split.records.len() as u64, split.header.count);
        assert_eq!(split.sealed_at, teelog_core::timestamp::parse_rfc3339(&split.header.sealed_at).unwrap());
        let (head, _) = std::str::from_utf8(trimmed(&line)).unwrap().split_once(",\"records\":[").unwrap();
        assert_eq!(split.batch_entry, format!("{head}}}"));
        let records: Vec<&[u8]> = split.records.iter().map(|r| r.as_bytes()).collect();
        assert_eq!(rebuild_batch_line(split.batch_entry.as_bytes(), &records).unwrap(), trimmed(&line));
        // With or without the final newline.
        assert_eq!(split_batch_line(trimmed(&line)).unwrap(), split);
    }
}

#[test]
fn refuses_lines_that_would_not_rebuild_exactly() {
    let signer = signer();
    let line = String::from_utf8(batches(&signer, "app", &[2]).remove(0)).unwrap();
    let spaced = line.replacen(",\"records\":[", ", \"records\": [", 1);
    assert!(matches!(split_batch_line(spaced.as_bytes()), Err(LayoutError::NotCanonical { seq: 1, .. })));
    let reordered = {
        let (head, records) = line.trim_end().split_once(",\"records\":[").unwrap();
        let (prefix, hints) = head.rsplit_once(",\"hints\":").unwrap();
        format!("{prefix},\"records\":[{},\"hints\":{hints}}}\n", records.strip_suffix('}').unwrap())
    };
    assert!(matches!(split_batch_line(reordered.as_bytes()), Err(LayoutError::NotCanonical { .. })));
    assert!(matches!(split_batch_line(b"{\"v\":1}"), Err(LayoutError::NotABatch(_))));
    assert!(matches!(split_batch_line(b"\xff\xfe"), Err(LayoutError::NotUtf8(0))));
    let extra = line.trim_end().replacen("{\"v\":1,", "{\"v\":1,\"x\":0,", 1);
    assert!(matches!(split_batch_line(extra.as_bytes()), Err(LayoutError::NotABatch(_))));

    assert!(matches!(rebuild_batch_line(b"{\"v\":1}", &[]), Err(LayoutError::NotABatchEntry(_))));
    let entry = split_batch_line(line.as_bytes()).unwrap().batch_entry;
    let spaced_entry = entry.replacen("{\"v\":1,", "{\"v\": 1,", 1);
    assert!(matches!(rebuild_batch_line(spaced_entry.as_bytes(), &[]), Err(LayoutError::NotABatchEntry(_))));
}

#[test]
fn pushes_the_documented_layout() {
    let signer = signer();
    let lines = batches(&signer, "payments/eu-1", &[3, 0, 2]);
    let document = b"a COSE_Sign1 document".to_vec();
    let doc_line = attestation_line(&document);
    let layout = Layout::new(LayoutOptions {
        extra_labels: vec![("env".into(), "prod".into())],
        ..LayoutOptions::default()
    })
    .unwrap();
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let attestation = AttestationInput { stream: "payments/eu-1", line: &doc_line, timestamp: SEALED_AT };
    let request = batch_to_push(&layout, &refs, &[attestation]).unwrap();
    assert_eq!(request.streams.len(), 3);

    let records = stream(&request.streams, "record");
    assert_eq!(
        records.labels,
        r#"{env="prod", job="teelog", teelog_kind="record", teelog_stream="payments/eu-1"}"#
    );
    assert_eq!(records.entries.len(), 5);
    let keys: HashSet<(i64, &str)> = records.entries.iter().map(|e| (ts(e), e.line.as_str())).collect();
    assert_eq!(keys.len(), 5, "every (timestamp, line) is unique");
    let stamps: HashSet<i64> = records.entries.iter().map(ts).collect();
    assert_eq!(stamps.len(), 5, "identical records get distinct timestamps");

    let batch_stream = stream(&request.streams, "batch");
    assert_eq!(batch_stream.labels, records.labels.replace("\"record\"", "\"batch\""));
    assert_eq!(batch_stream.entries.len(), 3);
    for (seq, (line, entry)) in lines.iter().zip(&batch_stream.entries).enumerate() {
        let seq = seq as u64 + 1;
        let split = split_batch_line(line).unwrap();
        assert_eq!(entry.line, split.batch_entry, "the batch line less its records");
        assert!(!entry.line.contains("records"));
        assert_eq!(ts(entry), split.sealed_at);
        let count = split.records.len().to_string();
        let md = metadata(entry);
        assert_eq!(
            md,
            BTreeMap::from([
                (META_EPOCH, split.header.epoch.as_str()),
                (META_SEQ, &*seq.to_string()),
                (META_COUNT, &*count)
            ])
        );
        let mine: Vec<&EntryAdapter> =
            records.entries.iter().filter(|e| metadata(e)[META_SEQ] == seq.to_string()).collect();
        assert_eq!(mine.len(), split.records.len());
        for (index, (record, e)) in split.records.iter().zip(mine).enumerate() {
            assert_eq!(&e.line, record);
            assert_eq!(ts(e), split.sealed_at + index as i64);
            assert_eq!(metadata(e)[META_INDEX], index.to_string());
            assert_eq!(metadata(e)[META_EPOCH], split.header.epoch);
        }
    }

    let attestations = stream(&request.streams, "attestation");
    assert_eq!(attestations.entries.len(), 1);
    assert_eq!(attestations.entries[0].line.as_bytes(), trimmed(&doc_line));
    assert_eq!(ts(&attestations.entries[0]), SEALED_AT);
    assert_eq!(
        metadata(&attestations.entries[0])[META_ATTESTATION_SHA256],
        hex::encode(teelog_core::merkle::sha256(&document))
    );
    // Entries of a stream are in timestamp order.
    for s in &request.streams {
        assert!(s.entries.windows(2).all(|w| ts(&w[0]) <= ts(&w[1])));
    }
    assert_eq!(
        layout.selector("payments/eu-1", Kind::Batch).unwrap(),
        r#"{env="prod", job="teelog", teelog_kind="batch", teelog_stream="payments/eu-1"}"#
    );
    assert_eq!(layout.base_selector(), r#"{env="prod", job="teelog"}"#);
}

#[test]
fn per_call_labels_split_streams_and_cannot_override_the_layout() {
    let signer = signer();
    let lines = batches(&signer, "app", &[1, 1]);
    let layout = Layout::new(LayoutOptions::default()).unwrap();
    let mut push = PushBuilder::new(&layout);
    assert!(push.is_empty());
    push.add_batch(&lines[0], &[("signature_valid", "true")]).unwrap();
    push.add_batch(&lines[1], &[("signature_valid", "false")]).unwrap();
    for bad in [("teelog_kind", "x"), ("teelog_stream", "x"), ("job", "x")] {
        let err = push.add_batch(&lines[1], &[bad]).unwrap_err();
        assert!(
            matches!(err, LayoutError::Label(LabelError::Reserved { .. } | LabelError::Duplicate { .. })),
            "{err}"
        );
    }
    let request = push.finish();
    let labels: Vec<&str> = request.streams.iter().map(|s| s.labels.as_str()).collect();
    assert_eq!(
        labels,
        [
            r#"{job="teelog", signature_valid="false", teelog_kind="batch", teelog_stream="app"}"#,
            r#"{job="teelog", signature_valid="false", teelog_kind="record", teelog_stream="app"}"#,
            r#"{job="teelog", signature_valid="true", teelog_kind="batch", teelog_stream="app"}"#,
            r#"{job="teelog", signature_valid="true", teelog_kind="record", teelog_stream="app"}"#,
        ]
    );
    assert!(Layout::new(LayoutOptions { job: "".into(), ..LayoutOptions::default() }).is_err());
    let reserved =
        LayoutOptions { extra_labels: vec![("teelog_kind".into(), "x".into())], ..LayoutOptions::default() };
    assert!(matches!(Layout::new(reserved), Err(LabelError::Reserved { .. })));
}

/// Batch 2 of `lines` again, with record 2 made `len` bytes of two-byte characters.
fn with_long_record(signer: &SoftwareSigner, lines: &mut [Vec<u8>], len: usize) {
    let mut builder = BatchBuilder::new();
    let mut head = ChainHead::new_epoch("app", None, &teelog_core::random::SystemRandom).unwrap();
    head.next_seq = 2;
    for i in 0..4 {
        let message = if i == 2 { "é".repeat(len / 2) } else { format!("record {i}") };
        builder.push_input(serde_json::json!({ "message": message }).to_string().as_bytes(), &|| 0).unwrap();
    }
    lines[1].clear();
    builder.seal(&mut head, signer, SEALED_AT, &mut lines[1]).unwrap();
}

#[test]
fn an_overlong_record_goes_in_parts_that_join_back_and_one_too_long_for_them_is_named() {
    let signer = signer();
    let mut lines = batches(&signer, "app", &[4, 4]);
    with_long_record(&signer, &mut lines, 2_000);
    let layout = Layout::new(LayoutOptions { max_line_bytes: 1_500, ..LayoutOptions::default() }).unwrap();
    let request = batch_to_push(&layout, &[&lines[1]], &[]).unwrap();
    let kind_of = |s: &StreamAdapter| {
        s.labels.split("teelog_kind=\"").nth(1).unwrap().split('"').next().unwrap().to_string()
    };
    let parts = request.streams.iter().find(|s| kind_of(s) == "record_part").unwrap();
    let records = request.streams.iter().find(|s| kind_of(s) == "record").unwrap();
    assert_eq!((parts.entries.len(), records.entries.len()), (2, 3));
    let at = |e: &EntryAdapter| e.timestamp.unwrap().to_unix_nanos().unwrap();
    assert!(parts.entries.iter().all(|e| e.line.len() <= 1_500 && at(e) == SEALED_AT + 2));
    assert_eq!(metadata(&parts.entries[1])[META_INDEX], "2");
    let mut joiner = PartJoiner::new(i64::MAX);
    // In either order, with a stranger's part beside them.
    joiner.push(SEALED_AT + 2, &parts.entries[1].line);
    joiner.push(SEALED_AT + 2, "teelog-part 0/2 00 nonsense");
    joiner.push(SEALED_AT + 2, &parts.entries[0].line);
    let joined = joiner.finish();
    let record = split_batch_line(&lines[1]).unwrap().records[2].to_string();
    assert_eq!(joined.records[&(SEALED_AT + 2)], vec![record]);
    assert_eq!(joined.foreign.total, 1);
    // A part altered joins into nothing: both are foreign, and the record is missing.
    let mut joiner = PartJoiner::new(i64::MAX);
    joiner.push(SEALED_AT + 2, &parts.entries[0].line.replacen('é', "e", 1));
    joiner.push(SEALED_AT + 2, &parts.entries[1].line);
    let joined = joiner.finish();
    assert!(joined.records.is_empty() && joined.foreign.total == 2);

    // More parts than a record may have: an error naming the batch and the record.
    with_long_record(&signer, &mut lines, 3_000_000);
    let layout = Layout::new(LayoutOptions { max_line_bytes: 700, ..LayoutOptions::default() }).unwrap();
    let mut push = PushBuilder::new(&layout);
    push.add_batch(&lines[0], &[]).unwrap();
    let before = push.finish();
    let mut push = PushBuilder::new(&layout);
    push.add_batch(&lines[0], &[]).unwrap();
    let err = push.add_batch(&lines[1], &[]).unwrap_err();
    match &err {
        LayoutError::LineTooLong { seq: 2, part, len, limit: 700, .. } => {
            assert_eq!(part, "record 2");
            assert!(*len > 3_000_000);
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("seq 2") && text.contains("record 2") && text.contains("max_line_size"), "{text}");
    assert_eq!(push.finish(), before, "a refused batch adds nothing");

    let tiny = Layout::new(LayoutOptions { max_line_bytes: 100, ..LayoutOptions::default() }).unwrap();
    let err = batch_to_push(&tiny, &[&lines[0]], &[]).unwrap_err();
    assert!(
        matches!(&err, LayoutError::LineTooLong { seq: 1, part, .. } if part.starts_with("the batch entry")),
        "{err}"
    );
    let doc = attestation_line(&[7u8; 200]);
    let err = batch_to_push(&tiny, &[], &[AttestationInput { stream: "app", line: &doc, timestamp: 0 }])
        .unwrap_err();
    assert!(matches!(err, LayoutError::AttestationTooLong { .. }));
    assert_eq!(DEFAULT_MAX_LINE_BYTES, 262_144);
}

#[test]
fn refuses_bad_attestation_lines() {
    let layout = Layout::new(LayoutOptions::default()).unwrap();
    for (stream, line) in [
        ("app", &b"{\"v\":1,\"attestation\":\"not base64!\"}"[..]),
        ("app", b"{\"v\":2,\"attestation\":\"AAAA\"}"),
        ("app", b"{\"v\":1,\"attestation\":\"AAAA\",\"x\":1}"),
        ("app", b"\xff"),
        ("bad stream", b"{\"v\":1,\"attestation\":\"AAAA\"}"),
    ] {
        let input = AttestationInput { stream, line, timestamp: 0 };
        assert!(batch_to_push(&layout, &[], &[input]).is_err(), "{stream} {line:?}");
    }
}

/// Push, "store", query back in the categorize-labels shape, rebuild, verify: the whole trip.
#[test]
fn entries_read_back_from_loki_rebuild_lines_that_verify() {
    let signer = signer();
    let lines = batches(&signer, "app", &[5, 0, 3]);
    let layout = Layout::new(LayoutOptions::default()).unwrap();
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let request = batch_to_push(&layout, &refs, &[]).unwrap();

    // What Loki would answer for each stream, values newest first: the answer's order is not
    // relied on (the pager sorts each page), nor is any metadata.
    let response = |s: &StreamAdapter| {
        let values: Vec<serde_json::Value> =
            s.entries.iter().rev().map(|e| serde_json::json!([ts(e).to_string(), e.line, {}])).collect();
        let body = serde_json::json!({"status":"success","data":{"resultType":"streams",
            "encodingFlags":["categorize-labels"],"result":[{"stream":{"job":"teelog"},"values":values}]}});
        let mut entries =
            parse_query_response(body.to_string().as_bytes()).unwrap().streams.remove(0).entries;
        entries.sort_by_key(|e| e.timestamp);
        entries
    };
    let batch_entries = response(stream(&request.streams, "batch"));
    let record_entries = response(stream(&request.streams, "record"));

    let rebuild = |drop: Option<i64>| -> Vec<Vec<u8>> {
        let mut entries = BatchEntries::new("app", SEALED_AT, SEALED_AT + 1_000_000_000);
        for b in &batch_entries {
            entries.push(b.timestamp, b.line.clone()).unwrap();
        }
        let mut assembler = entries.records();
        let mut out = Vec::new();
        for r in record_entries.iter().filter(|r| Some(r.timestamp) != drop) {
            assembler.push(r.timestamp, r.line.clone());
            out.extend(assembler.ready().map(|a| a.line));
        }
        let finished = assembler.finish();
        assert_eq!(finished.foreign.total, 0);
        out.extend(finished.batches.into_iter().map(|a| a.line));
        out
    };
    let verify = |rebuilt: &[Vec<u8>]| {
        let mut verifier = Verifier::new(VerifyOptions {
            trusted_keys: vec![signer.public_key().clone()],
            expect_measurement: Some("abcd".into()),
            policy: None,
            freshness: None,
            ..VerifyOptions::default()
        });
        for (i, line) in rebuilt.iter().enumerate() {
            verifier.push_line(Origin { source: "loki", line: i as u64 + 1 }, line);
        }
        verifier.finish()
    };

    let mut rebuilt = rebuild(None);
    rebuilt.sort_by_key(|l| split_batch_line(l).unwrap().header.seq);
    for (line, original) in rebuilt.iter().zip(&lines) {
        assert_eq!(line.as_slice(), trimmed(original));
    }
    let report = verify(&rebuilt);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.records, 8);

    // A record lost in Loki still rebuilds; the verifier names it (record 1 of batch 3, sealed
    // 2 ms after the first).
    let report = verify(&rebuild(Some(SEALED_AT + 2_000_000 + 1)));
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings[0].kind, FindingKind::RecordTampered);
    assert_eq!((report.findings[0].seq, report.findings[0].record_index), (Some(3), Some(1)));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = split_batch_line(&bytes);
        let _ = rebuild_batch_line(&bytes, &[&bytes]);
        let _ = parse_query_response(&bytes);
        let _ = teelog_loki::classify_push_response(400, std::str::from_utf8(&bytes).ok(), &bytes);
    }

    #[test]
    fn mutated_batch_lines_never_panic(cut in 0usize..2000, byte in any::<u8>(), at in 0usize..2000) {
        let signer = signer();
        let line = batches(&signer, "app", &[2]).remove(0);
        let mut mutated = line.clone();
        let at = at % mutated.len();
        mutated[at] = byte;
        let _ = split_batch_line(&mutated);
        let _ = split_batch_line(&line[..cut % line.len()]);
    }

    #[test]
    fn json_shaped_responses_never_panic(text in r#"\{"status":"(success|error)","data":\{"resultType":"streams","result":\[\{"stream":\{\},"values":\[\[("[0-9-]{0,21}"|[0-9]+|null),"[a-z\\"]{0,5}"(,\{[a-z":{},]{0,20}\})?\]\]\}\]\}\}"#) {
        let _ = parse_query_response(text.as_bytes());
    }
}
