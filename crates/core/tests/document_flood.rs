//! Input flooding the verifier with attestation documents that do not verify: judging each
//! costs a signature and chain check, so past its bounds the verifier stops judging them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use teelog_core::batch::attestation_line;
use teelog_core::verify::{AttestationVerifier, AttestedKey, DocumentError};
use teelog_core::{Origin, Verifier, VerifyOptions};

/// Refuses every document, counting how many it was asked to judge.
struct Refuses(Arc<AtomicUsize>);

impl AttestationVerifier for Refuses {
    fn verify_document(&self, _: &[u8]) -> Result<AttestedKey, DocumentError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(DocumentError::UnknownKind { expected: "a document of the test" })
    }
}

#[test]
fn documents_past_the_bounds_are_not_judged_one_by_one_without_end() {
    let judged = Arc::new(AtomicUsize::new(0));
    let mut verifier =
        Verifier::new(VerifyOptions::default()).with_attestation(Box::new(Refuses(judged.clone())));
    let mut line = 0;
    let mut push = |verifier: &mut Verifier, document: &[u8]| {
        line += 1;
        let text = attestation_line(document);
        verifier.push_line(Origin { source: "planted", line }, text.strip_suffix(b"\n").unwrap_or(&text));
    };
    // 64 MiB of documents nothing names: held, and not judged.
    for i in 0..64u32 {
        let mut big = vec![b'x'; 1 << 20];
        big[..4].copy_from_slice(&i.to_be_bytes());
        push(&mut verifier, &big);
    }
    assert_eq!(judged.load(Ordering::Relaxed), 0, "documents within the bound wait until a batch names them");
    // Then 20,000 more: past the bound on bytes each is judged on arrival, but only up to the
    // bound on documents that failed.
    for i in 0..20_000u32 {
        push(&mut verifier, format!("junk {i}").as_bytes());
    }
    let report = verifier.finish();
    let count = judged.load(Ordering::Relaxed);
    assert!((1..=4096).contains(&count), "{count} documents judged");
    assert!(!report.ok, "documents alone verify nothing: {:?}", report.findings);
}
