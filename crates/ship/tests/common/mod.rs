//! Shared by the shipper's tests: a pipeline signing into a fresh spool, and the spool verified.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic
// Each test file uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use teelog_core::{Origin, PublicKey, Report, SigAlg, Verifier, VerifyOptions};
use teelog_identity::{Identity, Provider};
use teelog_ship::metrics::ShipMetrics;
use teelog_ship::pipeline::{Pipeline, PipelineOptions};
use teelog_ship::{Output, StreamSigner};
use teelog_store::{Store, StoreOptions};

/// A spool in a temporary directory, and the key its batches are signed with.
pub struct Spool {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub public: PublicKey,
}

/// A pipeline signing `stream` into a new spool, with a new identity of `provider`.
pub fn start(
    provider: Provider<'_>,
    stream: &str,
    options: PipelineOptions,
    metrics: Arc<ShipMetrics>,
) -> (Spool, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let (id_dir, spool_dir) = (dir.path().join("id"), dir.path().join("spool"));
    let public = Identity::create(&id_dir, SigAlg::Es256, provider).unwrap().expect("a keyed identity");
    let identity = Identity::load_exclusive(&id_dir).unwrap();
    let store = Store::open(&spool_dir, StoreOptions::default()).unwrap();
    let signer = StreamSigner::open(identity, stream, Output::Store(store)).unwrap();
    let pipeline = Pipeline::start(signer, options, metrics).unwrap();
    (Spool { _dir: dir, dir: spool_dir, public }, pipeline)
}

/// Every spool line through the verifier with the spool's key: the report, and every signed
/// record in order.
pub fn verify(spool: &Spool) -> (Report, Vec<Value>) {
    let mut verifier =
        Verifier::new(VerifyOptions { trusted_keys: vec![spool.public.clone()], ..VerifyOptions::default() });
    let mut records = Vec::new();
    for segment in teelog_store::segments(&spool.dir).unwrap() {
        let name = segment.display().to_string();
        for (i, line) in std::fs::read_to_string(&segment).unwrap().lines().enumerate() {
            verifier.push_line(Origin { source: &name, line: i as u64 + 1 }, line.as_bytes());
            let batch: Value = serde_json::from_str(line).unwrap();
            records.extend(batch["records"].as_array().into_iter().flatten().cloned());
        }
    }
    (verifier.finish(), records)
}
