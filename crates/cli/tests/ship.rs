//! `teelog ship` end to end: the real daemon, real sockets on 127.0.0.1, the store verified by
//! `teelog verify` afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;
mod pki;
mod ship_harness;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{keygen, s, teelog};
use pki::{pki, Pki};
use serde_json::{json, Value};
use ship_harness::{fixture, post, stored_records, Daemon, Fixture};

impl Fixture {
    /// `teelog verify --json` over a store; returns the exit code and the report.
    fn verify(&self, store: &Path, extra: &[&str]) -> (i32, Value) {
        let pubkey = self.identity.join("public-key.pem");
        let mut args = vec!["verify", "--json", "--store", s(store), "--pubkey", s(&pubkey)];
        args.extend_from_slice(extra);
        let out = teelog(&args, b"");
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap(), report)
    }
}

fn kinds(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_owned()).collect()
}

fn post_json(addr: SocketAddr, body: &Value) -> std::io::Result<(u16, Vec<u8>)> {
    post(addr, "/v1/logs", &[("Content-Type", "application/json")], body.to_string().as_bytes())
}

/// An OTLP/JSON request of records numbered `range`, each with its number in attribute `n`.
fn otlp_json(range: std::ops::Range<u64>) -> Value {
    let records: Vec<Value> = range
        .map(|n| {
            json!({
                "timeUnixNano": (1_700_000_000_000_000_000u64 + n).to_string(),
                "severityNumber": 9,
                "body": {"stringValue": format!("payment {n} approved")},
                "attributes": [{"key": "n", "value": {"intValue": n.to_string()}}],
            })
        })
        .collect();
    json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "payments"}}]},
        "scopeLogs": [{"scope": {"name": "audit"}, "logRecords": records}],
    }]})
}

fn numbers(records: &[Value]) -> BTreeSet<u64> {
    records.iter().filter_map(|r| r["attributes"]["n"].as_u64()).collect()
}

#[test]
fn stdin_records_are_signed_spooled_and_delivered_to_the_store() {
    let f = fixture();
    let (spool, archive) = (f.path("spool"), f.path("archive"));
    let mut input = Vec::new();
    for n in 0..5000 {
        writeln!(
            input,
            r#"{{"ts":"2026-12-01T10:00:00Z","level":"INFO","message":"m {n}","attributes":{{"n":{n}}}}}"#
        )
        .unwrap();
        if n == 2500 {
            input.extend_from_slice(b"not json\n");
        }
    }
    // Small spool segments, so that delivered ones can be deleted while the daemon runs.
    let config = f.path("ship.toml");
    std::fs::write(
        &config,
        format!("identity = {:?}\n[spool]\ndir = {:?}\nsegment_bytes = 65536\n", s(&f.identity), s(&spool)),
    )
    .unwrap();
    let out = teelog(
        &[
            "ship",
            "--config",
            s(&config),
            "--stdin",
            "--sink-store",
            s(&archive),
            "--heartbeat",
            "off",
            "--max-records",
            "100",
        ],
        &input,
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    // The bad line is named by its line number, a signed notice takes its place, and the
    // records around it are kept.
    assert!(log.contains("stdin:2502"), "{log}");
    let (code, report) = f.verify(&archive, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["records"], 5001, "{report}");
    let stored = stored_records(&archive);
    assert_eq!(numbers(&stored), (0..5000).collect());
    let notices: Vec<&Value> = stored.iter().filter(|r| r["teelog_notice"] == "record_refused").collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["refused_source"], "stdin:2502");
    assert_eq!(notices[0]["refused_bytes"], 8);
    assert_eq!(notices[0]["refused_sha256"], hex::encode(teelog_core::merkle::sha256(b"not json")));
    // Delivered segments leave the spool (no --keep-spool), but the chain state stays.
    assert!(stored_records(&spool).len() < 5000);
}

