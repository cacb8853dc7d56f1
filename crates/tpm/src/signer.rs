//! A [`HeaderSigner`] whose key lives in the TPM: each signature runs a fresh policy session
//! through TPM2_PolicyPCR, so the TPM itself refuses to sign once the measured state changes.

use std::sync::Mutex;

use ring::rand::{SecureRandom, SystemRandom};
use teelog_attest::tpm::{signature_p1363, TpmPublic};
use teelog_core::batch::SealError;
use teelog_core::merkle::sha256;
use teelog_core::{HeaderSigner, PublicKey};

use crate::command;
use crate::device::{Device, Tcti};
use crate::TpmError;

/// The signing key as `tpm2_create` left it: wrapped by the parent, loadable only in its TPM.
pub struct KeyBlobs<'a> {
    /// TPM2B_PRIVATE.
    pub private: &'a [u8],
    /// TPM2B_PUBLIC.
    pub public: &'a [u8],
}

/// A [`teelog_core::HeaderSigner`] whose key lives in the TPM and signs only while the PCRs hold
/// the values it was bound to; each signature is one policy session and one `TPM2_Sign`.
pub struct TpmSigner {
    device: Mutex<Device>,
    key_handle: u32,
    pcr_selection: Vec<u8>,
    public: PublicKey,
    measurement: Option<String>,
    attestation: Option<String>,
}

impl TpmSigner {
    /// Loads the key under `parent` (a persistent storage key) and readies it to sign while the
    /// SHA-256 PCRs `pcrs` hold their measured values. `measurement` and `attestation` go into
    /// every header.
    pub fn open(
        tcti: &Tcti,
        parent: u32,
        key: &KeyBlobs<'_>,
        pcrs: &[u8],
        measurement: Option<String>,
        attestation: Option<String>,
    ) -> Result<Self, TpmError> {
        let public = TpmPublic::parse(key.public)?.key;
        let mut device = Device::open(tcti)?;
        let key_handle =
            command::parse_load(&device.transact(&command::load(parent, key.private, key.public))?)?;
        Ok(Self {
            device: Mutex::new(device),
            key_handle,
            pcr_selection: command::pcr_selection(pcrs),
            public,
            measurement,
            attestation,
        })
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError> {
        let mut device = self.device.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut nonce = [0u8; 16];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| TpmError::Provision("the system random generator failed".into()))?;
        let session = command::parse_session(&device.transact(&command::start_policy_session(&nonce))?)?;
        let signature = command::parse_empty(
            &device.transact(&command::policy_pcr(session, &self.pcr_selection))?,
            "PolicyPCR",
        )
        .and_then(|()| device.transact(&command::sign(self.key_handle, session, digest)))
        .and_then(|response| command::parse_sign(&response).map(<[u8]>::to_vec));
        match signature {
            Ok(signature) => Ok(signature_p1363(&signature, "TPM2_Sign")?),
            Err(e) => {
                // A successful Sign ends the session; a failed command leaves it to be flushed.
                let _ = device.transact(&command::flush_context(session));
                Err(e)
            }
        }
    }
}

impl HeaderSigner for TpmSigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }
    fn measurement(&self) -> Option<&str> {
        self.measurement.as_deref()
    }
    fn attestation(&self) -> Option<&str> {
        self.attestation.as_deref()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SealError> {
        self.sign_digest(&sha256(message)).map_err(|e| SealError::Signer(e.to_string()))
    }
}

impl Drop for TpmSigner {
    fn drop(&mut self) {
        // Without a resource manager (swtpm, /dev/tpm0) a loaded key outlives its process.
        let device = self.device.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = device.transact(&command::flush_context(self.key_handle));
    }
}
