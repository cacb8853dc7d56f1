//! A test double for Grafana Loki 3: an in-memory store behind the three HTTP endpoints teelog
//! uses, on 127.0.0.1. It is not Loki and emulates only what teelog depends on:
//!
//! - `POST /loki/api/v1/push`: a raw snappy block of `logproto.PushRequest`
//!   (`Content-Type: application/x-protobuf`). Stream labels are stored sorted, as Loki
//!   normalises them; an entry with the timestamp and line of one its stream already holds is
//!   dropped, whatever its structured metadata, as Loki 3.4 de-duplicates (the head block
//!   compares timestamp and line only, so the first entry's metadata stays). Answers 204, or 400
//!   with a message and nothing stored.
//! - `GET /loki/api/v1/query_range` with `query` (a stream selector of equality matchers only),
//!   `start` (inclusive) and `end` (exclusive) in Unix nanoseconds, `limit` (default 100, at most
//!   5000) and `direction=forward` (required: the fake does not do backward). It answers the
//!   first `limit` entries in timestamp order across all matching streams, with values as
//!   `[ts, line, {"structuredMetadata":{…}}]` and `encodingFlags` when asked with
//!   `X-Loki-Response-Encoding-Flags: categorize-labels`, else `[ts, line]` with the metadata
//!   merged into the stream labels.
//! - `GET /loki/api/v1/label/<name>/values` with optional `query`, `start` and `end`.
//!
//! Tests read and alter what is stored with [`FakeLoki::streams`], [`FakeLoki::edit`] and
//! [`FakeLoki::delete_shifting_metadata`], make the next requests fail with
//! [`FakeLoki::fail_next`], and see what was asked with [`FakeLoki::requests`]. Tenants, authentication, limits other than the query limit, and
//! LogQL beyond a plain selector are not emulated.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde::Serialize;
use serde_json::json;
use teelog_loki::proto::PushRequest;
use tokio::sync::oneshot;

/// Loki's default `max_entries_limit_per_query`.
pub const MAX_LIMIT: usize = 5000;
/// Loki's default `limit` for `query_range`.
const DEFAULT_LIMIT: usize = 100;

/// A stream's labels, sorted by name.
pub type Labels = BTreeMap<String, String>;
/// Everything stored: each stream's entries in timestamp order (pushes of equal timestamps keep
/// their arrival order).
pub type Streams = BTreeMap<Labels, Vec<Entry>>;

/// One stored log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix nanoseconds.
    pub timestamp: i64,
    /// The log line, as pushed.
    pub line: String,
    /// The entry's structured metadata, name to value.
    pub structured_metadata: BTreeMap<String, String>,
}

/// A request as received, for tests to count pages and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The HTTP method.
    pub method: String,
    /// Path and query string.
    pub target: String,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
}

#[derive(Debug, Clone)]
struct Failure {
    status: StatusCode,
    retry_after: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    streams: Streams,
    failures: VecDeque<Failure>,
    requests: Vec<Request>,
    /// How long each query_range waits before it answers, as a real Loki's would.
    query_latency: std::time::Duration,
    /// query_range calls being answered now, and the most there have been at once.
    queries_in_flight: usize,
    most_queries_at_once: usize,
}

