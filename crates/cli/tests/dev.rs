//! The dev provider end to end: keygen --dev, sign into the store, verify with and without the
//! dev root, and the ways a document can be missing or forged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use common::{report, s, teelog};

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
    assert!(json.get("measurements_unjudged").is_none(), "{json}");
    let human = teelog(&["verify", "--store", s(&store), "--trust-root", s(&root)], b"");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("NOTE 2 batches are attested by a dev root"), "{text}");
    // Without a policy or an expected measurement, OK says nothing of which code signed.
    assert!(text.contains("NOTE measurements not judged"), "{text}");

    // Without the dev root nothing is trusted, not even with the public key at hand.
    let (code, _, kinds) = report(&teelog(
        &["verify", "--store", s(&store), "--pubkey", s(&id.join("public-key.pem")), "--json"],
        b"",
    ));
    assert_eq!((code, kinds), (1, vec!["untrusted_attestation".to_string(); 2]));
    // The text says which root is missing and which flag takes it, rather than "forged".
    let human = String::from_utf8_lossy(
        &teelog(&["verify", "--store", s(&store), "--pubkey", s(&id.join("public-key.pem"))], b"").stdout,
    )
    .into_owned();
    assert!(
        human.contains("teelog dev document") && human.contains("pass its dev-root.pem with --trust-root"),
        "{human}"
    );

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

