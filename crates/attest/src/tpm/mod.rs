//! TPM 2.0 evidence for a signing key: TPM2_Certify of the key by an attestation key (AK), and
//! TPM2_Quote by the same AK over the PCRs the key's policy is bound to.
//!
//! What a verified bundle proves, given a trusted AK: the key lives in that TPM (fixedTPM,
//! fixedParent, generated inside it), can only sign, can be used only through its policy (no
//! userWithAuth), and that policy is TPM2_PolicyPCR over exactly the PCR values the TPM quoted —
//! so the key signs only while the platform is in that measured state. The measurement is the
//! quote's PCR digest. The AK is tied to the EK it was created under (the qualified name the TPM
//! signs into each attestation); how the EK is trusted — its certificate from the TPM vendor,
//! and credential activation proving the AK lives beside it — is not checked here yet.

pub mod bundle;
pub mod enrollment;

use teelog_core::crypto::{der_tlv, der_unsigned_integer};
use teelog_core::merkle::sha256;
use teelog_core::{PublicKey, SigAlg};

use crate::reader::{Endian, Reader};
use crate::AttestError;

const TPM_GENERATED: u32 = 0xff54_4347;
const ST_ATTEST_CERTIFY: u16 = 0x8017;
const ST_ATTEST_QUOTE: u16 = 0x8018;
const ALG_RSA: u16 = 0x0001;
const ALG_ECC: u16 = 0x0023;
const ALG_SHA256: u16 = 0x000b;
const ALG_ECDSA: u16 = 0x0018;
const ALG_NULL: u16 = 0x0010;
const ECC_NIST_P256: u16 = 0x0003;
const ECC_NIST_P384: u16 = 0x0004;
const CC_POLICY_PCR: u32 = 0x0000_017f;

/// TPMA_OBJECT bits.
pub mod attr {
    /// The key cannot be duplicated out of this TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// The key cannot be moved to another parent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// The TPM generated the private key itself (it was not imported).
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// The key may be used with its password alone; teelog's keys must not have it, so that
    /// only the PCR policy authorises them.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// The key signs only digests the TPM made itself (an AK).
    pub const RESTRICTED: u32 = 1 << 16;
    /// A decryption key.
    pub const DECRYPT: u32 = 1 << 17;
    /// A signing key.
    pub const SIGN: u32 = 1 << 18;
}

fn err(why: impl Into<String>) -> AttestError {
    AttestError::Tpm(why.into())
}

/// The TPM name of any object from its TPM2B_PUBLIC: nameAlg || SHA-256(TPMT_PUBLIC).
fn name_of(tpm2b: &[u8]) -> Result<Vec<u8>, AttestError> {
    let mut r = Reader::new(tpm2b, Endian::Big, AttestError::Tpm);
    let area = r.sized("TPM2B_PUBLIC")?;
    r.end("TPM2B_PUBLIC")?;
    if area.get(2..4) != Some(&ALG_SHA256.to_be_bytes()[..]) {
        return Err(err("the object is not named with SHA-256"));
    }
    Ok([&ALG_SHA256.to_be_bytes()[..], &sha256(area)].concat())
}

