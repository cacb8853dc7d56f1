//! OTLP log records → teelog records (docs/FORMAT.md §13.2), and signed batches back out as OTLP
//! (§13.3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use common::*;
use teelog_core::batch::{BatchBuilder, ChainHead, HeaderSigner, SoftwareSigner};
use teelog_core::canon::MAX_DEPTH;
use teelog_core::crypto::{PublicKey, SigAlg, SoftwareKey};
use teelog_core::timestamp::parse_rfc3339;
use teelog_core::verify::{Origin, Verifier, VerifyOptions};
use teelog_otlp::common::any_value::Value;
use teelog_otlp::common::{AnyValue, EntityRef, InstrumentationScope, KeyValue};
use teelog_otlp::logs::{LogRecord, ResourceLogs, ScopeLogs};
use teelog_otlp::resource::Resource;
use teelog_otlp::{
    decode_json, decode_protobuf, encode_protobuf, export_batch, for_each_record, ExportError,
    ExportLogsServiceRequest, Fault, MapError,
};

fn request_of(
    resource: Option<Resource>,
    scope: Option<InstrumentationScope>,
    records: Vec<LogRecord>,
) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs { scope, log_records: records, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

fn records(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    request_of(None, None, records)
}

fn body(value: AnyValue) -> LogRecord {
    LogRecord { body: Some(value), ..Default::default() }
}

/// The canonical record of a log record with only this body.
fn canonical_body(value: AnyValue) -> String {
    canonical(&records(vec![body(value)])).remove(0)
}

fn full_request() -> ExportLogsServiceRequest {
    let mut request = request_of(
        Some(Resource {
            attributes: vec![kv("service.name", s("billing")), kv("host.cores", int(2))],
            dropped_attributes_count: 1,
            entity_refs: vec![EntityRef {
                schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                r#type: "service".into(),
                id_keys: vec!["service.name".into()],
                description_keys: vec![],
            }],
        }),
        Some(InstrumentationScope {
            name: "audit".into(),
            version: "2.1".into(),
            attributes: vec![kv("lib", s("x"))],
            dropped_attributes_count: 2,
        }),
        vec![LogRecord {
            time_unix_nano: 1_796_202_002_000_000_001,
            observed_time_unix_nano: 1_796_202_002_500_000_000,
            severity_number: 18,
            severity_text: "Error".into(),
            body: Some(kvlist(vec![
                kv("user", s("alice")),
                kv("bytes", val(Value::BytesValue(vec![0, 1, 2, 0xff]))),
                kv("big", int(1 << 60)),
                kv("nan", double(f64::NAN)),
                kv("inf", double(f64::INFINITY)),
                kv("ninf", double(f64::NEG_INFINITY)),
                kv("frac", double(0.1)),
                kv("empty", AnyValue::default()),
                kv("list", array(vec![val(Value::BoolValue(true)), int(-3), s("\"q\"\n")])),
            ])),
            attributes: vec![
                kv("audit.action", s("DELETE")),
                kv("max", int(1 << 53)),
                kv("over", int((1 << 53) + 1)),
                kv("min", int(i64::MIN)),
                KeyValue { key: "unset".into(), value: None, key_strindex: 0 },
            ],
            dropped_attributes_count: 3,
            flags: 1,
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            event_name: "user.delete".into(),
        }],
    );
    request.resource_logs[0].schema_url = "https://opentelemetry.io/schemas/1.31.0".into();
    request.resource_logs[0].scope_logs[0].schema_url = "s".into();
    request
}

const FULL_CANONICAL: &str = concat!(
    r#"{"attributes":{"audit.action":"DELETE","max":9007199254740992,"min":"-9223372036854775808","#,
    r#""over":"9007199254740993","unset":null},"#,
    r#""body":{"big":"1152921504606846976","bytes":"AAEC/w==","empty":null,"frac":0.1,"inf":"Infinity","#,
    r#""list":[true,-3,"\"q\"\n"],"nan":"NaN","ninf":"-Infinity","user":"alice"},"#,
    r#""dropped_attributes_count":3,"event_name":"user.delete","flags":1,"level":"Error","#,
    r#""observed_ts":"2026-12-02T09:00:02.500000000Z","#,
    r#""resource":{"attributes":{"host.cores":2,"service.name":"billing"},"dropped_attributes_count":1,"#,
    r#""entity_refs":[{"id_keys":["service.name"],"schema_url":"https://opentelemetry.io/schemas/1.30.0","type":"service"}],"#,
    r#""schema_url":"https://opentelemetry.io/schemas/1.31.0"},"#,
    r#""scope":{"attributes":{"lib":"x"},"dropped_attributes_count":2,"name":"audit","schema_url":"s","version":"2.1"},"#,
    r#""severity_number":18,"span_id":"0102030405060708","trace_id":"0102030405060708090a0b0c0d0e0f10","#,
    r#""ts":"2026-12-02T09:00:02.000000001Z"}"#
);

/// `full_request` in OTLP/JSON.
const FULL_JSON: &str = r#"{"resourceLogs":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"billing"}},{"key":"host.cores","value":{"intValue":"2"}}],
    "droppedAttributesCount":1,
    "entityRefs":[{"schemaUrl":"https://opentelemetry.io/schemas/1.30.0","type":"service","idKeys":["service.name"]}]},
  "schemaUrl":"https://opentelemetry.io/schemas/1.31.0",
  "scopeLogs":[{"scope":{"name":"audit","version":"2.1","attributes":[{"key":"lib","value":{"stringValue":"x"}}],"droppedAttributesCount":2},
    "schemaUrl":"s",
    "logRecords":[{"timeUnixNano":"1796202002000000001","observedTimeUnixNano":"1796202002500000000",
      "severityNumber":18,"severityText":"Error",
      "body":{"kvlistValue":{"values":[
        {"key":"user","value":{"stringValue":"alice"}},
        {"key":"bytes","value":{"bytesValue":"AAEC/w=="}},
        {"key":"big","value":{"intValue":"1152921504606846976"}},
        {"key":"nan","value":{"doubleValue":"NaN"}},
        {"key":"inf","value":{"doubleValue":"Infinity"}},
        {"key":"ninf","value":{"doubleValue":"-Infinity"}},
        {"key":"frac","value":{"doubleValue":0.1}},
        {"key":"empty","value":{}},
        {"key":"list","value":{"arrayValue":{"values":[{"boolValue":true},{"intValue":-3},{"stringValue":"\"q\"\n"}]}}}]}},
      "attributes":[{"key":"audit.action","value":{"stringValue":"DELETE"}},
        {"key":"max","value":{"intValue":"9007199254740992"}},
        {"key":"over","value":{"intValue":"9007199254740993"}},
        {"key":"min","value":{"intValue":"-9223372036854775808"}},
        {"key":"unset"}],
      "droppedAttributesCount":3,"flags":1,
      "traceId":"0102030405060708090A0B0C0D0E0F10","spanId":"0102030405060708","eventName":"user.delete"}]}]}]}"#;

