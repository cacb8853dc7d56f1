//! Wycheproof ECDSA vectors through the exact verification calls the verifier makes: P1363 for
//! teelog batches (ES256, ES384) and SHA-256 in either encoding for the seed format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use teelog_core::PublicKey;
use wycheproof::ecdsa::{TestName, TestSet};
use wycheproof::TestResult;

fn run(name: TestName, verify: impl Fn(&PublicKey, &[u8], &[u8]) -> bool) -> usize {
    let set = TestSet::load(name).expect("vectors load");
    let mut checked = 0;
    for group in &set.test_groups {
        let key = PublicKey::from_spki_der(&group.der).expect("Wycheproof keys are named-curve SPKI");
        for test in &group.tests {
            let accepted = verify(&key, &test.msg, &test.sig);
            match test.result {
                TestResult::Valid => {
                    assert!(accepted, "{name:?} tc {} ({}) must verify", test.tc_id, test.comment)
                }
                TestResult::Invalid => {
                    assert!(!accepted, "{name:?} tc {} ({}) must fail", test.tc_id, test.comment)
                }
                TestResult::Acceptable => {}
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn es256_p1363() {
    assert!(run(TestName::EcdsaSecp256r1Sha256P1363, PublicKey::verify_p1363) > 200);
}

#[test]
fn es384_p1363() {
    assert!(run(TestName::EcdsaSecp384r1Sha384P1363, PublicKey::verify_p1363) > 200);
}

#[test]
fn seed_sha256_p256_der_and_p1363() {
    assert!(run(TestName::EcdsaSecp256r1Sha256, PublicKey::verify_sha256_any_encoding) > 200);
    assert!(run(TestName::EcdsaSecp256r1Sha256P1363, PublicKey::verify_sha256_any_encoding) > 200);
}

#[test]
fn seed_sha256_p384_der() {
    assert!(run(TestName::EcdsaSecp384r1Sha256, PublicKey::verify_sha256_any_encoding) > 200);
}
