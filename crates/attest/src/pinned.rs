//! The vendor roots teelog pins, and how a root the auditor gives is told apart from them: by its
//! exact bytes, never by its name. A certificate that has a pinned root's subject or key without
//! being that certificate is a lookalike, and is refused rather than trusted as a root of its own.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use teelog_core::merkle::sha256;

use crate::{der, AttestError, AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256};

/// A vendor root that ships with teelog, pinned by the SHA-256 of its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorRoot {
    AwsNitroG1,
    IntelSgxRootCa,
    AmdArkMilan,
}

impl VendorRoot {
    pub const ALL: [Self; 3] = [Self::AwsNitroG1, Self::IntelSgxRootCa, Self::AmdArkMilan];

    pub fn name(self) -> &'static str {
        match self {
            Self::AwsNitroG1 => "the AWS Nitro Enclaves root G1",
            Self::IntelSgxRootCa => "the Intel SGX Root CA",
            Self::AmdArkMilan => "AMD's ARK for Milan",
        }
    }

    /// The SHA-256 of its DER, in hex, as the vendor publishes it.
    pub fn sha256_hex(self) -> &'static str {
        match self {
            Self::AwsNitroG1 => AWS_NITRO_ROOT_G1_SHA256,
            Self::IntelSgxRootCa => crate::tdx::INTEL_SGX_ROOT_CA_SHA256,
            Self::AmdArkMilan => crate::snp::AMD_ARK_MILAN_SHA256,
        }
    }

    /// Its certificate (DER): the copy that ships with teelog, checked against the pin.
    pub fn der(self) -> Result<Vec<u8>, AttestError> {
        let der = match self {
            Self::AwsNitroG1 => CertificateDer::from_pem_slice(AWS_NITRO_ROOT_G1_PEM)
                .map(|d| d.to_vec())
                .map_err(|e| AttestError::Root(format!("{}: {e}", self.name())))?,
            Self::IntelSgxRootCa => crate::tdx::intel_sgx_root()?,
            Self::AmdArkMilan => crate::snp::milan_ark()?,
        };
        if hex::encode(sha256(&der)) != self.sha256_hex() {
            return Err(AttestError::Root(format!(
                "the copy of {} that ships with teelog does not match its pin {}",
                self.name(),
                self.sha256_hex()
            )));
        }
        Ok(der)
    }

    /// Which pinned root `der` is, if it is one byte for byte. A certificate that shares a
    /// pinned root's public key, or a common name with its subject (whatever the case, spacing
    /// or string type), but is not that root is refused.
    pub fn identify(der: &[u8]) -> Result<Option<Self>, AttestError> {
        let candidate = Looks::of(der)?;
        for vendor in Self::ALL {
            let pinned = vendor.der()?;
            if der == pinned {
                return Ok(Some(vendor));
            }
            if let Some(what) = Looks::of(&pinned)?.shared_with(&candidate) {
                return Err(AttestError::Root(format!(
                    "this certificate has the {what} of {}, but it is not that certificate (its SHA-256 is {}, the pinned root's {}): a lookalike of a pinned vendor root is refused",
                    vendor.name(),
                    hex::encode(sha256(der)),
                    vendor.sha256_hex()
                )));
            }
        }
        Ok(None)
    }
}

/// What a root could be mistaken for another by: the common names of its subject (in lower
/// case, runs of white space as one space) and its public key.
struct Looks {
    names: Vec<String>,
    key: Vec<u8>,
}

impl Looks {
    fn of(der: &[u8]) -> Result<Self, AttestError> {
        let cert = CertificateDer::from(der);
        let anchor = webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| AttestError::Root(format!("not a usable root certificate: {e}")))?;
        let names = der::common_names(&anchor.subject)?
            .iter()
            .map(|name| name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase())
            .collect();
        let key = der::public_key_bits(&anchor.subject_public_key_info)?.to_vec();
        Ok(Self { names, key })
    }

    /// What `other` shares with this root, in words.
    fn shared_with(&self, other: &Looks) -> Option<String> {
        let same_point = matches!((ec_x(&self.key), ec_x(&other.key)), (Some(a), Some(b)) if a == b);
        if self.key == other.key || same_point {
            return Some("public key".into());
        }
        self.names.iter().find(|name| other.names.contains(name)).map(|name| format!("subject (CN {name:?})"))
    }
}

/// The x coordinate of an elliptic-curve point, compressed (02 or 03, x) or not (04, x, y), so
/// that one key spelt both ways counts as the same key.
fn ec_x(point: &[u8]) -> Option<&[u8]> {
    match point {
        [0x02 | 0x03, x @ ..] if !x.is_empty() => Some(x),
        [0x04, xy @ ..] if !xy.is_empty() && xy.len().is_multiple_of(2) => Some(&xy[..xy.len() / 2]),
        _ => None,
    }
}
