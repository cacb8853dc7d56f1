//! Properties: no input panics the decoders or the mapping; every mapped record is accepted by the
//! canonicaliser; OTLP/JSON decodes to the request it encodes; exported bodies are the signed bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use base64::Engine;
use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};
use teelog_core::batch::{BatchBuilder, ChainHead, SoftwareSigner};
use teelog_core::canon::Canonicalizer;
use teelog_core::crypto::{SigAlg, SoftwareKey};
use teelog_core::record::canonicalize_record;
use teelog_otlp::common::any_value::Value;
use teelog_otlp::common::{AnyValue, InstrumentationScope, KeyValue};
use teelog_otlp::logs::{LogRecord, ResourceLogs, ScopeLogs};
use teelog_otlp::resource::Resource;
use teelog_otlp::{
    decode_json, decode_protobuf, encode_protobuf, export_batch, for_each_mapped, for_each_record,
    ExportLogsServiceRequest, Fault, MapError, Mapped, RequestRef, WireRequest,
};

fn key() -> impl Strategy<Value = String> {
    // A small alphabet makes duplicate keys likely enough to be exercised.
    prop_oneof![3 => "[ab]{1,2}", 1 => any::<String>()]
}

fn double_value() -> impl Strategy<Value = f64> {
    // One NaN: OTLP/JSON has one spelling for all of them.
    any::<f64>().prop_map(|d| if d.is_nan() { f64::NAN } else { d })
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(AnyValue::default()),
        any::<String>().prop_map(|v| s(&v)),
        any::<bool>().prop_map(|v| val(Value::BoolValue(v))),
        any::<i64>().prop_map(int),
        prop_oneof![Just(1i64 << 53), Just((1 << 53) + 1), Just(-(1 << 53)), Just(-(1 << 53) - 1)]
            .prop_map(int),
        double_value().prop_map(double),
        vec(any::<u8>(), 0..12).prop_map(|v| val(Value::BytesValue(v))),
    ];
    leaf.prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(array),
            vec((key(), inner), 0..5)
                .prop_map(|pairs| kvlist(pairs.into_iter().map(|(k, v)| kv(&k, v)).collect())),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    vec((key(), proptest::option::weighted(0.9, any_value())), 0..5).prop_map(|pairs| {
        pairs.into_iter().map(|(key, value)| KeyValue { key, value, key_strindex: 0 }).collect()
    })
}

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => Just(Vec::new()), 4 => vec(any::<u8>(), len), 1 => vec(any::<u8>(), 0..20)]
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0..=i64::MAX as u64, any::<u64>()]
}

fn log_record() -> impl Strategy<Value = LogRecord> {
    (
        (
            time(),
            time(),
            prop_oneof![0..30i32, any::<i32>()],
            prop_oneof![Just(String::new()), any::<String>()],
        ),
        (proptest::option::of(any_value()), attributes(), any::<u32>(), any::<u32>()),
        (id(16), id(8), prop_oneof![Just(String::new()), any::<String>()]),
    )
        .prop_map(
            |(
                (time_unix_nano, observed_time_unix_nano, severity_number, severity_text),
                (body, attributes, dropped_attributes_count, flags),
                (trace_id, span_id, event_name),
            )| LogRecord {
                time_unix_nano,
                observed_time_unix_nano,
                severity_number,
                severity_text,
                body,
                attributes,
                dropped_attributes_count,
                flags,
                trace_id,
                span_id,
                event_name,
            },
        )
}

fn request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope =
        (
            proptest::option::of((any::<String>(), any::<String>(), attributes(), any::<u32>())),
            vec(log_record(), 0..4),
            any::<String>(),
        )
            .prop_map(|(scope, log_records, schema_url)| ScopeLogs {
                scope: scope.map(|(name, version, attributes, dropped_attributes_count)| {
                    InstrumentationScope { name, version, attributes, dropped_attributes_count }
                }),
                log_records,
                schema_url,
            });
    let resource_logs =
        (proptest::option::of((attributes(), any::<u32>())), vec(scope, 0..3), any::<String>()).prop_map(
            |(resource, scope_logs, schema_url)| ResourceLogs {
                resource: resource.map(|(attributes, dropped_attributes_count)| Resource {
                    attributes,
                    dropped_attributes_count,
                    entity_refs: Vec::new(),
                }),
                scope_logs,
                schema_url,
            },
        );
    vec(resource_logs, 0..3).prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}

