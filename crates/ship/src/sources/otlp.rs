//! OTLP logs in: HTTP (`POST /v1/logs`, protobuf or JSON, optionally gzip) and gRPC
//! (`LogsService/Export`). A request is answered only once its records are in the spool.

use std::io::Read;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use teelog_otlp::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use teelog_core::merkle::{sha256, Digest};
use teelog_core::record::{refusal_notice, Refused};
use teelog_store::lines::Skipped;

use crate::signer::too_long_notice;
use teelog_otlp::Mapped;

use crate::config::SourcesConfig;
use crate::pipeline::{Origin, Receipt, RecordBuf, SubmitError, Submitter};
use teelog_deliver::clock::now;

/// What the HTTP and gRPC endpoints share.
#[derive(Clone)]
pub struct Ingest {
    submitter: Submitter,
    max_request_bytes: usize,
    /// The longest record taken; a longer one is refused with a notice in its place.
    max_record_bytes: usize,
    /// Bytes that requests being taken may hold at once, all receivers together: their bodies
    /// and the records they map to (a resource is copied into each of its records, so a small
    /// request can map to far more than its size).
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// Requests taken recently, by the SHA-256 of their body, with their outcome once known.
    recent: Arc<Mutex<Recent>>,
    /// The SHA-256 of the `Authorization` header a request must carry, if any.
    token: Option<Digest>,
}

/// What became of a request: None while it is being taken.
type Outcome = Option<Result<Receipt, Refusal>>;

/// A request body seen again within this long is a retry: it is answered with the first one's
/// outcome, not signed again.
const RETRY_WINDOW: Duration = Duration::from_secs(600);
/// At most this many requests are remembered (the oldest are forgotten first).
const RECENT_MAX: usize = 4096;

#[derive(Default)]
struct Recent {
    taken: HashMap<Digest, (Instant, watch::Receiver<Outcome>)>,
    order: VecDeque<(Digest, Instant)>,
}

impl Recent {
    fn forget_old(&mut self, now: Instant) {
        while let Some(&(key, at)) = self.order.front() {
            if self.order.len() <= RECENT_MAX && now.duration_since(at) < RETRY_WINDOW {
                break;
            }
            self.order.pop_front();
            // Only that entry: the same body may have been taken again since.
            if self.taken.get(&key).is_some_and(|(since, _)| *since == at) {
                self.taken.remove(&key);
            }
        }
    }
}

/// Why a request was not taken. (A record the mapping refuses does not refuse its request: a
/// notice takes its place.)
#[derive(Clone)]
enum Refusal {
    /// The signer or the memory budget is busy, or the daemon is stopping: retry later.
    Busy(String),
    /// The request can never be taken (it maps to more than the whole budget): do not retry.
    TooLarge(String),
}

/// A request ready to map.
pub(crate) enum Decoded {
    /// A plain protobuf body, whose records are mapped from its bytes.
    Wire(teelog_otlp::WireRequest),
    /// A request prost decoded (OTLP/JSON, or protobuf that is not plain), and the log records
    /// of it that did not decode (protobuf).
    Tree { request: ExportLogsServiceRequest, undecodable: Vec<teelog_otlp::BadRecord> },
}

impl Decoded {
    fn request(&self) -> teelog_otlp::RequestRef<'_> {
        match self {
            Decoded::Wire(request) => request.into(),
            Decoded::Tree { request, .. } => request.into(),
        }
    }

    fn undecodable(&self) -> &[teelog_otlp::BadRecord] {
        match self {
            Decoded::Wire(_) => &[],
            Decoded::Tree { undecodable, .. } => undecodable,
        }
    }
}

/// At most this many records of one request are refused alone for not decoding; a request with
/// more is not looked into further (their notices would be most of it).
const MAX_UNDECODABLE: usize = 1000;
/// What an OTLP/JSON body may decode to, at most, as a multiple of its length (and at least
/// [`BUDGET_STEP`], as a small body's few structures weigh more than its bytes).
const JSON_DECODED_FACTOR: usize = 8;

/// More than a refusal notice takes: its text, a SHA-256 and the path of the record.
const NOTICE_BYTES: usize = 4096;

