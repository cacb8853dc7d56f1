//! `LokiClient` against a small HTTP/1.1 server on 127.0.0.1 that plays Loki: it decodes the
//! snappy+protobuf push body and answers with scripted responses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use teelog_core::{BatchBuilder, ChainHead, SigAlg, SoftwareKey, SoftwareSigner};
use teelog_loki::layout::{META_INDEX, META_SEQ};
use teelog_loki::{
    batch_to_push, encode_push, rebuild_batch_line, ClientOptions, Layout, LayoutOptions, LokiClient,
    LokiError, Pager, PushError, PushOutcome, PushRequest, QueryRange, RetryAfter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn answer(status: u16, body: &str) -> Answer {
    Answer { status, headers: Vec::new(), body: body.as_bytes().to_vec() }
}

/// Serves `answers` in order, one per connection (each answer closes its connection).
struct FakeLoki {
    base: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length").map_or(Some(0), |v| v.parse().ok())?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request { method, target, headers, body })
}

impl FakeLoki {
    async fn start(answers: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut answers: VecDeque<Answer> = answers.into();
        tokio::spawn(async move {
            while let Some(answer) = answers.pop_front() {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let Some(request) = read_request(&mut socket).await else { return };
                log.lock().unwrap().push(request);
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    answer.status,
                    answer.body.len()
                );
                for (name, value) in &answer.headers {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&answer.body);
                let _ = socket.write_all(&bytes).await;
                let _ = socket.shutdown().await;
            }
        });
        Self { base, seen }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        tenant: Some("bank-eu".into()),
        bearer_token: Some("s3cret".into()),
        timeout: Duration::from_secs(10),
        extra_headers: vec![("X-Gateway".into(), "teelog".into())],
        ..ClientOptions::default()
    }
}

fn batch_lines() -> Vec<Vec<u8>> {
    let key =
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap();
    let signer = SoftwareSigner::new(key, None);
    let mut head = ChainHead::new_epoch("app", None, &teelog_core::random::SystemRandom).unwrap();
    let mut builder = BatchBuilder::new();
    (0..2)
        .map(|b| {
            for i in 0..3 {
                let record = format!(r#"{{"message":"b{b} r{i}","ts":{}}}"#, 1_000 + i);
                builder.push_input(record.as_bytes(), &|| 0).unwrap();
            }
            let mut line = Vec::new();
            builder.seal(&mut head, &signer, 1_796_202_000_000_000_000 + b, &mut line).unwrap();
            line
        })
        .collect()
}

#[tokio::test]
async fn pushes_the_body_loki_decodes_and_classifies_the_answers() {
    let partial =
        "entry with timestamp 2026-12-02 09:00:00 +0000 UTC ignored, reason: 'entry too far behind', \
                   for stream: {job=\"teelog\"},\nuser 'bank-eu', total ignored: 1 out of 8";
    let loki = FakeLoki::start(vec![
        answer(204, ""),
        answer(400, partial),
        Answer { status: 429, headers: vec![("Retry-After", "3".into())], body: b"rate limited".to_vec() },
        answer(500, "ingester unavailable"),
        answer(401, "no org id"),
    ])
    .await;
    let client = LokiClient::new(&format!("{}/", loki.base), options()).unwrap();
    let lines = batch_lines();
    let layout = Layout::new(LayoutOptions::default()).unwrap();
    let request = batch_to_push(&layout, &[&lines[0], &lines[1]], &[]).unwrap();
    let body = encode_push(&request).unwrap();

    assert_eq!(client.push(body.clone()).await.unwrap(), PushOutcome::Accepted);
    assert_eq!(client.push(body.clone()).await.unwrap(), PushOutcome::Rejected { message: partial.into() });
    assert_eq!(
        client.push(body.clone()).await.unwrap(),
        PushOutcome::Retry {
            status: Some(429),
            retry_after: Some(RetryAfter::Seconds(3)),
            reason: "rate limited".into()
        }
    );
    assert!(matches!(client.push(body.clone()).await.unwrap(), PushOutcome::Retry { status: Some(500), .. }));
    match client.push(body.clone()).await {
        Err(LokiError::Push(PushError::Refused { status: 401, message })) => assert_eq!(message, "no org id"),
        other => panic!("{other:?}"),
    }

    let requests = loki.requests();
    assert_eq!(requests.len(), 5);
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.target.as_str()), ("POST", "/loki/api/v1/push"));
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    assert!(!r.headers.contains_key("content-encoding"), "Loki expects raw snappy without Content-Encoding");
    assert_eq!(r.headers["x-scope-orgid"], "bank-eu");
    assert_eq!(r.headers["authorization"], "Bearer s3cret");
    assert_eq!(r.headers["x-gateway"], "teelog");

    // Decode as Loki does: raw snappy, then logproto.PushRequest.
    let decoded = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
    let pushed = PushRequest::decode(decoded.as_slice()).unwrap();
    assert_eq!(pushed, request);
    let labels: Vec<&str> = pushed.streams.iter().map(|s| s.labels.as_str()).collect();
    assert_eq!(
        labels,
        [
            r#"{job="teelog", teelog_kind="batch", teelog_stream="app"}"#,
            r#"{job="teelog", teelog_kind="record", teelog_stream="app"}"#
        ]
    );
    let records = &pushed.streams[1];
    assert_eq!(records.entries.len(), 6);
    for batch in &pushed.streams[0].entries {
        let seq = &batch.structured_metadata.iter().find(|p| p.name == META_SEQ).unwrap().value;
        let mine: Vec<&[u8]> = records
            .entries
            .iter()
            .filter(|e| e.structured_metadata.iter().any(|p| p.name == META_SEQ && &p.value == seq))
            .map(|e| e.line.as_bytes())
            .collect();
        let rebuilt = rebuild_batch_line(batch.line.as_bytes(), &mine).unwrap();
        let original = &lines[seq.parse::<usize>().unwrap() - 1];
        assert_eq!(rebuilt.as_slice(), &original[..original.len() - 1]);
    }
}

