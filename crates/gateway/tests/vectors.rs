//! The gateway spool vectors of docs/FORMAT.md §15, rebuilt and compared byte for byte, and read
//! back. `TEELOG_WRITE_VECTORS=1 cargo test -p teelog-gateway --test vectors` rewrites them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::path::PathBuf;

use serde_json::{json, Value};
use teelog_gateway::envelope;

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/relay-v1.json")
}

#[test]
fn the_gateway_spool_vectors_match() {
    let batch: Value =
        serde_json::from_slice(&std::fs::read(path().with_file_name("batch-v1.json")).unwrap()).unwrap();
    let line = batch["batches"][0]["line"].as_str().unwrap();
    let attestation = r#"{"v":1,"attestation":"ZG9jdW1lbnQ="}"#;
    let cases = [
        (Some("payments"), Some(true), line),
        (Some("payments"), None, attestation),
        (None, Some(false), "not a batch"),
    ];
    let expected: Vec<Value> = cases
        .iter()
        .map(|(stream, valid, line)| {
            let mut spooled = Vec::new();
            envelope::encode(&mut spooled, *stream, *valid, line.as_bytes());
            json!({"stream": stream, "signature_valid": valid, "line": line, "spool_line": String::from_utf8(spooled).unwrap()})
        })
        .collect();
    let mut file: Value = serde_json::from_slice(&std::fs::read(path()).unwrap()).unwrap();
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_some() {
        file["gateway_spool"] = json!(expected);
        std::fs::write(path(), serde_json::to_string_pretty(&file).unwrap() + "\n").unwrap();
    }
    assert_eq!(file["gateway_spool"], json!(expected));
    for case in file["gateway_spool"].as_array().unwrap() {
        let spooled = case["spool_line"].as_str().unwrap();
        let entry = envelope::decode(spooled.strip_suffix('\n').unwrap().as_bytes());
        assert_eq!(entry.line, case["line"].as_str().unwrap().as_bytes());
        assert_eq!(entry.stream, case["stream"].as_str());
        assert_eq!(entry.signature_valid, case["signature_valid"].as_bool());
    }
}
