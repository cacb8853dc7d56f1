//! The Loki and OTLP sinks against in-process fake servers on 127.0.0.1: what arrives is decoded
//! and compared byte for byte with the signed spool lines, and the servers' answers (retry,
//! refusal, partial success) are followed through `delivery::run` to the cursor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use prost::Message;
use teelog_attest::dev::{self, DevClaims};
use teelog_core::batch::{attestation_line, ParsedBatch};
use teelog_core::merkle::sha256;
use teelog_core::{BatchBuilder, ChainHead, SigAlg, SoftwareKey, SoftwareSigner};
use teelog_deliver::config::{LokiSinkConfig, OtlpSinkConfig};
use teelog_deliver::delivery::{self, Delivery, Sink};
use teelog_deliver::metrics::Metrics;
use teelog_deliver::sinks::loki::LokiSink;
use teelog_deliver::sinks::otlp::OtlpSink;
use teelog_deliver::spool::SpoolState;
use teelog_loki::rebuild_batch_line;
use teelog_loki::PushRequest;
use teelog_otlp::common::any_value::Value;
use teelog_otlp::common::KeyValue;
use teelog_otlp::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse};
use teelog_store::reader::{self, Chunk, Position};
use teelog_store::{Store, StoreOptions};
use tokio::sync::watch;

const STREAM: &str = "app";
/// 2026-12-01T00:00:00Z: batches are sealed a second apart from here.
const SEALED_FROM: i64 = 1_796_083_200_000_000_000;

/// A spool holding an attestation line and signed batches, as a shipper's signer writes it.
struct Signed {
    _dir: tempfile::TempDir,
    spool: Arc<SpoolState>,
    /// Every spool line, with its newline.
    lines: Vec<Vec<u8>>,
    end: Position,
    chunk: Chunk,
}

impl Signed {
    /// One batch per element of `batches`, signed by a key that a dev attestation document
    /// binds, the document's line first.
    fn new(batches: &[Vec<String>]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("spool"), StoreOptions::default()).unwrap();
        let key =
            SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap())
                .unwrap();
        let pcrs = BTreeMap::from([(0, vec![0x11; 48])]);
        let claims = DevClaims {
            module_id: "sinks-test",
            timestamp_ms: u64::try_from(SEALED_FROM / 1_000_000).unwrap(),
            pcrs: &pcrs,
            bound_key: key.public(),
            nonce: None,
        };
        let document = dev::issue(&claims).unwrap().document;
        store.append(&attestation_line(&document)).unwrap();
        let signer = SoftwareSigner::new(key, None).with_attestation(hex::encode(sha256(&document)));
        let mut head = ChainHead::new_epoch(STREAM, None, &teelog_core::random::SystemRandom).unwrap();
        let mut line = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            let sealed_at = SEALED_FROM + i as i64 * 1_000_000_000;
            let mut builder = BatchBuilder::new();
            for record in batch {
                builder.push_input(record.as_bytes(), &|| sealed_at).unwrap();
            }
            line.clear();
            builder.seal(&mut head, &signer, sealed_at, &mut line).unwrap();
            store.append(&line).unwrap();
        }
        let end = store.position();
        let spool =
            Arc::new(SpoolState::new(store.dir().to_path_buf(), end, Arc::new(Metrics::default()), u64::MAX));
        let chunk = reader::read_lines(spool.dir(), Position::default(), end, usize::MAX, u64::MAX).unwrap();
        let lines: Vec<Vec<u8>> = chunk.lines().map(<[u8]>::to_vec).collect();
        assert!(lines[0].starts_with(b"{\"v\":1,\"attestation\":"), "{}", String::from_utf8_lossy(&lines[0]));
        assert_eq!(lines.len(), batches.len() + 1, "one line per batch");
        Self { _dir: dir, spool, lines, end, chunk }
    }

    fn batch_lines(&self) -> impl Iterator<Item = &[u8]> {
        self.lines[1..].iter().map(|l| l.strip_suffix(b"\n").unwrap())
    }

    /// All of the spool, as the shipper's sinks get it.
    fn delivery(&self) -> Delivery<'_> {
        Delivery::new(&self.chunk, delivery::plain)
    }

    /// Runs delivery to `sink` until everything is delivered (or refused) and checks the cursor.
    async fn deliver(&self, name: &str, sink: Box<dyn Sink>) {
        let cursor = delivery::register(&self.spool, name);
        let (_stop_tx, stop) = watch::channel(true);
        let run = delivery::run(name.into(), sink, cursor, self.spool.clone(), delivery::plain, stop);
        tokio::time::timeout(Duration::from_secs(60), run).await.expect("delivery ends");
        let path = self.spool.dir().join("cursors").join(format!("{name}.json"));
        let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(saved["segment"], self.end.segment);
        assert_eq!(saved["offset"], self.end.offset, "the cursor moved past every line");
    }

    fn metric(&self, line: &str) -> bool {
        self.spool.metrics.render().lines().any(|l| l == line)
    }
}