#[test]
fn every_field_is_mapped() {
    assert_eq!(canonical(&full_request()), [FULL_CANONICAL]);
}

#[test]
fn every_field_is_mapped_from_protobuf() {
    let request = decode_protobuf(&encode_protobuf(&full_request())).unwrap();
    assert_eq!(canonical(&request), [FULL_CANONICAL]);
}

#[test]
fn every_field_is_mapped_from_json() {
    assert_eq!(canonical(&decode_json(FULL_JSON.as_bytes()).unwrap()), [FULL_CANONICAL]);
}

#[test]
fn mapped_records_are_already_canonical() {
    // The signer takes them as they are; attributes given out of order are sorted here.
    let mapped = mapped(&full_request()).unwrap();
    assert_eq!(mapped, [FULL_CANONICAL]);
}

#[test]
fn body_kinds() {
    let cases: [(AnyValue, &str); 13] = [
        (s("hello"), r#""message":"hello""#),
        (s(""), r#""message":"""#),
        (val(Value::BoolValue(false)), r#""body":false"#),
        (int(-(1 << 53)), r#""body":-9007199254740992"#),
        (int(-(1 << 53) - 1), r#""body":"-9007199254740993""#),
        (double(-0.0), r#""body":0"#),
        (double(1e21), r#""body":1e+21"#),
        // Integral doubles are written as integers: beyond 2^53 as strings, as such literals are.
        (double(9007199254740992.0), r#""body":9007199254740992"#),
        (double(1.021_060_380_679_357_1e17), r#""body":"102106038067935710""#),
        (val(Value::BytesValue(vec![])), r#""body":"""#),
        (AnyValue::default(), r#""body":null"#),
        (val(Value::StringValueStrindex(4)), r#""body":null"#),
        (array(vec![array(vec![]), kvlist(vec![])]), r#""body":[[],{}]"#),
    ];
    for (value, member) in cases {
        let record = canonical_body(value.clone());
        assert_eq!(record, format!(r#"{{{member},"ts":"2026-12-02T16:00:00.000000000Z"}}"#), "{value:?}");
    }
}

#[test]
fn times() {
    let at = |time, observed| {
        canonical(&records(vec![LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: observed,
            ..Default::default()
        }]))
        .remove(0)
    };
    assert_eq!(at(5, 0), r#"{"ts":"1970-01-01T00:00:00.000000005Z"}"#);
    assert_eq!(
        at(0, 7),
        r#"{"observed_ts":"1970-01-01T00:00:00.000000007Z","ts":"1970-01-01T00:00:00.000000007Z"}"#
    );
    assert_eq!(
        at(5, 7),
        r#"{"observed_ts":"1970-01-01T00:00:00.000000007Z","ts":"1970-01-01T00:00:00.000000005Z"}"#
    );
    // Neither: the signer's clock (here NOW) fills `ts` in.
    assert_eq!(at(0, 0), r#"{"ts":"2026-12-02T16:00:00.000000000Z"}"#);
    let max = i64::MAX as u64;
    assert!(at(max, max).contains(r#""ts":"2262-04-11T23:47:16.854775807Z""#));
    for (time, observed, field) in [
        (max + 1, 0, "time_unix_nano"),
        (0, u64::MAX, "observed_time_unix_nano"),
        (1, max + 1, "observed_time_unix_nano"),
    ] {
        let err = map_error(&records(vec![LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: observed,
            ..Default::default()
        }]));
        assert!(
            err.starts_with(&format!("resource_logs[0].scope_logs[0].log_records[0].{field}: ")),
            "{err}"
        );
        assert!(err.contains("is after 2262-04-11T23:47:16.854775807Z"), "{err}");
    }
}

#[test]
fn levels() {
    let level = |number, text: &str| {
        let record = LogRecord { severity_number: number, severity_text: text.into(), ..Default::default() };
        canonical(&records(vec![record])).remove(0)
    };
    let names = [
        "TRACE", "TRACE2", "TRACE3", "TRACE4", "DEBUG", "DEBUG2", "DEBUG3", "DEBUG4", "INFO", "INFO2",
        "INFO3", "INFO4", "WARN", "WARN2", "WARN3", "WARN4", "ERROR", "ERROR2", "ERROR3", "ERROR4", "FATAL",
        "FATAL2", "FATAL3", "FATAL4",
    ];
    for (number, name) in (1..).zip(names) {
        assert_eq!(
            level(number, ""),
            format!(
                r#"{{"level":"{name}","severity_number":{number},"ts":"2026-12-02T16:00:00.000000000Z"}}"#
            )
        );
    }
    assert_eq!(
        level(9, "notice"),
        r#"{"level":"notice","severity_number":9,"ts":"2026-12-02T16:00:00.000000000Z"}"#
    );
    assert_eq!(level(0, ""), r#"{"ts":"2026-12-02T16:00:00.000000000Z"}"#);
    assert_eq!(level(0, "warn"), r#"{"level":"warn","ts":"2026-12-02T16:00:00.000000000Z"}"#);
    // Outside the data model's range: kept as a number, but no name is made up for it.
    assert_eq!(level(25, ""), r#"{"severity_number":25,"ts":"2026-12-02T16:00:00.000000000Z"}"#);
    assert_eq!(level(-1, ""), r#"{"severity_number":-1,"ts":"2026-12-02T16:00:00.000000000Z"}"#);
}

#[test]
fn strings_are_escaped_and_unicode_kept() {
    let record = canonical_body(kvlist(vec![kv("k\u{1}\"\\", s("caf\u{e9} \u{2028} \u{7f} \t"))]));
    assert_eq!(record, "{\"body\":{\"k\\u0001\\\"\\\\\":\"caf\u{e9} \u{2028} \u{7f} \\t\"},\"ts\":\"2026-12-02T16:00:00.000000000Z\"}");
}

#[test]
fn duplicate_keys_are_refused_where_they_are() {
    let dup = || vec![kv("user", s("a")), kv("x", int(1)), kv("user", s("b"))];
    let many: Vec<KeyValue> = (0..40).map(|i| kv(&format!("k{}", i % 39), int(i))).collect();
    let resource = || Some(Resource { attributes: dup(), ..Default::default() });
    let scope = || Some(InstrumentationScope { attributes: dup(), ..Default::default() });
    let one = |record: LogRecord| vec![LogRecord::default(), record];
    for (request, expected) in [
        (
            records(one(LogRecord { attributes: dup(), ..Default::default() })),
            r#"resource_logs[0].scope_logs[0].log_records[1].attributes: duplicate key "user""#,
        ),
        (
            records(one(LogRecord { attributes: many, ..Default::default() })),
            r#"resource_logs[0].scope_logs[0].log_records[1].attributes: duplicate key "k0""#,
        ),
        (
            records(one(body(array(vec![int(0), kvlist(vec![kv("a", kvlist(dup()))])])))),
            r#"resource_logs[0].scope_logs[0].log_records[1].body[1]["a"]: duplicate key "user""#,
        ),
        (
            records(one(LogRecord { attributes: vec![kv("m", kvlist(dup()))], ..Default::default() })),
            r#"resource_logs[0].scope_logs[0].log_records[1].attributes["m"]: duplicate key "user""#,
        ),
        (
            request_of(resource(), None, vec![]),
            r#"resource_logs[0].resource.attributes: duplicate key "user""#,
        ),
        (
            request_of(None, scope(), vec![]),
            r#"resource_logs[0].scope_logs[0].scope.attributes: duplicate key "user""#,
        ),
    ] {
        let err = mapped(&request).unwrap_err();
        assert_eq!(err.to_string(), expected);
        assert!(matches!(err, MapError::Invalid { fault: Fault::DuplicateKey(_), .. }));
    }
}

#[test]
fn ids_of_the_wrong_length_are_refused() {
    for (record, expected) in [
        (
            LogRecord { trace_id: vec![1; 15], ..Default::default() },
            "resource_logs[0].scope_logs[0].log_records[0].trace_id: 15 bytes, but a trace id has 16 (or is empty)",
        ),
        (
            LogRecord { trace_id: vec![1; 17], ..Default::default() },
            "resource_logs[0].scope_logs[0].log_records[0].trace_id: 17 bytes, but a trace id has 16 (or is empty)",
        ),
        (
            LogRecord { span_id: vec![1; 16], ..Default::default() },
            "resource_logs[0].scope_logs[0].log_records[0].span_id: 16 bytes, but a span id has 8 (or is empty)",
        ),
    ] {
        assert_eq!(map_error(&records(vec![record])), expected);
    }
}

fn nested_arrays(levels: usize) -> AnyValue {
    (0..levels).fold(int(1), |inner, _| array(vec![inner]))
}

fn nested_kvlists(levels: usize) -> AnyValue {
    (0..levels).fold(int(1), |inner, _| kvlist(vec![kv("k", inner)]))
}

#[test]
fn nesting_stops_exactly_where_the_canonicaliser_does() {
    // The record is level 0, so a body container is at level 1, and an attribute's at level 2.
    let deepest_body = MAX_DEPTH - 1;
    for nested in [nested_arrays, nested_kvlists] {
        assert!(canonical_body(nested(deepest_body)).starts_with(r#"{"body":"#));
        let err = map_error(&records(vec![body(nested(deepest_body + 1))]));
        assert!(err.starts_with("resource_logs[0].scope_logs[0].log_records[0].body"), "{err}");
        assert!(err.ends_with(": nested deeper than the 64 levels a teelog record may have"), "{err}");

        let attribute = |levels| {
            records(vec![LogRecord { attributes: vec![kv("a", nested(levels))], ..Default::default() }])
        };
        assert_eq!(canonical(&attribute(deepest_body - 1)).len(), 1);
        let err = map_error(&attribute(deepest_body));
        assert!(err.starts_with(r#"resource_logs[0].scope_logs[0].log_records[0].attributes["a"]"#), "{err}");
        assert!(err.contains("nested deeper"), "{err}");
    }
    let err = map_error(&records(vec![body(nested_arrays(deepest_body + 1))]));
    let expected_path =
        format!("resource_logs[0].scope_logs[0].log_records[0].body{}", "[0]".repeat(deepest_body));
    assert!(err.starts_with(&format!("{expected_path}: ")), "{err}");
}

#[test]
fn empty_parts_are_omitted() {
    let request = request_of(
        Some(Resource::default()),
        Some(InstrumentationScope::default()),
        vec![LogRecord { time_unix_nano: 1, ..Default::default() }],
    );
    assert_eq!(canonical(&request), [r#"{"ts":"1970-01-01T00:00:00.000000001Z"}"#]);
    assert_eq!(mapped(&ExportLogsServiceRequest::default()).unwrap(), Vec::<String>::new());
}

#[test]
fn each_resource_and_scope_goes_with_its_own_records() {
    let scope = |name: &str, n: usize| ScopeLogs {
        scope: Some(InstrumentationScope { name: name.into(), ..Default::default() }),
        log_records: (0..n)
            .map(|i| LogRecord { time_unix_nano: i as u64 + 1, ..Default::default() })
            .collect(),
        schema_url: String::new(),
    };
    let resource = |name: &str| Some(Resource { attributes: vec![kv("r", s(name))], ..Default::default() });
    let request = ExportLogsServiceRequest {
        resource_logs: vec![
            ResourceLogs {
                resource: resource("A"),
                scope_logs: vec![scope("a1", 2), scope("a2", 1)],
                ..Default::default()
            },
            ResourceLogs { resource: None, scope_logs: vec![scope("b1", 1)], ..Default::default() },
        ],
    };
    let summary: Vec<String> = mapped(&request)
        .unwrap()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).unwrap();
            format!("{}/{}/{}", v["resource"]["attributes"]["r"], v["scope"]["name"], v["ts"])
        })
        .collect();
    let ns = |n| format!("\"1970-01-01T00:00:00.00000000{n}Z\"");
    assert_eq!(
        summary,
        [
            format!(r#""A"/"a1"/{}"#, ns(1)),
            format!(r#""A"/"a1"/{}"#, ns(2)),
            format!(r#""A"/"a2"/{}"#, ns(1)),
            format!(r#"null/"b1"/{}"#, ns(1))
        ]
    );
}

#[test]
fn the_sink_error_names_the_record_and_stops_the_mapping() {
    let request =
        records((0..5).map(|i| LogRecord { time_unix_nano: i + 1, ..Default::default() }).collect());
    let mut seen = 0;
    let result = for_each_record(&request, NOW, &mut Vec::new(), |_| {
        seen += 1;
        if seen == 3 {
            Err("disk full")
        } else {
            Ok(())
        }
    });
    assert_eq!(seen, 3);
    let err = result.unwrap_err();
    assert_eq!(err.to_string(), "resource_logs[0].scope_logs[0].log_records[2]: disk full");
    assert!(matches!(err, MapError::Sink { error: "disk full", .. }));
    let count = for_each_record(&request, NOW, &mut Vec::new(), |_| Ok::<(), ()>(())).unwrap();
    assert_eq!(count, 5);
}

fn signer() -> SoftwareSigner {
    let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap();
    SoftwareSigner::new(SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).unwrap(), None)
}

/// Maps `request` into a batch and seals it: the batch line, each record's canonical bytes, the
/// chain it started and the signer's key.
fn seal(request: &ExportLogsServiceRequest) -> (Vec<u8>, Vec<String>, ChainHead, PublicKey) {
    let mut builder = BatchBuilder::new();
    let mut buf = Vec::new();
    let n = for_each_record(request, NOW, &mut buf, |record| builder.push_input(record, &|| NOW)).unwrap();
    assert_eq!(builder.len(), n as u64);
    let mut chain = ChainHead::new_epoch("otlp-test", None, &teelog_core::random::SystemRandom).unwrap();
    let start = chain.clone();
    let mut line = Vec::new();
    let signer = signer();
    builder.seal(&mut chain, &signer, NOW + 1, &mut line).unwrap();
    (line, canonical(request), start, signer.public_key().clone())
}

fn text_attr<'a>(record: &'a LogRecord, key: &str) -> Option<&'a str> {
    record.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value {
        Some(AnyValue { value: Some(Value::StringValue(s)) }) => Some(s.as_str()),
        _ => None,
    })
}

fn int_attr(record: &LogRecord, key: &str) -> Option<i64> {
    record.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value {
        Some(AnyValue { value: Some(Value::IntValue(i)) }) => Some(*i),
        _ => None,
    })
}

fn body_text(record: &LogRecord) -> &str {
    match &record.body {
        Some(AnyValue { value: Some(Value::StringValue(s)) }) => s,
        other => panic!("body {other:?}"),
    }
}

#[test]
fn exported_bodies_are_the_signed_bytes() {
    let mut request = full_request();
    request.resource_logs.push(decode_json(FULL_JSON.as_bytes()).unwrap().resource_logs.remove(0));
    request.resource_logs[1].scope_logs[0].log_records.push(LogRecord::default());
    let (line, canonical_records, chain, key) = seal(&request);
    assert_eq!(canonical_records.len(), 3);

    let resource_attrs = [("service.name".to_string(), "teelog".to_string())];
    let exported = export_batch(&line, &resource_attrs).unwrap();
    // The export survives OTLP/protobuf.
    assert_eq!(decode_protobuf(&encode_protobuf(&exported)).unwrap(), exported);
    let rl = &exported.resource_logs[0];
    assert_eq!(rl.resource.as_ref().unwrap().attributes, [kv("service.name", s("teelog"))]);
    let sl = &rl.scope_logs[0];
    assert_eq!(sl.scope, None);
    let (batch, exported_records) = sl.log_records.split_first().unwrap();

    let line_text = std::str::from_utf8(&line).unwrap();
    let prefix = &line_text[..line_text.find(",\"records\":[").unwrap()];
    assert_eq!(body_text(batch), format!("{prefix}}}"));
    let parsed: serde_json::Value = serde_json::from_str(line_text).unwrap();
    assert_eq!(text_attr(batch, "audit.integrity.kind"), Some("batch"));
    assert_eq!(text_attr(batch, "audit.integrity.signature"), parsed["sig"].as_str());
    assert_eq!(text_attr(batch, "audit.integrity.root"), parsed["header"]["root"].as_str());
    assert_eq!(text_attr(batch, "audit.integrity.stream"), Some("otlp-test"));
    assert_eq!(text_attr(batch, "audit.integrity.epoch"), Some(chain.epoch.as_str()));
    assert_eq!(int_attr(batch, "audit.sequence.number"), Some(1));
    assert_eq!(batch.time_unix_nano, NOW as u64 + 1);

    assert_eq!(exported_records.len(), canonical_records.len());
    for (i, (record, canonical)) in exported_records.iter().zip(&canonical_records).enumerate() {
        assert_eq!(body_text(record), canonical);
        assert!(line_text.contains(canonical.as_str()));
        assert_eq!(text_attr(record, "audit.integrity.kind"), Some("record"));
        assert_eq!(text_attr(record, "audit.integrity.stream"), Some("otlp-test"));
        assert_eq!(text_attr(record, "audit.integrity.epoch"), Some(chain.epoch.as_str()));
        assert_eq!(int_attr(record, "audit.sequence.number"), Some(1));
        assert_eq!(int_attr(record, "audit.sequence.index"), Some(i as i64));
        let ts: serde_json::Value = serde_json::from_str(canonical).unwrap();
        assert_eq!(record.time_unix_nano as i64, parse_rfc3339(ts["ts"].as_str().unwrap()).unwrap());
    }
    // The record without a time got the signer's.
    assert_eq!(exported_records[2].time_unix_nano, NOW as u64);

    // The bodies alone give back the line (§13.3), which verifies.
    let bodies: Vec<&str> = exported_records.iter().map(body_text).collect();
    let batch_text = body_text(batch);
    let reassembled = format!("{},\"records\":[{}]}}", &batch_text[..batch_text.len() - 1], bodies.join(","));
    assert_eq!(reassembled, line_text.trim_end());
    let mut verifier = Verifier::new(VerifyOptions {
        trusted_keys: vec![key],
        expect_measurement: None,
        policy: None,
        freshness: None,
        ..VerifyOptions::default()
    });
    verifier.push_line(Origin { source: "export", line: 1 }, reassembled.as_bytes());
    let report = verifier.finish();
    assert!(report.ok, "{:?}", report.findings);
    assert_eq!((report.batches, report.records), (1, 3));
}

#[test]
fn a_tampered_batch_is_exported_as_it_is() {
    let (line, _, _, _) = seal(&records(vec![body(s("pay 10"))]));
    let tampered = String::from_utf8(line).unwrap().replace("pay 10", "pay 99");
    let exported = export_batch(tampered.as_bytes(), &[]).unwrap();
    let rl = &exported.resource_logs[0];
    assert_eq!(rl.resource, None);
    assert!(body_text(&rl.scope_logs[0].log_records[1]).contains("pay 99"));
}

#[test]
fn lines_that_are_not_batches_are_refused() {
    for line in [&b""[..], b"{}", b"not json", br#"{"v":1,"attestation":"AAAA"}"#] {
        let err = export_batch(line, &[]).unwrap_err();
        assert!(matches!(err, ExportError::NotABatch(_)));
        assert!(err.to_string().starts_with("not a teelog batch line: "), "{err}");
    }
}
