//! `teelog verify` on input made by whoever controls the storage (issue 14, classes 1 and 8):
//! files that are not files, floods of garbage, and text meant to fool a terminal. Every run
//! finishes, names what it refused, and never reads OK.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::{keygen, report, s, teelog};

const RECORDS: &[u8] = b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n";

fn signed_store(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let id = dir.join("id");
    let store = dir.join("store");
    keygen(&id, &[]);
    assert!(teelog(&["sign", "--identity", s(&id), "--store", s(&store)], RECORDS).status.success());
    (store, id.join("public-key.pem"))
}

#[test]
fn store_segments_that_are_links_fifos_or_devices_are_named_and_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (store, key) = signed_store(dir.path());
    // Planted by whoever controls the store: reading either would never end.
    symlink("/dev/zero", store.join("segment-000000000007.ndjson")).unwrap();
    let fifo = store.join("segment-000000000008.ndjson");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (code, json, kinds) =
        report(&teelog(&["verify", "--store", s(&store), "--pubkey", s(&key), "--json"], b""));
    assert_eq!((code, kinds), (1, vec!["malformed".to_string(); 2]), "{json}");
    let details: Vec<&str> =
        json["findings"].as_array().unwrap().iter().map(|f| f["detail"].as_str().unwrap()).collect();
    assert!(
        details.iter().any(|d| d.contains("segment-000000000007.ndjson") && d.contains("a symbolic link")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("segment-000000000008.ndjson") && d.contains("a FIFO")),
        "{details:?}"
    );
    // The genuine segment was still read.
    assert_eq!(json["records"], 2);
}

#[test]
fn findings_are_capped_per_kind_and_the_rest_counted() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.ndjson");
    let lines: String = (0..2500).map(|i| format!("not json {i}\n")).collect();
    std::fs::write(&garbage, lines).unwrap();
    let (_, key) = signed_store(dir.path());
    let (code, json, _) = report(&teelog(&["verify", s(&garbage), "--pubkey", s(&key), "--json"], b""));
    assert_eq!(code, 1);
    assert_eq!(json["findings"].as_array().unwrap().len(), 1000, "one kind, listed up to the cap");
    assert_eq!(json["omitted_findings"]["malformed"], 1500);
    let text = String::from_utf8_lossy(&teelog(&["verify", s(&garbage), "--pubkey", s(&key)], b"").stdout)
        .into_owned();
    assert!(
        text.contains("FAIL malformed … and 1500 more not listed") && text.contains(": 2500 findings"),
        "{text}"
    );
}

#[test]
fn a_ship_config_whose_section_is_a_value_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ship.toml");
    let spool = dir.path().join("spool");
    // Every section a flag writes into, each given as a value of another type.
    for (section, value, flag, key) in [
        ("spool", "\"not a table\"", vec!["--spool", s(&spool)], "dir"),
        ("spool", "[1, 2]", vec!["--keep-spool"], "keep"),
        ("sources", "7", vec!["--stdin"], "stdin"),
        ("sources", "true", vec!["--otlp-http", "127.0.0.1:4318"], "otlp_http"),
        ("metrics", "\"x\"", vec!["--metrics", "127.0.0.1:9464"], "listen"),
        ("batch", "1.5", vec!["--heartbeat", "1s"], "heartbeat"),
        ("batch", "2026-12-02T00:00:00Z", vec!["--max-records", "5"], "max_records"),
    ] {
        std::fs::write(&config, format!("{section} = {value}\n")).unwrap();
        let out = teelog(&[&["ship", "--config", s(&config)][..], &flag].concat(), b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{section} = {value}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "\"{section}\" is not a table ([{section}]), so a flag cannot set {section}.{key}"
            )),
            "{section} = {value}: {stderr}"
        );
    }
}
