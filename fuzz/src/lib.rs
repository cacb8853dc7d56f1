//! Fuzz targets for every parser of bytes that teelog does not trust (issue 18), with what they
//! need: a fixed signer so that generated batches verify, a reader that turns fuzz input into
//! choices, and seed corpora built from the project's own vectors.
//!
//! Each target is a plain function of the input bytes, so that the same code runs under libFuzzer
//! (`fuzz_targets/`, built by `scripts/fuzz`) and over the seed corpora in the test suite
//! (`tests/corpus.rs`). A target panics only when a property fails: a parser panicking on its
//! input, or an invariant beyond "no panic" (idempotence, round trips, order independence).
//! Inputs are bounded by libFuzzer's `-max_len`; the targets add no limits of their own.

// A broken property is reported the way libFuzzer sees it: a panic with a message.
#![allow(clippy::panic)]
// The targets' own harness, used by fuzz_targets/ and tests/ only: no library for others.
#![allow(missing_docs)]

pub mod corpus;
pub mod input;
pub mod signer;
pub mod targets;

/// One fuzz target: its name (the libFuzzer binary's, and its corpus directory's) and its body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `scripts/fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target { name: "batch_line", run: targets::batch_line },
    Target { name: "checkpoint_line", run: targets::checkpoint_line },
    Target { name: "evidence_bundle", run: targets::evidence_bundle },
    Target { name: "verifier_order", run: targets::verifier_order },
    Target { name: "canonical_json", run: targets::canonical_json },
    Target { name: "seed_batch", run: targets::seed_batch },
    Target { name: "nitro_document", run: targets::nitro_document },
    Target { name: "snp_report", run: targets::snp_report },
    Target { name: "tdx_quote", run: targets::tdx_quote },
    Target { name: "tdx_collateral", run: targets::tdx_collateral },
    Target { name: "tpm_evidence", run: targets::tpm_evidence },
    Target { name: "otlp", run: targets::otlp },
    Target { name: "relay_frames", run: targets::relay_frames },
    Target { name: "loki_query", run: targets::loki_query },
    Target { name: "device_responses", run: targets::device_responses },
    Target { name: "config_files", run: targets::config_files },
];