/// A running fake Loki; it stops serving when dropped.
pub struct FakeLoki {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock has failed already; the data is still usable.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeLoki {
    /// Starts serving on a free port of 127.0.0.1, on a thread of its own, so that both plain
    /// and async tests can use it.
    pub fn start() -> std::io::Result<FakeLoki> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let router = axum::Router::new()
            .route("/loki/api/v1/push", axum::routing::post(push))
            .route("/loki/api/v1/query_range", axum::routing::get(query_range))
            .route("/loki/api/v1/label/{name}/values", axum::routing::get(label_values))
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(state.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            })
        });
        Ok(FakeLoki { url, state, stop: Some(stop) })
    }

    /// The base URL, e.g. `http://127.0.0.1:39211`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A copy of everything stored.
    pub fn streams(&self) -> Streams {
        lock(&self.state).streams.clone()
    }

    /// Changes what is stored, as an attacker with write access to Loki's storage could. Entries
    /// are put back in timestamp order afterwards; streams left empty disappear.
    pub fn edit<T>(&self, change: impl FnOnce(&mut Streams) -> T) -> T {
        let mut state = lock(&self.state);
        let out = change(&mut state.streams);
        state.streams.retain(|_, entries| !entries.is_empty());
        for entries in state.streams.values_mut() {
            entries.sort_by_key(|e| e.timestamp);
        }
        out
    }

    /// Deletes the entries `doomed` picks the way an affected Loki does (grafana/loki issue
    /// 24434, Loki 3.6.0 to 3.7.6: structured metadata shifted after a delete request): the
    /// lines go, but each stream's metadata stays in place, so every entry after a deleted one
    /// carries the metadata of an entry before it. Returns how many entries were deleted.
    pub fn delete_shifting_metadata(&self, mut doomed: impl FnMut(&Labels, &Entry) -> bool) -> usize {
        let mut state = lock(&self.state);
        let mut deleted = 0;
        for (labels, entries) in state.streams.iter_mut() {
            let metadata: Vec<_> = entries.iter().map(|e| e.structured_metadata.clone()).collect();
            let before = entries.len();
            entries.retain(|e| !doomed(labels, e));
            deleted += before - entries.len();
            for (entry, metadata) in entries.iter_mut().zip(metadata) {
                entry.structured_metadata = metadata;
            }
        }
        state.streams.retain(|_, entries| !entries.is_empty());
        deleted
    }

    /// Makes the next `n` requests, of any kind, fail with `status` (and `Retry-After`, if
    /// given) without being served.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<&str>) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let failure = Failure { status, retry_after: retry_after.map(str::to_string) };
        lock(&self.state).failures.extend((0..n).map(|_| failure.clone()));
    }

    /// Makes every query_range answer only after `latency`, as a Loki under load or far away
    /// does; queries sent at once wait at once, as they do at a real Loki.
    pub fn set_query_latency(&self, latency: std::time::Duration) {
        lock(&self.state).query_latency = latency;
    }

    /// The most query_range calls that were being answered at once.
    pub fn most_queries_at_once(&self) -> usize {
        lock(&self.state).most_queries_at_once
    }

    /// The requests received so far, scripted failures included.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state).requests.clone()
    }
}

impl Drop for FakeLoki {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Logs the request and answers a scripted failure if one is due.
fn enter(state: &Mutex<State>, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    let mut state = lock(state);
    let target = uri.path_and_query().map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()).map(str::to_string);
    state.requests.push(Request { method: method.to_string(), target, tenant });
    let failure = state.failures.pop_front()?;
    let mut response = (failure.status, "fake loki: scripted failure\n").into_response();
    if let Some(value) = failure.retry_after.and_then(|v| v.parse().ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    Some(response)
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message + "\n").into_response()
}

async fn push(
    AxumState(state): AxumState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(failure) = enter(&state, &method, &uri, &headers) {
        return failure;
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type != "application/x-protobuf" {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("fake loki: only application/x-protobuf pushes, not {content_type:?}\n"),
        )
            .into_response();
    }
    let decoded = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .map_err(|e| format!("snappy: {e}"))
        .and_then(|raw| PushRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}")));
    match decoded.and_then(|request| lock(&state).push(request)) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(message) => bad_request(message),
    }
}

