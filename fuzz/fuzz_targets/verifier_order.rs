//! libFuzzer entry for the `verifier_order` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::verifier_order(data));
