//! The TPM's own evidence for a provisioned key, member by member, from a real TPM 2.0 emulator
//! (swtpm, driven with tpm2-tools; `.ci/run` installs both): a signing key under a PCR policy,
//! certified and quoted by an attestation key. This checks the evidence alone, against the AK
//! it names; `identity.rs` checks the AK certificate and signing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use common::Lab;
use teelog_attest::tpm::TpmEvidence;
use teelog_attest::AttestError;
use teelog_tpm::provision::provision;

const MEMBERS: [&str; 8] = [
    "ak_public",
    "key_public",
    "certify",
    "certify_signature",
    "quote",
    "quote_signature",
    "pcr_values",
    "ek_public",
];

fn evidence(f: &[Vec<u8>]) -> TpmEvidence<'_> {
    TpmEvidence {
        ak_public: &f[0],
        key_public: &f[1],
        certify: &f[2],
        certify_signature: &f[3],
        quote: &f[4],
        quote_signature: &f[5],
        pcr_values: &f[6],
        ek_public: &f[7],
    }
}

#[test]
fn a_pcr_bound_tpm_key_is_certified_and_quoted() {
    let lab = Lab::new();
    let nonce = [0x0a, 0x0b, 0x0c, 0x0d];
    let bundle = provision(&lab.request(&[0, 1, 2], &nonce)).unwrap().bundle;
    let members = bundle.members();
    let files: Vec<Vec<u8>> =
        MEMBERS.iter().map(|name| members.iter().find(|(n, _)| n == name).unwrap().1.to_vec()).collect();
    let verified = evidence(&files).verify(Some(&nonce)).unwrap();
    let selection = teelog_tpm::command::pcr_selection(&[0, 1, 2]);
    let digest = teelog_core::merkle::sha256(&files[6]);
    assert_eq!(verified.measurement, teelog_attest::tpm::measurement(&selection, &digest));
    assert_eq!(verified.pcrs, [0, 1, 2]);
    assert_eq!(verified.key.alg(), teelog_core::SigAlg::Es256);

    // A replayed quote, other PCR values, and any flipped byte are refused.
    let err = evidence(&files).verify(Some(&[1, 2, 3, 4])).unwrap_err();
    assert!(matches!(&err, AttestError::Tpm(why) if why.contains("nonce")), "{err}");
    for (index, name) in MEMBERS.iter().enumerate() {
        for at in (0..files[index].len()).step_by(3) {
            let mut forged = files.clone();
            forged[index][at] ^= 0x01;
            assert!(
                evidence(&forged).verify(Some(&nonce)).is_err(),
                "{name}: flipping byte {at} went unnoticed"
            );
        }
    }
    // A quote that selects PCR16 or PCR23, which software can reset, binds nothing.
    for (pcrs, expected) in [("sha256:16", "PCR16"), ("sha256:0,23", "PCR23")] {
        lab.tpm2(&[
            "tpm2_quote",
            "-c",
            "ak.ctx",
            "-l",
            pcrs,
            "-m",
            "q.attest",
            "-s",
            "q.sig",
            "-g",
            "sha256",
            "-Q",
        ]);
        let mut other = files.clone();
        other[4] = std::fs::read(lab.work.join("q.attest")).unwrap();
        other[5] = std::fs::read(lab.work.join("q.sig")).unwrap();
        let err = evidence(&other).verify(None).unwrap_err().to_string();
        assert!(err.contains(expected), "{pcrs}: {err}");
    }
    // The certified key must be the one presented: the AK's own public area is not it.
    let mut swapped = files.clone();
    swapped[1] = files[0].clone();
    assert!(evidence(&swapped).verify(Some(&nonce)).is_err());
}
