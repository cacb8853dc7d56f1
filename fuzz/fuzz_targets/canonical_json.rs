//! libFuzzer entry for the `canonical_json` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::canonical_json(data));