fn records(batches: usize, per_batch: usize) -> Vec<Vec<String>> {
    (0..batches)
        .map(|b| {
            (0..per_batch)
                .map(|i| {
                    format!(r#"{{"message":"batch {b} record {i} \u00e9 \"q\"","level":"info","n":{i}}}"#)
                })
                .collect()
        })
        .collect()
}

/// One scripted answer; when the script is empty the fake answers `ok`.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn status(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: Vec::new() }
    }

    fn with_body(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: Vec::new(), body: body.into() }
    }
}

struct Fake {
    ok: Answer,
    script: Mutex<VecDeque<Answer>>,
    requests: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
}

impl Fake {
    async fn start(path: &str, ok: Answer, script: Vec<Answer>) -> (Arc<Fake>, String) {
        let fake = Arc::new(Fake { ok, script: Mutex::new(script.into()), requests: Mutex::new(Vec::new()) });
        let app = axum::Router::new().route(path, axum::routing::post(answer)).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, format!("http://{addr}"))
    }

    fn requests(&self) -> Vec<(HeaderMap, Vec<u8>)> {
        self.requests.lock().unwrap().clone()
    }
}

async fn answer(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    fake.requests.lock().unwrap().push((headers, body.to_vec()));
    let answer = fake.script.lock().unwrap().pop_front().unwrap_or_else(|| fake.ok.clone());
    let mut response = axum::response::Response::new(axum::body::Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap();
    for (name, value) in answer.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

// --- Loki ---

fn loki_sink(url: &str) -> LokiSink {
    let config: LokiSinkConfig = toml::from_str(&format!(
        "url = '{url}'\ntenant = 'acme'\nbearer_token = 's3cret'\ntimeout = '5s'\n[labels]\nenv = 'test'"
    ))
    .unwrap();
    LokiSink::open(&config, Some(STREAM)).unwrap()
}

fn decode_push(body: &[u8]) -> PushRequest {
    let raw = snap::raw::Decoder::new().decompress_vec(body).expect("a raw snappy block");
    PushRequest::decode(raw.as_slice()).expect("a logproto.PushRequest")
}

fn meta<'a>(entry: &'a teelog_loki::proto::EntryAdapter, name: &str) -> &'a str {
    &entry.structured_metadata.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no {name}")).value
}