/// A restart: a new dev identity (new key, new document, new code version) takes over the
/// stream. Its first batch links to the previous epoch's last; the policy's timeline shows which
/// version produced which batches, and which change it does not allow.
#[test]
fn a_restart_with_new_code_is_linked_and_judged_by_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (old, new) = (dir.path().join("v122"), dir.path().join("v123"));
    let pcr = |fill: &str| {
        ["0", "1", "2"]
            .iter()
            .flat_map(|i| ["--pcr".to_string(), format!("{i}={}", fill.repeat(48))])
            .collect::<Vec<_>>()
    };
    for (id, fill) in [(&old, "aa"), (&new, "bb")] {
        let mut args = vec!["keygen".to_string(), "--dev".into(), "--out".into(), s(id).into()];
        args.extend(pcr(fill));
        if id == &new {
            // The restart attests the head it continues from, which it verifies: signed by
            // the key the old identity's document binds, under the old dev root.
            let old_root = old.join("dev-root.pem");
            args.extend(["--follow", s(&store), "--trust-root", s(&old_root)].map(String::from));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(teelog(&args, b"").status.success());
        let signed =
            teelog(&["sign", "--identity", s(id), "--store", s(&store), "--batch-size", "2"], RECORDS);
        assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
    }
    let (old_root, new_root) = (old.join("dev-root.pem"), new.join("dev-root.pem"));
    let roots = ["--trust-root", s(&old_root), "--trust-root", s(&new_root)];
    let policy = dir.path().join("policy.toml");
    let write_policy = |new_entry: &str| {
        let text = format!(
            "[[measurement]]\nplatform = \"dev\"\nversion = \"v1.2.2\"\nvalue = \"{}\"\nuntil = \"2099-01-01T00:00:00Z\"\n{new_entry}",
            "aa".repeat(48)
        );
        std::fs::write(&policy, text).unwrap();
    };
    write_policy(&format!(
        "[[measurement]]\nplatform = \"dev\"\nversion = \"v1.2.3\"\nvalue = \"{}\"\nfrom = \"2026-01-01T00:00:00Z\"\n",
        "bb".repeat(48)
    ));
    let mut args = vec!["verify", "--store", s(&store), "--policy", s(&policy), "--json"];
    args.extend_from_slice(&roots);
    let (code, json, kinds) = report(&teelog(&args, b""));
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    let timeline = json["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 2, "{json}");
    assert_eq!((timeline[0]["version"].as_str(), timeline[0]["batches"].as_u64()), (Some("v1.2.2"), Some(2)));
    assert_eq!(
        (timeline[1]["version"].as_str(), timeline[1]["allowed"].as_bool()),
        (Some("v1.2.3"), Some(true))
    );

    // Without v1.2.3 in the policy, the new code's batches are not allowed.
    write_policy("");
    let (code, json, kinds) = report(&teelog(&args, b""));
    assert_eq!((code, kinds), (1, vec!["unexpected_measurement".to_string(); 2]), "{json}");
    assert!(json["findings"][0]["detail"].as_str().unwrap().contains("is not in the policy"));
    assert_eq!(json["timeline"][1]["allowed"], false);
    let mut human = args.clone();
    human.retain(|a| *a != "--json");
    let out = String::from_utf8_lossy(&teelog(&human, b"").stdout).into_owned();
    assert!(
        out.contains("v1.2.2 dev") && out.contains("(unlisted) dev") && out.contains("NOT ALLOWED"),
        "{out}"
    );

    // Dropping the old epoch's last batch breaks the hand-over.
    let segment = teelog_store::segments(&store).unwrap().remove(0);
    let text = std::fs::read_to_string(&segment).unwrap();
    let old_last = text.lines().find(|l| l.contains("\"seq\":2,")).unwrap().to_string();
    std::fs::write(&segment, text.replace(&format!("{old_last}\n"), "")).unwrap();
    let mut args = vec!["verify", "--store", s(&store), "--json"];
    args.extend_from_slice(&roots);
    let (_, json, kinds) = report(&teelog(&args, b""));
    assert_eq!(kinds, ["chain_break"], "{json}");
}

#[test]
fn a_bad_policy_names_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[[measurement]]\nplatform = \"azure\"\nversion = \"v1\"\nvalue = \"aa\"\n")
        .unwrap();
    let out = teelog(&["verify", "--policy", s(&policy), "-"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("entry 1 (v1): platform \"azure\""));
    std::fs::write(&policy, "[[measurement]]\nplatfrom = \"dev\"\n").unwrap();
    let out = teelog(&["verify", "--policy", s(&policy), "-"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("platfrom"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new identity whose document attests one head, after which the old epoch went on: the new
/// epoch links to exactly the head its document attests (never to a head it did not check), and
/// the batches the old epoch signed after it make that hand-over a chain break.
#[test]
fn a_hand_over_from_a_head_the_old_epoch_went_past_is_a_chain_break() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    assert!(teelog(&["keygen", "--dev", "--out", s(&old)], b"").status.success());
    assert!(teelog(&["sign", "--identity", s(&old), "--store", s(&store)], RECORDS).status.success());
    let old_key = old.join("public-key.pem");
    let follow =
        teelog(&["keygen", "--dev", "--out", s(&new), "--follow", s(&store), "--pubkey", s(&old_key)], b"");
    assert!(follow.status.success(), "{}", String::from_utf8_lossy(&follow.stderr));
    assert!(teelog(&["sign", "--identity", s(&old), "--store", s(&store)], RECORDS).status.success());
    assert!(teelog(&["sign", "--identity", s(&new), "--store", s(&store)], RECORDS).status.success());
    let (old_root, new_root) = (old.join("dev-root.pem"), new.join("dev-root.pem"));
    let args = [
        "verify",
        "--store",
        s(&store),
        "--trust-root",
        s(&old_root),
        "--trust-root",
        s(&new_root),
        "--json",
    ];
    let (code, json, kinds) = report(&teelog(&args, b""));
    assert_eq!((code, kinds), (1, vec!["chain_break".to_string()]), "{json}");
    let detail = json["findings"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("this epoch continues from batch 1 of epoch")
            && detail.contains("but that epoch goes on to batch 2"),
        "{detail}"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(new.join("identity.json")).unwrap()).unwrap();
    let attested = meta["previous_head"].as_str().unwrap();
    let first = std::fs::read_to_string(store.join("segment-000000000001.ndjson")).unwrap();
    let headers: Vec<serde_json::Value> = first
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|l| l.get("header").cloned())
        .collect();
    let newest = headers.last().unwrap();
    assert_eq!((newest["seq"].as_u64(), newest["prev"].as_str()), (Some(1), Some(attested)), "{newest}");

    // --follow needs a stream that is there.
    let none = teelog(
        &["keygen", "--dev", "--out", s(&dir.path().join("x")), "--follow", s(&store), "--stream", "other"],
        b"",
    );
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no batch of stream \"other\""));
}
