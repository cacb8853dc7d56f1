//! The dev provider end to end: keygen --dev, sign into the store, verify with and without the
//! dev root, and the ways a document can be missing or forged.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn teelog(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_teelog"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn report(out: &Output) -> (i32, Value, Vec<String>) {
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let kinds = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect();
    (out.status.code().unwrap(), json, kinds)
}

const RECORDS: &[u8] = b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n{\"message\":\"c\"}\n";

#[test]
fn dev_identities_verify_only_with_their_root() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    let store = dir.path().join("store");
    let pcr0 = "11".repeat(48);
    let out = teelog(
        &[
            "keygen",
            "--dev",
            "--out",
            s(&id),
            "--pcr",
            &format!("0={pcr0}"),
            "--pcr",
            &format!("1={}", "22".repeat(48)),
            "--pcr",
            &format!("2={}", "33".repeat(48)),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(teelog(&["sign", "--identity", s(&id), "--store", s(&store), "--batch-size", "2"], RECORDS)
        .status
        .success());
    let root = id.join("dev-root.pem");

    let (code, json, kinds) = report(&teelog(
        &["verify", "--store", s(&store), "--trust-root", s(&root), "--expect-measurement", &pcr0, "--json"],
        b"",
    ));
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(json["records"], 3);
    let human = teelog(&["verify", "--store", s(&store), "--trust-root", s(&root)], b"");
    assert!(String::from_utf8_lossy(&human.stdout).contains("NOTE 2 batches are attested by a dev root"));

    // Without the dev root nothing is trusted, not even with the public key at hand.
    let (code, _, kinds) = report(&teelog(
        &["verify", "--store", s(&store), "--pubkey", s(&id.join("public-key.pem")), "--json"],
        b"",
    ));
    assert_eq!((code, kinds), (1, vec!["untrusted_attestation".to_string(); 2]));

    // Another dev root does not vouch for this document.
    let other = dir.path().join("other");
    assert!(teelog(&["keygen", "--dev", "--out", s(&other)], b"").status.success());
    let (_, _, kinds) = report(&teelog(
        &["verify", "--store", s(&store), "--trust-root", s(&other.join("dev-root.pem")), "--json"],
        b"",
    ));
    assert_eq!(kinds, vec!["untrusted_attestation".to_string(); 2]);

    // The wrong measurement is reported from the document.
    let (_, _, kinds) = report(&teelog(
        &[
            "verify",
            "--store",
            s(&store),
            "--trust-root",
            s(&root),
            "--expect-measurement",
            &"44".repeat(48),
            "--json",
        ],
        b"",
    ));
    assert_eq!(kinds, vec!["unexpected_measurement".to_string(); 2]);

    // Remove the document line, or tamper with it: the batches lose their key.
    let segment = teelog_store::segments(&store).unwrap().remove(0);
    let text = std::fs::read_to_string(&segment).unwrap();
    let document_line = text.lines().find(|l| l.contains("\"attestation\":\"")).unwrap().to_string();
    let without: String = text.lines().filter(|l| *l != document_line).map(|l| format!("{l}\n")).collect();
    let bare = dir.path().join("bare.ndjson");
    std::fs::write(&bare, without).unwrap();
    let (_, json, kinds) = report(&teelog(&["verify", s(&bare), "--trust-root", s(&root), "--json"], b""));
    assert_eq!(kinds, vec!["untrusted_attestation".to_string(); 2]);
    assert!(json["findings"][0]["detail"].as_str().unwrap().contains("not in the input"));
}

#[test]
fn debug_pcrs_and_bad_pcr_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    let zero = "00".repeat(48);
    let args = [
        "keygen",
        "--dev",
        "--out",
        s(&id),
        "--pcr",
        &format!("0={zero}"),
        "--pcr",
        &format!("1={zero}"),
        "--pcr",
        &format!("2={zero}"),
    ];
    assert!(teelog(&args, b"").status.success());
    let store = dir.path().join("store");
    assert!(teelog(&["sign", "--identity", s(&id), "--store", s(&store)], RECORDS).status.success());
    let root = id.join("dev-root.pem");
    let (_, json, kinds) =
        report(&teelog(&["verify", "--store", s(&store), "--trust-root", s(&root), "--json"], b""));
    assert_eq!(kinds, ["untrusted_attestation"]);
    assert!(json["findings"][0]["detail"].as_str().unwrap().contains("debug mode"));
    let (code, _, _) = report(&teelog(
        &["verify", "--store", s(&store), "--trust-root", s(&root), "--allow-debug", "--json"],
        b"",
    ));
    assert_eq!(code, 0);

    for bad in ["0=zz", "99=00", "0=0011", "nope"] {
        let out = teelog(&["keygen", "--dev", "--out", s(&dir.path().join("x")), "--pcr", bad], b"");
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
    let out = teelog(&["keygen", "--out", s(&dir.path().join("y")), "--pcr", "0=00"], b"");
    assert_eq!(out.status.code(), Some(2), "--pcr needs --dev");
}
