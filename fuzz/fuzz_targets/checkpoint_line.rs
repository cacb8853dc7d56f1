//! libFuzzer entry for the `checkpoint_line` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::checkpoint_line(data));
