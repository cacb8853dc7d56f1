//! The failure vectors of docs/vectors/failures/ (docs/FORMAT.md §12): each is a small input,
//! the `teelog` command to run on it, and the exit code and findings it must give. Every class
//! of what "OK" must never hide has at least one. `TEELOG_WRITE_VECTORS=1` rewrites the vectors
//! this file generates (signed with the published test key of batch-v1.json).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use teelog_core::batch::attestation_line;
use teelog_core::merkle::sha256;
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::{BatchBuilder, ChainHead, SigAlg, SoftwareKey, SoftwareSigner};

#[derive(Serialize, Deserialize, Debug)]
struct Vector {
    class: String,
    description: String,
    files: BTreeMap<String, String>,
    args: Vec<String>,
    exit: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    findings: Option<Vec<Placed>>,
    /// Members of the JSON report that must have these values (e.g. `duplicates`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    report: BTreeMap<String, Value>,
    /// Texts the output must not contain (raw control characters, for one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stdout_lacks: Vec<String>,
}

/// A finding as a vector pins it: what and where, not the wording.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, Clone)]
struct Placed {
    kind: String,
    stream: Option<String>,
    epoch: Option<String>,
    seq: Option<u64>,
    record_index: Option<u64>,
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/failures")
}

/// Every vector, by path.
fn vectors() -> Vec<(PathBuf, Vector)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 12, "the failure vectors are missing: {paths:?}");
    paths
        .into_iter()
        .map(|path| {
            let vector = serde_json::from_slice(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, vector)
        })
        .collect()
}

/// A directory holding `vector`'s files.
fn files_of(vector: &Vector) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &vector.files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// Runs `vector`'s command, with `extra` arguments, on its files in `dir`.
fn run_vector(vector: &Vector, dir: &tempfile::TempDir, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> =
        vector.args.iter().map(|a| a.replace("$DIR", common::s(dir.path()))).collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::teelog(&args, b"")
}

