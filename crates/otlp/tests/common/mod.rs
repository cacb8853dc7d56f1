//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic
#![allow(dead_code)] // each test binary uses a different part

use teelog_core::canon::Canonicalizer;
use teelog_core::record::canonicalize_record;
use teelog_otlp::common::{any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList};
use teelog_otlp::{for_each_record, ExportLogsServiceRequest, MapError};

/// The `now` given to the canonicaliser for records without a time.
pub const NOW: i64 = 1_796_227_200_000_000_000;

pub fn val(value: Value) -> AnyValue {
    AnyValue { value: Some(value) }
}

pub fn s(text: &str) -> AnyValue {
    val(Value::StringValue(text.into()))
}

pub fn int(v: i64) -> AnyValue {
    val(Value::IntValue(v))
}

pub fn double(v: f64) -> AnyValue {
    val(Value::DoubleValue(v))
}

pub fn array(values: Vec<AnyValue>) -> AnyValue {
    val(Value::ArrayValue(ArrayValue { values }))
}

pub fn kvlist(values: Vec<KeyValue>) -> AnyValue {
    val(Value::KvlistValue(KeyValueList { values }))
}

pub fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue { key: key.into(), value: Some(value), ..Default::default() }
}

/// The mapped (not yet canonical) records of a request.
pub fn mapped(request: &ExportLogsServiceRequest) -> Result<Vec<String>, MapError<std::convert::Infallible>> {
    let mut records = Vec::new();
    let mut buf = Vec::new();
    for_each_record(request, NOW, &mut buf, |record| {
        records.push(String::from_utf8(record.to_vec()).expect("mapped records are UTF-8"));
        Ok(())
    })?;
    Ok(records)
}

/// The canonical record bytes a request's records become, as `BatchBuilder::push_input` writes them.
pub fn canonical(request: &ExportLogsServiceRequest) -> Vec<String> {
    let mut canon = Canonicalizer::new();
    mapped(request)
        .unwrap_or_else(|e| panic!("mapping failed: {e}"))
        .iter()
        .map(|record| {
            let mut out = Vec::new();
            canonicalize_record(&mut canon, record.as_bytes(), &|| NOW, &mut out)
                .unwrap_or_else(|e| panic!("the canonicaliser refused {record}: {e}"));
            String::from_utf8(out).expect("canonical records are UTF-8")
        })
        .collect()
}

/// The error message of a request whose mapping fails.
pub fn map_error(request: &ExportLogsServiceRequest) -> String {
    match mapped(request) {
        Ok(records) => panic!("expected a mapping error, got {records:?}"),
        Err(e) => e.to_string(),
    }
}