/// The DER SubjectPublicKeyInfo of an endorsement key from its TPM2B_PUBLIC (RSA, or ECC on
/// P-256 or P-384), to compare with its certificate's.
fn ek_spki(tpm2b: &[u8]) -> Result<Vec<u8>, AttestError> {
    let mut outer = Reader::new(tpm2b, Endian::Big, AttestError::Tpm);
    let area = outer.sized("EK TPM2B_PUBLIC")?;
    outer.end("EK TPM2B_PUBLIC")?;
    let mut r = Reader::new(area, Endian::Big, AttestError::Tpm);
    let kind = r.u16("EK type")?;
    r.u16("EK nameAlg")?;
    r.u32("EK objectAttributes")?;
    r.sized("EK authPolicy")?;
    if r.u16("EK symmetric")? != ALG_NULL {
        r.u16("EK symmetric keyBits")?;
        r.u16("EK symmetric mode")?;
    }
    if r.u16("EK scheme")? != ALG_NULL {
        r.u16("EK scheme hash")?;
    }
    let spki = match kind {
        ALG_RSA => {
            r.u16("EK keyBits")?;
            let exponent = match r.u32("EK exponent")? {
                0 => 65537,
                e => e,
            };
            let modulus = r.sized("EK modulus")?;
            // rsaEncryption with NULL parameters, then the RSAPublicKey as a BIT STRING.
            let algorithm =
                [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
            let key = der_tlv(
                0x30,
                &[der_unsigned_integer(modulus), der_unsigned_integer(&exponent.to_be_bytes())].concat(),
            );
            der_tlv(0x30, &[&algorithm[..], &der_tlv(0x03, &[&[0u8][..], &key].concat())].concat())
        }
        ALG_ECC => {
            let curve = r.u16("EK curveID")?;
            if r.u16("EK kdf")? != ALG_NULL {
                r.u16("EK kdf hash")?;
            }
            let (x, y) = (r.sized("EK x")?, r.sized("EK y")?);
            let alg = match curve {
                ECC_NIST_P256 => SigAlg::Es256,
                ECC_NIST_P384 => SigAlg::Es384,
                other => return Err(err(format!("EK curve {other:#06x} is neither P-256 nor P-384"))),
            };
            let point = [&[0x04][..], x, y].concat();
            PublicKey::from_uncompressed_point(alg, &point)
                .map_err(|e| err(format!("EK: {e}")))?
                .spki_der()
                .to_vec()
        }
        other => return Err(err(format!("EK type {other:#06x} is neither RSA nor ECC"))),
    };
    r.end("EK TPMT_PUBLIC")?;
    Ok(spki)
}

/// A qualified name one level down: nameAlg || SHA-256(parent's qualified name || name).
fn qualified(parent: &[u8], name: &[u8]) -> Vec<u8> {
    [&ALG_SHA256.to_be_bytes()[..], &sha256(&[parent, name].concat())].concat()
}

/// The endorsement hierarchy's handle, which is its qualified name.
const RH_ENDORSEMENT: u32 = 0x4000_000b;

/// An ECC P-256 ECDSA key's TPMT_PUBLIC.
#[derive(Debug, Clone)]
pub struct TpmPublic {
    /// The TPMT_PUBLIC bytes, which the key's name hashes.
    area: Vec<u8>,
    /// TPMA_OBJECT bits ([`attr`]).
    pub attributes: u32,
    /// The policy digest that authorises the key's use (teelog: its TPM2_PolicyPCR).
    pub auth_policy: Vec<u8>,
    /// The public key, as teelog verifies with it.
    pub key: PublicKey,
}

impl TpmPublic {
    /// Parses a TPM2B_PUBLIC (as `tpm2_create -u` writes it).
    pub fn parse(tpm2b: &[u8]) -> Result<Self, AttestError> {
        let mut outer = Reader::new(tpm2b, Endian::Big, AttestError::Tpm);
        let area = outer.sized("TPM2B_PUBLIC")?;
        outer.end("TPM2B_PUBLIC")?;
        let mut r = Reader::new(area, Endian::Big, AttestError::Tpm);
        let (kind, name_alg) = (r.u16("type")?, r.u16("nameAlg")?);
        if kind != ALG_ECC || name_alg != ALG_SHA256 {
            return Err(err(format!(
                "expected an ECC key named with SHA-256, found type {kind:#06x}, nameAlg {name_alg:#06x}"
            )));
        }
        let attributes = r.u32("objectAttributes")?;
        let auth_policy = r.sized("authPolicy")?.to_vec();
        if r.u16("symmetric")? != ALG_NULL {
            return Err(err("a signing key has no symmetric algorithm"));
        }
        let (scheme, hash) = (r.u16("scheme")?, r.u16("scheme hash")?);
        let (curve, kdf) = (r.u16("curveID")?, r.u16("kdf")?);
        if scheme != ALG_ECDSA || hash != ALG_SHA256 || curve != ECC_NIST_P256 || kdf != ALG_NULL {
            return Err(err("expected ECDSA with SHA-256 on NIST P-256"));
        }
        let (x, y) = (r.sized("x")?, r.sized("y")?);
        r.end("TPMT_PUBLIC")?;
        if x.len() != 32 || y.len() != 32 {
            return Err(err("P-256 coordinates are 32 bytes"));
        }
        let key = PublicKey::from_uncompressed_point(SigAlg::Es256, &[&[0x04][..], x, y].concat())
            .map_err(|e| err(e.to_string()))?;
        Ok(Self { area: area.to_vec(), attributes, auth_policy, key })
    }

    /// An attestation key must be restricted (it signs only what the TPM itself produced or
    /// checked) and TPM-resident.
    pub fn check_attestation_key(&self) -> Result<(), AttestError> {
        use attr::*;
        let needs = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN;
        if self.attributes & needs != needs || self.attributes & DECRYPT != 0 {
            return Err(err("the attestation key is not a restricted, TPM-resident signing key"));
        }
        Ok(())
    }

    /// The TPM name: nameAlg || SHA-256(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        [&ALG_SHA256.to_be_bytes()[..], &sha256(&self.area)].concat()
    }
}

/// The parts of a TPMS_ATTEST this module checks.
struct Attest {
    kind: u16,
    /// The qualified name of the key that signed it.
    signer: Vec<u8>,
    extra_data: Vec<u8>,
    /// Certify: the certified object's name. Quote: the PCR selection and digest.
    certified_name: Vec<u8>,
    pcr_selection: Vec<u8>,
    /// Quote: the selected PCRs.
    pcrs: Vec<u8>,
    pcr_digest: Vec<u8>,
}