#[test]
fn every_failure_vector_gives_its_exit_code_and_findings() {
    for (path, vector) in vectors() {
        let out = run_vector(&vector, &files_of(&vector), &[]);
        let name = path.file_name().unwrap().to_string_lossy();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let context = format!("{name}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(vector.exit), "{context}");
        if let Some(expected) = &vector.findings {
            let report: Value =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{context}: {e}"));
            let found: Vec<Placed> = serde_json::from_value(report["findings"].clone()).unwrap();
            assert_eq!(&found, expected, "{context}");
            for (member, value) in &vector.report {
                assert_eq!(&report[member], value, "{context}: {member}");
            }
        }
        for text in &vector.stdout_lacks {
            assert!(!stdout.contains(text.as_str()), "{context}: the output holds {text:?}");
        }
    }
}

/// Lines are checked on a pool of threads and admitted in input order: each `verify` vector
/// gives the same output, byte for byte, on one thread and on four.
#[test]
fn every_verify_vector_reports_the_same_on_one_thread_and_on_four() {
    let mut compared = 0;
    for (path, vector) in vectors().into_iter().filter(|(_, v)| v.args[0] == "verify") {
        let name = path.file_name().unwrap().to_string_lossy();
        let dir = files_of(&vector);
        let (one, four) =
            (run_vector(&vector, &dir, &["--threads", "1"]), run_vector(&vector, &dir, &["--threads", "4"]));
        let stderr = String::from_utf8_lossy(&four.stderr);
        assert_eq!(one.status.code(), Some(vector.exit), "{name}: {stderr}");
        assert_eq!(four.status.code(), Some(vector.exit), "{name}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&one.stdout), String::from_utf8_lossy(&four.stdout), "{name}");
        compared += 1;
    }
    assert!(compared >= 12, "only {compared} verify vectors");
}

// ---- The generator ----

/// The published test key, its public PEM, and the test vectors' fixed values.
struct TestKey {
    key: SoftwareKey,
    public_pem: String,
}

fn test_key() -> TestKey {
    let vectors: Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/batch-v1.json"))
            .unwrap(),
    )
    .unwrap();
    let key = SoftwareKey::from_pkcs8_pem(vectors["private_key_pem"].as_str().unwrap().as_bytes()).unwrap();
    TestKey { public_pem: key.public().to_pem(), key }
}

const EPOCH_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const EPOCH_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const EPOCH_C: &str = "cccccccccccccccccccccccccccccccc";
/// Every vector is verified at this time, so that none depends on the clock.
const NOW: &str = "2026-12-03T00:00:00Z";

fn at(text: &str) -> i64 {
    parse_rfc3339(text).unwrap()
}

/// Seals `count` batches of two records each for `head`, from `sealed_at` on, a second apart.
fn batches(head: &mut ChainHead, signer: &SoftwareSigner, count: usize, sealed_at: i64) -> Vec<String> {
    let mut builder = BatchBuilder::new();
    (0..count)
        .map(|i| {
            for r in 0..2 {
                let record = format!("{{\"message\":\"m{i}.{r}\",\"ts\":\"2026-12-02T09:00:00Z\"}}");
                builder.push_input(record.as_bytes(), &|| 0).unwrap();
            }
            let mut line = Vec::new();
            builder.seal(head, signer, sealed_at + i as i64 * 1_000_000_000, &mut line).unwrap();
            String::from_utf8(line).unwrap()
        })
        .collect()
}

fn head(epoch: &str, next_seq: u64, prev: Option<String>) -> ChainHead {
    ChainHead { stream: "app".into(), epoch: epoch.into(), next_seq, prev, prev_sealed_at: None }
}

fn header_hash(line: &str) -> String {
    let start = "{\"v\":1,\"header\":".len();
    let end = line.find(",\"sig\":\"").unwrap();
    hex::encode(sha256(&line.as_bytes()[start..end]))
}

fn placed(kind: &str, epoch: Option<&str>, seq: Option<u64>) -> Placed {
    Placed {
        kind: kind.into(),
        stream: epoch.map(|_| "app".to_string()),
        epoch: epoch.map(str::to_string),
        seq,
        record_index: None,
    }
}

/// A vector that runs `teelog verify input.ndjson --pubkey key.pem --json --now NOW EXTRA…`.
fn verify_vector(
    class: &str,
    description: &str,
    input: String,
    extra: &[&str],
    exit: i32,
    findings: Vec<Placed>,
) -> Vector {
    let key = test_key();
    let mut args: Vec<String> =
        ["verify", "$DIR/input.ndjson", "--pubkey", "$DIR/key.pem", "--json", "--now", NOW]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Vector {
        class: class.into(),
        description: description.into(),
        files: BTreeMap::from([("input.ndjson".into(), input), ("key.pem".into(), key.public_pem)]),
        args,
        exit,
        findings: Some(findings),
        report: BTreeMap::new(),
        stdout_lacks: Vec::new(),
    }
}

fn software(key: SoftwareKey) -> SoftwareSigner {
    SoftwareSigner::new(key, None)
}

/// The line with the other signature that verifies: (r, n - s).
fn malleate(line: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let start = line.find(",\"sig\":\"").unwrap() + ",\"sig\":\"".len();
    let end = start + line[start..].find('"').unwrap();
    let sig = b64.decode(&line[start..end]).unwrap();
    let other = teelog_core::crypto::mirror_signature(SigAlg::Es256, &sig).unwrap();
    format!("{}{}{}", &line[..start], b64.encode(other), &line[end..])
}

/// A SignedLogBatch line whose payload parses, with `sequence` and `thumbprint`, signed by no one.
fn seed_line(sequence: u64, thumbprint: &str) -> String {
    use base64::Engine;
    let payload = format!(
        "{{\"sequence\":{sequence},\"timestamp_utc\":\"2026-12-02T09:00:00Z\",\"tee_measurement\":\"ab\",\"record_count\":0,\"records\":[]}}"
    );
    let line = serde_json::json!({
        "Sequence": sequence,
        "PayloadBase64": base64::engine::general_purpose::STANDARD.encode(payload),
        "SignatureBase64": "AAAA",
        "AttestationCertThumbprint": thumbprint,
    });
    format!("{line}\n")
}

fn generate() -> BTreeMap<&'static str, Vector> {
    let class1 = "1. Bounded work on any input";
    let class2 = "2. Every byte of a line that verifies is signed or checked";
    let class4 = "4. Epoch hand-over rules";
    let class5 = "5. Nothing is OK by absence";
    let class7 = "7. Honest data never alarms";
    let class8 = "8. Reports cannot be spoofed, and mistakes are not attacks";
    let t0 = at("2026-12-02T10:00:00Z");
    let signer = || software(test_key().key);
    let mut out = BTreeMap::new();

    // 1. One batch at the largest seq: its gap is found at once, not by counting to 2^53.
    let top = batches(&mut head(EPOCH_A, (1 << 53) - 1, Some("00".repeat(32))), &signer(), 1, t0).concat();
    out.insert(
        "seq-at-2-53-gap-is-found-at-once",
        verify_vector(
            class1,
            "A single batch claims seq 2^53 - 1: batches 1 to 2^53 - 2 are one sequence_gap, found without walking the numbers between.",
            top.clone(),
            &[],
            1,
            vec![placed("sequence_gap", Some(EPOCH_A), Some(1))],
        ),
    );
    let seed_huge = seed_line(1 << 63, "sha256:x");
    out.insert(
        "seed-sequence-beyond-2-53-is-malformed",
        verify_vector(
            class1,
            "A SignedLogBatch with Sequence 2^63 is malformed, not a gap to walk.",
            seed_huge,
            &[],
            1,
            vec![placed("malformed", None, None)],
        ),
    );

    // A header whose count is beyond 2^53, validly signed: no canonical header holds it, so it
    // is malformed, not a batch with records missing.
    let line = &batches(&mut head(EPOCH_A, 1, None), &signer(), 1, t0)[0];
    let (start, end) = ("{\"v\":1,\"header\":".len(), line.find(",\"sig\":\"").unwrap());
    let header = line[start..end].replace("\"count\":2,", "\"count\":9007199254740993,");
    let sig = test_key().key.sign(&teelog_core::batch::signed_message(header.as_bytes())).unwrap();
    let hints_at = line.find("\",\"hints\":\"").unwrap();
    let huge_count = format!(
        "{}{header},\"sig\":\"{}{}",
        &line[..start],
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sig),
        &line[hints_at..]
    );
    out.insert(
        "count-beyond-2-53-is-malformed",
        verify_vector(
            class1,
            "A validly signed header with count 2^53 + 1 is malformed: canonical JSON keeps no integer beyond 2^53.",
            huge_count,
            &[],
            1,
            vec![placed("malformed", None, None)],
        ),
    );

    // 2. Unsigned bytes in a line that verifies.
    let good = batches(&mut head(EPOCH_A, 1, None), &signer(), 2, t0);
    let mut hints_upper = good.clone();
    // The line's hints, after the signature (the header has a member of that name too).
    let hints_at = hints_upper[0].rfind("\",\"hints\":\"").unwrap() + "\",\"hints\":\"".len();
    hints_upper[0] = format!(
        "{}{}",
        &good[0][..hints_at],
        good[0][hints_at..].replacen(
            &good[0][hints_at..hints_at + 16],
            &good[0][hints_at..hints_at + 16].to_uppercase(),
            1,
        )
    );
    out.insert(
        "hints-respelled-are-unsigned-content",
        verify_vector(
            class2,
            "The line's hints are respelled in upper case: the records and signature still verify, but bytes of the line are no longer what the header's hints digest commits to.",
            hints_upper.concat(),
            &[],
            1,
            vec![placed("unsigned_content", Some(EPOCH_A), Some(1))],
        ),
    );
    let mut spaced = good.clone();
    spaced[1] = spaced[1].replacen("\"records\":[", "\"records\": [", 1);
    out.insert(
        "white-space-in-a-line-is-unsigned-content",
        verify_vector(
            class2,
            "A space is added after \"records\": no signature covers it, so the line does not verify as it stands.",
            spaced.concat(),
            &[],
            1,
            vec![placed("unsigned_content", Some(EPOCH_A), Some(2))],
        ),
    );
    let with_malleated = format!("{}{}", good.concat(), malleate(&good[1]));
    let mut malleated = verify_vector(
            class2,
            "A copy of batch 2 with the other ECDSA signature (r, n - s) of the same header is the same batch: a duplicate, not an extra batch.",
            with_malleated,
            &[],
            0,
            vec![],
    );
    malleated.report = BTreeMap::from([("batches".into(), 2.into()), ("duplicates".into(), 1.into())]);
    out.insert("a-malleated-signature-is-a-duplicate", malleated);
    out.insert(
        "an-attestation-line-with-another-member-is-malformed",
        verify_vector(
            class2,
            "An attestation line carries a member of its own besides v and attestation.",
            format!("{}{{\"v\":1,\"attestation\":\"AAEC\",\"note\":\"trust me\"}}\n", good.concat()),
            &[],
            1,
            vec![placed("malformed", None, None)],
        ),
    );

    // 4. Epoch hand-over.
    let a = batches(&mut head(EPOCH_A, 1, None), &signer(), 1, t0);
    let other =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    let other_pem = other.public().to_pem();
    let b =
        batches(&mut head(EPOCH_B, 1, Some(header_hash(&a[0]))), &software(other), 1, t0 + 10_000_000_000);
    let c = batches(&mut head(EPOCH_C, 1, Some(header_hash(&b[0]))), &signer(), 1, t0 + 20_000_000_000);
    let mut retired = verify_vector(
        class4,
        "Key K1 signs epoch A, key K2 takes over in epoch B, then K1 starts epoch C after B's head: a retired key cannot start a new epoch.",
        [a.clone(), b, c].concat().concat(),
        &["--pubkey", "$DIR/other.pem"],
        1,
        vec![placed("chain_break", Some(EPOCH_C), Some(1))],
    );
    retired.files.insert("other.pem".into(), other_pem);
    out.insert("a-retired-key-cannot-start-an-epoch", retired);

    let future = batches(&mut head(EPOCH_A, 1, None), &signer(), 1, at("2100-01-01T00:00:00Z")).concat();
    out.insert(
        "a-batch-sealed-in-the-future-is-a-finding-and-not-fresh",
        verify_vector(
            class4,
            "The only batch claims to be sealed in 2100: a time_anomaly, and it cannot satisfy --max-silence either.",
            future,
            &["--max-silence", "1h"],
            1,
            vec![placed("stale_stream", Some(EPOCH_A), Some(1)), placed("time_anomaly", Some(EPOCH_A), Some(1))],
        ),
    );
    let mut backwards_head = head(EPOCH_A, 1, None);
    let first = batches(&mut backwards_head, &signer(), 1, t0 + 60_000_000_000);
    let second = batches(&mut backwards_head, &signer(), 1, t0);
    out.insert(
        "sealed-at-going-backwards-is-a-finding",
        verify_vector(
            class4,
            "Batch 2 is sealed a minute before batch 1 of the same epoch.",
            [first, second].concat().concat(),
            &[],
            1,
            vec![placed("time_anomaly", Some(EPOCH_A), Some(2))],
        ),
    );
    out.insert("a-genesis-document-starts-only-a-stream", genesis_document_vector(class4, t0));
    out.insert("a-forged-line-among-verified-batches-is-not-a-usage-error", forged_among_attested_vector(t0));
    out.extend(instance_vectors(t0));

    // 5. Nothing is OK by absence.
    out.insert(
        "empty-input-is-not-ok",
        verify_vector(
            class5,
            "The input holds no batch at all.",
            String::new(),
            &[],
            1,
            vec![Placed {
                kind: "nothing_verified".into(),
                stream: None,
                epoch: None,
                seq: None,
                record_index: None,
            }],
        ),
    );
    out.insert(
        "empty-input-is-ok-when-allowed",
        verify_vector(
            class5,
            "The input holds no batch, and the caller said none is expected.",
            String::new(),
            &["--allow-empty"],
            0,
            vec![],
        ),
    );
    out.insert(
        "an-expected-stream-that-is-absent",
        verify_vector(
            class5,
            "Stream payments was expected, but only stream app is in the input.",
            good.concat(),
            &["--expect-stream", "payments", "--expect-stream", "app"],
            1,
            vec![Placed {
                kind: "missing_stream".into(),
                stream: Some("payments".into()),
                epoch: None,
                seq: None,
                record_index: None,
            }],
        ),
    );

    // 7. A torn write of a batch that was written again in full does not fail.
    let torn_twice = format!("{}{}", good[0], good[1]);
    let torn = &good[1][..good[1].len() / 2];
    let mut redelivered = verify_vector(
        class7,
        "A crash left the first half of batch 2 as a torn last line of one file; the batch was written again in full in the next.",
        torn.to_string(),
        &[],
        0,
        vec![],
    );
    redelivered.args.insert(2, "$DIR/next.ndjson".into());
    redelivered.files.insert("next.ndjson".into(), torn_twice);
    redelivered.report = BTreeMap::from([("torn_writes".into(), 1.into())]);
    out.insert("a-torn-write-written-again-is-not-a-finding", redelivered);
    let lost = verify_vector(
        class7,
        "A torn last line that begins no batch line in the input stays malformed.",
        format!("{}{}", good[0], &good[1][..good[1].len() / 2]),
        &[],
        1,
        vec![placed("malformed", None, None)],
    );
    out.insert("a-torn-line-that-begins-nothing-is-malformed", lost);

    // 8. Mistakes are not attacks, and output cannot be spoofed.
    let mut no_key = verify_vector(class8, "Batches without attestation are verified with no --pubkey at all: a usage error naming the flag, exit 2.", good.concat(), &[], 2, vec![]);
    no_key.args =
        ["verify", "$DIR/input.ndjson", "--json", "--now", NOW].iter().map(|s| s.to_string()).collect();
    no_key.findings = None;
    out.insert("no-pubkey-is-a-usage-error", no_key);
    let mut spoof = verify_vector(
        class8,
        "A SignedLogBatch's unsigned thumbprint carries a newline, an escape sequence and a bidi override to fake an OK line: the text report escapes them.",
        seed_line(1, "x\nOK   9 batches\u{1b}[2K\u{202e}"),
        &[],
        1,
        vec![],
    );
    spoof.args.retain(|a| a != "--json");
    spoof.findings = None;
    spoof.stdout_lacks = vec!["\nOK   9".into(), "\u{1b}".into(), "\u{202e}".into()];
    out.insert("control-characters-never-reach-the-terminal", spoof);
    checkpoint_vectors(&mut out);
    out
}

