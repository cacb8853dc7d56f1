//! `teelog evidence` end to end: a record of a dev-attested store is exported as a bundle, proven
//! offline with only the dev root and a policy, and refused, naming what, once any part of the
//! bundle is changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use base64::Engine as _;
use common::{report, s, teelog};
use serde_json::Value;

/// A change made to a bundle.
type Change = Box<dyn Fn(&mut Value)>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A dev identity (PCR0 `11…`) in `dir/id`, and that PCR0.
fn dev_identity(dir: &Path) -> (std::path::PathBuf, String) {
    let id = dir.join("id");
    let pcr0 = "11".repeat(48);
    let pcrs = [format!("0={pcr0}"), format!("1={}", "22".repeat(48)), format!("2={}", "33".repeat(48))];
    let mut args = vec!["keygen", "--dev", "--out", s(&id)];
    for pcr in &pcrs {
        args.extend(["--pcr", pcr.as_str()]);
    }
    let out = teelog(&args, b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (id, pcr0)
}

/// 5000 records, each with its own `executionId`.
fn steps() -> String {
    (0..5000)
        .map(|i| {
            format!(
                "{{\"ts\":\"2026-12-07T10:00:00Z\",\"message\":\"step {i}\",\"executionId\":\"exec-{i}\"}}\n"
            )
        })
        .collect()
}

/// A dev identity (PCR0 `11…`), 5000 records signed into batches of up to 4096; the dev root.
fn attested_store(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let (id, pcr0) = dev_identity(dir);
    let store = dir.join("store");
    let out = teelog(
        &["sign", "--identity", s(&id), "--store", s(&store), "--batch-size", "4096"],
        steps().as_bytes(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (store, id.join("dev-root.pem"), pcr0)
}

fn verify(bundle: &Path, args: &[&str]) -> (i32, Value, Vec<String>) {
    let mut all = vec!["evidence", "verify", s(bundle), "--json"];
    all.extend_from_slice(args);
    report(&teelog(&all, b""))
}

#[test]
fn a_record_is_proven_offline_and_every_change_to_its_bundle_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (store, root, pcr0) = attested_store(dir.path());
    let bundle = dir.path().join("exec-1234.json");
    let export =
        |out| ["evidence", "export", "--store", s(&store), "--match", "executionId=exec-1234", "--out", out];
    let out = teelog(&export(s(&bundle)), b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read(&bundle).unwrap();
    eprintln!("bundle for one record of a 4096-record batch: {} bytes", text.len());
    // The same, written to a bare file name in the working directory.
    let here = std::process::Command::new(env!("CARGO_BIN_EXE_teelog"))
        .current_dir(dir.path())
        .args(export("here.json"))
        .output()
        .unwrap();
    assert!(here.status.success(), "{}", String::from_utf8_lossy(&here.stderr));
    assert_eq!(std::fs::read(dir.path().join("here.json")).unwrap(), text);

    // Offline: only the bundle, the dev root and the auditor's policy.
    let auditor = tempfile::tempdir().unwrap();
    let (offline, offline_root) = (auditor.path().join("bundle.json"), auditor.path().join("root.pem"));
    std::fs::copy(&bundle, &offline).unwrap();
    std::fs::copy(&root, &offline_root).unwrap();
    drop(dir);
    let policy = auditor.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("[[measurement]]\nplatform = \"dev\"\nversion = \"v1.2.3\"\nvalue = \"{pcr0}\"\n"),
    )
    .unwrap();
    let trust = ["--trust-root", s(&offline_root), "--policy", s(&policy)];
    let (code, json, kinds) = verify(&offline, &trust);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    let proven = &json["proven"][0];
    assert_eq!(proven["index"], 1234);
    assert_eq!(proven["batch_records"], 4096);
    assert_eq!(proven["version"], "v1.2.3");
    assert_eq!(proven["basis"], "dev_root");
    assert_eq!(proven["platform"], "dev");
    // The key signs only after its document is made: the platform's time bounds the record below.
    assert_eq!(proven["no_earlier_than"]["at"], proven["attested_at"], "{json}");
    assert!(proven["unbounded"][0].as_str().unwrap().starts_with("no upper bound"), "{json}");
    assert!(proven["record"].as_str().unwrap().contains("\"executionId\":\"exec-1234\""));
    let human = String::from_utf8(
        teelog(
            &["evidence", "verify", s(&offline), "--trust-root", s(&offline_root), "--policy", s(&policy)],
            b"",
        )
        .stdout,
    )
    .unwrap();
    assert!(
        human.contains("RECORD 1234 of 4096")
            && human.contains("version v1.2.3 in the policy")
            && human.ends_with("OK   1 records proven\n"),
        "{human}"
    );
    // Neighbouring records are not disclosed.
    let bundle_text = String::from_utf8(text).unwrap();
    assert!(!bundle_text.contains("exec-1233") && !bundle_text.contains("exec-1235"));

    // Without the dev root nothing is proven; a policy without the measurement objects.
    assert_eq!(verify(&offline, &[]).2, vec!["untrusted_attestation"]);
    std::fs::write(&policy, "[[measurement]]\nplatform = \"dev\"\nversion = \"v9\"\nvalue = \"aa\"\n")
        .unwrap();
    assert_eq!(verify(&offline, &trust).2, vec!["unexpected_measurement"]);
    std::fs::write(
        &policy,
        format!("[[measurement]]\nplatform = \"dev\"\nversion = \"v1.2.3\"\nvalue = \"{pcr0}\"\n"),
    )
    .unwrap();

    // Each part changed: the finding names it.
    let original: Value = serde_json::from_str(&bundle_text).unwrap();
    let changes: Vec<(&str, Change, &str)> = vec![
        (
            "record",
            Box::new(|b| {
                b["records"][0]["record"] =
                    b["records"][0]["record"].as_str().unwrap().replace("exec-1234", "exec-1235").into()
            }),
            "record_tampered",
        ),
        (
            "proof",
            Box::new(|b| {
                let hash = b["records"][0]["proof"][3].as_str().unwrap().to_string();
                b["records"][0]["proof"][3] =
                    format!("{}{}", if hash.starts_with('0') { "1" } else { "0" }, &hash[1..]).into();
            }),
            "record_tampered",
        ),
        ("index", Box::new(|b| b["records"][0]["index"] = 1235.into()), "record_tampered"),
        (
            "header",
            Box::new(|b| {
                b["batches"][0]["header"] = b["batches"][0]["header"]
                    .as_str()
                    .unwrap()
                    .replace("\"count\":4096", "\"count\":4097")
                    .into()
            }),
            "invalid_signature",
        ),
        (
            "document",
            Box::new(|b| {
                let mut document = B64.decode(b["batches"][0]["attestation"].as_str().unwrap()).unwrap();
                let middle = document.len() / 2;
                document[middle] ^= 1;
                b["batches"][0]["attestation"] = B64.encode(document).into();
            }),
            "untrusted_attestation",
        ),
        (
            "document removed",
            Box::new(|b| {
                b["batches"][0].as_object_mut().unwrap().remove("attestation");
            }),
            "untrusted_attestation",
        ),
    ];
    for (what, change, kind) in changes {
        let mut changed = original.clone();
        change(&mut changed);
        std::fs::write(&offline, serde_json::to_vec(&changed).unwrap()).unwrap();
        let (code, json, kinds) = verify(&offline, &trust);
        assert_eq!((code, kinds), (1, vec![kind.to_string()]), "{what}: {json}");
        assert_eq!(json["proven"].as_array().unwrap().len(), 0, "{what}");
    }
    // A member the format does not have is refused before anything is judged.
    let mut extra = original.clone();
    extra["note"] = "trust me".into();
    std::fs::write(&offline, serde_json::to_vec(&extra).unwrap()).unwrap();
    let out = teelog(&["evidence", "verify", s(&offline), "--trust-root", s(&offline_root)], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an evidence bundle"));
}

#[test]
fn export_says_what_it_could_not_select() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = attested_store(dir.path());
    let out_path = dir.path().join("b.json");
    let export = |args: &[&str]| {
        let mut all = vec!["evidence", "export", "--store", s(&store), "--out", s(&out_path)];
        all.extend_from_slice(args);
        teelog(&all, b"")
    };
    let out = export(&["--match", "executionId=nobody"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no record matched"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = export(&["--stream", "default", "--seq", "2", "--index", "904"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("beyond batch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = export(&["--match", "no-equals-sign"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
    // A whole batch by place: its 904 records.
    let out = export(&["--stream", "default", "--seq", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bundle: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    assert_eq!(bundle["records"].as_array().unwrap().len(), 904);
    assert!(!out_path.with_extension("json.tmp").exists());
}

/// Shipped to Loki (the real sink, into an in-memory Loki) and kept in the spool: the bundle
/// `export --loki` rebuilds from Loki's entries is the bundle exported from the spool, and it
/// verifies; a record changed in Loki's storage no longer does.
#[test]
fn a_bundle_exported_from_loki_is_the_one_exported_from_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let (id, _) = dev_identity(dir.path());
    let root = id.join("dev-root.pem");
    let loki = teelog_fake_loki::FakeLoki::start().unwrap();
    let (spool, config) = (dir.path().join("spool"), dir.path().join("ship.toml"));
    std::fs::write(
        &config,
        format!(
            "identity = '{}'\nstream = 'payments'\n[batch]\nmax_records = 4096\nheartbeat = 'off'\n\
             [spool]\ndir = '{}'\nkeep = true\n[sources]\nstdin = true\n[[sinks]]\nkind = 'loki'\nurl = '{}'\n",
            s(&id),
            s(&spool),
            loki.url()
        ),
    )
    .unwrap();
    let out = teelog(&["ship", "--config", s(&config)], steps().as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let from =
        teelog_core::timestamp::format_rfc3339(i64::try_from(now.as_nanos()).unwrap() - 3_600_000_000_000);
    let export = |source: &[&str], out: &Path| {
        let mut args = vec!["evidence", "export", "--match", "executionId=exec-4500", "--out", s(out)];
        args.extend_from_slice(source);
        teelog(&args, b"")
    };
    let (from_spool, from_loki) = (dir.path().join("spool.json"), dir.path().join("loki.json"));
    let out = export(&["--store", s(&spool)], &from_spool);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let loki_args = ["--loki", loki.url(), "--from", &from, "--stream", "payments"];
    let out = export(&loki_args, &from_loki);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&from_loki).unwrap(), std::fs::read(&from_spool).unwrap());
    let (code, json, _) = verify(&from_loki, &["--trust-root", s(&root)]);
    assert_eq!(code, 0, "{json}");
    assert!(json["proven"][0]["record"].as_str().unwrap().contains("\"step 4500\""), "{json}");

    // The record's entry, changed where Loki keeps it.
    loki.edit(|streams| {
        for entry in streams.iter_mut().flat_map(|(_, entries)| entries.iter_mut()) {
            entry.line = entry.line.replace("\"step 4500\"", "\"step 4501\"");
        }
    });
    let out = export(&loki_args, &from_loki);
    if out.status.success() {
        let (code, json, _) = verify(&from_loki, &["--trust-root", s(&root)]);
        assert_eq!(code, 1, "{json}");
    } else {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no record matched"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Loki or files, not both.
    let mut both = loki_args.to_vec();
    both.extend(["--store", s(&spool)]);
    let out = export(&both, &from_loki);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[path = "../../tsa/tests/support/openssl_tsa.rs"]
mod openssl_tsa;

#[test]
fn a_bundle_stamped_by_a_tsa_proves_by_trusted_time_when_its_batch_existed() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    common::keygen(&id, &[]);
    let store = dir.path().join("store");
    let records: String = (0..50).map(|i| format!("{{\"message\":\"step {i}\"}}\n")).collect();
    assert!(teelog(&["sign", "--identity", s(&id), "--store", s(&store)], records.as_bytes())
        .status
        .success());
    let tsa_dir = dir.path().join("tsa");
    std::fs::create_dir(&tsa_dir).unwrap();
    openssl_tsa::tsa(&tsa_dir, "timeStamping");
    let url = openssl_tsa::serve(&tsa_dir);

    let bundle = dir.path().join("b.json");
    let out = teelog(
        &[
            "evidence",
            "export",
            "--store",
            s(&store),
            "--stream",
            "default",
            "--seq",
            "1",
            "--index",
            "3",
            "--tsa",
            &url,
            "--out",
            s(&bundle),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pubkey = id.join("public-key.pem");
    let root = tsa_dir.join("ca.pem");
    let (code, json, kinds) = verify(&bundle, &["--pubkey", s(&pubkey), "--tsa-root", s(&root)]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    let stamped = json["proven"][0]["stamped_at"].as_str().expect("a trusted time");
    let sealed = json["proven"][0]["sealed_at"].as_str().unwrap();
    assert!(stamped[..16] >= sealed[..16], "stamped {stamped}, sealed {sealed}");
    let human = String::from_utf8(
        teelog(&["evidence", "verify", s(&bundle), "--pubkey", s(&pubkey), "--tsa-root", s(&root)], b"")
            .stdout,
    )
    .unwrap();
    assert!(human.contains("sealed no later than") && human.contains("(trusted time)"), "{human}");

    // Without a TSA root the token is not checked and no trusted time is claimed.
    let (code, json, _) = verify(&bundle, &["--pubkey", s(&pubkey)]);
    assert_eq!(code, 0);
    assert!(json["proven"][0].get("stamped_at").is_none(), "{json}");

    // Another TSA's root, or a changed token: a time_anomaly, and the record is not proven.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    openssl_tsa::tsa(&other, "timeStamping");
    let (code, _, kinds) = verify(&bundle, &["--pubkey", s(&pubkey), "--tsa-root", s(&other.join("ca.pem"))]);
    assert_eq!((code, kinds), (1, vec!["time_anomaly".to_string()]));
    let mut changed: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    let mut token = B64.decode(changed["batches"][0]["timestamp"].as_str().unwrap()).unwrap();
    let last = token.len() - 1;
    token[last] ^= 1;
    changed["batches"][0]["timestamp"] = B64.encode(token).into();
    std::fs::write(&bundle, serde_json::to_vec(&changed).unwrap()).unwrap();
    let (code, json, kinds) = verify(&bundle, &["--pubkey", s(&pubkey), "--tsa-root", s(&root)]);
    assert_eq!((code, kinds), (1, vec!["time_anomaly".to_string()]), "{json}");
    assert_eq!(json["proven"].as_array().unwrap().len(), 0);
}
