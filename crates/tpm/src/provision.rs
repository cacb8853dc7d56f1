//! Creating a TPM identity, with tpm2-tools (the TPM's own tooling, run once per key): the
//! signing key under a PCR policy, the AK, credential activation against the EK, and the
//! certification and quote that make up the evidence bundle.

use std::path::Path;
use std::process::Command;

use ring::rand::{SecureRandom, SystemRandom};
use teelog_attest::tpm::bundle::TpmBundle;
use teelog_attest::tpm::enrollment::{check_ek_certificate, EnrollmentCa};
use teelog_attest::tpm::TpmVerified;
use teelog_attest::TrustRoot;

use crate::device::Tcti;
use crate::TpmError;

/// Where the storage root key lives, by the TCG's provisioning guidance.
pub const SRK_HANDLE: u32 = 0x8100_0001;
/// The RSA 2048 endorsement key's persistent handle, and its certificate's NV index.
const EK_HANDLE: &str = "0x81010001";
const EK_CERTIFICATE_NV: &str = "0x01c00002";

/// What [`provision`] needs to create an identity's key and evidence.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The TPM, as tpm2-tools will be told.
    pub tcti: &'a Tcti,
    /// SHA-256 PCRs the key is bound to.
    pub pcrs: &'a [u8],
    /// Goes into the quote: the previous epoch's head, or nothing.
    pub qualifying_data: &'a [u8],
    /// Roots (and issuing CAs) of the TPM maker that signed the EK certificate.
    pub ek_roots: &'a [TrustRoot],
    /// The enrollment CA that certifies the AK once the TPM has proved it holds the EK.
    pub ca: &'a EnrollmentCa,
    /// Unix seconds, for checking the EK certificate and dating the AK certificate.
    pub now: u64,
    /// A private scratch directory for tpm2-tools' files.
    pub work: &'a Path,
}

/// A provisioned key and its evidence.
pub struct Provisioned {
    /// The evidence bundle: the identity's attestation document.
    pub bundle: TpmBundle,
    /// What the bundle proves, as the auditor will find it.
    pub verified: TpmVerified,
    /// The EK certificate the enrollment checked (DER), kept for the record.
    pub ek_certificate: Vec<u8>,
    /// The signing key's TPM2B_PRIVATE, wrapped by the storage root key: useless outside this TPM.
    pub key_private: Vec<u8>,
}

struct Tools<'a> {
    tcti: String,
    work: &'a Path,
}

impl Tools<'_> {
    /// Runs one tpm2-tools command, then flushes transient objects (a TPM has few slots, and
    /// swtpm no resource manager).
    fn run(&self, args: &[&str]) -> Result<(), TpmError> {
        self.exec(args)?;
        self.exec(&["tpm2_flushcontext", "-t"])
    }

    fn exec(&self, args: &[&str]) -> Result<(), TpmError> {
        let tool = args[0].to_string();
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.work)
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .output()
            .map_err(|e| TpmError::Tool {
                tool: tool.clone(),
                detail: format!("{e} (keygen --tpm needs tpm2-tools: apt-get install tpm2-tools)"),
            })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr.lines().rfind(|l| l.starts_with("ERROR")).unwrap_or(stderr.trim()).to_string();
        Err(TpmError::Tool { tool, detail })
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, TpmError> {
        std::fs::read(self.work.join(name)).map_err(|e| TpmError::Provision(format!("{name}: {e}")))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TpmError> {
        std::fs::write(self.work.join(name), bytes).map_err(|e| TpmError::Provision(format!("{name}: {e}")))
    }
}

