//! Decoding OTLP/JSON and OTLP/protobuf request bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use common::*;
use teelog_otlp::common::any_value::Value;
use teelog_otlp::common::{AnyValue, InstrumentationScope, KeyValue};
use teelog_otlp::logs::{LogRecord, ResourceLogs, ScopeLogs};
use teelog_otlp::resource::Resource;
use teelog_otlp::{decode_json, decode_protobuf, encode_protobuf, ExportLogsServiceRequest, OtlpError};

/// The structure and values of `examples/logs.json` in open-telemetry/opentelemetry-proto, the
/// spec's OTLP/JSON logs example, written compactly.
const SPEC_EXAMPLE: &str = r#"{"resourceLogs":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
  "scopeLogs":[{
    "scope":{"name":"my.library","version":"1.0.0",
      "attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},
    "logRecords":[{
      "timeUnixNano":"1544712660300000000","observedTimeUnixNano":"1544712660300000000",
      "severityNumber":10,"severityText":"Information",
      "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
      "body":{"stringValue":"Example log record"},
      "attributes":[
        {"key":"string.attribute","value":{"stringValue":"some string"}},
        {"key":"boolean.attribute","value":{"boolValue":true}},
        {"key":"int.attribute","value":{"intValue":"10"}},
        {"key":"double.attribute","value":{"doubleValue":637.704}},
        {"key":"array.attribute","value":{"arrayValue":{"values":[{"stringValue":"many"},{"stringValue":"values"}]}}},
        {"key":"map.attribute","value":{"kvlistValue":{"values":[{"key":"some.map.key","value":{"stringValue":"some value"}}]}}}
      ]}]}]}]}"#;

fn spec_example_struct() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s("my.service"))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "my.library".into(),
                    version: "1.0.0".into(),
                    attributes: vec![kv("my.scope.attribute", s("some scope attribute"))],
                    dropped_attributes_count: 0,
                }),
                log_records: vec![LogRecord {
                    time_unix_nano: 1_544_712_660_300_000_000,
                    observed_time_unix_nano: 1_544_712_660_300_000_000,
                    severity_number: 10,
                    severity_text: "Information".into(),
                    trace_id: hex::decode("5b8efff798038103d269b633813fc60c").unwrap(),
                    span_id: hex::decode("eee19b7ec3c1b174").unwrap(),
                    body: Some(s("Example log record")),
                    attributes: vec![
                        kv("string.attribute", s("some string")),
                        kv("boolean.attribute", val(Value::BoolValue(true))),
                        kv("int.attribute", int(10)),
                        kv("double.attribute", double(637.704)),
                        kv("array.attribute", array(vec![s("many"), s("values")])),
                        kv("map.attribute", kvlist(vec![kv("some.map.key", s("some value"))])),
                    ],
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn json_err(body: &str) -> String {
    match decode_json(body.as_bytes()) {
        Ok(request) => panic!("{body} decoded to {request:?}"),
        Err(e @ OtlpError::Json(_)) => e.to_string(),
        Err(e) => panic!("{body}: wrong error kind {e}"),
    }
}

/// A request with one log record given as JSON members.
fn one_record(members: &str) -> String {
    format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{{members}}}]}}]}}]}}"#)
}

fn record_of(request: &ExportLogsServiceRequest) -> &LogRecord {
    &request.resource_logs[0].scope_logs[0].log_records[0]
}

fn decode_record(members: &str) -> LogRecord {
    record_of(&decode_json(one_record(members).as_bytes()).unwrap()).clone()
}

#[test]
fn spec_example_decodes_field_for_field() {
    assert_eq!(decode_json(SPEC_EXAMPLE.as_bytes()).unwrap(), spec_example_struct());
}