fn unique_keys(pairs: &[KeyValue]) -> bool {
    let mut keys: Vec<&str> = pairs.iter().map(|kv| kv.key.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2).all(|w| w[0] != w[1]) && pairs.iter().all(|kv| kv.value.as_ref().is_none_or(value_ok))
}

fn value_ok(value: &AnyValue) -> bool {
    match &value.value {
        Some(Value::ArrayValue(a)) => a.values.iter().all(value_ok),
        Some(Value::KvlistValue(list)) => unique_keys(&list.values),
        _ => true,
    }
}

/// Whether the mapping must accept the request (the strategies stay far from the depth limit).
fn mappable(request: &ExportLogsServiceRequest) -> bool {
    let max = i64::MAX as u64;
    request.resource_logs.iter().all(|rl| {
        rl.resource.as_ref().is_none_or(|r| unique_keys(&r.attributes))
            && rl.scope_logs.iter().all(|sl| {
                sl.scope.as_ref().is_none_or(|s| unique_keys(&s.attributes))
                    && sl.log_records.iter().all(|r| {
                        unique_keys(&r.attributes)
                            && r.body.as_ref().is_none_or(value_ok)
                            && matches!(r.trace_id.len(), 0 | 16)
                            && matches!(r.span_id.len(), 0 | 8)
                            && r.observed_time_unix_nano <= max
                            && (r.time_unix_nano <= max)
                    })
            })
    })
}

/// OTLP/JSON of a request, in either spelling of the member names and either form of integers,
/// written independently of the decoder under test.
struct JsonWriter {
    snake: bool,
    int_strings: bool,
    upper_hex: bool,
}

