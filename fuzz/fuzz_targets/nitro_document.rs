//! libFuzzer entry for the `nitro_document` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::nitro_document(data));
