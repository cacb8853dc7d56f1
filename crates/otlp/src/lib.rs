//! OTLP logs for teelog, sans-IO: OTLP/protobuf and OTLP/JSON request bodies decoded into the
//! `opentelemetry-proto` message types, each log record mapped to one teelog input record (ready
//! for `BatchBuilder::push_input`), and signed batch lines turned back into OTLP for an export sink.
//! The mapping is specified in docs/FORMAT.md §13.
//!
//! The daemon needs nothing else from OpenTelemetry: the request and response types and the tonic
//! `logs_service_server` are re-exported here.
#![forbid(unsafe_code)]

mod export;
mod json;
mod map;
mod view;
mod wire;

use prost::Message;

pub use export::{attributes, export_batch, ExportError};
pub use json::{decode_json, decode_json_within};
pub use map::{for_each_mapped, for_each_record, Fault, MapError, Mapped};
pub use view::{LogRecordRef, RequestRef, WireRequest};
pub use wire::{decoded_bound, undecodable_records, without_records, BadRecord};

/// `ExportLogsServiceRequest`, `ExportLogsServiceResponse`, `ExportLogsPartialSuccess` and the
/// tonic `logs_service_server` (and `_client`).
pub use opentelemetry_proto::tonic::collector::logs::v1 as collector;
/// `AnyValue`, `KeyValue`, `InstrumentationScope`, …
pub use opentelemetry_proto::tonic::common::v1 as common;
/// `ResourceLogs`, `ScopeLogs`, `LogRecord`, `SeverityNumber`.
pub use opentelemetry_proto::tonic::logs::v1 as logs;
/// `Resource`.
pub use opentelemetry_proto::tonic::resource::v1 as resource;

pub use collector::{ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse};

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// prost's message names the field path, e.g. `LogRecord.severity_text: invalid string value:
    /// data is not UTF-8 encoded`.
    #[error("not a valid OTLP/protobuf ExportLogsServiceRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// serde_json's message names the field and the line and column.
    #[error("not a valid OTLP/JSON ExportLogsServiceRequest: {0}")]
    Json(#[from] serde_json::Error),
    /// What the wire walk found wrong (see `decoded_bound`).
    #[error("not a valid OTLP/protobuf ExportLogsServiceRequest: {0}")]
    Wire(&'static str),
    /// Decoding would take more memory than it was given.
    #[error("the body decodes to more than the {limit} bytes a request may take")]
    TooLarge {
        /// The bytes the request may take.
        limit: usize,
    },
}

/// Decodes an OTLP/protobuf (`application/x-protobuf`) request body. Strings that are not UTF-8,
/// truncated or garbled messages, and nesting deeper than prost's recursion limit are refused.
pub fn decode_protobuf(body: &[u8]) -> Result<ExportLogsServiceRequest, OtlpError> {
    Ok(ExportLogsServiceRequest::decode(body)?)
}

/// Encodes a request as OTLP/protobuf, e.g. for the export sink.
pub fn encode_protobuf(request: &ExportLogsServiceRequest) -> Vec<u8> {
    request.encode_to_vec()
}
