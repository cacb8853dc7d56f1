//! A whole TPM identity against a manufactured swtpm: provisioning (EK certificate checked,
//! credential activation, AK certified by an enrollment CA), the evidence bundle an auditor
//! verifies, and signing that the TPM refuses once a bound PCR changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use common::Lab;
use teelog_attest::tpm::bundle::TpmBundle;
use teelog_attest::tpm::enrollment::EnrollmentCa;
use teelog_attest::{AttestError, TrustRoot};
use teelog_core::HeaderSigner;
use teelog_tpm::provision::{provision, Request, SRK_HANDLE};
use teelog_tpm::signer::KeyBlobs;
use teelog_tpm::TpmSigner;

#[test]
fn a_provisioned_tpm_key_signs_only_in_its_measured_state() {
    let lab = Lab::new();
    let previous_head = [0xab; 32];
    let pcrs = [0, 1, 2, 7];
    let request = lab.request(&pcrs, &previous_head);
    let provisioned = provision(&request).unwrap();

    // The bundle as an auditor gets it.
    let document = provisioned.bundle.encode().unwrap();
    let bundle = TpmBundle::parse(&document).unwrap();
    assert_eq!(bundle, provisioned.bundle);
    let ca_root = TrustRoot::from_pem_or_der(lab.ca.certificate_der()).unwrap();
    let verified = bundle.verify(std::slice::from_ref(&ca_root), lab.now).unwrap();
    assert_eq!(verified.evidence.qualifying_data, previous_head);
    let selection = teelog_tpm::command::pcr_selection(&pcrs);
    let digest = teelog_core::merkle::sha256(&bundle.pcr_values);
    assert_eq!(verified.evidence.measurement, teelog_attest::tpm::measurement(&selection, &digest));
    assert_eq!(verified.evidence.pcrs, pcrs);
    assert_eq!(verified.root_sha256, *ca_root.sha256());

    // Another enrollment CA did not certify this AK; the TPM maker's CA is not an enrollment CA.
    let (other, _) = EnrollmentCa::generate(lab.now).unwrap();
    let other_root = TrustRoot::from_pem_or_der(other.certificate_der()).unwrap();
    let err = bundle.verify(&[other_root], lab.now).unwrap_err();
    assert!(matches!(&err, AttestError::Chain(why) if why.contains("AK certificate")), "{err}");
    assert!(bundle.verify(&lab.ek_roots, lab.now).is_err());
    // An EK certificate from another maker is refused at enrollment.
    let foreign = Request { ek_roots: std::slice::from_ref(&ca_root), ..request };
    let err = provision(&foreign).err().unwrap();
    assert!(err.to_string().contains("EK certificate"), "{err}");
    // No flipped byte of the document goes unnoticed, and none makes the parser panic.
    for at in 0..document.len() {
        let mut forged = document.clone();
        forged[at] ^= 0x01;
        let outcome =
            TpmBundle::parse(&forged).and_then(|b| b.verify(std::slice::from_ref(&ca_root), lab.now));
        assert!(outcome.is_err(), "flipping byte {at} went unnoticed");
    }

    let blobs = KeyBlobs { private: &provisioned.key_private, public: &bundle.key_public };
    let signer = TpmSigner::open(&lab.tpm.tcti, SRK_HANDLE, &blobs, &pcrs, None, None).unwrap();
    assert_eq!(signer.public_key(), &verified.evidence.key);
    for message in [&b"a batch header"[..], b"another"] {
        let signature = signer.sign(message).unwrap();
        assert!(signer.public_key().verify_p1363(message, &signature));
    }
    drop(signer);

    // Once PCR7 moves, the TPM itself refuses to sign.
    lab.tpm2(&["tpm2_pcrextend", &format!("7:sha256={}", "01".repeat(32))]);
    let signer = TpmSigner::open(&lab.tpm.tcti, SRK_HANDLE, &blobs, &pcrs, None, None).unwrap();
    let err = signer.sign(b"after the change").unwrap_err().to_string();
    assert!(err.contains("policy check failed"), "{err}");
}
