//! `teelog audit --loki URL` end to end: signed batches pushed into an in-memory Loki
//! (teelog-fake-loki), audited by the real binary, then tampered with in Loki's storage.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{keygen, report, s, teelog};
use serde_json::Value;
use teelog_fake_loki::{Entry, FakeLoki, Labels, Streams};
use teelog_loki::{encode_push, ClientOptions, Layout, LayoutOptions, LokiClient, PushBuilder, PushOutcome};

/// A day ago: one query window (Loki's longest query is 30 days), and before every batch a
/// test signs.
fn from() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    teelog_core::timestamp::format_rfc3339(i64::try_from(now.as_nanos()).unwrap() - 86_400_000_000_000)
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    identity: PathBuf,
    loki: FakeLoki,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let identity = root.join("id");
    keygen(&identity, &[]);
    Fixture { _dir: dir, root, identity, loki: FakeLoki::start().unwrap() }
}

fn records(n: u32) -> Vec<u8> {
    (0..n).map(|i| format!("{{\"message\":\"record {i}\"}}\n")).collect::<String>().into_bytes()
}

impl Fixture {
    /// Signs `n` records of `stream` into batches of `batch_size` and returns the batch lines.
    fn sign(&self, stream: &str, n: u32, batch_size: u32) -> Vec<Vec<u8>> {
        let file = self.root.join(format!("{stream}.ndjson"));
        let out = teelog(
            &[
                "sign",
                "--identity",
                s(&self.identity),
                "--stream",
                stream,
                "--out",
                s(&file),
                "--batch-size",
                &batch_size.to_string(),
            ],
            &records(n),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(&file)
            .unwrap()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Pushes batch lines the way the shipper does, with `extra` labels on every stream.
    fn push(&self, lines: &[Vec<u8>], extra: &[(&str, &str)]) {
        let layout = Layout::new(LayoutOptions::default()).unwrap();
        let mut builder = PushBuilder::new(&layout);
        for line in lines {
            builder.add_batch(line, extra).unwrap();
        }
        let body = encode_push(&builder.finish()).unwrap();
        let client = LokiClient::new(self.loki.url(), ClientOptions::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert_eq!(runtime.block_on(client.push(body)).unwrap(), PushOutcome::Accepted);
    }

    fn audit(&self, extra: &[&str]) -> Output {
        let pubkey = self.identity.join("public-key.pem");
        let from = from();
        let mut args = vec!["audit", "--loki", self.loki.url(), "--from", &from, "--pubkey", s(&pubkey)];
        args.extend_from_slice(extra);
        teelog(&args, b"")
    }

    fn audit_json(&self, extra: &[&str]) -> (i32, Value, Vec<String>) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        report(&self.audit(&args))
    }
}

fn kind_of(labels: &Labels) -> &str {
    labels.get("teelog_kind").map_or("", String::as_str)
}

fn seq_of(entry: &Entry) -> &str {
    entry.structured_metadata.get("teelog_seq").map_or("", String::as_str)
}

/// The entries of one kind of every stream, to change in place.
fn entries_of<'a>(streams: &'a mut Streams, kind: &'a str) -> impl Iterator<Item = &'a mut Entry> + 'a {
    streams.iter_mut().filter(move |(labels, _)| kind_of(labels) == kind).flat_map(|(_, e)| e.iter_mut())
}

fn remove(streams: &mut Streams, kind: &str, seq: &str) {
    for (labels, entries) in streams.iter_mut() {
        if kind_of(labels) == kind {
            entries.retain(|e| seq_of(e) != seq);
        }
    }
}

fn finding<'a>(json: &'a Value, kind: &str) -> &'a Value {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {json}"))
}