#[test]
fn a_restarted_daemon_continues_the_chain() {
    let f = fixture();
    let (spool, archive) = (f.path("spool"), f.path("archive"));
    for run in 0..3u64 {
        let input: String = (run * 100..run * 100 + 100)
            .map(|n| format!("{{\"message\":\"r\",\"attributes\":{{\"n\":{n}}}}}\n"))
            .collect();
        let out = teelog(
            &[
                "ship",
                "--identity",
                s(&f.identity),
                "--spool",
                s(&spool),
                "--keep-spool",
                "--stdin",
                "--sink-store",
                s(&archive),
            ],
            input.as_bytes(),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for store in [&spool, &archive] {
        let (code, report) = f.verify(store, &[]);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["records"], 300, "{report}");
    }
    let seqs: Vec<u64> = std::fs::read_to_string(archive.join("segment-000000000001.ndjson"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["header"]["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "one sequence across restarts");
}

#[test]
fn an_idle_daemon_sends_heartbeats_and_a_silent_one_is_stale() {
    let f = fixture();
    let spool = f.path("spool");
    let daemon = Daemon::start(&[
        "--identity",
        s(&f.identity),
        "--spool",
        s(&spool),
        "--keep-spool",
        "--otlp-http",
        "127.0.0.1:0",
        "--heartbeat",
        "200ms",
    ]);
    let (status, _) = post_json(daemon.http.unwrap(), &otlp_json(0..3)).unwrap();
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    daemon.stop();
    let (code, report) = f.verify(&spool, &["--max-silence", "1s"]);
    assert_eq!(code, 0, "{report}");
    assert!(report["batches"].as_u64().unwrap() >= 4, "a record batch and heartbeats: {report}");
    let later = "2099-01-01T00:00:00Z";
    let (code, report) = f.verify(&spool, &["--max-silence", "1s", "--now", later]);
    assert_eq!((code, kinds(&report)), (1, vec!["stale_stream".to_owned()]), "{report}");
}

#[test]
fn otlp_json_and_protobuf_records_keep_every_field() {
    use prost::Message;
    use teelog_otlp::common::{any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue};
    use teelog_otlp::logs::{LogRecord, ResourceLogs, ScopeLogs};
    use teelog_otlp::resource::Resource;

    let f = fixture();
    let spool = f.path("spool");
    let daemon = Daemon::start(&[
        "--identity",
        s(&f.identity),
        "--spool",
        s(&spool),
        "--keep-spool",
        "--otlp-http",
        "127.0.0.1:0",
    ]);
    let addr = daemon.http.unwrap();

    let kv = |key: &str, value: any_value::Value| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let request = teelog_otlp::ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", any_value::Value::StringValue("ledger".into()))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "audit".into(),
                    version: "1.2.3".into(),
                    ..Default::default()
                }),
                log_records: vec![LogRecord {
                    time_unix_nano: 1_764_000_000_123_456_789,
                    observed_time_unix_nano: 1_764_000_000_223_456_789,
                    severity_number: 17,
                    severity_text: "ERROR".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::ArrayValue(ArrayValue {
                            values: vec![
                                AnyValue { value: Some(any_value::Value::IntValue(7)) },
                                AnyValue { value: Some(any_value::Value::BoolValue(true)) },
                            ],
                        })),
                    }),
                    attributes: vec![
                        kv("user", any_value::Value::StringValue("alice".into())),
                        kv("amount", any_value::Value::DoubleValue(12.5)),
                    ],
                    trace_id: vec![0x11; 16],
                    span_id: vec![0x22; 8],
                    flags: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let (status, body) =
        post(addr, "/v1/logs", &[("Content-Type", "application/x-protobuf")], &request.encode_to_vec())
            .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response = teelog_otlp::ExportLogsServiceResponse::decode(body.as_slice()).unwrap();
    assert!(response.partial_success.is_none());

    let (status, body) = post_json(addr, &otlp_json(41..42)).unwrap();
    assert_eq!((status, body.as_slice()), (200, b"{}".as_slice()));
    daemon.stop();

    let (code, report) = f.verify(&spool, &[]);
    assert_eq!(code, 0, "{report}");
    let records = stored_records(&spool);
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0],
        json!({
            "ts": "2025-11-24T16:00:00.123456789Z",
            "observed_ts": "2025-11-24T16:00:00.223456789Z",
            "level": "ERROR",
            "severity_number": 17,
            "body": [7, true],
            "attributes": {"user": "alice", "amount": 12.5},
            "trace_id": "11111111111111111111111111111111",
            "span_id": "2222222222222222",
            "flags": 1,
            "resource": {"attributes": {"service.name": "ledger"}},
            "scope": {"name": "audit", "version": "1.2.3"},
        })
    );
    assert_eq!(records[1]["message"], "payment 41 approved");
    assert_eq!(records[1]["attributes"]["n"], 41);
}

