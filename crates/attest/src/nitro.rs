//! AWS Nitro Enclaves attestation documents: COSE_Sign1 (ES384) over a CBOR map, signed by a
//! leaf certificate that chains through `cabundle` to the AWS Nitro root.
//!
//! Parsing is strict (exact protected header, known fields with checked types and sizes, no
//! duplicate keys, nothing after the document); verification builds the chain only to roots the
//! caller trusts — `cabundle[0]` only where its SHA-256 is the pin of AWS's root — at a time the
//! caller gives, by default the document's own timestamp.

use std::collections::BTreeMap;

use ciborium::Value;
use coset::{iana, CborSerializable, CoseSign1, RegisteredLabelWithPrivate, TaggedCborSerializable};
use rustls_pki_types::CertificateDer;
use teelog_core::crypto::p1363_to_der;
use teelog_core::merkle::Digest;
use teelog_core::verify::TrustBasis;

use crate::cbor::{bytes, payload_err, text_map};
use crate::{anchor, reached_root, root_certificates, verify_chain, AttestError, TrustRoot, VendorRoot};

/// Attestation documents are a few KiB; anything much larger is refused before parsing.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 10;
const MAX_CABUNDLE: usize = 16;
const MAX_CERT_BYTES: usize = 8 << 10;
/// Limits from the Nitro Enclaves NSM API.
const MAX_PUBLIC_KEY: usize = 1024;
const MAX_USER_DATA: usize = 512;
const MAX_NONCE: usize = 512;
const MAX_PCR_INDEX: u64 = 31;

/// A parsed, not yet verified, Nitro attestation document.
#[derive(Debug, Clone)]
pub struct NitroDocument {
    /// The enclave's id as the NSM gives it (`i-…-enc…`); teelog's dev documents' ids start with
    /// `dev-`. Not checked against anything: it names, it does not prove.
    pub module_id: String,
    /// The PCRs' hash algorithm: always `SHA384` (checked when parsed).
    pub digest: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// PCR index (0..=31) to value: PCR0 is the enclave image's measurement.
    pub pcrs: BTreeMap<u64, Vec<u8>>,
    /// The signing certificate (DER), issued for this document by the bundle's chain.
    pub certificate: Vec<u8>,
    /// The chain above `certificate` (DER), root first.
    pub cabundle: Vec<Vec<u8>>,
    /// The key the enclave asked to bind (teelog: its signing key's SubjectPublicKeyInfo DER).
    pub public_key: Option<Vec<u8>>,
    /// Opaque bytes the enclave asked to include.
    pub user_data: Option<Vec<u8>>,
    /// The nonce the enclave asked to include (teelog: the previous epoch's head).
    pub nonce: Option<Vec<u8>>,
    sign1: CoseSign1,
}

/// What a verified document proves.
#[derive(Debug, Clone)]
pub struct NitroVerified {
    /// The document, now known to be signed under a trusted chain.
    pub document: NitroDocument,
    /// SHA-256 of the DER of the pinned root the chain reached.
    pub root_sha256: Digest,
    /// Whether that root is one the auditor gave (a dev root) rather than AWS's pinned root.
    pub dev: bool,
    /// PCR0, PCR1 and PCR2 are all zero: an enclave started in debug mode, whose memory the
    /// parent instance can read. Only returned when the caller allowed it.
    pub debug_mode: bool,
    /// The time the chain was checked at, in seconds since the Unix epoch.
    pub checked_at: u64,
}

impl NitroVerified {
    /// What trust in the document rests on: AWS's pinned root, or a dev root the auditor gave.
    pub fn basis(&self) -> TrustBasis {
        if self.dev {
            TrustBasis::DevRoot
        } else {
            TrustBasis::PinnedVendorRoot
        }
    }
}

