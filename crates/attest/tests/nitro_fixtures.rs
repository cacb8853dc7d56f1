//! The real Nitro documents in shared/fixtures/attestation: they verify at their own time, fail
//! today, and fail with any single flipped byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use teelog_attest::nitro::NitroDocument;
use teelog_attest::{decode_document, AttestError, TrustRoot};
use teelog_fixtures::Fixtures;

fn fixture(f: &Fixtures, name: &str) -> Vec<u8> {
    decode_document(&f.read(name)).unwrap()
}

const BETA: &str = "nitro/nitro_evervault_beta_prod-pcrs_nonce.cbor";
const FASTCRYPTO: &str = "nitro/nitro_fastcrypto_prod-pcrs_pcr16_pubkey.hex";
const GA_DEBUG: &str = "nitro/nitro_evervault_ga_userdata-spki_nonce.b64";

/// 2026-12-02T00:00:00Z.
const TODAY: u64 = 1_796_169_600;

fn verify(
    bytes: &[u8],
    at: Option<u64>,
    allow_debug: bool,
) -> Result<teelog_attest::nitro::NitroVerified, AttestError> {
    NitroDocument::parse(bytes)?.verify(&[TrustRoot::aws_nitro()], at, allow_debug)
}

#[test]
fn production_documents_verify_at_their_own_time() {
    let Some(f) = common::fixtures() else { return };
    let beta = verify(&fixture(&f, BETA), None, false).unwrap();
    assert_eq!(beta.document.module_id, "i-020b6af9246d90e92-enc0183d09086c24190");
    assert_eq!(beta.document.timestamp_ms, 1_665_651_482_136);
    assert_eq!(
        hex::encode(&beta.document.pcrs[&0]),
        "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b"
    );
    assert_eq!(beta.document.nonce.as_ref().map(Vec::len), Some(256));
    assert!(beta.document.public_key.is_none() && !beta.dev && !beta.debug_mode);
    assert_eq!(beta.checked_at, 1_665_651_482);

    // An indefinite-length payload map, 17 PCRs, a 32-byte raw public key.
    let fastcrypto = verify(&fixture(&f, FASTCRYPTO), None, false).unwrap();
    assert_eq!(fastcrypto.document.pcrs.len(), 17);
    assert_eq!(fastcrypto.document.public_key.as_ref().map(Vec::len), Some(32));
    assert_eq!(fastcrypto.document.user_data.as_deref(), Some(&[][..]));
}

#[test]
fn a_debug_mode_enclave_is_refused_unless_allowed() {
    let Some(f) = common::fixtures() else { return };
    let bytes = fixture(&f, GA_DEBUG);
    assert_eq!(verify(&bytes, None, false).unwrap_err(), AttestError::DebugMode);
    let verified = verify(&bytes, None, true).unwrap();
    assert!(verified.debug_mode);
    // Its user_data is the DER SubjectPublicKeyInfo of a P-256 key.
    let spki = verified.document.user_data.as_ref().unwrap();
    assert!(teelog_core::PublicKey::from_spki_der(spki).is_ok());
}

#[test]
fn every_document_is_expired_today() {
    let Some(f) = common::fixtures() else { return };
    for name in [BETA, FASTCRYPTO, GA_DEBUG] {
        let err = verify(&fixture(&f, name), Some(TODAY), true).unwrap_err();
        assert!(matches!(&err, AttestError::Chain(why) if why.contains("not valid at")), "{name}: {err}");
    }
}

#[test]
fn the_aws_root_given_again_is_the_pinned_root() {
    let Some(f) = common::fixtures() else { return };
    // As `--trust-root` would load it, and as the only root.
    let pem = f.read("roots/aws_nitro_enclaves_root_g1.pem");
    let root = TrustRoot::from_pem_or_der(&pem).unwrap();
    let verified = NitroDocument::parse(&fixture(&f, BETA)).unwrap().verify(&[root], None, false).unwrap();
    assert!(!verified.dev);
    assert_eq!(hex::encode(verified.root_sha256), teelog_attest::AWS_NITRO_ROOT_G1_SHA256);
}

#[test]
fn another_root_is_not_trusted() {
    let Some(f) = common::fixtures() else { return };
    let intel = f.read("roots/intel_sgx_root_ca.pem");
    let root = TrustRoot::from_pem_or_der(&intel).unwrap();
    assert_eq!(root.vendor(), Some(teelog_attest::VendorRoot::IntelSgxRootCa));
    let err = NitroDocument::parse(&fixture(&f, BETA)).unwrap().verify(&[root], None, false).unwrap_err();
    assert!(matches!(&err, AttestError::Chain(why) if why.contains("does not reach a pinned root")), "{err}");
}

#[test]
fn any_flipped_byte_is_refused() {
    let Some(f) = common::fixtures() else { return };
    for name in [BETA, FASTCRYPTO] {
        let bytes = fixture(&f, name);
        // Every byte of the first 600 (structure, headers, module id, PCRs) and every 17th after.
        let positions = (0..bytes.len()).filter(|&i| i < 600 || i % 17 == 0);
        for i in positions {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x01;
            assert!(verify(&flipped, None, false).is_err(), "{name}: flipping byte {i} went unnoticed");
        }
    }
}

#[test]
fn truncated_and_garbage_documents_are_refused_without_panicking() {
    let Some(f) = common::fixtures() else { return };
    let bytes = fixture(&f, BETA);
    for len in (0..bytes.len()).step_by(97) {
        assert!(NitroDocument::parse(&bytes[..len]).is_err(), "truncated to {len}");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(NitroDocument::parse(&trailing), Err(AttestError::Cose(_))));
    assert!(matches!(NitroDocument::parse(&vec![0x84; 100_000]), Err(AttestError::TooLarge { .. })));
}
