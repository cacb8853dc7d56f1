//! Shared by the fixture tests: the real documents in the shared fixtures' `attestation` folder.
//! Every test that reads them starts with `let Some(f) = common::fixtures() else { return };`,
//! so that it is skipped, loudly, where they are absent (see `teelog_fixtures`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use teelog_fixtures::Fixtures;

/// The attestation fixtures, or `None` (the test skipped, said on stderr) where they are absent.
pub fn fixtures() -> Option<Fixtures> {
    teelog_fixtures::open("attestation")
}
