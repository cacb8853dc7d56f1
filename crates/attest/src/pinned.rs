//! The vendor roots teelog pins, and how a root the auditor gives is told apart from them: by its
//! exact bytes, never by its name. A certificate that has a pinned root's subject or key without
//! being that certificate is a lookalike, and is refused rather than trusted as a root of its own.
//!
//! No copy of a vendor root ships with teelog: each is pinned by the SHA-256 of its certificate,
//! and the certificate itself comes from where the platform puts it (a Nitro document's cabundle,
//! a TDX quote's PCK chain) or from the auditor (AMD's ARK, as AMD's key server serves it). To
//! recognise lookalikes without the certificate, each root's key and subject are pinned too.

use rustls_pki_types::CertificateDer;
use teelog_core::merkle::{sha256, Digest};

use crate::{der, AttestError, AWS_NITRO_ROOT_G1_SHA256};

/// A vendor root teelog pins by the SHA-256 of its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorRoot {
    /// The AWS Nitro Enclaves root G1: Nitro documents carry it as `cabundle[0]`.
    AwsNitroG1,
    /// The Intel SGX Root CA: TDX quotes carry it at the top of their PCK chain.
    IntelSgxRootCa,
    /// AMD's ARK for Milan: SEV-SNP reports carry none, so the auditor gives it (AMD's key
    /// server's `cert_chain`).
    AmdArkMilan,
}

impl VendorRoot {
    /// Every pinned root.
    pub const ALL: [Self; 3] = [Self::AwsNitroG1, Self::IntelSgxRootCa, Self::AmdArkMilan];

    /// Its name in words, for messages.
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

    /// The SHA-256 of its DER.
    pub fn sha256(self) -> Digest {
        let mut digest = [0u8; 32];
        // The pins are constants of this file, 64 hex digits each (a test checks them all).
        if hex::decode_to_slice(self.sha256_hex(), &mut digest).is_err() {
            return [0; 32];
        }
        digest
    }

    /// Whether `der` is this root, byte for byte (by its SHA-256).
    pub fn is(self, der: &[u8]) -> bool {
        sha256(der) == self.sha256()
    }

    /// The fingerprint of its public key ([`key_fingerprint`]), in hex.
    fn key_fingerprint_hex(self) -> &'static str {
        match self {
            Self::AwsNitroG1 => "3667cecd00a77271f7f10e7915823465a96f5e30d4b29f997183d0b5d1863fc1",
            Self::IntelSgxRootCa => "c9cdeabb31ade0b30e1e60dfc4bdb264ea39968c196e5ca57750b03011d63194",
            Self::AmdArkMilan => "20dc23483bddbb9947909070d49dfb5a7ff4ea41481e38cdeb8970d90a26feea",
        }
    }

    /// The common name of its subject, normalised as [`normalise`] does.
    fn common_name(self) -> &'static str {
        match self {
            Self::AwsNitroG1 => "aws.nitro-enclaves",
            Self::IntelSgxRootCa => "intel sgx root ca",
            Self::AmdArkMilan => "ark-milan",
        }
    }

    /// Which pinned root `der` is, if it is one byte for byte. A certificate that shares a
    /// pinned root's public key, or a common name with its subject (whatever the case, spacing
    /// or string type), but is not that root is refused.
    pub fn identify(der: &[u8]) -> Result<Option<Self>, AttestError> {
        if let Some(vendor) = Self::ALL.into_iter().find(|vendor| vendor.is(der)) {
            return Ok(Some(vendor));
        }
        let candidate = Looks::of(der)?;
        for vendor in Self::ALL {
            let shared = if candidate.key == vendor.key_fingerprint_hex() {
                Some("public key".to_string())
            } else {
                let cn = vendor.common_name();
                candidate.names.iter().any(|name| name == cn).then(|| format!("subject (CN {cn:?})"))
            };
            if let Some(what) = shared {
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

/// What a root could be mistaken for another by: the common names of its subject
/// ([`normalise`]d) and the fingerprint of its public key, in hex.
struct Looks {
    names: Vec<String>,
    key: String,
}

impl Looks {
    fn of(der: &[u8]) -> Result<Self, AttestError> {
        let cert = CertificateDer::from(der);
        let anchor = webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| AttestError::Root(format!("not a usable root certificate: {e}")))?;
        let names = der::common_names(&anchor.subject)?.iter().map(|name| normalise(name)).collect();
        let key = hex::encode(key_fingerprint(der::public_key_bits(&anchor.subject_public_key_info)?));
        Ok(Self { names, key })
    }
}

/// A common name as names are compared: in lower case, runs of white space as one space.
fn normalise(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// The SHA-256 of a public key's bits; for an elliptic-curve point, of its x coordinate alone,
/// so that one key spelt compressed (02 or 03, x) or not (04, x, y) is one key.
fn key_fingerprint(bits: &[u8]) -> Digest {
    let x = match bits {
        [0x02 | 0x03, x @ ..] if !x.is_empty() => x,
        [0x04, xy @ ..] if !xy.is_empty() && xy.len().is_multiple_of(2) => &xy[..xy.len() / 2],
        other => other,
    };
    sha256(x)
}

/// The real certificate of `vendor`, from the shared fixtures (`None`, and the test skipped,
/// where they are absent).
#[cfg(test)]
pub(crate) fn fixture_der(vendor: VendorRoot) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let file = match vendor {
        VendorRoot::AwsNitroG1 => "aws_nitro_enclaves_root_g1.pem",
        VendorRoot::IntelSgxRootCa => "intel_sgx_root_ca.pem",
        VendorRoot::AmdArkMilan => "amd_milan_ask_ark_asvk.pem",
    };
    let pem = teelog_fixtures::open("attestation")?.read(&format!("roots/{file}"));
    let der = CertificateDer::pem_slice_iter(&pem).map(|c| c.unwrap().to_vec()).find(|der| vendor.is(der));
    Some(der.unwrap_or_else(|| panic!("{file} holds no certificate with the pin of {}", vendor.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pinned hashes, keys and names are those of the real certificates.
    #[test]
    fn the_pins_are_the_vendor_roots() {
        for vendor in VendorRoot::ALL {
            assert_eq!(hex::encode(vendor.sha256()), vendor.sha256_hex());
            let Some(der) = fixture_der(vendor) else { return };
            let looks = Looks::of(&der).unwrap();
            assert_eq!(looks.key, vendor.key_fingerprint_hex(), "{}", vendor.name());
            assert_eq!(looks.names, [vendor.common_name()], "{}", vendor.name());
            assert_eq!(VendorRoot::identify(&der).unwrap(), Some(vendor));
        }
    }
}
