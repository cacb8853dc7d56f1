//! Attacker-controlled bytes: CBOR bombs, deep nesting, huge declared lengths, truncated
//! structures, duplicate keys and random garbage each get a typed error, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use ciborium::Value;
use coset::{iana, CborSerializable, CoseSign1Builder, HeaderBuilder};
use proptest::prelude::*;
use teelog_attest::nitro::NitroDocument;
use teelog_attest::snp::SnpReport;
use teelog_attest::tdx::TdxQuote;
use teelog_attest::AttestError;

/// A COSE_Sign1 in the Nitro shape around raw payload bytes, with a dummy signature.
fn sign1(payload: Vec<u8>) -> Vec<u8> {
    CoseSign1Builder::new()
        .protected(HeaderBuilder::new().algorithm(iana::Algorithm::ES384).build())
        .payload(payload)
        .signature(vec![0; 96])
        .build()
        .to_vec()
        .unwrap()
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).unwrap();
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn payload_err(doc: &[u8]) -> AttestError {
    NitroDocument::parse(doc).unwrap_err()
}

#[test]
fn duplicate_keys_and_wrong_types_are_named() {
    let dup = Value::Map(vec![(text("module_id"), text("a")), (text("module_id"), text("b"))]);
    let err = payload_err(&sign1(cbor(&dup)));
    assert!(
        matches!(&err, AttestError::Payload { field, reason } if field == "module_id" && reason.contains("twice")),
        "{err}"
    );

    let bad_pcr = Value::Map(vec![
        (text("module_id"), text("m")),
        (text("digest"), text("SHA384")),
        (text("timestamp"), Value::Integer(1.into())),
        (text("pcrs"), Value::Map(vec![(Value::Integer(0.into()), Value::Bytes(vec![0; 31]))])),
    ]);
    let err = payload_err(&sign1(cbor(&bad_pcr)));
    assert!(matches!(&err, AttestError::Payload { field, .. } if field == "pcrs"), "{err}");

    let unknown = Value::Map(vec![(text("surprise"), text("x"))]);
    assert!(matches!(payload_err(&sign1(cbor(&unknown))), AttestError::Payload { .. }));
    assert!(matches!(payload_err(&sign1(cbor(&Value::Array(vec![])))), AttestError::Cose(_)));
}

#[test]
fn bombs_deep_nesting_and_huge_lengths_fail_fast() {
    // 10,000 nested arrays.
    let deep: Vec<u8> = std::iter::repeat_n(0x81u8, 10_000).chain([0x00]).collect();
    assert!(matches!(payload_err(&sign1(deep)), AttestError::Cose(_)));
    // A byte string declaring 2^60 bytes, and a map declaring 2^32 entries, with nothing behind.
    let huge_bstr = [0x5b, 0x10, 0, 0, 0, 0, 0, 0, 0].to_vec();
    assert!(matches!(payload_err(&sign1(huge_bstr)), AttestError::Cose(_)));
    let huge_map = [0xbb, 0, 0, 0, 1, 0, 0, 0, 0].to_vec();
    assert!(matches!(payload_err(&sign1(huge_map)), AttestError::Cose(_)));
    // The COSE envelope itself declaring a 2^60-byte payload.
    let envelope = [0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x5b, 0x10, 0, 0, 0, 0, 0, 0, 0];
    assert!(NitroDocument::parse(&envelope).is_err());
    // Indefinite-length chunks of zero bytes, many of them, unterminated.
    let chunks: Vec<u8> = [0x5f].into_iter().chain(std::iter::repeat_n(0x40u8, 20_000)).collect();
    assert!(NitroDocument::parse(&sign1(chunks)).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = NitroDocument::parse(&bytes);
        let _ = NitroDocument::parse(&sign1(bytes.clone()));
        let _ = teelog_attest::decode_document(&bytes);
        let mut report = bytes.clone();
        report.resize(teelog_attest::snp::REPORT_LEN, 0);
        let _ = SnpReport::parse(&report);
        let mut quote = vec![4, 0, 2, 0, 0x81, 0, 0, 0];
        quote.extend_from_slice(&bytes);
        let _ = TdxQuote::parse(&quote);
    }
}