#[test]
fn untouched_streams_are_found_and_verify_with_counts() {
    let f = fixture();
    f.push(&f.sign("app", 20, 3), &[]);
    let db = f.sign("db", 4, 2);
    f.push(&db, &[]);
    // A second push of the same batches (a spool replay) is folded by Loki.
    f.push(&db, &[]);
    let stored: usize =
        f.loki.streams().iter().filter(|(l, _)| l["teelog_stream"] == "db").map(|(_, e)| e.len()).sum();
    assert_eq!(stored, 4 + 2);

    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!((json["batches"].as_u64(), json["records"].as_u64()), (Some(9), Some(24)), "{json}");
    let audit = &json["audit"];
    assert_eq!(audit["streams"], serde_json::json!(["app", "db"]));
    assert_eq!((audit["batch_entries"].as_u64(), audit["batches_valid"].as_u64()), (Some(9), Some(9)));
    assert_eq!((audit["record_entries"].as_u64(), audit["orphan_records"].as_u64()), (Some(24), Some(0)));
    assert!(audit["loki_seconds"].as_f64().is_some() && audit["teelog_seconds"].as_f64().is_some());
    // One label values call, then per stream the three kinds and the batches just before the
    // range, each on one page.
    assert_eq!(audit["queries"].as_u64(), Some(9));

    let before = f.loki.requests().len();
    let only_db = f.audit(&["--stream", "db", "--tenant", "bank-eu"]);
    let text = String::from_utf8_lossy(&only_db.stdout);
    assert!(only_db.status.success(), "{text}");
    assert!(text.contains("OK   2 batches, 4 records") && text.contains("2 of 2 batches valid"), "{text}");
    assert!(String::from_utf8_lossy(&only_db.stderr).contains("s waiting on Loki"));
    let tenants: Vec<_> = f.loki.requests().into_iter().skip(before).map(|r| r.tenant).collect();
    assert_eq!(tenants, vec![Some("bank-eu".to_string()); 4]);
}

#[test]
fn an_altered_record_is_record_tampered_and_named() {
    let f = fixture();
    f.push(&f.sign("app", 9, 3), &[]);
    f.loki.edit(|streams| {
        let record = entries_of(streams, "record")
            .find(|e| seq_of(e) == "2" && e.structured_metadata["teelog_index"] == "1")
            .unwrap();
        record.line = record.line.replace("record 4", "record 40");
    });
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!((code, kinds), (1, vec!["record_tampered".to_string()]), "{json}");
    let tampered = finding(&json, "record_tampered");
    assert_eq!((tampered["seq"].as_u64(), tampered["record_index"].as_u64()), (Some(2), Some(1)), "{json}");
    assert!(tampered["detail"].as_str().unwrap().starts_with("loki:app:batch:"), "{json}");
    assert_eq!(json["audit"]["batches_valid"].as_u64(), Some(2));
    let human = String::from_utf8_lossy(&f.audit(&[]).stdout).to_string();
    assert!(
        human.contains("FAIL record_tampered stream=app") && human.contains("2 of 3 batches valid"),
        "{human}"
    );
}

#[test]
fn a_deleted_batch_entry_is_a_gap_placed_in_time() {
    let f = fixture();
    f.push(&f.sign("app", 10, 2), &[]);
    f.loki.edit(|streams| remove(streams, "batch", "3"));
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!(code, 1, "{json}");
    assert!(kinds.contains(&"sequence_gap".to_string()), "{json}");
    assert_eq!(finding(&json, "sequence_gap")["seq"].as_u64(), Some(3));
    // Its records are still there, belonging to no batch.
    assert!(finding(&json, "malformed")["detail"].as_str().unwrap().contains("no batch entry"), "{json}");
    assert_eq!(json["audit"]["orphan_records"].as_u64(), Some(2));
    let gap = &json["audit"]["gaps"][0];
    assert_eq!((gap["first_seq"].as_u64(), gap["last_seq"].as_u64()), (Some(3), Some(3)), "{json}");
    assert!(gap["after"].is_string() && gap["before"].is_string(), "{json}");
    let human = String::from_utf8_lossy(&f.audit(&[]).stdout).to_string();
    assert!(
        human.contains("GAP   stream=app") && human.contains("batch 3 missing, sealed between"),
        "{human}"
    );
}

