//! The dev provider: a software key and a local root CA that issue a document in the Nitro layout
//! (COSE_Sign1, ES384, cabundle root first), so that dev identities take exactly the same parser
//! and checks as real Nitro documents. Auditors accept one only when handed its root with
//! `--trust-root`, and reports mark it as dev.

use std::collections::BTreeMap;

#[cfg(feature = "issue")]
mod issuing;
#[cfg(all(feature = "issue", test))]
pub(crate) use issuing::issue_under;
#[cfg(feature = "issue")]
pub use issuing::{issue, DevAttestation, DevClaims};

/// PCR0, PCR1 and PCR2 of a dev document when none are given: SHA-384 of `"teelog dev PCR<i>"`,
/// plainly not a real measurement, and never the all-zero debug pattern.
pub fn default_pcrs() -> BTreeMap<u64, Vec<u8>> {
    (0..3)
        .map(|i| {
            (
                i,
                ring::digest::digest(&ring::digest::SHA384, format!("teelog dev PCR{i}").as_bytes())
                    .as_ref()
                    .to_vec(),
            )
        })
        .collect()
}