#[test]
fn malformed_otlp_gets_the_protocols_error_and_loses_nothing() {
    use prost::Message;
    let f = fixture();
    let (spool, config) = (f.path("spool"), f.path("ship.toml"));
    std::fs::write(
        &config,
        format!(
            "identity = {:?}\n[spool]\ndir = {:?}\nkeep = true\n[sources]\notlp_http = \"127.0.0.1:0\"\nmax_request_bytes = 65536\n",
            s(&f.identity),
            s(&spool)
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&["--config", s(&config)]);
    let addr = daemon.http.unwrap();
    let protobuf = [("Content-Type", "application/x-protobuf")];
    assert_eq!(post_json(addr, &otlp_json(0..10)).unwrap().0, 200);

    let (status, body) = post(addr, "/v1/logs", &[("Content-Type", "text/plain")], b"hello").unwrap();
    assert_eq!(status, 415);
    assert!(String::from_utf8_lossy(&body).contains("application/x-protobuf"));
    assert_eq!(post(addr, "/v1/logs", &protobuf, b"\xff\xff\xff").unwrap().0, 400);
    // A LogRecord whose severity_text (field 3) is not UTF-8: refused alone, with a signed
    // notice in its place and the client told in partial_success.
    let bad_utf8 = [0x0a, 0x09, 0x12, 0x07, 0x12, 0x05, 0x1a, 0x03, 0xff, 0xfe, 0xfd];
    let (status, body) = post(addr, "/v1/logs", &protobuf, &bad_utf8).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = teelog_otlp::ExportLogsServiceResponse::decode(&body[..]).unwrap();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 1);
    assert!(partial.error_message.contains("LogRecord.severity_text"), "{}", partial.error_message);
    assert_eq!(
        post(addr, "/v1/logs", &[("Content-Type", "application/json")], b"{\"resourceLogs\":[{").unwrap().0,
        400
    );
    // A record the mapping refuses (a 2-byte trace id) refuses only itself: a signed notice takes
    // its place, the records beside it are signed, and the client hears of it in partialSuccess.
    let mut request = otlp_json(100..103);
    request["resourceLogs"][0]["scopeLogs"][0]["logRecords"][1]["traceId"] = "abcd".into();
    let (status, body) = post_json(addr, &request).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedLogRecords"], "1", "{answer}");
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("log_records[1].trace_id"), "{message}");
    // Too large, plain and as a gzip bomb.
    let big = otlp_json(0..2000).to_string();
    assert_eq!(
        post(addr, "/v1/logs", &[("Content-Type", "application/json")], big.as_bytes()).unwrap().0,
        413
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 10 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    let (status, _) =
        post(addr, "/v1/logs", &[("Content-Type", "application/json"), ("Content-Encoding", "gzip")], &bomb)
            .unwrap();
    assert_eq!(status, 400);
    assert_eq!(
        post(addr, "/v1/logs", &[("Content-Type", "application/json"), ("Content-Encoding", "br")], b"x")
            .unwrap()
            .0,
        415
    );
    // A good gzip request still goes through after all that.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(otlp_json(10..20).to_string().as_bytes()).unwrap();
    let (status, _) = post(
        addr,
        "/v1/logs",
        &[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        &gz.finish().unwrap(),
    )
    .unwrap();
    assert_eq!(status, 200);
    let log = daemon.stop();
    assert!(log.contains("request refused"), "{log}");

    let (code, report) = f.verify(&spool, &[]);
    assert_eq!(code, 0, "{report}");
    let stored = stored_records(&spool);
    assert_eq!(numbers(&stored), (0..20).chain([100, 102]).collect());
    let notices: Vec<&Value> = stored.iter().filter(|r| r["teelog_notice"] == "record_refused").collect();
    let sources: Vec<&str> = notices.iter().map(|n| n["refused_source"].as_str().unwrap()).collect();
    assert_eq!(
        sources,
        [
            "otlp-http resource_logs[0].scope_logs[0].log_records[0]",
            "otlp-http resource_logs[0].scope_logs[0].log_records[1].trace_id"
        ],
        "{notices:?}"
    );
    let position = stored.iter().rposition(|r| r["teelog_notice"] == "record_refused").unwrap();
    assert_eq!(
        (stored[position - 1]["attributes"]["n"].as_u64(), stored[position + 1]["attributes"]["n"].as_u64()),
        (Some(100), Some(102))
    );
}

/// kill -9 at 50 random moments while OTLP clients send: every acknowledged record is in the
/// store afterwards, the chain never breaks; duplicates would be allowed, gaps are not.
#[test]
fn kill_9_under_otlp_load_loses_no_acknowledged_record() {
    let f = fixture();
    let (spool, archive) = (f.path("spool"), f.path("archive"));
    let args = [
        "--identity",
        s(&f.identity),
        "--spool",
        s(&spool),
        "--otlp-http",
        "127.0.0.1:0",
        "--sink-store",
        s(&archive),
        "--max-delay",
        "5ms",
        "--heartbeat",
        "off",
    ];
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut next = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _round in 0..50 {
        let daemon = Daemon::start(&args);
        let addr = daemon.http.unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_for = Duration::from_millis(20 + seed % 300);
        // Two clients, each numbering its records from its own block.
        let clients: Vec<_> = (0..2)
            .map(|client| {
                let acked = acked.clone();
                let first = next + client * 1_000_000;
                std::thread::spawn(move || {
                    let mut n = first;
                    let until = std::time::Instant::now() + run_for + Duration::from_millis(200);
                    while std::time::Instant::now() < until {
                        let size = 1 + n % 50;
                        // Refused and failed requests are the client's to retry; only a 200 is a promise.
                        if let Ok((200, _)) = post_json(addr, &otlp_json(n..n + size)) {
                            acked.lock().unwrap().extend(n..n + size);
                        }
                        n += size;
                    }
                })
            })
            .collect();
        std::thread::sleep(run_for);
        daemon.kill_9();
        for client in clients {
            client.join().unwrap();
        }
        next += 2_000_000;
    }
    // A last, clean run delivers whatever the kills left in the spool.
    Daemon::start(&args).stop();

    let (code, report) = f.verify(&archive, &[]);
    let acked = acked.lock().unwrap();
    assert!(acked.len() > 1000, "the load was real: {} records acknowledged", acked.len());
    // Torn tails left by a kill are reported as malformed lines; nothing else may be found.
    assert!(kinds(&report).iter().all(|k| k == "malformed"), "{code} {report}");
    let stored = numbers(&stored_records(&archive));
    let lost: Vec<_> = acked.difference(&stored).take(10).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?} ({report})");
}

