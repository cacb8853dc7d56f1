//! libFuzzer entry for the `snp_report` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::snp_report(data));