impl NitroDocument {
    /// Parses a COSE_Sign1 document, tagged (18) or not.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(AttestError::TooLarge { len: bytes.len(), max: MAX_DOCUMENT_BYTES });
        }
        let sign1 = if bytes.first() == Some(&0xd2) {
            CoseSign1::from_tagged_slice(bytes)
        } else {
            CoseSign1::from_slice(bytes)
        }
        .map_err(|e| AttestError::Cose(e.to_string()))?;

        let protected = &sign1.protected.header;
        let es384 = Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES384));
        let only_alg = coset::Header { alg: protected.alg.clone(), ..Default::default() };
        if protected.alg != es384 || *protected != only_alg {
            return Err(AttestError::Cose(format!(
                "protected header must be exactly {{1: -35}} (ES384), found {protected:?}"
            )));
        }
        if !sign1.unprotected.is_empty() {
            return Err(AttestError::Cose("the unprotected header must be empty".into()));
        }
        if sign1.signature.len() != 96 {
            return Err(AttestError::Cose(format!(
                "an ES384 signature is 96 bytes (r || s), this one is {}",
                sign1.signature.len()
            )));
        }
        let payload = sign1.payload.as_deref().ok_or_else(|| AttestError::Cose("no payload".into()))?;
        let mut doc = parse_payload(payload)?;
        doc.sign1 = sign1;
        Ok(doc)
    }

    /// The PCRs that mark a debug-mode enclave: 0, 1 and 2 all zero.
    pub fn is_debug_mode(&self) -> bool {
        [0, 1, 2].iter().all(|i| self.pcrs.get(i).is_some_and(|v| v.iter().all(|&b| b == 0)))
    }

    /// Verifies the signature and the chain to one of `roots`, at `at` (seconds since the Unix
    /// epoch; `None` means the document's own timestamp).
    pub fn verify(
        self,
        roots: &[TrustRoot],
        at: Option<u64>,
        allow_debug: bool,
    ) -> Result<NitroVerified, AttestError> {
        for pcr in [0, 1, 2] {
            if !self.pcrs.contains_key(&pcr) {
                return Err(AttestError::MissingPcr(pcr));
            }
        }
        let debug_mode = self.is_debug_mode();
        if debug_mode && !allow_debug {
            return Err(AttestError::DebugMode);
        }
        let checked_at = at.unwrap_or(self.timestamp_ms / 1000);
        let leaf_der = CertificateDer::from(self.certificate.as_slice());
        let leaf = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| {
            AttestError::Certificate(format!("the signing certificate is not valid X.509: {e}"))
        })?;
        let intermediates: Vec<CertificateDer<'_>> =
            self.cabundle.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        // AWS puts its root first in the bundle: that copy stands for the pinned root if it is it.
        let roots = root_certificates(roots, self.cabundle.get(..1).unwrap_or_default());
        let anchors = roots.iter().map(|(_, der)| anchor(der)).collect::<Result<Vec<_>, _>>()?;
        let algs = [webpki::ring::ECDSA_P384_SHA384, webpki::ring::ECDSA_P256_SHA256];
        let path =
            verify_chain(&leaf, &algs, &anchors, &intermediates, checked_at, &[], "certificate ← cabundle")?;
        let root = reached_root(&roots, &anchors, &path)?;
        // The platform follows from the root reached: AWS's, or one the auditor vouches for alone.
        let dev = match root.vendor() {
            None => true,
            Some(VendorRoot::AwsNitroG1) => false,
            Some(other) => {
                return Err(AttestError::Root(format!(
                    "the signing certificate chains to {}, which vouches for no Nitro-layout document",
                    other.name()
                )))
            }
        };

        let tbs = self.sign1.tbs_data(&[]);
        leaf.verify_signature(webpki::ring::ECDSA_P384_SHA384, &tbs, &p1363_to_der(&self.sign1.signature))
            .map_err(|_| AttestError::Signature)?;
        Ok(NitroVerified { root_sha256: *root.sha256(), dev, debug_mode, checked_at, document: self })
    }
}

fn parse_payload(payload: &[u8]) -> Result<NitroDocument, AttestError> {
    let mut fields = text_map(payload, "payload")?;
    let mut take = |name: &str| fields.remove(name);
    let text = |name: &str, v: Option<Value>| match v {
        Some(Value::Text(t)) if !t.is_empty() => Ok(t),
        Some(other) => Err(payload_err(name, format!("must be non-empty text, found {other:?}"))),
        None => Err(payload_err(name, "is missing")),
    };
    let optional_bytes = |name: &str, v: Option<Value>, max: usize| match v {
        None | Some(Value::Null) => Ok(None),
        v => bytes(name, v, max).map(Some),
    };

    let module_id = text("module_id", take("module_id"))?;
    let digest = text("digest", take("digest"))?;
    if digest != "SHA384" {
        return Err(payload_err("digest", format!("must be SHA384, found {digest:?}")));
    }
    let timestamp_ms = match take("timestamp") {
        Some(Value::Integer(i)) => u64::try_from(i).ok().filter(|&t| t > 0),
        _ => None,
    }
    .ok_or_else(|| payload_err("timestamp", "must be a positive integer (milliseconds)"))?;
    let pcrs = match take("pcrs") {
        Some(Value::Map(entries)) => {
            let mut pcrs = BTreeMap::new();
            for (k, v) in entries {
                let index = match k {
                    Value::Integer(i) => u64::try_from(i).ok().filter(|&i| i <= MAX_PCR_INDEX),
                    _ => None,
                }
                .ok_or_else(|| payload_err("pcrs", format!("index must be 0..={MAX_PCR_INDEX}")))?;
                let value = match v {
                    Value::Bytes(b) if [32, 48, 64].contains(&b.len()) => b,
                    other => {
                        return Err(payload_err(
                            "pcrs",
                            format!("PCR{index} must be 32, 48 or 64 bytes, found {other:?}"),
                        ))
                    }
                };
                if pcrs.insert(index, value).is_some() {
                    return Err(payload_err("pcrs", format!("PCR{index} appears twice")));
                }
            }
            pcrs
        }
        _ => return Err(payload_err("pcrs", "must be a map of index to bytes")),
    };
    let certificate = bytes("certificate", take("certificate"), MAX_CERT_BYTES)?;
    let cabundle = match take("cabundle") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_CABUNDLE => items
            .into_iter()
            .map(|item| bytes("cabundle", Some(item), MAX_CERT_BYTES))
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(payload_err(
                "cabundle",
                format!("must be an array of 1 to {MAX_CABUNDLE} certificates"),
            ))
        }
    };
    let public_key = optional_bytes("public_key", take("public_key"), MAX_PUBLIC_KEY)?;
    let user_data = optional_bytes("user_data", take("user_data"), MAX_USER_DATA)?;
    let nonce = optional_bytes("nonce", take("nonce"), MAX_NONCE)?;
    if let Some(unknown) = fields.keys().next() {
        return Err(payload_err(unknown, "is not a field of a Nitro attestation document"));
    }
    Ok(NitroDocument {
        module_id,
        digest,
        timestamp_ms,
        pcrs,
        certificate,
        cabundle,
        public_key,
        user_data,
        nonce,
        sign1: CoseSign1::default(),
    })
}
