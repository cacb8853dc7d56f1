//! A manufactured swtpm, an enrollment CA and a scratch directory: what every TPM test starts
//! from.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test: a failure should panic

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use teelog_attest::tpm::enrollment::EnrollmentCa;
use teelog_attest::TrustRoot;
use teelog_tpm::provision::Request;
use teelog_tpm::swtpm::Swtpm;

pub struct Lab {
    // Fields drop in order: the emulator stops before its directory goes.
    pub tpm: Swtpm,
    pub ek_roots: Vec<TrustRoot>,
    pub ca: EnrollmentCa,
    /// tpm2-tools' scratch directory; provisioning leaves its files (and the AK context) here.
    pub work: PathBuf,
    pub now: u64,
    _dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tpm = Swtpm::manufacture_and_start(&dir.path().join("tpm")).unwrap();
        let ek_roots = TrustRoot::all_from_pem_or_der(&std::fs::read(&tpm.ek_ca).unwrap()).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let (ca, _key_pem) = EnrollmentCa::generate(now).unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        Self { tpm, ek_roots, ca, work, now, _dir: dir }
    }

    /// Provisioning of a key bound to `pcrs`, with `qualifying_data` in its quote.
    pub fn request<'a>(&'a self, pcrs: &'a [u8], qualifying_data: &'a [u8]) -> Request<'a> {
        Request {
            tcti: &self.tpm.tcti,
            pcrs,
            qualifying_data,
            ek_roots: &self.ek_roots,
            ca: &self.ca,
            now: self.now,
            work: &self.work,
        }
    }

    /// Runs one tpm2-tools command in the scratch directory, then flushes transient objects
    /// (swtpm has few slots).
    // Not every test file runs tools of its own.
    #[allow(dead_code)]
    pub fn tpm2(&self, args: &[&str]) {
        for cmd in [args, &["tpm2_flushcontext", "-t"]] {
            let out = Command::new(cmd[0])
                .args(&cmd[1..])
                .current_dir(&self.work)
                .env("TPM2TOOLS_TCTI", self.tpm.tcti.to_tools_string())
                .output()
                .unwrap();
            assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
