//! The `teelog` binary end to end: exit codes, JSON output, error messages, stream continuation
//! and crash recovery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{keygen, s, teelog};

use base64::Engine;
use serde_json::Value;
use teelog_core::{SigAlg, SoftwareKey};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn records(range: std::ops::Range<u32>) -> Vec<u8> {
    range
        .map(|i| format!(r#"{{"ts":"2026-12-02T09:00:00.{i:03}Z","level":"info","message":"record {i}","attributes":{{"i":{i}}}}}"#) + "\n")
        .collect::<String>()
        .into_bytes()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    identity: PathBuf,
    pubkey: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let identity = root.join("id");
    keygen(&identity, &["--measurement", "ABCD01"]);
    let pubkey = identity.join("public-key.pem");
    Fixture { _dir: dir, root, identity, pubkey }
}

fn verify_json(f: &Fixture, inputs: &[&str]) -> (i32, Value) {
    let mut args = vec!["verify", "--pubkey", s(&f.pubkey), "--json"];
    args.extend_from_slice(inputs);
    let out = teelog(&args, b"");
    let json: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON: {}", stderr(&out)));
    (out.status.code().unwrap(), json)
}

fn kinds(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect()
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let mode = std::fs::metadata(f.identity.join("private-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(&f.pubkey).unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
    let again = teelog(&["keygen", "--out", s(&f.identity)], b"");
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already holds an identity"), "{}", stderr(&again));
}

#[test]
fn sign_verify_and_continue_the_stream() {
    let f = fixture();
    let store = f.root.join("store");
    let sign = |input: &[u8]| {
        teelog(&["sign", "--identity", s(&f.identity), "--store", s(&store), "--batch-size", "7"], input)
    };
    assert!(sign(&records(0..20)).status.success());
    assert!(sign(&records(20..30)).status.success());
    let (code, report) = verify_json(&f, &["--store", s(&store), "--expect-measurement", "abcd01"]);
    assert_eq!(code, 0, "{report}");
    let epoch = report["trust"][0]["epoch"].clone();
    let key_id = report["trust"][0]["key_id"].clone();
    assert_eq!(
        report,
        serde_json::json!({"ok": true, "batches": 5, "records": 30, "duplicates": 0, "findings": [],
            "torn_writes": 0, "unreferenced_documents": [],
            "trust": [{"stream": "default", "epoch": epoch, "basis": "bare_public_key", "platform": "software",
                       "key_id": key_id, "batches": 5}],
            "instances": [{"stream": "default", "instance": epoch, "genesis": true, "pinned": false,
                           "epochs": [epoch]}]})
    );

    // Both runs wrote one epoch, seq 1..5, each batch linked to the one before.
    let text: String =
        teelog_store::segments(&store).unwrap().iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    let headers: Vec<Value> =
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["header"].clone()).collect();
    assert_eq!(headers.iter().map(|h| h["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(headers.iter().all(|h| h["epoch"] == headers[0]["epoch"]));

    let (code, report) = verify_json(&f, &["--store", s(&store), "--expect-measurement", "ff"]);
    assert_eq!(code, 1);
    assert_eq!(kinds(&report), ["unexpected_measurement"; 5]);
}

#[test]
fn stdout_output_verifies_from_stdin() {
    let f = fixture();
    let out = teelog(&["sign", "--identity", s(&f.identity)], &records(0..3));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let verified = teelog(&["verify", "--pubkey", s(&f.pubkey), "-"], &out.stdout);
    assert_eq!(verified.status.code(), Some(0), "{}", String::from_utf8_lossy(&verified.stdout));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("OK   1 batches, 3 records"));
}

/// The records of every batch line in `file`, in order.
fn signed_records(file: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|l| l["records"].as_array().cloned())
        .flatten()
        .collect()
}

#[test]
fn bad_input_leaves_a_signed_notice_and_the_stream_goes_on() {
    let f = fixture();
    let file = f.root.join("batches.ndjson");
    let bad = b"{\"message\": 42}";
    let mut input = records(0..2);
    input.extend_from_slice(bad);
    input.push(b'\n');
    input.extend_from_slice(&records(2..4));
    let out = teelog(&["sign", "--identity", s(&f.identity), "--out", s(&file)], &input);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("stdin:3: field \"message\" must be a string; a signed notice stands in its place"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("1 input records were refused"), "{}", stderr(&out));
    let (code, report) = verify_json(&f, &[s(&file)]);
    assert_eq!((code, report["records"].as_u64()), (0, Some(5)), "{report}");
    let records = signed_records(&file);
    assert_eq!(records[3]["message"], "record 2");
    let notice = &records[2];
    assert_eq!(notice["teelog_notice"], "record_refused", "{notice}");
    assert_eq!(notice["refused_source"], "stdin:3");
    assert_eq!(notice["refused_bytes"], bad.len());
    assert_eq!(notice["refused_sha256"], hex::encode(teelog_core::merkle::sha256(bad)));
    assert_eq!(notice["refused_reason"], "field \"message\" must be a string");

    let long = format!("{{\"message\":\"{}\"}}", "x".repeat(2000));
    for (bad, message) in [
        (b"not json".to_vec(), "stdin:1: a record must be a JSON object"),
        (b"{\"a\":".to_vec(), "stdin:1: not valid JSON: unexpected end of input at byte 5"),
        (long.clone().into_bytes(), "stdin:1: line longer than 1000 bytes (--max-line-bytes)"),
        (b"{\"m\":\"\xff\"}".to_vec(), "stdin:1: not valid JSON: invalid UTF-8 at byte 6"),
    ] {
        let before = signed_records(&file).len();
        let mut line = bad.clone();
        line.push(b'\n');
        let out = teelog(
            &["sign", "--identity", s(&f.identity), "--out", s(&file), "--max-line-bytes", "1000"],
            &line,
        );
        assert_eq!(out.status.code(), Some(1), "{message}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{message}: {}", stderr(&out));
        let records = signed_records(&file);
        assert_eq!(records.len(), before + 1);
        let notice = &records[before];
        assert_eq!(notice["teelog_notice"], "record_refused", "{notice}");
        assert_eq!(notice["refused_bytes"], bad.len(), "{message}");
        assert_eq!(notice["refused_sha256"], hex::encode(teelog_core::merkle::sha256(&bad)), "{message}");
    }
    let (code, report) = verify_json(&f, &[s(&file)]);
    assert_eq!((code, report["batches"].as_u64()), (0, Some(5)), "{report}");

    // Integers beyond 2^53 are no reason to refuse: they are kept as strings.
    let out = teelog(
        &["sign", "--identity", s(&f.identity), "--out", s(&file)],
        b"{\"n\":12345678901234567890,\"m\":[-9007199254740993,9007199254740992]}\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let last = signed_records(&file).pop().unwrap();
    assert_eq!(
        (&last["n"], &last["m"]),
        (
            &Value::from("12345678901234567890"),
            &serde_json::json!(["-9007199254740993", 9007199254740992_u64])
        )
    );
}

/// `sign` reads and canonicalises on one thread and signs on another, a block of lines at a
/// time: across the blocks' edges every record keeps its place and its canonical bytes, and each
/// refused or over-long line is named by its own number, with its notice where it stood.
#[test]
fn records_keep_their_order_and_lines_their_numbers_across_the_reading_thread() {
    use teelog_core::canon::{canonicalize, Canonicalizer};
    use teelog_core::record::canonicalize_record;
    let f = fixture();
    let file = f.root.join("batches.ndjson");
    let good = records(0..3000);
    let mut lines: Vec<Vec<u8>> =
        good.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    // Line numbers (1-based) of what is not a record: the first line, both sides of a block's
    // edge (blocks of 256 lines), a blank line, a line too long to read (which ends a block) and
    // one in the last block.
    let bad: [(usize, &[u8], &str); 6] = [
        (1, b"not json", "a record must be a JSON object"),
        (1024, b"{\"message\":1}", "field \"message\" must be a string"),
        (1025, b"{\"a\":1,\"a\":2}", "duplicate member name \"a\""),
        (1500, b"   ", ""),
        (2049, &[b'x'; 5000], "line longer than 4096 bytes"),
        (3003, b"{\"ts\":true}", "field \"ts\" must be"),
    ];
    for (n, line, _) in bad {
        lines.insert(n - 1, line.to_vec());
    }
    let input: Vec<u8> = lines.iter().flat_map(|l| l.iter().chain(b"\n")).copied().collect();
    let out = teelog(
        &[
            "sign",
            "--identity",
            s(&f.identity),
            "--out",
            s(&file),
            "--batch-size",
            "1000",
            "--max-line-bytes",
            "4096",
        ],
        &input,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for (n, _, why) in bad.iter().filter(|b| !b.2.is_empty()) {
        assert!(stderr(&out).contains(&format!("stdin:{n}: {why}")), "line {n}: {}", stderr(&out));
    }
    assert!(stderr(&out).contains("5 input records were refused"), "{}", stderr(&out));
    let (code, report) = verify_json(&f, &[s(&file)]);
    assert_eq!((code, report["records"].as_u64()), (0, Some(3005)), "{report}");

    let signed = signed_records(&file);
    let mut canon = Canonicalizer::new();
    let mut signed = signed.iter();
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = signed.next().unwrap();
        if bad.iter().any(|b| b.0 == i + 1) {
            assert_eq!(record["refused_source"], format!("stdin:{}", i + 1), "{record}");
            continue;
        }
        let mut expected = Vec::new();
        canonicalize_record(&mut canon, line, &|| 0, &mut expected).unwrap();
        let mut got = Vec::new();
        canonicalize(&serde_json::to_vec(record).unwrap(), &mut got).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(expected).unwrap(), "line {}", i + 1);
    }
    assert!(signed.next().is_none());
}

#[test]
fn tampering_is_reported_with_exit_1_and_malformed_lines_name_file_and_line() {
    let f = fixture();
    let file = f.root.join("batches.ndjson");
    let out = teelog(
        &["sign", "--identity", s(&f.identity), "--out", s(&file), "--batch-size", "2"],
        &records(0..6),
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let tampered =
        format!("{}\nthis is not a batch\n{}\n", lines[0].replace("record 1", "record X"), lines[2]);
    std::fs::write(&file, tampered).unwrap();
    let (code, report) = verify_json(&f, &[s(&file)]);
    assert_eq!(code, 1);
    // Malformed lines belong to no stream, so they come first.
    assert_eq!(kinds(&report), ["malformed", "record_tampered", "sequence_gap"]);
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings[1]["seq"], 1);
    assert_eq!(findings[1]["record_index"], 1, "the edited record is located");
    assert_eq!(findings[2]["seq"], 2);
    let malformed = &findings[0];
    assert!(
        malformed["detail"].as_str().unwrap().starts_with(&format!("{}:2: ", file.display())),
        "{malformed}"
    );
    assert_eq!(malformed["seq"], Value::Null);
    for finding in findings {
        let keys: Vec<&String> = finding.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["detail", "epoch", "kind", "record_index", "seq", "stream"]);
    }

    let human = teelog(&["verify", "--pubkey", s(&f.pubkey), s(&file)], b"");
    assert_eq!(human.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&human.stdout).contains("FAIL record_tampered stream=default"));
}

#[test]
fn usage_and_io_errors_exit_2_with_a_clear_message() {
    let f = fixture();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["verify".into(), "--pubkey".into(), s(&f.pubkey).into()], "nothing to verify"),
        (
            vec!["verify".into(), "--pubkey".into(), s(&f.pubkey).into(), "/nonexistent/file".into()],
            "cannot read /nonexistent/file",
        ),
        (
            vec!["verify".into(), "--pubkey".into(), s(&f.identity.join("identity.json")).into(), "-".into()],
            "no PUBLIC KEY PEM block",
        ),
        (
            vec![
                "verify".into(),
                "--pubkey".into(),
                s(&f.pubkey).into(),
                "--expect-measurement".into(),
                " ".into(),
                "-".into(),
            ],
            "--expect-measurement",
        ),
        (vec!["sign".into(), "--identity".into(), s(&f.root.join("missing")).into()], "identity.json"),
        (
            vec![
                "sign".into(),
                "--identity".into(),
                s(&f.identity).into(),
                "--stream".into(),
                "bad name".into(),
            ],
            "stream",
        ),
        (vec!["verify".into()], "nothing to verify"),
    ];
    for (args, message) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = teelog(&args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    // An Ed25519 key is refused by name.
    let ed = f.root.join("ed.pem");
    std::fs::write(&ed, "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n").unwrap();
    let out = teelog(&["verify", "--pubkey", s(&ed), "-"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ed.pem") && stderr(&out).contains("P-256 or P-384"), "{}", stderr(&out));
}

/// A crash after a batch became durable but before the chain state was saved: the next run must
/// continue after the batch it finds in its output, never sign that seq again.
#[test]
fn a_stale_state_file_never_causes_equivocation() {
    for output in ["--out", "--store"] {
        let f = fixture();
        let target = f.root.join("output");
        let sign = |input: &[u8]| {
            let out = teelog(&["sign", "--identity", s(&f.identity), output, s(&target)], input);
            assert!(out.status.success(), "{}", stderr(&out));
        };
        sign(&records(0..5));
        let state = f.identity.join("state/default.json");
        let saved = std::fs::read(&state).unwrap();
        sign(&records(5..10));
        std::fs::write(&state, saved).unwrap();
        sign(&records(10..15));
        let input = if output == "--out" { vec![s(&target)] } else { vec!["--store", s(&target)] };
        let (code, report) = verify_json(&f, &input);
        assert_eq!(code, 0, "{output}: {report}");
        assert_eq!(report["records"], 15);
    }
}

/// A torn last line, as kill -9 mid-write leaves it, is reported and does not spoil later appends.
#[test]
fn a_torn_store_line_is_malformed_and_later_appends_are_clean() {
    let f = fixture();
    let store = f.root.join("store");
    let sign = |input: &[u8]| teelog(&["sign", "--identity", s(&f.identity), "--store", s(&store)], input);
    assert!(sign(&records(0..5)).status.success());
    let segment = teelog_store::segments(&store).unwrap().pop().unwrap();
    let whole = std::fs::read(&segment).unwrap();
    // What a crash in the middle of writing the next batch line leaves.
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[..whole.len() / 2]);
    std::fs::write(&segment, torn).unwrap();
    assert!(sign(&records(5..10)).status.success());
    let (code, report) = verify_json(&f, &["--store", s(&store)]);
    assert_eq!(code, 1);
    assert_eq!(kinds(&report), ["malformed"], "{report}");
    assert!(
        report["findings"][0]["detail"].as_str().unwrap().contains("segment-000000000001.ndjson:2"),
        "{report}"
    );
    assert_eq!((report["batches"].as_u64(), report["records"].as_u64()), (Some(2), Some(10)));
}

/// kill -9 at random moments while signing into the store: nothing verified is lost, the chain
/// never breaks, and the only findings are torn last lines.
#[test]
fn kill_9_while_signing_never_breaks_the_chain() {
    let f = fixture();
    let store = f.root.join("store");
    let mut completed = 0u64;
    for round in 0..12u32 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_teelog"))
            .args(["sign", "--identity", s(&f.identity), "--store", s(&store), "--batch-size", "50"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // Feed records until a pseudo-random moment, then kill without warning.
        let chunks = 3 + (round * 7) % 11;
        for chunk in 0..chunks {
            if stdin.write_all(&records(chunk * 100..chunk * 100 + 100)).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(u64::from(round % 4)));
        }
        if round % 3 == 0 {
            drop(stdin);
            if child.wait().unwrap().success() {
                completed += 1;
            }
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
    let (_, report) = verify_json(&f, &["--store", s(&store)]);
    assert!(kinds(&report).iter().all(|k| k == "malformed"), "{report}");
    assert!(completed >= 4 && report["records"].as_u64().unwrap() >= completed * 300, "{report}");
}

/// The seed's SignedLogBatch lines, signed as .NET's ECDsa.SignHash does (P1363) and as DER.
#[test]
fn seed_format_batches_are_verified() {
    let f = fixture();
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    let pubkey = f.root.join("seed.pem");
    std::fs::write(&pubkey, key.public().to_pem()).unwrap();
    let batch = |seq: u64, count: u64, measurement: &str, der: bool| {
        let payload = serde_json::json!({
            "sequence": seq,
            "timestamp_utc": "2026-12-02T09:00:00.0000000+00:00",
            "tee_measurement": measurement,
            "record_count": count,
            "records": [{"timestamp": "2026-12-02T09:00:00Z", "level": "Information", "message": "m", "attributes": {}}],
        })
        .to_string();
        let mut sig = key.sign(payload.as_bytes()).unwrap();
        if der {
            sig = teelog_core::crypto::p1363_to_der(&sig);
        }
        serde_json::json!({
            "Sequence": seq,
            "PayloadBase64": B64.encode(payload),
            "SignatureBase64": B64.encode(sig),
            "AttestationCertThumbprint": "sha256:a1b2c3",
        })
        .to_string()
    };
    let file = f.root.join("seed.ndjson");
    let good = [batch(1, 1, "PCR2", false), batch(2, 1, "pcr2", true), batch(3, 1, "pcr2", false)].join("\n");
    std::fs::write(&file, format!("{good}\n")).unwrap();
    let verify = || {
        let out = teelog(
            &["verify", "--pubkey", s(&pubkey), "--expect-measurement", "pcr2", "--json", s(&file)],
            b"",
        );
        (out.status.code().unwrap(), serde_json::from_slice::<Value>(&out.stdout).unwrap())
    };
    let (code, report) = verify();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["batches"], 3);
    // The thumbprint groups the batches, but nothing signs it, and the report says so.
    assert_eq!(report["trust"][0]["epoch"], "sha256:a1b2c3");
    assert_eq!(report["trust"][0]["epoch_unsigned"], true);

    let bad = [
        batch(1, 1, "pcr2", false),
        batch(2, 2, "pcr2", false),
        batch(4, 1, "other", false),
        batch(1, 1, "pcr2", false)
            .replace("Sequence\":1", "Sequence\":1 ")
            .replace("\"SignatureBase64\":\"", "\"SignatureBase64\":\"A"),
    ]
    .join("\n");
    std::fs::write(&file, format!("{bad}\n")).unwrap();
    let (code, report) = verify();
    assert_eq!(code, 1);
    assert_eq!(
        kinds(&report),
        ["malformed", "record_tampered", "sequence_gap", "unexpected_measurement"],
        "{report}"
    );
    assert_eq!(report["findings"][1]["stream"], "seed");
    assert_eq!(report["findings"][1]["epoch"], "sha256:a1b2c3");
    let detail = report["findings"][1]["detail"].as_str().unwrap();
    assert!(detail.ends_with("(epoch is the AttestationCertThumbprint, which nothing signs)"), "{detail}");
}

#[test]
fn quickstart_runs_the_whole_job() {
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let out = teelog(&["quickstart", "--dir", s(&qs)], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OK   20 batches, 10000 records"), "{text}");
    assert!(text.contains("FAIL record_tampered") && text.contains("FAIL sequence_gap"), "{text}");
    // Running it again replaces its own directory, but refuses to touch anything else.
    assert!(teelog(&["quickstart", "--dir", s(&qs)], b"").status.success());
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    assert_eq!(teelog(&["quickstart", "--dir", s(&other)], b"").status.code(), Some(2));
}

/// Heartbeats and --max-silence: a stream whose newest batch is too old is stale.
#[test]
fn a_silent_stream_is_stale_and_heartbeats_count() {
    let f = fixture();
    let store = f.root.join("store");
    assert!(teelog(&["sign", "--identity", s(&f.identity), "--store", s(&store)], &records(0..3))
        .status
        .success());
    let (code, report) = verify_json(&f, &["--store", s(&store), "--max-silence", "1h"]);
    assert_eq!(code, 0, "{report}");

    let later = ["--store", s(&store), "--max-silence", "1h", "--now", "2200-01-01T00:00:00Z"];
    let (code, report) = verify_json(&f, &later);
    assert_eq!((code, kinds(&report)), (1, vec!["stale_stream".to_string()]), "{report}");
    assert_eq!(report["findings"][0]["seq"], 1);

    let beat =
        teelog(&["sign", "--identity", s(&f.identity), "--store", s(&store), "--heartbeat"], b"ignored");
    assert!(beat.status.success(), "{}", stderr(&beat));
    let (_, report) = verify_json(&f, &later);
    assert_eq!(report["findings"][0]["seq"], 2, "the heartbeat is now the newest batch: {report}");
    assert_eq!((report["batches"].as_u64(), report["records"].as_u64()), (Some(2), Some(3)));

    for bad in ["10", "5x", "-1h", "0s"] {
        let out = teelog(&["verify", "--pubkey", s(&f.pubkey), "--max-silence", bad, "-"], b"");
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

/// `sign --heartbeat-every`: a signer reading a pipe that stays open seals what is pending, then
/// heartbeats, at the interval; `sign --heartbeat` from a timer cannot run next to it.
#[test]
fn heartbeats_come_from_a_running_sign_at_the_interval() {
    let f = fixture();
    let file = f.root.join("batches.ndjson");
    let mut child = Command::new(env!("CARGO_BIN_EXE_teelog"))
        .args(["sign", "--identity", s(&f.identity), "--out", s(&file), "--heartbeat-every", "300ms"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&records(0..2)).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));

    // The identity is in use: a one-shot heartbeat cannot be sealed beside it.
    let out = teelog(&["sign", "--identity", s(&f.identity), "--heartbeat"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("another signer is using this identity"), "{}", stderr(&out));

    let lines = std::fs::read_to_string(&file).unwrap();
    let counts: Vec<u64> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["header"]["count"].as_u64().unwrap())
        .collect();
    // The two records within the first interval, then a heartbeat per interval: about four in
    // the 1.2 s left (a loaded machine may fit fewer).
    assert_eq!(counts.first(), Some(&2), "{counts:?}");
    let heartbeats = counts[1..].iter().filter(|&&c| c == 0).count();
    assert!((2..=5).contains(&heartbeats) && counts[1..].iter().all(|&c| c == 0), "{counts:?}");
    let sealed: Vec<i64> = lines
        .lines()
        .map(|l| {
            let header = &serde_json::from_str::<Value>(l).unwrap()["header"];
            teelog_core::timestamp::parse_rfc3339(header["sealed_at"].as_str().unwrap()).unwrap()
        })
        .collect();
    for pair in sealed.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= 290_000_000, "batches {} ms apart: {sealed:?}", gap / 1_000_000);
    }

    // More input is signed as before; the end of the input ends it, every batch verifying.
    stdin.write_all(&records(2..3)).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, report) = verify_json(&f, &[s(&file)]);
    assert_eq!((code, report["records"].as_u64()), (0, Some(3)), "{report}");
}
