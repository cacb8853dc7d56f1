//! OTLP logs in: HTTP (`POST /v1/logs`, protobuf or JSON, optionally gzip) and gRPC
//! (`LogsService/Export`). A request is answered only once its records are in the spool.

use std::io::Read;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use teelog_otlp::collector::logs_service_server::{LogsService, LogsServiceServer};
use teelog_otlp::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse};
use tokio::sync::watch;

use std::sync::atomic::Ordering;

use teelog_core::merkle::sha256;
use teelog_core::record::{refusal_notice, Refused};
use teelog_otlp::Mapped;

use crate::pipeline::{Origin, Receipt, RecordBuf, SubmitError, Submitter};
use teelog_deliver::clock::now;

/// What the HTTP and gRPC endpoints share.
#[derive(Clone)]
pub struct Ingest {
    submitter: Submitter,
    max_request_bytes: usize,
}

/// Why a request was not taken: the signer is busy or stopping; retry later. (A record the
/// mapping refuses does not refuse its request: a notice takes its place.)
struct Busy(String);

impl Ingest {
    /// Takes OTLP requests of at most `max_request_bytes` (after decompression) for `submitter`.
    pub fn new(submitter: Submitter, max_request_bytes: usize) -> Self {
        Self { submitter, max_request_bytes }
    }

    /// Counts a request refused for `reason`, among the listeners' metrics the spool keeps.
    fn count_refused(&self, source: &str, reason: &str) {
        self.submitter.shared().spool.metrics.refused(source, reason);
    }

    /// Maps every record of the request and submits them together.
    async fn take(&self, request: &ExportLogsServiceRequest, source: &'static str) -> Result<Receipt, Busy> {
        let mut records = RecordBuf::default();
        let mut scratch = Vec::new();
        // A record the mapping refuses is not lost: a signed notice takes its place, and the
        // client is told in `partial_success`.
        let mut refused = Receipt::default();
        let mut notice = Vec::new();
        let mapped = teelog_otlp::for_each_mapped(request, &mut scratch, |mapped| {
            match mapped {
                Mapped::Record { record, .. } => records.push(record),
                Mapped::Refused { path, fault, log_record } => {
                    let error = format!("{path}: {fault}");
                    tracing::warn!(target: "teelog::ship", "{source}: record refused, a signed notice stands in its place: {error}");
                    let raw = log_record.encode_to_vec();
                    let refusal = Refused {
                        source: &format!("{source} {path}"),
                        reason: &fault.to_string(),
                        bytes: raw.len() as u64,
                        sha256: sha256(&raw),
                    };
                    notice.clear();
                    refusal_notice(&refusal, now(), &mut notice);
                    records.push(&notice);
                    self.submitter.shared().metrics.records_rejected.fetch_add(1, Ordering::Relaxed);
                    refused.rejected += 1;
                    refused.first_error.get_or_insert(error);
                }
                // No record to stand for.
                Mapped::Empty { path, fault } => {
                    tracing::warn!(target: "teelog::ship", "{source}: {path}: {fault}; it has no log records");
                }
            }
            Ok::<(), std::convert::Infallible>(())
        });
        let Ok(()) = mapped;
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

    fn refuse(&self, source: &'static str, reason: &str, why: String) -> Busy {
        self.count_refused(source, reason);
        tracing::warn!(target: "teelog::ship", "{source}: request refused ({reason}): {why}");
        Busy(why)
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

async fn export_http(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    const SOURCE: &str = "otlp-http";
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
    let body = match headers.get(header::CONTENT_ENCODING).map(HeaderValue::as_bytes) {
        None | Some(b"identity") => body.to_vec(),
        Some(b"gzip") => match gunzip(&body, ingest.max_request_bytes) {
            Ok(body) => body,
            Err(message) => {
                ingest.count_refused(SOURCE, "bad_body");
                return error(encoding, StatusCode::BAD_REQUEST, 3, message);
            }
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
    let request = match encoding {
        Encoding::Protobuf => teelog_otlp::decode_protobuf(&body),
        Encoding::Json => teelog_otlp::decode_json(&body),
    };
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            ingest.count_refused(SOURCE, "bad_body");
            tracing::warn!(target: "teelog::ship", "{SOURCE}: request refused: {e}");
            return error(encoding, StatusCode::BAD_REQUEST, 3, e.to_string());
        }
    };
    match ingest.take(&request, SOURCE).await {
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
        Err(Busy(message)) => {
            let mut response = error(encoding, StatusCode::SERVICE_UNAVAILABLE, 14, message);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// Inflates a gzip body, refusing one that grows beyond `limit` (a decompression bomb).
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the gzip body cannot be inflated: {e}"))?;
    if out.len() > limit {
        return Err(format!("the inflated body is larger than {limit} bytes"));
    }
    Ok(out)
}

/// The OTLP/HTTP routes: `POST /v1/logs`, protobuf or JSON, optionally gzip-compressed.
pub fn http_router(ingest: Ingest) -> axum::Router {
    let limit = ingest.max_request_bytes;
    axum::Router::new()
        .route("/v1/logs", axum::routing::post(export_http))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingest)
}

// ---- gRPC ----

#[tonic::async_trait]
impl LogsService for Ingest {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        match self.take(request.get_ref(), "otlp-grpc").await {
            Ok(receipt) => Ok(tonic::Response::new(ExportLogsServiceResponse {
                partial_success: partial_success(&receipt),
            })),
            // UNAVAILABLE is what OTLP exporters retry.
            Err(Busy(message)) => Err(tonic::Status::unavailable(message)),
        }
    }
}

/// Serves OTLP/gRPC's `LogsService` on `listener` until `stop` turns true.
pub async fn serve_grpc(listener: tokio::net::TcpListener, ingest: Ingest, mut stop: watch::Receiver<bool>) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let limit = ingest.max_request_bytes;
    let service = LogsServiceServer::new(ingest)
        .max_decoding_message_size(limit)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|&s| s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(target: "teelog::ship", "gRPC server on {addr:?} failed: {e}");
    }
}
