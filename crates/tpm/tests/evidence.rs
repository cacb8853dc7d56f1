//! TPM evidence produced by a real TPM 2.0 emulator (swtpm, driven with tpm2-tools): a signing
//! key under a PCR policy, certified and quoted by an attestation key. `.ci/run` installs both.
//! This checks the evidence alone, against an AK taken on faith; `identity.rs` checks the whole
//! provisioned identity.

use std::path::Path;
use std::process::Command;

use teelog_attest::tpm::TpmEvidence;
use teelog_attest::AttestError;
use teelog_tpm::swtpm::Swtpm;

/// Runs one tpm2-tools command in `dir`, then flushes transient objects (swtpm has few slots).
fn tpm2(tpm: &Swtpm, dir: &Path, args: &[&str]) {
    for cmd in [args, &["tpm2_flushcontext", "-t"]] {
        let out = Command::new(cmd[0])
            .args(&cmd[1..])
            .current_dir(dir)
            .env("TPM2TOOLS_TCTI", tpm.tcti.to_tools_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

const FILES: [&str; 8] =
    ["ak.pub", "key.pub", "certify.attest", "certify.sig", "quote.attest", "quote.sig", "pcrs.bin", "ek.pub"];

fn evidence(f: &[Vec<u8>]) -> TpmEvidence<'_> {
    TpmEvidence {
        ak_public: &f[0],
        key_public: &f[1],
        certify: &f[2],
        certify_signature: &f[3],
        quote: &f[4],
        quote_signature: &f[5],
        pcr_values: &f[6],
        ek_public: &f[7],
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[test]
fn a_pcr_bound_tpm_key_is_certified_and_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tpm = Swtpm::manufacture_and_start(&d.join("tpm")).unwrap();
    tpm2(&tpm, d, &["tpm2_pcrextend", &format!("0:sha256={}", "ab".repeat(32))]);
    tpm2(
        &tpm,
        d,
        &["tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256", "-c", "primary.ctx", "-Q"],
    );
    tpm2(&tpm, d, &["tpm2_startauthsession", "-S", "session.ctx"]);
    tpm2(&tpm, d, &["tpm2_policypcr", "-S", "session.ctx", "-l", "sha256:0,1,2", "-L", "pcr.policy", "-Q"]);
    tpm2(&tpm, d, &["tpm2_flushcontext", "session.ctx"]);
    let attributes = "fixedtpm|fixedparent|sensitivedataorigin|sign";
    tpm2(
        &tpm,
        d,
        &[
            "tpm2_create",
            "-C",
            "primary.ctx",
            "-G",
            "ecc256:ecdsa-sha256",
            "-a",
            attributes,
            "-L",
            "pcr.policy",
            "-u",
            "key.pub",
            "-r",
            "key.priv",
            "-Q",
        ],
    );
    tpm2(
        &tpm,
        d,
        &["tpm2_load", "-C", "primary.ctx", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx", "-Q"],
    );
    tpm2(&tpm, d, &["tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub", "-Q"]);
    tpm2(
        &tpm,
        d,
        &[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            "ecc",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
            "-Q",
        ],
    );
    tpm2(&tpm, d, &["tpm2_flushcontext", "-s"]);
    tpm2(
        &tpm,
        d,
        &[
            "tpm2_certify",
            "-c",
            "key.ctx",
            "-C",
            "ak.ctx",
            "-g",
            "sha256",
            "-o",
            "certify.attest",
            "-s",
            "certify.sig",
        ],
    );
    tpm2(
        &tpm,
        d,
        &[
            "tpm2_quote",
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0,1,2",
            "-q",
            "0a0b0c0d",
            "-m",
            "quote.attest",
            "-s",
            "quote.sig",
            "-g",
            "sha256",
            "-Q",
        ],
    );
    tpm2(&tpm, d, &["tpm2_pcrread", "sha256:0,1,2", "-o", "pcrs.bin", "-Q"]);

    let files: Vec<Vec<u8>> = FILES.iter().map(|f| read(d, f)).collect();
    let nonce = [0x0a, 0x0b, 0x0c, 0x0d];
    let verified = evidence(&files).verify(Some(&nonce)).unwrap();
    let selection = teelog_tpm::command::pcr_selection(&[0, 1, 2]);
    let digest = teelog_core::merkle::sha256(&files[6]);
    assert_eq!(verified.measurement, teelog_attest::tpm::measurement(&selection, &digest));
    assert_eq!(verified.pcrs, [0, 1, 2]);
    assert_eq!(verified.key.alg(), teelog_core::SigAlg::Es256);

    // A replayed quote, other PCR values, and any flipped byte are refused.
    let err = evidence(&files).verify(Some(&[1, 2, 3, 4])).unwrap_err();
    assert!(matches!(&err, AttestError::Tpm(why) if why.contains("nonce")), "{err}");
    for (index, name) in FILES.iter().enumerate() {
        for at in (0..files[index].len()).step_by(3) {
            let mut forged = files.clone();
            forged[index][at] ^= 0x01;
            assert!(
                evidence(&forged).verify(Some(&nonce)).is_err(),
                "{name}: flipping byte {at} went unnoticed"
            );
        }
    }
    // A quote that selects PCR16 or PCR23, which software can reset, binds nothing.
    for (pcrs, expected) in [("sha256:16", "PCR16"), ("sha256:0,23", "PCR23")] {
        tpm2(
            &tpm,
            d,
            &[
                "tpm2_quote",
                "-c",
                "ak.ctx",
                "-l",
                pcrs,
                "-m",
                "q.attest",
                "-s",
                "q.sig",
                "-g",
                "sha256",
                "-Q",
            ],
        );
        let mut other = files.clone();
        other[4] = read(d, "q.attest");
        other[5] = read(d, "q.sig");
        let err = evidence(&other).verify(None).unwrap_err().to_string();
        assert!(err.contains(expected), "{pcrs}: {err}");
    }
    // The certified key must be the one presented: the AK's own public area is not it.
    let mut swapped = files.clone();
    swapped[1] = files[0].clone();
    assert!(evidence(&swapped).verify(Some(&nonce)).is_err());
}