/// A new key bound by a dev document made at `t0` that attests no previous head: its signer,
/// the document's line and its root's PEM.
fn dev_attested(module_id: &str, t0: i64) -> (SoftwareSigner, String, String) {
    use teelog_attest::dev::{default_pcrs, issue, DevClaims};
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    let pcrs = default_pcrs();
    let made_ms = u64::try_from(t0 / 1_000_000).unwrap();
    let claims =
        DevClaims { module_id, timestamp_ms: made_ms, pcrs: &pcrs, bound_key: key.public(), nonce: None };
    let issued = issue(&claims).unwrap();
    let signer = SoftwareSigner::new(key, Some(hex::encode(&pcrs[&0])))
        .with_attestation(hex::encode(sha256(&issued.document)));
    let document = String::from_utf8(attestation_line(&issued.document)).unwrap();
    (signer, document, teelog_core::crypto::pem_encode("CERTIFICATE", &issued.root_der))
}

/// A dev document that attests no previous head (a genesis document) used to start a second
/// epoch after the stream's head.
fn genesis_document_vector(class: &str, t0: i64) -> Vector {
    let (attested, document, root) = dev_attested("dev-genesis", t0);
    let a = batches(&mut head(EPOCH_A, 1, None), &software(test_key().key), 1, t0);
    let b = batches(&mut head(EPOCH_B, 1, Some(header_hash(&a[0]))), &attested, 1, t0 + 10_000_000_000);
    let mut vector = verify_vector(
        class,
        "Epoch B's document attests no previous head (it may only start a stream), yet B continues from epoch A's head.",
        [a.concat(), document, b.concat()].concat(),
        &["--trust-root", "$DIR/dev-root.pem"],
        1,
        vec![placed("chain_break", Some(EPOCH_B), Some(1))],
    );
    vector.files.insert("dev-root.pem".into(), root);
    vector
}

