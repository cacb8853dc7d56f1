//! Evidence bundle vectors (docs/vectors/evidence-v1.json, docs/FORMAT.md §16): a bundle exported
//! from the batch vectors, and one changed copy for each part a bundle carries, each with the
//! findings it must get. `TEELOG_WRITE_VECTORS=1` rewrites the file; otherwise it is rebuilt and
//! compared, and every vector is checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use teelog_core::anchor::TimestampNotice;
use teelog_core::evidence::{check_bundle, Bundle, Exporter, Selection};
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::{PublicKey, VerifyOptions};
use teelog_tsa::TsaRoots;

#[path = "../../tsa/tests/support/openssl_tsa.rs"]
mod openssl_tsa;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vectors {
    comment: String,
    /// The published test key of docs/vectors/batch-v1.json, which signed the batches.
    public_key_pem: String,
    /// The verification time.
    now: String,
    /// The root of the test TSA (made once by `openssl ts` when the vectors were written) that
    /// stamped the checkpoint of docs/vectors/checkpoint-v1.json.
    tsa_root_pem: String,
    /// The gateway key of docs/vectors/checkpoint-v1.json (the published test key).
    checkpoint_key_pem: String,
    /// That checkpoint's line with its timestamp token.
    stamped_checkpoint: String,
    /// Batch 4 of the chain of batch-v1.json, signed with its key: a timestamp notice (§16.2)
    /// whose token, from the same TSA, stamps batch 3's header, then one record.
    notice_batch: String,
    vectors: Vec<Vector>,
}

/// A test TSA made with `openssl ts`, and its tokens over `digests`: (root PEM, tokens DER).
fn stamp_with_openssl(digests: &[[u8; 32]]) -> (String, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    openssl_tsa::tsa(dir.path(), "timeStamping");
    let tokens = digests
        .iter()
        .map(|digest| {
            let hex = hex::encode(digest);
            openssl_tsa::openssl(
                dir.path(),
                &["ts", "-query", "-digest", &hex, "-sha256", "-cert", "-out", "q.der"],
            );
            openssl_tsa::openssl(
                dir.path(),
                &[
                    "ts",
                    "-reply",
                    "-config",
                    "tsa.cnf",
                    "-queryfile",
                    "q.der",
                    "-token_out",
                    "-out",
                    "token.der",
                ],
            );
            std::fs::read(dir.path().join("token.der")).unwrap()
        })
        .collect();
    (std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(), tokens)
}

