//! libFuzzer entry for the `tpm_evidence` target (fuzz/src/targets.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| teelog_fuzz::targets::tpm_evidence(data));
