//! One attestation document of any kind teelog knows, told apart by its bytes and verified with
//! what its kind needs: `teelog attest verify`, and whatever else shows what a document proves.

use teelog_core::PublicKey;

use crate::nitro::{NitroDocument, NitroVerified};
use crate::snp::{AmdChain, SnpReport, SnpVerified, REPORT_LEN};
use crate::tcb::{CollateralFiles, TcbEvaluation, TcbPolicy, TdxCollateral};
use crate::tdx::{TdxQuote, TdxVerified};
use crate::tpm::bundle::{TpmBundle, TpmBundleVerified};
use crate::{decode_document, is_cbor_map, AttestError, ReportDataBinding, TrustRoot};

/// A TDX DCAP quote begins: version 4, ECDSA P-256 attestation key, TEE type 0x81.
const TDX_V4_PREFIX: [u8; 8] = [4, 0, 2, 0, 0x81, 0, 0, 0];

/// What kind of document some bytes are, by their size and first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An AMD SEV-SNP report, which carries no certificates: the chip's VCEK and AMD's chain are
    /// given with it.
    SevSnp,
    /// An Intel TDX DCAP v4 quote.
    Tdx,
    /// A Nitro (or dev) document or a TPM evidence bundle, as raw CBOR, base64 or hex.
    Encoded,
}

impl Kind {
    /// The kind `raw` is, judged by length and prefix only: any bytes are some kind, and
    /// [`verify`] refuses what does not parse as that kind.
    pub fn of(raw: &[u8]) -> Self {
        if raw.len() == REPORT_LEN {
            Kind::SevSnp
        } else if raw.starts_with(&TDX_V4_PREFIX) {
            Kind::Tdx
        } else {
            Kind::Encoded
        }
    }
}

/// What a document is verified with, besides its own bytes.
pub struct Inputs<'a> {
    /// Roots for Nitro documents and TPM bundles, besides the pinned AWS root they include.
    pub roots: &'a [TrustRoot],
    /// When the chain is checked (Unix seconds); `None`: a Nitro document's own time, and `now`
    /// for the kinds that carry none.
    pub at: Option<u64>,
    /// The current time (Unix seconds), for kinds that carry no time of their own.
    pub now: u64,
    /// Accept debug-mode enclaves and guests.
    pub allow_debug: bool,
    /// SEV-SNP: the chip's VCEK (DER) and AMD's ARK and ASK.
    pub sev_snp: Option<(&'a [u8], &'a AmdChain)>,
    /// TDX: Intel's collateral, and which TCB statuses below UpToDate to accept.
    pub collateral: Option<(CollateralFiles<'a>, TcbPolicy)>,
}

/// What a verified document proves.
pub enum Verified {
    /// A Nitro or dev document.
    Nitro(NitroVerified),
    /// A TPM evidence bundle.
    Tpm {
        /// What the bundle proves.
        bundle: TpmBundleVerified,
        /// When its chains were checked (Unix seconds): the bundle carries no time of its own.
        checked_at: u64,
    },
    /// An SEV-SNP report.
    SevSnp(SnpVerified),
    /// A TDX quote.
    Tdx {
        /// What the quote proves.
        quote: TdxVerified,
        /// The platform's TCB level per Intel's collateral; `None` when no collateral was given,
        /// so the platform's patch level is unjudged.
        tcb: Option<TcbEvaluation>,
    },
}

/// Verifies `raw` as the document of its [`Kind`].
pub fn verify(raw: &[u8], inputs: &Inputs<'_>) -> Result<Verified, AttestError> {
    let at = inputs.at.unwrap_or(inputs.now);
    match Kind::of(raw) {
        Kind::SevSnp => {
            let (vcek, chain) = inputs.sev_snp.ok_or_else(|| {
                AttestError::Snp("the chip's VCEK and AMD's ARK and ASK are needed to verify a report".into())
            })?;
            SnpReport::parse(raw)?.verify(vcek, chain, at, inputs.allow_debug).map(Verified::SevSnp)
        }
        Kind::Tdx => {
            let quote = TdxQuote::parse(raw)?.verify(at, inputs.allow_debug)?;
            let Some((files, policy)) = inputs.collateral else {
                return Ok(Verified::Tdx { quote, tcb: None });
            };
            // Intel's collateral must chain to the pinned root the quote carried.
            let tcb = TdxCollateral::parse(files)?.verify(quote.root_der(), at)?.evaluate(&quote)?;
            tcb.check(policy)?;
            Ok(Verified::Tdx { quote, tcb: Some(tcb) })
        }
        Kind::Encoded => {
            let bytes = decode_document(raw)?;
            if bytes.first().is_some_and(|&b| is_cbor_map(b)) {
                let bundle = TpmBundle::parse(&bytes)?.verify(inputs.roots, at)?;
                Ok(Verified::Tpm { bundle, checked_at: at })
            } else {
                NitroDocument::parse(&bytes)?
                    .verify(inputs.roots, inputs.at, inputs.allow_debug)
                    .map(Verified::Nitro)
            }
        }
    }
}

