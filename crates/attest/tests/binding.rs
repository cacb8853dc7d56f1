//! Batches bound to attestation documents, through the core verifier and the binding verifier.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use teelog_attest::dev::{default_pcrs, issue, DevClaims};
use teelog_attest::{BindingVerifier, TrustRoot};
use teelog_core::batch::attestation_line;
use teelog_core::merkle::sha256;
use teelog_core::{
    BatchBuilder, ChainHead, FindingKind, Origin, Report, SigAlg, SoftwareKey, SoftwareSigner, Verifier,
    VerifyOptions,
};

fn new_key() -> Vec<u8> {
    SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()
}

fn key(pkcs8: &[u8]) -> SoftwareKey {
    SoftwareKey::from_pkcs8(SigAlg::Es256, pkcs8).unwrap()
}

/// A dev document binding key `bound`, its root, and two batches signed by key `signer` that
/// name the document.
fn attested_log(bound: &[u8], signer: &[u8]) -> (Vec<Vec<u8>>, TrustRoot) {
    let bound = key(bound);
    let signer_key = key(signer);
    let pcrs = default_pcrs();
    let issued = issue(&DevClaims {
        module_id: "dev-binding",
        timestamp_ms: 1_796_202_000_000,
        pcrs: &pcrs,
        bound_key: bound.public(),
        nonce: None,
    })
    .unwrap();
    let measurement = hex::encode(&pcrs[&0]);
    let signer = SoftwareSigner::new(signer_key, Some(measurement))
        .with_attestation(hex::encode(sha256(&issued.document)));
    let mut head = ChainHead::new_epoch("app", None, &teelog_core::random::SystemRandom).unwrap();
    let mut builder = BatchBuilder::new();
    let mut lines = vec![attestation_line(&issued.document)];
    for i in 0..2 {
        builder.push_input(format!("{{\"message\":\"m{i}\"}}").as_bytes(), &|| 0).unwrap();
        let mut line = Vec::new();
        // Sealed after the document was made, as a key can only sign once it exists.
        builder.seal(&mut head, &signer, 1_796_202_001_000_000_000 + i64::from(i), &mut line).unwrap();
        lines.push(line);
    }
    (lines, TrustRoot::from_pem_or_der(&issued.root_der).unwrap())
}

fn verify(lines: &[Vec<u8>], roots: Vec<TrustRoot>) -> Report {
    let mut verifier = Verifier::new(VerifyOptions::default()).with_attestation(Box::new(BindingVerifier {
        roots,
        allow_debug: false,
        now: 0,
    }));
    for (i, line) in lines.iter().enumerate() {
        verifier.push_line(Origin { source: "log", line: i as u64 + 1 }, line.strip_suffix(b"\n").unwrap());
    }
    verifier.finish()
}

fn kinds(report: &Report) -> Vec<FindingKind> {
    report.findings.iter().map(|f| f.kind).collect()
}

#[test]
fn the_key_comes_from_the_verified_document_in_any_line_order() {
    let k = new_key();
    let (mut lines, root) = attested_log(&k, &k);
    lines.rotate_left(1); // the document after the batches that name it
    let report = verify(&lines, vec![TrustRoot::aws_nitro(), root]);
    assert!(report.ok, "{:#?}", report.findings);
    assert_eq!((report.batches, report.records), (2, 2));
}

#[test]
fn untrusted_missing_and_mismatched_documents() {
    let k = new_key();
    let (lines, root) = attested_log(&k, &k);
    // Only AWS is pinned: the dev root was not given.
    assert_eq!(kinds(&verify(&lines, vec![TrustRoot::aws_nitro()])), [FindingKind::UntrustedAttestation; 2]);
    // The document is not stored with the batches.
    let report = verify(&lines[1..], vec![root.clone()]);
    assert_eq!(kinds(&report), [FindingKind::UntrustedAttestation; 2]);
    assert!(report.findings[0].detail.contains("not in the input"), "{:#?}", report.findings);

    // A signer holding another key names a document that binds someone else's.
    let (stolen, stolen_root) = attested_log(&k, &new_key());
    let report = verify(&stolen, vec![stolen_root]);
    assert_eq!(kinds(&report), [FindingKind::InvalidSignature; 2]);
    assert!(
        report.findings[0].detail.contains("its attestation document binds key"),
        "{:#?}",
        report.findings
    );
}