#[tokio::test]
async fn an_unreachable_loki_is_a_retry() {
    // Bind and drop, so that nothing listens on the port.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let client = LokiClient::new(&format!("http://127.0.0.1:{port}"), ClientOptions::default()).unwrap();
    match client.push(b"x".to_vec()).await.unwrap() {
        PushOutcome::Retry { status: None, reason, .. } => {
            assert!(reason.contains("could not reach Loki"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let err = client.query_range(&QueryRange::new("{}", 0, 1, 1).unwrap()).await.unwrap_err();
    assert!(err.is_retryable() && matches!(err, LokiError::Transport { .. }), "{err}");
}

#[tokio::test]
async fn queries_pages_in_the_categorize_labels_shape() {
    let stream = r#"{"job":"teelog","teelog_kind":"record","teelog_stream":"app"}"#;
    let page = |values: &str| {
        answer(
            200,
            &format!(
                r#"{{"status":"success","data":{{"resultType":"streams","encodingFlags":["categorize-labels"],
                "result":[{{"stream":{stream},"values":[{values}]}}],"stats":{{}}}}}}"#
            ),
        )
    };
    let md = |seq: u32, index: u32| {
        format!(r#"{{"structuredMetadata":{{"{META_SEQ}":"{seq}","{META_INDEX}":"{index}"}}}}"#)
    };
    let loki = FakeLoki::start(vec![
        page(&format!(r#"["100","r0",{}],["101","r1",{}]"#, md(1, 0), md(1, 1))),
        // The second page starts at 101 again and repeats r1.
        page(&format!(r#"["101","r1",{}],["102","r2",{}]"#, md(1, 1), md(2, 0))),
        page(&format!(r#"["102","r2",{}]"#, md(2, 0))),
        answer(400, "parse error at line 1, col 2: syntax error"),
        answer(200, r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#),
    ])
    .await;
    let client = LokiClient::new(&loki.base, options()).unwrap();
    let mut pager =
        Pager::new(r#"{job="teelog", teelog_kind="record", teelog_stream="app"}"#, 0, 1_000, 2).unwrap();
    let mut lines = Vec::new();
    while let Some(q) = pager.next_request() {
        let response = client.query_range(&q).await.unwrap();
        assert!(response.is_categorized());
        for e in pager.accept(response).unwrap() {
            assert_eq!(e.labels["teelog_stream"], "app");
            lines.push((e.entry.line, e.entry.structured_metadata[META_SEQ].clone()));
        }
    }
    assert_eq!(
        lines,
        [("r0".to_string(), "1".to_string()), ("r1".into(), "1".into()), ("r2".into(), "2".into())]
    );

    let q = QueryRange::new("{bad", 0, 10, 5).unwrap();
    match client.query_range(&q).await.unwrap_err() {
        LokiError::QueryStatus { status: 400, message, .. } => assert!(message.contains("syntax error")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.query_range(&q).await,
        Err(LokiError::Query(teelog_loki::QueryError::NotStreams(_)))
    ));

    let requests = loki.requests();
    assert_eq!(requests[0].method, "GET");
    assert_eq!(
        requests[0].target,
        "/loki/api/v1/query_range?query=%7Bjob%3D%22teelog%22%2C%20teelog_kind%3D%22record%22%2C%20teelog_stream%3D%22app%22%7D\
         &start=0&end=1000&limit=2&direction=forward"
    );
    assert!(requests[1].target.contains("&start=101&"));
    assert!(requests[2].target.contains("&start=102&"));
    assert_eq!(requests[0].headers["x-loki-response-encoding-flags"], "categorize-labels");
    assert_eq!(requests[0].headers["x-scope-orgid"], "bank-eu");
}

#[tokio::test]
async fn reads_label_values_and_names_the_url_on_errors() {
    let loki = FakeLoki::start(vec![
        answer(200, r#"{"status":"success","data":["app","payments"]}"#),
        Answer { status: 429, headers: vec![("Retry-After", "3".into())], body: b"too many".to_vec() },
    ])
    .await;
    let client = LokiClient::new(&loki.base, options()).unwrap();
    let values = client.label_values("teelog_stream", r#"{job="teelog"}"#, 5, 10).await.unwrap();
    assert_eq!(values, ["app", "payments"]);
    let err = client.label_values("teelog_stream", r#"{job="teelog"}"#, 5, 10).await.unwrap_err();
    assert!(err.is_retryable());
    match &err {
        LokiError::QueryStatus { status: 429, retry_after: Some(RetryAfter::Seconds(3)), url, .. } => {
            assert!(url.starts_with(&loki.base) && url.contains("/label/teelog_stream/values"), "{url}")
        }
        other => panic!("{other:?}"),
    }
    let requests = loki.requests();
    assert_eq!(
        requests[0].target,
        "/loki/api/v1/label/teelog_stream/values?query=%7Bjob%3D%22teelog%22%7D&start=5&end=10"
    );
    assert_eq!(requests[0].headers["x-scope-orgid"], "bank-eu");
}

#[tokio::test]
async fn refuses_bad_settings_and_oversized_responses() {
    for bad in ["ftp://loki", "not a url", "http://loki/?x=1"] {
        assert!(
            matches!(LokiClient::new(bad, ClientOptions::default()), Err(LokiError::BaseUrl { .. })),
            "{bad}"
        );
    }
    let bad_header =
        ClientOptions { extra_headers: vec![("bad header".into(), "v".into())], ..ClientOptions::default() };
    assert!(matches!(LokiClient::new("http://loki", bad_header), Err(LokiError::Header { .. })));
    let bad_value = ClientOptions { tenant: Some("a\nb".into()), ..ClientOptions::default() };
    assert!(matches!(LokiClient::new("http://loki", bad_value), Err(LokiError::Header { .. })));

    let loki = FakeLoki::start(vec![answer(200, &"x".repeat(2_000))]).await;
    let small = ClientOptions { max_response_bytes: 1_000, ..ClientOptions::default() };
    let client = LokiClient::new(&loki.base, small).unwrap();
    let err = client.query_range(&QueryRange::new("{}", 0, 1, 1).unwrap()).await.unwrap_err();
    assert!(matches!(err, LokiError::TooLarge { limit: 1_000 }), "{err}");
}
