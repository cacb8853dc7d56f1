//! The gateway checkpoint vector of docs/FORMAT.md §17 (`docs/vectors/checkpoint-v1.json`): the
//! body is rebuilt byte for byte from its members, the signature (randomised ECDSA) is verified,
//! and every flipped byte of the line must fail. `TEELOG_WRITE_VECTORS=1` rewrites the file (with
//! a fresh signature) after a deliberate format change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use serde::{Deserialize, Serialize};
use teelog_core::checkpoint::{sign, signed_message, ParsedCheckpoint, Tip};
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::{PublicKey, SoftwareKey};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Vector {
    comment: String,
    private_key_pem: String,
    public_key_pem: String,
    key_id: String,
    stream: String,
    at: String,
    tips: Vec<Tip>,
    body: String,
    signed_message_hex: String,
    sig: String,
    line: String,
}

fn path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors").join(name)
}

/// The checkpoint a gateway would sign after storing the three batches of batch-v1.json.
fn build() -> Vector {
    let batches: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path("batch-v1.json")).unwrap()).unwrap();
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();
    let last = batches["batches"].as_array().unwrap().last().unwrap();
    let tips = vec![Tip {
        epoch: text(&batches["epoch"]),
        head: text(&last["header_sha256"]),
        seq: last["seq"].as_u64().unwrap(),
    }];
    let key = SoftwareKey::from_pkcs8_pem(text(&batches["private_key_pem"]).as_bytes()).unwrap();
    let at = "2026-12-02T12:01:00.000000000Z";
    let stream = text(&batches["stream"]);
    let line = sign(&key, &stream, parse_rfc3339(at).unwrap(), tips.clone()).unwrap().line(None);
    let line = String::from_utf8(line).unwrap().trim_end().to_string();
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    let body = line["{\"v\":1,\"checkpoint\":".len()..line.find(",\"sig\":").unwrap()].to_string();
    Vector {
        comment: "teelog gateway checkpoint v1 (docs/FORMAT.md §17) over the batches of batch-v1.json, signed with its published test key: never trust it.".into(),
        private_key_pem: text(&batches["private_key_pem"]),
        public_key_pem: text(&batches["public_key_pem"]),
        key_id: text(&batches["key_id"]),
        stream,
        at: at.into(),
        tips,
        signed_message_hex: hex::encode(signed_message(body.as_bytes())),
        body,
        sig: text(&parsed["sig"]),
        line,
    }
}

#[test]
fn the_checkpoint_vector_is_rebuilt_and_verifies() {
    let built = build();
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_some() {
        let json = serde_json::to_string_pretty(&built).unwrap() + "\n";
        std::fs::write(path("checkpoint-v1.json"), json).unwrap();
    }
    let stored: Vector = serde_json::from_slice(&std::fs::read(path("checkpoint-v1.json")).unwrap()).unwrap();
    // Everything but the randomised signature (and the line that carries it) is byte for byte.
    assert_eq!(stored.body, built.body);
    assert_eq!(stored.signed_message_hex, built.signed_message_hex);
    assert_eq!((&stored.tips, &stored.key_id, &stored.at), (&built.tips, &built.key_id, &built.at));
    let key = PublicKey::from_pem(stored.public_key_pem.as_bytes()).unwrap();
    assert_eq!(key.id_hex(), stored.key_id);
    let parsed = ParsedCheckpoint::parse(stored.line.as_bytes()).unwrap();
    assert_eq!(parsed.verify(std::slice::from_ref(&key)), Ok(()));
    assert!(stored.line.contains(&stored.body) && stored.line.contains(&stored.sig));
    for i in 0..stored.line.len() {
        let mut flipped = stored.line.clone().into_bytes();
        flipped[i] ^= 0x01;
        let verifies =
            ParsedCheckpoint::parse(&flipped).is_ok_and(|p| p.verify(std::slice::from_ref(&key)).is_ok());
        assert!(!verifies, "byte {i} flipped and the checkpoint still verifies");
    }
}
