//! Sample audit records in the shape of the seed's example, for `teelog quickstart` and
//! `teelog-bench`: as NDJSON lines, and as the same records in an OTLP request. Record `i` is
//! the same in every run, so that runs are comparable.
#![forbid(unsafe_code)]

use std::io::Write;

use teelog_core::timestamp::{format_rfc3339, UnixNanos};
use teelog_otlp::common::{any_value, AnyValue, KeyValue};
use teelog_otlp::logs::{LogRecord, ResourceLogs, ScopeLogs};

/// 2026-12-02T09:00:00Z: sample logs start at a fixed time so that runs are comparable.
const START: UnixNanos = 1_796_202_000_000_000_000;

/// The fields of sample record `i`.
struct Sample {
    ts: UnixNanos,
    node: &'static str,
    outcome: &'static str,
    execution: u64,
    duration_ms: u64,
}

impl Sample {
    fn new(i: u64) -> Self {
        const NODES: [&str; 4] = ["calculation", "decision", "fetch", "score"];
        const OUTCOMES: [&str; 3] = ["completed", "completed", "retried"];
        let node = NODES[(i % 4) as usize];
        let outcome = OUTCOMES[(i % 3) as usize];
        Sample {
            ts: START + i as i64 * 1_000_000,
            node,
            outcome,
            execution: i / 8,
            duration_ms: (i * 37) % 1000,
        }
    }

    fn message(&self) -> String {
        format!("step {} {}", self.node, self.outcome)
    }
}

/// Writes `count` NDJSON records, each padded to about `target_bytes` (at least its natural size).
pub fn write_records(out: &mut impl Write, count: u64, target_bytes: usize) -> std::io::Result<()> {
    let mut line = String::with_capacity(target_bytes + 64);
    for i in 0..count {
        let r = Sample::new(i);
        line.clear();
        line.push_str(&format!(
            r#"{{"ts":"{}","level":"Information","message":"{}","attributes":{{"executionId":"exec-{}","nodeType":"{}","outcome":"{}","durationMs":{}}}"#,
            format_rfc3339(r.ts),
            r.message(),
            r.execution,
            r.node,
            r.outcome,
            r.duration_ms
        ));
        let pad = target_bytes.saturating_sub(line.len() + 12);
        if pad > 0 {
            line.push_str(",\"pad\":\"");
            line.extend(std::iter::repeat_n('x', pad));
            line.push('"');
        }
        line.push_str("}\n");
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Sample records `first..first + count` as one OTLP request; each maps (docs/FORMAT.md §13.2)
/// to a record of about `target_bytes`, like the NDJSON ones.
pub fn otlp_request(first: u64, count: u64, target_bytes: usize) -> teelog_otlp::ExportLogsServiceRequest {
    let text = |s: String| Some(AnyValue { value: Some(any_value::Value::StringValue(s)) });
    let attribute = |key: &str, value| KeyValue { key: key.into(), value, ..Default::default() };
    let log_records = (first..first + count)
        .map(|i| {
            let r = Sample::new(i);
            let mut attributes = vec![
                attribute("executionId", text(format!("exec-{}", r.execution))),
                attribute("nodeType", text(r.node.into())),
                attribute("outcome", text(r.outcome.into())),
                attribute(
                    "durationMs",
                    Some(AnyValue { value: Some(any_value::Value::IntValue(r.duration_ms as i64)) }),
                ),
            ];
            // The mapped record without padding is about 190 bytes.
            let pad = target_bytes.saturating_sub(190 + 8);
            if pad > 0 {
                attributes.push(attribute("pad", text("x".repeat(pad))));
            }
            LogRecord {
                time_unix_nano: r.ts as u64,
                severity_number: 9,
                severity_text: "Information".into(),
                body: text(r.message()),
                attributes,
                ..Default::default()
            }
        })
        .collect();
    teelog_otlp::ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs { log_records, ..Default::default() }],
            ..Default::default()
        }],
    }
}