/// An attested epoch that verifies with its dev root, and one line signed by a key nobody gave:
/// with no `--pubkey`, that line is a finding, not the auditor's usage error.
fn forged_among_attested_vector(t0: i64) -> Vector {
    let (attested, document, root) = dev_attested("dev-forged-among", t0);
    let a = batches(&mut head(EPOCH_A, 1, None), &attested, 2, t0 + 1_000_000_000);
    let forged = batches(
        &mut head(EPOCH_A, 3, Some(header_hash(&a[1]))),
        &software(test_key().key),
        1,
        t0 + 5_000_000_000,
    );
    let mut vector = verify_vector(
        "8. Reports cannot be spoofed, and mistakes are not attacks",
        "Batch 3 of an attested epoch is signed by another key, with no document: the auditor gave no --pubkey, but the other batches verify, so it is a finding, not a usage error.",
        [document, a.concat(), forged.concat()].concat(),
        &["--trust-root", "$DIR/dev-root.pem"],
        1,
        vec![placed("invalid_signature", Some(EPOCH_A), Some(3))],
    );
    vector.args.retain(|a| a != "--pubkey" && a != "$DIR/key.pem");
    vector.files.remove("key.pem");
    vector.files.insert("dev-root.pem".into(), root);
    vector
}

/// Several signers on one stream (docs/FORMAT.md §5.5): key K1 starts instance A, key K2
/// instance B; what the auditor declares or pins decides which are expected.
fn instance_vectors(t0: i64) -> Vec<(&'static str, Vector)> {
    let class = "9. Instances: several signers on one stream";
    let signer = || software(test_key().key);
    let other =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    let other_pem = other.public().to_pem();
    let other = software(other);
    let a = batches(&mut head(EPOCH_A, 1, None), &signer(), 2, t0);
    let b = batches(&mut head(EPOCH_B, 1, None), &other, 2, t0 + 1_000_000_000);
    let both = [a.clone(), b.clone()].concat().concat();
    let pin_a = format!("app={EPOCH_A}");
    let vector = |description: &str, input: String, extra: &[&str], exit, findings| {
        let mut args = vec!["--pubkey", "$DIR/other.pem"];
        args.extend_from_slice(extra);
        let mut vector = verify_vector(class, description, input, &args, exit, findings);
        vector.files.insert("other.pem".into(), other_pem.clone());
        vector
    };
    let unexpected = |epoch| placed("unexpected_instance", Some(epoch), Some(1));
    let instance = |epoch: &str, pinned: bool| serde_json::json!({"stream": "app", "instance": epoch, "genesis": true, "pinned": pinned, "epochs": [epoch]});
    let mut declared = vector(
        "Two signers, each its own key, start instances A and B of one stream, and two are allowed: OK, each listed with its epochs.",
        both.clone(),
        &["--instances", "2"],
        0,
        Vec::new(),
    );
    declared
        .report
        .insert("instances".into(), serde_json::json!([instance(EPOCH_A, false), instance(EPOCH_B, false)]));
    let mut pinned = vector(
        "Instances A and B, both pinned: OK.",
        both.clone(),
        &["--expect-stream", &format!("app={EPOCH_A}"), "--expect-stream", &format!("app={EPOCH_B}")],
        0,
        Vec::new(),
    );
    pinned
        .report
        .insert("instances".into(), serde_json::json!([instance(EPOCH_A, true), instance(EPOCH_B, true)]));
    // A key of instance A starts epoch C afresh: a restart that did not link, not another signer.
    let c = batches(&mut head(EPOCH_C, 1, None), &signer(), 1, t0 + 10_000_000_000);
    // B and C both continue from A's head: instance A forks.
    let a_head = header_hash(&a[1]);
    let b_after = batches(&mut head(EPOCH_B, 1, Some(a_head.clone())), &other, 1, t0 + 10_000_000_000);
    let c_after = batches(&mut head(EPOCH_C, 1, Some(a_head)), &other, 1, t0 + 11_000_000_000);
    vec![
        ("declared-instances-are-ok", declared),
        ("pinned-instances-are-ok", pinned),
        (
            "a-second-instance-not-declared-is-unexpected",
            vector(
                "Instances A and B of one stream, none declared: one is allowed, and nothing tells which is the stream's own, so both are unexpected.",
                both.clone(),
                &[],
                1,
                vec![unexpected(EPOCH_A), unexpected(EPOCH_B)],
            ),
        ),
        (
            "an-instance-not-pinned-is-unexpected",
            vector("Instances A and B, only A pinned: B is unexpected.", both, &["--expect-stream", &pin_a], 1, vec![unexpected(EPOCH_B)]),
        ),
        (
            "a-pinned-instance-replaced-by-another-is-missing",
            vector(
                "A is pinned, but the input holds instance B alone (another instance of the same code, shown in its place): A is missing and B unexpected.",
                b.concat(),
                &["--expect-stream", &pin_a],
                1,
                vec![placed("missing_stream", Some(EPOCH_A), None), unexpected(EPOCH_B)],
            ),
        ),
        (
            "a-key-starting-two-instances-is-a-chain-break",
            vector(
                "K1 starts instance A and, later, epoch C afresh, with three instances allowed: one key starting two chains is a restart that did not link to its head.",
                [a.clone(), b, c].concat().concat(),
                &["--instances", "3"],
                1,
                vec![placed("chain_break", Some(EPOCH_A), Some(1)), placed("chain_break", Some(EPOCH_C), Some(1))],
            ),
        ),
        (
            "a-forked-restart-is-a-chain-break-with-instances-allowed",
            vector(
                "Epochs B and C both continue from A's head, with three instances allowed: a fork, not new instances.",
                [a, b_after, c_after].concat().concat(),
                &["--instances", "3"],
                1,
                vec![placed("chain_break", Some(EPOCH_B), Some(1)), placed("chain_break", Some(EPOCH_C), Some(1))],
            ),
        ),
    ]
}

