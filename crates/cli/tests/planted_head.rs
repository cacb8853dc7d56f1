//! A planted line in a signer's output — a well-formed header with a bogus signature, a higher
//! seq and a newer `sealed_at`, or one validly signed under a root nobody trusts — never becomes
//! the head a new epoch links to or a document attests (docs/FORMAT.md §5.3), with the real
//! `teelog` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::{keygen, report, s, teelog};
use serde_json::Value;
use teelog_core::merkle::sha256;

const RECORDS: &[u8] = b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n{\"message\":\"c\"}\n";

fn segments(store: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .collect();
    paths.sort();
    paths
}

/// The batch lines of the store, in order: each line's header (as JSON) and its hash.
fn headers(store: &Path) -> Vec<(Value, String)> {
    let mut found = Vec::new();
    for path in segments(store) {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let Some(start) = line.find("\"header\":") else { continue };
            let rest = &line[start + "\"header\":".len()..];
            let end = rest.find(",\"sig\":").unwrap();
            let bytes = &rest[..end];
            found.push((serde_json::from_str(bytes).unwrap(), hex::encode(sha256(bytes.as_bytes()))));
        }
    }
    found
}

/// Appends to the newest segment a line shaped like the newest batch's successor, seq 99 and
/// sealed a day later, whose signature is 64 zero bytes.
fn plant(store: &Path) -> String {
    let (newest, hash) = headers(store).pop().unwrap();
    let mut header = newest.clone();
    header["seq"] = 99.into();
    header["prev"] = hash.into();
    header["count"] = 0.into();
    header["root"] = hex::encode(sha256(b"")).into();
    header["hints"] = hex::encode(sha256(b"")).into();
    header["first_ts"] = Value::Null;
    header["last_ts"] = Value::Null;
    header["sealed_at"] = "2099-01-01T00:00:00.000000000Z".into();
    // serde_json sorts the members, as canonical JSON does for these ASCII names.
    let header = header.to_string();
    let sig = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
    let line = format!("{{\"v\":1,\"header\":{header},\"sig\":\"{sig}\",\"hints\":\"\",\"records\":[]}}\n");
    append(&segments(store).pop().unwrap(), line.as_bytes());
    hex::encode(sha256(header.as_bytes()))
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

fn sign(identity: &Path, store: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["sign", "--identity", s(identity), "--store", s(store), "--batch-size", "1"];
    args.extend_from_slice(extra);
    teelog(&args, RECORDS)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first header of each epoch after `before` headers: its seq and prev.
fn first_after(store: &Path, before: usize) -> (u64, String) {
    let (header, _) = &headers(store)[before];
    (header["seq"].as_u64().unwrap(), header["prev"].as_str().unwrap().to_string())
}

#[test]
fn a_signer_never_links_a_new_epoch_to_a_planted_head() {
    let dir = tempfile::tempdir().unwrap();
    let (id, store) = (dir.path().join("id"), dir.path().join("store"));
    keygen(&id, &[]);
    assert!(sign(&id, &store, &[]).status.success());
    let genuine = headers(&store).pop().unwrap().1;
    plant(&store);

    // With its state: it continues its own epoch after its own last batch.
    assert!(sign(&id, &store, &[]).status.success());
    assert_eq!(first_after(&store, 4), (4, genuine));
    let genuine = headers(&store).pop().unwrap().1;
    let planted = plant(&store);

    // Its state lost: a new epoch, linked to its own newest batch, not to the planted one.
    std::fs::remove_dir_all(id.join("state")).unwrap();
    let out = sign(&id, &store, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("passed over 2 batch(es) this signer cannot verify, the newest seq 99"),
        "{}",
        stderr(&out)
    );
    let (seq, prev) = first_after(&store, 8);
    assert_eq!((seq, prev.as_str()), (1, genuine.as_str()), "not the planted {planted}");

    // `verify` finds the two planted lines, and every hand-over sound. (What else an unsigned
    // line costs the report, such as a gap up to its seq, is the verifier's business.)
    let pubkey = id.join("public-key.pem");
    let (code, json, kinds) =
        report(&teelog(&["verify", "--json", "--store", s(&store), "--pubkey", s(&pubkey)], b""));
    assert_eq!(code, 1, "{json}");
    assert!(!kinds.iter().any(|k| k == "chain_break"), "{json}");
    let bad: Vec<u64> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "invalid_signature")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(bad, [99, 99], "{json}");
}

#[test]
fn a_new_identity_links_only_to_a_head_it_is_told_to_trust() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new, store) = (dir.path().join("old"), dir.path().join("new"), dir.path().join("store"));
    keygen(&old, &[]);
    keygen(&new, &[]);
    assert!(sign(&old, &store, &[]).status.success());
    let genuine = headers(&store).pop().unwrap().1;
    plant(&store);

    // Nothing there it can verify: it refuses to link, and says what to give it.
    let out = sign(&new, &store, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("none signed by a key this signer can verify")
            && stderr(&out).contains("--pubkey"),
        "{}",
        stderr(&out)
    );
    assert_eq!(headers(&store).len(), 4, "nothing was written");

    // Given the old signer's key: linked to its newest batch, not to the planted line.
    let old_key = old.join("public-key.pem");
    let out = sign(&new, &store, &["--pubkey", s(&old_key)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(first_after(&store, 4), (1, genuine));
}

#[test]
fn keygen_follow_attests_only_a_head_it_can_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (old, store) = (path("old"), path("store"));
    keygen(&old, &["--dev"]);
    assert!(sign(&old, &store, &[]).status.success());
    let genuine = headers(&store).pop().unwrap().1;
    plant(&store);

    // A forger's batch, validly signed by a key its own dev document binds, newer than all.
    let (forger, forged) = (path("forger"), path("forged"));
    keygen(&forger, &["--dev"]);
    let out =
        teelog(&["sign", "--identity", s(&forger), "--store", s(&forged)], b"{\"message\":\"forged\"}\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let forged_lines = std::fs::read(segments(&forged).pop().unwrap()).unwrap();
    append(&segments(&store).pop().unwrap(), &forged_lines);
    let forged_head = headers(&store).pop().unwrap().1;

    let attested = |id: &Path| -> String {
        let meta: Value = serde_json::from_slice(&std::fs::read(id.join("identity.json")).unwrap()).unwrap();
        meta["previous_head"].as_str().unwrap().to_string()
    };
    // Trusting nothing there: refused, naming what to give.
    let out = teelog(&["keygen", "--dev", "--out", s(&path("a")), "--follow", s(&store)], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("none signed by a key you trust"), "{}", stderr(&out));

    // Trusting the old key, or the old identity's dev root: the genuine head, the planted line
    // and the forger's batch passed over and said so.
    let (old_key, old_root) = (old.join("public-key.pem"), old.join("dev-root.pem"));
    for (name, trust) in [("b", ["--pubkey", s(&old_key)]), ("c", ["--trust-root", s(&old_root)])] {
        let out_dir = path(name);
        let mut args = vec!["keygen", "--dev", "--out", s(&out_dir), "--follow", s(&store)];
        args.extend(trust);
        let out = teelog(&args, b"");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("passed over 2 batch(es)"), "{}", stderr(&out));
        assert_eq!(attested(&path(name)), genuine);
    }

    // Trusting the forger's root too makes its batch the newest trusted head: trust is the
    // operator's choice, and only what it names counts.
    let forger_root = forger.join("dev-root.pem");
    let out = teelog(
        &["keygen", "--dev", "--out", s(&path("d")), "--follow", s(&store), "--trust-root", s(&forger_root)],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(attested(&path("d")), forged_head);
}

/// The failure vector of this class (docs/vectors/failures/planted-head.json): what a signer
/// that trusted a planted line would have written, and what `verify` must say of it. Rewritten
/// with TEELOG_WRITE_VECTORS=1 (signatures are randomised); otherwise run and checked.
#[test]
fn planted_head_failure_vector() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/failures/planted-head.json");
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_some() {
        write_planted_head_vector(&path);
    }
    let vector: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in vector["files"].as_object().unwrap() {
        std::fs::write(dir.path().join(name), text.as_str().unwrap()).unwrap();
    }
    let args: Vec<String> = vector["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("$DIR", s(dir.path())))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, json, _) = report(&teelog(&args, b""));
    assert_eq!(i64::from(code), vector["exit"].as_i64().unwrap(), "{json}");
    let shape = |f: &Value| ["kind", "stream", "epoch", "seq", "record_index"].map(|m| f[m].clone()).to_vec();
    let found: Vec<_> = json["findings"].as_array().unwrap().iter().map(shape).collect();
    let expected: Vec<_> = vector["findings"].as_array().unwrap().iter().map(shape).collect();
    assert_eq!(found, expected, "{json}");
}

fn write_planted_head_vector(path: &Path) {
    use teelog_core::batch::SoftwareSigner;
    use teelog_core::{BatchBuilder, ChainHead, HeaderSigner, SoftwareKey};
    let batch_vectors: Value = serde_json::from_slice(
        &std::fs::read(path.parent().unwrap().parent().unwrap().join("batch-v1.json")).unwrap(),
    )
    .unwrap();
    let key =
        SoftwareKey::from_pkcs8_pem(batch_vectors["private_key_pem"].as_str().unwrap().as_bytes()).unwrap();
    let signer = SoftwareSigner::new(key, None);
    let t = |s: &str| teelog_core::timestamp::parse_rfc3339(s).unwrap();
    let mut lines = String::new();
    let mut builder = BatchBuilder::new();
    let seal = |builder: &mut BatchBuilder, chain: &mut ChainHead, at: &str, record: &str| {
        builder.push_input(record.as_bytes(), &|| t(at)).unwrap();
        let mut line = Vec::new();
        builder.seal(chain, &signer, t(at), &mut line).unwrap();
        String::from_utf8(line).unwrap()
    };
    let mut a = ChainHead {
        stream: "app".into(),
        epoch: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
        next_seq: 1,
        prev: None,
        prev_sealed_at: None,
    };
    lines += &seal(&mut builder, &mut a, "2026-12-02T10:00:00Z", r#"{"message":"one"}"#);
    lines += &seal(&mut builder, &mut a, "2026-12-02T10:01:00Z", r#"{"message":"two"}"#);
    // The planted line: the epoch's next header, sealed later, its signature 64 zero bytes.
    let empty = hex::encode(sha256(b""));
    let planted = teelog_core::Header {
        v: 1,
        stream: "app".into(),
        epoch: a.epoch.clone(),
        seq: 3,
        prev: a.prev.clone(),
        count: 0,
        root: empty.clone(),
        hints: empty,
        first_ts: None,
        last_ts: None,
        sealed_at: "2026-12-02T10:05:00.000000000Z".into(),
        measurement: None,
        attestation: None,
        key_id: signer.public_key().id_hex(),
        alg: "ES256".into(),
    }
    .to_canonical_bytes()
    .unwrap();
    let sig = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
    lines += &format!(
        "{{\"v\":1,\"header\":{},\"sig\":\"{sig}\",\"hints\":\"\",\"records\":[]}}\n",
        String::from_utf8(planted.clone()).unwrap()
    );
    // A new epoch linked to it, as a signer that believed the planted line would have made.
    let mut b = ChainHead {
        stream: "app".into(),
        epoch: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into(),
        next_seq: 1,
        prev: Some(hex::encode(sha256(&planted))),
        prev_sealed_at: None,
    };
    lines += &seal(&mut builder, &mut b, "2026-12-02T10:10:00Z", r#"{"message":"three"}"#);
    let vector = serde_json::json!({
        "class": "4. Epoch hand-over rules",
        "description": "A well-formed header with a bogus signature was planted after an epoch's last batch, and a new epoch links to it: the planted line is an invalid signature and the hand-over a chain break (teelog's own signers never link to a head they cannot verify, docs/FORMAT.md §5.3).",
        "files": {
            "input.ndjson": lines,
            "key.pem": batch_vectors["public_key_pem"],
        },
        "args": ["verify", "$DIR/input.ndjson", "--pubkey", "$DIR/key.pem", "--json"],
        "exit": 1,
        "findings": [],
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // The findings are what the verifier says; filled in from a run of the binary.
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in vector["files"].as_object().unwrap() {
        std::fs::write(dir.path().join(name), text.as_str().unwrap()).unwrap();
    }
    let input = dir.path().join("input.ndjson");
    let key = dir.path().join("key.pem");
    let (_, json, _) = report(&teelog(&["verify", s(&input), "--pubkey", s(&key), "--json"], b""));
    let findings: Vec<Value> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            serde_json::json!({
                "kind": f["kind"], "stream": f["stream"], "epoch": f["epoch"], "seq": f["seq"], "record_index": f["record_index"],
            })
        })
        .collect();
    let mut vector = vector;
    vector["findings"] = findings.into();
    std::fs::write(path, serde_json::to_string_pretty(&vector).unwrap() + "\n").unwrap();
}