/// The Python interpreter of the OpenTelemetry SDK's virtual environment.
fn otel_python() -> String {
    let python =
        std::env::var("TEELOG_OTEL_PYTHON").unwrap_or_else(|_| "/var/tmp/teelog-otel-venv/bin/python".into());
    assert!(
        Path::new(&python).exists(),
        "{python} is missing: scripts/test installs the OpenTelemetry SDK there (or set TEELOG_OTEL_PYTHON)"
    );
    python
}

/// Sends 100 records with the SDK over `protocol` (`http`, `grpc`) to `addr`, in plain text or
/// over TLS trusting `pki`'s CA, with its client certificate or without, each export given
/// `timeout` seconds; the script's outcome.
fn send_with_sdk(
    protocol: &str,
    addr: SocketAddr,
    tls: Option<(&Pki, bool)>,
    timeout: u32,
) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel/send_logs.py");
    let mut command = Command::new(otel_python());
    // requests lets these override the CA an exporter names (its session's `verify`).
    command.env_remove("REQUESTS_CA_BUNDLE").env_remove("CURL_CA_BUNDLE");
    command.env("SEND_LOGS_TIMEOUT", timeout.to_string()).arg(&script).args([protocol, &addr.to_string()]);
    if let Some((pki, client_cert)) = tls {
        command.arg(&pki.ca);
        if client_cert {
            command.args([&pki.client_cert, &pki.client_key]);
        }
    }
    command.output().unwrap()
}

