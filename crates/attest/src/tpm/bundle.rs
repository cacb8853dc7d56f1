//! The TPM evidence bundle: teelog's attestation document for a key that lives in a TPM
//! (docs/FORMAT.md §7a). A CBOR map of byte strings, so it travels and is stored like any other
//! document, and a verifier tells it from a COSE_Sign1 by its first byte.

use ciborium::Value;
use rustls_pki_types::CertificateDer;

use super::enrollment::EKU_AK_CERTIFICATE_DER;
use super::{TpmEvidence, TpmVerified};
use crate::cbor::{bytes, payload_err, text_map};
use crate::{anchor, reached_root, root_certificates, verify_chain_for, AttestError, TrustRoot};

/// The value of the bundle's `format` member.
pub const FORMAT: &str = "teelog-tpm-evidence/1";
/// A bundle is a certificate and a few small TPM structures.
pub const MAX_BUNDLE_BYTES: usize = 32 << 10;
const MAX_CERT_BYTES: usize = 8 << 10;
const MAX_STRUCT_BYTES: usize = 2 << 10;

/// Everything an auditor needs to trust a TPM-resident signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmBundle {
    /// TPM2B_PUBLIC of the endorsement key. Its certificate from the TPM's maker is checked at
    /// enrollment and vouched for by the AK certificate, so it is not carried here.
    pub ek_public: Vec<u8>,
    /// TPM2B_PUBLIC of the attestation key, and the certificate an enrollment CA issued for it
    /// after credential activation proved it lives beside that EK (DER).
    pub ak_public: Vec<u8>,
    /// The AK's certificate (DER), issued by the enrollment CA.
    pub ak_certificate: Vec<u8>,
    /// TPM2B_PUBLIC of the signing key.
    pub key_public: Vec<u8>,
    /// TPM2_Certify of the signing key by the AK: TPMS_ATTEST and TPMT_SIGNATURE.
    pub certify: Vec<u8>,
    /// The AK's signature over `certify`.
    pub certify_signature: Vec<u8>,
    /// TPM2_Quote by the AK of the PCRs the key's policy names: TPMS_ATTEST and TPMT_SIGNATURE.
    pub quote: Vec<u8>,
    /// The AK's signature over `quote`.
    pub quote_signature: Vec<u8>,
    /// The quoted SHA-256 PCR values, concatenated in selection order.
    pub pcr_values: Vec<u8>,
}

/// What a verified bundle proves.
#[derive(Debug, Clone)]
pub struct TpmBundleVerified {
    /// The key, its measurement and qualifying data, as the verified evidence gives them.
    pub evidence: TpmVerified,
    /// SHA-256 of the enrollment CA root the AK certificate chains to.
    pub root_sha256: teelog_core::merkle::Digest,
}

impl TpmBundle {
    /// The members after `format`, by name, in their encoding order.
    pub fn members(&self) -> [(&'static str, &[u8]); 9] {
        [
            ("ek_public", &self.ek_public),
            ("ak_public", &self.ak_public),
            ("ak_certificate", &self.ak_certificate),
            ("key_public", &self.key_public),
            ("certify", &self.certify),
            ("certify_signature", &self.certify_signature),
            ("quote", &self.quote),
            ("quote_signature", &self.quote_signature),
            ("pcr_values", &self.pcr_values),
        ]
    }

    /// The document bytes: a definite-length CBOR map, `format` first, then the members in the
    /// order of [`TpmBundle`]'s fields.
    /// Its hash is what signed headers name, so a failed write is an error, never partial bytes.
    pub fn encode(&self) -> Result<Vec<u8>, AttestError> {
        let mut entries = vec![(Value::Text("format".into()), Value::Text(FORMAT.into()))];
        entries.extend(
            self.members().into_iter().map(|(name, v)| (Value::Text(name.into()), Value::Bytes(v.to_vec()))),
        );
        let mut out = Vec::new();
        ciborium::ser::into_writer(&Value::Map(entries), &mut out)
            .map_err(|e| AttestError::Cose(format!("the TPM evidence bundle cannot be written: {e}")))?;
        Ok(out)
    }

    /// Reads a bundle (a CBOR map: its format and byte strings, at most [`MAX_BUNDLE_BYTES`]);
    /// unknown or missing members are refused. Nothing is verified yet.
    pub fn parse(document: &[u8]) -> Result<Self, AttestError> {
        if document.len() > MAX_BUNDLE_BYTES {
            return Err(AttestError::TooLarge { len: document.len(), max: MAX_BUNDLE_BYTES });
        }
        let mut fields = text_map(document, "TPM evidence bundle")?;
        match fields.remove("format") {
            Some(Value::Text(f)) if f == FORMAT => {}
            other => return Err(payload_err("format", format!("must be {FORMAT:?}, found {other:?}"))),
        }
        let mut take = |name: &str, max: usize| bytes(name, fields.remove(name), max);
        let bundle = Self {
            ek_public: take("ek_public", MAX_STRUCT_BYTES)?,
            ak_public: take("ak_public", MAX_STRUCT_BYTES)?,
            ak_certificate: take("ak_certificate", MAX_CERT_BYTES)?,
            key_public: take("key_public", MAX_STRUCT_BYTES)?,
            certify: take("certify", MAX_STRUCT_BYTES)?,
            certify_signature: take("certify_signature", MAX_STRUCT_BYTES)?,
            quote: take("quote", MAX_STRUCT_BYTES)?,
            quote_signature: take("quote_signature", MAX_STRUCT_BYTES)?,
            pcr_values: take("pcr_values", MAX_STRUCT_BYTES)?,
        };
        if let Some(unknown) = fields.keys().next() {
            return Err(payload_err(unknown, "is not a member of a TPM evidence bundle"));
        }
        // One encoding only, so the document's hash names exactly one bundle.
        if bundle.encode()? != document {
            return Err(AttestError::Cose(
                "the TPM evidence bundle is not in its one encoding (members in order, definite lengths, shortest forms)".into(),
            ));
        }
        Ok(bundle)
    }

    /// The bundle's parts as the evidence verifier reads them.
    pub fn evidence(&self) -> TpmEvidence<'_> {
        TpmEvidence {
            ek_public: &self.ek_public,
            ak_public: &self.ak_public,
            key_public: &self.key_public,
            certify: &self.certify,
            certify_signature: &self.certify_signature,
            quote: &self.quote,
            quote_signature: &self.quote_signature,
            pcr_values: &self.pcr_values,
        }
    }

