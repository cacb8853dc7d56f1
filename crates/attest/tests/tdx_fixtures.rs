//! The real TDX DCAP v4 quote in shared/fixtures: quote, QE report and PCK chain verify to the
//! pinned Intel root; its debug bit is refused unless allowed; any flipped byte fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use teelog_attest::tdx::{TdxQuote, INTEL_SGX_ROOT_CA_SHA256};
use teelog_attest::AttestError;

const NOW: u64 = 1_796_169_600;
const QUOTE: &str = "tdx/tdx_trustee_quote_v4.dat";

#[test]
fn the_fixture_quote_verifies_but_is_a_debug_td() {
    let Some(f) = common::fixtures() else { return };
    let parsed = TdxQuote::parse(&f.read(QUOTE)).unwrap();
    assert!(parsed.debug());
    assert_eq!(
        hex::encode(parsed.mrtd),
        "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031"
    );
    assert_eq!(parsed.rtmrs[2], [0; 48]);
    assert_eq!(parsed.clone().verify(NOW, false).unwrap_err(), AttestError::DebugMode);
    let verified = parsed.verify(NOW, true).unwrap();
    assert_eq!(hex::encode(verified.root_sha256), INTEL_SGX_ROOT_CA_SHA256);
    // The root is the copy the quote carries, which is the pinned root itself.
    assert_eq!(verified.root_der(), pem_der(&f.read("roots/intel_sgx_root_ca.pem")));
}

#[test]
fn any_flipped_byte_fails_and_only_the_pinned_root_is_accepted() {
    let Some(f) = common::fixtures() else { return };
    let bytes = f.read(QUOTE);
    // Header and TD report (every 3rd byte), the signatures, key and QE report, then the chain.
    let positions = (0..632)
        .step_by(3)
        .chain(636..636 + 128 + 6 + 384 + 64 + 2 + 32)
        .chain((1300..bytes.len()).step_by(41));
    for i in positions {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x01;
        let outcome = TdxQuote::parse(&flipped).and_then(|q| q.verify(NOW, true));
        assert!(outcome.is_err(), "flipping byte {i} went unnoticed");
    }
    // A chain that ends at another root: one base64 digit of the last certificate changed.
    let last = bytes.windows(17).rposition(|w| w == b"BEGIN CERTIFICATE").unwrap();
    let at = last + 200;
    let mut other_root = bytes.clone();
    other_root[at] = if other_root[at] == b'A' { b'B' } else { b'A' };
    let err = TdxQuote::parse(&other_root).unwrap().verify(NOW, true).unwrap_err();
    assert!(
        matches!(&err, AttestError::Chain(why) if why.contains("does not end at the pinned Intel SGX Root CA")),
        "{err}"
    );
    // The PCK certificate is valid from 2023-02-07.
    let err = TdxQuote::parse(&bytes).unwrap().verify(1_600_000_000, true).unwrap_err();
    assert!(matches!(err, AttestError::Chain(_)), "{err}");
    for len in (0..bytes.len()).step_by(113) {
        assert!(TdxQuote::parse(&bytes[..len]).is_err(), "truncated to {len}");
    }
}

/// The DER of the one certificate of a PEM file.
fn pem_der(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}
