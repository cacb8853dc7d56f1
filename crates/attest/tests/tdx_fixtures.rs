//! The real TDX DCAP v4 quote in shared/fixtures: quote, QE report and PCK chain verify to the
//! pinned Intel root; its debug bit is refused unless allowed; any flipped byte fails.

mod common;

use common::fixture;
use teelog_attest::tdx::{intel_sgx_root, TdxQuote};
use teelog_attest::AttestError;

const NOW: u64 = 1_796_169_600;

fn quote() -> Vec<u8> {
    fixture("tdx/tdx_trustee_quote_v4.dat")
}

#[test]
fn the_fixture_quote_verifies_but_is_a_debug_td() {
    let parsed = TdxQuote::parse(&quote()).unwrap();
    assert!(parsed.debug());
    assert_eq!(
        hex::encode(parsed.mrtd),
        "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031"
    );
    assert_eq!(parsed.rtmrs[2], [0; 48]);
    let root = intel_sgx_root().unwrap();
    assert_eq!(parsed.clone().verify(&root, NOW, false).unwrap_err(), AttestError::DebugMode);
    let verified = parsed.verify(&root, NOW, true).unwrap();
    assert_eq!(hex::encode(verified.root_sha256), teelog_attest::tdx::INTEL_SGX_ROOT_CA_SHA256);
}

#[test]
fn any_flipped_byte_fails_and_only_the_pinned_root_is_accepted() {
    let bytes = quote();
    let root = intel_sgx_root().unwrap();
    // Header and TD report (every 3rd byte), the signatures, key and QE report, then the chain.
    let positions = (0..632)
        .step_by(3)
        .chain(636..636 + 128 + 6 + 384 + 64 + 2 + 32)
        .chain((1300..bytes.len()).step_by(41));
    for i in positions {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x01;
        let outcome = TdxQuote::parse(&flipped).and_then(|q| q.verify(&root, NOW, true));
        assert!(outcome.is_err(), "flipping byte {i} went unnoticed");
    }
    let amd = fixture("snp/snp_trustee_milan_vcek.der");
    assert!(matches!(TdxQuote::parse(&bytes).unwrap().verify(&amd, NOW, true), Err(AttestError::Root(_))));
    // The PCK certificate is valid from 2023-02-07.
    let err = TdxQuote::parse(&bytes).unwrap().verify(&root, 1_600_000_000, true).unwrap_err();
    assert!(matches!(err, AttestError::Chain(_)), "{err}");
    for len in (0..bytes.len()).step_by(113) {
        assert!(TdxQuote::parse(&bytes[..len]).is_err(), "truncated to {len}");
    }
}