fn parse_attest(bytes: &[u8]) -> Result<Attest, AttestError> {
    let mut r = Reader::new(bytes, Endian::Big, AttestError::Tpm);
    if r.u32("magic")? != TPM_GENERATED {
        return Err(err("not TPM-generated (magic is not TPM_GENERATED_VALUE)"));
    }
    let kind = r.u16("type")?;
    let signer = r.sized("qualifiedSigner")?.to_vec();
    let extra_data = r.sized("extraData")?.to_vec();
    r.take(8 + 4 + 4 + 1 + 8, "clockInfo and firmwareVersion")?;
    let mut attest = Attest {
        kind,
        signer,
        extra_data,
        certified_name: Vec::new(),
        pcr_selection: Vec::new(),
        pcrs: Vec::new(),
        pcr_digest: Vec::new(),
    };
    match kind {
        ST_ATTEST_CERTIFY => {
            attest.certified_name = r.sized("certified name")?.to_vec();
            r.sized("qualified name")?;
        }
        ST_ATTEST_QUOTE => {
            let start = r.pos();
            attest.pcrs = pcr_selection(&mut r)?;
            attest.pcr_selection = bytes[start..r.pos()].to_vec();
            attest.pcr_digest = r.sized("pcrDigest")?.to_vec();
        }
        other => return Err(err(format!("attestation type {other:#06x} is neither certify nor quote"))),
    }
    r.end("TPMS_ATTEST")?;
    Ok(attest)
}

/// The r || s form of a TPMT_SIGNATURE (ECDSA with SHA-256 on P-256), as teelog stores
/// signatures.
pub fn signature_p1363(signature: &[u8], what: &str) -> Result<Vec<u8>, AttestError> {
    let mut r = Reader::new(signature, Endian::Big, AttestError::Tpm);
    if r.u16("sigAlg")? != ALG_ECDSA || r.u16("hash")? != ALG_SHA256 {
        return Err(err(format!("{what}: the signature is not ECDSA with SHA-256")));
    }
    let (sr, ss) = (r.sized("r")?, r.sized("s")?);
    r.end("TPMT_SIGNATURE")?;
    let fixed = |v: &[u8]| -> Result<Vec<u8>, AttestError> {
        let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..];
        if v.len() > 32 {
            return Err(err(format!("{what}: signature component is wider than P-256")));
        }
        Ok([vec![0; 32 - v.len()], v.to_vec()].concat())
    };
    Ok([fixed(sr)?, fixed(ss)?].concat())
}

/// PCRs a key may be bound to: 16 (debug) and 23 (application) can be reset by any software
/// that reaches the TPM, and 17 to 22 belong to late launch; a key bound to them would sign
/// wherever someone replays the right values into them.
pub const MAX_BOUND_PCR: u8 = 15;

/// A TPML_PCR_SELECTION as teelog accepts it in a quote: one SHA-256 bank, at least one PCR,
/// none above [`MAX_BOUND_PCR`]. Returns the selected PCRs in order.
fn pcr_selection(r: &mut Reader<'_>) -> Result<Vec<u8>, AttestError> {
    if r.u32("PCR selection count")? != 1 || r.u16("PCR bank")? != ALG_SHA256 {
        return Err(err("the quote must select PCRs of exactly one bank, SHA-256"));
    }
    let size = usize::from(r.u8("sizeofSelect")?);
    let bitmap = r.take(size, "pcrSelect")?;
    let pcrs: Vec<u8> = (0..size * 8)
        .filter(|&i| bitmap[i / 8] & (1 << (i % 8)) != 0)
        .map(|i| u8::try_from(i).unwrap_or(u8::MAX))
        .collect();
    match pcrs.iter().find(|&&p| p > MAX_BOUND_PCR) {
        _ if pcrs.is_empty() => Err(err("the quote selects no PCR: the key would sign in any state")),
        Some(p) => Err(err(format!("the quote selects PCR{p}, which software can reset; a key may be bound to PCR0..={MAX_BOUND_PCR} only"))),
        None => Ok(pcrs),
    }
}

/// The measurement of a TPM key: SHA-256 of the quoted TPML_PCR_SELECTION and PCR digest, so it
/// names which PCRs as well as their values.
pub fn measurement(pcr_selection: &[u8], pcr_digest: &[u8]) -> [u8; 32] {
    sha256(&[pcr_selection, pcr_digest].concat())
}

/// Verifies a TPMT_SIGNATURE (ECDSA, SHA-256) by `ak` over `message`.
fn verify_signature(ak: &PublicKey, message: &[u8], signature: &[u8], what: &str) -> Result<(), AttestError> {
    if ak.verify_p1363(message, &signature_p1363(signature, what)?) {
        Ok(())
    } else {
        Err(err(format!("{what}: the signature does not verify under the attestation key")))
    }
}