    /// Checks the TPM's own evidence, then that the AK is the one an enrollment CA in `roots`
    /// certified (at `at`, Unix seconds).
    pub fn verify(&self, roots: &[TrustRoot], at: u64) -> Result<TpmBundleVerified, AttestError> {
        let evidence = self.evidence().verify(None)?;
        let ak_der = CertificateDer::from(self.ak_certificate.as_slice());
        let ak_cert = webpki::EndEntityCert::try_from(&ak_der)
            .map_err(|e| AttestError::Certificate(format!("the AK certificate is not valid X.509: {e}")))?;
        let roots = root_certificates(roots, &[]);
        let anchors = roots.iter().map(|(_, der)| anchor(der)).collect::<Result<Vec<_>, _>>()?;
        let algs = [webpki::ring::ECDSA_P384_SHA384, webpki::ring::ECDSA_P256_SHA256];
        let usage = webpki::KeyUsage::required(EKU_AK_CERTIFICATE_DER);
        let path =
            verify_chain_for(&ak_cert, usage, &algs, &anchors, &[], at, "AK certificate ← enrollment CA")?;
        if ak_cert.subject_public_key_info().as_ref() != evidence.ak.spki_der() {
            return Err(AttestError::Tpm(
                "the AK certificate is for another key than the AK that signed the evidence".into(),
            ));
        }
        let root = reached_root(&roots, &anchors, &path)?;
        // Only an enrollment CA the auditor gave certifies attestation keys; no vendor does.
        if let Some(vendor) = root.vendor() {
            return Err(AttestError::Root(format!(
                "the AK certificate chains to {}, which certifies no TPM attestation key: TPM evidence must chain to an enrollment CA given with --trust-root",
                vendor.name()
            )));
        }
        Ok(TpmBundleVerified { evidence, root_sha256: *root.sha256() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> TpmBundle {
        let part = |b: u8| vec![b; 4];
        TpmBundle {
            ek_public: part(1),
            ak_public: part(2),
            ak_certificate: part(3),
            key_public: part(4),
            certify: part(5),
            certify_signature: part(6),
            quote: part(7),
            quote_signature: part(8),
            pcr_values: part(9),
        }
    }

    fn map(entries: Vec<(Value, Value)>) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(&Value::Map(entries), &mut out).unwrap();
        out
    }

    fn entries(bundle: &TpmBundle) -> Vec<(Value, Value)> {
        let mut entries = vec![(Value::Text("format".into()), Value::Text(FORMAT.into()))];
        entries.extend(bundle.members().map(|(n, v)| (Value::Text(n.into()), Value::Bytes(v.to_vec()))));
        entries
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_exactly_a_bundle() {
        let bundle = sample();
        assert_eq!(TpmBundle::parse(&bundle.encode().unwrap()).unwrap(), bundle);
        let refused = |bytes: &[u8], needle: &str| {
            let err = TpmBundle::parse(bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        let mut twice = entries(&bundle);
        twice.push(twice[1].clone());
        refused(&map(twice), "appears twice");
        let mut unknown = entries(&bundle);
        unknown.push((Value::Text("extra".into()), Value::Bytes(vec![])));
        refused(&map(unknown), "\"extra\"");
        let mut missing = entries(&bundle);
        missing.pop();
        refused(&map(missing), "pcr_values");
        let mut wrong = entries(&bundle);
        wrong[0].1 = Value::Text("teelog-tpm-evidence/2".into());
        refused(&map(wrong), "format");
        let mut typed = entries(&bundle);
        typed[3].1 = Value::Text("not bytes".into());
        refused(&map(typed), "byte string");
        let mut huge = bundle.clone();
        huge.quote = vec![0; MAX_STRUCT_BYTES + 1];
        refused(&huge.encode().unwrap(), "at most");
        refused(&[0x81; MAX_BUNDLE_BYTES + 1], "limit");
        let deep: Vec<u8> = std::iter::repeat_n(0xa1, 64).chain(std::iter::repeat_n(0x00, 64)).collect();
        assert!(TpmBundle::parse(&deep).is_err());
        refused(&[bundle.encode().unwrap(), vec![0]].concat(), "after");
        let mut reordered = entries(&bundle);
        reordered.swap(1, 2);
        refused(&map(reordered), "one encoding");
        let mut indefinite = vec![0xbf];
        for (k, v) in entries(&bundle) {
            ciborium::ser::into_writer(&k, &mut indefinite).unwrap();
            ciborium::ser::into_writer(&v, &mut indefinite).unwrap();
        }
        indefinite.push(0xff);
        refused(&indefinite, "one encoding");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = TpmBundle::parse(&bytes);
            let mut with_header = vec![0xaa];
            with_header.extend_from_slice(&bytes);
            let _ = TpmBundle::parse(&with_header);
        }

        #[test]
        fn truncations_are_errors(cut in 0usize..200) {
            let encoded = sample().encode().unwrap();
            let cut = cut.min(encoded.len() - 1);
            prop_assert!(TpmBundle::parse(&encoded[..cut]).is_err());
        }
    }
}
