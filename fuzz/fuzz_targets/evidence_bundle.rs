//! libFuzzer entry for the `evidence_bundle` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::evidence_bundle(data));
