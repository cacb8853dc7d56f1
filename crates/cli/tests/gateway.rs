//! `teelog gateway` end to end: shippers relay to it, clients post to it, and what it stores in
//! an in-memory Loki (teelog-fake-loki) and an embedded store is read back by `teelog audit` and
//! `teelog verify`, which trust nothing the gateway said.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;
mod pki;
mod ship_harness;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{keygen, report, s, teelog};
use pki::{https, pki};
use serde_json::Value;
use ship_harness::{free_port, Daemon};
use teelog_fake_loki::FakeLoki;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    loki: FakeLoki,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture { root: dir.path().to_path_buf(), _dir: dir, loki: FakeLoki::start().unwrap() }
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A day ago: before every batch a test signs.
fn from() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    teelog_core::timestamp::format_rfc3339(i64::try_from(now.as_nanos()).unwrap() - 86_400_000_000_000)
}

fn records(range: std::ops::Range<u32>) -> Vec<u8> {
    range.map(|i| format!("{{\"message\":\"record {i}\",\"n\":{i}}}\n")).collect::<String>().into_bytes()
}

impl Fixture {
    fn dev_identity(&self) -> PathBuf {
        let id = self.root.join("dev-id");
        keygen(&id, &["--dev"]);
        id
    }

    fn software_identity(&self) -> PathBuf {
        let id = self.root.join("sw-id");
        keygen(&id, &[]);
        id
    }