/// Rebuilds every batch line from the pushed entries and checks them, and the attestation
/// entry, against the spool.
fn check_loki_entries(signed: &Signed, pushes: &[PushRequest]) {
    let mut batch_entries = BTreeMap::new();
    let mut record_entries: BTreeMap<(String, String), Vec<(usize, String)>> = BTreeMap::new();
    let mut attestations = Vec::new();
    for push in pushes {
        for stream in &push.streams {
            assert!(
                stream.labels.starts_with(r#"{env="test", job="teelog", teelog_kind=""#)
                    && stream.labels.ends_with(r#"", teelog_stream="app"}"#),
                "{}",
                stream.labels
            );
            for entry in &stream.entries {
                if stream.labels.contains(r#"teelog_kind="batch""#) {
                    let key =
                        (meta(entry, "teelog_epoch").to_string(), meta(entry, "teelog_seq").to_string());
                    batch_entries.insert(key, entry.line.clone());
                } else if stream.labels.contains(r#"teelog_kind="record""#) {
                    let key =
                        (meta(entry, "teelog_epoch").to_string(), meta(entry, "teelog_seq").to_string());
                    let index = meta(entry, "teelog_index").parse().unwrap();
                    record_entries.entry(key).or_default().push((index, entry.line.clone()));
                } else {
                    assert!(stream.labels.contains(r#"teelog_kind="attestation""#), "{}", stream.labels);
                    attestations.push(entry.clone());
                }
            }
        }
    }
    assert_eq!(batch_entries.len(), signed.lines.len() - 1);
    for line in signed.batch_lines() {
        let header = ParsedBatch::parse(line).unwrap().header;
        let key = (header.epoch.clone(), header.seq.to_string());
        let mut records = record_entries.remove(&key).unwrap_or_default();
        records.sort();
        assert_eq!(records.len() as u64, header.count);
        let record_bytes: Vec<&[u8]> = records.iter().map(|(_, r)| r.as_bytes()).collect();
        let rebuilt = rebuild_batch_line(batch_entries[&key].as_bytes(), &record_bytes).unwrap();
        assert_eq!(rebuilt, line, "seq {} rebuilds byte for byte", header.seq);
    }
    assert!(record_entries.is_empty(), "no stray records: {record_entries:?}");
    let [attestation] = attestations.as_slice() else { panic!("one attestation entry: {attestations:?}") };
    assert_eq!(attestation.line.as_bytes(), signed.lines[0].strip_suffix(b"\n").unwrap());
    let first = ParsedBatch::parse(signed.batch_lines().next().unwrap()).unwrap().header;
    assert_eq!(attestation.timestamp.unwrap().to_unix_nanos(), first.sealed_at_nanos());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_gets_every_line_byte_for_byte() {
    let signed = Signed::new(&records(3, 4));
    let (fake, url) = Fake::start("/loki/api/v1/push", Answer::status(204), vec![]).await;
    // A stale reading from before: delivery must bring the gauge down to what is left.
    signed.spool.metrics.spool_bytes.store(12_345, std::sync::atomic::Ordering::Relaxed);
    signed.deliver("loki", Box::new(loki_sink(&url))).await;
    assert!(signed.metric("teelog_spool_bytes 0"), "{}", signed.spool.metrics.render());
    assert!(signed.metric(r#"teelog_sink_lag_bytes{sink="loki"} 0"#));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "one push for a small chunk");
    let (headers, body) = &requests[0];
    assert_eq!(headers["content-type"], "application/x-protobuf");
    assert!(headers.get("content-encoding").is_none(), "Loki reads the raw snappy block as it is");
    assert_eq!(headers["x-scope-orgid"], "acme");
    assert_eq!(headers["authorization"], "Bearer s3cret");
    check_loki_entries(&signed, &[decode_push(body)]);
    assert!(
        signed.metric(&format!("teelog_sink_delivered_lines_total{{sink=\"loki\"}} {}", signed.lines.len()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_429_then_500_are_retried_until_delivered() {
    let signed = Signed::new(&records(2, 3));
    let too_many = Answer {
        status: 429,
        headers: vec![("retry-after", "1".into())],
        body: b"ingestion rate limit exceeded".to_vec(),
    };
    let script = vec![too_many, Answer::with_body(500, "ingester unavailable")];
    let (fake, url) = Fake::start("/loki/api/v1/push", Answer::status(204), script).await;
    let started = Instant::now();
    signed.deliver("loki", Box::new(loki_sink(&url))).await;

    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    let requests = fake.requests();
    assert_eq!(requests.len(), 3);
    // The same body each time: a retry is idempotent in Loki.
    assert!(requests.iter().all(|(_, body)| *body == requests[0].1));
    check_loki_entries(&signed, &[decode_push(&requests[2].1)]);
    assert!(signed.metric(r#"teelog_sink_errors_total{sink="loki",kind="http_429"} 1"#));
    assert!(signed.metric(r#"teelog_sink_errors_total{sink="loki",kind="http_5xx"} 1"#));
    assert!(
        signed.metric(&format!("teelog_sink_delivered_lines_total{{sink=\"loki\"}} {}", signed.lines.len()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_refusals_are_permanent_and_delivery_moves_on() {
    let signed = Signed::new(&records(2, 3));
    // Loki 3.4.6's answer when one entry of the push is older than reject_old_samples_max_age:
    // it lists the refused entries without a total, and stores the others (here 8 of 9).
    let partial = "entry for stream '{job=\"teelog\", teelog_kind=\"batch\"}' has timestamp too old: \
                   2026-11-23T18:11:01Z, oldest acceptable timestamp is: 2026-11-26T18:11:04Z\n";
    let script =
        vec![Answer::with_body(400, partial), Answer::with_body(400, "invalid labels"), Answer::status(401)];
    let (fake, url) = Fake::start("/loki/api/v1/push", Answer::status(204), script).await;

    let mut sink = loki_sink(&url);
    let chunk = signed.delivery();
    let err = sink.deliver(&chunk).await.unwrap_err();
    assert!(!err.retryable);
    assert_eq!(err.kind, "partial");
    assert!(
        err.message.contains("refused 1 of 9 entries") && err.message.contains("timestamp too old"),
        "{err}"
    );
    let err = loki_sink(&url).deliver(&chunk).await.unwrap_err();
    assert_eq!((err.kind.as_str(), err.retryable), ("rejected", false));
    assert!(err.message.contains("invalid labels"), "{err}");
    let err = loki_sink(&url).deliver(&chunk).await.unwrap_err();
    assert_eq!((err.kind.as_str(), err.retryable), ("rejected", false));
    assert!(err.message.contains("HTTP 401") && err.message.contains("bearer token"), "{err}");

    // Through the delivery loop: refused once, not retried, and the cursor moves on.
    fake.script.lock().unwrap().push_back(Answer::with_body(400, partial));
    signed.deliver("loki", Box::new(loki_sink(&url))).await;
    assert_eq!(fake.requests().len(), 4);
    assert!(signed.metric(r#"teelog_sink_errors_total{sink="loki",kind="partial"} 1"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_unreachable_is_retryable() {
    let signed = Signed::new(&records(1, 1));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = loki_sink(&url).deliver(&signed.delivery()).await.unwrap_err();
    assert_eq!((err.kind.as_str(), err.retryable), ("connect", true));
    assert!(err.message.contains("could not reach Loki"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_resumes_after_the_pushes_already_confirmed() {
    // Records of 200 kB: the chunk needs several pushes of at most 1 MiB.
    let big: Vec<Vec<String>> =
        (0..6).map(|b| vec![format!(r#"{{"message":"{}","b":{b}}}"#, "x".repeat(200_000))]).collect();
    let signed = Signed::new(&big);
    let script = vec![Answer::status(204), Answer::with_body(503, "busy")];
    let (fake, url) = Fake::start("/loki/api/v1/push", Answer::status(204), script).await;
    signed.deliver("loki", Box::new(loki_sink(&url))).await;

    let requests = fake.requests();
    assert!(requests.len() >= 3, "{} pushes", requests.len());
    assert_eq!(requests[2].1, requests[1].1, "the refused push is sent again");
    assert_ne!(requests[2].1, requests[0].1, "the confirmed one is not");
    let pushes: Vec<PushRequest> = requests
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, (_, body))| decode_push(body))
        .collect();
    check_loki_entries(&signed, &pushes);
}

// --- OTLP ---

fn otlp_sink(url: &str) -> OtlpSink {
    let config: OtlpSinkConfig =
        toml::from_str(&format!(
            "url = '{url}/v1/logs'\nbearer_token = 'tok'\n[headers]\nx-tenant = 'acme'\n[resource]\n'deployment.environment' = 'test'"
        ))
            .unwrap();
    OtlpSink::open(&config).unwrap()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> &'a Value {
    let found = attributes.iter().find(|kv| kv.key == key).unwrap_or_else(|| panic!("no {key}"));
    found.value.as_ref().and_then(|v| v.value.as_ref()).unwrap()
}

fn text(value: &Value) -> &str {
    match value {
        Value::StringValue(s) => s,
        other => panic!("not a string: {other:?}"),
    }
}

/// Checks one exported request against the batch line it came from; returns the batch's seq.
fn check_otlp_request(request: &ExportLogsServiceRequest, line: &[u8]) -> u64 {
    let batch = ParsedBatch::parse(line).unwrap();
    let header = &batch.header;
    let parts: serde_json::Value = serde_json::from_slice(line).unwrap();
    let [resource_logs] = request.resource_logs.as_slice() else { panic!("one ResourceLogs") };
    let resource = &resource_logs.resource.as_ref().expect("a resource").attributes;
    assert_eq!(text(attribute(resource, "service.name")), "teelog", "the default service.name");
    assert_eq!(text(attribute(resource, "deployment.environment")), "test");
    let [scope_logs] = resource_logs.scope_logs.as_slice() else { panic!("one ScopeLogs") };
    let logs = &scope_logs.log_records;
    assert_eq!(logs.len() as u64, header.count + 1, "the batch and each record");
    for (i, log) in logs.iter().enumerate() {
        let a = &log.attributes;
        assert_eq!(text(attribute(a, "audit.integrity.kind")), if i == 0 { "batch" } else { "record" });
        assert_eq!(text(attribute(a, "audit.integrity.stream")), STREAM);
        assert_eq!(text(attribute(a, "audit.integrity.epoch")), header.epoch);
        assert_eq!(attribute(a, "audit.sequence.number"), &Value::IntValue(header.seq as i64));
        if i == 0 {
            assert_eq!(text(attribute(a, "audit.integrity.signature")), parts["sig"].as_str().unwrap());
            assert_eq!(text(attribute(a, "audit.integrity.root")), header.root);
        } else {
            assert_eq!(attribute(a, "audit.sequence.index"), &Value::IntValue(i as i64 - 1));
        }
    }
    // The bodies rebuild the signed line byte for byte (docs/FORMAT.md §13.3).
    let bodies: Vec<&str> =
        logs.iter().map(|l| text(l.body.as_ref().unwrap().value.as_ref().unwrap())).collect();
    let records: Vec<&[u8]> = bodies[1..].iter().map(|b| b.as_bytes()).collect();
    assert_eq!(rebuild_batch_line(bodies[0].as_bytes(), &records).unwrap(), line);
    header.seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_exports_each_batch_with_audit_attributes() {
    let signed = Signed::new(&records(3, 2));
    let partial = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 2,
            error_message: "records too old".into(),
        }),
    };
    let script = vec![Answer::with_body(200, partial.encode_to_vec()), Answer::with_body(503, "overloaded")];
    let (fake, url) = Fake::start("/v1/logs", Answer::status(200), script).await;
    signed.deliver("otlp", Box::new(otlp_sink(&url))).await;

    let requests = fake.requests();
    let lines: Vec<&[u8]> = signed.batch_lines().collect();
    // No request for the attestation line; the partial success is not retried, the 503 is,
    // and a retry does not send again what was already confirmed.
    assert_eq!(requests.len(), lines.len() + 1);
    let mut seqs = Vec::new();
    for (i, (headers, body)) in requests.iter().enumerate() {
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["authorization"], "Bearer tok");
        assert_eq!(headers["x-tenant"], "acme");
        let request = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
        let line = lines[if i < 2 { i } else { i - 1 }];
        seqs.push(check_otlp_request(&request, line));
    }
    assert_eq!(seqs, [1, 2, 2, 3]);
    assert!(signed.metric(r#"teelog_sink_errors_total{sink="otlp",kind="partial"} 1"#));
    assert!(signed.metric(r#"teelog_sink_errors_total{sink="otlp",kind="http_5xx"} 1"#));
}

/// `google.rpc.Status`, as an OTLP receiver answers an error.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_answers_are_classified_as_the_spec_says() {
    let signed = Signed::new(&records(1, 1));
    let chunk = signed.delivery();
    let status = RpcStatus { code: 3, message: "log record too large".into() };
    let refused = Answer {
        status: 400,
        headers: vec![("content-type", "application/x-protobuf".into())],
        body: status.encode_to_vec(),
    };
    let (_fake, url) = Fake::start("/v1/logs", Answer::status(200), vec![refused]).await;
    let err = otlp_sink(&url).deliver(&chunk).await.unwrap_err();
    assert_eq!((err.kind.as_str(), err.retryable), ("rejected", false));
    assert!(err.message.contains("HTTP 400: log record too large"), "{err}");

    for (status, retryable) in
        [(429, true), (502, true), (503, true), (504, true), (500, false), (404, false)]
    {
        let (_fake, url) = Fake::start("/v1/logs", Answer::status(200), vec![Answer::status(status)]).await;
        let err = otlp_sink(&url).deliver(&chunk).await.unwrap_err();
        assert_eq!(err.retryable, retryable, "HTTP {status}: {err}");
    }
    let too_many = Answer { status: 429, headers: vec![("retry-after", "7".into())], body: Vec::new() };
    let (_fake, url) = Fake::start("/v1/logs", Answer::status(200), vec![too_many]).await;
    let err = otlp_sink(&url).deliver(&chunk).await.unwrap_err();
    assert_eq!((err.kind.as_str(), err.retry_after), ("http_429", Some(Duration::from_secs(7))));
}