/// The budget a request holds, and how much of it its body, decoding and records use so far.
struct Hold {
    permit: OwnedSemaphorePermit,
    used: usize,
}

/// What a request reserves before it is read, as a multiple of its body's length.
const RESERVE_FACTOR: usize = 4;

/// Budget is taken in steps of this many bytes as a request's records grow.
const BUDGET_STEP: usize = 1 << 20;

impl Ingest {
    /// `budget_bytes` bounds what all requests hold at once (see [`Ingest`]).
    /// The receivers of `sources`; with `token`, a request must carry `Authorization: Bearer
    /// <token>`.
    pub fn new(submitter: Submitter, sources: &SourcesConfig, token: Option<String>) -> Self {
        let budget_bytes = sources.max_inflight_bytes.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        let budget = Arc::new(Semaphore::new(budget_bytes));
        let recent = Arc::default();
        // Compared by hash, so that the time taken says nothing of how much of it matched.
        let token = token.map(|t| sha256(format!("Bearer {t}").as_bytes()));
        Self {
            submitter,
            max_request_bytes: sources.max_request_bytes,
            max_record_bytes: sources.max_line_bytes,
            budget,
            budget_bytes,
            recent,
            token,
        }
    }

    /// Takes the budget for a body of `bytes`, waiting at most the pipeline's `max_wait` for it:
    /// the body and, as far as the budget goes, what an honest body decodes and maps to besides
    /// ([`RESERVE_FACTOR`]), taken now while the request holds nothing, so that it seldom has to
    /// ask for more while holding some (and be refused as busy).
    async fn reserve(&self, bytes: usize, source: &'static str) -> Result<Hold, Refusal> {
        if bytes > self.budget_bytes {
            return Err(self.over_budget(source, true, &format!("the request needs {bytes} bytes,")));
        }
        let reserved = bytes.saturating_mul(RESERVE_FACTOR).min(self.budget_bytes);
        let n = u32::try_from(reserved).map_err(|_| self.over_budget(source, true, "the request needs"))?;
        let wait = self.submitter.max_wait();
        match tokio::time::timeout(wait, self.budget.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Hold { permit, used: bytes }),
            _ => Err(self.refuse(
                source,
                "memory_budget",
                format!("the receivers' memory budget stayed full for {wait:?}"),
            )),
        }
    }

    /// Takes `request` (see [`take`](Self::take)) unless a request with the same body (`key`,
    /// its SHA-256) was taken within [`RETRY_WINDOW`]: a client retrying after a timeout then
    /// gets the first one's outcome, and nothing is signed twice. The caller waits at most the
    /// pipeline's `max_wait` (the spool may be full, the disk failing): it is then told to retry,
    /// and its request is still taken meanwhile, so that the retry finds its outcome.
    async fn take_once(
        &self,
        key: Digest,
        request: Decoded,
        source: &'static str,
        held: Hold,
    ) -> Result<Receipt, Refusal> {
        let mut outcome = {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            recent.forget_old(now);
            match recent.taken.get(&key) {
                Some((at, outcome)) => {
                    tracing::info!(target: "teelog::ship", "{source}: a request with the same body as one taken {:?} ago: answered with its outcome, not signed again", now.duration_since(*at));
                    outcome.clone()
                }
                None => {
                    let (tell, outcome) = watch::channel(None);
                    recent.taken.insert(key, (now, outcome.clone()));
                    recent.order.push_back((key, now));
                    let ingest = self.clone();
                    tokio::spawn(async move {
                        let result = ingest.take(&request, source, held).await;
                        if result.is_err() {
                            // Nothing was promised: a retry is taken anew.
                            let mut recent = ingest.recent.lock().unwrap_or_else(|e| e.into_inner());
                            if recent.taken.get(&key).is_some_and(|(at, _)| *at == now) {
                                recent.taken.remove(&key);
                            }
                        }
                        tell.send_replace(Some(result));
                    });
                    outcome
                }
            }
        };
        let wait = self.submitter.max_wait();
        let done = match tokio::time::timeout(wait, outcome.wait_for(Option::is_some)).await {
            Ok(Ok(done)) => Ok(done.clone()),
            Ok(Err(_)) => Err(false),
            Err(_) => Err(true),
        };
        match done {
            Ok(Some(result)) => result,
            Ok(None) | Err(false) => {
                Err(self.refuse(source, "stopped", "the request was dropped while stopping".into()))
            }
            Err(true) => {
                let held = if self.submitter.shared().remote_ack() {
                    "not stored by the gateway"
                } else {
                    "not in the spool (it is full or failing)"
                };
                Err(self.refuse(
                    source,
                    "held",
                    format!("{held} within {wait:?}; retry: the same request is not signed twice"),
                ))
            }
        }
    }

    /// Whether a request with this `Authorization` header may be taken; counted if not.
    fn authorized(&self, header: Option<&HeaderValue>, source: &'static str) -> bool {
        let Some(expected) = &self.token else { return true };
        let ok = header.is_some_and(|given| sha256(given.as_bytes()) == *expected);
        if !ok {
            self.count_refused(source, "unauthorized");
        }
        ok
    }

    /// Counts a request refused for `reason`, among the listeners' metrics the spool keeps.
    fn count_refused(&self, source: &str, reason: &str) {
        self.submitter.shared().spool.metrics.refused(source, reason);
    }

    /// Maps every record of the request and submits them together. `held` is the budget the
    /// request holds already (its body); the records it maps to take more, step by step, and a
    /// request that cannot get it now is refused as busy, so that no request waits for budget
    /// while holding some.
    async fn take(
        &self,
        decoded: &Decoded,
        source: &'static str,
        mut held: Hold,
    ) -> Result<Receipt, Refusal> {
        let mut records = RecordBuf::default();
        let mut short = None;
        let mut scratch = Vec::new();
        // A record that does not decode, or that the mapping refuses, is not lost: a signed
        // notice takes its place, and the client is told in `partial_success`.
        let mut refused = Receipt::default();
        let undecodable = decoded.undecodable();
        if let Err(whole) = self.grow(&mut held, undecodable.len() * NOTICE_BYTES) {
            short = Some(whole);
        }
        for bad in undecodable.iter().take_while(|_| short.is_none()) {
            let at = format!("{source} {}", bad.path);
            self.refusal_notice(&at, &bad.error, &bad.bytes, &mut records, &mut refused);
        }
        let mapped = if short.is_some() {
            Err(())
        } else {
            teelog_otlp::for_each_mapped(decoded.request(), now(), &mut scratch, |mapped| {
                // Room for what this one adds: the record, or the notice in its place.
                let adds = match &mapped {
                    Mapped::Record { record, .. } if record.len() <= self.max_record_bytes => {
                        record.len() + 1
                    }
                    _ => NOTICE_BYTES,
                };
                if let Err(whole) = self.grow(&mut held, adds) {
                    short = Some(whole);
                    return Err(());
                }
                match mapped {
                    Mapped::Record { record, path, .. } if record.len() > self.max_record_bytes => {
                        // Refused here, as on every input path, rather than held until the signer
                        // refuses it.
                        let (at, limit) = (format!("{source} {}", path()), self.max_record_bytes);
                        let skipped = Skipped { bytes: record.len() as u64, sha256: sha256(record) };
                        let reason = format!(
                            "{} bytes, longer than the {limit} bytes a record may have",
                            record.len()
                        );
                        self.refused_record(
                            &at,
                            &reason,
                            &too_long_notice(&at, limit, skipped),
                            &mut records,
                            &mut refused,
                        );
                    }
                    Mapped::Record { record, ts, .. } => records.push_canonical(record, ts),
                    Mapped::Refused { path, fault, log_record } => {
                        let at = format!("{source} {path}");
                        let raw = log_record.encode_to_vec();
                        self.refusal_notice(&at, &fault.to_string(), &raw, &mut records, &mut refused);
                    }
                    // No record to stand for.
                    Mapped::Empty { path, fault } => {
                        tracing::warn!(target: "teelog::ship", "{source}: {path}: {fault}; it has no log records");
                    }
                }
                Ok(())
            })
        };
        if let (Err(()), Some(whole)) = (mapped, short) {
            // A resource is copied into each of its records.
            return Err(self.over_budget(source, whole, "its records come to"));
        }
        if records.is_empty() {
            return Ok(Receipt::default());
        }
        match self.submitter.submit(records, Origin::named(source)).await {
            Ok(receipt) => Ok(Receipt {
                // The notices were taken as records; they stand for refused ones.
                accepted: receipt.accepted - refused.rejected.min(receipt.accepted),
                rejected: receipt.rejected + refused.rejected,
                first_error: refused.first_error.or(receipt.first_error),
            }),
            Err(e @ SubmitError::Full) => Err(self.refuse(source, "queue_full", e.to_string())),
            Err(e) => Err(self.refuse(source, "stopped", e.to_string())),
        }
    }

    fn refuse(&self, source: &'static str, reason: &str, why: String) -> Refusal {
        self.count_refused(source, reason);
        tracing::warn!(target: "teelog::ship", "{source}: request refused ({reason}): {why}");
        Refusal::Busy(why)
    }

    /// The refusal of a request the budget cannot take now (see [`grow`](Self::grow)), or ever
    /// (`whole`: it needs more than the whole budget); `what` says what needs it.
    fn over_budget(&self, source: &'static str, whole: bool, what: &str) -> Refusal {
        if !whole {
            return self.refuse(source, "memory_budget", "the receivers' memory budget is full".into());
        }
        self.count_refused(source, "too_large");
        let message = format!(
            "{what} more than the {} bytes all requests may hold at once (sources.max_inflight_bytes): split it",
            self.budget_bytes
        );
        tracing::warn!(target: "teelog::ship", "{source}: request refused: {message}");
        Refusal::TooLarge(message)
    }

    /// Counts `more` bytes as used by the request of `hold`, taking budget for them if what it
    /// holds does not cover them, without waiting: Err(true) if the request then needs more than
    /// the whole budget, Err(false) if the budget is busy now.
    fn grow(&self, hold: &mut Hold, more: usize) -> Result<(), bool> {
        hold.used = hold.used.saturating_add(more);
        if hold.used > self.budget_bytes {
            return Err(true);
        }
        let have = hold.permit.num_permits();
        if have < hold.used {
            // In steps, so that a request that grows record by record takes a little ahead.
            let take = (hold.used - have).max(BUDGET_STEP).min(self.budget_bytes - have);
            let take = u32::try_from(take).map_err(|_| true)?;
            hold.permit.merge(self.budget.clone().try_acquire_many_owned(take).map_err(|_| false)?);
        }
        Ok(())
    }

    /// Adds to `records` the signed notice that stands for a log record refused (`raw`, its
    /// protobuf encoding, located `at`), and counts it.
    fn refusal_notice(
        &self,
        at: &str,
        reason: &str,
        raw: &[u8],
        records: &mut RecordBuf,
        refused: &mut Receipt,
    ) {
        let refusal = Refused { source: at, reason, bytes: raw.len() as u64, sha256: sha256(raw) };
        let mut notice = Vec::new();
        refusal_notice(&refusal, now(), &mut notice);
        self.refused_record(at, reason, &notice, records, refused);
    }

    /// Adds `notice` to `records` in the place of a record refused for `reason`, and counts it:
    /// in the metrics, and for the client's `partial_success`.
    fn refused_record(
        &self,
        at: &str,
        reason: &str,
        notice: &[u8],
        records: &mut RecordBuf,
        refused: &mut Receipt,
    ) {
        tracing::warn!(target: "teelog::ship", "{at}: record refused, a signed notice stands in its place: {reason}");
        records.push(notice);
        self.submitter.shared().metrics.records_rejected.fetch_add(1, Ordering::Relaxed);
        refused.rejected += 1;
        refused.first_error.get_or_insert(format!("{at}: {reason}"));
    }

    /// Decodes a body (inflated) as `encoding` says. A plain protobuf body is read in place (see
    /// [`teelog_otlp::WireRequest`]). Before prost builds anything, what decoding takes at most
    /// is taken from the budget (see [`teelog_otlp::decoded_bound`]); a protobuf body with log
    /// records that do not decode is decoded without them, which are then refused alone.
    fn decode(
        &self,
        encoding: Encoding,
        body: Vec<u8>,
        held: &mut Hold,
        source: &'static str,
    ) -> Result<Decoded, BodyError> {
        let bad = |e: teelog_otlp::OtlpError| BodyError::Bad(e.to_string());
        let over = |whole| BodyError::Refused(self.over_budget(source, whole, "the body decodes to"));
        match encoding {
            Encoding::Protobuf => {
                let body = match teelog_otlp::WireRequest::new(body) {
                    Ok(plain) => return Ok(Decoded::Wire(plain)),
                    Err(body) => body,
                };
                let body = &body[..];
                let need = teelog_otlp::decoded_bound(body).map_err(bad)?;
                self.grow(held, need).map_err(over)?;
                match teelog_otlp::decode_protobuf(body) {
                    Ok(request) => Ok(Decoded::Tree { request, undecodable: Vec::new() }),
                    Err(e) => {
                        let undecodable =
                            teelog_otlp::undecodable_records(body, MAX_UNDECODABLE).map_err(bad)?;
                        if undecodable.is_empty() {
                            return Err(bad(e));
                        }
                        let rest = teelog_otlp::without_records(body, &undecodable).map_err(bad)?;
                        let request = teelog_otlp::decode_protobuf(&rest).map_err(|_| bad(e))?;
                        Ok(Decoded::Tree { request, undecodable })
                    }
                }
            }
            Encoding::Json => {
                // An honest OTLP/JSON body decodes to a few times its size; one of empty objects
                // to a hundred times, and is refused once it passes this.
                let need = body.len().saturating_mul(JSON_DECODED_FACTOR).max(BUDGET_STEP);
                let room = self.budget_bytes.saturating_sub(held.used).min(need);
                self.grow(held, room).map_err(over)?;
                match teelog_otlp::decode_json_within(&body, room) {
                    Ok(request) => Ok(Decoded::Tree { request, undecodable: Vec::new() }),
                    Err(teelog_otlp::OtlpError::TooLarge { .. }) => Err(over(true)),
                    Err(e) => Err(bad(e)),
                }
            }
        }
    }
}

