//! Against a real TSA: OpenSSL's `openssl ts` (Debian's openssl) answers the requests teelog
//! builds; teelog verifies its tokens, `openssl ts -verify` agrees, and a token changed in any part
//! or checked against another root is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use teelog_tsa::{request, token_of_response, verify_token, TsaError};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A root CA and a TSA certificate it issues (with `eku` as extended key usage), and the
/// `openssl ts` configuration that signs with it.
fn tsa(dir: &Path, eku: &str) {
    openssl(dir, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=teelog test TSA root", "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
    openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/CN=teelog test TSA"]);
    std::fs::write(dir.join("ext.cnf"), format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,{eku}\n")).unwrap();
    openssl(dir, &["x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "tsa.pem", "-days", "30", "-extfile", "ext.cnf"]);
    openssl(dir, &["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]);
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    std::fs::write(
        dir.join("tsa.cnf"),
        format!(
            "[ tsa ]\ndefault_tsa = teelog\n[ teelog ]\ndir = {}\nserial = $dir/serial\ncrypto_device = builtin\nsigner_cert = $dir/tsa.pem\nsigner_key = $dir/tsa.key\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256\naccuracy = secs:1\nordering = yes\ntsa_name = yes\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n",
            dir.display()
        ),
    )
    .unwrap();
}

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
    openssl(dir.path(), &["ts", "-verify", "-digest", &hex::encode(digest), "-in", "reply.der", "-CAfile", "ca.pem", "-untrusted", "tsa.pem"]);

    let token = token_of_response(&reply).unwrap();
    let root = std::fs::read(dir.path().join("ca.der")).unwrap();
    let stamped = verify_token(&token, &digest, &[root.clone()]).unwrap();
    let at = stamped.gen_time / 1_000_000_000;
    assert!((before - 5..=before + 60).contains(&at), "genTime {at}, now {before}");

    // Another digest, another root: refused.
    assert!(matches!(verify_token(&token, &[8u8; 32], &[root.clone()]), Err(TsaError::Imprint { .. })));
    let other = tempfile::tempdir().unwrap();
    tsa(other.path(), "timeStamping");
    let other_root = std::fs::read(other.path().join("ca.der")).unwrap();
    assert!(matches!(verify_token(&token, &digest, &[other_root]), Err(TsaError::Chain(_))));

    // Every byte of the token changed in turn: never another verdict, and never a panic. CMS
    // leaves a few parts unsigned (the digest algorithm list, the version), so some changes still
    // verify, saying exactly what the token said; a change to what the TSA stamped never does.
    let gen_time = {
        let text = std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args(["ts", "-reply", "-in", "reply.der", "-text"])
            .output()
            .unwrap();
        assert!(text.status.success());
        // GeneralizedTime as DER writes it: tag 0x18, length 15, "YYYYMMDDhhmmssZ".
        let position = token.windows(2).position(|w| w == [0x18, 0x0f]).expect("a genTime");
        position..position + 17
    };
    let mut accepted = 0;
    for i in 0..token.len() {
        let mut changed = token.clone();
        changed[i] ^= 0x01;
        match verify_token(&changed, &digest, &[root.clone()]) {
            Ok(t) => {
                assert_eq!(t, stamped, "byte {i} changed, another verdict");
                assert!(!gen_time.contains(&i), "byte {i} of the stamped time changed, and it verified");
                accepted += 1;
            }
            Err(_) => {}
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