/// The query string's parameters (the last of a repeated name wins).
fn params(uri: &Uri) -> BTreeMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn nanos(params: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, String> {
    params
        .get(name)
        .map(|v| v.parse().map_err(|_| format!("invalid parameter {name:?}: {v:?} is not Unix nanoseconds")))
        .transpose()
}

async fn query_range(
    AxumState(state): AxumState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(failure) = enter(&state, &method, &uri, &headers) {
        return failure;
    }
    let latency = {
        let mut state = lock(&state);
        state.queries_in_flight += 1;
        state.most_queries_at_once = state.most_queries_at_once.max(state.queries_in_flight);
        state.query_latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    lock(&state).queries_in_flight -= 1;
    let categorize = headers
        .get_all("x-loki-response-encoding-flags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|f| f.trim() == "categorize-labels"));
    let answer = answer_query_range(&lock(&state), &params(&uri), categorize);
    match answer {
        Ok(body) => json_response(body),
        Err(message) => bad_request(message),
    }
}

/// A query_range answer, written straight from the stored entries: the double must cost little
/// beside the audit it serves, or a benchmark of concurrent queries measures the double.
#[derive(Serialize)]
struct QueryAnswer<'a> {
    status: &'static str,
    data: QueryData<'a>,
}

#[derive(Serialize)]
struct QueryData<'a> {
    #[serde(rename = "resultType")]
    result_type: &'static str,
    #[serde(rename = "encodingFlags", skip_serializing_if = "Option::is_none")]
    encoding_flags: Option<[&'static str; 1]>,
    result: Vec<ResultStream<'a>>,
    stats: Stats,
}

/// Loki's query statistics: none here (`{}`).
#[derive(Serialize)]
struct Stats {}

#[derive(Serialize)]
struct ResultStream<'a> {
    stream: Cow<'a, Labels>,
    values: Vec<EntryValue<'a>>,
}

/// `[timestamp, line]`, or with categorised labels `[timestamp, line, {"structuredMetadata"…}]`.
#[derive(Serialize)]
#[serde(untagged)]
enum EntryValue<'a> {
    Plain(String, &'a str),
    Categorized(String, &'a str, Categories<'a>),
}

#[derive(Serialize)]
struct Categories<'a> {
    #[serde(rename = "structuredMetadata", skip_serializing_if = "BTreeMap::is_empty")]
    structured_metadata: &'a BTreeMap<String, String>,
}

fn answer_query_range(
    state: &State,
    params: &BTreeMap<String, String>,
    categorize: bool,
) -> Result<String, String> {
    let matchers = parse_selector(params.get("query").ok_or("query parameter is missing")?)?;
    let (Some(start), Some(end)) = (nanos(params, "start")?, nanos(params, "end")?) else {
        return Err("fake loki: give start and end (Unix nanoseconds)".into());
    };
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v.parse().map_err(|_| format!("invalid parameter \"limit\": {v:?}"))?,
    };
    if limit > MAX_LIMIT {
        return Err(format!(
            "max entries limit per query exceeded, limit > max_entries_limit_per_query ({limit} > {MAX_LIMIT})"
        ));
    }
    if params.get("direction").map(String::as_str) != Some("forward") {
        return Err("fake loki: only direction=forward is supported".into());
    }
    let hits = state.query(&matchers, start, end, limit);
    // One result stream per label set (with the metadata merged in, unless categorised), in the
    // order of their first entry.
    let mut result: Vec<ResultStream<'_>> = Vec::new();
    for (labels, entry) in hits {
        let (stream, value) = if categorize {
            let categories = Categories { structured_metadata: &entry.structured_metadata };
            (
                Cow::Borrowed(labels),
                EntryValue::Categorized(entry.timestamp.to_string(), &entry.line, categories),
            )
        } else {
            let mut merged = labels.clone();
            merged.extend(entry.structured_metadata.clone());
            (Cow::Owned(merged), EntryValue::Plain(entry.timestamp.to_string(), &entry.line))
        };
        match result.iter_mut().find(|r| r.stream == stream) {
            Some(r) => r.values.push(value),
            None => result.push(ResultStream { stream, values: vec![value] }),
        }
    }
    let data = QueryData {
        result_type: "streams",
        encoding_flags: categorize.then_some(["categorize-labels"]),
        result,
        stats: Stats {},
    };
    serde_json::to_string(&QueryAnswer { status: "success", data }).map_err(|e| e.to_string())
}

async fn label_values(
    AxumState(state): AxumState<Arc<Mutex<State>>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(failure) = enter(&state, &method, &uri, &headers) {
        return failure;
    }
    let params = params(&uri);
    let answer = (|| {
        let matchers = params.get("query").map(|q| parse_selector(q)).transpose()?.unwrap_or_default();
        let start = nanos(&params, "start")?.unwrap_or(i64::MIN);
        let end = nanos(&params, "end")?.unwrap_or(i64::MAX);
        Ok::<_, String>(lock(&state).label_values(&name, &matchers, start, end))
    })();
    match answer {
        Ok(values) => json_response(json!({ "status": "success", "data": values }).to_string()),
        Err(message) => bad_request(message),
    }
}