impl JsonWriter {
    fn name(&self, camel: &str) -> String {
        if !self.snake {
            return camel.to_string();
        }
        camel.chars().fold(String::new(), |mut out, c| {
            if c.is_ascii_uppercase() {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
            out
        })
    }

    fn object(&self, members: Vec<(&str, Json)>) -> Json {
        Json::Object(members.into_iter().map(|(k, v)| (self.name(k), v)).collect::<Map<_, _>>())
    }

    fn int(&self, v: impl Into<i128>) -> Json {
        let v: i128 = v.into();
        if self.int_strings {
            Json::String(v.to_string())
        } else {
            serde_json::from_str(&v.to_string()).unwrap()
        }
    }

    fn hex(&self, bytes: &[u8]) -> Json {
        let h = hex::encode(bytes);
        Json::String(if self.upper_hex { h.to_uppercase() } else { h })
    }

    fn value(&self, value: &AnyValue) -> Json {
        let member = match &value.value {
            None => return json!({}),
            Some(Value::StringValue(v)) => ("stringValue", json!(v)),
            Some(Value::BoolValue(v)) => ("boolValue", json!(v)),
            Some(Value::IntValue(v)) => ("intValue", self.int(*v)),
            Some(Value::DoubleValue(v)) if v.is_nan() => ("doubleValue", json!("NaN")),
            Some(Value::DoubleValue(v)) if v.is_infinite() => {
                ("doubleValue", json!(if *v > 0.0 { "Infinity" } else { "-Infinity" }))
            }
            Some(Value::DoubleValue(v)) => ("doubleValue", json!(v)),
            Some(Value::BytesValue(v)) => {
                ("bytesValue", json!(base64::engine::general_purpose::STANDARD.encode(v)))
            }
            Some(Value::ArrayValue(a)) => (
                "arrayValue",
                self.object(vec![("values", a.values.iter().map(|v| self.value(v)).collect())]),
            ),
            Some(Value::KvlistValue(l)) => {
                ("kvlistValue", self.object(vec![("values", self.pairs(&l.values))]))
            }
            Some(Value::StringValueStrindex(v)) => ("stringValueStrindex", json!(v)),
        };
        self.object(vec![member])
    }

    fn pairs(&self, pairs: &[KeyValue]) -> Json {
        pairs
            .iter()
            .map(|kv| {
                let mut members = vec![("key", json!(kv.key))];
                if let Some(v) = &kv.value {
                    members.push(("value", self.value(v)));
                }
                self.object(members)
            })
            .collect()
    }

    fn record(&self, r: &LogRecord) -> Json {
        let mut members = vec![
            ("timeUnixNano", self.int(r.time_unix_nano)),
            ("observedTimeUnixNano", self.int(r.observed_time_unix_nano)),
            ("severityNumber", json!(r.severity_number)),
            ("severityText", json!(r.severity_text)),
            ("attributes", self.pairs(&r.attributes)),
            ("droppedAttributesCount", json!(r.dropped_attributes_count)),
            ("flags", json!(r.flags)),
            ("traceId", self.hex(&r.trace_id)),
            ("spanId", self.hex(&r.span_id)),
            ("eventName", json!(r.event_name)),
        ];
        if let Some(body) = &r.body {
            members.push(("body", self.value(body)));
        }
        self.object(members)
    }

    fn request(&self, request: &ExportLogsServiceRequest) -> Json {
        let resource_logs = request
            .resource_logs
            .iter()
            .map(|rl| {
                let scope_logs = rl
                    .scope_logs
                    .iter()
                    .map(|sl| {
                        let mut members = vec![
                            ("logRecords", sl.log_records.iter().map(|r| self.record(r)).collect()),
                            ("schemaUrl", json!(sl.schema_url)),
                        ];
                        if let Some(s) = &sl.scope {
                            members.push((
                                "scope",
                                self.object(vec![
                                    ("name", json!(s.name)),
                                    ("version", json!(s.version)),
                                    ("attributes", self.pairs(&s.attributes)),
                                    ("droppedAttributesCount", json!(s.dropped_attributes_count)),
                                ]),
                            ));
                        }
                        self.object(members)
                    })
                    .collect();
                let mut members = vec![("scopeLogs", scope_logs), ("schemaUrl", json!(rl.schema_url))];
                if let Some(r) = &rl.resource {
                    members.push((
                        "resource",
                        self.object(vec![
                            ("attributes", self.pairs(&r.attributes)),
                            ("droppedAttributesCount", json!(r.dropped_attributes_count)),
                        ]),
                    ));
                }
                self.object(members)
            })
            .collect();
        self.object(vec![("resourceLogs", resource_logs)])
    }
}

/// Maps and canonicalises whatever decoded, checking only that nothing panics.
fn exercise(request: &ExportLogsServiceRequest) {
    let mut canon = Canonicalizer::new();
    let mut out = Vec::new();
    let _ = for_each_record(request, NOW, &mut Vec::new(), |record| {
        out.clear();
        canonicalize_record(&mut canon, record, &|| NOW, &mut out).map(|_| ())
    });
}

/// Everything the mapping makes of a request, in order.
fn outcomes<'a>(request: impl Into<RequestRef<'a>>) -> Vec<String> {
    let mut seen = Vec::new();
    let _ = for_each_mapped(request, NOW, &mut Vec::new(), |mapped| -> Result<(), ()> {
        seen.push(match mapped {
            Mapped::Record { record, ts, path } => {
                format!("record {} at {ts}: {}", path(), String::from_utf8_lossy(record))
            }
            Mapped::Refused { path, fault, log_record } => {
                format!("refused {path}: {fault}: {}", hex::encode(log_record.encode_to_vec()))
            }
            Mapped::Empty { path, fault } => format!("empty {path}: {fault}"),
        });
        Ok(())
    });
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_body_read_in_place_maps_as_prosts_tree(request in request()) {
        let body = encode_protobuf(&request);
        let wire = WireRequest::new(body.clone());
        prop_assert!(wire.is_ok(), "prost's own encoding is plain: {}", hex::encode(&body));
        let wire = wire.unwrap();
        prop_assert_eq!(outcomes(&wire), outcomes(&decode_protobuf(&body).unwrap()));
    }

    #[test]
    fn a_damaged_body_read_in_place_is_one_prost_decodes_to_the_same(
        request in request(),
        damage in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_protobuf(&request);
        if bytes.is_empty() {
            return Ok(());
        }
        for (at, byte) in &damage {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        for body in [bytes.clone(), bytes[..cut.index(bytes.len())].to_vec()] {
            if let Ok(wire) = WireRequest::new(body.clone()) {
                let decoded = decode_protobuf(&body);
                prop_assert!(decoded.is_ok(), "read in place, but prost refuses it: {}", hex::encode(&body));
                prop_assert_eq!(outcomes(&wire), outcomes(&decoded.unwrap()));
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(request) = decode_protobuf(&bytes) {
            exercise(&request);
        }
        if let Ok(request) = decode_json(&bytes) {
            exercise(&request);
        }
    }

    #[test]
    fn damaged_requests_never_panic(
        request in request(),
        damage in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let writer = JsonWriter { snake: false, int_strings: true, upper_hex: false };
        for mut bytes in [encode_protobuf(&request), serde_json::to_vec(&writer.request(&request)).unwrap()] {
            if bytes.is_empty() {
                continue;
            }
            for (at, byte) in &damage {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            for body in [&bytes[..], &bytes[..cut.index(bytes.len())]] {
                if let Ok(request) = decode_protobuf(body) {
                    exercise(&request);
                }
                if let Ok(request) = decode_json(body) {
                    exercise(&request);
                }
            }
        }
    }

    #[test]
    fn every_mapped_record_is_already_canonical(request in request()) {
        // The signer takes mapped records as they are: they must be what the canonicaliser makes.
        let mut canon = Canonicalizer::new();
        let mut out = Vec::new();
        let result = for_each_record(&request, NOW, &mut Vec::new(), |record| {
            out.clear();
            canonicalize_record(&mut canon, record, &|| NOW, &mut out).map_err(|e| {
                format!("{e} in {}", String::from_utf8_lossy(record))
            })?;
            if out != record {
                return Err(format!(
                    "not canonical: {} (canonical: {})",
                    String::from_utf8_lossy(record),
                    String::from_utf8_lossy(&out)
                ));
            }
            Ok(())
        });
        match result {
            Ok(n) => {
                prop_assert!(mappable(&request));
                let total: usize = request.resource_logs.iter()
                    .flat_map(|rl| &rl.scope_logs).map(|sl| sl.log_records.len()).sum();
                prop_assert_eq!(n, total);
            }
            Err(MapError::Sink { path, error }) => prop_assert!(false, "{}: canonicaliser refused: {}", path, error),
            Err(MapError::Invalid { fault, .. }) => {
                prop_assert!(!mappable(&request));
                let expected = matches!(fault, Fault::DuplicateKey(_) | Fault::IdLength { .. } | Fault::TimeOutOfRange(_));
                prop_assert!(expected, "{:?}", fault);
            }
        }
    }

    #[test]
    fn otlp_json_decodes_to_the_request_it_encodes(
        request in request(), snake in any::<bool>(), int_strings in any::<bool>(), upper_hex in any::<bool>(),
    ) {
        let json = JsonWriter { snake, int_strings, upper_hex }.request(&request);
        let text = if snake { serde_json::to_vec_pretty(&json) } else { serde_json::to_vec(&json) }.unwrap();
        let decoded = decode_json(&text).map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&text))))?;
        // Compared as protobuf: NaN is not equal to itself.
        prop_assert_eq!(encode_protobuf(&decoded), encode_protobuf(&request));
    }

    #[test]
    fn exported_bodies_are_the_canonical_records(request in request().prop_filter("mappable", mappable)) {
        let pkcs8 = SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap();
        let signer = SoftwareSigner::new(SoftwareKey::from_pkcs8(SigAlg::Es256, &pkcs8).unwrap(), None);
        let mut builder = BatchBuilder::new();
        for_each_record(&request, NOW, &mut Vec::new(), |record| builder.push_input(record, &|| NOW)).unwrap();
        let mut line = Vec::new();
        builder.seal(&mut ChainHead::new_epoch("prop", None, &teelog_core::random::SystemRandom).unwrap(), &signer, NOW, &mut line).unwrap();
        let exported = export_batch(&line, &[]).unwrap();
        let bodies: Vec<String> = exported.resource_logs[0].scope_logs[0].log_records[1..].iter().map(|r| {
            match &r.body { Some(AnyValue { value: Some(Value::StringValue(s)) }) => s.clone(), other => panic!("{other:?}") }
        }).collect();
        prop_assert_eq!(bodies, canonical(&request));
    }
}
