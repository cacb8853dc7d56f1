//! A TPM identity end to end, against a manufactured swtpm: keygen --tpm (EK certificate
//! checked, credential activation, AK certified by the enrollment CA), sign into the store,
//! verify with the CA root, a restart into a new epoch, and the TPM refusing to sign once a bound
//! PCR moves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

mod common;

use std::process::Command;

use common::{report, s, teelog};
use teelog_tpm::swtpm::Swtpm;

const RECORDS: &[u8] = b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n{\"message\":\"c\"}\n";

#[test]
fn tpm_identities_sign_only_in_their_measured_state_and_verify_with_the_enrollment_root() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::manufacture_and_start(&dir.path().join("tpm")).unwrap();
    let tcti = tpm.tcti.to_tools_string();
    let (id, ca, store) = (dir.path().join("id"), dir.path().join("ca"), dir.path().join("store"));
    let keygen = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "keygen",
            "--tpm",
            &tcti,
            "--tpm-pcrs",
            "0,7",
            "--ek-ca",
            s(&tpm.ek_ca),
            "--enrollment-ca",
            s(&ca),
        ];
        args.extend_from_slice(&["--out", s(out)]);
        args.extend_from_slice(extra);
        let out = teelog(&args, b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let printed = keygen(&id, &[]);
    assert!(printed.contains("inside the TPM") && printed.contains("ca.pem"), "{printed}");
    assert!(!id.join("private-key.pem").exists(), "a TPM identity has no private key file");
    let sign = |identity: &std::path::Path| {
        teelog(&["sign", "--identity", s(identity), "--store", s(&store), "--batch-size", "2"], RECORDS)
    };
    let out = sign(&id);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = ca.join("ca.pem");

    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--store", s(&store), "--json"];
        args.extend_from_slice(extra);
        report(&teelog(&args, b""))
    };
    let (code, json, kinds) = verify(&["--trust-root", s(&root)]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(json["records"], 3);
    // Without the enrollment root, or with the TPM maker's, the key is not trusted.
    let (code, _, kinds) = verify(&["--pubkey", s(&id.join("public-key.pem"))]);
    assert_eq!((code, kinds), (1, vec!["untrusted_attestation".to_string(); 2]));
    let (_, _, kinds) = verify(&["--trust-root", s(&tpm.ek_ca)]);
    assert_eq!(kinds, vec!["untrusted_attestation".to_string(); 2]);

    // The evidence on its own.
    let document = id.join("attestation.cbor");
    let out = teelog(&["attest", "verify", s(&document), "--trust-root", s(&root), "--json"], b"");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (out.status.code(), &json["platform"], &json["verified"]),
        (Some(0), &"tpm".into(), &true.into())
    );
    let public =
        teelog_core::PublicKey::from_pem(&std::fs::read(id.join("public-key.pem")).unwrap()).unwrap();
    assert_eq!(json["bound_key_id"], public.id_hex());
    let key = id.join("public-key.pem");
    let out = teelog(&["attest", "verify", s(&document), "--trust-root", s(&root), "--key", s(&key)], b"");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    // A measurement policy names the TPM's PCR digest.
    let measurement = json["measurement"].as_str().unwrap().to_string();
    let policy = dir.path().join("policy.toml");
    let write_policy = |value: &str| {
        std::fs::write(
            &policy,
            format!("[[measurement]]\nplatform = \"tpm\"\nversion = \"v1\"\nvalue = \"{value}\"\n"),
        )
        .unwrap()
    };
    write_policy(&measurement);
    let (code, json, _) = verify(&["--trust-root", s(&root), "--policy", s(&policy)]);
    assert_eq!(code, 0, "{json}");
    write_policy(&"00".repeat(32));
    let (_, _, kinds) = verify(&["--trust-root", s(&root), "--policy", s(&policy)]);
    assert_eq!(kinds, vec!["unexpected_measurement".to_string(); 2]);

    let out = teelog(&["attest", "verify", s(&document)], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("AK certificate"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A restart: a new key and new evidence, whose quote attests the head the new epoch links to.
    let next = dir.path().join("id2");
    // The head followed is verified: signed by the key the old evidence certifies, under the
    // enrollment CA's root.
    let ca_root = ca.join("ca.pem");
    keygen(&next, &["--follow", s(&store), "--stream", "default", "--trust-root", s(&ca_root)]);
    assert!(sign(&next).status.success());
    let (code, json, kinds) = verify(&["--trust-root", s(&root)]);
    assert_eq!((code, kinds.len()), (0, 0), "{json}");
    assert_eq!(json["records"], 6);

    // Once PCR7 moves (other code booted), the TPM refuses to sign, and says why.
    let extend = Command::new("tpm2_pcrextend")
        .arg(format!("7:sha256={}", "01".repeat(32)))
        .env("TPM2TOOLS_TCTI", &tcti)
        .output()
        .unwrap();
    assert!(extend.status.success(), "{}", String::from_utf8_lossy(&extend.stderr));
    let out = sign(&next);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("policy check failed") && stderr.contains("PCRs"), "{stderr}");
    let (code, _, kinds) = verify(&["--trust-root", s(&root)]);
    assert_eq!((code, kinds.len()), (0, 0), "what was signed before stays verifiable");
}
