//! Shared by the fixture tests: the real documents in shared/fixtures/attestation.

use std::path::PathBuf;

/// The bytes of `shared/fixtures/attestation/<name>`, beside the repository.
pub fn fixture(name: &str) -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/attestation").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
