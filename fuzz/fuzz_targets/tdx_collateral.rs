//! libFuzzer entry for the `tdx_collateral` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::tdx_collateral(data));