/// Every field of the 100 records `send_logs.py` sent over `protocol`, as stored.
fn assert_sdk_records(records: &[Value], protocol: &str) {
    let sent: Vec<&Value> = records.iter().filter(|r| r["attributes"]["protocol"] == protocol).collect();
    assert_eq!(sent.len(), 100, "{protocol}: {records:?}");
    for (i, record) in sent.iter().enumerate() {
        assert_eq!(record["message"], format!("transfer {i} booked"), "{record}");
        assert_eq!(record["attributes"]["i"], i, "{record}");
        assert_eq!(record["attributes"]["amount"], 100.25, "{record}");
        assert_eq!(record["attributes"]["tags"], json!(["audit", "eu"]), "{record}");
        assert_eq!(record["level"], "WARN", "{record}");
        assert_eq!(record["severity_number"], 13, "{record}");
        assert_eq!(record["ts"], format!("2026-12-01T10:00:{:02}.000000000Z", i % 60), "{record}");
        assert_eq!(record["trace_id"], format!("{:032x}", 0xabc0 + i), "{record}");
        assert_eq!(record["span_id"], format!("{:016x}", 0xde0 + i), "{record}");
        assert_eq!(record["resource"]["attributes"]["service.name"], "core-banking", "{record}");
        assert_eq!(record["scope"]["name"], "teelog.test", "{record}");
    }
}