#[test]
fn spec_example_maps_to_this_record() {
    let request = decode_json(SPEC_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(
        canonical(&request),
        [concat!(
            r#"{"attributes":{"array.attribute":["many","values"],"boolean.attribute":true,"#,
            r#""double.attribute":637.704,"int.attribute":10,"map.attribute":{"some.map.key":"some value"},"#,
            r#""string.attribute":"some string"},"level":"Information","message":"Example log record","#,
            r#""observed_ts":"2018-12-13T14:51:00.300000000Z","resource":{"attributes":{"service.name":"my.service"}},"#,
            r#""scope":{"attributes":{"my.scope.attribute":"some scope attribute"},"name":"my.library","version":"1.0.0"},"#,
            r#""severity_number":10,"span_id":"eee19b7ec3c1b174","trace_id":"5b8efff798038103d269b633813fc60c","#,
            r#""ts":"2018-12-13T14:51:00.300000000Z"}"#
        )]
    );
}

#[test]
fn proto_field_names_are_accepted_too() {
    let snake = SPEC_EXAMPLE
        .replace("resourceLogs", "resource_logs")
        .replace("scopeLogs", "scope_logs")
        .replace("logRecords", "log_records")
        .replace("observedTimeUnixNano", "observed_time_unix_nano")
        .replace("timeUnixNano", "time_unix_nano")
        .replace("severityNumber", "severity_number")
        .replace("severityText", "severity_text")
        .replace("traceId", "trace_id")
        .replace("spanId", "span_id")
        .replace("stringValue", "string_value")
        .replace("boolValue", "bool_value")
        .replace("intValue", "int_value")
        .replace("doubleValue", "double_value")
        .replace("arrayValue", "array_value")
        .replace("kvlistValue", "kvlist_value");
    assert!(!snake.contains("Value\""), "every camelCase name replaced");
    assert_eq!(decode_json(snake.as_bytes()).unwrap(), spec_example_struct());
    let rest = decode_record(
        r#""dropped_attributes_count":3,"event_name":"e","flags":1,"body":{"bytes_value":"AQ=="}"#,
    );
    assert_eq!((rest.dropped_attributes_count, rest.event_name.as_str(), rest.flags), (3, "e", 1));
    assert_eq!(rest.body, Some(val(Value::BytesValue(vec![1]))));
}

#[test]
fn every_log_record_field() {
    let record = decode_record(concat!(
        r#""timeUnixNano":"1","observedTimeUnixNano":2,"severityNumber":17,"severityText":"E","#,
        r#""body":{"kvlistValue":{"values":[{"key":"k","value":{"intValue":-5}}]}},"#,
        r#""attributes":[{"key":"a"}],"droppedAttributesCount":4,"flags":257,"#,
        r#""traceId":"000102030405060708090a0b0c0d0e0f","spanId":"0001020304050607","eventName":"ev""#
    ));
    assert_eq!(
        record,
        LogRecord {
            time_unix_nano: 1,
            observed_time_unix_nano: 2,
            severity_number: 17,
            severity_text: "E".into(),
            body: Some(kvlist(vec![kv("k", int(-5))])),
            attributes: vec![KeyValue { key: "a".into(), value: None, key_strindex: 0 }],
            dropped_attributes_count: 4,
            flags: 257,
            trace_id: (0..16).collect(),
            span_id: (0..8).collect(),
            event_name: "ev".into(),
        }
    );
}

#[test]
fn resource_and_scope_fields() {
    let request = decode_json(
        concat!(
            r#"{"resourceLogs":[{"resource":{"attributes":[],"droppedAttributesCount":"2","#,
            r#""entityRefs":[{"schemaUrl":"u","type":"service","idKeys":["service.name"],"descriptionKeys":["d"]}]},"#,
            r#""schemaUrl":"https://opentelemetry.io/schemas/1.30.0","#,
            r#""scopeLogs":[{"scope":{"name":"n","version":"v","droppedAttributesCount":1},"schemaUrl":"s","logRecords":[]}]}]}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let rl = &request.resource_logs[0];
    let resource = rl.resource.as_ref().unwrap();
    assert_eq!(resource.dropped_attributes_count, 2);
    assert_eq!(resource.entity_refs[0].r#type, "service");
    assert_eq!(resource.entity_refs[0].id_keys, ["service.name"]);
    assert_eq!(resource.entity_refs[0].description_keys, ["d"]);
    assert_eq!(resource.entity_refs[0].schema_url, "u");
    assert_eq!(rl.schema_url, "https://opentelemetry.io/schemas/1.30.0");
    let sl = &rl.scope_logs[0];
    let scope = sl.scope.as_ref().unwrap();
    assert_eq!((scope.name.as_str(), scope.version.as_str(), scope.dropped_attributes_count), ("n", "v", 1));
    assert_eq!(sl.schema_url, "s");
}

#[test]
fn every_any_value_kind() {
    let body = |value: &str| decode_record(&format!(r#""body":{value}"#)).body.unwrap();
    assert_eq!(body(r#"{"stringValue":"x"}"#), s("x"));
    assert_eq!(body(r#"{"boolValue":false}"#), val(Value::BoolValue(false)));
    assert_eq!(body(r#"{"intValue":"-9223372036854775808"}"#), int(i64::MIN));
    assert_eq!(body(r#"{"intValue":9223372036854775807}"#), int(i64::MAX));
    assert_eq!(body(r#"{"intValue":"1e3"}"#), int(1000));
    assert_eq!(body(r#"{"intValue":2.0}"#), int(2));
    assert_eq!(body(r#"{"doubleValue":-1.5e300}"#), double(-1.5e300));
    assert_eq!(body(r#"{"doubleValue":3}"#), double(3.0));
    assert_eq!(body(r#"{"doubleValue":"2.5"}"#), double(2.5));
    assert_eq!(body(r#"{"doubleValue":"Infinity"}"#), double(f64::INFINITY));
    assert_eq!(body(r#"{"doubleValue":"-Infinity"}"#), double(f64::NEG_INFINITY));
    match body(r#"{"doubleValue":"NaN"}"#).value {
        Some(Value::DoubleValue(d)) => assert!(d.is_nan()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        body(r#"{"arrayValue":{"values":[{"intValue":"1"},{}]}}"#),
        array(vec![int(1), AnyValue::default()])
    );
    assert_eq!(body(r#"{"arrayValue":{}}"#), array(vec![]));
    assert_eq!(body(r#"{"kvlistValue":{"values":[]}}"#), kvlist(vec![]));
    // proto3 JSON bytes: standard or URL-safe base64, padded or not.
    for b64 in [r#""+/8=""#, r#""+/8""#, r#""-_8=""#, r#""-_8""#] {
        assert_eq!(body(&format!(r#"{{"bytesValue":{b64}}}"#)), val(Value::BytesValue(vec![0xfb, 0xff])));
    }
    assert_eq!(body(r#"{"stringValueStrindex":7}"#), val(Value::StringValueStrindex(7)));
    assert_eq!(body("{}"), AnyValue::default());
}

#[test]
fn nulls_and_unknown_members_change_nothing() {
    let record = decode_record(concat!(
        r#""timeUnixNano":null,"severityText":null,"body":{"stringValue":null,"intValue":"3"},"#,
        r#""attributes":null,"traceId":null,"future":{"deeply":[{"nested":true}]},"other":[1,"2",null]"#
    ));
    assert_eq!(record, LogRecord { body: Some(int(3)), ..Default::default() });
    let request = decode_json(br#"{"resourceLogs":null,"x":1}"#).unwrap();
    assert_eq!(request, ExportLogsServiceRequest::default());
    assert_eq!(decode_json(b" {} \n").unwrap(), ExportLogsServiceRequest::default());
}

#[test]
fn ids_are_hex_in_either_case_and_integers_in_either_form() {
    let record = decode_record(
        r#""traceId":"aBcDeF00000000000000000000000000","spanId":"","timeUnixNano":18446744073709551615"#,
    );
    assert_eq!(&record.trace_id[..3], [0xab, 0xcd, 0xef]);
    assert!(record.span_id.is_empty());
    assert_eq!(record.time_unix_nano, u64::MAX);
    let named = decode_record(r#""severityNumber":"SEVERITY_NUMBER_WARN3""#);
    assert_eq!(named.severity_number, 15);
    assert_eq!(decode_record(r#""severityNumber":"21""#).severity_number, 21);
}

#[test]
fn wrong_json_is_refused_with_what_and_where() {
    for (members, why) in [
        (r#""traceId":"xyz0""#, "LogRecord.traceId: \"xyz0\" is not an even number of hex digits"),
        (r#""traceId":"abc""#, "LogRecord.traceId"),
        (r#""traceId":"5B8EFFF798038103D269B633813FC60C=""#, "LogRecord.traceId"),
        (r#""traceId":12"#, "expected LogRecord.traceId as a string of hex digits"),
        (r#""timeUnixNano":"-1""#, "LogRecord.timeUnixNano: -1 is out of range"),
        (
            r#""timeUnixNano":"18446744073709551616""#,
            "LogRecord.timeUnixNano: 18446744073709551616 is out of range",
        ),
        (r#""timeUnixNano":1.5"#, "LogRecord.timeUnixNano: 1.5 is not an integer"),
        (r#""timeUnixNano":"soon""#, "LogRecord.timeUnixNano: \"soon\" is not an integer"),
        (r#""timeUnixNano":true"#, "expected LogRecord.timeUnixNano as an integer"),
        (r#""flags":4294967296"#, "LogRecord.flags: 4294967296 is out of range"),
        (r#""severityNumber":"LOUD""#, "LogRecord.severityNumber: \"LOUD\" is not an integer"),
        (r#""severityText":5"#, "expected LogRecord.severityText as a string"),
        (r#""body":"text""#, "expected an OTLP AnyValue object"),
        (r#""body":{"boolValue":"true"}"#, "expected AnyValue.boolValue as true or false"),
        (r#""body":{"doubleValue":"nan"}"#, "AnyValue.doubleValue: \"nan\" is not a number"),
        (r#""body":{"doubleValue":"inf"}"#, "AnyValue.doubleValue: \"inf\" is not a number"),
        (
            r#""body":{"intValue":"9223372036854775808"}"#,
            "AnyValue.intValue: 9223372036854775808 is out of range",
        ),
        (r#""body":{"bytesValue":"!!"}"#, "AnyValue.bytesValue: not base64"),
        (r#""body":{"stringValue":"a","intValue":"1"}"#, "AnyValue: more than one of its values is set"),
        (r#""body":{"arrayValue":{"values":[null]}}"#, "expected an OTLP AnyValue object"),
        (r#""attributes":{"k":"v"}"#, "expected an array"),
        (r#""attributes":[{"key":1}]"#, "expected KeyValue.key as a string"),
        (r#""eventName":"a","eventName":"b""#, "LogRecord.eventName is given more than once"),
        (r#""eventName":"a","event_name":"b""#, "LogRecord.eventName is given more than once"),
    ] {
        let err = json_err(&one_record(members));
        assert!(err.contains(why), "{members}: {err}");
        assert!(err.contains("at line 1 column"), "{members}: {err} has no position");
    }
    for (body, why) in [
        ("", "EOF while parsing"),
        ("[]", "expected an OTLP ExportLogsServiceRequest object"),
        ("null", "expected an OTLP ExportLogsServiceRequest object"),
        ("{}{}", "trailing characters"),
        (r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"#, "EOF while parsing"),
        (r#"{"resourceLogs":[{"resource":[]}]}"#, "expected an OTLP Resource object"),
        (r#"{"resourceLogs":[{"scopeLogs":{}}]}"#, "expected an array"),
        (
            r#"{"resourceLogs":[],"resource_logs":[]}"#,
            "ExportLogsServiceRequest.resourceLogs is given more than once",
        ),
        (&one_record(r#""severityText":"\ud800""#), "hex escape"),
    ] {
        let err = json_err(body);
        assert!(err.contains(why), "{body}: {err}");
    }
    let mut not_utf8 = one_record(r#""severityText":"zz""#).into_bytes();
    let at = not_utf8.windows(2).position(|w| w == b"zz").unwrap();
    not_utf8[at] = 0xff;
    let err = decode_json(&not_utf8).unwrap_err().to_string();
    assert!(err.contains("invalid unicode code point"), "{err}");
}

#[test]
fn deep_json_is_refused_not_overflowed() {
    let deep =
        one_record(&format!(r#""body":{}{}"#, r#"{"arrayValue":{"values":["#.repeat(200), "]}}".repeat(200)));
    let err = json_err(&deep);
    assert!(err.contains("recursion limit exceeded"), "{err}");
}

#[test]
fn protobuf_round_trip() {
    let request = spec_example_struct();
    let bytes = encode_protobuf(&request);
    assert_eq!(decode_protobuf(&bytes).unwrap(), request);
    assert_eq!(decode_protobuf(&[]).unwrap(), ExportLogsServiceRequest::default());
}

#[test]
fn invalid_utf8_in_protobuf_names_the_field() {
    let mut request = spec_example_struct();
    request.resource_logs[0].scope_logs[0].log_records[0].severity_text = "UTF8MARK".into();
    let mut bytes = encode_protobuf(&request);
    let at = bytes.windows(8).position(|w| w == b"UTF8MARK").unwrap();
    bytes[at] = 0xff;
    let err = decode_protobuf(&bytes).unwrap_err().to_string();
    assert!(err.starts_with("not a valid OTLP/protobuf ExportLogsServiceRequest: "), "{err}");
    assert!(err.contains("LogRecord.severity_text"), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
}

#[test]
fn truncated_and_garbage_protobuf_is_refused() {
    let bytes = encode_protobuf(&spec_example_struct());
    // Every proper prefix ends inside the one top-level ResourceLogs message.
    for len in 1..bytes.len() {
        let err = decode_protobuf(&bytes[..len]).unwrap_err().to_string();
        assert!(err.contains("not a valid OTLP/protobuf"), "{len}: {err}");
    }
    for garbage in [
        &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
        b"\x0a\x05ab",
        b"\x07",
        b"{\"resourceLogs\":[]}",
    ] {
        let err = decode_protobuf(garbage).unwrap_err().to_string();
        assert!(err.contains("not a valid OTLP/protobuf"), "{garbage:?}: {err}");
    }
}

#[test]
fn deep_protobuf_is_refused_by_the_recursion_limit() {
    let mut value = int(1);
    for _ in 0..120 {
        value = array(vec![value]);
    }
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord { body: Some(value), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let err = decode_protobuf(&encode_protobuf(&request)).unwrap_err().to_string();
    assert!(err.contains("recursion limit"), "{err}");
}
