//! Trusted time for one record, end to end: a shipper relays to a gateway whose checkpoints a
//! real TSA (`openssl ts`) stamps; `teelog evidence export` links the record's batch to the first
//! stamped checkpoint at or after it by the headers in between, and `teelog evidence verify`, in
//! another directory with only the bundle and the roots, says by when the record was sealed, and
//! names every part of the bundle's time evidence that was changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod ship_harness;

#[path = "../../tsa/tests/support/openssl_tsa.rs"]
mod openssl_tsa;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{report, s, teelog};
use serde_json::Value;
use ship_harness::{fixture, free_port, Daemon};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The lines of the store `dir`, every segment in order.
fn store_lines(dir: &Path) -> Vec<String> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    segments.retain(|p| p.extension().is_some_and(|e| e == "ndjson"));
    segments.sort();
    segments
        .iter()
        .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn is_checkpoint(line: &str) -> bool {
    line.starts_with("{\"v\":1,\"checkpoint\":")
}

/// Waits until the store `dir` holds `n` batch lines and one checkpoint.
fn wait_for_store(dir: &Path, batches: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = store_lines(dir);
        let n = lines.iter().filter(|l| l.contains("\"header\":")).count();
        if n >= batches {
            return;
        }
        assert!(Instant::now() < deadline, "the store holds {n} of {batches} batches");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A software identity ships `records` records, in batches of 5, to a gateway that stores them
/// (and Loki at `loki`) and stamps its checkpoints at the TSA at `url`; the gateway is stopped
/// (its last checkpoint names the newest batch).
fn ship_through_gateway(f: &ship_harness::Fixture, url: &str, loki: &str, records: u32) {
    let relay = free_port();
    let more =
        format!("[[sinks]]\nkind = 'loki'\nurl = '{loki}'\n[checkpoint]\nevery = '1h'\ntsa = '{url}'\n");
    let config = f.relay_gateway(&relay, &[], &more);
    let gateway = Daemon::gateway(&config);
    let input: String =
        (0..records).map(|i| format!("{{\"message\":\"step {i}\",\"step\":{i}}}\n")).collect();
    let out = teelog(
        &[
            "ship",
            "--identity",
            s(&f.identity),
            "--stream",
            "app",
            "--spool",
            s(&f.path("spool")),
            "--stdin",
            "--sink-relay",
            &relay,
            "--max-records",
            "5",
            "--heartbeat",
            "off",
        ],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for_store(&f.path("gw-store"), records.div_ceil(5) as usize);
    gateway.stop();
    assert!(store_lines(&f.path("gw-store"))
        .iter()
        .any(|l| is_checkpoint(l) && l.contains("\"timestamp\":\"")));
}

fn verify(bundle: &Path, args: &[&str]) -> (i32, Value, Vec<String>) {
    let mut all = vec!["evidence", "verify", s(bundle), "--json"];
    all.extend_from_slice(args);
    report(&teelog(&all, b""))
}

/// Replaces one character in the middle of the base64 text `text`, keeping it base64.
/// A change to a bundle: what it changes, the change, the finding kind it gets and a phrase its
/// detail must hold (naming the changed part).
type Change<'a> = (&'a str, Box<dyn Fn(&mut Value)>, &'a str, &'a str);

/// Each change of `original`, written to `offline` and verified with `trust`, fails with a
/// finding of its kind whose detail names the part changed.
fn each_change_is_named(original: &Value, changes: Vec<Change<'_>>, offline: &Path, trust: &[&str]) {
    for (what, change, kind, named) in changes {
        let mut changed = original.clone();
        change(&mut changed);
        std::fs::write(offline, serde_json::to_vec(&changed).unwrap()).unwrap();
        let (code, json, kinds) = verify(offline, trust);
        assert_eq!(code, 1, "{what}: {json}");
        assert!(kinds.contains(&kind.to_string()), "{what}: {json}");
        let details: Vec<&str> =
            json["findings"].as_array().unwrap().iter().map(|f| f["detail"].as_str().unwrap()).collect();
        assert!(details.iter().any(|d| d.contains(named)), "{what}: {details:?}");
    }
}

/// A real `openssl ts` TSA in the fixture's `tsa` folder, served over HTTP: its folder and URL.
fn start_tsa(f: &ship_harness::Fixture) -> (PathBuf, String) {
    let tsa_dir = f.path("tsa");
    std::fs::create_dir(&tsa_dir).unwrap();
    openssl_tsa::tsa(&tsa_dir, "timeStamping");
    let url = openssl_tsa::serve(&tsa_dir);
    (tsa_dir, url)
}

fn flip_base64(text: &str) -> String {
    let mut bytes = B64.decode(text).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    B64.encode(bytes)
}

#[test]
fn a_record_is_dated_by_the_gateways_stamped_checkpoint_through_the_headers_after_it() {
    let f = fixture();
    let (tsa_dir, url) = start_tsa(&f);
    let loki = teelog_fake_loki::FakeLoki::start().unwrap();
    ship_through_gateway(&f, &url, loki.url(), 23);

    let bundle = f.path("step-7.json");
    let export = |source: &[&str], out: &Path| {
        let mut args = vec!["evidence", "export", "--match", "step=7", "--out", s(out)];
        args.extend_from_slice(source);
        teelog(&args, b"")
    };
    let out = export(&["--store", s(&f.path("gw-store"))], &bundle);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let original: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    // Record 7 is in batch 2 of 5: headers 3, 4 and 5 link it to the checkpoint's tip, seq 5.
    let seqs: Vec<u64> = original["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| serde_json::from_str::<Value>(h.as_str().unwrap()).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4, 5], "{original}");
    assert_eq!(original["checkpoints"].as_array().unwrap().len(), 1);

    // The same bundle from Loki, whose checkpoints are entries of their own kind.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let from =
        teelog_core::timestamp::format_rfc3339(i64::try_from(now.as_nanos()).unwrap() - 3_600_000_000_000);
    let from_loki = f.path("from-loki.json");
    let out = export(&["--loki", loki.url(), "--from", &from, "--stream", "app"], &from_loki);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&from_loki).unwrap(), std::fs::read(&bundle).unwrap());
    // The same bundle from a store without the checkpoints and the copy the gateway kept.
    let bare = f.path("bare.ndjson");
    let lines: Vec<String> =
        store_lines(&f.path("gw-store")).into_iter().filter(|l| !is_checkpoint(l)).collect();
    std::fs::write(&bare, lines.join("\n") + "\n").unwrap();
    let from_copy = f.path("from-copy.json");
    let kept = f.path("gw-spool/checkpoints.ndjson");
    let out = export(&[s(&bare), "--checkpoint", s(&kept)], &from_copy);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&from_copy).unwrap(), std::fs::read(&bundle).unwrap());
    // Without any checkpoint the bundle has no chain, and says that it bounds nothing.
    let out = export(&[s(&bare)], &from_copy);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unlinked: Value = serde_json::from_slice(&std::fs::read(&from_copy).unwrap()).unwrap();
    assert!(unlinked.get("chain").is_none() && unlinked.get("checkpoints").is_none(), "{unlinked}");

    // Offline, in another directory: the bundle, the signer's key, the TSA root, the gateway key.
    let auditor = tempfile::tempdir().unwrap();
    let copy = |from: &Path, name: &str| {
        let to = auditor.path().join(name);
        std::fs::copy(from, &to).unwrap();
        to
    };
    let offline = copy(&bundle, "bundle.json");
    let pubkey = copy(&f.identity.join("public-key.pem"), "signer.pem");
    let tsa_root = copy(&tsa_dir.join("ca.pem"), "tsa-root.pem");
    let gateway_key = copy(&f.path("gw-spool/checkpoint-key.pub.pem"), "gateway.pem");
    let unlinked_copy = copy(&from_copy, "unlinked.json");
    drop(f);
    let trust = ["--pubkey", s(&pubkey), "--tsa-root", s(&tsa_root), "--checkpoint-key", s(&gateway_key)];
    let (code, json, kinds) = verify(&offline, &trust);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    let proven = &json["proven"][0];
    assert_eq!((proven["seq"].as_u64(), proven["index"].as_u64()), (Some(2), Some(2)), "{json}");
    let bound = proven["no_later_than"]["at"].as_str().expect("an upper bound");
    let sealed = proven["sealed_at"].as_str().unwrap();
    // openssl's TSA writes whole seconds.
    assert!(bound[..19] >= sealed[..19], "bound {bound}, sealed {sealed}");
    assert!(proven["no_later_than"]["by"].as_str().unwrap().contains("checkpoints[0]"), "{json}");
    let human =
        String::from_utf8(teelog(&[&["evidence", "verify", s(&offline)][..], &trust].concat(), b"").stdout)
            .unwrap();
    assert!(human.contains(&format!("sealed no later than {bound} (trusted time)")), "{human}");

    // Without the TSA root nothing is dated, and the report says why.
    let (code, json, _) = verify(&offline, &["--pubkey", s(&pubkey)]);
    assert_eq!(code, 0, "{json}");
    assert!(json["proven"][0].get("no_later_than").is_none(), "{json}");
    assert!(json["proven"][0]["unbounded"][0].as_str().unwrap().contains("--tsa-root"), "{json}");
    let (code, json, _) = verify(&unlinked_copy, &trust[..4]);
    assert_eq!(code, 0, "{json}");
    assert!(json["proven"][0]["unbounded"][0].as_str().unwrap().contains("no stamped checkpoint"), "{json}");

    // Each part of the time evidence changed: refused, and the finding names it.
    let header = |b: &Value, k: usize| b["chain"][k].as_str().unwrap().to_string();
    let checkpoint = |b: &Value| b["checkpoints"][0].as_str().unwrap().to_string();
    // One base64 character of the checkpoint line's `member` changed.
    let flip_member = move |b: &mut Value, member: &str| {
        let line: Value = serde_json::from_str(&checkpoint(b)).unwrap();
        let text = line[member].as_str().unwrap();
        b["checkpoints"][0] = checkpoint(b).replacen(text, &flip_base64(text), 1).into();
    };
    let changes: Vec<Change<'_>> = vec![
        (
            "a header in the middle of the chain",
            Box::new(move |b| b["chain"][1] = header(b, 1).replacen("\"count\":5", "\"count\":4", 1).into()),
            "chain_break",
            "chain[2]: its prev does not name chain[1]",
        ),
        (
            "the last header of the chain",
            Box::new(move |b| b["chain"][2] = header(b, 2).replacen("\"count\":3", "\"count\":2", 1).into()),
            "checkpoint_mismatch",
            "checkpoints[0] names header",
        ),
        (
            "a header removed",
            Box::new(|b| {
                b["chain"].as_array_mut().unwrap().remove(1);
            }),
            "malformed",
            "chain[1]: links no batch",
        ),
        (
            "the checkpoint's body",
            Box::new(move |b| {
                b["checkpoints"][0] = checkpoint(b).replacen("\"at\":\"20", "\"at\":\"19", 1).into()
            }),
            "time_anomaly",
            "checkpoints[0]: the timestamp token",
        ),
        (
            "the checkpoint's token",
            Box::new(move |b| flip_member(b, "timestamp")),
            "time_anomaly",
            "checkpoints[0]: the timestamp token",
        ),
        (
            "the checkpoint's signature",
            Box::new(move |b| flip_member(b, "sig")),
            "invalid_checkpoint",
            "checkpoints[0]: the checkpoint of",
        ),
    ];
    each_change_is_named(&original, changes, &offline, &trust);
}