fn assert_success(protocol: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{protocol}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The OpenTelemetry Python SDK, exporting over OTLP/HTTP and OTLP/gRPC as applications do.
#[test]
fn the_opentelemetry_sdk_exports_over_http_and_grpc() {
    let f = fixture();
    let spool = f.path("spool");
    let daemon = Daemon::start(&[
        "--identity",
        s(&f.identity),
        "--spool",
        s(&spool),
        "--keep-spool",
        "--otlp-http",
        "127.0.0.1:0",
        "--otlp-grpc",
        "127.0.0.1:0",
    ]);
    for (protocol, addr) in [("http", daemon.http.unwrap()), ("grpc", daemon.grpc.unwrap())] {
        assert_success(protocol, &send_with_sdk(protocol, addr, None, 10));
    }
    daemon.stop();
    let (code, report) = f.verify(&spool, &[]);
    assert_eq!(code, 0, "{report}");
    let records = stored_records(&spool);
    for protocol in ["http", "grpc"] {
        assert_sdk_records(&records, protocol);
    }
}

/// With `[sources.tls]` and a client CA, both receivers speak TLS and ask for a certificate:
/// the SDK presenting one exports every record over HTTP and gRPC; the SDK without one, or in
/// plain text, fails to export and signs nothing. The check that such a receiver may listen
/// beyond loopback is the config's (a client certificate is a credential).
#[test]
fn over_mtls_the_receivers_take_only_clients_with_a_certificate() {
    let f = fixture();
    let pki = pki(&f.root);
    let spool = f.path("spool");
    let config = f.path("ship.toml");
    std::fs::write(
        &config,
        format!(
            "[sources]\notlp_http = '127.0.0.1:0'\notlp_grpc = '127.0.0.1:0'\n\
             [sources.tls]\ncert = '{}'\nkey = '{}'\nclient_ca = '{}'\n",
            s(&pki.server_cert),
            s(&pki.server_key),
            s(&pki.ca)
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&[
        "--config",
        s(&config),
        "--identity",
        s(&f.identity),
        "--spool",
        s(&spool),
        "--keep-spool",
    ]);
    let (http, grpc) = (daemon.http.unwrap(), daemon.grpc.unwrap());
    for (protocol, addr) in [("http", http), ("grpc", grpc)] {
        // Each refused export ends at its timeout: one second is enough to be turned away.
        for refused in
            [send_with_sdk(protocol, addr, Some((&pki, false)), 1), send_with_sdk(protocol, addr, None, 1)]
        {
            assert!(!refused.status.success(), "{protocol}: exported without a client certificate");
        }
        assert_success(protocol, &send_with_sdk(protocol, addr, Some((&pki, true)), 10));
    }
    let log = daemon.stop();
    assert!(log.contains("TLS handshake failed"), "{log}");
    let (code, report) = f.verify(&spool, &[]);
    assert_eq!(code, 0, "{report}");
    let records = stored_records(&spool);
    assert_eq!(records.len(), 200, "only the clients with a certificate got in");
    for protocol in ["http", "grpc"] {
        assert_sdk_records(&records, protocol);
    }
}

/// A daemon with a new identity links its epoch only to batches it can verify: a spool holding
/// only another signer's batches (and a planted line) is refused until `trust_keys` names that
/// signer's key; then the new epoch links to its newest batch, not to the planted line.
#[test]
fn a_new_identity_links_only_to_trusted_batches_in_its_spool() {
    let f = fixture();
    let (spool, newer) = (f.path("spool"), f.path("new-id"));
    keygen(&newer, &[]);
    let out =
        teelog(&["sign", "--identity", s(&f.identity), "--store", s(&spool)], b"{\"message\":\"old\"}\n");
    assert!(out.status.success());
    let segment = teelog_store::segments(&spool).unwrap().pop().unwrap();
    let text = std::fs::read_to_string(&segment).unwrap();
    let genuine = text.lines().find(|l| l.contains("\"header\"")).unwrap();
    let batch = teelog_core::batch::ParsedBatch::parse(genuine.as_bytes()).unwrap();
    let genuine_hash = hex::encode(batch.header_hash);
    // A planted successor: the header's seq raised and its sealed_at moved on, the signature kept
    // (it no longer verifies).
    let planted =
        genuine.replacen("\"seq\":1", "\"seq\":9", 1).replacen("\"sealed_at\":\"20", "\"sealed_at\":\"21", 1);
    std::fs::write(&segment, format!("{text}{planted}\n")).unwrap();

    let config = |trust: &str| {
        let path = f.path("ship.toml");
        std::fs::write(
            &path,
            format!("identity = {:?}\n{trust}\n[batch]\nheartbeat = \"off\"\n[spool]\ndir = {:?}\nkeep = true\n[sources]\nstdin = true\n", s(&newer), s(&spool)),
        )
        .unwrap();
        path
    };
    let refused = teelog(&["ship", "--config", s(&config(""))], b"{\"message\":\"new\"}\n");
    let log = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{log}");
    assert!(log.contains("none signed by a key this signer can verify"), "{log}");

    let old_key = f.identity.join("public-key.pem");
    let trusted = config(&format!("trust_keys = [{:?}]", s(&old_key)));
    let out = teelog(&["ship", "--config", s(&trusted)], b"{\"message\":\"new\"}\n");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("passed over 1 batch(es)"), "{log}");
    let last = std::fs::read_to_string(teelog_store::segments(&spool).unwrap().pop().unwrap()).unwrap();
    let first_new = last
        .lines()
        .filter_map(|l| teelog_core::batch::ParsedBatch::parse(l.as_bytes()).ok().map(|b| b.header))
        .find(|h| h.key_id != batch.header.key_id)
        .unwrap();
    assert_eq!((first_new.seq, first_new.prev.as_deref()), (1, Some(genuine_hash.as_str())));
}

/// SIGTERM while `ship --stdin` reads a long input: every line it took from stdin is signed
/// before it exits 0, and it takes no byte after the last line it hands over, so that the rest is
/// left to the next reader of the same input (the exit status is stdin's acknowledgement).
#[test]
fn a_stop_signs_every_line_read_from_stdin_and_reads_no_further() {
    use std::io::Seek;
    let f = fixture();
    let (spool, input) = (f.path("spool"), f.path("input.ndjson"));
    let mut lines = Vec::new();
    for n in 0..1_500_000 {
        writeln!(lines, r#"{{"message":"line {n}","n":{n}}}"#).unwrap();
    }
    std::fs::write(&input, &lines).unwrap();
    let mut stdin = std::fs::File::open(&input).unwrap();
    // A second handle on the same open file shares its offset: what the shipper took.
    let shared = stdin.try_clone().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_teelog"))
        .args(["ship", "--identity", s(&f.identity), "--spool", s(&spool), "--keep-spool"])
        .args(["--stdin", "--heartbeat", "off"])
        .stdin(shared)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until it has read part of it.
    while stdin.stream_position().unwrap() < 8 << 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let taken = stdin.stream_position().unwrap() as usize;
    assert!(status.success(), "{log}");
    assert!(taken < lines.len(), "the stop came after the whole input was read: make it longer");
    assert_eq!(lines[taken - 1], b'\n', "it took part of a line, at byte {taken}");
    let read = lines[..taken].iter().filter(|&&b| b == b'\n').count();
    let (code, report) = f.verify(&spool, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["records"], read, "lines taken from stdin against records signed; {log}");
}
