//! Against a real TSA: OpenSSL's `openssl ts` (Debian's openssl) answers the requests teelog
//! builds; teelog verifies its tokens, `openssl ts -verify` agrees, and a token changed in any part
//! or checked against another root is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use teelog_tsa::{request, token_of_response, verify_token, TsaError};

#[path = "support/openssl_tsa.rs"]
mod openssl_tsa;
use openssl_tsa::{openssl, tsa};

/// The TSA's response to teelog's request for `digest`.
fn stamp(dir: &Path, digest: &[u8; 32]) -> Vec<u8> {
    std::fs::write(dir.join("query.der"), request(digest, 42).unwrap()).unwrap();
    openssl(dir, &["ts", "-reply", "-config", "tsa.cnf", "-queryfile", "query.der", "-out", "reply.der"]);
    std::fs::read(dir.join("reply.der")).unwrap()
}

#[test]
fn openssl_tokens_verify_and_every_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tsa(dir.path(), "timeStamping");
    let digest = [7u8; 32];
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let reply = stamp(dir.path(), &digest);
    // OpenSSL agrees that this is a valid timestamp of the digest.
    openssl(
        dir.path(),
        &[
            "ts",
            "-verify",
            "-digest",
            &hex::encode(digest),
            "-in",
            "reply.der",
            "-CAfile",
            "ca.pem",
            "-untrusted",
            "tsa.pem",
        ],
    );

    let token = token_of_response(&reply).unwrap();
    let root = std::fs::read(dir.path().join("ca.der")).unwrap();
    let stamped = verify_token(&token, &digest, std::slice::from_ref(&root)).unwrap();
    let at = stamped.gen_time / 1_000_000_000;
    assert!((before - 5..=before + 60).contains(&at), "genTime {at}, now {before}");

    // Another digest, another root: refused.
    assert!(matches!(
        verify_token(&token, &[8u8; 32], std::slice::from_ref(&root)),
        Err(TsaError::Imprint { .. })
    ));
    let other = tempfile::tempdir().unwrap();
    tsa(other.path(), "timeStamping");
    let other_root = std::fs::read(other.path().join("ca.der")).unwrap();
    assert!(matches!(verify_token(&token, &digest, &[other_root]), Err(TsaError::Chain(_))));

    // Every byte of the token changed in turn: never another verdict, and never a panic. CMS
    // leaves a few parts unsigned (the digest algorithm list, the version), so some changes still
    // verify, saying exactly what the token said; a change to what the TSA stamped never does.
    // genTime as DER writes it: tag 0x18, length 15, "YYYYMMDDhhmmssZ".
    let gen_time = {
        let position = token.windows(2).position(|w| w == [0x18, 0x0f]).expect("a genTime");
        position..position + 17
    };
    let mut accepted = 0;
    for i in 0..token.len() {
        let mut changed = token.clone();
        changed[i] ^= 0x01;
        if let Ok(t) = verify_token(&changed, &digest, std::slice::from_ref(&root)) {
            assert_eq!(t, stamped, "byte {i} changed, another verdict");
            assert!(!gen_time.contains(&i), "byte {i} of the stamped time changed, and it verified");
            accepted += 1;
        }
    }
    assert!(accepted * 20 <= token.len(), "{accepted} of {} changes verified", token.len());
}

#[test]
fn a_tsa_certificate_without_the_time_stamping_purpose_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tsa(dir.path(), "serverAuth");
    let digest = [9u8; 32];
    // OpenSSL itself refuses to sign with it, or signs a token teelog refuses.
    std::fs::write(dir.path().join("query.der"), request(&digest, 1).unwrap()).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args(["ts", "-reply", "-config", "tsa.cnf", "-queryfile", "query.der", "-out", "reply.der"])
        .output()
        .unwrap();
    if out.status.success() {
        let reply = std::fs::read(dir.path().join("reply.der")).unwrap();
        let root = std::fs::read(dir.path().join("ca.der")).unwrap();
        match token_of_response(&reply) {
            Ok(token) => assert!(matches!(verify_token(&token, &digest, &[root]), Err(TsaError::Chain(_)))),
            Err(e) => assert!(matches!(e, TsaError::NotGranted(_)), "{e}"),
        }
    }
}
