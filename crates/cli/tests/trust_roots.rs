//! Trust roots are told apart by their bytes, never their names (issue 14, class 3): a
//! `--trust-root` or gateway `trust_roots` certificate that looks like a pinned vendor root but is
//! not it stops `verify`, `attest verify`, `audit` and `gateway` with exit 2, naming the file;
//! the pinned root itself given again changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::path::{Path, PathBuf};

use common::{report, s, teelog};
use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use teelog_fixtures::Fixtures;

const RECORDS: &[u8] = b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n";

/// The shared attestation fixtures, or `None` (the test skipped, said on stderr) where they are
/// absent.
fn fixtures() -> Option<Fixtures> {
    teelog_fixtures::open("attestation")
}

/// The genuine AWS Nitro root, as AWS publishes it.
fn aws_root_pem(f: &Fixtures) -> Vec<u8> {
    f.read("roots/aws_nitro_enclaves_root_g1.pem")
}

/// Two lookalikes of the AWS root in `dir`: its own certificate with one signature byte changed
/// (AWS's subject and key), and a new self-signed root with AWS's subject and another key.
fn lookalikes(f: &Fixtures, dir: &Path) -> [PathBuf; 2] {
    let mut edited = CertificateDer::from_pem_slice(&aws_root_pem(f)).unwrap().to_vec();
    let last = edited.len() - 1;
    edited[last] ^= 1;
    let edited_path = dir.join("aws-edited.der");
    std::fs::write(&edited_path, edited).unwrap();

    let mut name = DistinguishedName::new();
    name.push(DnType::CountryName, DnValue::PrintableString("US".try_into().unwrap()));
    name.push(DnType::OrganizationName, "Amazon");
    name.push(DnType::OrganizationalUnitName, "AWS");
    name.push(DnType::CommonName, "aws.nitro-enclaves");
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.distinguished_name = name;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let named_path = dir.join("aws-named.pem");
    std::fs::write(&named_path, params.self_signed(&key).unwrap().pem()).unwrap();
    [edited_path, named_path]
}

/// Exit 2, and a message that names the file and what is wrong with it.
fn assert_refused(out: &std::process::Output, file: &Path, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in [s(file), what, "AWS Nitro Enclaves root G1", "lookalike"] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
}

#[test]
fn a_lookalike_of_the_aws_root_stops_every_command_that_loads_roots() {
    let Some(f) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (id, store) = (dir.path().join("id"), dir.path().join("store"));
    common::keygen(&id, &["--dev"]);
    let out = teelog(&["sign", "--identity", s(&id), "--store", s(&store)], RECORDS);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (dev_root, document) = (id.join("dev-root.pem"), id.join("attestation.cbor"));

    for (file, what) in lookalikes(&f, dir.path()).iter().zip(["public key", "subject"]) {
        let verify = ["verify", "--store", s(&store), "--trust-root", s(&dev_root), "--trust-root", s(file)];
        assert_refused(&teelog(&verify, b""), file, what);
        let attest = ["attest", "verify", s(&document), "--trust-root", s(file), "--json"];
        assert_refused(&teelog(&attest, b""), file, what);
        // Refused before any Loki is asked (none listens here).
        let audit = [
            "audit",
            "--loki",
            "http://127.0.0.1:9",
            "--from",
            "2026-11-01T00:00:00Z",
            "--trust-root",
            s(file),
        ];
        assert_refused(&teelog(&audit, b""), file, what);
        // Hidden behind the genuine root in one PEM file, it is still found.
        let bundle = dir.path().join("bundle.pem");
        let lookalike = std::fs::read(file).unwrap();
        let lookalike =
            CertificateDer::from_pem_slice(&lookalike).map(|der| der.to_vec()).unwrap_or(lookalike);
        let pem = format!(
            "{}\n{}",
            String::from_utf8(aws_root_pem(&f)).unwrap(),
            teelog_core::crypto::pem_encode("CERTIFICATE", &lookalike)
        );
        std::fs::write(&bundle, pem).unwrap();
        let out = teelog(&["verify", "--store", s(&store), "--trust-root", s(&bundle)], b"");
        assert_refused(&out, &bundle, "certificate 2 of 2");

        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[spool]\ndir = '{}'\n[listen]\nhttp = '127.0.0.1:0'\n[verify]\ntrust_roots = ['{}']\n[[sinks]]\nkind = 'store'\ndir = '{}'\n",
                s(&dir.path().join("spool")),
                s(file),
                s(&dir.path().join("gateway-store")),
            ),
        )
        .unwrap();
        assert_refused(&teelog(&["gateway", "--config", s(&config)], b""), file, what);
    }

    // The genuine root given again is harmless: the dev batches still rest on their dev root.
    let aws = dir.path().join("aws.pem");
    std::fs::write(&aws, aws_root_pem(&f)).unwrap();
    let (code, json, kinds) = report(&teelog(
        &["verify", "--store", s(&store), "--trust-root", s(&aws), "--trust-root", s(&dev_root), "--json"],
        b"",
    ));
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    let out = teelog(
        &["attest", "verify", s(&document), "--trust-root", s(&aws), "--trust-root", s(&dev_root), "--json"],
        b"",
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&json["platform"], &json["trust"]),
        (&"dev (not hardware-backed)".into(), &"dev_root".into()),
        "{json}"
    );
}

#[test]
fn a_real_nitro_document_rests_on_the_pinned_root_even_when_it_is_given_again() {
    let Some(f) = fixtures() else { return };
    let dir = tempfile::tempdir().unwrap();
    let aws = dir.path().join("aws.pem");
    std::fs::write(&aws, aws_root_pem(&f)).unwrap();
    let document = f.path("nitro/nitro_evervault_beta_prod-pcrs_nonce.cbor");
    let out = teelog(&["attest", "verify", s(&document), "--trust-root", s(&aws), "--json"], b"");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert_eq!((&json["platform"], &json["trust"]), (&"aws-nitro".into(), &"pinned_vendor_root".into()));
    assert_eq!(json["root_sha256"], teelog_attest::AWS_NITRO_ROOT_G1_SHA256);
}
