//! `teelog audit --loki URL` end to end: signed batches pushed into an in-memory Loki
//! (teelog-fake-loki), audited by the real binary, then tampered with in Loki's storage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

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
        self.sign_input(stream, &records(n), batch_size)
    }

    /// Signs the records of `input` (NDJSON) into batches of `batch_size`.
    fn sign_input(&self, stream: &str, input: &[u8], batch_size: u32) -> Vec<Vec<u8>> {
        self.sign_as(&self.identity, stream, input, batch_size)
    }

    /// Signs the records of `input` with the identity in `identity`, into a file of its own.
    fn sign_as(
        &self,
        identity: &std::path::Path,
        stream: &str,
        input: &[u8],
        batch_size: u32,
    ) -> Vec<Vec<u8>> {
        let name = identity.file_name().unwrap().to_string_lossy();
        let file = self.root.join(format!("{stream}-{name}.ndjson"));
        let out = teelog(
            &[
                "sign",
                "--identity",
                s(identity),
                "--stream",
                stream,
                "--out",
                s(&file),
                "--batch-size",
                &batch_size.to_string(),
            ],
            input,
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

/// The detail of an audit whose one finding is `malformed`, exit 1.
fn only_malformed((code, json, kinds): (i32, Value, Vec<String>)) -> String {
    assert_eq!((code, kinds), (1, vec!["malformed".to_string()]), "{json}");
    finding(&json, "malformed")["detail"].as_str().unwrap().to_string()
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
    assert_eq!((audit["record_entries"].as_u64(), audit["foreign_entries"].as_u64()), (Some(24), Some(0)));
    assert!(audit["loki_seconds"].as_f64().is_some() && audit["teelog_seconds"].as_f64().is_some());
    // One label values call per kind the audit reads, then per stream those four kinds, each on
    // one page.
    assert_eq!(audit["queries"].as_u64(), Some(4 + 8));

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
fn two_signers_on_one_stream_are_audited_as_instances() {
    let f = fixture();
    let other = f.root.join("other");
    keygen(&other, &[]);
    let mine = f.sign("app", 4, 2);
    f.push(&mine, &[]);
    f.push(&f.sign_as(&other, "app", &records(3), 2), &[]);
    let epoch = |lines: &[Vec<u8>]| {
        let header = &serde_json::from_slice::<Value>(&lines[0]).unwrap()["header"];
        header["epoch"].as_str().unwrap().to_string()
    };
    let pin = format!("app={}", epoch(&mine));
    let other_pubkey = other.join("public-key.pem");
    let with_other = |extra: &[&str]| {
        let mut args = vec!["--pubkey", s(&other_pubkey)];
        args.extend_from_slice(extra);
        f.audit_json(&args)
    };

    let (code, json, kinds) = with_other(&["--instances", "2"]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(json["instances"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(json["audit"]["streams"], serde_json::json!(["app"]));
    let (code, json, kinds) = with_other(&[]);
    assert_eq!((code, kinds), (1, vec!["unexpected_instance".to_string(); 2]), "{json}");
    // Only the first signer's instance pinned: the other is unexpected.
    let (code, json, kinds) = with_other(&["--expect-stream", &pin]);
    assert_eq!((code, kinds), (1, vec!["unexpected_instance".to_string()]), "{json}");
    let mine_listed = json["instances"].as_array().unwrap().iter().find(|i| i["pinned"] == true).unwrap();
    assert_eq!(mine_listed["instance"].as_str(), Some(epoch(&mine).as_str()), "{json}");
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
    let foreign = finding(&json, "malformed")["detail"].as_str().unwrap();
    assert!(foreign.starts_with("loki:app:record:") && foreign.contains("foreign entry"), "{json}");
    assert_eq!(json["audit"]["foreign_entries"].as_u64(), Some(2));
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
fn metadata_that_lies_decides_nothing() {
    let f = fixture();
    f.push(&f.sign("app", 9, 3), &[]);
    // Move one record of batch 2 to batch 3, one of batch 1 to a batch that does not exist and
    // another to an index far away; swap the batch entries' metadata.
    f.loki.edit(|streams| {
        let moved = entries_of(streams, "record").find(|e| seq_of(e) == "2").unwrap();
        moved.structured_metadata.insert("teelog_seq".into(), "3".into());
        let lost = entries_of(streams, "record").find(|e| seq_of(e) == "1").unwrap();
        lost.structured_metadata.insert("teelog_seq".into(), "99".into());
        let far = entries_of(streams, "record").find(|e| seq_of(e) == "1").unwrap();
        far.structured_metadata.insert("teelog_index".into(), "100000000000000".into());
        let mut batches: Vec<&mut Entry> = entries_of(streams, "batch").collect();
        let first = batches[0].structured_metadata.clone();
        batches[0].structured_metadata = batches[2].structured_metadata.clone();
        batches[2].structured_metadata = first;
    });
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!((json["batches"].as_u64(), json["records"].as_u64()), (Some(3), Some(9)), "{json}");
}

#[test]
fn metadata_shifted_by_a_delete_fails_no_untouched_batch() {
    let f = fixture();
    f.push(&f.sign("app", 12, 3), &[]);
    // Delete batch 2 (its batch entry and records) through a Loki that shifts metadata.
    let deleted = f.loki.delete_shifting_metadata(|_, e| seq_of(e) == "2");
    assert_eq!(deleted, 1 + 3);
    let shifted = f.loki.streams();
    let record_seqs: Vec<&str> = shifted
        .iter()
        .filter(|(l, _)| kind_of(l) == "record")
        .flat_map(|(_, e)| e.iter().map(seq_of))
        .collect();
    // The metadata really moved: the records of batch 3 now say batch 2.
    assert_eq!(record_seqs, ["1", "1", "1", "2", "2", "2", "3", "3", "3"]);
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!((code, kinds), (1, vec!["sequence_gap".to_string()]), "{json}");
    assert_eq!(finding(&json, "sequence_gap")["seq"].as_u64(), Some(2));
    assert_eq!((json["batches"].as_u64(), json["audit"]["batches_valid"].as_u64()), (Some(3), Some(3)));

    // Metadata scrambled at random among all entries of each kind changes nothing either.
    f.loki.edit(|streams| {
        for (_, entries) in streams.iter_mut() {
            let n = entries.len();
            for i in 0..n {
                let j = (i * 7 + 3) % n;
                let taken = std::mem::take(&mut entries[i].structured_metadata);
                entries[i].structured_metadata =
                    std::mem::replace(&mut entries[j].structured_metadata, taken);
            }
        }
    });
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!((code, kinds), (1, vec!["sequence_gap".to_string()]), "{json}");
}

/// The labels of one kind of entries of stream `app`, as the shipper pushes them.
fn labels_of(kind: &str) -> Labels {
    [("job", "teelog"), ("teelog_kind", kind), ("teelog_stream", "app")]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn details(json: &Value) -> Vec<&str> {
    json["findings"].as_array().unwrap().iter().filter_map(|f| f["detail"].as_str()).collect()
}

/// What an attacker who can push to Loki, but not sign, can add.
#[test]
fn planted_entries_are_foreign_and_the_genuine_batches_verify() {
    let f = fixture();
    f.push(&f.sign("app", 9, 3), &[]);
    f.push(&f.sign("db", 2, 2), &[]);
    let stored = f.loki.streams();
    let (records, batches) = (&stored[&labels_of("record")], &stored[&labels_of("batch")]);
    let db_batch =
        stored.iter().find(|(l, _)| l["teelog_stream"] == "db" && kind_of(l) == "batch").unwrap().1[0]
            .clone();
    let planted = |like: &Entry, line: &str| Entry { line: line.into(), ..like.clone() };
    f.loki.edit(|streams| {
        let mine = streams.get_mut(&labels_of("record")).unwrap();
        // Entries at record times, with those records' metadata, stored before them: one twin,
        // and a crowd larger than the audit holds per record time.
        mine.insert(4, planted(&records[4], r#"{"message":"planted twin"}"#));
        for i in 0..10 {
            mine.insert(7, planted(&records[7], &format!(r#"{{"message":"crowd {i}"}}"#)));
        }
        // A record at a time no batch has one, claiming to be the last record of batch 3.
        let mut forged = planted(&records[8], r#"{"message":"forged"}"#);
        forged.timestamp += 5_000;
        mine.push(forged);
        // A copy of batch 1's entry stored elsewhere, and one of stream db's under app.
        let mut copy = batches[0].clone();
        copy.timestamp += 500;
        streams.get_mut(&labels_of("batch")).unwrap().extend([copy, db_batch]);
        // An entry under a label set of the attacker's own, which the audit's selector matches.
        let mut evil = labels_of("record");
        evil.insert("evil".into(), "1".into());
        streams.insert(evil, vec![planted(&records[0], r#"{"message":"evil"}"#)]);
    });
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!(code, 1, "{json}");
    assert!(kinds.iter().all(|k| k == "malformed"), "{json}");
    let foreign = 1 + 10 + 1 + 2 + 1;
    assert_eq!(json["audit"]["foreign_entries"].as_u64(), Some(foreign), "{json}");
    let listed: Vec<&str> = details(&json).into_iter().filter(|d| d.contains("foreign entry")).collect();
    assert_eq!(listed.len() as u64, foreign, "{json}");
    assert!(listed.iter().all(|d| d.starts_with("loki:app:record:") || d.starts_with("loki:app:batch:")));
    assert_eq!(listed.iter().filter(|d| d.starts_with("loki:app:batch:")).count(), 2, "{json}");
    // Every genuine batch verifies, with every record; the copies are not verified again.
    assert_eq!(
        (json["batches"].as_u64(), json["records"].as_u64(), json["duplicates"].as_u64()),
        (Some(4), Some(11), Some(0)),
        "{json}"
    );
    let audit = &json["audit"];
    assert_eq!((audit["batches_valid"].as_u64(), audit["record_entries"].as_u64()), (Some(4), Some(11)));
    let human = String::from_utf8_lossy(&f.audit(&[]).stdout).to_string();
    assert!(
        human.contains("4 of 4 batches valid")
            && human.contains("AUDIT 15 entries belong to no signed batch"),
        "{human}"
    );
}

/// Someone who can get a record logged can make a second record with the same 8-byte hint
/// (about 2^32 hashes; docs/vectors/hint-collision.json) and plant it at the first one's time.
#[test]
fn a_planted_hint_collision_does_not_fail_the_genuine_batch() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/hint-collision.json");
    let vector: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let colliding: Vec<&str> =
        vector["records"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    let f = fixture();
    let input = format!("{{\"message\":\"before\"}}\n{}\n{{\"message\":\"after\"}}\n", colliding[0]);
    f.push(&f.sign_input("app", input.as_bytes(), 3), &[]);
    let record = f.loki.streams()[&labels_of("record")][1].clone();
    assert_eq!(record.line, colliding[0]);
    f.loki.edit(|streams| {
        let mine = streams.get_mut(&labels_of("record")).unwrap();
        mine.insert(1, Entry { line: colliding[1].into(), ..record.clone() });
    });
    let audited = f.audit_json(&[]);
    let json = audited.1.clone();
    let detail = only_malformed(audited);
    assert!(detail.starts_with(&format!("loki:app:record:{}: foreign entry", record.timestamp)), "{json}");
    assert_eq!((json["batches"].as_u64(), json["records"].as_u64()), (Some(1), Some(3)), "{json}");
    assert_eq!(json["audit"]["batches_valid"].as_u64(), Some(1));
}

/// Loki hands out at most 5000 entries per query and has no offset: entries of one timestamp
/// past that cannot be read, and the audit says so instead of failing or looping.
#[test]
fn a_timestamp_too_crowded_to_read_is_reported_and_the_rest_read() {
    let f = fixture();
    f.push(&f.sign("app", 3, 3), &[]);
    let record = f.loki.streams()[&labels_of("record")][1].clone();
    f.loki.edit(|streams| {
        let mine = streams.get_mut(&labels_of("record")).unwrap();
        mine.extend((0..5_000).map(|i| Entry { line: format!("planted {i}"), ..record.clone() }));
    });
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!(code, 1, "{json}");
    assert!(kinds.iter().all(|k| k == "malformed"), "{json}");
    assert_eq!((json["batches"].as_u64(), json["records"].as_u64()), (Some(1), Some(3)), "{json}");
    let unread = format!("loki:app:record:{}: at least 5000 entries share this timestamp", record.timestamp);
    assert!(details(&json).iter().any(|d| d.starts_with(&unread)), "{json}");
    // The record and 4999 planted entries were read; the planted ones are listed up to 20.
    assert_eq!(json["audit"]["foreign_entries"].as_u64(), Some(4_999), "{json}");
    assert!(details(&json).iter().any(|d| d.contains("4979 more foreign entries")), "{json}");
    // Below Loki's limit a page size can be raised, and not raising it is an error.
    let out = f.audit(&["--page-size", "4999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("share timestamp"));
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
    assert_eq!(json["audit"]["foreign_entries"].as_u64(), Some(0));
    let gap = &json["audit"]["gaps"][0];
    assert_eq!((gap["first_seq"].as_u64(), gap["after"].is_null()), (Some(1), true), "{json}");

    // The batch before the range claims only its own records.
    f.loki.edit(|streams| {
        let mine = streams.get_mut(&labels_of("record")).unwrap();
        mine.push(Entry { line: r#"{"message":"planted"}"#.into(), ..mine[2].clone() });
    });
    let (code, json, kinds) = report(&teelog(
        &["audit", "--loki", f.loki.url(), "--from", &from, "--pubkey", s(&pubkey), "--json"],
        b"",
    ));
    assert_eq!((code, kinds), (1, vec!["malformed".to_string(), "sequence_gap".to_string()]), "{json}");
    assert_eq!(json["audit"]["foreign_entries"].as_u64(), Some(1));
    assert!(
        details(&json)[0].starts_with(&format!("loki:app:record:{}: foreign entry", sealed + 2)),
        "{json}"
    );
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
    // page starts; past the first page the rest of the range is read in parts at once, split
    // where no entry need be (so more queries than pages of entries). Every query is counted.
    let pages = f.loki.requests().iter().filter(|r| r.target.contains("limit=3&")).count();
    assert_eq!(Some(pages as u64), json["audit"]["queries"].as_u64());
    let least = 12 + 6 + 1 + 1;
    assert!(pages >= least, "{pages} queries");

    // A page that one timestamp fills cannot be paged past: an error, not a silent cut.
    let out = f.audit(&["--page-size", "2", "--stream", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("share timestamp") && stderr.contains("teelog_kind="), "{stderr}");
}

/// Records that pages do not hold are read in parts at once, cut between batches: against a Loki
/// that takes 20 ms per query the audit has several queries out at a time, where
/// `--concurrent-queries 1` never has more than one, and both read and judge the same.
#[test]
fn a_long_range_is_read_with_several_queries_at_once_and_judged_the_same() {
    let f = fixture();
    f.push(&f.sign("app", 2000, 50), &[]);
    f.loki.set_query_latency(std::time::Duration::from_millis(20));
    let args = ["--page-size", "100", "--stream", "app"];
    let (code, one_at_a_time, _) = f.audit_json(&[&args[..], &["--concurrent-queries", "1"]].concat());
    assert_eq!(code, 0, "{one_at_a_time}");
    assert_eq!(f.loki.most_queries_at_once(), 1);
    let (code, at_once, _) = f.audit_json(&args);
    assert_eq!(code, 0, "{at_once}");
    assert!(f.loki.most_queries_at_once() > 1, "{} at most", f.loki.most_queries_at_once());
    for key in ["batches", "records", "duplicates", "findings", "trust"] {
        assert_eq!(one_at_a_time[key], at_once[key], "{key}");
    }
    assert_eq!((at_once["records"].as_u64(), at_once["batches"].as_u64()), (Some(2000), Some(40)));
    for key in ["batch_entries", "record_entries", "foreign_entries"] {
        assert_eq!(one_at_a_time["audit"][key], at_once["audit"][key], "{key}");
    }
}

#[test]
fn loki_errors_are_retried_and_then_reported_with_the_query() {
    let f = fixture();
    f.push(&f.sign("app", 3, 3), &[]);
    f.loki.fail_next(1, 500, None);
    f.loki.fail_next(1, 429, Some("0"));
    let (code, json, _) = f.audit_json(&[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["audit"]["queries"].as_u64(), Some(4 + 2 + 4));

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
fn nothing_to_audit_is_not_ok() {
    let f = fixture();
    let detail = only_malformed(f.audit_json(&[]));
    assert!(detail.contains("no teelog streams under {job=\"teelog\"}"), "{detail}");
    let out = f.audit(&["--to", "2019-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be before --to"));

    // A stream Loki does not have is said so, even next to one that verifies.
    f.push(&f.sign("app", 3, 3), &[]);
    let out = f.audit(&["--stream", "app", "--stream", "nosuch"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL malformed")
            && text.contains("teelog stream \"nosuch\": Loki has no entries of it at all"),
        "{text}"
    );
    assert!(text.contains("1 of 1 batches valid"), "{text}");
    // So is one with records but no batch entry.
    f.loki.edit(|streams| streams.retain(|labels, _| kind_of(labels) != "batch"));
    let (code, json, _) = f.audit_json(&["--stream", "app"]);
    assert_eq!(code, 1, "{json}");
    let details: Vec<&str> =
        json["findings"].as_array().unwrap().iter().filter_map(|f| f["detail"].as_str()).collect();
    assert!(details.iter().any(|d| d.contains("3 record entries of it, but no batch entry")), "{json}");
    assert_eq!(json["audit"]["foreign_entries"].as_u64(), Some(3), "{json}");
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

#[test]
fn records_longer_than_a_loki_line_are_stored_in_parts_and_audit_whole() {
    let f = fixture();
    // Two-byte characters, so that parts are cut at character boundaries.
    let long = format!("{{\"message\":\"{}\"}}\n", "é".repeat(200_000));
    let input = format!("{{\"message\":\"short\"}}\n{long}{{\"message\":\"after\"}}\n{long}");
    let lines = f.sign_input("app", input.as_bytes(), 3);
    f.push(&lines, &[]);
    let streams = f.loki.streams();
    let kind_of = |labels: &std::collections::BTreeMap<String, String>| labels["teelog_kind"].clone();
    let parts: Vec<_> =
        streams.iter().filter(|(l, _)| kind_of(l) == "record_part").flat_map(|(_, e)| e).collect();
    let records: usize = streams.iter().filter(|(l, _)| kind_of(l) == "record").map(|(_, e)| e.len()).sum();
    assert_eq!((parts.len(), records), (4, 2), "two long records of two parts each, two short ones");
    assert!(parts.iter().all(|p| p.line.len() <= teelog_loki::layout::DEFAULT_MAX_LINE_BYTES));

    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!((json["batches"].as_u64(), json["records"].as_u64()), (Some(2), Some(4)), "{json}");

    // A part planted beside the genuine ones is foreign and changes nothing else; a genuine part
    // altered is the record tampered.
    let first = parts[0].clone();
    f.loki.edit(|streams| {
        let (_, entries) = streams.iter_mut().find(|(l, _)| l["teelog_kind"] == "record_part").unwrap();
        let planted = teelog_loki::layout::record_parts(
            &format!("{{\"message\":\"{}\"}}", "x".repeat(300_000)),
            262_144,
        )
        .unwrap();
        entries.push(teelog_fake_loki::Entry { line: planted[0].clone(), ..first.clone() });
    });
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!((code, kinds), (1, vec!["malformed".to_string()]), "{json}");
    assert_eq!(json["audit"]["batches_valid"].as_u64(), Some(2), "{json}");
    f.loki.edit(|streams| {
        let (_, entries) = streams.iter_mut().find(|(l, _)| l["teelog_kind"] == "record_part").unwrap();
        let genuine = entries.iter_mut().find(|e| e.line == first.line).unwrap();
        genuine.line = genuine.line.replacen('é', "e", 1);
    });
    let (code, json, kinds) = f.audit_json(&[]);
    assert_eq!(code, 1, "{json}");
    assert!(kinds.contains(&"record_tampered".to_string()), "{json}");
    assert_eq!(json["audit"]["batches_valid"].as_u64(), Some(1), "{json}");
}