impl Verified {
    /// The id (SHA-256 of the SubjectPublicKeyInfo) of the teelog signing key the document
    /// binds, if it binds one: a Nitro document's `public_key`, the TPM's certified key, the
    /// first half of an SEV-SNP or TDX report_data.
    pub fn bound_key_id(&self) -> Option<[u8; 32]> {
        match self {
            Verified::Nitro(v) => v
                .document
                .public_key
                .as_deref()
                .and_then(|k| PublicKey::from_spki_der(k).ok())
                .map(|k| *k.id()),
            Verified::Tpm { bundle, .. } => Some(*bundle.evidence.key.id()),
            Verified::SevSnp(v) => Some(ReportDataBinding::of(&v.report.report_data).key_id),
            Verified::Tdx { quote, .. } => Some(ReportDataBinding::of(&quote.quote.report_data).key_id),
        }
    }

    /// Whether the document binds `key`; an error says which key it binds instead.
    pub fn require_key(&self, key: &PublicKey) -> Result<(), AttestError> {
        match self.bound_key_id() {
            Some(bound) if bound == *key.id() => Ok(()),
            bound => Err(AttestError::OtherKey { bound: bound.map(hex::encode), given: key.id_hex() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use teelog_core::{SigAlg, SoftwareKey};

    use super::*;

    fn key() -> PublicKey {
        SoftwareKey::from_pkcs8(SigAlg::Es256, &SoftwareKey::generate_pkcs8(SigAlg::Es256).unwrap())
            .unwrap()
            .public()
            .clone()
    }

    #[test]
    fn a_document_is_verified_as_its_kind_and_binds_only_its_key() {
        let (bound, other) = (key(), key());
        let pcrs = crate::dev::default_pcrs();
        let claims = crate::dev::DevClaims {
            module_id: "dev-document",
            timestamp_ms: 1_796_202_000_000,
            pcrs: &pcrs,
            bound_key: &bound,
            nonce: None,
        };
        let issued = crate::dev::issue(&claims).unwrap();
        let roots = [TrustRoot::aws_nitro(), TrustRoot::from_pem_or_der(&issued.root_der).unwrap()];
        let inputs =
            Inputs { roots: &roots, at: None, now: 0, allow_debug: false, sev_snp: None, collateral: None };
        // Raw CBOR and its hex text are one document.
        for raw in [issued.document.clone(), hex::encode(&issued.document).into_bytes()] {
            assert_eq!(Kind::of(&raw), Kind::Encoded);
            let verified = verify(&raw, &inputs).unwrap();
            assert!(matches!(&verified, Verified::Nitro(v) if v.dev));
            assert_eq!(verified.bound_key_id(), Some(*bound.id()));
            verified.require_key(&bound).unwrap();
            let err = verified.require_key(&other).unwrap_err().to_string();
            assert!(err.contains(&bound.id_hex()) && err.contains(&other.id_hex()), "{err}");
        }
        // Without the dev root, the same bytes do not verify.
        let aws_only = Inputs { roots: &roots[..1], ..inputs };
        assert!(matches!(verify(&issued.document, &aws_only), Err(AttestError::Chain(_))));
        // A report-sized input is an SEV-SNP report, which needs its VCEK and AMD's chain.
        let report = vec![0u8; REPORT_LEN];
        assert_eq!(Kind::of(&report), Kind::SevSnp);
        assert!(matches!(verify(&report, &aws_only), Err(AttestError::Snp(_))));
    }
}