#[test]
fn deleted_records_of_a_batch_are_record_tampered() {
    let f = fixture();
    f.push(&f.sign("app", 9, 3), &[]);
    f.loki.edit(|streams| remove(streams, "record", "2"));
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!((code, kinds), (1, vec!["record_tampered".to_string()]), "{json}");
    assert_eq!(finding(&json, "record_tampered")["seq"].as_u64(), Some(2));
}

#[test]
fn records_whose_metadata_lies_do_not_verify() {
    let f = fixture();
    f.push(&f.sign("app", 9, 3), &[]);
    // Move one record of batch 2 to batch 3, and one of batch 1 to a batch that does not exist.
    f.loki.edit(|streams| {
        let moved = entries_of(streams, "record").find(|e| seq_of(e) == "2").unwrap();
        moved.structured_metadata.insert("teelog_seq".into(), "3".into());
        let lost = entries_of(streams, "record").find(|e| seq_of(e) == "1").unwrap();
        lost.structured_metadata.insert("teelog_seq".into(), "99".into());
        // A forged record whose index puts its batch long before the range.
        let mut forged = lost.clone();
        forged.line = r#"{"message":"forged"}"#.into();
        forged.structured_metadata.insert("teelog_seq".into(), "7".into());
        forged.structured_metadata.insert("teelog_index".into(), "100000000000000".into());
        streams.iter_mut().find(|(l, _)| kind_of(l) == "record").unwrap().1.push(forged);
    });
    let (code, json, _) = f.audit_json(&[]);
    assert_eq!(code, 1, "{json}");
    let findings = json["findings"].as_array().unwrap();
    let tampered: Vec<u64> = findings
        .iter()
        .filter(|f| f["kind"] == "record_tampered")
        .filter_map(|f| f["seq"].as_u64())
        .collect();
    assert_eq!(tampered, [1, 2, 3], "{json}");
    let malformed: Vec<&str> =
        findings.iter().filter(|f| f["kind"] == "malformed").map(|f| f["detail"].as_str().unwrap()).collect();
    assert_eq!(malformed.len(), 2, "{json}");
    assert!(malformed.iter().any(|d| d.contains("name batch 99 ")), "{json}");
    assert!(malformed.iter().any(|d| d.contains("name batch 7 ")), "{json}");
    assert_eq!(json["audit"]["batches_valid"].as_u64(), Some(0));
}

#[test]
fn a_range_starting_inside_a_batch_leaves_that_batch_out_without_orphans() {
    let f = fixture();
    f.push(&f.sign("app", 9, 3), &[]);
    let sealed = f
        .loki
        .streams()
        .iter()
        .filter(|(l, _)| kind_of(l) == "batch")
        .flat_map(|(_, e)| e.iter().filter(|e| seq_of(e) == "1").map(|e| e.timestamp))
        .next()
        .unwrap();
    // Records 1 and 2 of batch 1 are stored after --from, their batch entry before it.
    let from = teelog_core::timestamp::format_rfc3339(sealed + 1);
    let pubkey = f.identity.join("public-key.pem");
    let (code, json, kinds) = report(&teelog(
        &["audit", "--loki", f.loki.url(), "--from", &from, "--pubkey", s(&pubkey), "--json"],
        b"",
    ));
    assert_eq!((code, kinds), (1, vec!["sequence_gap".to_string()]), "{json}");
    assert_eq!(json["audit"]["orphan_records"].as_u64(), Some(0));
    let gap = &json["audit"]["gaps"][0];
    assert_eq!((gap["first_seq"].as_u64(), gap["after"].is_null()), (Some(1), true), "{json}");
}