/// Creates the key and its evidence in the TPM `request.tcti` names.
pub fn provision(request: &Request<'_>) -> Result<Provisioned, TpmError> {
    let tools = Tools { tcti: request.tcti.to_tools_string(), work: request.work };
    let srk = format!("{SRK_HANDLE:#010x}");
    if tools.run(&["tpm2_readpublic", "-c", &srk, "-Q"]).is_err() {
        tools.run(&[
            "tpm2_createprimary",
            "-C",
            "o",
            "-g",
            "sha256",
            "-G",
            "ecc256",
            "-c",
            "srk.ctx",
            "-Q",
        ])?;
        tools.run(&["tpm2_evictcontrol", "-C", "o", "-c", "srk.ctx", &srk, "-Q"])?;
    }

    // The EK and its certificate, checked against the maker's roots before anything relies on it.
    if tools.run(&["tpm2_readpublic", "-c", EK_HANDLE, "-o", "ek.pub", "-Q"]).is_err() {
        tools.run(&["tpm2_createek", "-c", EK_HANDLE, "-G", "rsa", "-u", "ek.pub", "-Q"])?;
    }
    tools.run(&["tpm2_nvread", EK_CERTIFICATE_NV, "-o", "ek.der"]).map_err(|e| {
        TpmError::Provision(format!(
            "this TPM has no RSA EK certificate at NV index {EK_CERTIFICATE_NV}: {e}"
        ))
    })?;
    let ek_public = tools.read("ek.pub")?;
    let ek_certificate = tools.read("ek.der")?;
    check_ek_certificate(&ek_certificate, &[], &ek_public, request.ek_roots, request.now)?;

    tools.run(&[
        "tpm2_createak",
        "-C",
        EK_HANDLE,
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
    ])?;
    let ak_public = tools.read("ak.pub")?;
    // Activation proves the object of this name is in the TPM; the certificate is for this area.
    if tools.read("ak.name")? != teelog_attest::tpm::TpmPublic::parse(&ak_public)?.name() {
        return Err(TpmError::Provision(
            "tpm2_createak wrote an AK name that is not its public area's".into(),
        ));
    }
    activate_credential(&tools)?;
    let ak_certificate = request.ca.certify_ak(&ak_public, request.now)?;

    let selection =
        format!("sha256:{}", request.pcrs.iter().map(u8::to_string).collect::<Vec<_>>().join(","));
    tools.run(&["tpm2_startauthsession", "-S", "pcr-session.ctx"])?;
    tools.run(&["tpm2_policypcr", "-S", "pcr-session.ctx", "-l", &selection, "-L", "pcr.policy", "-Q"])?;
    tools.exec(&["tpm2_flushcontext", "pcr-session.ctx"])?;
    tools.run(&[
        "tpm2_create",
        "-C",
        &srk,
        "-G",
        "ecc256:ecdsa-sha256",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|sign",
        "-L",
        "pcr.policy",
        "-u",
        "key.pub",
        "-r",
        "key.priv",
        "-Q",
    ])?;
    tools.run(&["tpm2_load", "-C", &srk, "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx", "-Q"])?;
    tools.run(&[
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
        "-Q",
    ])?;
    let qualifying = hex::encode(request.qualifying_data);
    let mut quote = vec![
        "tpm2_quote",
        "-c",
        "ak.ctx",
        "-l",
        &selection,
        "-m",
        "quote.attest",
        "-s",
        "quote.sig",
        "-g",
        "sha256",
        "-Q",
    ];
    if !qualifying.is_empty() {
        quote.extend(["-q", &qualifying]);
    }
    tools.run(&quote)?;
    tools.run(&["tpm2_pcrread", &selection, "-o", "pcrs.bin", "-Q"])?;

    let bundle = TpmBundle {
        ek_public,
        ak_public,
        ak_certificate,
        key_public: tools.read("key.pub")?,
        certify: tools.read("certify.attest")?,
        certify_signature: tools.read("certify.sig")?,
        quote: tools.read("quote.attest")?,
        quote_signature: tools.read("quote.sig")?,
        pcr_values: tools.read("pcrs.bin")?,
    };
    // What the auditor will check, checked now, so a bad key never reaches a log.
    let verified = bundle.evidence().verify(Some(request.qualifying_data))?;
    Ok(Provisioned { bundle, verified, ek_certificate, key_private: tools.read("key.priv")? })
}

/// Credential activation: a secret made for (EK, AK name) comes back only if the TPM holding
/// that EK also holds an object of exactly that name.
fn activate_credential(tools: &Tools<'_>) -> Result<(), TpmError> {
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| TpmError::Provision("the system random generator failed".into()))?;
    tools.write("secret", &secret)?;
    let ak_name = hex::encode(tools.read("ak.name")?);
    tools.exec(&[
        "tpm2_makecredential",
        "-T",
        "none",
        "-u",
        "ek.pub",
        "-s",
        "secret",
        "-n",
        &ak_name,
        "-o",
        "cred.blob",
    ])?;
    tools.run(&["tpm2_startauthsession", "--policy-session", "-S", "ek-session.ctx"])?;
    tools.run(&["tpm2_policysecret", "-S", "ek-session.ctx", "-c", "e", "-Q"])?;
    tools.run(&[
        "tpm2_activatecredential",
        "-c",
        "ak.ctx",
        "-C",
        EK_HANDLE,
        "-i",
        "cred.blob",
        "-o",
        "activated",
        "-P",
        "session:ek-session.ctx",
    ])?;
    let _ = tools.exec(&["tpm2_flushcontext", "ek-session.ctx"]);
    if tools.read("activated")? != secret {
        return Err(TpmError::Provision(
            "credential activation returned another secret: the AK is not in the TPM that holds this EK"
                .into(),
        ));
    }
    Ok(())
}
