//! Dev documents go through the Nitro parser and checks; forgeries are refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::collections::BTreeMap;

use teelog_attest::dev::{issue, DevClaims};
use teelog_attest::nitro::NitroDocument;
use teelog_attest::{AttestError, TrustRoot};
use teelog_core::{PublicKey, SigAlg, SoftwareKey};

const NOW_MS: u64 = 1_796_202_000_000;

fn key() -> PublicKey {
    SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap())
        .unwrap()
        .public()
        .clone()
}

fn pcrs(fill: u8) -> BTreeMap<u64, Vec<u8>> {
    (0..3).map(|i| (i, vec![fill.wrapping_add(i as u8); 48])).collect()
}

fn dev_doc(pcrs: &BTreeMap<u64, Vec<u8>>, bound: &PublicKey) -> (Vec<u8>, TrustRoot) {
    let issued = issue(&DevClaims {
        module_id: "dev-test",
        timestamp_ms: NOW_MS,
        pcrs,
        bound_key: bound,
        nonce: Some(&[7; 32]),
    })
    .unwrap();
    (issued.document, TrustRoot::from_pem_or_der(&issued.root_der).unwrap())
}

fn check(
    doc: &[u8],
    roots: &[TrustRoot],
    at: Option<u64>,
) -> Result<teelog_attest::nitro::NitroVerified, AttestError> {
    NitroDocument::parse(doc)?.verify(roots, at, false)
}

#[test]
fn a_dev_document_verifies_with_its_root_and_binds_the_key() {
    let bound = key();
    let (doc, root) = dev_doc(&pcrs(1), &bound);
    let verified = check(&doc, &[TrustRoot::aws_nitro(), root.clone()], None).unwrap();
    assert!(verified.dev);
    assert_eq!(verified.root_sha256, *root.sha256());
    assert_eq!(verified.document.public_key.as_deref(), Some(bound.spki_der()));
    assert_eq!(verified.document.nonce.as_deref(), Some(&[7u8; 32][..]));
    assert_eq!(verified.checked_at, NOW_MS / 1000);
}

#[test]
fn forgeries_are_refused_with_a_reason() {
    let bound = key();
    let (doc, root) = dev_doc(&pcrs(1), &bound);
    let roots = [TrustRoot::aws_nitro(), root];

    // Without its root, a dev document is not trusted: only AWS is pinned by default.
    let err = check(&doc, &[TrustRoot::aws_nitro()], None).unwrap_err();
    assert!(matches!(&err, AttestError::Chain(why) if why.contains("does not reach a pinned root")), "{err}");

    // Re-signed by another CA: a document from a second dev root, checked against the first.
    let (other, _) = dev_doc(&pcrs(1), &bound);
    assert!(matches!(check(&other, &roots, None), Err(AttestError::Chain(_))));

    // A swapped key and an altered PCR break the document's signature.
    let spki = bound.spki_der();
    let at = doc.windows(spki.len()).position(|w| w == spki).unwrap();
    let mut swapped = doc.clone();
    swapped[at + spki.len() - 1] ^= 1;
    assert_eq!(check(&swapped, &roots, None).unwrap_err(), AttestError::Signature);
    let pcr0 = vec![1u8; 48];
    let at = doc.windows(48).position(|w| w == pcr0.as_slice()).unwrap();
    let mut altered = doc.clone();
    altered[at] ^= 0x80;
    assert_eq!(check(&altered, &roots, None).unwrap_err(), AttestError::Signature);

    // The signing certificate lives three hours.
    let err = check(&doc, &roots, Some(NOW_MS / 1000 + 4 * 3600)).unwrap_err();
    assert!(matches!(&err, AttestError::Chain(why) if why.contains("expired")), "{err}");

    // Debug-mode PCRs.
    let (debug, debug_root) = dev_doc(&(0..3).map(|i| (i, vec![0; 48])).collect(), &bound);
    assert_eq!(check(&debug, &[debug_root], None).unwrap_err(), AttestError::DebugMode);

    // A missing PCR is never skipped.
    let (missing, missing_root) = dev_doc(&pcrs(1).into_iter().filter(|(i, _)| *i != 1).collect(), &bound);
    assert_eq!(check(&missing, &[missing_root], None).unwrap_err(), AttestError::MissingPcr(1));

    // Wrong curve / algorithm: the protected header must say ES384.
    // The protected header is bstr(4) {1: -35}; make it bstr(3) {1: -7}.
    let at = doc.windows(5).position(|w| w == [0x44, 0xa1, 0x01, 0x38, 0x22]).unwrap();
    let es256 = [&doc[..at], &[0x43, 0xa1, 0x01, 0x26], &doc[at + 5..]].concat();
    let err = check(&es256, &roots, None).unwrap_err();
    assert!(matches!(&err, AttestError::Cose(why) if why.contains("ES384")), "{err}");
}
