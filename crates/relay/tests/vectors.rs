//! The relay test vectors of docs/FORMAT.md §14, rebuilt and compared byte for byte, and read
//! back. `TEELOG_WRITE_VECTORS=1 cargo test -p teelog-relay --test vectors` rewrites the file
//! after a deliberate format change (the gateway's spool part is written by teelog-gateway's
//! vectors test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::path::PathBuf;

use serde_json::{json, Value};
use teelog_relay::{frame, FrameReader, Head, Hello, ServerMessage, StreamHeads, Welcome};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/relay-v1.json")
}

/// The members of the file this test writes.
const KEYS: [&str; 7] =
    ["hello", "opening_hex", "hello_heads", "opening_heads_hex", "line", "line_frame_hex", "server"];

/// The relay part of the vectors, from their inputs.
fn relay_part(line: &str) -> Value {
    let hello = Hello::new("payments", Some("s3cret".into()), false);
    let asking = Hello::new("payments", None, true);
    let messages = [
        ServerMessage::Welcome(Welcome::Name("teelog-gateway 0.1.0".into())),
        ServerMessage::Welcome(Welcome::Heads(StreamHeads {
            gateway: "teelog-gateway 0.1.0".into(),
            tips: 1,
            heads: vec![Head {
                epoch: "00112233445566778899aabbccddeeff".into(),
                seq: 42,
                hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
                sealed_at: "2026-01-02T03:04:05.000000006Z".into(),
            }],
        })),
        ServerMessage::Ack(1),
        ServerMessage::Error("the hello carries no valid bearer token".into()),
    ];
    json!({
        "hello": hello,
        "opening_hex": hex::encode(hello.opening()),
        "hello_heads": asking,
        "opening_heads_hex": hex::encode(asking.opening()),
        "line": line,
        "line_frame_hex": hex::encode(frame(line.as_bytes())),
        "server": messages.iter().map(|m| json!({"message": m, "frame_hex": hex::encode(m.to_frame())})).collect::<Vec<_>>(),
    })
}

#[test]
fn the_relay_vectors_match() {
    let batch: Value =
        serde_json::from_slice(&std::fs::read(path().with_file_name("batch-v1.json")).unwrap()).unwrap();
    let line = batch["batches"][0]["line"].as_str().unwrap();
    let expected = relay_part(line);
    let mut file: Value =
        std::fs::read(path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(json!({}));
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_some() {
        file["comment"] = json!("teelog relay protocol and gateway spool test vectors (docs/FORMAT.md §14, §15): a client's opening (magic and hello frame), one asking for the stream's heads, a line frame carrying the first batch line of batch-v1.json, each kind of server message as a frame (both welcome shapes), and the gateway's spool lines for a valid batch, an attestation line and a malformed line.");
        for key in KEYS {
            file[key] = expected[key].clone();
        }
        std::fs::write(path(), serde_json::to_string_pretty(&file).unwrap() + "\n").unwrap();
    }
    for key in KEYS {
        assert_eq!(file[key], expected[key], "{key}");
    }

    // And read back: the server side finds the hello and the line in the bytes.
    let mut reader = FrameReader::server();
    reader.push(&hex::decode(file["opening_hex"].as_str().unwrap()).unwrap());
    reader.push(&hex::decode(file["line_frame_hex"].as_str().unwrap()).unwrap());
    let hello = Hello::parse(reader.next_frame().unwrap().unwrap()).unwrap();
    reader.set_max(1 << 20);
    assert_eq!(hello.token.as_deref(), Some("s3cret"));
    assert_eq!(reader.next_frame().unwrap().unwrap(), line.as_bytes());
    let mut reader = FrameReader::server();
    reader.push(&hex::decode(file["opening_heads_hex"].as_str().unwrap()).unwrap());
    assert!(Hello::parse(reader.next_frame().unwrap().unwrap()).unwrap().heads);
    for server in file["server"].as_array().unwrap() {
        let mut client = FrameReader::client();
        client.push(&hex::decode(server["frame_hex"].as_str().unwrap()).unwrap());
        let message = ServerMessage::parse(client.next_frame().unwrap().unwrap()).unwrap();
        assert_eq!(serde_json::to_value(&message).unwrap(), server["message"]);
    }
}
