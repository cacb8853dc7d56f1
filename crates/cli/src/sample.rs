//! Sample audit records in the shape of the seed's example, for the quickstart and the bench.

use std::io::Write;

use teelog_core::timestamp::{format_rfc3339, UnixNanos};

/// 2026-12-02T09:00:00Z: sample logs start at a fixed time so that runs are comparable.
const START: UnixNanos = 1_796_202_000_000_000_000;

/// Writes `count` NDJSON records, each padded to about `target_bytes` (at least its natural size).
pub fn write_records(out: &mut impl Write, count: u64, target_bytes: usize) -> std::io::Result<()> {
    const NODES: [&str; 4] = ["calculation", "decision", "fetch", "score"];
    const OUTCOMES: [&str; 3] = ["completed", "completed", "retried"];
    let mut line = String::with_capacity(target_bytes + 64);
    for i in 0..count {
        line.clear();
        let ts = format_rfc3339(START + i as i64 * 1_000_000);
        let node = NODES[(i % 4) as usize];
        let outcome = OUTCOMES[(i % 3) as usize];
        line.push_str(&format!(
            r#"{{"ts":"{ts}","level":"Information","message":"step {node} {outcome}","attributes":{{"executionId":"exec-{}","nodeType":"{node}","outcome":"{outcome}","durationMs":{}}}"#,
            i / 8,
            (i * 37) % 1000
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
