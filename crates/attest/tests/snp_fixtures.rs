//! The real SEV-SNP report in shared/fixtures: its VCEK chains to the pinned Milan ARK and signs
//! it; any flipped byte, a foreign root or a debug policy is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use teelog_attest::snp::{AmdChain, SnpReport};
use teelog_attest::AttestError;
use teelog_fixtures::Fixtures;

/// AMD's Milan ARK and ASK, as its key server serves them.
fn milan(f: &Fixtures) -> AmdChain {
    AmdChain::from_pem(&f.read("roots/amd_milan_ask_ark_asvk.pem")).unwrap()
}

/// 2026-12-02T00:00:00Z: reports carry no time, so the chain is checked now.
const NOW: u64 = 1_796_169_600;

#[test]
fn the_fixture_report_verifies_under_its_vcek() {
    let Some(f) = common::fixtures() else { return };
    let report = SnpReport::parse(&f.read("snp/snp_trustee_milan_report.bin")).unwrap();
    assert_eq!(report.version, 2);
    assert_eq!(report.policy, 0x3001f);
    assert!(!report.debug_allowed());
    assert_eq!(report.vmpl, 0);
    assert_eq!(
        hex::encode(report.measurement),
        "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c"
    );
    assert_eq!(
        hex::encode(&report.report_data[..32]),
        "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2"
    );
    let tcb = report.reported_tcb;
    assert_eq!((tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode), (3, 0, 8, 115));
    let verified = report.verify(&f.read("snp/snp_trustee_milan_vcek.der"), &milan(&f), NOW, false).unwrap();
    assert_eq!(hex::encode(verified.ark_sha256), teelog_attest::snp::AMD_ARK_MILAN_SHA256);
}

#[test]
fn any_flipped_byte_of_the_signed_report_or_signature_fails() {
    let Some(f) = common::fixtures() else { return };
    let bytes = f.read("snp/snp_trustee_milan_report.bin");
    let vcek = f.read("snp/snp_trustee_milan_vcek.der");
    let chain = milan(&f);
    // The signed part (0x000..0x2a0, every 5th byte) and the significant signature bytes.
    let positions = (0..0x2a0).step_by(5).chain(0x2a0..0x2a0 + 48).chain(0x2e8..0x2e8 + 48);
    for i in positions {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x01;
        let outcome = SnpReport::parse(&flipped).and_then(|r| r.verify(&vcek, &chain, NOW, true));
        assert!(outcome.is_err(), "flipping byte {i:#x} went unnoticed");
    }
}

#[test]
fn a_foreign_vcek_root_or_policy_is_refused() {
    let Some(f) = common::fixtures() else { return };
    let report = || SnpReport::parse(&f.read("snp/snp_trustee_milan_report.bin")).unwrap();
    let chain = milan(&f);
    let mut vcek = f.read("snp/snp_trustee_milan_vcek.der");
    let last = vcek.len() - 1;
    vcek[last] ^= 1; // the ASK's signature over the VCEK
    assert!(matches!(report().verify(&vcek, &chain, NOW, false), Err(AttestError::Chain(_))));

    let intel = f.read("roots/intel_sgx_root_ca.pem");
    assert!(matches!(AmdChain::from_pem(&intel), Err(AttestError::Root(_))));

    // Before the VCEK was issued.
    let vcek = f.read("snp/snp_trustee_milan_vcek.der");
    assert!(matches!(report().verify(&vcek, &chain, 1_500_000_000, false), Err(AttestError::Chain(_))));

    // A guest whose policy allows debugging (bit 19): refused unless allowed, whatever the
    // signature says.
    let mut debug = f.read("snp/snp_trustee_milan_report.bin");
    debug[0x08 + 2] |= 0x08;
    let parsed = SnpReport::parse(&debug).unwrap();
    assert!(parsed.debug_allowed());
    assert_eq!(parsed.clone().verify(&vcek, &chain, NOW, false).unwrap_err(), AttestError::DebugMode);
    assert_eq!(parsed.verify(&vcek, &chain, NOW, true).unwrap_err(), AttestError::Signature);

    for bad_len in [0, 100, 1183, 1185] {
        assert!(matches!(SnpReport::parse(&vec![2; bad_len]), Err(AttestError::Snp(_))));
    }
}
