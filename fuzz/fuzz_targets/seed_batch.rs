//! libFuzzer entry for the `seed_batch` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::seed_batch(data));