#[test]
fn write_failure_vectors() {
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_none() {
        return;
    }
    for (name, vector) in generate() {
        let text = serde_json::to_string_pretty(&vector).unwrap() + "\n";
        std::fs::write(vectors_dir().join(format!("{name}.json")), text).unwrap();
    }
}

/// The vectors of gateway checkpoints (docs/FORMAT.md §17), signed with the same published test
/// key standing in for the gateway's: a tail cut below a checkpoint, a checkpointed head
/// replaced, a checkpoint that does not verify, none at all, and checkpoints without a key.
fn checkpoint_vectors(out: &mut BTreeMap<&'static str, Vector>) {
    let class = "9. A tail cut after the gateway stored it";
    let t0 = at("2026-12-02T10:00:00Z");
    let signer = software(test_key().key);
    let a = batches(&mut head(EPOCH_A, 1, None), &signer, 3, t0);
    let b = batches(&mut head(EPOCH_B, 1, Some(header_hash(&a[2]))), &signer, 2, t0 + 10_000_000_000);
    let tip = |epoch: &str, seq: u64, line: &str| teelog_core::checkpoint::Tip {
        epoch: epoch.into(),
        head: header_hash(line),
        seq,
    };
    let checkpoint = |tips| {
        let line = teelog_core::checkpoint::sign(&test_key().key, "app", t0 + 60_000_000_000, tips)
            .unwrap()
            .line(None);
        String::from_utf8(line).unwrap()
    };
    let key = ["--checkpoint-key", "$DIR/key.pem"];
    let in_stream = |kind: &str| Placed { stream: Some("app".into()), ..placed(kind, None, None) };
    let both = checkpoint(vec![tip(EPOCH_A, 3, &a[2]), tip(EPOCH_B, 2, &b[1])]);
    out.insert(
        "checkpoint-tail-cut-below-it",
        verify_vector(
            class,
            "The gateway's checkpoint names seq 3 of the epoch; the input ends at seq 1: seq 2 and 3 were cut after the gateway stored them (truncated_after_checkpoint at the first missing one), and the newest epoch, cut whole, from its seq 1.",
            [a[0].clone(), both.clone()].concat(),
            &key,
            1,
            vec![placed("truncated_after_checkpoint", Some(EPOCH_A), Some(2)), placed("truncated_after_checkpoint", Some(EPOCH_B), Some(1))],
        ),
    );
    out.insert(
        "checkpoint-intact-is-ok",
        verify_vector(
            class,
            "Every batch the checkpoint names is there: OK.",
            [a.concat(), b.concat(), both.clone()].concat(),
            &key,
            0,
            Vec::new(),
        ),
    );
    let replaced = batches(&mut head(EPOCH_A, 3, Some(header_hash(&a[1]))), &signer, 1, t0 + 5_000_000_000);
    out.insert(
        "checkpoint-head-replaced",
        verify_vector(
            class,
            "Seq 3 is there and validly signed, but it is not the batch the gateway's checkpoint names: checkpoint_mismatch.",
            [a[0].clone(), a[1].clone(), replaced[0].clone(), checkpoint(vec![tip(EPOCH_A, 3, &a[2])])].concat(),
            &key,
            1,
            vec![placed("checkpoint_mismatch", Some(EPOCH_A), Some(3))],
        ),
    );
    let forged = checkpoint(vec![tip(EPOCH_A, 3, &a[2])]).replace("\"seq\":3", "\"seq\":2");
    out.insert(
        "checkpoint-that-does-not-verify",
        verify_vector(
            class,
            "A checkpoint whose signed body was changed (seq 3 to 2) does not verify: invalid_checkpoint, and the stream is left with no checkpoint (missing_checkpoint).",
            [a.concat(), forged.clone()].concat(),
            &key,
            1,
            vec![in_stream("invalid_checkpoint"), in_stream("missing_checkpoint")],
        ),
    );
    out.insert(
        "checkpoint-key-and-none-found",
        verify_vector(
            class,
            "--checkpoint-key is given but the input has no checkpoint: nothing shows the tail is whole (missing_checkpoint).",
            a.concat(),
            &key,
            1,
            vec![in_stream("missing_checkpoint")],
        ),
    );
    let mut counted = verify_vector(
        class,
        "Without --checkpoint-key, checkpoint lines (even one that does not verify) are counted and trusted for nothing: the batches verify as before.",
        [a.concat(), forged].concat(),
        &[],
        0,
        Vec::new(),
    );
    counted.report.insert("checkpoints".into(), Value::from(1));
    out.insert("checkpoint-lines-without-a-key-are-counted", counted);
}
