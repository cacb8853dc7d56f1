//! The refusal notice and big-integer vectors of docs/FORMAT.md §2.2 and §2.4
//! (`docs/vectors/notice-v1.json`), rebuilt through the signer's own path and compared byte for
//! byte. `TEELOG_WRITE_VECTORS=1` rewrites the file after a deliberate format change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use serde::{Deserialize, Serialize};
use teelog_core::batch::{Input, ParsedBatch, Taken};
use teelog_core::merkle::sha256;
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::{BatchBuilder, ChainHead, SigAlg, SoftwareKey, SoftwareSigner};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Case {
    /// The input line, without its newline.
    input: String,
    source: String,
    /// The signer's clock when it took the input.
    now: String,
    /// The record that took its place in the batch: the notice, or the record itself.
    record: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vectors {
    comment: String,
    refused: Vec<Case>,
    accepted: Vec<Case>,
}

fn path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/notice-v1.json")
}

/// The record `input` becomes in a batch, and whether it was refused.
fn signed(input: &str, source: &str, now: &str) -> (String, bool) {
    let now = parse_rfc3339(now).unwrap();
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    let signer = SoftwareSigner::new(key, None);
    let mut builder = BatchBuilder::new();
    let taken = builder
        .take(Input::Json(input.as_bytes()), &|| source.to_string(), &|| now, |_| Err("no seal expected"))
        .unwrap();
    let mut line = Vec::new();
    builder
        .seal(
            &mut ChainHead::new_epoch("v", None, &teelog_core::random::SystemRandom).unwrap(),
            &signer,
            now,
            &mut line,
        )
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert!(ParsedBatch::parse(&line[..line.len() - 1]).is_ok());
    // The record exactly as the line holds it.
    let text = std::str::from_utf8(&line).unwrap();
    let start = text.find("\"records\":[").unwrap() + "\"records\":[".len();
    let record = text[start..text.len() - 3].to_string();
    assert_eq!(value["records"].as_array().unwrap().len(), 1);
    (record, matches!(taken, Taken::Refused(_)))
}

fn build() -> Vectors {
    let now = "2026-12-02T12:00:00Z";
    let case = |input: &str, source: &str| {
        let (record, _) = signed(input, source, now);
        Case { input: input.into(), source: source.into(), now: now.into(), record }
    };
    Vectors {
        comment: "Refusal notices (docs/FORMAT.md §2.4): each refused input and the notice that takes its place; and integers beyond ±2^53, which become strings (§2.2).".into(),
        refused: vec![
            case(r#"{"message": 42}"#, "stdin:3"),
            case("not json", "stdin:4"),
            case(r#"{"a":1,"a":2}"#, "/var/log/app.log:46"),
            case(r#"{"ts":"noon","message":"x"}"#, "otlp-http record 3"),
        ],
        accepted: vec![case(
            r#"{"ts":"2026-12-02T12:00:00Z","n":12345678901234567890,"m":[-9007199254740993,9007199254740992,1e21]}"#,
            "stdin:5",
        )],
    }
}

#[test]
fn notice_vectors_rebuild_byte_for_byte() {
    let built = build();
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_some() {
        std::fs::write(path(), serde_json::to_string_pretty(&built).unwrap() + "\n").unwrap();
    }
    let recorded: Vectors =
        serde_json::from_slice(&std::fs::read(path()).expect("docs/vectors/notice-v1.json")).unwrap();
    assert_eq!(recorded, built);
    for case in &recorded.refused {
        let (_, refused) = signed(&case.input, &case.source, &case.now);
        assert!(refused, "{}", case.input);
        let notice: serde_json::Value = serde_json::from_str(&case.record).unwrap();
        assert_eq!(notice["teelog_notice"], "record_refused");
        assert_eq!(notice["refused_source"], case.source.as_str());
        assert_eq!(notice["refused_bytes"], case.input.len());
        assert_eq!(notice["refused_sha256"], hex::encode(sha256(case.input.as_bytes())));
    }
    for case in &recorded.accepted {
        assert!(!signed(&case.input, &case.source, &case.now).1, "{}", case.input);
    }
}
