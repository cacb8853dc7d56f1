//! `POST /v1/batches`: NDJSON of batch and attestation lines, answered once they are durable with
//! what the gateway found (`200` and a JSON summary). Requests that cannot be taken get a 4xx
//! naming the problem, and a log line.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use teelog_deliver::serve::{BudgetExhausted, ByteBudget, Reserved};

use crate::ingest::Ingest;
use crate::Access;

/// Where batch lines are `POST`ed.
pub const PATH: &str = "/v1/batches";
/// The content types taken: one line per batch.
const CONTENT_TYPES: [&str; 3] = ["application/x-ndjson", "application/jsonl", "application/json"];

#[derive(Clone)]
struct App {
    ingest: Ingest,
    access: Arc<Access>,
    /// Requests so far: each request's lines are named `http request N:LINE`.
    requests: Arc<std::sync::atomic::AtomicU64>,
}

/// The HTTP listener's routes: [`PATH`] only.
pub fn router(ingest: Ingest, access: Arc<Access>) -> axum::Router {
    let app = App { ingest, access, requests: Arc::default() };
    axum::Router::new().route(PATH, axum::routing::post(batches)).with_state(app)
}

#[derive(Deserialize)]
struct Params {
    /// The stream the client says the body's lines are of: lines that are not batches are filed
    /// under it. Documents go with the first batch that verifies under them, whatever it says.
    stream: Option<String>,
}

async fn batches(
    State(app): State<App>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let refuse = |status: StatusCode, reason: &'static str, message: String| {
        tracing::warn!(target: "teelog::gateway", status = status.as_u16(), "http: refused a request: {message}");
        app.access.metrics.refused("http", reason);
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !app.access.token_ok(token) {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required".into());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !CONTENT_TYPES.contains(&essence.as_str()) {
        let message =
            format!("content type {content_type:?}: send batch lines as {}", CONTENT_TYPES.join(", "));
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type", message);
    }
    let stream = match params {
        Ok(Query(Params { stream: Some(stream) })) => match teelog_core::batch::check_stream_name(&stream) {
            Ok(()) => Some(Arc::<str>::from(stream.as_str())),
            Err(e) => {
                return refuse(StatusCode::BAD_REQUEST, "bad_request", format!("query parameter stream: {e}"))
            }
        },
        Ok(Query(Params { stream: None })) => None,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad_request", format!("query: {e}")),
    };
    let max = app.access.max_frame_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|&n| n > max as u64) {
        let message = format!("the body is {declared} bytes, more than the {max} allowed");
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message);
    }
    // The body and the lines copied out of it are held until the writer has them: twice its
    // bytes come out of the listener's memory budget as they arrive.
    let mut reserved = Reserved::default();
    let timeout = app.access.request_timeout;
    let read = tokio::time::timeout(timeout, read_body(body, max, &app.access.memory, &mut reserved));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => {
            let message = format!("the body is larger than the {max} bytes allowed");
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message);
        }
        Ok(Err(BodyError::Memory(e))) => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "memory", e.to_string());
        }
        Ok(Err(BodyError::Read(e))) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body could not be read: {e}"),
            );
        }
        Err(_) => {
            let message = format!("the body did not arrive within {timeout:?}");
            return refuse(StatusCode::REQUEST_TIMEOUT, "timeout", message);
        }
    };
    // Blank lines are kept here, so that findings name lines by their place in the body; the
    // writer skips them.
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let lines: Vec<Vec<u8>> =
        body.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line).to_vec()).collect();
    drop(bytes);
    if lines.iter().all(|line| teelog_core::record::is_blank(line)) {
        return refuse(StatusCode::BAD_REQUEST, "bad_request", "the body holds no lines".into());
    }
    let n = app.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let source: Arc<str> = format!("http request {n}").into();
    match app.ingest.submit(lines, source, 1, stream).await {
        Ok(outcome) => (StatusCode::OK, axum::Json(outcome)).into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "error": e.to_string() })))
                .into_response()
        }
    }
}

/// How long a request waits for memory held by others before it is answered 503.
const MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

enum BodyError {
    TooLarge,
    Memory(BudgetExhausted),
    Read(axum::Error),
}

/// Reads `body`, at most `max` bytes, reserving twice what it holds from `memory` as it grows.
async fn read_body(
    body: Body,
    max: usize,
    memory: &ByteBudget,
    reserved: &mut Reserved,
) -> Result<Vec<u8>, BodyError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame.map_err(BodyError::Read)?.into_data() else { continue };
        let len = bytes.len().saturating_add(chunk.len());
        if len > max {
            return Err(BodyError::TooLarge);
        }
        memory.reserve(reserved, 2 * len, MEMORY_WAIT).await.map_err(BodyError::Memory)?;
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