/// Batch 4 of the batch vectors' chain, signed with their key: a timestamp notice holding
/// `token` (over batch 3's header) and a record after it.
fn notice_batch(batches: &serde_json::Value, token: &[u8]) -> String {
    let key =
        teelog_core::SoftwareKey::from_pkcs8_pem(batches["private_key_pem"].as_str().unwrap().as_bytes())
            .unwrap();
    let third = &batches["batches"][2];
    let head: [u8; 32] = hex::decode(third["header_sha256"].as_str().unwrap()).unwrap().try_into().unwrap();
    let epoch = batches["epoch"].as_str().unwrap();
    let mut chain = teelog_core::ChainHead {
        stream: batches["stream"].as_str().unwrap().into(),
        epoch: epoch.into(),
        next_seq: 4,
        prev: Some(hex::encode(head)),
        prev_sealed_at: None,
    };
    // Sealed when it is made, after the token: the signer's clock may not run behind it.
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
            .unwrap();
    let notice = serde_json::to_vec(&TimestampNotice::new(epoch, 3, &head, token)).unwrap();
    let mut builder = teelog_core::BatchBuilder::new();
    builder.push_input(&notice, &|| now).unwrap();
    builder.push_input(br#"{"message":"sealed after the token"}"#, &|| now).unwrap();
    let signer = teelog_core::SoftwareSigner::new(key, Some(batches["measurement"].as_str().unwrap().into()));
    let mut line = Vec::new();
    builder.seal(&mut chain, &signer, now, &mut line).unwrap();
    String::from_utf8(line).unwrap().trim_end().to_string()
}

/// DER of the first certificate in `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String =
        pem.lines().take_while(|l| !l.starts_with("-----END")).filter(|l| !l.starts_with("-----")).collect();
    B64.decode(body).unwrap()
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vector {
    name: String,
    description: String,
    bundle: Bundle,
    ok: bool,
    /// The kinds of the findings, in order.
    findings: Vec<String>,
    /// The upper bound of the first record's window, where the bundle gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    no_later_than: Option<String>,
    /// Its lower bound, where the bundle gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    no_earlier_than: Option<String>,
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors")
}

/// The vectors, rebuilt from the batch vectors; the TSA root and stamped checkpoint are taken
/// from `recorded` (tokens are not reproducible), or made with `openssl ts` when there are none.
fn build(recorded: Option<&Vectors>) -> Vectors {
    let batches: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("batch-v1.json")).unwrap()).unwrap();
    let mut exporter = Exporter::new(Selection::Place {
        stream: batches["stream"].as_str().unwrap().into(),
        epoch: None,
        seq: 1,
        index: Some(1),
    });
    for batch in batches["batches"].as_array().unwrap() {
        exporter.push_line(batch["line"].as_str().unwrap().as_bytes());
    }
    let good = exporter.finish().unwrap();
    let public_key_pem = batches["public_key_pem"].as_str().unwrap().to_string();
    let now = batches["now"].as_str().unwrap().to_string();

    let changed = |f: &dyn Fn(&mut Bundle)| {
        let mut bundle = good.clone();
        f(&mut bundle);
        bundle
    };
    let flip_hex = |text: &mut String| {
        let last = text.pop().unwrap();
        text.push(if last == '0' { '1' } else { '0' });
    };
    let cases: Vec<(&str, &str, Bundle)> = vec![
        (
            "good",
            "record 1 of batch 1 of the batch vectors, as teelog evidence export writes it",
            good.clone(),
        ),
        (
            "record-changed",
            "one character of the disclosed record changed",
            changed(&|b| b.records[0].record = b.records[0].record.replacen('b', "c", 1)),
        ),
        (
            "proof-changed",
            "the last hex digit of the first proof hash changed",
            changed(&|b| flip_hex(&mut b.records[0].proof[0])),
        ),
        (
            "index-changed",
            "the record claims another position in its batch",
            changed(&|b| b.records[0].index = 0),
        ),
        (
            "header-changed",
            "the signed header's sealed_at moved by a second",
            changed(&|b| b.batches[0].header = b.batches[0].header.replacen("12:00:01", "12:00:02", 1)),
        ),
        (
            "signature-changed",
            "one base64 character of the signature changed",
            changed(&|b| {
                let sig = &mut b.batches[0].sig;
                let first = if sig.starts_with('A') { "B" } else { "A" };
                sig.replace_range(0..1, first);
            }),
        ),
        (
            "document-not-named",
            "an attestation document the header does not name was added",
            changed(&|b| b.batches[0].attestation = Some("AAAA".into())),
        ),
        (
            "batch-missing",
            "the record names a batch the bundle does not hold",
            changed(&|b| b.records[0].batch = 1),
        ),
        (
            "batch-repeated",
            "the record's batch is carried twice",
            changed(&|b| b.batches.push(b.batches[0].clone())),
        ),
        ("no-record", "the bundle's records were removed", changed(&|b| b.records.clear())),
        (
            "another-version",
            "a bundle version this teelog does not read",
            changed(&|b| b.teelog_evidence = 2),
        ),
    ];
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("checkpoint-v1.json")).unwrap()).unwrap();
    let (tsa_root_pem, stamped_checkpoint, notice_line) = match recorded {
        Some(r) => (r.tsa_root_pem.clone(), r.stamped_checkpoint.clone(), r.notice_batch.clone()),
        None => {
            let body = checkpoint["body"].as_str().unwrap();
            let third: [u8; 32] = hex::decode(batches["batches"][2]["header_sha256"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let (root, tokens) = stamp_with_openssl(&[teelog_core::merkle::sha256(body.as_bytes()), third]);
            let line: serde_json::Value = serde_json::from_str(checkpoint["line"].as_str().unwrap()).unwrap();
            let sig = B64.decode(line["sig"].as_str().unwrap()).unwrap();
            let stamped = teelog_core::checkpoint::checkpoint_line(body.as_bytes(), &sig, Some(&tokens[0]));
            (
                root,
                String::from_utf8(stamped).unwrap().trim_end().to_string(),
                notice_batch(&batches, &tokens[1]),
            )
        }
    };
    let lines: Vec<&str> = batches["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["line"].as_str().unwrap())
        .chain([notice_line.as_str()])
        .collect();
    // Exported from the four batches: `selection`'s records, linked to the notice's token.
    let noticed = |selection: Selection| {
        let mut exporter = Exporter::new(selection);
        lines.iter().for_each(|l| exporter.push_line(l.as_bytes()));
        let mut bundle = exporter.finish().unwrap();
        let mut linker = teelog_core::anchor::Linker::new(&bundle, None);
        lines.iter().for_each(|l| linker.push_line(l.as_bytes()));
        linker.finish(&mut bundle).unwrap();
        bundle
    };
    let stream = batches["stream"].as_str().unwrap();
    let after_notice =
        noticed(Selection::Place { stream: stream.into(), epoch: None, seq: 4, index: Some(1) });
    let dated_by_token =
        noticed(Selection::Place { stream: stream.into(), epoch: None, seq: 1, index: Some(1) });
    let with = |bundle: &Bundle, f: &dyn Fn(&mut Bundle)| {
        let mut bundle = bundle.clone();
        f(&mut bundle);
        bundle
    };
    // The record's batch linked by headers 2 and 3 to the checkpoint's tip, seq 3.
    let mut linker = teelog_core::anchor::Linker::new(&good, None);
    for batch in batches["batches"].as_array().unwrap() {
        linker.push_line(batch["line"].as_str().unwrap().as_bytes());
    }
    linker.push_line(stamped_checkpoint.as_bytes());
    let mut linked = good.clone();
    linker.finish(&mut linked).unwrap();
    let relinked = |f: &dyn Fn(&mut Bundle)| {
        let mut bundle = linked.clone();
        f(&mut bundle);
        bundle
    };
    // Changes `member` ("sig" or "timestamp") of the checkpoint line of `b`, in the middle.
    let change_member = |b: &mut Bundle, member: &str| {
        let line: serde_json::Value = serde_json::from_str(&b.checkpoints[0]).unwrap();
        let text = line[member].as_str().unwrap();
        let mut der = B64.decode(text).unwrap();
        let middle = der.len() / 2;
        der[middle] ^= 1;
        b.checkpoints[0] = b.checkpoints[0].replacen(text, &B64.encode(der), 1);
    };
    let linked_cases: Vec<(&str, &str, Bundle)> = vec![
        (
            "linked-to-checkpoint",
            "the record's batch (seq 1) linked by headers 2 and 3 to a gateway checkpoint whose tip is seq 3, stamped by a TSA: sealed no later than the token's time",
            linked.clone(),
        ),
        (
            "chain-header-changed",
            "chain[0] (seq 2) changed: chain[1]'s prev no longer names it",
            relinked(&|b| b.chain[0] = b.chain[0].replacen("\"count\":1", "\"count\":2", 1)),
        ),
        (
            "chain-tip-changed",
            "chain[1] (seq 3, the checkpoint's tip) changed: its hash is not the tip's head",
            relinked(&|b| b.chain[1] = b.chain[1].replacen("12:00:03", "12:00:04", 1)),
        ),
        (
            "chain-header-removed",
            "chain[0] (seq 2) removed: seq 3 links the batch to nothing",
            relinked(&|b| {
                b.chain.remove(0);
            }),
        ),
        (
            "chain-header-repeated",
            "the batch's own header repeated in the chain",
            relinked(&|b| b.chain.push(b.batches[0].header.clone())),
        ),
        ("chain-not-a-header", "a chain entry that is no batch header", relinked(&|b| b.chain[0] = "{\"v\":1}".into())),
        (
            "checkpoint-body-changed",
            "the checkpoint's `at` changed: its signature and its token no longer cover the body",
            relinked(&|b| b.checkpoints[0] = b.checkpoints[0].replacen("12:01:00", "12:02:00", 1)),
        ),
        (
            "checkpoint-token-changed",
            "one byte of the checkpoint's timestamp token changed",
            relinked(&|b| change_member(b, "timestamp")),
        ),
        (
            "checkpoint-signature-changed",
            "one byte of the gateway's signature of the checkpoint changed",
            relinked(&|b| change_member(b, "sig")),
        ),
        (
            "checkpoint-unstamped",
            "the checkpoint's timestamp token removed",
            relinked(&|b| b.checkpoints[0] = checkpoint["line"].as_str().unwrap().to_string()),
        ),
        (
            "sealed-after-notice",
            "record 1 of batch 4 (notice_batch), whose record 0 is a timestamp notice over batch 3: sealed no earlier than the notice's token",
            after_notice.clone(),
        ),
        (
            "notice-changed",
            "one character of the notice's record changed",
            with(&after_notice, &|b| b.notices[0].record = b.notices[0].record.replacen("INFO", "INF0", 1)),
        ),
        (
            "notice-index-changed",
            "the notice claims another position in its batch",
            with(&after_notice, &|b| b.notices[0].index = 1),
        ),
        (
            "notice-elsewhere",
            "the notice names a header the bundle does not carry",
            with(&after_notice, &|b| b.notices[0].header = "00".repeat(32)),
        ),
        (
            "dated-by-token",
            "record 1 of batch 1, linked by headers 2 and 3 to the notice's token over batch 3: sealed no later than its time",
            dated_by_token.clone(),
        ),
        (
            "token-changed",
            "one byte of the token changed",
            with(&dated_by_token, &|b| {
                let mut der = B64.decode(&b.tokens[0].timestamp).unwrap();
                let middle = der.len() / 2;
                der[middle] ^= 1;
                b.tokens[0].timestamp = B64.encode(der);
            }),
        ),
        (
            "token-header-unknown",
            "the token names a header the bundle does not carry",
            with(&dated_by_token, &|b| b.tokens[0].head = "00".repeat(32)),
        ),
    ];
    let key = PublicKey::from_pem(public_key_pem.as_bytes()).unwrap();
    let checkpoint_key_pem = checkpoint["public_key_pem"].as_str().unwrap().to_string();
    let checkpoint_key = PublicKey::from_pem(checkpoint_key_pem.as_bytes()).unwrap();
    let options = VerifyOptions { trusted_keys: vec![key], ..VerifyOptions::default() };
    let at = parse_rfc3339(&now).unwrap();
    let roots = TsaRoots(vec![pem_der(&tsa_root_pem)]);
    let timed = |bundle: &Bundle| {
        check_bundle(bundle, &options, None, Some(&roots), std::slice::from_ref(&checkpoint_key), None)
    };
    let untimed = |bundle: &Bundle| check_bundle(bundle, &options, None, None, &[], Some(at));
    let vectors = cases
        .into_iter()
        .map(|(name, description, bundle)| (name, description, untimed(&bundle), bundle))
        .chain(
            linked_cases
                .into_iter()
                .map(|(name, description, bundle)| (name, description, timed(&bundle), bundle)),
        )
        .map(|(name, description, report, bundle)| Vector {
            name: name.into(),
            description: description.into(),
            ok: report.ok,
            findings: report.findings.iter().map(|f| f.kind.name().to_string()).collect(),
            no_later_than: report.proven.first().and_then(|p| p.no_later_than.as_ref()).map(|b| b.at.clone()),
            no_earlier_than: report
                .proven
                .first()
                .and_then(|p| p.no_earlier_than.as_ref())
                .map(|b| b.at.clone()),
            bundle,
        })
        .collect();
    Vectors {
        comment: "teelog evidence bundle v1 vectors (docs/FORMAT.md §16), exported from batch-v1.json; the vectors from linked-to-checkpoint on are checked with the TSA root and the checkpoint key of checkpoint-v1.json, and without a verification time (notice_batch is sealed when the vectors were written, after its token). The keys are published test keys: never trust them.".into(),
        public_key_pem,
        now,
        tsa_root_pem,
        checkpoint_key_pem,
        stamped_checkpoint,
        notice_batch: notice_line,
        vectors,
    }
}

#[test]
fn evidence_vectors_rebuild_and_each_gets_its_findings() {
    let path = vectors_dir().join("evidence-v1.json");
    let recorded: Option<Vectors> =
        std::fs::read(&path).ok().and_then(|text| serde_json::from_slice(&text).ok());
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_some() {
        let built = build(recorded.as_ref());
        std::fs::write(&path, serde_json::to_string_pretty(&built).unwrap() + "\n").unwrap();
        return;
    }
    let recorded = recorded.expect(
        "evidence-v1.json has the vector layout; after a format change rewrite it with TEELOG_WRITE_VECTORS=1",
    );
    let built = build(Some(&recorded));
    assert_eq!(built, recorded, "the implementation no longer exports or judges as recorded");
    let expected: Vec<(&str, bool, Vec<&str>)> = vec![
        ("good", true, vec![]),
        ("record-changed", false, vec!["record_tampered"]),
        ("proof-changed", false, vec!["record_tampered"]),
        ("index-changed", false, vec!["record_tampered"]),
        ("header-changed", false, vec!["invalid_signature"]),
        ("signature-changed", false, vec!["invalid_signature"]),
        ("document-not-named", false, vec!["malformed"]),
        ("batch-missing", false, vec!["malformed", "malformed"]),
        ("batch-repeated", false, vec!["malformed", "malformed", "malformed"]),
        ("no-record", false, vec!["malformed", "nothing_verified"]),
        ("another-version", false, vec!["malformed"]),
        ("linked-to-checkpoint", true, vec![]),
        ("chain-header-changed", false, vec!["chain_break", "malformed", "malformed", "malformed"]),
        ("chain-tip-changed", false, vec!["checkpoint_mismatch", "malformed", "malformed", "malformed"]),
        ("chain-header-removed", false, vec!["malformed", "malformed"]),
        ("chain-header-repeated", false, vec!["malformed"]),
        ("chain-not-a-header", false, vec!["malformed", "malformed", "malformed"]),
        ("checkpoint-body-changed", false, vec!["invalid_checkpoint", "time_anomaly"]),
        ("checkpoint-token-changed", false, vec!["time_anomaly"]),
        ("checkpoint-signature-changed", false, vec!["invalid_checkpoint"]),
        ("checkpoint-unstamped", false, vec!["malformed", "malformed", "malformed"]),
        ("sealed-after-notice", true, vec![]),
        ("notice-changed", false, vec!["record_tampered"]),
        ("notice-index-changed", false, vec!["record_tampered"]),
        ("notice-elsewhere", false, vec!["malformed"]),
        ("dated-by-token", true, vec![]),
        ("token-changed", false, vec!["time_anomaly"]),
        ("token-header-unknown", false, vec!["malformed", "malformed", "malformed"]),
    ];
    let got: Vec<(&str, bool, Vec<&str>)> = recorded
        .vectors
        .iter()
        .map(|v| (v.name.as_str(), v.ok, v.findings.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(recorded.vectors[0].bundle.records[0].proof.len(), 2, "record 1 of 3 has a two-hash path");
    // The checkpoint dates the record: after the batch was sealed, by the token's time.
    let linked = recorded.vectors.iter().find(|v| v.name == "linked-to-checkpoint").unwrap();
    assert_eq!(linked.bundle.chain.len(), 2);
    let bound = linked.no_later_than.as_deref().expect("an upper bound");
    assert!(bound > "2026-12-02T12:00:01", "{bound}");
    assert!(recorded.vectors.iter().filter(|v| v.name.starts_with("chain-")).all(|v| !v.ok));
    // The notice sealed in the record's batch dates it from below; its token, over batch 3's
    // header, dates batch 1 from above through headers 2 and 3.
    let named = |name: &str| recorded.vectors.iter().find(|v| v.name == name).unwrap();
    let after = named("sealed-after-notice");
    assert!(
        after.no_earlier_than.is_some() && after.bundle.chain.is_empty() && after.bundle.notices.len() == 1
    );
    let dated = named("dated-by-token");
    assert!(dated.no_later_than.is_some() && dated.bundle.chain.len() == 2 && dated.bundle.tokens.len() == 1);
}

#[test]
fn a_bundle_larger_than_export_makes_is_refused_whole() {
    let recorded: Vectors =
        serde_json::from_slice(&std::fs::read(vectors_dir().join("evidence-v1.json")).unwrap()).unwrap();
    let mut bundle = recorded.vectors[0].bundle.clone();
    let record = bundle.records[0].clone();
    bundle.records = vec![record; teelog_core::evidence::MAX_BUNDLE_RECORDS + 1];
    let report = check_bundle(&bundle, &VerifyOptions::default(), None, None, &[], None);
    let found: Vec<(&str, &str)> =
        report.findings.iter().map(|f| (f.kind.name(), f.detail.as_str())).collect();
    assert_eq!(found, [("malformed", "10001 records: a bundle holds at most 10000")]);
    assert!(!report.ok && report.proven.is_empty());
}
