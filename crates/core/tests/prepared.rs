//! A line's own checks made apart (on other threads, before the lines ahead of it are admitted)
//! and admitted in input order give the report that feeding the lines one by one gives, attested
//! batches included: their signature is checked early under a key a document already bound, and
//! that result counts only where the document is the batch's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use teelog_core::batch::attestation_line;
use teelog_core::merkle::sha256;
use teelog_core::verify::{AttestationVerifier, AttestedKey, DocumentError, Prepared, TrustBasis};
use teelog_core::{
    BatchBuilder, ChainHead, FindingKind, HeaderSigner, Origin, PublicKey, Report, SigAlg, SoftwareKey,
    SoftwareSigner, Verifier, VerifyOptions,
};

const START: i64 = 1_796_292_000_000_000_000;

/// Vouches for one key, for any document but "forged".
struct Vouch(PublicKey);

impl AttestationVerifier for Vouch {
    fn verify_document(&self, document: &[u8]) -> Result<AttestedKey, DocumentError> {
        if document == b"forged" {
            return Err(DocumentError::NoKey);
        }
        Ok(AttestedKey {
            key: self.0.clone(),
            measurement: "abcd".into(),
            platform: "dev".into(),
            previous_head: None,
            anchor: TrustBasis::DevRoot,
            attested_at: None,
        })
    }
}

fn key() -> SoftwareKey {
    SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap()).unwrap()
}

/// `n` batches of a new epoch of `stream`, signed by `signer`.
fn epoch(stream: &str, signer: &SoftwareSigner, n: u64) -> Vec<Vec<u8>> {
    let mut head = ChainHead::new_epoch(stream, None, &teelog_core::random::SystemRandom).unwrap();
    let mut builder = BatchBuilder::new();
    (0..n)
        .map(|i| {
            builder.push_input(format!(r#"{{"message":"{stream} {i}"}}"#).as_bytes(), &|| 0).unwrap();
            let mut line = Vec::new();
            builder.seal(&mut head, signer, START + i as i64, &mut line).unwrap();
            line.pop();
            line
        })
        .collect()
}

fn document_line(document: &[u8]) -> Vec<u8> {
    attestation_line(document).strip_suffix(b"\n").unwrap().to_vec()
}

/// The input: a document and the batches of the key it binds (one tampered, one copy), a batch of
/// another key that names the same document, a batch naming a document that does not verify
/// and one naming a document that comes last.
fn input() -> (PublicKey, Vec<Vec<u8>>) {
    let attested = SoftwareSigner::new(key(), Some("abcd".into()));
    let public = attested.public_key().clone();
    let document = b"the enclave's document".to_vec();
    let named =
        |signer: SoftwareSigner, document: &[u8]| signer.with_attestation(hex::encode(sha256(document)));
    let app = epoch("app", &named(attested, &document), 4);
    let impostor = epoch("app", &named(SoftwareSigner::new(key(), Some("abcd".into())), &document), 1);
    let forged = epoch("db", &named(SoftwareSigner::new(key(), Some("abcd".into())), b"forged"), 1);
    let late = b"a document that comes last".to_vec();
    let waiting = epoch("late", &named(SoftwareSigner::new(key(), Some("abcd".into())), &late), 1);
    let tampered = String::from_utf8(app[2].clone()).unwrap().replace("app 2", "app X").into_bytes();
    let lines = vec![
        document_line(&document),
        app[0].clone(),
        app[1].clone(),
        tampered,
        app[3].clone(),
        app[3].clone(),
        impostor[0].clone(),
        document_line(b"forged"),
        forged[0].clone(),
        waiting[0].clone(),
        document_line(&late),
    ];
    (public, lines)
}

fn verifier(key: &PublicKey) -> Verifier {
    Verifier::new(VerifyOptions { now: Some(START), ..VerifyOptions::default() })
        .with_attestation(Box::new(Vouch(key.clone())))
}

fn origin(i: usize) -> Origin<'static> {
    Origin { source: "input", line: i as u64 + 1 }
}

/// `lines` from `first` on prepared, each on a thread of its own, before any of them is
/// admitted; the lines before `first` pushed one by one.
fn apart(key: &PublicKey, lines: &[Vec<u8>], first: usize) -> Report {
    let mut verifier = verifier(key);
    for (i, line) in lines[..first].iter().enumerate() {
        verifier.push_line(origin(i), line);
    }
    let checker = verifier.line_checker();
    let prepared: Vec<Prepared> = std::thread::scope(|s| {
        let threads: Vec<_> = lines[first..]
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let checker = &checker;
                s.spawn(move || checker.prepare(origin(first + i), line))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (i, prepared) in prepared.into_iter().enumerate() {
        verifier.admit(origin(first + i), &lines[first + i], prepared);
    }
    verifier.finish()
}

#[test]
fn lines_checked_apart_and_admitted_in_order_give_the_report_of_one_by_one() {
    let (key, lines) = input();
    let mut one_by_one = verifier(&key);
    for (i, line) in lines.iter().enumerate() {
        one_by_one.push_line(origin(i), line);
    }
    let expected = one_by_one.finish();
    let kinds: Vec<FindingKind> = expected.findings.iter().map(|f| f.kind).collect();
    for kind in
        [FindingKind::RecordTampered, FindingKind::InvalidSignature, FindingKind::UntrustedAttestation]
    {
        assert!(kinds.contains(&kind), "{kind:?} not among {:#?}", expected.findings);
    }
    assert_eq!((expected.duplicates, expected.batches), (1, 7), "{expected:#?}");
    // Before any key is known; once the document and the first batch are in (the rest is checked
    // early under the key); and from the impostor on.
    for first in [0, 2, 6] {
        assert_eq!(apart(&key, &lines, first), expected, "lines prepared from {first} on");
    }
}
