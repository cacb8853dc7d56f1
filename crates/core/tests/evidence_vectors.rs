//! Evidence bundle vectors (docs/vectors/evidence-v1.json, docs/FORMAT.md §16): a bundle exported
//! from the batch vectors, and one changed copy for each part a bundle carries, each with the
//! findings it must get. `TEELOG_WRITE_VECTORS=1` rewrites the file; otherwise it is rebuilt and
//! compared, and every vector is checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use teelog_core::evidence::{check_bundle, Bundle, Exporter, Selection};
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::{PublicKey, VerifyOptions};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vectors {
    comment: String,
    /// The published test key of docs/vectors/batch-v1.json, which signed the batches.
    public_key_pem: String,
    /// The verification time.
    now: String,
    vectors: Vec<Vector>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vector {
    name: String,
    description: String,
    bundle: Bundle,
    ok: bool,
    /// The kinds of the findings, in order.
    findings: Vec<String>,
}

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors")
}

/// The vectors, rebuilt from the batch vectors.
fn build() -> Vectors {
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
        ("no-record", "the bundle's records were removed", changed(&|b| b.records.clear())),
        (
            "another-version",
            "a bundle version this teelog does not read",
            changed(&|b| b.teelog_evidence = 2),
        ),
    ];
    let key = PublicKey::from_pem(public_key_pem.as_bytes()).unwrap();
    let options = VerifyOptions { trusted_keys: vec![key], ..VerifyOptions::default() };
    let at = parse_rfc3339(&now).unwrap();
    let vectors = cases
        .into_iter()
        .map(|(name, description, bundle)| {
            let report = check_bundle(&bundle, &options, None, None, Some(at));
            Vector {
                name: name.into(),
                description: description.into(),
                ok: report.ok,
                findings: report.findings.iter().map(|f| f.kind.name().to_string()).collect(),
                bundle,
            }
        })
        .collect();
    Vectors {
        comment: "teelog evidence bundle v1 vectors (docs/FORMAT.md §16), exported from batch-v1.json; the key is the published test key: never trust it.".into(),
        public_key_pem,
        now,
        vectors,
    }
}

#[test]
fn evidence_vectors_rebuild_and_each_gets_its_findings() {
    let path = vectors_dir().join("evidence-v1.json");
    let built = build();
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&built).unwrap() + "\n").unwrap();
        return;
    }
    let recorded: Vectors = serde_json::from_slice(&std::fs::read(&path).expect("docs/vectors/evidence-v1.json"))
        .expect("evidence-v1.json has the vector layout; after a format change rewrite it with TEELOG_WRITE_VECTORS=1");
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
        ("no-record", false, vec!["malformed", "nothing_verified"]),
        ("another-version", false, vec!["malformed"]),
    ];
    let got: Vec<(&str, bool, Vec<&str>)> = recorded
        .vectors
        .iter()
        .map(|v| (v.name.as_str(), v.ok, v.findings.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(recorded.vectors[0].bundle.records[0].proof.len(), 2, "record 1 of 3 has a two-hash path");
}