impl State {
    /// Stores a whole push or, if any stream of it is refused, nothing.
    fn push(&mut self, request: PushRequest) -> Result<(), String> {
        let mut parsed = Vec::with_capacity(request.streams.len());
        for stream in request.streams {
            let labels = parse_labels(&stream.labels)?;
            let mut entries = Vec::with_capacity(stream.entries.len());
            for e in stream.entries {
                let timestamp = e
                    .timestamp
                    .and_then(|t| t.to_unix_nanos())
                    .ok_or_else(|| format!("stream {}: an entry has no valid timestamp", stream.labels))?;
                let structured_metadata =
                    e.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect();
                entries.push(Entry { timestamp, line: e.line, structured_metadata });
            }
            parsed.push((labels, entries));
        }
        for (labels, entries) in parsed {
            let stored = self.streams.entry(labels).or_default();
            for entry in entries {
                let at = stored.partition_point(|e| e.timestamp <= entry.timestamp);
                // Loki folds on timestamp and line alone: metadata does not tell entries apart.
                let same_time = stored[..at].iter().rev().take_while(|e| e.timestamp == entry.timestamp);
                if !same_time.into_iter().any(|e| e.line == entry.line) {
                    stored.insert(at, entry);
                }
            }
        }
        Ok(())
    }

    /// The first `limit` entries in `[start, end)` of the streams matching every matcher, in
    /// timestamp order across streams.
    fn query(
        &self,
        matchers: &[(String, String)],
        start: i64,
        end: i64,
        limit: usize,
    ) -> Vec<(&Labels, &Entry)> {
        let mut hits: Vec<(&Labels, &Entry)> = self
            .streams
            .iter()
            .filter(|(labels, _)| matches(labels, matchers))
            // Each stream is in timestamp order: at most `limit` of each can be among the first.
            .flat_map(|(labels, entries)| {
                let first = entries.partition_point(|e| e.timestamp < start);
                entries[first..]
                    .iter()
                    .take_while(|e| e.timestamp < end)
                    .take(limit)
                    .map(move |e| (labels, e))
            })
            .collect();
        hits.sort_by_key(|(_, e)| e.timestamp);
        hits.truncate(limit);
        hits
    }

    fn label_values(&self, name: &str, matchers: &[(String, String)], start: i64, end: i64) -> Vec<String> {
        let values: BTreeSet<&String> = self
            .streams
            .iter()
            .filter(|(labels, entries)| {
                matches(labels, matchers) && entries.iter().any(|e| e.timestamp >= start && e.timestamp < end)
            })
            .filter_map(|(labels, _)| labels.get(name))
            .collect();
        values.into_iter().cloned().collect()
    }
}

fn matches(labels: &Labels, matchers: &[(String, String)]) -> bool {
    matchers.iter().all(|(name, value)| labels.get(name) == Some(value))
}

/// A push's stream labels, `{name="value", …}`, sorted.
fn parse_labels(text: &str) -> Result<Labels, String> {
    let pairs = parse_matchers(text).map_err(|e| format!("error parsing labels {text:?}: {e}"))?;
    if pairs.is_empty() {
        return Err("error at least one label pair is required per stream".into());
    }
    let mut labels = Labels::new();
    for (name, value) in pairs {
        if labels.insert(name.clone(), value).is_some() {
            return Err(format!("error parsing labels {text:?}: duplicate label name {name:?}"));
        }
    }
    Ok(labels)
}

/// A LogQL stream selector; only equality matchers, and nothing after it.
fn parse_selector(text: &str) -> Result<Vec<(String, String)>, String> {
    let matchers = parse_matchers(text)?;
    if matchers.iter().all(|(_, value)| value.is_empty()) {
        return Err("parse error : queries require at least one regexp or equality matcher that does not \
                    have an empty-compatible value. For instance, app=~\".*\" does not meet this \
                    requirement, but app=~\".+\" will"
            .into());
    }
    Ok(matchers)
}