#[test]
fn pages_of_equal_timestamps_across_label_sets_read_everything_once() {
    let f = fixture();
    let lines = f.sign("app", 12, 2);
    // A gateway pushes the same batches under a label of its own: every entry twice, at one
    // timestamp, in two Loki streams.
    f.push(&lines, &[("signature_valid", "true")]);
    f.push(&lines, &[("signature_valid", "unknown")]);
    let (code, json, kinds) = f.audit_json(&["--page-size", "3", "--stream", "app"]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(
        (json["batches"].as_u64(), json["records"].as_u64(), json["duplicates"].as_u64()),
        (Some(6), Some(12), Some(0))
    );
    // A page of 3 holds both copies of one timestamp and the first of the next, where the next
    // page starts: one page per record and per batch, and one each finding no attestation and
    // no batch just before the range.
    assert_eq!(json["audit"]["queries"].as_u64(), Some(12 + 6 + 2), "{json}");
    let pages = f.loki.requests().iter().filter(|r| r.target.contains("limit=3&")).count();
    assert_eq!(Some(pages as u64), json["audit"]["queries"].as_u64());

    // A page that one timestamp fills cannot be paged past: an error, not a silent cut.
    let out = f.audit(&["--page-size", "2", "--stream", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("share timestamp") && stderr.contains("teelog_kind="), "{stderr}");
}

#[test]
fn loki_errors_are_retried_and_then_reported_with_the_query() {
    let f = fixture();
    f.push(&f.sign("app", 3, 3), &[]);
    f.loki.fail_next(1, 500, None);
    f.loki.fail_next(1, 429, Some("0"));
    let (code, json, _) = f.audit_json(&[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["audit"]["queries"].as_u64(), Some(1 + 2 + 4));

    f.loki.fail_next(5, 503, Some("0"));
    let out = f.audit(&["--stream", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Loki at {}: query {{job=\"teelog\", teelog_kind=\"attestation\"",
            f.loki.url()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP 503") && stderr.matches("trying again").count() == 4, "{stderr}");

    // Refusals are not retried.
    f.loki.fail_next(1, 400, None);
    let before = f.loki.requests().len();
    let out = f.audit(&["--stream", "app"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 400"));
    assert_eq!(f.loki.requests().len(), before + 1);
}

#[test]
fn an_empty_range_or_loki_is_an_error() {
    let f = fixture();
    let out = f.audit(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no teelog streams under {job=\"teelog\"}"), "{stderr}");
    let out = f.audit(&["--to", "2019-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be before --to"));
}

/// The dev-attested path through the real shipper: `teelog ship --sink-loki` pushes the
/// attestation document with the batches.
#[test]
fn shipped_dev_attested_batches_verify_and_need_their_document() {
    let f = fixture();
    let id = f.root.join("dev-id");
    keygen(&id, &["--dev"]);
    let spool = f.root.join("spool");
    let out = teelog(
        &[
            "ship",
            "--identity",
            s(&id),
            "--spool",
            s(&spool),
            "--stdin",
            "--heartbeat",
            "off",
            "--sink-loki",
            f.loki.url(),
        ],
        &records(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = id.join("dev-root.pem");
    let from = from();
    let audit = || {
        report(&teelog(
            &["audit", "--loki", f.loki.url(), "--from", &from, "--json", "--trust-root", s(&root)],
            b"",
        ))
    };
    let (code, json, kinds) = audit();
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(json["records"].as_u64(), Some(30), "{json}");
    assert!(json["batches"].as_u64().unwrap() >= 1);

    f.loki.edit(|streams| streams.retain(|labels, _| kind_of(labels) != "attestation"));
    let (code, json, kinds) = audit();
    assert_eq!(code, 1, "{json}");
    assert!(!kinds.is_empty() && kinds.iter().all(|k| k == "untrusted_attestation"), "{json}");
    assert_eq!(json["audit"]["batches_valid"].as_u64(), Some(0));
}