    /// A gateway configuration: listeners on free ports (or `relay` given), the fake Loki and a
    /// store as sinks, and `verify` as given.
    fn config(&self, relay: &str, verify: &str, extra: &str) -> PathBuf {
        let text = format!(
            "[spool]\ndir = '{spool}'\n[listen]\nrelay = '{relay}'\nhttp = '127.0.0.1:0'\n{extra}\n\
             [verify]\n{verify}\n[metrics]\nlisten = '127.0.0.1:0'\n\
             [[sinks]]\nkind = 'loki'\nurl = '{loki}'\n[[sinks]]\nkind = 'store'\ndir = '{store}'\n",
            spool = s(&self.root.join("gw-spool")),
            loki = self.loki.url(),
            store = s(&self.store()),
        );
        let path = self.root.join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `teelog sign` of `records` into batches of `batch_size` for `stream`: the batch lines.
    fn sign(&self, id: &Path, stream: &str, batch_size: u32, records: std::ops::Range<u32>) -> Vec<u8> {
        let out = self.root.join(format!("{stream}.ndjson"));
        let size = batch_size.to_string();
        let args = ["sign", "--identity", s(id), "--stream", stream, "--batch-size", &size, "--out", s(&out)];
        ok(&teelog(&args, &crate::records(records)));
        std::fs::read(&out).unwrap()
    }

    fn store(&self) -> PathBuf {
        self.root.join("gw-store")
    }

    /// Waits until the fake Loki holds `n` batch entries.
    fn wait_for_batches(&self, n: usize) {
        self.wait_for("batch", n);
    }

    /// Waits until the fake Loki holds `n` entries of `teelog_kind` `kind`.
    fn wait_for(&self, kind: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.entries(kind).len() < n {
            assert!(
                Instant::now() < deadline,
                "Loki holds {} of {n} {kind} entries",
                self.entries(kind).len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Each batch entry in Loki with its stream's `signature_valid` label.
    fn batch_entries(&self) -> Vec<(String, String)> {
        self.entries("batch")
    }

    /// Each entry of `teelog_kind` `kind` in Loki with its stream's `signature_valid` label.
    fn entries(&self, kind: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (labels, entries) in self.loki.streams() {
            if labels.get("teelog_kind").map(String::as_str) == Some(kind) {
                let valid = labels.get("signature_valid").cloned().unwrap_or_default();
                out.extend(entries.into_iter().map(|e| (e.line, valid.clone())));
            }
        }
        out
    }

    fn audit(&self, trust: &[&str]) -> (i32, Value, Vec<String>) {
        let from = from();
        let mut args = vec!["audit", "--loki", self.loki.url(), "--from", &from, "--json"];
        args.extend_from_slice(trust);
        report(&teelog(&args, b""))
    }
}

fn metrics(addr: SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    body
}

/// One HTTP/1.1 request; returns the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut socket = TcpStream::connect(addr).unwrap();
    // Longer than the gateway waits for memory before it answers 503 (10 s).
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    socket.write_all(request.as_bytes()).unwrap();
    let _ = socket.write_all(body);
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn ship_stdin(identity: &Path, spool: &Path, relay: SocketAddr, input: &[u8]) {
    ok(&teelog(
        &[
            "ship",
            "--identity",
            s(identity),
            "--stream",
            "app",
            "--spool",
            s(spool),
            "--stdin",
            "--sink-relay",
            &relay.to_string(),
            "--max-records",
            "5",
            "--heartbeat",
            "off",
        ],
        input,
    ));
}

#[test]
fn shipped_batches_reach_loki_through_the_gateway_and_audit_clean() {
    let f = fixture();
    let id = f.dev_identity();
    let root = id.join("dev-root.pem");
    let gateway = Daemon::gateway(&f.config("127.0.0.1:0", &format!("trust_roots = ['{}']", s(&root)), ""));
    ship_stdin(&id, &f.root.join("spool"), gateway.addr("relay"), &records(0..23));
    // 23 records in batches of at most 5: 5 batches.
    f.wait_for_batches(5);
    assert!(f.batch_entries().iter().all(|(_, valid)| valid == "true"), "{:?}", f.batch_entries());

    let (code, json, kinds) = f.audit(&["--trust-root", s(&root)]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!((json["batches"].as_u64(), json["records"].as_u64()), (Some(5), Some(23)), "{json}");
    // Without the root the dev document is not trusted: the gateway's label counts for nothing.
    let (code, _, kinds) = f.audit(&[]);
    assert_eq!(code, 1);
    assert!(kinds.iter().all(|k| k == "untrusted_attestation"), "{kinds:?}");

    let text = metrics(gateway.addr("metrics"));
    assert!(
        text.contains("teelog_gateway_batches_total{stream=\"app\",signature_valid=\"true\"} 5"),
        "{text}"
    );
    assert!(text.contains("teelog_gateway_documents_total 1"), "{text}");
    gateway.stop();
    // The store sink got the same lines, the document included.
    let out = teelog(&["verify", "--store", s(&f.store()), "--trust-root", s(&root)], b"");
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 batches, 23 records"));
}

#[test]
fn tampered_and_malformed_lines_are_stored_flagged_and_reported() {
    let f = fixture();
    let id = f.software_identity();
    let pubkey = id.join("public-key.pem");
    let lines = String::from_utf8(f.sign(&id, "pay", 3, 0..9)).unwrap();
    let tampered = lines.replace("record 4", "record 44");
    let gateway = Daemon::gateway(&f.config("127.0.0.1:0", &format!("pubkeys = ['{}']", s(&pubkey)), ""));
    let body = format!("{tampered}this is not a batch\n");
    let ndjson = [("Content-Type", "application/x-ndjson")];
    let (status, answer) = http(gateway.addr("HTTP"), "POST", "/v1/batches", &ndjson, body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!((answer["batches"].as_u64(), answer["valid"].as_u64()), (Some(3), Some(2)), "{answer}");
    assert_eq!((answer["invalid"].as_u64(), answer["malformed"].as_u64()), (Some(1), Some(1)), "{answer}");
    let kinds: Vec<&str> =
        answer["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["record_tampered", "malformed"], "{answer}");

    // The invalid batch is in Loki, flagged and apart from the genuine batches; the malformed
    // line cannot be laid out in Loki and stays in the store.
    f.wait_for_batches(2);
    f.wait_for("rejected_batch", 1);
    assert!(f.batch_entries().iter().all(|(_, valid)| valid == "true"), "{:?}", f.batch_entries());
    assert_eq!(f.entries("rejected_batch")[0].1, "false");
    assert_eq!(f.entries("rejected_record").len(), 3);
    // The audit reads genuine entries only: to it, batch 1 never arrived.
    let (code, json, kinds) = f.audit(&["--pubkey", s(&pubkey)]);
    assert_eq!(code, 1, "{json}");
    assert_eq!(kinds, ["sequence_gap"], "{json}");
    // A batch under a key nobody trusts, naming a stream never seen: stored flagged, and
    // counted without its (anyone's) stream name.
    let stranger = f.root.join("stranger");
    keygen(&stranger, &[]);
    let forged = f.sign(&stranger, "x-1", 4096, 0..2);
    let (status, answer) = http(gateway.addr("HTTP"), "POST", "/v1/batches", &ndjson, &forged);
    assert!(status == 200 && answer.contains("invalid_signature"), "{answer}");
    let text = metrics(gateway.addr("metrics"));
    for series in [
        r#"{stream="pay",signature_valid="false"} 1"#,
        r#"{stream="(unverified)",signature_valid="false"} 1"#,
    ] {
        assert!(text.contains(&format!("teelog_gateway_batches_total{series}")), "{series}: {text}");
    }
    assert!(!text.contains("x-1"), "{text}");
    let log = gateway.stop();
    assert!(log.contains("finding=\"record_tampered\" stream=\"pay\""), "{log}");
    let out = teelog(&["verify", "--store", s(&f.store()), "--pubkey", s(&pubkey), "--json"], b"");
    let (_, json, kinds) = report(&out);
    assert_eq!(kinds, ["malformed", "record_tampered", "invalid_signature"], "{json}");
}

/// An audit of the fake Loki over a fixed range, without its timings.
fn audit_in(f: &Fixture, (from, to): (&str, &str), trust: &[&str]) -> (i32, Value) {
    let mut args = vec!["audit", "--loki", f.loki.url(), "--from", from, "--to", to, "--json"];
    args.extend_from_slice(trust);
    let (code, mut json, _) = report(&teelog(&args, b""));
    let audit = json["audit"].as_object_mut().unwrap();
    audit.remove("loki_seconds").unwrap();
    audit.remove("teelog_seconds").unwrap();
    (code, json)
}

#[test]
fn tampered_copies_of_a_genuine_batch_leave_its_audit_as_it_was() {
    let f = fixture();
    let id = f.software_identity();
    let pubkey = id.join("public-key.pem");
    let lines = String::from_utf8(f.sign(&id, "pay", 3, 0..9)).unwrap();
    let gateway = Daemon::gateway(&f.config("127.0.0.1:0", &format!("pubkeys = ['{}']", s(&pubkey)), ""));
    let ndjson = [("Content-Type", "application/x-ndjson")];
    let (status, answer) = http(gateway.addr("HTTP"), "POST", "/v1/batches", &ndjson, lines.as_bytes());
    assert_eq!(status, 200, "{answer}");
    f.wait_for_batches(3);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let to =
        teelog_core::timestamp::format_rfc3339(i64::try_from(now.as_nanos()).unwrap() + 3_600_000_000_000);
    let range = (from(), to);
    let range = (range.0.as_str(), range.1.as_str());
    let before = audit_in(&f, range, &["--pubkey", s(&pubkey)]);
    assert_eq!(before.0, 0, "{}", before.1);

    // Copies of batch 1, each broken in another way: a record, the signature, the hints, the
    // header (its count), a record left out.
    let genuine = lines.lines().nth(1).unwrap();
    let sig_at = genuine.find("\"sig\":\"").unwrap() + 7;
    let mut bad_sig = genuine.to_string();
    let flipped = if &bad_sig[sig_at..sig_at + 1] == "A" { "B" } else { "A" };
    bad_sig.replace_range(sig_at..sig_at + 1, flipped);
    let hints_at = genuine.find("\"hints\":\"").unwrap() + 9;
    let mut bad_hints = genuine.to_string();
    let flipped = if &bad_hints[hints_at..hints_at + 1] == "0" { "1" } else { "0" };
    bad_hints.replace_range(hints_at..hints_at + 1, flipped);
    let tampered = [
        genuine.replace("record 4", "record 44"),
        bad_sig,
        bad_hints,
        genuine.replace("\"count\":3", "\"count\":2"),
        format!("{}]}}", &genuine[..genuine.find(",{\"message\":\"record 5\"").unwrap()]),
    ];
    for copy in &tampered {
        assert_ne!(copy, genuine);
    }
    let body = tampered.join("\n") + "\n";
    let (status, answer) = http(gateway.addr("HTTP"), "POST", "/v1/batches", &ndjson, body.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["invalid"].as_u64(), Some(5), "{answer}");
    // Nor does a stranger's attestation document said to be of the stream, on its own or with a
    // batch of the stranger's that names it but does not verify.
    let stranger = f.dev_identity();
    std::fs::remove_file(f.root.join("pay.ndjson")).unwrap();
    let theirs = String::from_utf8(f.sign(&stranger, "pay", 3, 0..3)).unwrap();
    let document = theirs.lines().next().unwrap();
    assert!(document.contains("\"attestation\":\""), "{document}");
    let forged = theirs.lines().nth(1).unwrap().replace("record 1", "record 11");
    for body in [format!("{document}\n"), format!("{document}\n{forged}\n")] {
        let (status, answer) =
            http(gateway.addr("HTTP"), "POST", "/v1/batches?stream=pay", &ndjson, body.as_bytes());
        assert_eq!(status, 200, "{answer}");
    }
    f.wait_for("rejected_batch", 5);
    // Each copy is kept as evidence, flagged, where the audit does not read it.
    // The first and the last copy share their batch entry (only records differ), which Loki
    // folds into one; the stranger's forged batch is the fifth.
    assert!(f.entries("rejected_batch").iter().all(|(_, valid)| valid == "false"));
    assert_eq!(f.batch_entries().len(), 3, "{:?}", f.batch_entries());
    assert!(f.entries("attestation").is_empty(), "{:?}", f.entries("attestation"));
    let after = audit_in(&f, range, &["--pubkey", s(&pubkey)]);
    assert_eq!(after, before);
    gateway.stop();
}

#[test]
fn input_never_starts_a_log_line_or_a_metrics_line() {
    let f = fixture();
    let id = f.software_identity();
    let pubkey = id.join("public-key.pem");
    let gateway = Daemon::gateway(&f.config("127.0.0.1:0", &format!("pubkeys = ['{}']", s(&pubkey)), ""));
    let forged = "FORGED 2026-01-01T00:00:00Z  WARN teelog::gateway: all is well";
    let ndjson = [("Content-Type", "application/x-ndjson")];
    // A stream name in the query, a line that is no batch, and a batch whose stream and records
    // carry newlines, carriage returns, line separators and terminal escapes.
    let path = "/v1/batches?stream=a%0A".to_string() + &forged.replace(' ', "%20");
    let (status, _) = http(gateway.addr("HTTP"), "POST", &path, &ndjson, b"x\n");
    assert_eq!(status, 400);
    let nasty = ["\\n", "\\r", "\\u2028", "\\u001b[2K", "\\u0085"]
        .map(|sep| format!("{{\"v\":1,\"header\":{{\"stream\":\"s{sep}{forged}\"}}}}\n"))
        .concat();
    let (status, answer) = http(gateway.addr("HTTP"), "POST", "/v1/batches", &ndjson, nasty.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let stranger = f.root.join("stranger");
    keygen(&stranger, &[]);
    let batch = String::from_utf8(f.sign(&stranger, "st", 4, 0..1)).unwrap();
    let batch = batch.replace("record 0", &format!("record 0\\n{forged}\\u2028{forged}"));
    let (status, answer) = http(gateway.addr("HTTP"), "POST", "/v1/batches", &ndjson, batch.as_bytes());
    assert_eq!(status, 200, "{answer}");
    let mut hello = b"TEELOGR1".to_vec();
    hello.extend(frame(format!("{{\"relay\":1,\"stream\":\"r\\n{forged}\"}}").as_bytes()));
    let answer = relay_exchange(gateway.addr("relay"), &hello);
    assert!(answer[0]["error"].is_string(), "{answer:?}");

    let text = metrics(gateway.addr("metrics"));
    for line in text.lines() {
        assert!(line.starts_with("# ") || line.starts_with("teelog_"), "{line:?} in {text}");
    }
    assert!(!text.contains("FORGED"), "{text}");
    let log = gateway.stop();
    // Every line is one the gateway began: a timestamp, then the level.
    let mut carried = 0;
    for line in log.lines() {
        let stamp = line.get(..20).unwrap_or("");
        assert!(
            stamp.len() == 20 && stamp.as_bytes()[4] == b'-' && stamp.as_bytes()[10] == b'T',
            "a log line the gateway did not begin: {line:?}"
        );
        assert!(!line.chars().any(|c| c.is_control() || c == '\u{2028}'), "{line:?}");
        carried += line.matches("FORGED").count();
    }
    // The input did reach the log, escaped: the query's stream and the hello's.
    assert!(carried >= 2, "{log}");
}

#[test]
fn loki_down_and_the_gateway_killed_lose_no_batch() {
    let f = fixture();
    let id = f.dev_identity();
    let root = id.join("dev-root.pem");
    let relay = free_port();
    let config = f.config(&relay, &format!("trust_roots = ['{}']", s(&root)), "");
    // Loki refuses everything for a while: the gateway spools and retries.
    f.loki.fail_next(6, 503, None);
    let gateway = Daemon::gateway(&config);
    let spool = f.root.join("spool");
    ship_stdin(&id, &spool, relay.parse().unwrap(), &records(0..10));
    f.wait_for_batches(2);
    // Killed with batches acknowledged; the next shipper run finds a gateway again only after
    // its restart, and nothing acknowledged before is lost.
    gateway.kill_9();
    let relay_addr: SocketAddr = relay.parse().unwrap();
    let shipper = std::thread::spawn({
        let (id, spool) = (id.clone(), spool.clone());
        move || ship_stdin(&id, &spool, relay_addr, &records(10..30))
    });
    std::thread::sleep(Duration::from_millis(500));
    let gateway = Daemon::gateway(&config);
    shipper.join().unwrap();
    f.wait_for_batches(6);
    let (code, json, kinds) = f.audit(&["--trust-root", s(&root)]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(json["records"].as_u64(), Some(30), "{json}");
    let text = metrics(gateway.addr("metrics"));
    assert!(!text.contains("findings_total{kind="), "a restart is not a finding: {text}");
    gateway.stop();
}

/// The `seq` of a batch or checkpoint line's header, or its highest tip; None for other lines.
fn line_seq(line: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(line).ok()?;
    if let Some(tips) = v["checkpoint"]["tips"].as_array() {
        return tips.iter().filter_map(|t| t["seq"].as_u64()).max();
    }
    v["header"]["seq"].as_u64()
}

/// `teelog verify FILES… ARGS --json`: the exit code and the kinds of the findings.
fn verify_json(files: &[&Path], args: &[&str]) -> (i32, Value, Vec<String>) {
    let mut all = vec!["verify", "--json"];
    all.extend(files.iter().map(|p| s(p)));
    all.extend_from_slice(args);
    report(&teelog(&all, b""))
}

#[test]
fn checkpoints_on_interval_and_on_sigterm_show_a_tail_cut_below_them() {
    let f = fixture();
    let id = f.dev_identity();
    let root = id.join("dev-root.pem");
    let trust = format!("trust_roots = ['{}']", s(&root));
    let relay = free_port();
    let spool = f.root.join("spool");
    // First run: checkpoints every second.
    let config = f.config(&relay, &trust, "[checkpoint]\nevery = '1s'\n");
    let gateway = Daemon::gateway(&config);
    ship_stdin(&id, &spool, relay.parse().unwrap(), &records(0..23));
    f.wait_for_batches(5);
    f.wait_for("checkpoint", 1);
    let key = f.root.join("gateway-checkpoint.pem");
    let printed = teelog(&["gateway", "--config", s(&config), "--print-checkpoint-key"], b"");
    ok(&printed);
    std::fs::write(&key, &printed.stdout).unwrap();
    let written = std::fs::read(f.root.join("gw-spool/checkpoint-key.pub.pem")).unwrap();
    assert_eq!(printed.stdout, written, "the key printed is the one written beside the spool");
    gateway.stop();
    let interval: Vec<u64> = f.entries("checkpoint").iter().filter_map(|(l, _)| line_seq(l)).collect();
    assert_eq!(interval.iter().max(), Some(&5), "the checkpoints name the newest batch: {interval:?}");

    // Second run: no interval tick in reach, so only the shutdown checkpoint names seq 6 and 7.
    let config = f.config(&relay, &trust, "[checkpoint]\nevery = '1h'\n");
    let gateway = Daemon::gateway(&config);
    ship_stdin(&id, &spool, relay.parse().unwrap(), &records(23..33));
    f.wait_for_batches(7);
    assert!(f.entries("checkpoint").iter().all(|(l, _)| line_seq(l) <= Some(5)), "no tick yet");
    gateway.stop();
    f.wait_for("checkpoint", interval.len() + 1);
    let lines: Vec<String> = teelog_store::indexed_segments(&f.store())
        .unwrap()
        .iter()
        .flat_map(|(_, path)| {
            std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    let newest = lines.iter().filter(|l| l.contains("\"checkpoint\":")).filter_map(|l| line_seq(l)).max();
    assert_eq!(newest, Some(7), "the SIGTERM checkpoint names the last batch stored");

    let ck = ["--trust-root", s(&root), "--checkpoint-key", s(&key)];
    let intact = f.root.join("intact.ndjson");
    std::fs::write(&intact, lines.join("\n") + "\n").unwrap();
    let (code, json, kinds) = verify_json(&[&intact], &ck);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert!(json["checkpoints"].as_u64() > Some(1), "{json}");
    // Without the key the checkpoints are counted and change nothing.
    let (code, json, _) = verify_json(&[&intact], &["--trust-root", s(&root)]);
    assert_eq!(code, 0, "{json}");

    // The tail cut below the newest checkpoint: found, at the first batch missing.
    let is_batch_at_least = |l: &String, seq| !l.contains("\"checkpoint\":") && line_seq(l) >= Some(seq);
    let cut: Vec<&String> = lines.iter().filter(|l| !is_batch_at_least(l, 6)).collect();
    let cut_file = f.root.join("cut.ndjson");
    std::fs::write(&cut_file, cut.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (code, json, kinds) = verify_json(&[&cut_file], &ck);
    assert_eq!(
        (code, kinds.as_slice()),
        (1, ["truncated_after_checkpoint".to_string()].as_slice()),
        "{json}"
    );
    assert_eq!(json["findings"][0]["seq"].as_u64(), Some(6), "{json}");
    // Without the checkpoints, the same cut store verifies: this is what they are for.
    assert_eq!(verify_json(&[&cut_file], &["--trust-root", s(&root)]).0, 0);

    // The newest checkpoint cut along with the tail: the older ones cannot see it, the copy the
    // gateway kept apart can.
    let cut_more: Vec<&String> =
        cut.iter().copied().filter(|l| !(l.contains("\"checkpoint\":") && line_seq(l) >= Some(6))).collect();
    std::fs::write(&cut_file, cut_more.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    assert_eq!(verify_json(&[&cut_file], &ck).0, 0, "a cut after the last checkpoint left is not seen");
    let kept = f.root.join("gw-spool/checkpoints.ndjson");
    let mut with_kept = ck.to_vec();
    with_kept.extend(["--checkpoint", s(&kept)]);
    let (code, json, kinds) = verify_json(&[&cut_file], &with_kept);
    assert_eq!(
        (code, kinds.as_slice()),
        (1, ["truncated_after_checkpoint".to_string()].as_slice()),
        "{json}"
    );

    // A tampered checkpoint and a wrong key are findings, never ignored.
    let tampered: Vec<String> = lines
        .iter()
        .map(|l| if l.contains("\"checkpoint\":") { l.replace("\"seq\":", "\"seq\":1") } else { l.clone() })
        .collect();
    let tampered_file = f.root.join("tampered.ndjson");
    std::fs::write(&tampered_file, tampered.join("\n") + "\n").unwrap();
    let (code, json, kinds) = verify_json(&[&tampered_file], &ck);
    assert_eq!(code, 1, "{json}");
    assert!(kinds.iter().any(|k| k == "invalid_checkpoint"), "{json}");
    assert!(kinds.iter().all(|k| k == "invalid_checkpoint" || k == "missing_checkpoint"), "{json}");
    let other = f.software_identity().join("public-key.pem");
    let (code, json, kinds) =
        verify_json(&[&intact], &["--trust-root", s(&root), "--checkpoint-key", s(&other)]);
    assert_eq!(code, 1, "{json}");
    assert!(
        kinds.contains(&"invalid_checkpoint".to_string())
            && kinds.contains(&"missing_checkpoint".to_string()),
        "{json}"
    );

    // The audit reads the checkpoints from Loki: intact, then with the newest batches deleted.
    let (code, json, kinds) = f.audit(&ck);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    f.loki.edit(|streams| {
        for (labels, entries) in streams.iter_mut() {
            if labels.get("teelog_kind").map(String::as_str) == Some("batch") {
                entries.retain(|e| line_seq(&e.line) < Some(7));
            }
        }
    });
    let (code, json, kinds) = f.audit(&ck);
    assert_eq!(code, 1, "{json}");
    assert!(kinds.contains(&"truncated_after_checkpoint".to_string()), "{json}");
}

#[test]
fn a_stream_posted_over_http_and_removed_whole_is_found_by_the_checkpoints_kept_apart() {
    let f = fixture();
    let id = f.software_identity();
    let pubkey = id.join("public-key.pem");
    let config = f.config("127.0.0.1:0", &format!("pubkeys = ['{}']", s(&pubkey)), "[checkpoint]\n");
    let gateway = Daemon::gateway(&config);
    let ndjson = [("Content-Type", "application/x-ndjson")];
    for stream in ["payments", "audit"] {
        let mut lines = f.sign(&id, stream, 2, 0..6);
        if stream == "audit" {
            // A client on Windows sends CRLF: the line ending is framing, not part of the line.
            lines = String::from_utf8(lines).unwrap().replace('\n', "\r\n").into_bytes();
        }
        let (status, answer) = http(gateway.addr("HTTP"), "POST", "/v1/batches", &ndjson, &lines);
        assert_eq!(status, 200, "{answer}");
    }
    f.wait_for_batches(6);
    gateway.stop();
    // One checkpoint per stream, each naming its own third batch.
    let kept = f.root.join("gw-spool/checkpoints.ndjson");
    let checkpoints: Vec<Value> =
        std::fs::read_to_string(&kept).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let named: Vec<(&str, u64)> = checkpoints
        .iter()
        .map(|c| {
            (c["checkpoint"]["stream"].as_str().unwrap(), c["checkpoint"]["tips"][0]["seq"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(named, [("audit", 3), ("payments", 3)]);
    let key = f.root.join("gw-spool/checkpoint-key.pub.pem");
    let segments = teelog_store::indexed_segments(&f.store()).unwrap();
    for (_, path) in &segments {
        assert!(!std::fs::read(path).unwrap().contains(&b'\r'), "{}: a CR was stored", path.display());
    }
    let lines: Vec<String> = segments
        .iter()
        .flat_map(|(_, path)| {
            std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    // The whole "audit" stream gone, its checkpoints with it: nothing in the store names it.
    let left: String =
        lines.iter().filter(|l| !l.contains("\"stream\":\"audit\"")).map(|l| format!("{l}\n")).collect();
    let cut = f.root.join("cut.ndjson");
    std::fs::write(&cut, left).unwrap();
    let trust = ["--pubkey", s(&pubkey), "--checkpoint-key", s(&key)];
    assert_eq!(verify_json(&[&cut], &trust).0, 0, "the store alone cannot show a stream it no longer has");
    let (code, json, kinds) = verify_json(&[&cut], &[&trust[..], &["--checkpoint", s(&kept)]].concat());
    assert_eq!((code, kinds), (1, vec!["truncated_after_checkpoint".to_string()]), "{json}");
    assert_eq!(json["findings"][0]["stream"].as_str(), Some("audit"), "{json}");
}

#[path = "../../tsa/tests/support/openssl_tsa.rs"]
mod openssl_tsa;

#[test]
fn checkpoints_stamped_by_a_tsa_say_by_when_the_heads_existed() {
    let f = fixture();
    let id = f.dev_identity();
    let root = id.join("dev-root.pem");
    let tsa_dir = f.root.join("tsa");
    std::fs::create_dir(&tsa_dir).unwrap();
    openssl_tsa::tsa(&tsa_dir, "timeStamping");
    let url = openssl_tsa::serve(&tsa_dir);
    let relay = free_port();
    let extra = format!("[checkpoint]\nevery = '1h'\ntsa = '{url}'\n");
    let config = f.config(&relay, &format!("trust_roots = ['{}']", s(&root)), &extra);
    let gateway = Daemon::gateway(&config);
    ship_stdin(&id, &f.root.join("spool"), relay.parse().unwrap(), &records(0..23));
    f.wait_for_batches(5);
    gateway.stop();
    let key = f.root.join("gw-spool/checkpoint-key.pub.pem");
    let kept = f.root.join("gw-spool/checkpoints.ndjson");
    assert!(
        std::fs::read_to_string(&kept).unwrap().contains("\"timestamp\":\""),
        "the checkpoint carries its token"
    );
    let store_dir = f.store();
    let store = ["--store", s(&store_dir), "--trust-root", s(&root), "--checkpoint-key", s(&key)];
    let (code, json, kinds) =
        verify_json(&[], &[&store[..], &["--tsa-root", s(&tsa_dir.join("ca.pem"))]].concat());
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    let stamped = &json["checkpoint_times"][0];
    assert_eq!(stamped["seq"].as_u64(), Some(5), "{json}");
    let newest_sealed = f
        .batch_entries()
        .iter()
        .filter_map(|(l, _)| {
            serde_json::from_str::<Value>(l).ok()?["header"]["sealed_at"].as_str().map(str::to_string)
        })
        .max()
        .unwrap();
    // openssl's TSA writes whole seconds.
    assert!(stamped["no_later_than"].as_str().unwrap()[..19] >= newest_sealed[..19], "{json}");
    // Without --tsa-root the token is not checked and no time is claimed.
    let (code, json, _) = verify_json(&[], &store);
    assert!(code == 0 && json.get("checkpoint_times").is_none(), "{json}");
    // Another TSA's root: the token is no trusted time, and that is a finding.
    let other = f.root.join("other-tsa");
    std::fs::create_dir(&other).unwrap();
    openssl_tsa::tsa(&other, "timeStamping");
    let (code, json, kinds) =
        verify_json(&[], &[&store[..], &["--tsa-root", s(&other.join("ca.pem"))]].concat());
    assert_eq!((code, kinds), (1, vec!["time_anomaly".to_string()]), "{json}");
}

/// Frames of the relay protocol, written by hand.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Sends `bytes` on a new relay connection and returns the server's messages until it closes
/// or goes quiet.
fn relay_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<Value> {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    socket.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.ends_with(b"}") && answer.windows(6).any(|w| w == b"\"ack\":") {
            break;
        }
    }
    let mut messages = Vec::new();
    let mut rest = &answer[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        messages.push(serde_json::from_slice(&rest[4..4 + len]).unwrap());
        rest = &rest[4 + len..];
    }
    messages
}

#[test]
fn hostile_requests_get_4xx_and_a_log_line_and_others_go_on() {
    let f = fixture();
    let id = f.software_identity();
    let pubkey = id.join("public-key.pem");
    let line = f.sign(&id, "ops", 4096, 0..4);
    std::fs::write(f.root.join("token"), "s3cret\n").unwrap();
    let extra = format!(
        "bearer_token_file = '{}'\nmax_request_bytes = 100000\nrequest_timeout = '3s'",
        s(&f.root.join("token"))
    );
    let gateway = Daemon::gateway(&f.config("127.0.0.1:0", &format!("pubkeys = ['{}']", s(&pubkey)), &extra));
    let http_addr = gateway.addr("HTTP");
    let ndjson = ("Content-Type", "application/x-ndjson");
    let bearer = ("Authorization", "Bearer s3cret");

    let (status, body) = http(http_addr, "POST", "/v1/batches", &[ndjson], &line);
    assert_eq!(status, 401, "{body}");
    let (status, body) =
        http(http_addr, "POST", "/v1/batches", &[ndjson, ("Authorization", "Bearer guess")], &line);
    assert_eq!(status, 401, "{body}");
    let (status, body) =
        http(http_addr, "POST", "/v1/batches", &[("Content-Type", "text/csv"), bearer], &line);
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("application/x-ndjson"), "{body}");
    // Refused on its declared length, before a byte of it is read.
    let mut socket = TcpStream::connect(http_addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = "POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n\
                Authorization: Bearer s3cret\r\nContent-Length: 200000\r\n\r\n";
    socket.write_all(head.as_bytes()).unwrap();
    let mut answer = [0u8; 12];
    socket.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");
    let (status, body) = http(http_addr, "POST", "/v1/batches?stream=bad%20name", &[ndjson, bearer], &line);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("stream"), "{body}");

    let relay = gateway.addr("relay");
    // A client that never says hello is let go after a while (checked at the end).
    let silent = std::thread::spawn(move || relay_exchange(relay, b""));
    // Nor may one past its hello trickle a frame, a byte a second, holding its part of the
    // memory every connection shares: it has request_timeout to complete it.
    let trickle = std::thread::spawn(move || {
        let mut socket = TcpStream::connect(relay).unwrap();
        let mut begun = b"TEELOGR1".to_vec();
        begun.extend(frame(br#"{"relay":1,"stream":"ops","token":"s3cret"}"#));
        begun.extend_from_slice(&5000u32.to_be_bytes());
        begun.extend_from_slice(&[b'{'; 100]);
        socket.write_all(&begun).unwrap();
        let mut writer = socket.try_clone().unwrap();
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            while writer.write_all(b"x").is_ok() {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
    });
    let answer = relay_exchange(relay, b"GET / HTTP/1.1\r\n\r\n");
    assert!(answer[0]["error"].as_str().unwrap().contains("not a teelog relay client"), "{answer:?}");
    let mut no_token = b"TEELOGR1".to_vec();
    no_token.extend(frame(br#"{"relay":1,"stream":"ops"}"#));
    let answer = relay_exchange(relay, &no_token);
    assert!(answer[0]["error"].as_str().unwrap().contains("bearer token"), "{answer:?}");
    let mut huge = b"TEELOGR1".to_vec();
    huge.extend(frame(br#"{"relay":1,"stream":"ops","token":"s3cret"}"#));
    huge.extend_from_slice(&1_000_000u32.to_be_bytes());
    let answer = relay_exchange(relay, &huge);
    assert!(answer[0]["welcome"].is_string(), "{answer:?}");
    assert!(answer[1]["error"].as_str().unwrap().contains("larger than"), "{answer:?}");

    // A well-behaved client is served all along.
    let mut good = b"TEELOGR1".to_vec();
    good.extend(frame(br#"{"relay":1,"stream":"ops","token":"s3cret"}"#));
    good.extend(frame(line.strip_suffix(b"\n").unwrap()));
    let answer = relay_exchange(relay, &good);
    assert_eq!(answer[1]["ack"].as_u64(), Some(1), "{answer:?}");
    let (status, body) = http(http_addr, "POST", "/v1/batches", &[ndjson, bearer], &line);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"duplicates\":1"), "{body}");

    let answer = silent.join().unwrap();
    assert!(answer[0]["error"].as_str().unwrap().contains("no hello within 5s"), "{answer:?}");
    let (answer, took) = trickle.join().unwrap();
    assert!(answer.contains("a frame begun was not whole within 3s"), "{answer:?}");
    assert!(took < Duration::from_secs(15), "cut after {took:?}");
    let text = metrics(gateway.addr("metrics"));
    for reason in [
        r#"source="http",reason="unauthorized"} 2"#,
        r#"reason="content_type"} 1"#,
        r#"reason="too_large"} 1"#,
    ] {
        assert!(text.contains(reason), "{reason}: {text}");
    }
    assert!(text.contains(r#"source="relay",reason="bad_request"} 1"#), "{text}");
    assert!(text.contains(r#"source="relay",reason="timeout"} 2"#), "{text}");
    let log = gateway.stop();
    assert!(log.contains("refused a request") && log.contains("not a teelog relay client"), "{log}");
}

#[test]
fn over_mtls_only_clients_with_a_certificate_get_in() {
    let f = fixture();
    let pki = pki(&f.root);
    let id = f.dev_identity();
    let root = id.join("dev-root.pem");
    let tls = format!(
        "[listen.tls]\ncert = '{}'\nkey = '{}'\nclient_ca = '{}'",
        s(&pki.server_cert),
        s(&pki.server_key),
        s(&pki.ca)
    );
    let gateway = Daemon::gateway(&f.config("127.0.0.1:0", &format!("trust_roots = ['{}']", s(&root)), &tls));
    let ship = f.root.join("ship.toml");
    std::fs::write(
        &ship,
        format!(
            "identity = '{}'\nstream = 'app'\n[batch]\nmax_records = 4\nheartbeat = 'off'\n[spool]\ndir = '{}'\n\
             [sources]\nstdin = true\n[[sinks]]\nkind = 'relay'\naddress = '{}'\n\
             [sinks.tls]\nca = '{}'\nclient_cert = '{}'\nclient_key = '{}'\nserver_name = 'localhost'\n",
            s(&id),
            s(&f.root.join("spool")),
            gateway.addr("relay"),
            s(&pki.ca),
            s(&pki.client_cert),
            s(&pki.client_key)
        ),
    )
    .unwrap();
    ok(&teelog(&["ship", "--config", s(&ship)], &records(0..10)));
    f.wait_for_batches(3);
    let (code, json, _) = f.audit(&["--trust-root", s(&root)]);
    assert_eq!((code, json["records"].as_u64()), (0, Some(10)), "{json}");

    // Plain TCP on the TLS port gets no welcome.
    let mut plain = TcpStream::connect(gateway.addr("relay")).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut opening = b"TEELOGR1".to_vec();
    opening.extend(frame(br#"{"relay":1,"stream":"app"}"#));
    plain.write_all(&opening).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("welcome"));

    let request = b"POST /v1/batches HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: 7\r\n\r\nnot a\n\n";
    let answer = https(gateway.addr("HTTP"), &pki, true, request).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(https(gateway.addr("HTTP"), &pki, false, request).is_err(), "no client certificate, no answer");

    // The server counts a refused handshake in its own task, possibly after the client has seen
    // the refusal (a TLS 1.3 client learns of it only on its first read).
    let refused = [
        r#"teelog_requests_refused_total{source="relay",reason="tls"} 1"#,
        r#"teelog_requests_refused_total{source="http",reason="tls"} 1"#,
    ];
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics(gateway.addr("metrics"));
        if refused.iter().all(|line| text.contains(line)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for line in refused {
        assert!(text.contains(line), "{text}");
    }
    let log = gateway.stop();
    assert!(log.contains("TLS handshake failed"), "{log}");
}

/// Connections a flood opens: past every cap the gateway sets under `ulimit -n 1024`, and past
/// that limit itself (a gateway that took them all would have no descriptor left for a
/// shipper). A test process allowed fewer opens what it can.
const FLOOD: usize = 1200;

/// How a flood's connections behave once open.
#[derive(Debug, Clone, Copy)]
enum Flood {
    /// Connect, send nothing.
    Idle,
    /// Send what they must send first (the relay magic, HTTP request headers) a byte at a time.
    Slow(&'static [u8]),
}

/// Opens `FLOOD` connections to `addr` and keeps them open, behaving as `flood` says, until the
/// returned flag is set; a connection the gateway closes is not replaced.
fn flood(
    addr: SocketAddr,
    flood: Flood,
) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let mut sockets: Vec<TcpStream> = (0..FLOOD).filter_map(|_| TcpStream::connect(addr).ok()).collect();
    assert!(sockets.len() > FLOOD / 2, "only {} flood connections opened", sockets.len());
    let thread = std::thread::spawn(move || {
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            if let Flood::Slow(opening) = flood {
                let byte = &opening[sent % opening.len()..][..1];
                sockets.retain_mut(|s| s.write_all(byte).is_ok());
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    (done, thread)
}

#[test]
fn floods_of_idle_and_slow_connections_leave_a_shipper_served_under_ulimit_1024() {
    let f = fixture();
    let id = f.software_identity();
    let pubkey = id.join("public-key.pem");
    let line = f.sign(&id, "ops", 4096, 0..4);
    std::fs::write(f.root.join("token"), "s3cret\n").unwrap();
    let extra = format!("bearer_token_file = '{}'", s(&f.root.join("token")));
    let config = f.config("127.0.0.1:0", &format!("pubkeys = ['{}']", s(&pubkey)), &extra);
    let gateway = Daemon::gateway_with_open_files(&config, 1024);
    let (relay, http_addr) = (gateway.addr("relay"), gateway.addr("HTTP"));
    let mut shipper = b"TEELOGR1".to_vec();
    shipper.extend(frame(br#"{"relay":1,"stream":"ops","token":"s3cret"}"#));
    shipper.extend(frame(line.strip_suffix(b"\n").unwrap()));
    let headers = [("Content-Type", "application/x-ndjson"), ("Authorization", "Bearer s3cret")];
    // The real shipper, relaying with the token.
    let ship = f.root.join("ship.toml");
    std::fs::write(
        &ship,
        format!(
            "identity = '{}'\nstream = 'app'\n[batch]\nheartbeat = 'off'\n[spool]\ndir = '{}'\n\
             [sources]\nstdin = true\n[[sinks]]\nkind = 'relay'\naddress = '{relay}'\n\
             bearer_token_file = '{}'\n",
            s(&id),
            s(&f.root.join("ship-spool")),
            s(&f.root.join("token")),
        ),
    )
    .unwrap();
    let mut shipped = 0;
    // A run of the shipper, a relay exchange and an HTTP post: each must succeed; how long each
    // took.
    let mut serve_shipper = || {
        let started = Instant::now();
        ok(&teelog(&["ship", "--config", s(&ship)], &records(shipped..shipped + 5)));
        shipped += 5;
        let ship_ms = started.elapsed().as_millis();
        let started = Instant::now();
        let answer = relay_exchange(relay, &shipper);
        assert_eq!(answer.get(1).and_then(|a| a["ack"].as_u64()), Some(1), "{answer:?}");
        let relay_ms = started.elapsed().as_millis().max(ship_ms);
        let started = Instant::now();
        let (status, body) = http(http_addr, "POST", "/v1/batches", &headers, &line);
        assert_eq!(status, 200, "{body}");
        (relay_ms, started.elapsed().as_millis())
    };
    let (relay_ms, http_ms) = serve_shipper();
    eprintln!(
        "FIGURES no flood: gateway RSS {} KiB, shipper (worst of a teelog ship run and a relay exchange) {relay_ms} ms, http {http_ms} ms",
        gateway.rss_kib()
    );

    let slow_http = b"POST /v1/batches HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/x-ndjson\r\n";
    for (name, addr, behaviour) in [
        ("relay idle", relay, Flood::Idle),
        ("relay slow hello", relay, Flood::Slow(b"TEELOGR1\0\0\0\x20{\"relay\":1,\"stream\":\"ops\"}")),
        ("http idle", http_addr, Flood::Idle),
        ("http slow headers", http_addr, Flood::Slow(slow_http)),
    ] {
        let started = Instant::now();
        let (done, thread) = flood(addr, behaviour);
        // Let the flood settle in: every connection accepted, the slow ones part way through.
        std::thread::sleep(Duration::from_millis(1500));
        let mut worst = (0, 0);
        for _ in 0..3 {
            let (relay_ms, http_ms) = serve_shipper();
            worst = (worst.0.max(relay_ms), worst.1.max(http_ms));
        }
        let rss = gateway.rss_kib();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        thread.join().unwrap();
        eprintln!(
            "FIGURES {name} flood of {FLOOD}: gateway RSS {rss} KiB, shipper relay {} ms, http {} ms (worst of 3)",
            worst.0, worst.1
        );
        assert!(worst.0 < 5000 && worst.1 < 5000, "{name}: the shipper waited {worst:?} ms");
        assert!(rss < 100 * 1024, "{name}: the gateway holds {rss} KiB");
        assert!(started.elapsed() < Duration::from_secs(40), "{name} took {:?}", started.elapsed());
    }
    // Every record the shipper was given is in Loki.
    let stored = || -> usize {
        let streams = f.loki.streams();
        let app = streams.iter().filter(|(l, _)| l["teelog_kind"] == "record" && l["teelog_stream"] == "app");
        app.map(|(_, entries)| entries.len()).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored() < shipped as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(stored(), shipped as usize);
    let text = metrics(gateway.addr("metrics"));
    for source in ["relay", "http"] {
        let evicted = format!("teelog_requests_refused_total{{source=\"{source}\",reason=\"evicted\"}}");
        assert!(text.contains(&evicted), "{evicted}: {text}");
    }
    gateway.stop();
}

#[test]
fn relay_places_per_peer_and_request_memory_are_bounded() {
    let f = fixture();
    let id = f.software_identity();
    let pubkey = id.join("public-key.pem");
    let extra = "max_request_bytes = 1000000\nmax_buffered_bytes = 2097152";
    let config = f.config("127.0.0.1:0", &format!("pubkeys = ['{}']", s(&pubkey)), extra);
    // Under ulimit -n 1024 the gateway allows 56 relay connections per peer address.
    let gateway = Daemon::gateway_with_open_files(&config, 1024);
    let relay = gateway.addr("relay");
    let mut hello = b"TEELOGR1".to_vec();
    hello.extend(frame(br#"{"relay":1,"stream":"ops"}"#));
    let open = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut socket = TcpStream::connect(relay).unwrap();
                socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                socket.write_all(&hello).unwrap();
                let mut len = [0u8; 4];
                socket.read_exact(&mut len).unwrap();
                let mut message = vec![0u8; u32::from_be_bytes(len) as usize];
                socket.read_exact(&mut message).unwrap();
                assert!(String::from_utf8_lossy(&message).contains("welcome"));
                socket
            })
            .collect()
    };
    let mut held = open(56);
    let answer = relay_exchange(relay, &hello);
    let refusal = answer[0]["error"].as_str().unwrap_or_default();
    assert!(refusal.contains("56 relay connections from 127.0.0.1"), "{answer:?}");
    // One goes, and there is room again.
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    held.extend(open(1));
    drop(held);

    // A client holding most of the memory budget with a body it does not finish: another's
    // request waits for it, then is answered 503, and the gateway holds no more than that.
    let http_addr = gateway.addr("HTTP");
    let mut hog = TcpStream::connect(http_addr).unwrap();
    let head = "POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n\
                Content-Length: 1000000\r\n\r\n";
    hog.write_all(head.as_bytes()).unwrap();
    hog.write_all(&vec![b'x'; 900_000]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let ndjson = [("Content-Type", "application/x-ndjson")];
    let (status, body) = http(http_addr, "POST", "/v1/batches", &ndjson, &vec![b'y'; 300_000]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("2097152 bytes"), "{body}");
    assert!(started.elapsed() >= Duration::from_secs(9), "{:?}", started.elapsed());
    // Once the hog is done, the same request goes through.
    hog.write_all(&vec![b'x'; 100_000]).unwrap();
    hog.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = [0u8; 12];
    hog.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let (status, body) = http(http_addr, "POST", "/v1/batches", &ndjson, &vec![b'y'; 300_000]);
    assert_eq!(status, 200, "{body}");
    let text = metrics(gateway.addr("metrics"));
    assert!(text.contains(r#"source="relay",reason="too_many"} 1"#), "{text}");
    assert!(text.contains(r#"source="http",reason="memory"} 1"#), "{text}");
    gateway.stop();
}

#[test]
fn a_gateway_beyond_loopback_without_client_authentication_refuses_to_start() {
    let f = fixture();
    let id = f.software_identity();
    let verify = format!("pubkeys = ['{}']", s(&id.join("public-key.pem")));
    let config = f.config("0.0.0.0:0", &verify, "");
    let out = teelog(&["gateway", "--config", s(&config)], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("listen.relay = \"0.0.0.0:0\"") && stderr.contains("authenticate"), "{stderr}");
    assert!(stderr.contains("--insecure-no-auth") && stderr.contains("bearer_token_file"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");

    // Told to, it starts; with a token, it needs no telling.
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_teelog"))
        .args(["gateway", "--config", s(&config), "--insecure-no-auth"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let mut stderr = std::io::BufReader::new(daemon.stderr.take().unwrap());
    while !log.contains("gateway running") {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0, "{log}");
        log.push_str(&line);
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    std::fs::write(f.root.join("token"), "s3cret\n").unwrap();
    let extra = format!("bearer_token_file = '{}'", s(&f.root.join("token")));
    Daemon::gateway(&f.config("0.0.0.0:0", &verify, &extra)).stop();
}

/// The entries Loki answers `query` with, forward over the last two days, with their labels.
fn loki_query(f: &Fixture, query: &str) -> Vec<(std::collections::BTreeMap<String, String>, String)> {
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
            .unwrap();
    let range =
        teelog_loki::QueryRange::new(query, now - 2 * 86_400_000_000_000, now + 3_600_000_000_000, 5000)
            .unwrap();
    let addr: SocketAddr = f.loki.url().trim_start_matches("http://").parse().unwrap();
    let (status, body) = http(addr, "GET", &range.path_and_query(), &[], b"");
    assert_eq!(status, 200, "{query}: {body}");
    let response = teelog_loki::parse_query_response(body.as_bytes()).unwrap();
    let mut entries: Vec<_> = response
        .streams
        .into_iter()
        .flat_map(|s| s.entries.into_iter().map(move |e| (e.timestamp, s.labels.clone(), e.line)))
        .collect();
    entries.sort_by_key(|(timestamp, _, _)| *timestamp);
    entries.into_iter().map(|(_, labels, line)| (labels, line)).collect()
}

/// docs/LOKI.md §6 shows the seed's two queries beside their teelog equivalents; these are
/// those equivalents, run against the fake Loki with what a gateway stored there.
#[test]
fn the_seed_queries_have_teelog_equivalents() {
    const INVALID: &str = r#"{job="teelog", teelog_kind="rejected_batch"}"#;
    const IN_SEQ_ORDER: &str = r#"{job="teelog", teelog_kind="batch", teelog_stream="payments"}"#;
    let loki_md =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/LOKI.md")).unwrap();
    for query in [INVALID, IN_SEQ_ORDER] {
        assert!(loki_md.contains(&format!("`{query}`")), "docs/LOKI.md does not show {query}");
    }
    let f = fixture();
    let id = f.software_identity();
    let pubkey = id.join("public-key.pem");
    let lines = String::from_utf8(f.sign(&id, "payments", 2, 0..8)).unwrap();
    let gateway = Daemon::gateway(&f.config("127.0.0.1:0", &format!("pubkeys = ['{}']", s(&pubkey)), ""));
    let ndjson = [("Content-Type", "application/x-ndjson")];
    // Sent twice (a shipper's retry), and a tampered copy of the third batch.
    let tampered = lines.lines().nth(2).unwrap().replace("record 4", "record 40");
    for body in [lines.clone(), lines.clone(), tampered.clone() + "\n"] {
        let (status, answer) = http(gateway.addr("HTTP"), "POST", "/v1/batches", &ndjson, body.as_bytes());
        assert_eq!(status, 200, "{answer}");
    }
    f.wait_for_batches(4);
    f.wait_for("rejected_batch", 1);

    let invalid = loki_query(&f, INVALID);
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert_eq!(invalid[0].0.get("signature_valid").map(String::as_str), Some("false"));
    assert!(tampered.starts_with(invalid[0].1.strip_suffix('}').unwrap()), "{invalid:?}");
    let batches = loki_query(&f, IN_SEQ_ORDER);
    let seqs: Vec<u64> = batches
        .iter()
        .map(|(_, line)| serde_json::from_str::<Value>(line).unwrap()["header"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4], "each batch once, in seq order");
    assert!(batches.iter().all(|(labels, _)| labels["signature_valid"] == "true"));
    gateway.stop();
}
