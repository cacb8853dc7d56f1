//! `kind = "otlp"`: each batch line exported as one OTLP/HTTP protobuf request
//! (`teelog_otlp::export_batch`, docs/FORMAT.md §13.3), e.g. to an OpenTelemetry Collector or to
//! Loki's `/otlp/v1/logs`.
//!
//! Attestation document lines and gateway checkpoints are not sent: the OTLP export format carries batches and records
//! only. A verifier at the far end needs the documents from elsewhere (the spool kept with
//! `spool.keep`, or a `store` sink).

use std::future::Future;
use std::pin::Pin;

use prost::Message;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use teelog_loki::{error_chain, http_client, read_message, ClientOptions, RetryAfter};
use teelog_otlp::{encode_protobuf, export_batch, ExportLogsServiceResponse};

use super::{http_kind, is_attestation_line, retry_delay, OpenError, Progress};
use crate::config::OtlpSinkConfig;
use crate::delivery::{Delivery, Sink, SinkError};

const PROTOBUF: &str = "application/x-protobuf";
/// An answer is a status and a short message; more than this is not read.
const RESPONSE_LIMIT: usize = 1 << 20;

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer (only its message is wanted).
#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(string, tag = "2")]
    message: String,
}

/// Exports spooled batches to an OTLP/HTTP logs endpoint (docs/FORMAT.md §13.3).
pub struct OtlpSink {
    http: reqwest::Client,
    url: String,
    resource: Vec<(String, String)>,
    progress: Progress,
}

impl OtlpSink {
    /// A sink for `config`; fails on a URL that does not parse or a client that cannot be built.
    pub fn open(config: &OtlpSinkConfig) -> Result<Self, OpenError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| OpenError::Url { url: config.url.clone(), reason: e.to_string() })?;
        let options = ClientOptions {
            bearer_token: config.bearer_token.as_ref().map(|t| t.0.clone()),
            timeout: config.timeout,
            extra_headers: config.headers.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
            ..ClientOptions::default()
        };
        let http = http_client(&url, &options)?;
        let mut resource = config.resource.clone();
        resource.entry("service.name".into()).or_insert_with(|| "teelog".into());
        Ok(Self {
            http,
            url: config.url.clone(),
            resource: resource.into_iter().collect(),
            progress: Progress::default(),
        })
    }

    async fn deliver_chunk(&mut self, chunk: &Delivery<'_>) -> Result<(), SinkError> {
        let start = self.progress.resume(chunk);
        for (at, entry) in chunk.entries.iter().enumerate().skip(start) {
            let line = entry.line;
            if !is_attestation_line(line) && !teelog_core::checkpoint::is_checkpoint_line(line) {
                let sent = match export_batch(line, &self.resource) {
                    Ok(request) => self.export(encode_protobuf(&request)).await,
                    Err(e) => {
                        Err(SinkError::permanent("invalid_line", format!("a line cannot be exported: {e}")))
                    }
                };
                match sent {
                    Err(e) if e.retryable => return Err(e),
                    Err(e) => self.progress.refuse(e),
                    Ok(()) => {}
                }
            }
            self.progress.settled(at + 1);
        }
        self.progress.finish()
    }

    /// Sends one request and classifies the answer as the OTLP/HTTP specification does.
    async fn export(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let response =
            self.http.post(&self.url).header(CONTENT_TYPE, PROTOBUF).body(body).send().await.map_err(
                |e| SinkError::retry("connect", format!("could not reach {}: {}", self.url, error_chain(&e))),
            )?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(RetryAfter::parse);
        let protobuf = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(PROTOBUF.as_bytes()));
        let body = read_message(response, RESPONSE_LIMIT).await;
        match status {
            200..=299 => partial_success(&body),
            // The only retryable answers (OTLP/HTTP, "Retryable Response Codes").
            429 | 502 | 503 | 504 => Err(SinkError::retry(
                http_kind(Some(status)),
                format!("the collector answered HTTP {status}: {}", message(&body, protobuf)),
            )
            .after(retry_delay(retry_after))),
            _ => Err(SinkError::permanent(
                http_kind(Some(status)),
                format!("the collector refused the export with HTTP {status}: {}", message(&body, protobuf)),
            )),
        }
    }
}

/// A success may still say that some log records were refused; per the specification they
/// must not be sent again.
fn partial_success(body: &[u8]) -> Result<(), SinkError> {
    let Ok(response) = ExportLogsServiceResponse::decode(body) else { return Ok(()) };
    match response.partial_success {
        Some(p) if p.rejected_log_records > 0 => Err(SinkError::permanent(
            "partial",
            format!("the collector refused {} log records: {}", p.rejected_log_records, p.error_message),
        )),
        _ => Ok(()),
    }
}

/// An error answer's message: a `google.rpc.Status` for protobuf, else the text.
fn message(body: &[u8], protobuf: bool) -> String {
    let status = protobuf.then(|| Status::decode(body).ok()).flatten().filter(|s| !s.message.is_empty());
    let text = match status {
        Some(status) => status.message,
        None => String::from_utf8_lossy(body).trim().to_string(),
    };
    if text.is_empty() {
        "(no message)".into()
    } else {
        text
    }
}

impl Sink for OtlpSink {
    fn deliver<'a>(
        &'a mut self,
        chunk: &'a Delivery<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>> {
        Box::pin(self.deliver_chunk(chunk))
    }
}
