//! libFuzzer entry for the `relay_frames` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::relay_frames(data));
