//! `TeelogLayer`: an application's `tracing` events signed in-process, every field kept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic
#![cfg(feature = "tracing-layer")]

mod common;

use std::sync::Arc;

use teelog_identity::Provider;
use teelog_ship::layer::TeelogLayer;
use teelog_ship::metrics::ShipMetrics;
use teelog_ship::pipeline::PipelineOptions;
use tracing_subscriber::layer::SubscriberExt;

/// A pipeline of a software identity on stream `app` that keeps its spool, without heartbeats.
fn software_pipeline() -> (common::Spool, teelog_ship::pipeline::Pipeline) {
    let options = PipelineOptions { keep_spool: true, heartbeat: None, ..PipelineOptions::default() };
    common::start(Provider::Software { measurement: None }, "app", options, Arc::new(ShipMetrics::default()))
}

#[test]
fn events_are_signed_with_their_fields_and_spans() {
    let (spool, pipeline) = software_pipeline();

    let (layer, guard) = TeelogLayer::new(pipeline);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let request = tracing::info_span!("request", id = 7u64, path = "/pay");
        let _in_request = request.enter();
        let step = tracing::debug_span!("step", n = tracing::field::Empty);
        step.record("n", 2);
        let _in_step = step.enter();
        tracing::info!(user = "alice", amount = 12.5, ok = true, delta = -3i64, "payment {} approved", 41);
        tracing::warn!(target: "teelog::ship", "the pipeline's own: not signed");
        tracing::warn!(target: "teelog::deliver", "the delivery's own: not signed");
        tracing::warn!(target: "teelog::delivery", "another target that only starts alike");
        let error = std::io::Error::other("disk full");
        tracing::error!(error = &error as &dyn std::error::Error, big = u128::MAX, "write failed");
    });
    drop(guard);

    let (report, records) = common::verify(&spool);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 3, "{report:?}");

    let first = &records[0];
    assert!(teelog_core::timestamp::parse_rfc3339(first["ts"].as_str().unwrap()).is_ok(), "{first}");
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["target"], module_path!());
    assert_eq!(first["message"], "payment 41 approved");
    assert_eq!(
        first["attributes"],
        serde_json::json!({"user": "alice", "amount": 12.5, "ok": true, "delta": -3})
    );
    assert_eq!(
        first["spans"],
        serde_json::json!([
            {"name": "request", "fields": {"id": 7, "path": "/pay"}},
            {"name": "step", "fields": {"n": 2}},
        ])
    );
    assert_eq!(records[1]["target"], "teelog::delivery");
    let second = &records[2];
    assert_eq!(second["level"], "ERROR");
    assert_eq!(second["message"], "write failed");
    assert_eq!(second["attributes"]["error"], "disk full");
    assert_eq!(second["attributes"]["big"], u128::MAX.to_string());
}

/// Integers beyond ±2^53, which canonical JSON cannot hold exactly, are signed as strings:
/// the event is never refused, and never lost.
#[test]
fn integers_beyond_2_pow_53_are_signed_as_strings() {
    let (spool, pipeline) = software_pipeline();
    let (layer, guard) = TeelogLayer::new(pipeline);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let span = tracing::info_span!("job", id = u64::MAX);
        let _in = span.enter();
        tracing::info!(
            u = u64::MAX,
            i = i64::MIN,
            edge = 9_007_199_254_740_992u64,
            past = 9_007_199_254_740_993i128,
            "big"
        );
    });
    drop(guard);

    let (report, records) = common::verify(&spool);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 1, "{report:?}");
    assert_eq!(
        records[0]["attributes"],
        serde_json::json!({
            "u": u64::MAX.to_string(),
            "i": i64::MIN.to_string(),
            "edge": 9_007_199_254_740_992u64,
            "past": "9007199254740993",
        })
    );
    assert_eq!(records[0]["spans"][0]["fields"]["id"], u64::MAX.to_string());
}
