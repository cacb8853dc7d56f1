//! teelog's TPM 2.0 identity. The signing key is created inside the TPM (fixedTPM, fixedParent,
//! sign-only) under a TPM2_PolicyPCR policy, so it signs only while the PCRs hold the values
//! measured at key creation; the TPM certifies and quotes it with an attestation key (AK) that
//! an enrollment CA certified after credential activation against the TPM's endorsement key.
//!
//! - [`command`]: the few TPM commands signing needs, as bytes (sans-IO).
//! - [`device`]: moving those bytes to a TPM: `/dev/tpmrm0` or swtpm's TCP socket.
//! - [`signer`]: a [`teelog_core::HeaderSigner`] whose key never leaves the TPM.
//! - [`provision`]: creating the key and its evidence, with tpm2-tools.
//! - [`swtpm`]: a manufactured software TPM for development and tests.
#![forbid(unsafe_code)]

pub mod command;
pub mod device;
pub mod provision;
pub mod signer;
pub mod swtpm;

pub use device::Tcti;
pub use signer::TpmSigner;

/// Why a TPM operation failed. A refusal by the TPM is said in words ([`TpmError::Refused`]),
/// because the common one, a failed PCR policy, means the platform's measured state changed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The device or socket could not be opened, written or read (or timed out).
    #[error("TPM {tcti}: {source}")]
    Io {
        /// The TPM, as a TCTI string.
        tcti: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A TCTI string that is neither `device:PATH` nor `swtpm:host=HOST,port=PORT`.
    #[error("TCTI {0:?} is not device:PATH or swtpm:host=HOST,port=PORT")]
    Tcti(String),
    /// The TPM answered a command with an error response code.
    #[error("the TPM refused {command}: {}", describe(*code))]
    Refused {
        /// The command's name, e.g. `TPM2_Sign`.
        command: &'static str,
        /// The TPM 2.0 response code.
        code: u32,
    },
    /// A response that does not parse as the command's answer (names the command).
    #[error("malformed TPM response to {0}")]
    Malformed(String),
    /// The evidence the TPM produced (or the EK certificate) does not verify.
    #[error("{0}")]
    Evidence(#[from] teelog_attest::AttestError),
    /// A tpm2-tools or swtpm program could not be run or exited with an error; `detail` is its
    /// standard error.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The program (and for tpm2-tools, the command).
        tool: String,
        /// What it said, or how to install it when it is missing.
        detail: String,
    },
    /// Provisioning could not go on: no EK certificate in the TPM's NV storage, or a scratch file
    /// of tpm2-tools could not be read or written.
    #[error("{0}")]
    Provision(String),
}

/// A response code in words a person can act on (TPM 2.0 Library, Part 2, §6.6).
fn describe(code: u32) -> String {
    let what = if code & 0x80 != 0 {
        match code & 0x3f {
            0x1d => "a policy check failed: the PCRs no longer hold the values this key is bound to (the platform's measured state changed)",
            0x0e | 0x22 => "authorization failed",
            0x0b => "a handle is wrong (is the storage root key at its persistent handle?)",
            0x04 => "a value is out of range",
            _ => "a parameter, handle or session is wrong",
        }
    } else {
        match code & 0xfff {
            0x902 => "no room for another loaded object: flush transient objects, or use the resource manager /dev/tpmrm0",
            0x903 => "no room for another session: flush sessions, or use the resource manager /dev/tpmrm0",
            0x100 => "the TPM is not initialised (TPM2_Startup was not run)",
            0x922 | 0x908 | 0x901 => "the TPM is busy; try again",
            _ => "see the TPM 2.0 response code tables",
        }
    };
    format!("{what} (response code {code:#x})")
}