fn partial_success(receipt: &Receipt) -> Option<ExportLogsPartialSuccess> {
    (receipt.rejected > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: i64::try_from(receipt.rejected).unwrap_or(i64::MAX),
        error_message: receipt.first_error.clone().unwrap_or_default(),
    })
}

// ---- HTTP ----

/// `google.rpc.Status`, the body of an OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

fn respond(encoding: Encoding, status: StatusCode, protobuf: Vec<u8>, json: String) -> Response {
    let body = match encoding {
        Encoding::Protobuf => protobuf,
        Encoding::Json => json.into_bytes(),
    };
    (status, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

/// An error status: `code` is the gRPC code the OTLP spec pairs with it.
fn error(encoding: Encoding, status: StatusCode, code: i32, message: String) -> Response {
    let json = serde_json::json!({ "code": code, "message": message }).to_string();
    respond(encoding, status, RpcStatus { code, message }.encode_to_vec(), json)
}

async fn export_http(State(ingest): State<Ingest>, headers: HeaderMap, body: Body) -> Response {
    const SOURCE: &str = "otlp-http";
    if !ingest.authorized(headers.get(header::AUTHORIZATION), SOURCE) {
        // UNAUTHENTICATED: clients do not retry it.
        let message = "the request carries no valid bearer token (Authorization: Bearer …)".to_string();
        return error(Encoding::Json, StatusCode::UNAUTHORIZED, 16, message);
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let encoding = match content_type.split(';').next().map(str::trim) {
        Some("application/x-protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        _ => {
            ingest.count_refused(SOURCE, "content_type");
            let message = format!(
                "Content-Type {content_type:?} is not supported: send application/x-protobuf or application/json"
            );
            return error(Encoding::Json, StatusCode::UNSUPPORTED_MEDIA_TYPE, 3, message);
        }
    };
    // The body's bytes are reserved before it is read: its announced length, else the most a
    // body may have.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(ingest.max_request_bytes, |n| n.min(ingest.max_request_bytes));
    let mut held = match ingest.reserve(announced, SOURCE).await {
        Ok(held) => held,
        Err(refusal) => return refused(encoding, refusal),
    };
    let body = match axum::body::to_bytes(body, ingest.max_request_bytes).await {
        Ok(body) if body.len() <= announced => body,
        Ok(body) => {
            ingest.count_refused(SOURCE, "bad_body");
            let message = format!("the body is longer ({} bytes) than its Content-Length", body.len());
            return error(encoding, StatusCode::BAD_REQUEST, 3, message);
        }
        Err(e) => {
            ingest.count_refused(SOURCE, "too_large");
            let message =
                format!("the body cannot be read, or is larger than {} bytes: {e}", ingest.max_request_bytes);
            return error(encoding, StatusCode::PAYLOAD_TOO_LARGE, 3, message);
        }
    };
    let body = match headers.get(header::CONTENT_ENCODING).map(HeaderValue::as_bytes) {
        None | Some(b"identity") => body.to_vec(),
        Some(b"gzip") => match ingest.gunzip(&body, &mut held, SOURCE) {
            Ok(body) => body,
            Err(BodyError::Bad(message)) => {
                ingest.count_refused(SOURCE, "bad_body");
                return error(encoding, StatusCode::BAD_REQUEST, 3, message);
            }
            Err(BodyError::Refused(refusal)) => return refused(encoding, refusal),
        },
        Some(other) => {
            ingest.count_refused(SOURCE, "content_encoding");
            let message = format!(
                "Content-Encoding {:?} is not supported: use gzip or none",
                String::from_utf8_lossy(other)
            );
            return error(encoding, StatusCode::UNSUPPORTED_MEDIA_TYPE, 3, message);
        }
    };
    let key = sha256(&body);
    let request = match ingest.decode(encoding, body, &mut held, SOURCE) {
        Ok(request) => request,
        Err(BodyError::Bad(message)) => {
            ingest.count_refused(SOURCE, "bad_body");
            tracing::warn!(target: "teelog::ship", "{SOURCE}: request refused: {message}");
            return error(encoding, StatusCode::BAD_REQUEST, 3, message);
        }
        Err(BodyError::Refused(refusal)) => return refused(encoding, refusal),
    };
    match ingest.take_once(key, request, SOURCE, held).await {
        Ok(receipt) => {
            let partial = partial_success(&receipt);
            let json = match &partial {
                Some(p) => serde_json::json!({ "partialSuccess": {
                    "rejectedLogRecords": p.rejected_log_records.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => serde_json::json!({}),
            };
            let protobuf = ExportLogsServiceResponse { partial_success: partial }.encode_to_vec();
            respond(encoding, StatusCode::OK, protobuf, json.to_string())
        }
        Err(refusal) => refused(encoding, refusal),
    }
}

/// The answer to a refused request: 503 with `Retry-After` (UNAVAILABLE) when it may pass
/// later, 400 (INVALID_ARGUMENT, which OTLP clients do not retry) when it never will.
fn refused(encoding: Encoding, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Busy(message) => {
            let mut response = error(encoding, StatusCode::SERVICE_UNAVAILABLE, 14, message);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Refusal::TooLarge(message) => error(encoding, StatusCode::BAD_REQUEST, 3, message),
    }
}

/// Why a body was not inflated or decoded: it is not what it says (400, INVALID_ARGUMENT), or
/// the budget refused it.
enum BodyError {
    Bad(String),
    Refused(Refusal),
}

impl Ingest {
    /// Inflates a gzip body, refusing one that grows beyond the request limit (a decompression
    /// bomb); what it inflates to is taken from the budget as it grows.
    fn gunzip(&self, body: &[u8], held: &mut Hold, source: &'static str) -> Result<Vec<u8>, BodyError> {
        let limit = self.max_request_bytes;
        let mut inflating = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
        let mut out = Vec::new();
        loop {
            let step = BUDGET_STEP;
            self.grow(held, step).map_err(|whole| {
                BodyError::Refused(self.over_budget(source, whole, "the inflated body comes to"))
            })?;
            let n = (&mut inflating)
                .take(step as u64)
                .read_to_end(&mut out)
                .map_err(|e| BodyError::Bad(format!("the gzip body cannot be inflated: {e}")))?;
            if out.len() > limit {
                return Err(BodyError::Bad(format!("the inflated body is larger than {limit} bytes")));
            }
            if n < step {
                return Ok(out);
            }
        }
    }
}

/// The OTLP/HTTP receiver (`/v1/logs`, protobuf and JSON) for `ingest`.
pub fn http_router(ingest: Ingest) -> axum::Router {
    let limit = ingest.max_request_bytes;
    axum::Router::new()
        .route("/v1/logs", axum::routing::post(export_http))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingest)
}

// ---- gRPC ----

/// `LogsService/Export`, served by hand rather than by the generated server: that one decodes a
/// request before any code of ours runs, whereas the body must be budgeted and walked first, and
/// its log records decoded one by one if need be, as over HTTP.
#[derive(Clone)]
pub struct GrpcLogs(Ingest);

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

impl tonic::server::NamedService for GrpcLogs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

impl<B> tonic::codegen::Service<axum::http::Request<B>> for GrpcLogs
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                Ok(tonic::Status::unimplemented("only LogsService/Export is served").into_http())
            });
        }
        if !self.0.authorized(request.headers().get(header::AUTHORIZATION), "otlp-grpc") {
            let status = tonic::Status::unauthenticated(
                "the request carries no valid bearer token (authorization: Bearer …)",
            );
            return Box::pin(async { Ok(status.into_http()) });
        }
        let ingest = self.0.clone();
        Box::pin(async move {
            let mut gzip = tonic::codec::EnabledCompressionEncodings::default();
            gzip.enable(tonic::codec::CompressionEncoding::Gzip);
            let limit = ingest.max_request_bytes;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(gzip, tonic::codec::EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(Export(ingest), request).await)
        })
    }
}