/// `{name="value", …}` with Go-style escapes in values (`\"`, `\\`, `\n`, `\t`).
fn parse_matchers(text: &str) -> Result<Vec<(String, String)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    let error = |at: usize, what: &str| format!("parse error at line 1, col {}: {what}", at + 1);
    let skip_space = |at: &mut usize| {
        while chars.get(*at).is_some_and(|c| c.is_whitespace()) {
            *at += 1;
        }
    };
    skip_space(&mut at);
    if chars.get(at) != Some(&'{') {
        return Err(error(at, "syntax error: unexpected input, expecting {"));
    }
    at += 1;
    let mut out = Vec::new();
    loop {
        skip_space(&mut at);
        if chars.get(at) == Some(&'}') && out.is_empty() {
            at += 1;
            break;
        }
        let name_start = at;
        while chars.get(at).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
            at += 1;
        }
        let name: String = chars[name_start..at].iter().collect();
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(error(name_start, "syntax error: expecting a label name"));
        }
        skip_space(&mut at);
        match (chars.get(at), chars.get(at + 1)) {
            (Some('='), Some('~')) | (Some('!'), _) => {
                return Err(error(at, "fake loki: only equality matchers (name=\"value\") are supported"))
            }
            (Some('='), _) => at += 1,
            _ => return Err(error(at, "syntax error: expecting =")),
        }
        skip_space(&mut at);
        if chars.get(at) != Some(&'"') {
            return Err(error(at, "syntax error: expecting a quoted string"));
        }
        at += 1;
        let mut value = String::new();
        loop {
            match chars.get(at) {
                None => return Err(error(at, "syntax error: unterminated string")),
                Some('"') => break,
                Some('\\') => {
                    value.push(match chars.get(at + 1) {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some(c @ ('"' | '\\')) => *c,
                        _ => return Err(error(at, "syntax error: invalid escape")),
                    });
                    at += 2;
                }
                Some(c) => {
                    value.push(*c);
                    at += 1;
                }
            }
        }
        at += 1;
        out.push((name, value));
        skip_space(&mut at);
        match chars.get(at) {
            Some(',') => at += 1,
            Some('}') => {
                at += 1;
                break;
            }
            _ => return Err(error(at, "syntax error: expecting , or }")),
        }
    }
    skip_space(&mut at);
    if at < chars.len() {
        return Err(error(at, "fake loki: only a stream selector, without filters or pipelines"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use teelog_loki::proto::{EntryAdapter, LabelPairAdapter, StreamAdapter, Timestamp};

    fn push_of(labels: &str, entries: &[(i64, &str, &str)]) -> PushRequest {
        PushRequest {
            streams: vec![StreamAdapter {
                labels: labels.into(),
                entries: entries
                    .iter()
                    .map(|(ts, line, seq)| EntryAdapter {
                        timestamp: Some(Timestamp::from_unix_nanos(*ts)),
                        line: (*line).into(),
                        structured_metadata: vec![LabelPairAdapter {
                            name: "seq".into(),
                            value: (*seq).into(),
                        }],
                    })
                    .collect(),
                hash: 0,
            }],
        }
    }

    fn sel(text: &str) -> Vec<(String, String)> {
        parse_selector(text).unwrap()
    }

    #[test]
    fn dedups_equal_entries_of_a_stream_only() {
        let mut state = State::default();
        state.push(push_of(r#"{job="t", b="x"}"#, &[(5, "a", "1"), (5, "a", "1"), (5, "a", "2")])).unwrap();
        state.push(push_of(r#"{b="x",job="t"}"#, &[(5, "a", "1"), (6, "a", "1"), (4, "z", "1")])).unwrap();
        state.push(push_of(r#"{job="t", b="y"}"#, &[(5, "a", "1")])).unwrap();
        // A later push of the same timestamp and line does not replace the metadata either; a
        // different line at the same timestamp is its own entry.
        state.push(push_of(r#"{job="t", b="x"}"#, &[(5, "a", "3"), (5, "b", "1")])).unwrap();
        let x = &state.streams[&Labels::from([("b".into(), "x".into()), ("job".into(), "t".into())])];
        let got: Vec<(i64, &str, &str)> =
            x.iter().map(|e| (e.timestamp, e.line.as_str(), e.structured_metadata["seq"].as_str())).collect();
        // Equal timestamp and line with other metadata is folded too, keeping the first entry's
        // metadata, as Loki 3.4 does; the other label set is its own stream.
        assert_eq!(got, [(4, "z", "1"), (5, "a", "1"), (5, "b", "1"), (6, "a", "1")]);
        assert_eq!(state.streams.len(), 2);
        assert!(state.push(push_of(r#"{job="t", job="u"}"#, &[(1, "a", "1")])).is_err());
        assert!(state.push(push_of("{}", &[(1, "a", "1")])).is_err());
        assert!(state.push(push_of("job=t", &[(1, "a", "1")])).is_err());
    }

    #[test]
    fn queries_are_ordered_across_streams_end_exclusive_and_limited() {
        let mut state = State::default();
        state
            .push(push_of(r#"{job="t", k="a"}"#, &[(10, "a10", "1"), (12, "a12", "1"), (14, "a14", "1")]))
            .unwrap();
        state.push(push_of(r#"{job="t", k="b"}"#, &[(11, "b11", "1"), (12, "b12", "1")])).unwrap();
        let lines = |m: &str, start, end, limit| -> Vec<String> {
            state.query(&sel(m), start, end, limit).iter().map(|(_, e)| e.line.clone()).collect()
        };
        assert_eq!(lines(r#"{job="t"}"#, 10, 14, 100), ["a10", "b11", "a12", "b12"]);
        assert_eq!(lines(r#"{job="t"}"#, 11, 15, 2), ["b11", "a12"]);
        assert_eq!(lines(r#"{job="t", k="b"}"#, 0, 100, 100), ["b11", "b12"]);
        assert_eq!(lines(r#"{job="t", k="c"}"#, 0, 100, 100), Vec::<String>::new());
        assert_eq!(state.label_values("k", &sel(r#"{job="t"}"#), 13, 20), ["a"]);
        assert_eq!(state.label_values("k", &[], 0, 20), ["a", "b"]);
    }

    #[test]
    fn answers_in_the_shape_loki_3_and_teelog_use() {
        let mut state = State::default();
        state.push(push_of(r#"{job="t"}"#, &[(7, "a", "1")])).unwrap();
        state.streams.get_mut(&Labels::from([("job".into(), "t".into())])).unwrap().push(Entry {
            timestamp: 8,
            line: "b".into(),
            structured_metadata: BTreeMap::new(),
        });
        let params = BTreeMap::from([
            ("query".to_string(), r#"{job="t"}"#.to_string()),
            ("start".into(), "0".into()),
            ("end".into(), "10".into()),
            ("direction".into(), "forward".into()),
        ]);
        let answer = |categorize| {
            let body = answer_query_range(&state, &params, categorize).unwrap();
            (serde_json::from_str::<serde_json::Value>(&body).unwrap(), body)
        };
        let (categorized, body) = answer(true);
        assert_eq!(
            categorized["data"],
            json!({"resultType": "streams", "encodingFlags": ["categorize-labels"], "stats": {},
                   "result": [{"stream": {"job": "t"},
                               "values": [["7", "a", {"structuredMetadata": {"seq": "1"}}], ["8", "b", {}]]}]})
        );
        assert_eq!(categorized["status"], "success");
        let parsed = teelog_loki::parse_query_response(body.as_bytes()).unwrap();
        assert!(parsed.is_categorized());
        assert_eq!(parsed.streams[0].entries[0].structured_metadata["seq"], "1");
        // Without the flag, metadata is merged into the stream labels.
        let (plain, _) = answer(false);
        assert_eq!(
            plain["data"]["result"],
            json!([{"stream": {"job": "t", "seq": "1"}, "values": [["7", "a"]]},
                   {"stream": {"job": "t"}, "values": [["8", "b"]]}])
        );
        assert!(plain["data"].get("encodingFlags").is_none());
    }

    #[test]
    fn selectors_are_equality_matchers_only() {
        assert_eq!(
            sel(r#" { job = "te\"elog" ,kind="a\\b\n" } "#),
            [("job".to_string(), "te\"elog".to_string()), ("kind".into(), "a\\b\n".into())]
        );
        for bad in [
            r#"{job=~"t.*"}"#,
            r#"{job!="t"}"#,
            r#"{job="t"} |= "x""#,
            r#"{job="t""#,
            r#"{="t"}"#,
            "{}",
            r#"{job=""}"#,
            "",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
        let params = BTreeMap::from([
            ("query".to_string(), r#"{job="t"}"#.to_string()),
            ("start".into(), "0".into()),
            ("end".into(), "10".into()),
            ("direction".into(), "forward".into()),
            ("limit".into(), "5001".into()),
        ]);
        let err = answer_query_range(&State::default(), &params, true).unwrap_err();
        assert!(err.contains("5001 > 5000"), "{err}");
    }
}