/// What a TPM evidence bundle proves.
#[derive(Debug, Clone)]
pub struct TpmVerified {
    /// The signing key bound to the measured state.
    pub key: PublicKey,
    /// The attestation key that certified and quoted it.
    pub ak: PublicKey,
    /// [`measurement`] of the quoted selection and PCR digest.
    pub measurement: [u8; 32],
    /// The PCRs (SHA-256 bank) the key is bound to.
    pub pcrs: Vec<u8>,
    /// The quote's extraData: teelog puts the previous epoch's head there, or nothing.
    pub qualifying_data: Vec<u8>,
}

/// The evidence for one TPM-resident signing key.
pub struct TpmEvidence<'a> {
    /// TPM2B_PUBLIC of the endorsement key the AK was created under; its certificate from the
    /// TPM vendor is how the caller comes to trust the AK.
    pub ek_public: &'a [u8],
    /// TPM2B_PUBLIC of the attestation key.
    pub ak_public: &'a [u8],
    /// TPM2B_PUBLIC of the signing key.
    pub key_public: &'a [u8],
    /// TPMS_ATTEST and TPMT_SIGNATURE of TPM2_Certify(key) by the AK.
    pub certify: &'a [u8],
    /// The AK's signature over `certify`.
    pub certify_signature: &'a [u8],
    /// TPMS_ATTEST and TPMT_SIGNATURE of TPM2_Quote by the AK.
    pub quote: &'a [u8],
    /// The AK's signature over `quote`.
    pub quote_signature: &'a [u8],
    /// The quoted PCR values, concatenated in selection order.
    pub pcr_values: &'a [u8],
}

impl TpmEvidence<'_> {
    /// Checks everything against the AK, and the quote's qualifying data against `nonce` when
    /// the verifier chose one.
    pub fn verify(&self, nonce: Option<&[u8]>) -> Result<TpmVerified, AttestError> {
        use attr::*;
        let ak = TpmPublic::parse(self.ak_public)?;
        ak.check_attestation_key()?;
        let key = TpmPublic::parse(self.key_public)?;
        let key_needs = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | SIGN;
        if key.attributes & key_needs != key_needs {
            return Err(err(
                "the signing key is not fixedTPM, fixedParent, generated in the TPM and sign-capable",
            ));
        }
        if key.attributes & (DECRYPT | RESTRICTED | USER_WITH_AUTH) != 0 {
            return Err(err("the signing key may decrypt, is restricted, or can be used by password (userWithAuth) rather than only through its PCR policy"));
        }

        verify_signature(&ak.key, self.certify, self.certify_signature, "certify")?;
        let certify = parse_attest(self.certify)?;
        if certify.kind != ST_ATTEST_CERTIFY || certify.certified_name != key.name() {
            return Err(err("the certification is not of this signing key"));
        }
        // Both attestations name their signer by qualified name: the AK, under this EK, under
        // the endorsement hierarchy. That ties the AK's public area, as given, to the EK.
        let ek_qualified = qualified(&RH_ENDORSEMENT.to_be_bytes(), &name_of(self.ek_public)?);
        let ak_qualified = qualified(&ek_qualified, &ak.name());

        verify_signature(&ak.key, self.quote, self.quote_signature, "quote")?;
        let quote = parse_attest(self.quote)?;
        if quote.kind != ST_ATTEST_QUOTE {
            return Err(err("the quote is not a TPM2_Quote"));
        }
        if certify.signer != ak_qualified || quote.signer != ak_qualified {
            return Err(err("the attestations were not signed by this AK under this EK"));
        }
        if nonce.is_some_and(|nonce| quote.extra_data != nonce) {
            return Err(err("the quote's qualifying data is not the expected nonce (a replayed quote?)"));
        }
        let pcr_digest = sha256(self.pcr_values);
        if quote.pcr_digest != pcr_digest {
            return Err(err("the PCR values do not match the quoted PCR digest"));
        }
        // TPM2_PolicyPCR from an empty policy: H(0^32 || TPM_CC_PolicyPCR || selection || digest).
        let policy = sha256(
            &[&[0u8; 32][..], &CC_POLICY_PCR.to_be_bytes(), &quote.pcr_selection, &pcr_digest].concat(),
        );
        if key.auth_policy != policy {
            return Err(err("the signing key's policy is not PolicyPCR over the quoted PCRs"));
        }
        Ok(TpmVerified {
            measurement: measurement(&quote.pcr_selection, &pcr_digest),
            pcrs: quote.pcrs,
            key: key.key,
            ak: ak.key,
            qualifying_data: quote.extra_data,
        })
    }
}
