//! Drop mode: records that find the queue full are dropped, and the signed stream says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use teelog_identity::Provider;
use teelog_ship::metrics::ShipMetrics;
use teelog_ship::pipeline::{Origin, PipelineOptions, RecordBuf, WhenFull};

fn records(first: usize, count: usize) -> RecordBuf {
    let mut buf = RecordBuf::default();
    for i in first..first + count {
        buf.push(format!(r#"{{"message":"record {i}","pad":"{}"}}"#, "x".repeat(60)).as_bytes());
    }
    buf
}

#[test]
fn a_full_queue_drops_records_and_a_signed_notice_counts_them() {
    let (kept, dropped) = (records(0, 6), [records(6, 3), records(9, 4)]);
    // Nothing is sealed before close (no ack waits, the delay is long), so the first chunk
    // holds the budget and the later ones cannot fit.
    let options = PipelineOptions {
        queue_bytes: kept.byte_len() + 10,
        when_full: WhenFull::Drop,
        max_delay: Duration::from_secs(600),
        heartbeat: None,
        keep_spool: true,
        ..PipelineOptions::default()
    };
    let metrics = Arc::new(ShipMetrics::default());
    let (spool, pipeline) =
        common::start(Provider::Software { measurement: None }, "app", options, metrics.clone());
    let submitter = pipeline.submitter();
    submitter.submit_blocking(kept, Origin::named("test")).unwrap();
    for chunk in dropped {
        submitter.submit_blocking(chunk, Origin::named("test")).unwrap();
    }
    drop(submitter);
    pipeline.close().unwrap();
    assert_eq!(metrics.records_dropped.load(Ordering::Relaxed), 7);

    let (report, signed) = common::verify(&spool);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 7, "six records and the notice: {report:?}");
    let messages: Vec<&str> = signed.iter().filter_map(|r| r["message"].as_str()).collect();
    assert_eq!(messages[..6], ["record 0", "record 1", "record 2", "record 3", "record 4", "record 5"]);
    let notice = &signed[6];
    assert_eq!(notice["teelog_notice"], "records_dropped", "{notice}");
    assert_eq!(notice["dropped"], 7, "{notice}");
    let (from, to) = (notice["dropped_from"].as_str().unwrap(), notice["dropped_to"].as_str().unwrap());
    let parse = |t| teelog_core::timestamp::parse_rfc3339(t).unwrap();
    assert!(parse(from) <= parse(to), "{notice}");
    assert!(notice["message"].as_str().unwrap().starts_with("teelog dropped 7 records between"), "{notice}");
}