/// The export call, on the body's bytes.
struct Export(Ingest);

impl tonic::server::UnaryService<Vec<u8>> for Export {
    type Response = ExportLogsServiceResponse;
    type Future = tonic::codegen::BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Vec<u8>>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move { ingest.export_grpc(request.into_inner()).await })
    }
}

impl Ingest {
    async fn export_grpc(
        &self,
        body: Vec<u8>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        const SOURCE: &str = "otlp-grpc";
        // UNAVAILABLE is what OTLP exporters retry; INVALID_ARGUMENT (a body that is not a
        // request, or can never fit) they do not.
        let refused = |refusal: Refusal| match refusal {
            Refusal::Busy(message) => tonic::Status::unavailable(message),
            Refusal::TooLarge(message) => tonic::Status::invalid_argument(message),
        };
        let mut held = self.reserve(body.len(), SOURCE).await.map_err(refused)?;
        let key = sha256(&body);
        let decoded = match self.decode(Encoding::Protobuf, body, &mut held, SOURCE) {
            Ok(decoded) => decoded,
            Err(BodyError::Bad(message)) => {
                self.count_refused(SOURCE, "bad_body");
                tracing::warn!(target: "teelog::ship", "{SOURCE}: request refused: {message}");
                return Err(tonic::Status::invalid_argument(message));
            }
            Err(BodyError::Refused(refusal)) => return Err(refused(refusal)),
        };
        let receipt = self.take_once(key, decoded, SOURCE, held).await.map_err(refused)?;
        Ok(tonic::Response::new(ExportLogsServiceResponse { partial_success: partial_success(&receipt) }))
    }
}

/// Requests as their bytes; responses encoded by prost.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = ExportLogsServiceResponse;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = ExportLogsServiceResponse;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst).map_err(|e| tonic::Status::internal(format!("cannot encode the response: {e}")))
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        use prost::bytes::Buf;
        let mut body = vec![0; src.remaining()];
        src.copy_to_slice(&mut body);
        Ok(Some(body))
    }
}

/// Serves the OTLP/gRPC logs service for `ingest` on `connections` (plain or TLS) accepted at
/// `addr`, until `stop` turns true.
pub async fn serve_grpc<S, IO>(
    connections: S,
    addr: SocketAddr,
    ingest: Ingest,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio_stream::Stream<Item = std::io::Result<IO>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    let result = tonic::transport::Server::builder()
        .add_service(GrpcLogs(ingest))
        .serve_with_incoming_shutdown(connections, async move {
            let _ = stop.wait_for(|&s| s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(target: "teelog::ship", "gRPC server on {addr} failed: {e}");
    }
}