/// The shipper stamps its own heads at a real TSA (`[timestamp]`, every second) while records
/// arrive in three bursts; the bundle of a record of the second burst carries the notice sealed
/// before its batch (lower bound) and the token over its batch's head (upper bound), from the
/// spool and from Loki alike; verified offline it says "sealed between", and a changed notice
/// or token is named.
#[test]
fn the_shippers_own_tokens_bound_a_record_from_both_sides() {
    let f = fixture();
    let (tsa_dir, url) = start_tsa(&f);
    let loki = teelog_fake_loki::FakeLoki::start().unwrap();
    let (spool, config) = (f.path("spool"), f.path("ship.toml"));
    std::fs::write(
        &config,
        format!(
            "identity = '{}'\nstream = 'payments'\n[batch]\nmax_records = 5\nheartbeat = 'off'\n\
             [spool]\ndir = '{}'\nkeep = true\n[sources]\nstdin = true\n[timestamp]\ntsa = '{url}'\nevery = '1s'\n\
             [[sinks]]\nkind = 'loki'\nurl = '{}'\n",
            s(&f.identity),
            s(&spool),
            loki.url()
        ),
    )
    .unwrap();
    let (mut daemon, mut stdin) = Daemon::start_with_stdin(&["--config", s(&config)]);
    for burst in 0..3 {
        let records: String = (burst * 5..burst * 5 + 5)
            .map(|i| format!("{{\"message\":\"step {i}\",\"step\":{i}}}\n"))
            .collect();
        std::io::Write::write_all(&mut stdin, records.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(2500));
    }
    drop(stdin);
    assert!(daemon.wait_exit(Duration::from_secs(30)).success(), "{}", daemon.log());
    let notices: Vec<Value> = store_lines(&spool)
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("records").is_some())
        .flat_map(|l| l["records"].as_array().unwrap().clone())
        .filter(|r| r["teelog_notice"] == "timestamp")
        .collect();
    assert!(notices.len() >= 2, "a notice per burst: {notices:?}\n{}", daemon.log());

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let from =
        teelog_core::timestamp::format_rfc3339(i64::try_from(now.as_nanos()).unwrap() - 3_600_000_000_000);
    let export = |source: &[&str], out: &Path| {
        let mut args = vec!["evidence", "export", "--match", "step=7", "--out", s(out)];
        args.extend_from_slice(source);
        teelog(&args, b"")
    };
    let (bundle, from_loki) = (f.path("step-7.json"), f.path("loki.json"));
    let out = export(&["--store", s(&spool)], &bundle);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = export(&["--loki", loki.url(), "--from", &from, "--stream", "payments"], &from_loki);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read(&from_loki).unwrap(),
        std::fs::read(&bundle).unwrap(),
        "Loki gives the same bundle"
    );
    let original: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    assert_eq!(original["notices"].as_array().map(Vec::len), Some(1), "{original}");
    assert_eq!(original["tokens"].as_array().map(Vec::len), Some(1), "{original}");

    let auditor = tempfile::tempdir().unwrap();
    let offline = auditor.path().join("bundle.json");
    std::fs::copy(&bundle, &offline).unwrap();
    let pubkey = auditor.path().join("signer.pem");
    std::fs::copy(f.identity.join("public-key.pem"), &pubkey).unwrap();
    let tsa_root = auditor.path().join("tsa-root.pem");
    std::fs::copy(tsa_dir.join("ca.pem"), &tsa_root).unwrap();
    drop(f);
    let trust = ["--pubkey", s(&pubkey), "--tsa-root", s(&tsa_root)];
    let (code, json, kinds) = verify(&offline, &trust);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    let proven = &json["proven"][0];
    let (lo, hi) =
        (proven["no_earlier_than"]["at"].as_str().unwrap(), proven["no_later_than"]["at"].as_str().unwrap());
    let sealed = proven["sealed_at"].as_str().unwrap();
    // openssl's TSA writes whole seconds: the token before is at most the second of the sealing.
    assert!(lo[..19] <= sealed[..19] && sealed[..19] <= hi[..19], "{lo} .. {sealed} .. {hi}");
    assert!(lo < hi, "{json}");
    assert!(proven["no_earlier_than"]["by"].as_str().unwrap().contains("notices[0]"), "{json}");
    assert!(proven["no_later_than"]["by"].as_str().unwrap().contains("tokens[0]"), "{json}");
    let human =
        String::from_utf8(teelog(&[&["evidence", "verify", s(&offline)][..], &trust].concat(), b"").stdout)
            .unwrap();
    assert!(human.contains(&format!("sealed between {lo} and {hi} (trusted time)")), "{human}");
    // Without the TSA root: no window, and why.
    let (code, json, _) = verify(&offline, &trust[..2]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["proven"][0]["unbounded"].as_array().map(Vec::len), Some(2), "{json}");

    let changes: Vec<Change<'_>> = vec![
        (
            "the notice's record",
            Box::new(|b| {
                let record = b["notices"][0]["record"].as_str().unwrap().replacen("INFO", "WARN", 1);
                b["notices"][0]["record"] = record.into();
            }),
            "record_tampered",
            "notices[0]: the notice and its proof",
        ),
        (
            "the notice's index",
            Box::new(|b| b["notices"][0]["index"] = 1.into()),
            "record_tampered",
            "notices[0]",
        ),
        (
            "the token",
            Box::new(|b| {
                let token = flip_base64(b["tokens"][0]["timestamp"].as_str().unwrap());
                b["tokens"][0]["timestamp"] = token.into();
            }),
            "time_anomaly",
            "tokens[0]: the timestamp token",
        ),
        (
            "the token's header",
            Box::new(|b| b["tokens"][0]["head"] = "00".repeat(32).into()),
            "malformed",
            "tokens[0]: header",
        ),
    ];
    each_change_is_named(&original, changes, &offline, &trust);
}
