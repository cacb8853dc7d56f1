//! libFuzzer entry for the `otlp` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::otlp(data));
