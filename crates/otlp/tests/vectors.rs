//! The OTLP test vector of docs/FORMAT.md §13.4, rebuilt from its request and compared byte for
//! byte. `TEELOG_WRITE_VECTORS=1 cargo test -p teelog-otlp --test vectors` rewrites it after a
//! deliberate change of the mapping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::path::PathBuf;

use common::{canonical, NOW};
use serde::{Deserialize, Serialize};
use teelog_core::timestamp::format_rfc3339;
use teelog_otlp::{decode_json, decode_protobuf, encode_protobuf};

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct OtlpVector {
    comment: String,
    /// The time the signer gives records without one.
    now: String,
    /// An OTLP/JSON ExportLogsServiceRequest.
    request: serde_json::Value,
    /// The same request as OTLP/protobuf.
    request_protobuf_hex: String,
    /// The canonical bytes each log record becomes, in request order.
    records: Vec<String>,
}

/// Three log records under one resource, in two scopes: every LogRecord field, every AnyValue
/// kind, integers either side of 2^53, non-finite doubles, bytes, escapes, both time fallbacks.
const REQUEST: &str = r#"{"resourceLogs":[{
  "resource":{"attributes":[
      {"key":"service.name","value":{"stringValue":"payments"}},
      {"key":"service.instance.id","value":{"stringValue":"i-0a1b2c"}}],
    "droppedAttributesCount":1,
    "entityRefs":[{"type":"service","idKeys":["service.name","service.instance.id"]}]},
  "schemaUrl":"https://opentelemetry.io/schemas/1.30.0",
  "scopeLogs":[
    {"scope":{"name":"audit","version":"1.4.0","attributes":[{"key":"audit.schema.version","value":{"stringValue":"2"}}]},
     "logRecords":[
      {"timeUnixNano":"1796202000000000001","observedTimeUnixNano":"1796202000250000000",
       "severityNumber":9,"severityText":"Information",
       "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","flags":1,
       "eventName":"payment.refund","droppedAttributesCount":2,
       "body":{"stringValue":"refund issued: caf\u00e9 \"7\"\ttab"},
       "attributes":[
        {"key":"audit.actor.id","value":{"stringValue":"alice"}},
        {"key":"amount","value":{"doubleValue":12.5}},
        {"key":"approved","value":{"boolValue":true}},
        {"key":"order","value":{"intValue":"9007199254740993"}},
        {"key":"count","value":{"intValue":3}},
        {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"-9007199254740992"}]}}},
        {"key":"unset"}]},
      {"observedTimeUnixNano":"1796202001000000000","severityNumber":18,
       "body":{"kvlistValue":{"values":[
        {"key":"digest","value":{"bytesValue":"3q2+7w=="}},
        {"key":"ratio","value":{"doubleValue":"NaN"}},
        {"key":"limit","value":{"doubleValue":"Infinity"}},
        {"key":"floor","value":{"doubleValue":"-Infinity"}},
        {"key":"small","value":{"doubleValue":1e-7}},
        {"key":"empty","value":{}},
        {"key":"nested","value":{"kvlistValue":{"values":[{"key":"\u20ac","value":{"arrayValue":{}}}]}}}]}}}]},
    {"schemaUrl":"https://example.com/scope",
     "logRecords":[{"severityNumber":21,"body":{"arrayValue":{"values":[{"boolValue":false},{}]}}}]}]}]}"#;

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/otlp-v1.json")
}

fn build(request_json: &serde_json::Value) -> OtlpVector {
    let request = decode_json(&serde_json::to_vec(request_json).unwrap()).unwrap();
    let protobuf = encode_protobuf(&request);
    let records = canonical(&request);
    // The protobuf spelling of the request maps to the same records.
    assert_eq!(canonical(&decode_protobuf(&protobuf).unwrap()), records);
    OtlpVector {
        comment: "teelog OTLP mapping test vector (docs/FORMAT.md §13): one OTLP/JSON request, the same as \
                  OTLP/protobuf, and the canonical record each log record becomes."
            .into(),
        now: format_rfc3339(NOW),
        request: request_json.clone(),
        request_protobuf_hex: hex::encode(protobuf),
        records,
    }
}

#[test]
fn otlp_vector_rebuilds_byte_for_byte() {
    let source: serde_json::Value = serde_json::from_str(REQUEST).unwrap();
    if std::env::var_os("TEELOG_WRITE_VECTORS").is_some() {
        let vector = build(&source);
        std::fs::write(path(), serde_json::to_string_pretty(&vector).unwrap() + "\n").unwrap();
        return;
    }
    let recorded: OtlpVector = serde_json::from_slice(
        &std::fs::read(path()).expect("docs/vectors/otlp-v1.json"),
    )
    .expect(
        "otlp-v1.json has the vector layout; after a mapping change rewrite it with TEELOG_WRITE_VECTORS=1",
    );
    assert_eq!(recorded.request, source, "the vector's request is not the one in this test");
    assert_eq!(recorded.now, format_rfc3339(NOW));
    // From the recorded request alone, the recorded bytes.
    let rebuilt = build(&recorded.request);
    assert_eq!(rebuilt, recorded, "the implementation no longer produces the recorded bytes");
    let from_protobuf = decode_protobuf(&hex::decode(&recorded.request_protobuf_hex).unwrap()).unwrap();
    assert_eq!(canonical(&from_protobuf), recorded.records);
    assert_eq!(recorded.records.len(), 3);
}
